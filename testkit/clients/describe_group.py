#!/usr/bin/env python3
"""Describe a group of any protocol type with kafka-python's admin client
(DescribeGroups), which Kafka's kafka-consumer-groups refuses for groups that
are not consumer groups. Prints one JSON object: state, protocol_type,
protocol, and members (member_id, group_instance_id, client_id).
"""
import argparse
import json
import struct
import sys

from kafka import KafkaAdminClient
from kafka.admin import _groups
from kafka.errors import KafkaError


class _Undecoded:
    """kafka-python decodes every member's metadata and assignment as the
    consumer protocol's, whatever the group's protocol type, and skips them
    only on struct.error; other bytes can end in a ValueError that fails the
    whole call (it did, now and then, on kafka-mirror's own protocol). This
    script reports neither, so it decodes neither."""

    @staticmethod
    def decode(data, *args, **kwargs):
        raise struct.error("not decoded")


_groups.ConsumerProtocolSubscription = _Undecoded
_groups.ConsumerProtocolAssignment = _Undecoded


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    a = ap.parse_args()
    admin = KafkaAdminClient(bootstrap_servers=a.bootstrap)
    try:
        group = admin.describe_groups([a.group])[a.group]
    finally:
        admin.close()
    if group["error"]:
        raise SystemExit(f"describe_group.py: {a.group}: {group['error']}")
    print(json.dumps({
        "state": group["group_state"],
        "protocol_type": group["protocol_type"],
        "protocol": group["protocol_data"],
        "members": [
            {
                "member_id": m["member_id"],
                "group_instance_id": m.get("group_instance_id"),
                "client_id": m["client_id"],
            }
            for m in group["members"]
        ],
    }))


if __name__ == "__main__":
    try:
        main()
    except KafkaError as e:
        sys.stderr.write(f"describe_group.py: {e}\n")
        sys.exit(1)
