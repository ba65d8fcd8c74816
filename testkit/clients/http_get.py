#!/usr/bin/env python3
"""GET or POST one URL with urllib and print the answer as JSON.

With --metrics the body is parsed by the official Prometheus client's
OpenMetrics parser (prometheus_client), and each sample is printed:
{"status", "content_type", "body", "samples": [{"family", "type", "name", "labels", "value"}]}.
A parse error fails the script: the exposition must be valid.
"""
import argparse
import json
import urllib.error
import urllib.request


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("url")
    ap.add_argument("--post", action="store_true")
    ap.add_argument("--metrics", action="store_true")
    a = ap.parse_args()
    request = urllib.request.Request(a.url, data=b"" if a.post else None,
                                     method="POST" if a.post else "GET")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, headers, body = response.status, response.headers, response.read()
    except urllib.error.HTTPError as e:
        status, headers, body = e.code, e.headers, e.read()
    text = body.decode("utf-8")
    out = {"status": status, "content_type": headers.get("Content-Type", ""), "body": text}
    if a.metrics:
        from prometheus_client.openmetrics.parser import text_string_to_metric_families
        out["samples"] = [
            {"family": family.name, "type": family.type, "name": s.name,
             "labels": s.labels, "value": s.value}
            for family in text_string_to_metric_families(text)
            for s in family.samples
        ]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
