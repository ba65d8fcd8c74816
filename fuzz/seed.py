#!/usr/bin/env python3
"""Seeds the fuzz corpora from protocol-fixtures/frames (stdlib only).

    fuzz/seed.py OUT_DIR

writes OUT_DIR/frame, OUT_DIR/batch and OUT_DIR/reencode:
- frame: a version byte (so that the `frame` target decodes Fetch at the
  fixture's version), the 4-byte size prefix, the frame; the corrupted prefix
  fixture as it is.
- batch: each partition's `records` bytes (v2 batches or old-format
  entries), located through the sidecar.
- reencode: each complete batch.
"""
import json
import pathlib
import struct
import sys

FIXTURES = pathlib.Path(__file__).resolve().parent.parent / "protocol-fixtures" / "frames"
FETCH_MIN_VERSION = 4  # kafka-protocol 0.18's FetchResponse::VERSIONS.min


def records_of(frame, partition):
    """The records field of one partition, found by its first batch header
    (or its first old-format entry's offset and size)."""
    if partition.get("batches"):
        b = partition["batches"][0]
        first = (b["base_offset"], b["batch_length"], b["position"])
    elif partition.get("legacy_entries"):
        e = partition["legacy_entries"][0]
        first = (e["offset"], e["size"], e["position"])
    else:
        return None
    header = struct.pack(">qi", first[0], first[1])
    at = frame.find(header)
    while at >= 0:
        start = at - first[2]
        end = start + partition["records_bytes"]
        if start >= 0 and end <= len(frame) and frame[at + 16] in (0, 1, 2):
            return frame[start:end]
        at = frame.find(header, at + 1)
    return None


def main(out):
    out = pathlib.Path(out)
    for target in ("frame", "batch", "reencode"):
        (out / target).mkdir(parents=True, exist_ok=True)
    for sidecar in sorted(FIXTURES.glob("*.json")):
        meta = json.loads(sidecar.read_text())
        name = meta["name"]
        # The targets decode Fetch responses and the record batches in them;
        # the Produce and Metadata captures hold neither.
        if meta.get("api_name") != "Fetch":
            continue
        frame = (FIXTURES / meta["file"]).read_bytes()
        if name == "corrupt-frame-prefix":
            (out / "frame" / name).write_bytes(bytes([12]) + frame)
            continue
        version_byte = max(meta["api_version"] - FETCH_MIN_VERSION, 0)
        (out / "frame" / name).write_bytes(
            bytes([version_byte]) + struct.pack(">i", len(frame)) + frame
        )
        for i, partition in enumerate(meta.get("partitions", [])):
            records = records_of(frame, partition)
            if records is None:
                continue
            (out / "batch" / f"{name}-{i}").write_bytes(records)
            for batch in partition.get("batches", []):
                start = batch["position"]
                end = start + 12 + batch["batch_length"]
                if end <= len(records):
                    (out / "reencode" / f"{name}-{i}-{batch['base_offset']}").write_bytes(
                        records[start:end]
                    )


if __name__ == "__main__":
    main(sys.argv[1])
