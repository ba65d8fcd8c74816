#!/usr/bin/env python3
"""Produce deterministic, varied records with confluent-kafka (librdkafka).

Record i: key "<prefix>-<i>" (with --distinct-keys N, "<prefix>-<i % N>": many
updates to few keys, for compacted topics; with --shuffle-keys as well, one of the
N picked by a fixed pseudo-random sequence, so the last update of a key can fall
anywhere and compaction leaves gaps inside many batches); value a JSON-like document whose size varies with i
(every 10th value is null); headers: none for i % 4 == 0, one for i % 4 == 1, several
(with a repeated name and a null value) otherwise, or none at all with
--no-headers (topics in the old message formats refuse headers); explicit
CreateTime timestamp base + i ms. With --partitions N record i goes to partition i % N.

Prints one JSON line per acknowledged record, in production order:
{"partition", "offset", "key", "value", "headers": [[name, b64|null]...],
 "timestamp_type", "timestamp"}, bytes as base64.
"""
import argparse
import base64
import json
import random
import sys
import time

from confluent_kafka import KafkaException, Producer

from records import b64


def record(i, prefix, base_ts, key_index, headers_on=True):
    key = f"{prefix}-{key_index}".encode()
    if i % 10 == 9:
        value = None
    else:
        pad = "x" * ((i * 37) % 1500)
        value = json.dumps(
            {"i": i, "name": f"record {i}", "tags": ["a", "b", str(i % 7)], "pad": pad},
            separators=(",", ":"),
        ).encode()
    m = i % 4
    if m == 0 or not headers_on:
        headers = []
    elif m == 1:
        headers = [("trace-id", f"t-{i}".encode())]
    else:
        headers = [
            ("trace-id", f"t-{i}".encode()),
            ("source", b"kafka-testkit"),
            ("dup", b"one"),
            ("dup", b"two"),
            ("empty", None),
            ("bin", bytes([i % 256, 0, 255])),
        ]
    return key, value, headers, base_ts + i


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--partitions", type=int, default=None)
    ap.add_argument("--compression", default="none",
                    choices=["none", "gzip", "snappy", "lz4", "zstd"])
    ap.add_argument("--key-prefix", default="key")
    ap.add_argument("--distinct-keys", type=int, default=None)
    ap.add_argument("--shuffle-keys", action="store_true")
    ap.add_argument("--base-timestamp", type=int, default=None)
    ap.add_argument("--idempotence", action="store_true")
    ap.add_argument("--transactional-id", default=None)
    ap.add_argument("--abort", action="store_true")
    ap.add_argument("--no-headers", action="store_true")
    ap.add_argument("--config", action="append", default=[], help="k=v librdkafka setting")
    a = ap.parse_args()

    conf = {
        "bootstrap.servers": a.bootstrap,
        "compression.type": a.compression,
        "linger.ms": 20,
        "acks": "all",
        "enable.idempotence": bool(a.idempotence or a.transactional_id),
    }
    if a.transactional_id:
        conf["transactional.id"] = a.transactional_id
    for kv in a.config:
        k, _, v = kv.partition("=")
        conf[k] = v
    p = Producer(conf)
    base_ts = a.base_timestamp if a.base_timestamp is not None else int(time.time() * 1000) - 3600_000

    results = [None] * a.count
    errors = []

    def on_delivery(i):
        def cb(err, msg):
            if err is not None:
                errors.append(f"record {i}: {err}")
            else:
                results[i] = (msg.partition(), msg.offset())
        return cb

    if a.transactional_id:
        p.init_transactions(30)
        p.begin_transaction()
    shuffled = random.Random(0)
    recs = []
    for i in range(a.count):
        if a.distinct_keys is None:
            key_index = i
        elif a.shuffle_keys:
            key_index = shuffled.randrange(a.distinct_keys)
        else:
            key_index = i % a.distinct_keys
        key, value, headers, ts = record(i, a.key_prefix, base_ts, key_index, not a.no_headers)
        recs.append((key, value, headers, ts))
        kw = dict(key=key, value=value, headers=headers, timestamp=ts, on_delivery=on_delivery(i))
        if a.partitions:
            kw["partition"] = i % a.partitions
        while True:
            try:
                p.produce(a.topic, **kw)
                break
            except BufferError:
                p.poll(0.1)
        p.poll(0)
    if a.transactional_id:
        if a.abort:
            p.flush(60)
            p.abort_transaction(60)
        else:
            p.commit_transaction(60)
    left = p.flush(60)
    if left:
        errors.append(f"{left} records still unacknowledged after 60s")
    if errors:
        sys.stderr.write("\n".join(errors[:20]) + "\n")
        sys.exit(1)

    out = sys.stdout
    for i, (key, value, headers, ts) in enumerate(recs):
        part, off = results[i]
        out.write(json.dumps({
            "partition": part, "offset": off, "key": b64(key), "value": b64(value),
            "headers": [[n, b64(v)] for n, v in headers],
            "timestamp_type": "CreateTime", "timestamp": ts,
        }) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        sys.stderr.write(f"produce.py: {e}\n")
        sys.exit(1)
