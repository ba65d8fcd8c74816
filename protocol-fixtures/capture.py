#!/usr/bin/env python3
"""Capture Kafka protocol frames from real brokers, independently of kafka-mirror's code.

Subcommands (run with the kafka-testkit venv's python; stdlib + confluent-kafka only):

  proxy    --listen PORT --upstream HOST:PORT --record DIR
           A recording TCP proxy. Forwards bytes both ways unchanged and, per
           connection, cuts each direction into frames (4-byte big-endian size, then
           the frame). Requests are read up to their header (api key, version,
           correlation id, client id); responses are matched to their request by
           correlation id. Produce and Fetch frames (api keys 0 and 1), requests and
           responses, are written to DIR as files; DIR/index.jsonl gets one line per
           recorded frame. Prints "listening" once it accepts connections; exits on
           SIGTERM.
  consume  --bootstrap B --topic T --client-id C [--read-committed] [--config k=v]...
           A librdkafka consumer reading partition 0 from the beginning to its end.
  updates  --bootstrap B --topic T --keys N --rounds R [--idempotent] [--unique PREFIX]
           Many updates to few keys (for a compacted topic), one flushed batch a round.
  topic    --bootstrap B --name T --assignment 0,1 [--assignment ...] [--config k=v]...
           Creates a topic with the given replicas per partition (the first leads).
  requests --broker ID=HOST:PORT... --steps STEPS.json --record DIR
           A raw client for what librdkafka will not send (a bad CRC, a sequence
           gap, a stale epoch, a request to a broker that does not lead): runs
           the steps (init_producer_id, produce, fetch, metadata, wait_isr) in
           order against the named brokers, each request under its step's
           client id, at the highest version both the broker and kafka-mirror's
           codec know, and records every request and response as the proxy does.
           Prints one JSON result per step.
  extract  --record DIR --plan PLAN.json --out DIR
           Picks frames out of a recording, checks them against the plan's
           expectations, writes <name>.bin (frame without its size prefix) and a
           <name>.json sidecar describing the batches (and old-format entries),
           and makes corrupted copies when the plan names a fixture to corrupt.

The frame parsing here is a small, separate implementation of the Kafka protocol
(Fetch and Produce requests and responses, Metadata responses), so fixtures do
not depend on the Rust code they test.
"""
import argparse
import base64
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
import zlib

FETCH = 1
PRODUCE = 0
RECORDED_APIS = (PRODUCE, FETCH)


# ---------------------------------------------------------------------------
# proxy


class Recorder:
    def __init__(self, dir_):
        self.dir = dir_
        os.makedirs(dir_, exist_ok=True)
        self.lock = threading.Lock()
        path = os.path.join(dir_, "index.jsonl")
        # Several recording runs may share a directory: keep numbering.
        self.seq = sum(1 for _ in open(path, encoding="utf-8")) if os.path.exists(path) else 0
        self.index = open(path, "a", encoding="utf-8")

    def record(self, conn, direction, api_key, api_version, correlation_id, client_id, frame):
        with self.lock:
            self.seq += 1
            name = f"{self.seq:06d}-c{conn}-{direction}-api{api_key}-v{api_version}-corr{correlation_id}.bin"
            with open(os.path.join(self.dir, name), "wb") as f:
                f.write(frame)
            self.index.write(json.dumps({
                "seq": self.seq, "conn": conn, "direction": direction, "api_key": api_key,
                "api_version": api_version, "correlation_id": correlation_id,
                "client_id": client_id, "file": name, "size": len(frame),
                "time": time.time(),
            }) + "\n")
            self.index.flush()


def parse_request_header(frame):
    """api_key, api_version, correlation_id, client_id of a request frame.

    Every request header version starts with these; client_id is a nullable
    int16-length string in header v1 and v2 alike."""
    api_key, api_version, corr = struct.unpack_from(">hhi", frame, 0)
    client_id = None
    if len(frame) >= 10:
        (n,) = struct.unpack_from(">h", frame, 8)
        if n >= 0:
            client_id = frame[10:10 + n].decode("utf-8", "replace")
    return api_key, api_version, corr, client_id


class Connection:
    def __init__(self, conn_id, client, upstream, recorder):
        self.id = conn_id
        self.client = client
        self.upstream = upstream
        self.recorder = recorder
        self.pending = {}  # correlation id -> (api_key, api_version, client_id)
        self.lock = threading.Lock()

    def start(self):
        threading.Thread(target=self.pump, args=(self.client, self.upstream, "request"),
                         daemon=True).start()
        threading.Thread(target=self.pump, args=(self.upstream, self.client, "response"),
                         daemon=True).start()

    def on_frame(self, direction, frame):
        if direction == "request":
            if len(frame) < 8:
                return
            api_key, api_version, corr, client_id = parse_request_header(frame)
            with self.lock:
                self.pending[corr] = (api_key, api_version, client_id)
        else:
            if len(frame) < 4:
                return
            (corr,) = struct.unpack_from(">i", frame, 0)
            with self.lock:
                found = self.pending.pop(corr, None)
            if found is None:
                return
            api_key, api_version, client_id = found
        if api_key in RECORDED_APIS:
            self.recorder.record(self.id, direction, api_key, api_version, corr, client_id, frame)

    def pump(self, src, dst, direction):
        buf = bytearray()
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                # Record before forwarding a request, so its header is known when the
                # response comes back.
                buf += data
                while len(buf) >= 4:
                    (size,) = struct.unpack_from(">i", buf, 0)
                    if size < 0 or len(buf) < 4 + size:
                        break
                    frame = bytes(buf[4:4 + size])
                    del buf[:4 + size]
                    self.on_frame(direction, frame)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


def cmd_proxy(a):
    host, port = a.upstream.rsplit(":", 1)
    recorder = Recorder(a.record)
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", a.listen))
    server.listen(64)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    print("listening", flush=True)
    conn_id = 0
    while True:
        client, _ = server.accept()
        conn_id += 1
        try:
            upstream = socket.create_connection((host, int(port)), timeout=10)
            upstream.settimeout(None)
        except OSError as e:
            sys.stderr.write(f"proxy: cannot reach upstream: {e}\n")
            client.close()
            continue
        for s in (client, upstream):
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        Connection(conn_id, client, upstream, recorder).start()


# ---------------------------------------------------------------------------
# clients


def config_pairs(pairs):
    conf = {}
    for kv in pairs:
        k, _, v = kv.partition("=")
        conf[k] = v
    return conf


def cmd_consume(a):
    from confluent_kafka import Consumer, KafkaError, TopicPartition, OFFSET_BEGINNING

    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": f"capture-{a.client_id}",
        "client.id": a.client_id,
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        "isolation.level": "read_committed" if a.read_committed else "read_uncommitted",
    }
    conf.update(config_pairs(a.config))
    c = Consumer(conf)
    c.assign([TopicPartition(a.topic, 0, OFFSET_BEGINNING)])
    n = 0
    deadline = time.time() + 60
    while time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == KafkaError._PARTITION_EOF:
                break
            raise SystemExit(f"consume: {m.error()}")
        n += 1
    else:
        raise SystemExit("consume: no end of partition within 60 s")
    c.close()
    print(json.dumps({"records": n}))


def cmd_updates(a):
    from confluent_kafka import Producer

    conf = {
        "bootstrap.servers": a.bootstrap,
        "client.id": a.client_id,
        "linger.ms": 5,
        "acks": "all",
        "enable.idempotence": a.idempotent,
    }
    p = Producer(conf)
    errors = []

    def cb(err, _msg):
        if err is not None:
            errors.append(str(err))

    for r in range(a.rounds):
        for k in range(a.keys):
            # The last round deletes key 0: a tombstone the compacted log keeps.
            value = None if (r == a.rounds - 1 and k == 0 and a.tombstone) else \
                f"{a.tag} round {r} key {k}".encode()
            p.produce(a.topic, key=f"key-{k}".encode(), value=value, partition=0,
                      on_delivery=cb)
        if a.unique:
            p.produce(a.topic, key=f"{a.unique}-{r}".encode(), value=b"kept", partition=0,
                      on_delivery=cb)
        p.flush(30)
        if a.sleep:
            time.sleep(a.sleep)
    if errors:
        raise SystemExit("updates: " + "; ".join(errors[:5]))


# ---------------------------------------------------------------------------
# protocol parsing (Fetch response, Produce request) for the sidecars


class Reader:
    def __init__(self, data, pos=0):
        self.d = data
        self.p = pos

    def take(self, n):
        if n < 0 or self.p + n > len(self.d):
            raise ValueError(f"truncated at {self.p} (+{n} of {len(self.d)})")
        b = self.d[self.p:self.p + n]
        self.p += n
        return b

    def i8(self):
        return struct.unpack(">b", self.take(1))[0]

    def i16(self):
        return struct.unpack(">h", self.take(2))[0]

    def i32(self):
        return struct.unpack(">i", self.take(4))[0]

    def i64(self):
        return struct.unpack(">q", self.take(8))[0]

    def uvarint(self):
        shift = value = 0
        while True:
            b = self.take(1)[0]
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def tagged(self):
        for _ in range(self.uvarint()):
            self.uvarint()
            self.take(self.uvarint())

    def string(self, flexible):
        n = self.uvarint() - 1 if flexible else self.i16()
        return None if n < 0 else self.take(n).decode()

    def bytes_(self, flexible):
        n = self.uvarint() - 1 if flexible else self.i32()
        return None if n < 0 else self.take(n)

    def array_len(self, flexible):
        return self.uvarint() - 1 if flexible else self.i32()


def fetch_flexible(v):
    return v >= 12


def produce_flexible(v):
    return v >= 9


def parse_fetch_response(frame, version):
    """Partitions of a Fetch response (v4+): list of dicts with records bytes."""
    flex = fetch_flexible(version)
    r = Reader(frame)
    corr = r.i32()
    if flex:
        r.tagged()
    r.i32()  # throttle_time_ms
    error_code = r.i16()
    session_id = r.i32()
    out = []
    for _ in range(r.array_len(flex)):
        if version >= 13:
            topic = {"topic_id": r.take(16).hex()}
        else:
            topic = {"topic": r.string(flex)}
        for _ in range(r.array_len(flex)):
            p = dict(topic)
            p["partition"] = r.i32()
            p["error_code"] = r.i16()
            p["high_watermark"] = r.i64()
            p["last_stable_offset"] = r.i64()
            p["log_start_offset"] = r.i64() if version >= 5 else None
            n = r.array_len(flex)
            aborted = None
            if n >= 0:
                aborted = []
                for _ in range(n):
                    pid = r.i64()
                    first = r.i64()
                    aborted.append({"producer_id": pid, "first_offset": first})
                    if flex:
                        r.tagged()
            p["aborted_transactions"] = aborted
            if version >= 11:
                r.i32()  # preferred_read_replica
            p["records"] = r.bytes_(flex)
            if flex:
                # KIP-951: a refusal for a stale leader names the current one (tag 1).
                tags = tagged_fields(r)
                if 1 in tags:
                    p["current_leader"] = parse_leader_id_and_epoch(tags[1])
            out.append(p)
        if flex:
            r.tagged()
    parsed = {"correlation_id": corr, "error_code": error_code, "session_id": session_id,
              "partitions": out}
    if flex:
        tags = tagged_fields(r)
        if 0 in tags:
            parsed["node_endpoints"] = parse_node_endpoints(tags[0])
    if r.p != len(frame):
        raise ValueError(f"Fetch v{version} response: {len(frame) - r.p} bytes left over")
    return parsed


def parse_produce_request(frame, version):
    flex = produce_flexible(version)
    r = Reader(frame)
    r.i16()
    r.i16()
    corr = r.i32()
    client_id = r.string(False)  # nullable int16 string in every header version
    if flex:
        r.tagged()
    transactional_id = r.string(flex)
    acks = r.i16()
    timeout_ms = r.i32()
    out = []
    for _ in range(r.array_len(flex)):
        if version >= 13:
            topic = {"topic_id": r.take(16).hex()}
        else:
            topic = {"topic": r.string(flex)}
        for _ in range(r.array_len(flex)):
            p = dict(topic)
            p["partition"] = r.i32()
            p["records"] = r.bytes_(flex)
            if flex:
                r.tagged()
            out.append(p)
        if flex:
            r.tagged()
    if flex:
        r.tagged()
    if r.p != len(frame):
        raise ValueError(f"Produce v{version} request: {len(frame) - r.p} bytes left over")
    return {"correlation_id": corr, "client_id": client_id, "transactional_id": transactional_id,
            "acks": acks, "timeout_ms": timeout_ms, "partitions": out}


# CRC-32C (Castagnoli), reflected polynomial 0x82F63B78, table driven.
_CRC_TABLE = []
for _n in range(256):
    _c = _n
    for _ in range(8):
        _c = (_c >> 1) ^ 0x82F63B78 if _c & 1 else _c >> 1
    _CRC_TABLE.append(_c)


def crc32c(data):
    c = 0xFFFFFFFF
    t = _CRC_TABLE
    for b in data:
        c = t[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


CODECS = {0: "none", 1: "gzip", 2: "snappy", 3: "lz4", 4: "zstd"}


def read_varint(r):
    v = r.uvarint()
    return (v >> 1) ^ -(v & 1)


def control_type(batch):
    """Type of the first control record (key: int16 version, int16 type)."""
    r = Reader(batch, 61)
    read_varint(r)  # record length
    r.i8()  # attributes
    read_varint(r)  # timestamp delta
    read_varint(r)  # offset delta
    klen = read_varint(r)
    key = r.take(klen)
    ctype = struct.unpack_from(">h", key, 2)[0]
    return {0: "abort", 1: "commit"}.get(ctype, f"other({ctype})")


def b64(b):
    return None if b is None else base64.b64encode(b).decode("ascii")


def legacy_messages(data, pos=0):
    """Old-format (magic 0/1) entries of a complete message set, as dicts
    (the entry's position relative to pos); `inner` holds a gzip wrapper's
    decompressed entries (zlib is stdlib; snappy and lz4 are not)."""
    entries = []
    while pos < len(data):
        offset, size = struct.unpack_from(">qi", data, pos)
        msg = data[pos + 12:pos + 12 + size]
        if len(msg) != size:
            break
        crc, magic, attrs = struct.unpack_from(">Ibb", msg, 0)
        r = Reader(msg, 6)
        timestamp = r.i64() if magic == 1 else None
        klen = r.i32()
        key = None if klen < 0 else r.take(klen)
        vlen = r.i32()
        value = None if vlen < 0 else r.take(vlen)
        codec = CODECS.get(attrs & 7, f"unknown({attrs & 7})")
        e = {
            "offset": offset,
            "size": size,
            "magic": magic,
            "crc": crc,
            "crc_ok": crc == zlib.crc32(msg[4:]),
            "attributes": attrs,
            "codec": codec,
            "timestamp_type": "log_append_time" if magic == 1 and attrs & 8 else (
                "create_time" if magic == 1 else None),
            "timestamp": timestamp,
            "key": b64(key),
            "value": b64(value) if codec == "none" else None,
            "value_bytes": None if value is None else len(value),
            "inner": None,
        }
        if codec == "gzip":
            e["inner"] = legacy_messages(zlib.decompress(value, 47))
        e["position"] = pos
        entries.append(e)
        pos += 12 + size
    return entries


def split_batches(records):
    """(complete v2 batches as header dicts, complete old-format entries,
    bytes of a cut-off tail)."""
    batches = []
    legacy = []
    pos = 0
    while pos < len(records):
        if len(records) - pos < 17:
            break
        base_offset, length = struct.unpack_from(">qi", records, pos)
        magic = records[pos + 16]
        if magic in (0, 1):
            end = pos + 12 + length
            if end > len(records):
                break
            legacy.extend(legacy_messages(records[:end], pos))
            pos = end
            continue
        if magic != 2:
            raise ValueError(f"magic {magic} at {base_offset}")
        if len(records) - pos < 61:
            break
        end = pos + 12 + length
        if end > len(records):
            break
        b = records[pos:end]
        (ple, _m, crc, attrs, lod, base_ts, max_ts, pid, epoch, seq, count) = struct.unpack_from(
            ">ibIhiqqqhii", b, 12)
        computed = crc32c(b[21:])
        h = {
            "base_offset": base_offset,
            "batch_length": length,
            "partition_leader_epoch": ple,
            "crc": crc,
            "crc_ok": crc == computed,
            "attributes": attrs,
            "codec": CODECS.get(attrs & 7, f"unknown({attrs & 7})"),
            "timestamp_type": "log_append_time" if attrs & 8 else "create_time",
            "transactional": bool(attrs & 0x10),
            "control": bool(attrs & 0x20),
            "last_offset_delta": lod,
            "base_timestamp": base_ts,
            "max_timestamp": max_ts,
            "producer_id": pid,
            "producer_epoch": epoch,
            "base_sequence": seq,
            "records_count": count,
            "control_type": None,
            "position": pos,
        }
        if h["control"] and count > 0:
            h["control_type"] = control_type(b)
        batches.append(h)
        pos = end
    return batches, legacy, len(records) - pos


# ---------------------------------------------------------------------------
# raw client (crafted Produce requests, Metadata, Fetch to a chosen broker)

METADATA = 3
INIT_PRODUCER_ID = 22
API_VERSIONS = 18
# The highest versions kafka-protocol 0.18 (kafka-mirror's codec) knows; the raw
# client asks for min(this, the broker's max), as kafka-mirror negotiates.
CLIENT_MAX = {PRODUCE: 13, FETCH: 18, METADATA: 13, INIT_PRODUCER_ID: 5}
# Versions below these are not written here (all of them are flexible).
CLIENT_MIN = {PRODUCE: 9, FETCH: 12, METADATA: 10, INIT_PRODUCER_ID: 3}


def uvarint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def varint(n):
    return uvarint((n << 1) ^ (n >> 63))


def cstring(s):
    """Compact nullable string."""
    if s is None:
        return uvarint(0)
    b = s.encode()
    return uvarint(len(b) + 1) + b


def carray(items):
    return uvarint(len(items) + 1) + b"".join(items)


def cbytes(b):
    return uvarint(0) if b is None else uvarint(len(b) + 1) + b


NO_TAGS = uvarint(0)


def record(offset_delta, key, value):
    body = (b"\x00" + varint(0) + varint(offset_delta)
            + (varint(-1) if key is None else varint(len(key)) + key)
            + (varint(-1) if value is None else varint(len(value)) + value)
            + varint(0))
    return varint(len(body)) + body


def build_batch(spec):
    """An uncompressed v2 batch, base offset 0, CreateTime now, from a spec:
    producer_id/producer_epoch/base_sequence (default -1), records: list of
    [key, value] (strings or null), value_bytes: pad every value to this size,
    timestamp (ms, default now; the same one makes a resend byte-identical),
    bad_crc: store the CRC with its low byte flipped."""
    now = spec.get("timestamp") or int(time.time() * 1000)
    recs = []
    for i, (k, v) in enumerate(spec["records"]):
        v = None if v is None else v.encode()
        if v is not None and spec.get("value_bytes"):
            v = v.ljust(spec["value_bytes"], b".")
        recs.append(record(i, None if k is None else k.encode(), v))
    n = len(recs)
    after_crc = struct.pack(">hiqqqhii", 0, n - 1, now, now, spec.get("producer_id", -1),
                            spec.get("producer_epoch", -1), spec.get("base_sequence", -1),
                            n) + b"".join(recs)
    crc = crc32c(after_crc)
    if spec.get("bad_crc"):
        crc ^= 0xFF
    after_length = struct.pack(">ibI", 0, 2, crc) + after_crc
    return struct.pack(">qi", 0, len(after_length)) + after_length


class RawClient:
    """One connection per broker, frames recorded as the proxy records them."""

    def __init__(self, brokers, recorder):
        self.brokers = brokers  # node id -> (host, port)
        self.recorder = recorder
        self.conns = {}  # (node, client_id) -> (socket, conn id, versions)
        self.corr = 0
        self.topics = {}  # name -> topic id (16 bytes)

    def conn(self, node, client_id):
        key = (node, client_id)
        if key not in self.conns:
            s = socket.create_connection(self.brokers[node], timeout=60)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            # Unique across runs recording into one directory.
            self.conns[key] = [s, f"{os.getpid()}.{len(self.conns) + 1}", None]
            # ApiVersions v0 (header v1, response header v0): the broker's ranges.
            frame = self.exchange(key, API_VERSIONS, 0, b"", record=False, flexible=False)
            r = Reader(frame, 4)
            if r.i16() != 0:
                raise SystemExit(f"raw: ApiVersions refused by node {node}")
            self.conns[key][2] = {}
            for _ in range(r.i32()):
                api, lo, hi = r.i16(), r.i16(), r.i16()
                self.conns[key][2][api] = (lo, hi)
        return key

    def version(self, key, api):
        lo, hi = self.conns[key][2][api]
        v = min(hi, CLIENT_MAX[api])
        if v < max(lo, CLIENT_MIN[api]):
            raise SystemExit(f"raw: no common version of api {api}")
        return v

    def exchange(self, key, api, version, body, record=True, flexible=True):
        sock, conn_id, _ = self.conns[key]
        self.corr += 1
        header = struct.pack(">hhih", api, version, self.corr, len(key[1])) + key[1].encode()
        if flexible:
            header += NO_TAGS
        request = header + body
        sock.sendall(struct.pack(">i", len(request)) + request)
        if record:
            self.recorder.record(conn_id, "request", api, version, self.corr, key[1], request)
        size = struct.unpack(">i", self.read(sock, 4))[0]
        response = self.read(sock, size)
        if struct.unpack_from(">i", response, 0)[0] != self.corr:
            raise SystemExit("raw: correlation id mismatch")
        if record:
            self.recorder.record(conn_id, "response", api, version, self.corr, key[1], response)
        return response

    @staticmethod
    def read(sock, n):
        buf = bytearray()
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise SystemExit("raw: connection closed by the broker")
            buf += chunk
        return bytes(buf)

    def metadata(self, node, client_id, topics):
        key = self.conn(node, client_id)
        v = self.version(key, METADATA)
        body = (carray([bytes(16) + cstring(t) + NO_TAGS for t in topics])
                + b"\x00\x00" + NO_TAGS)
        frame = self.exchange(key, METADATA, v, body)
        parsed = parse_metadata_response(frame, v)
        for t in parsed["topics"]:
            if t["error_code"] == 0:
                self.topics[t["name"]] = bytes.fromhex(t["topic_id"])
        return parsed

    def topic_field(self, node, version, topic, at_least_id):
        """The topic's id (from Metadata, asked of `node`) or name, by version."""
        if version >= at_least_id:
            if topic not in self.topics:
                self.metadata(node, "setup", [topic])
            return self.topics[topic]
        return cstring(topic)

    def init_producer_id(self, node, client_id):
        key = self.conn(node, client_id)
        v = self.version(key, INIT_PRODUCER_ID)
        body = cstring(None) + struct.pack(">iqh", 60000, -1, -1) + NO_TAGS
        deadline = time.time() + 60
        while True:
            frame = self.exchange(key, INIT_PRODUCER_ID, v, body)
            r = Reader(frame, 4)
            r.tagged()
            r.i32()
            error, pid, epoch = r.i16(), r.i64(), r.i16()
            # A fresh cluster answers COORDINATOR_LOAD_IN_PROGRESS / NOT_AVAILABLE a while.
            if error in (14, 15) and time.time() < deadline:
                time.sleep(0.5)
                continue
            if error:
                raise SystemExit(f"raw: InitProducerId error {error}")
            return {"producer_id": pid, "producer_epoch": epoch}

    def produce(self, node, client_id, partitions, acks, timeout_ms):
        key = self.conn(node, client_id)
        v = self.version(key, PRODUCE)
        by_topic = {}
        for p in partitions:
            by_topic.setdefault(p["topic"], []).append(p)
        topics = []
        for topic, parts in by_topic.items():
            topics.append(self.topic_field(node, v, topic, 13) + carray([
                struct.pack(">i", p["partition"]) + cbytes(build_batch(p)) + NO_TAGS
                for p in parts]) + NO_TAGS)
        body = cstring(None) + struct.pack(">hi", acks, timeout_ms) + carray(topics) + NO_TAGS
        frame = self.exchange(key, PRODUCE, v, body)
        return parse_produce_response(frame, v)

    def fetch(self, node, client_id, topic, partition, offset, leader_epoch):
        key = self.conn(node, client_id)
        v = self.version(key, FETCH)
        part = struct.pack(">iiqiqi", partition, leader_epoch, offset, -1, -1, 1 << 20) + NO_TAGS
        body = b""
        if v < 15:
            body += struct.pack(">i", -1)  # replica id: a consumer
        body += struct.pack(">iiibii", 500, 1, 1 << 20, 0, 0, -1)
        body += carray([self.topic_field(node, v, topic, 13) + carray([part]) + NO_TAGS])
        body += carray([]) + cstring("") + NO_TAGS
        frame = self.exchange(key, FETCH, v, body)
        return parse_fetch_response(frame, v)


def cmd_requests(a):
    """Runs the steps of a JSON list against the brokers, one result line each."""
    brokers = {}
    for b in a.broker:
        node, _, addr = b.partition("=")
        host, port = addr.rsplit(":", 1)
        brokers[int(node)] = (host, int(port))
    with open(a.steps, encoding="utf-8") as f:
        steps = json.load(f)
    client = RawClient(brokers, Recorder(a.record))
    for step in steps:
        op, node, cid = step["op"], step.get("node"), step.get("client_id", "setup")
        if op == "init_producer_id":
            out = client.init_producer_id(node, cid)
        elif op == "metadata":
            out = client.metadata(node, cid, step["topics"])
        elif op == "produce":
            out = client.produce(node, cid, step["partitions"], step.get("acks", -1),
                                 step.get("timeout_ms", 30000))
        elif op == "fetch":
            out = client.fetch(node, cid, step["topic"], step["partition"],
                               step.get("offset", 0), step["leader_epoch"])
            for p in out["partitions"]:
                p["records"] = None if p["records"] is None else len(p["records"])
        elif op == "wait_isr":
            # Polls Metadata (unrecorded client id) until the partition's ISR is `isr`.
            deadline = time.time() + step.get("timeout_s", 90)
            while True:
                out = client.metadata(node, cid, [step["topic"]])
                part = out["topics"][0]["partitions"]
                part = next((p for p in part if p["partition_index"] == step["partition"]),
                            None)
                if part and sorted(part["isr_nodes"]) == sorted(step["isr"]):
                    break
                if time.time() > deadline:
                    raise SystemExit(f"raw: ISR of {step['topic']} is not {step['isr']}: {part}")
                time.sleep(0.5)
        else:
            raise SystemExit(f"raw: unknown step {op!r}")
        print(json.dumps({"op": op, "client_id": cid, "result": out}), flush=True)


def cmd_topic(a):
    """Creates a topic with an explicit replica assignment (the first replica of
    each partition leads it) and waits until every partition has its leader."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    assignment = [[int(n) for n in p.split(",")] for p in a.assignment]
    fut = admin.create_topics([NewTopic(a.name, num_partitions=len(assignment),
                                        replica_assignment=assignment,
                                        config=config_pairs(a.config))])[a.name]
    fut.result(60)
    deadline = time.time() + 60
    while time.time() < deadline:
        md = admin.list_topics(a.name, timeout=10).topics.get(a.name)
        if md and not md.error and len(md.partitions) == len(assignment) and all(
                md.partitions[i].leader == assignment[i][0] for i in range(len(assignment))):
            return
        time.sleep(0.3)
    raise SystemExit(f"topic: {a.name} has no leaders within 60 s")


# ---------------------------------------------------------------------------
# protocol parsing of the raw client's answers (Produce and Metadata responses)


def tagged_fields(r):
    """{tag: raw bytes} of a tagged-field section."""
    out = {}
    for _ in range(r.uvarint()):
        tag = r.uvarint()
        out[tag] = r.take(r.uvarint())
    return out


def parse_leader_id_and_epoch(raw):
    r = Reader(raw)
    leader, epoch = r.i32(), r.i32()
    r.tagged()
    return {"leader_id": leader, "leader_epoch": epoch}


def parse_node_endpoints(raw):
    r = Reader(raw)
    out = []
    for _ in range(r.array_len(True)):
        node = {"node_id": r.i32(), "host": r.string(True), "port": r.i32(),
                "rack": r.string(True)}
        r.tagged()
        out.append(node)
    return out


def parse_produce_response(frame, version):
    flex = produce_flexible(version)
    r = Reader(frame)
    corr = r.i32()
    if flex:
        r.tagged()
    out = []
    for _ in range(r.array_len(flex)):
        if version >= 13:
            topic = {"topic_id": r.take(16).hex()}
        else:
            topic = {"topic": r.string(flex)}
        for _ in range(r.array_len(flex)):
            p = dict(topic)
            p["partition"] = r.i32()
            p["error_code"] = r.i16()
            p["error_name"] = ERRORS.get(p["error_code"], "?")
            p["base_offset"] = r.i64()
            p["log_append_time_ms"] = r.i64()
            p["log_start_offset"] = r.i64()
            p["record_errors"] = []
            for _ in range(r.array_len(flex)):
                p["record_errors"].append({"batch_index": r.i32(),
                                           "batch_index_error_message": r.string(flex)})
                if flex:
                    r.tagged()
            p["error_message"] = r.string(flex)
            p["current_leader"] = None
            if flex:
                tags = tagged_fields(r)
                if 0 in tags:
                    p["current_leader"] = parse_leader_id_and_epoch(tags[0])
            out.append(p)
        if flex:
            r.tagged()
    throttle = r.i32()
    endpoints = None
    if flex:
        tags = tagged_fields(r)
        if 0 in tags:
            endpoints = parse_node_endpoints(tags[0])
    if r.p != len(frame):
        raise ValueError(f"Produce v{version} response: {len(frame) - r.p} bytes left over")
    return {"correlation_id": corr, "throttle_time_ms": throttle, "partitions": out,
            "node_endpoints": endpoints}


def parse_metadata_response(frame, version):
    r = Reader(frame)
    corr = r.i32()
    r.tagged()
    throttle = r.i32()
    brokers = []
    for _ in range(r.array_len(True)):
        brokers.append({"node_id": r.i32(), "host": r.string(True), "port": r.i32(),
                        "rack": r.string(True)})
        r.tagged()
    cluster_id = r.string(True)
    controller_id = r.i32()
    topics = []
    for _ in range(r.array_len(True)):
        t = {"error_code": r.i16(), "name": r.string(True), "topic_id": r.take(16).hex(),
             "is_internal": bool(r.i8()), "partitions": []}
        for _ in range(r.array_len(True)):
            p = {"error_code": r.i16(), "partition_index": r.i32(), "leader_id": r.i32(),
                 "leader_epoch": r.i32()}
            for field in ("replica_nodes", "isr_nodes", "offline_replicas"):
                p[field] = [r.i32() for _ in range(r.array_len(True))]
            r.tagged()
            t["partitions"].append(p)
        t["topic_authorized_operations"] = r.i32()
        r.tagged()
        topics.append(t)
    error_code = r.i16() if version >= 13 else None
    r.tagged()
    if r.p != len(frame):
        raise ValueError(f"Metadata v{version} response: {len(frame) - r.p} bytes left over")
    return {"correlation_id": corr, "throttle_time_ms": throttle, "brokers": brokers,
            "cluster_id": cluster_id, "controller_id": controller_id, "topics": topics,
            "error_code": error_code}


# The error codes these fixtures meet (Kafka's Errors enum).
ERRORS = {0: "NONE", 2: "CORRUPT_MESSAGE", 3: "UNKNOWN_TOPIC_OR_PARTITION", 6:
          "NOT_LEADER_OR_FOLLOWER", 7: "REQUEST_TIMED_OUT", 10: "MESSAGE_TOO_LARGE",
          19: "NOT_ENOUGH_REPLICAS", 20: "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
          45: "OUT_OF_ORDER_SEQUENCE_NUMBER", 46: "DUPLICATE_SEQUENCE_NUMBER",
          47: "INVALID_PRODUCER_EPOCH", 59: "UNKNOWN_PRODUCER_ID", 74: "FENCED_LEADER_EPOCH",
          75: "UNKNOWN_LEADER_EPOCH", 87: "INVALID_RECORD", 90: "PRODUCER_FENCED",
          100: "UNKNOWN_TOPIC_ID"}


# ---------------------------------------------------------------------------
# extract


def load_index(record_dir):
    with open(os.path.join(record_dir, "index.jsonl"), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def pick(record_dir, index, fx):
    """The first recorded frame of fx's client id and api with records for partition 0."""
    direction = "response" if fx["api_key"] == FETCH else "request"
    for e in index:
        if e["client_id"] != fx["client_id"] or e["api_key"] != fx["api_key"] \
                or e["direction"] != direction:
            continue
        with open(os.path.join(record_dir, e["file"]), "rb") as f:
            frame = f.read()
        parsed = (parse_fetch_response if fx["api_key"] == FETCH else parse_produce_request)(
            frame, e["api_version"])
        parts = [p for p in parsed["partitions"] if p["records"]]
        if parts:
            return e, frame, parsed
    raise SystemExit(f"extract: no {direction} with records from client {fx['client_id']!r}")


def check(fx, partition, batches, legacy, tail):
    """Fails the capture when the broker did not give what the fixture is for."""
    want = fx.get("expect", {})
    problems = []
    if not batches and not legacy:
        problems.append("no complete batch")
    if not all(b["crc_ok"] for b in batches + legacy):
        problems.append("a captured batch fails its CRC")
    if "magic" in want:
        if batches or any(e["magic"] != want["magic"] for e in legacy):
            problems.append(f"not all entries have magic {want['magic']}")
        if "codec" in want and any(e["codec"] != want["codec"] for e in legacy):
            problems.append(f"codec is not {want['codec']}")
        if want.get("min_entries", 1) > len(legacy):
            problems.append(f"fewer than {want.get('min_entries', 1)} entries")
    if "codec" in want and any(b["codec"] != want["codec"] for b in batches if not b["control"]):
        problems.append(f"codec is not {want['codec']}")
    if want.get("partial_tail") and tail == 0:
        problems.append("no cut-off tail")
    if not want.get("partial_tail") and tail:
        problems.append(f"unexpected {tail}-byte tail")
    for ct in want.get("control_types", []):
        if not any(b["control_type"] == ct for b in batches):
            problems.append(f"no {ct} marker")
    if want.get("aborted_transactions") and not partition.get("aborted_transactions"):
        problems.append("no aborted_transactions list")
    if want.get("producer_id") and not any(b["producer_id"] >= 0 for b in batches):
        problems.append("no producer id")
    if want.get("base_sequence_above_zero") and not any(b["base_sequence"] > 0 for b in batches):
        problems.append("no batch with a base sequence above 0")
    if want.get("offset_gap") and not any(
            b["records_count"] != b["last_offset_delta"] + 1 for b in batches):
        problems.append("no batch with records_count != last_offset_delta + 1")
    if want.get("empty_batch") and not any(b["records_count"] == 0 for b in batches):
        problems.append("no empty batch")
    if "magic" not in want and want.get("min_batches", 1) > len(batches):
        problems.append(f"fewer than {want['min_batches']} batches")
    if problems:
        raise SystemExit(f"extract: fixture {fx['name']}: " + "; ".join(problems))


def sidecar(fx, entry, parsed, extra=None):
    parts = []
    for p in parsed["partitions"]:
        if p["records"] is None:
            continue
        batches, legacy, tail = split_batches(p["records"])
        check(fx, p, batches, legacy, tail)
        q = {k: v for k, v in p.items() if k != "records"}
        q["records_bytes"] = len(p["records"])
        q["partial_tail_bytes"] = tail
        q["batches"] = batches
        if legacy:
            q["legacy_entries"] = legacy
        parts.append(q)
    doc = {
        "name": fx["name"],
        "file": fx["name"] + ".bin",
        "api_key": entry["api_key"],
        "api_name": "Fetch" if entry["api_key"] == FETCH else "Produce",
        "direction": entry["direction"],
        "api_version": entry["api_version"],
        "correlation_id": entry["correlation_id"],
        "client_id": entry["client_id"],
        "topic": fx["topic"],
        "description": fx["description"],
        "capture": fx.get("capture", {}),
        "frame_bytes": None,
        **({"produced": fx["produced"]} if "produced" in fx else {}),
        "partitions": parts,
    }
    if entry["api_key"] == FETCH:
        doc["error_code"] = parsed["error_code"]
    else:
        doc["transactional_id"] = parsed["transactional_id"]
        doc["acks"] = parsed["acks"]
    if extra:
        doc.update(extra)
    return doc


def write(out, name, frame, doc):
    doc["frame_bytes"] = len(frame)
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(frame)
    with open(os.path.join(out, name + ".json"), "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")


def records_position(frame, version):
    """Offset in the frame of the first partition's records with data (Fetch)."""
    parsed = parse_fetch_response(frame, version)
    recs = next(p["records"] for p in parsed["partitions"] if p["records"])
    pos = frame.find(recs)
    assert pos > 0 and frame.find(recs, pos + 1) < 0
    return pos


def corrupt(out, base_name, frame, entry, base_doc):
    version = entry["api_version"]
    rp = records_position(frame, version)
    batches = base_doc["partitions"][0]["batches"]

    # 1. A flipped byte inside the records of the first batch: CRC mismatch.
    b0 = batches[0]
    at = rp + b0["position"] + 61 + (b0["batch_length"] + 12 - 61) // 2
    bad = bytearray(frame)
    bad[at] ^= 0xFF
    doc = json.loads(json.dumps(base_doc))
    doc.update({
        "name": "corrupt-bad-crc", "file": "corrupt-bad-crc.bin",
        "description": f"{base_name} with the byte at frame offset {at} (inside the records "
                       f"of the batch at offset {b0['base_offset']}) XORed with 0xFF: that "
                       f"batch's stored CRC no longer matches.",
        "corrupted_from": base_name,
        "corruption": {"kind": "flipped_byte", "frame_offset": at,
                       "batch_base_offset": b0["base_offset"]},
    })
    doc["partitions"][0]["batches"][0]["crc_ok"] = False
    doc["partitions"][0]["batches"][0]["computed_crc"] = crc32c(
        bytes(bad[rp + b0["position"] + 21: rp + b0["position"] + 12 + b0["batch_length"]]))
    write(out, "corrupt-bad-crc", bytes(bad), doc)

    # 2. The last batch's length made larger than the frame: must read as a cut-off tail.
    bl = batches[-1]
    at = rp + bl["position"] + 8
    huge = 0x7FFFFF00
    bad = bytearray(frame)
    bad[at:at + 4] = struct.pack(">i", huge)
    doc = json.loads(json.dumps(base_doc))
    doc.update({
        "name": "corrupt-batch-length", "file": "corrupt-batch-length.bin",
        "description": f"{base_name} with the batchLength of its last batch (offset "
                       f"{bl['base_offset']}) set to {huge}, far beyond the frame: a splitter "
                       f"must treat it as a cut-off tail without allocating for it.",
        "corrupted_from": base_name,
        "corruption": {"kind": "batch_length", "frame_offset": at, "batch_length": huge,
                       "batch_base_offset": bl["base_offset"]},
    })
    p = doc["partitions"][0]
    p["batches"] = p["batches"][:-1]
    p["partial_tail_bytes"] = p["records_bytes"] - bl["position"]
    write(out, "corrupt-batch-length", bytes(bad), doc)

    # 3. A size prefix over any sane maximum, in front of the real frame (wire bytes).
    prefix = 0x7FFFFFF0
    wire = struct.pack(">i", prefix) + frame
    doc = {
        "name": "corrupt-frame-prefix", "file": "corrupt-frame-prefix.bin",
        "api_key": entry["api_key"], "api_name": "Fetch", "direction": "response",
        "api_version": version, "correlation_id": entry["correlation_id"],
        "topic": base_doc["topic"],
        "description": f"Wire bytes: a 4-byte size prefix of {prefix} (about 2 GiB) followed "
                       f"by the frame of {base_name}. Unlike every other .bin file this one "
                       f"includes the size prefix; a reader must refuse it before allocating.",
        "corrupted_from": base_name,
        "corruption": {"kind": "frame_size_prefix", "size_prefix": prefix,
                       "includes_size_prefix": True},
    }
    write(out, "corrupt-frame-prefix", wire, doc)


def topic_names(record_dir, index):
    """topic id (hex) -> name, from every Metadata response in the recording."""
    names = {}
    for e in index:
        if e["api_key"] == METADATA and e["direction"] == "response":
            with open(os.path.join(record_dir, e["file"]), "rb") as f:
                parsed = parse_metadata_response(f.read(), e["api_version"])
            names.update({t["topic_id"]: t["name"] for t in parsed["topics"]})
    return names


def raw_exchange(record_dir, index, fx):
    """The first request of fx's client id and api, and its response: (index
    entry of the response, request frame, response frame)."""
    for e in index:
        if e["client_id"] == fx["client_id"] and e["api_key"] == fx["api_key"] \
                and e["direction"] == "request":
            response = next((r for r in index if r["direction"] == "response"
                             and r["conn"] == e["conn"]
                             and r["correlation_id"] == e["correlation_id"]), None)
            if response is None:
                break
            frames = []
            for x in (e, response):
                with open(os.path.join(record_dir, x["file"]), "rb") as f:
                    frames.append(f.read())
            return response, frames[0], frames[1]
    raise SystemExit(f"extract: no answered request from client {fx['client_id']!r}")


def check_errors(fx, got):
    """got: {"topic/partition": error code}; fx["expect"]["errors"] lists the
    codes each partition may have (a broker may answer either way)."""
    want = fx["expect"]["errors"]
    if set(got) != set(want):
        raise SystemExit(f"extract: fixture {fx['name']}: partitions {sorted(got)}, "
                         f"expected {sorted(want)}")
    wrong = {k: v for k, v in got.items() if v not in want[k]}
    if wrong:
        raise SystemExit(f"extract: fixture {fx['name']}: error codes {wrong}, expected "
                         f"{ {k: want[k] for k in wrong} }")


def raw_sidecar(record_dir, index, fx, names):
    """Sidecar of a raw-client fixture: the response as parsed here, and for
    Produce the batch each partition was sent."""
    entry, request, response = raw_exchange(record_dir, index, fx)
    version = entry["api_version"]
    doc = {
        "name": fx["name"], "file": fx["name"] + ".bin", "api_key": entry["api_key"],
        "api_name": {PRODUCE: "Produce", FETCH: "Fetch", METADATA: "Metadata"}[entry["api_key"]],
        "direction": "response", "api_version": version,
        "correlation_id": entry["correlation_id"], "client_id": entry["client_id"],
        "description": fx["description"], "capture": fx.get("capture", {}),
        "frame_bytes": None,
    }
    want = fx.get("expect", {})
    if entry["api_key"] == PRODUCE:
        sent = parse_produce_request(request, version)
        parsed = parse_produce_response(response, version)
        doc["acks"] = sent["acks"]
        doc["timeout_ms"] = sent["timeout_ms"]
        doc["throttle_time_ms"] = parsed["throttle_time_ms"]
        doc["node_endpoints"] = parsed["node_endpoints"]
        batches = {}
        for p in sent["partitions"]:
            topic = p.get("topic") or names[p["topic_id"]]
            found, _, tail = split_batches(p["records"])
            if len(found) != 1 or tail:
                raise SystemExit(f"extract: fixture {fx['name']}: not one batch sent")
            batches[(topic, p["partition"])] = found[0]
        doc["partitions"] = []
        for p in parsed["partitions"]:
            p["topic"] = p.get("topic") or names[p["topic_id"]]
            p["sent_batch"] = batches.pop((p["topic"], p["partition"]))
            doc["partitions"].append(p)
        if batches:
            raise SystemExit(f"extract: fixture {fx['name']}: no answer for {list(batches)}")
        check_errors(fx, {f"{p['topic']}/{p['partition']}": p["error_code"]
                          for p in doc["partitions"]})
    elif entry["api_key"] == FETCH:
        parsed = parse_fetch_response(response, version)
        doc["error_code"] = parsed["error_code"]
        doc["node_endpoints"] = parsed.get("node_endpoints")
        doc["partitions"] = []
        for p in parsed["partitions"]:
            p["topic"] = names[p["topic_id"]] if "topic_id" in p else p["topic"]
            p["error_name"] = ERRORS.get(p["error_code"], "?")
            p["current_leader"] = p.get("current_leader")
            recs = p.pop("records")
            p["records_bytes"] = None if recs is None else len(recs)
            doc["partitions"].append(p)
        check_errors(fx, {f"{p['topic']}/{p['partition']}": p["error_code"]
                          for p in doc["partitions"]})
    else:
        parsed = parse_metadata_response(response, version)
        doc.update({k: v for k, v in parsed.items() if k != "correlation_id"})
        for key, leader in want.get("leaders", {}).items():
            topic, part = key.rsplit("/", 1)
            t = next(t for t in parsed["topics"] if t["name"] == topic)
            p = next(p for p in t["partitions"] if p["partition_index"] == int(part))
            if p["leader_id"] != leader:
                raise SystemExit(f"extract: fixture {fx['name']}: {key} led by "
                                 f"{p['leader_id']}, expected {leader}")
    return doc, response


def cmd_extract(a):
    with open(a.plan, encoding="utf-8") as f:
        plan = json.load(f)
    index = load_index(a.record)
    os.makedirs(a.out, exist_ok=True)
    captured = {}
    names = topic_names(a.record, index)
    for fx in plan["fixtures"]:
        if fx.get("raw"):
            doc, frame = raw_sidecar(a.record, index, fx, names)
            doc.update({"broker": plan.get("broker"), "client": plan.get("client")})
            write(a.out, fx["name"], frame, doc)
            print(f"{fx['name']}: {doc['api_name']} v{doc['api_version']} response, "
                  f"{len(frame)} bytes")
            continue
        entry, frame, parsed = pick(a.record, index, fx)
        doc = sidecar(fx, entry, parsed, {"broker": plan.get("broker"),
                                          "client": plan.get("client")})
        write(a.out, fx["name"], frame, doc)
        captured[fx["name"]] = (entry, frame, doc)
        print(f"{fx['name']}: {entry['direction']} api {entry['api_key']} "
              f"v{entry['api_version']}, {len(frame)} bytes, "
              f"{sum(len(p['batches']) for p in doc['partitions'])} batches")
    src = plan.get("corrupt_from")
    if src:
        entry, frame, doc = captured[src]
        corrupt(a.out, src, frame, entry, doc)


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("proxy")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--upstream", required=True)
    p.add_argument("--record", required=True)
    p = sub.add_parser("consume")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--client-id", required=True)
    p.add_argument("--read-committed", action="store_true")
    p.add_argument("--config", action="append", default=[])
    p = sub.add_parser("updates")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--client-id", default="capture-updates")
    p.add_argument("--keys", type=int, default=5)
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--idempotent", action="store_true")
    p.add_argument("--unique", default=None)
    p.add_argument("--tombstone", action="store_true")
    p.add_argument("--tag", default="v")
    p.add_argument("--sleep", type=float, default=0.0)
    p = sub.add_parser("requests")
    p.add_argument("--broker", action="append", required=True, help="NODE=HOST:PORT")
    p.add_argument("--steps", required=True)
    p.add_argument("--record", required=True)
    p = sub.add_parser("topic")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--name", required=True)
    p.add_argument("--assignment", action="append", required=True,
                   help="one per partition: comma-separated node ids, leader first")
    p.add_argument("--config", action="append", default=[])
    p = sub.add_parser("extract")
    p.add_argument("--record", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    {"proxy": cmd_proxy, "consume": cmd_consume, "updates": cmd_updates,
     "requests": cmd_requests, "topic": cmd_topic, "extract": cmd_extract}[a.cmd](a)


if __name__ == "__main__":
    main()
