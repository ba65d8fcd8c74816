#!/usr/bin/env python3
"""Measure a cluster's own produce-to-consume delay with confluent-kafka.

Consumes a LogAppendTime topic from its end for --seconds and, for every record,
takes the time it was received minus its timestamp (the broker's append time).
Records appended in the first --skip-seconds are left out (the consumer is still
joining). Prints {"records": n, "p50_ms": x, "p99_ms": y, "max_ms": z}.

With --records, any topic: prints {"key": b64|null, "received_ms": t} for every
record instead, for the caller to match with when it was written elsewhere;
--idle-seconds stops that long after the last record once one has come. Reads
read_committed (librdkafka's default).
"""
import argparse
import base64
import json
import time

from confluent_kafka import Consumer, TIMESTAMP_LOG_APPEND_TIME


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--skip-seconds", type=float, default=0)
    ap.add_argument("--records", action="store_true")
    ap.add_argument("--idle-seconds", type=float, default=None)
    a = ap.parse_args()
    c = Consumer({
        "bootstrap.servers": a.bootstrap,
        "group.id": "latency-reference-%d" % time.time_ns(),
        "auto.offset.reset": "latest",
        "enable.auto.commit": False,
        "fetch.wait.max.ms": 10,
        # librdkafka's default, spelled out: a transaction's records arrive once
        # it commits.
        "isolation.level": "read_committed",
    })
    c.subscribe([a.topic])
    started = time.time()
    last = None
    delays = []
    while time.time() - started < a.seconds:
        if a.idle_seconds is not None and last is not None and time.time() - last > a.idle_seconds:
            break
        # poll, not consume(n, timeout): consume waits for n messages or the timeout,
        # which would add up to the timeout to every delay measured.
        m = c.poll(0.1)
        if m is not None and not m.error():
            last = time.time()
            now = last * 1000
            if a.records:
                key = m.key()
                print(json.dumps({"key": base64.b64encode(key).decode() if key is not None else None,
                                  "received_ms": now}))
                continue
            kind, ts = m.timestamp()
            if kind != TIMESTAMP_LOG_APPEND_TIME:
                raise SystemExit(f"consume_latency.py: {a.topic} is not a LogAppendTime topic")
            if ts >= (started + a.skip_seconds) * 1000:
                delays.append(now - ts)
    c.close()
    if a.records:
        return
    delays.sort()

    def pct(p):
        return delays[min(len(delays) - 1, int(p * len(delays)))] if delays else None

    print(json.dumps({"records": len(delays), "p50_ms": pct(0.50), "p99_ms": pct(0.99),
                      "max_ms": delays[-1] if delays else None}))


if __name__ == "__main__":
    main()
