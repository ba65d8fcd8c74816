#!/usr/bin/env python3
"""Write a realistic benchmark data set with confluent-kafka (librdkafka).

Records look like an order service's events: a key ("customer-<n>", from a large
key space, so librdkafka's partitioner spreads them), one to three headers
(trace id, producing service, content type) and a JSON value of 200 B to 3 kB with
ids, amounts, timestamps, line items and some free text. Values come from a pool of
pre-built documents (--pool of them, seeded) so the loop spends its time in
librdkafka, not in Python; the pool is large enough that a batch rarely holds the
same document twice, so compression ratios stay like real JSON's.

Two modes:
  --bytes N         as fast as possible until N bytes (keys + values + headers) are
                    acknowledged;
  --rate R --seconds S
                    R records per second for S seconds, every key unique
                    ("lat-<i>"), for latency measurements.

--age-ms A stamps each record's CreateTime A ms before it is produced (a backfill
of old data).

Prints one JSON line at the end: {"records": n, "bytes": b, "seconds": s}.
"""
import argparse
import json
import random
import sys
import time

from confluent_kafka import KafkaException, Producer

WORDS = (
    "express shipping gift wrap please leave at the front door call on arrival "
    "fragile handle with care second floor ring twice weekend delivery invoice "
    "company address backorder substitute allowed"
).split()
PRODUCTS = ["sku-%05d" % i for i in range(5000)]
SERVICES = [b"checkout-api", b"order-service", b"mobile-gateway", b"partner-import"]


def document(rng, i):
    items = [
        {
            "sku": rng.choice(PRODUCTS),
            "qty": rng.randint(1, 5),
            "unit_price": round(rng.uniform(0.5, 400.0), 2),
            "discount": rng.choice([0, 0, 0, 5, 10, 15]),
        }
        for _ in range(rng.randint(1, 12))
    ]
    doc = {
        "event": rng.choice(["order_created", "order_paid", "order_shipped", "order_updated"]),
        "order_id": "%032x" % rng.getrandbits(128),
        "customer": {
            "id": rng.randint(1, 10_000_000),
            "segment": rng.choice(["retail", "business", "vip"]),
            "country": rng.choice(["DE", "FR", "US", "GB", "JP", "BR", "IN", "NL"]),
        },
        "created_at": 1_732_000_000_000 + rng.randint(0, 86_400_000),
        "currency": rng.choice(["EUR", "USD", "GBP", "JPY"]),
        "total": round(sum(x["qty"] * x["unit_price"] for x in items), 2),
        "items": items,
        "payment": {"method": rng.choice(["card", "paypal", "invoice"]), "token": "%024x" % rng.getrandbits(96)},
        "note": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 30))),
        "seq": i,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--topic", required=True)
    ap.add_argument("--compression", default="lz4")
    ap.add_argument("--bytes", type=int, default=0)
    ap.add_argument("--rate", type=int, default=0)
    ap.add_argument("--seconds", type=float, default=0)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--pool", type=int, default=50_000)
    ap.add_argument("--config", action="append", default=[], help="extra librdkafka key=value")
    ap.add_argument("--age-ms", type=int, default=0, help="stamp each record's CreateTime this long ago")
    args = ap.parse_args()

    rng = random.Random(args.seed)
    pool = [document(rng, i) for i in range(args.pool)]
    conf = {
        "bootstrap.servers": args.bootstrap,
        "compression.type": args.compression,
        "acks": "all",
        "linger.ms": 20,
        "batch.size": 131072,
        "queue.buffering.max.kbytes": 262144,
    }
    for kv in args.config:
        k, _, v = kv.partition("=")
        conf[k] = v
    errors = []

    def on_delivery(err, _msg):
        if err is not None and len(errors) < 5:
            errors.append(str(err))

    def stamp():
        # librdkafka stamps the produce time itself unless given a CreateTime.
        return {"timestamp": int(time.time() * 1000) - args.age_ms} if args.age_ms else {}

    p = Producer(conf)
    records = 0
    size = 0
    started = time.monotonic()
    rate_mode = args.rate > 0
    while True:
        if rate_mode:
            elapsed = time.monotonic() - started
            if elapsed >= args.seconds:
                break
            due = int(elapsed * args.rate) + 1
            if records >= due:
                time.sleep(min(0.001, (due / args.rate) - elapsed + 0.0005))
                p.poll(0)
                continue
            key = b"lat-%d" % records
        else:
            if size >= args.bytes:
                break
            key = b"customer-%d" % rng.randint(1, 5_000_000)
        value = pool[rng.randrange(len(pool))]
        trace = b"%032x" % rng.getrandbits(128)
        nh = 1 + records % 3
        headers = [("trace-id", trace), ("service", SERVICES[records % 4]), ("content-type", b"application/json")][:nh]
        while True:
            try:
                p.produce(args.topic, value=value, key=key, headers=headers, on_delivery=on_delivery, **stamp())
                break
            except BufferError:
                p.poll(0.05)
        records += 1
        size += len(key) + len(value) + sum(len(k) + len(v) for k, v in headers)
        if records % 1000 == 0:
            p.poll(0)
        if errors:
            break
    left = p.flush(120)
    if errors or left:
        print(f"delivery failed: {errors} ({left} not delivered)", file=sys.stderr)
        sys.exit(1)
    print(json.dumps({"records": records, "bytes": size, "seconds": time.monotonic() - started}))


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        print(f"kafka error: {e}", file=sys.stderr)
        sys.exit(1)
