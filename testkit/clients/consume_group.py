#!/usr/bin/env python3
"""Read a topic as a member of a consumer group with confluent-kafka (librdkafka), the
way an application does, and commit exactly what was read.

Subscribes to --topic in --group (auto.offset.reset=earliest, so a group without
committed offsets starts at the beginning), reads until --max-records records were
returned or every assigned partition reported its end (enable.partition.eof), then
commits, with explicit offsets, the offset after the last record returned of each
partition that returned any (auto-commit and the automatic offset store are off, so
nothing else is committed), and closes. Partitions that returned nothing keep the
committed offset they had.

A partial read is shared out between the partitions, so it stops inside every one
rather than draining one first: fetches are small (1 KiB per partition: about one
batch, KIP-74), and a partition that returned its share of --max-records is paused (what it had
fetched already is not returned) until the others have theirs or are at their end,
then sought back to its next record (otherwise librdkafka, which fetches far ahead,
returns whole runs of one partition).

Prints one JSON line per record, in the order they were returned:
{"partition", "offset", "key", "value", "headers": [[name, b64|null]...],
 "timestamp_type", "timestamp"}, bytes as base64.
"""
import argparse
import base64
import json
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from records import as_json

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--max-records", type=int, required=True)
    ap.add_argument("--isolation", choices=["read_committed", "read_uncommitted"], required=True)
    ap.add_argument("--timeout", type=float, default=120.0)
    a = ap.parse_args()
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": a.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": a.isolation,
        "enable.partition.eof": True,
        "max.partition.fetch.bytes": 1024,
    })
    assigned = set()
    at_end = set()

    def on_assign(consumer, partitions):
        assigned.update(tp.partition for tp in partitions)

    c.subscribe([a.topic], on_assign=on_assign)
    out = sys.stdout
    next_offsets = {}
    returned = 0
    per_partition = {}
    paused = set()
    sharing = True
    deadline = time.time() + a.timeout
    while returned < a.max_records and not (assigned and at_end >= assigned):
        if time.time() > deadline:
            raise SystemExit(
                f"consume_group.py: timed out after {returned} records; assigned "
                f"{sorted(assigned)}, at their end {sorted(at_end)}")
        if paused and paused | at_end >= assigned:
            # Every partition had its share: the rest goes to whichever has more,
            # each from right after its last record returned.
            c.resume([TopicPartition(a.topic, p) for p in sorted(paused)])
            for p in sorted(paused):
                c.seek(TopicPartition(a.topic, p, next_offsets[p]))
            paused.clear()
            sharing = False
        for m in c.consume(num_messages=min(500, a.max_records - returned), timeout=0.5):
            p = m.partition()
            if p in paused:
                # Fetched before the pause took effect: not returned, read again
                # after the seek at resume.
                continue
            if m.error() is not None:
                if m.error().code() != KafkaError._PARTITION_EOF:
                    raise SystemExit(f"consume_group.py: {m.error()}")
                at_end.add(p)
                continue
            at_end.discard(p)
            out.write(json.dumps(as_json(m)) + "\n")
            next_offsets[p] = m.offset() + 1
            returned += 1
            per_partition[p] = per_partition.get(p, 0) + 1
            if sharing and per_partition[p] >= -(-a.max_records // len(assigned)):
                c.pause([TopicPartition(a.topic, p)])
                paused.add(p)
    if next_offsets:
        c.commit(offsets=[TopicPartition(a.topic, p, o) for p, o in sorted(next_offsets.items())],
                 asynchronous=False)
    c.close()


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        sys.stderr.write(f"consume_group.py: {e}\n")
        sys.exit(1)
