"""How the clients print a record: one JSON object with bytes as base64, the
shape `DumpedRecord` (testkit/src/python.rs) reads."""
import base64

TS_TYPES = {0: "NotAvailable", 1: "CreateTime", 2: "LogAppendTime"}


def b64(b):
    return None if b is None else base64.b64encode(b).decode("ascii")


def as_json(m):
    """A consumed message: {"partition", "offset", "key", "value",
    "headers": [[name, b64|null]...], "timestamp_type", "timestamp"}."""
    ts_type, ts = m.timestamp()
    return {
        "partition": m.partition(), "offset": m.offset(),
        "key": b64(m.key()), "value": b64(m.value()),
        "headers": [[n, b64(v)] for n, v in (m.headers() or [])],
        "timestamp_type": TS_TYPES.get(ts_type, "NotAvailable"), "timestamp": ts,
    }
