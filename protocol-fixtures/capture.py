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
  extract  --record DIR --plan PLAN.json --out DIR
           Picks frames out of a recording, checks them against the plan's
           expectations, writes <name>.bin (frame without its size prefix) and a
           <name>.json sidecar describing the batches (and old-format entries),
           and makes corrupted copies when the plan names a fixture to corrupt.

The frame parsing here is a small, separate implementation of the Kafka protocol
(Fetch response and Produce request only), so fixtures do not depend on the Rust
code they test.
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
        self.seq = 0
        self.index = open(os.path.join(dir_, "index.jsonl"), "a", encoding="utf-8")

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
                r.tagged()
            out.append(p)
        if flex:
            r.tagged()
    if flex:
        r.tagged()
    if r.p != len(frame):
        raise ValueError(f"Fetch v{version} response: {len(frame) - r.p} bytes left over")
    return {"correlation_id": corr, "error_code": error_code, "session_id": session_id,
            "partitions": out}


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
    r.i32()  # timeout
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
            "acks": acks, "partitions": out}


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


def cmd_extract(a):
    with open(a.plan, encoding="utf-8") as f:
        plan = json.load(f)
    index = load_index(a.record)
    os.makedirs(a.out, exist_ok=True)
    captured = {}
    for fx in plan["fixtures"]:
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
    p = sub.add_parser("extract")
    p.add_argument("--record", required=True)
    p.add_argument("--plan", required=True)
    p.add_argument("--out", required=True)
    a = ap.parse_args()
    {"proxy": cmd_proxy, "consume": cmd_consume, "updates": cmd_updates,
     "extract": cmd_extract}[a.cmd](a)


if __name__ == "__main__":
    main()
