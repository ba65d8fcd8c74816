#!/usr/bin/env python3
"""Create or delete a topic with confluent-kafka's AdminClient and wait until it is settled.

create: waits until metadata shows every partition with a leader and a full ISR.
delete: waits until metadata no longer lists the topic.
"""
import argparse
import sys
import time

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["create", "delete"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--partitions", type=int, default=1)
    ap.add_argument("--replication-factor", type=int, default=1)
    ap.add_argument("--config", action="append", default=[])
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    deadline = time.time() + a.timeout
    if a.action == "create":
        cfg = dict(kv.split("=", 1) for kv in a.config)
        fs = admin.create_topics([NewTopic(a.topic, a.partitions, a.replication_factor, config=cfg)],
                                 operation_timeout=a.timeout)
        fs[a.topic].result()
        while True:
            t = admin.list_topics(a.topic, timeout=10).topics.get(a.topic)
            ok = (t is not None and t.error is None and len(t.partitions) == a.partitions
                  and all(p.leader >= 0 and len(p.isrs) == a.replication_factor
                          for p in t.partitions.values()))
            if ok:
                return
            if time.time() > deadline:
                raise SystemExit(f"admin.py: topic {a.topic} not ready after {a.timeout}s: {t and t.partitions}")
            time.sleep(0.1)
    else:
        fs = admin.delete_topics([a.topic], operation_timeout=a.timeout)
        fs[a.topic].result()
        while a.topic in admin.list_topics(timeout=10).topics:
            if time.time() > deadline:
                raise SystemExit(f"admin.py: topic {a.topic} still listed after {a.timeout}s")
            time.sleep(0.1)


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        sys.stderr.write(f"admin.py: {e}\n")
        sys.exit(1)
