#!/usr/bin/env python3
"""Dump a whole topic with confluent-kafka, from the beginning to the end of each partition.

Assigns every partition at the beginning (no group offsets are used or committed),
reads read_committed unless --read-uncommitted, until each partition's position reaches
the high watermark sampled at start (so with read_committed an open transaction makes
it wait until --timeout),
and prints one JSON line per record sorted by (partition, offset):
{"partition", "offset", "key", "value", "headers": [[name, b64|null]...],
 "timestamp_type", "timestamp"}, bytes as base64.
"""
import argparse
import base64
import json
import sys
import time
import uuid

from confluent_kafka import Consumer, KafkaException, TopicPartition, OFFSET_BEGINNING

from records import as_json

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--read-uncommitted", action="store_true")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--config", action="append", default=[], help="k=v librdkafka setting")
    a = ap.parse_args()
    isolation = "read_uncommitted" if a.read_uncommitted else "read_committed"
    conf = {
        "bootstrap.servers": a.bootstrap,
        "group.id": f"kafka-testkit-dump-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": isolation,
        "enable.partition.eof": True,
        "fetch.max.bytes": 8 << 20,
    }
    for kv in a.config:
        k, _, v = kv.partition("=")
        conf[k] = v
    c = Consumer(conf)
    md = c.list_topics(a.topic, timeout=30)
    t = md.topics.get(a.topic)
    if t is None or t.error is not None:
        raise SystemExit(f"dump.py: topic {a.topic!r} not found: {t.error if t else 'missing'}")
    parts = sorted(t.partitions)
    ends = {}
    for p in parts:
        lo, hi = c.get_watermark_offsets(TopicPartition(a.topic, p), timeout=30, cached=False)
        ends[p] = hi
    todo = {p for p in parts if ends[p] > 0}
    c.assign([TopicPartition(a.topic, p, OFFSET_BEGINNING) for p in parts if p in todo])
    recs = []
    deadline = time.time() + a.timeout
    while todo:
        if time.time() > deadline:
            pos = {tp.partition: tp.offset for tp in c.position(
                [TopicPartition(a.topic, p) for p in sorted(todo)])}
            raise SystemExit(f"dump.py: timed out; positions {pos}, ends { {p: ends[p] for p in todo} }")
        msgs = c.consume(num_messages=1000, timeout=0.5)
        for m in msgs:
            if m.error() is not None:
                if m.error().code() != -191:  # _PARTITION_EOF
                    raise SystemExit(f"dump.py: {m.error()}")
                continue
            recs.append((m.partition(), m.offset(), as_json(m)))
        # Position passes control records and aborted data too, so it reaches the end.
        for tp in c.position([TopicPartition(a.topic, p) for p in sorted(todo)]):
            if tp.offset >= ends[tp.partition]:
                todo.discard(tp.partition)
    c.close()
    recs.sort(key=lambda r: (r[0], r[1]))
    out = sys.stdout
    for p, o, r in recs:
        if o < ends[p]:
            out.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        sys.stderr.write(f"dump.py: {e}\n")
        sys.exit(1)
