#!/usr/bin/env python3
"""Measure a cluster's own produce-to-consume delay with confluent-kafka.

Consumes a LogAppendTime topic from its end for --seconds and, for every record,
takes the time it was received minus its timestamp (the broker's append time).
Records appended in the first --skip-seconds are left out (the consumer is still
joining). Prints {"records": n, "p50_ms": x, "p99_ms": y, "max_ms": z}.
"""
import argparse
import json
import time

from confluent_kafka import Consumer, TIMESTAMP_LOG_APPEND_TIME


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--skip-seconds", type=float, default=0)
    a = ap.parse_args()
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": "latency-reference-%d" % time.time_ns(),
        "auto.offset.reset": "latest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
    })
    c.subscribe([a.topic])
    started = time.time()
    delays = []
    while time.time() - started < a.seconds:
        # poll, not consume(n, timeout): consume waits for n messages or the timeout,
        # which would add up to the timeout to every delay measured.
        m = c.poll(0.1)
        if m is not None and not m.error():
            now = time.time() * 1000
            kind, ts = m.timestamp()
            if kind != TIMESTAMP_LOG_APPEND_TIME:
                raise SystemExit(f"consume_latency.py: {a.topic} is not a LogAppendTime topic")
            if ts >= (started + a.skip_seconds) * 1000:
                delays.append(now - ts)
    c.close()
    delays.sort()

    def pct(p):
        return delays[min(len(delays) - 1, int(p * len(delays)))] if delays else None

    print(json.dumps({"records": len(delays), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                      "max_ms": delays[-1] if delays else None}))


if __name__ == "__main__":
    main()
