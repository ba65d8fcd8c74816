#!/usr/bin/env python3
"""Commit or list a consumer group's offsets, commit metadata included, with
confluent-kafka's AdminClient (librdkafka): what Kafka's own
kafka-consumer-groups tool neither sets nor shows.

commit: --offset TOPIC:PARTITION:OFFSET:METADATA (repeatable); the group must
        have no members.
list:   prints one JSON object per committed partition:
        {"topic", "partition", "offset", "metadata"}.
"""
import argparse
import json
import sys

from confluent_kafka import KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient
from confluent_kafka import ConsumerGroupTopicPartitions


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("action", choices=["commit", "list"])
    ap.add_argument("--bootstrap", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--offset", action="append", default=[])
    a = ap.parse_args()
    admin = AdminClient({"bootstrap.servers": a.bootstrap})
    if a.action == "commit":
        partitions = []
        for spec in a.offset:
            topic, partition, offset, metadata = spec.split(":", 3)
            partitions.append(TopicPartition(topic, int(partition), int(offset), metadata=metadata))
        request = ConsumerGroupTopicPartitions(a.group, partitions)
        result = admin.alter_consumer_group_offsets([request])[a.group].result(timeout=60)
        for tp in result.topic_partitions:
            if tp.error is not None:
                raise SystemExit(f"group_offsets.py: {tp.topic}-{tp.partition}: {tp.error}")
    else:
        request = ConsumerGroupTopicPartitions(a.group)
        result = admin.list_consumer_group_offsets([request])[a.group].result(timeout=60)
        for tp in sorted(result.topic_partitions, key=lambda tp: (tp.topic, tp.partition)):
            if tp.offset < 0:
                continue
            print(json.dumps({"topic": tp.topic, "partition": tp.partition,
                              "offset": tp.offset, "metadata": tp.metadata}))


if __name__ == "__main__":
    try:
        main()
    except KafkaException as e:
        sys.stderr.write(f"group_offsets.py: {e}\n")
        sys.exit(1)
