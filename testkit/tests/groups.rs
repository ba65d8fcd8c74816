//! The consumer-group clients of the kit against a real broker: what each consumer
//! returns, what it commits (as Kafka's own `kafka-consumer-groups` reads it back), and
//! that a group one client left is resumed by the other exactly where it stopped.

use std::collections::BTreeMap;

use kafka_testkit::{
    committed_offsets, consume_group_with_java, consume_group_with_librdkafka, dump_topic_with,
    group_members, produce_with_librdkafka, set_committed_offset, ClusterSpec, Compression,
    DumpedRecord, GroupMember, Isolation, KafkaCluster, ProduceOpts, DEFAULT_KAFKA_VERSION,
};

const TOPIC: &str = "groups";

/// Records by partition, in the order they came.
fn by_partition(records: &[DumpedRecord]) -> BTreeMap<i32, Vec<DumpedRecord>> {
    let mut map: BTreeMap<i32, Vec<DumpedRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r.clone());
    }
    map
}

/// The committed offsets of one topic, by partition.
fn committed(cluster: &KafkaCluster, group: &str) -> BTreeMap<i32, i64> {
    committed_offsets(cluster, group)
        .unwrap()
        .into_iter()
        .map(|((topic, partition), offset)| {
            assert_eq!(topic, TOPIC, "{group}");
            (partition, offset)
        })
        .collect()
}

/// Asserts `read` is, partition by partition, the stored records from `from` (0 where
/// a partition has no entry) on, `count` of them in all; returns the offsets after
/// the last record read of each partition that returned any.
fn assert_read_from(
    stored: &BTreeMap<i32, Vec<DumpedRecord>>,
    from: &BTreeMap<i32, i64>,
    read: &[DumpedRecord],
    count: usize,
    what: &str,
) -> BTreeMap<i32, i64> {
    assert_eq!(read.len(), count, "{what}: records read");
    let mut next = BTreeMap::new();
    for (partition, records) in by_partition(read) {
        let start = from.get(&partition).copied().unwrap_or(0);
        let expected: Vec<&DumpedRecord> = stored[&partition]
            .iter()
            .filter(|r| r.offset >= start)
            .take(records.len())
            .collect();
        assert_eq!(
            expected.len(),
            records.len(),
            "{what}-{partition}: read past the end"
        );
        for (e, r) in expected.iter().zip(&records) {
            assert_eq!(*e, r, "{what}-{partition}");
        }
        next.insert(partition, records.last().unwrap().offset + 1);
    }
    next
}

#[test]
fn groups_read_commit_resume_across_clients_and_keep_members() {
    let cluster = KafkaCluster::start(ClusterSpec::new(DEFAULT_KAFKA_VERSION, 1)).unwrap();
    let bootstrap = cluster.bootstrap();
    cluster.create_topic(TOPIC, 3, 1, &[]).unwrap();
    // Batches of up to 50 records, so partial reads stop inside batches.
    produce_with_librdkafka(
        &bootstrap,
        TOPIC,
        &ProduceOpts {
            count: 600,
            partitions: Some(3),
            compression: Compression::Lz4,
            config: vec![("batch.num.messages".into(), "50".into())],
            ..ProduceOpts::default()
        },
    )
    .unwrap();
    let stored = by_partition(&dump_topic_with(&bootstrap, TOPIC, true).unwrap());
    let ends: BTreeMap<i32, i64> = stored.keys().map(|p| (*p, 200)).collect();
    assert_eq!(stored.values().map(Vec::len).collect::<Vec<_>>(), [200; 3]);
    let committed_isolation = Isolation::ReadCommitted;

    // librdkafka reads part and commits exactly after it; the Java consumer resumes.
    let read =
        consume_group_with_librdkafka(&bootstrap, "rd", TOPIC, 250, committed_isolation).unwrap();
    let next = assert_read_from(&stored, &BTreeMap::new(), &read, 250, "librdkafka part");
    assert_eq!(
        next.len(),
        3,
        "small fetches stop inside every partition: {next:?}"
    );
    assert!(next.values().all(|o| *o < 200), "{next:?}");
    assert_eq!(committed(&cluster, "rd"), next);
    let dist = cluster.dist();
    let read =
        consume_group_with_java(dist, &bootstrap, "rd", TOPIC, 350, committed_isolation).unwrap();
    assert_read_from(&stored, &next, &read, 350, "Java rest");
    assert_eq!(committed(&cluster, "rd"), ends);

    // The Java consumer reads part and commits exactly after what it printed;
    // librdkafka resumes and stops at the end.
    let read =
        consume_group_with_java(dist, &bootstrap, "java", TOPIC, 200, committed_isolation).unwrap();
    let next = assert_read_from(&stored, &BTreeMap::new(), &read, 200, "Java part");
    assert_eq!(committed(&cluster, "java"), next);
    assert!(next.values().all(|o| *o < 200), "{next:?}");
    let read =
        consume_group_with_librdkafka(&bootstrap, "java", TOPIC, 10_000, committed_isolation)
            .unwrap();
    assert_read_from(&stored, &next, &read, 400, "librdkafka rest");
    assert_eq!(committed(&cluster, "java"), ends);

    // Offsets given without consuming: partition 1 starts at 77, the others, with no
    // committed offset, at the beginning.
    set_committed_offset(&cluster, "set", TOPIC, 1, 77).unwrap();
    assert_eq!(committed(&cluster, "set"), BTreeMap::from([(1, 77)]));
    let read = consume_group_with_librdkafka(&bootstrap, "set", TOPIC, 10_000, committed_isolation)
        .unwrap();
    assert_read_from(
        &stored,
        &BTreeMap::from([(1, 77)]),
        &read,
        600 - 77,
        "after set",
    );

    // A running member makes the group active: its offsets cannot be reset.
    assert_eq!(group_members(&cluster, "member").unwrap(), 0);
    let member = GroupMember::join(&cluster, "member", TOPIC).unwrap();
    assert_eq!(group_members(&cluster, "member").unwrap(), 1);
    assert!(set_committed_offset(&cluster, "member", TOPIC, 0, 5).is_err());
    member.leave();
    assert_eq!(group_members(&cluster, "member").unwrap(), 0);
    assert!(
        committed_offsets(&cluster, "member").unwrap().is_empty(),
        "the member commits nothing"
    );
    set_committed_offset(&cluster, "member", TOPIC, 0, 5).unwrap();
}

#[test]
fn read_committed_groups_skip_aborted_records() {
    let cluster = KafkaCluster::start(ClusterSpec::new(DEFAULT_KAFKA_VERSION, 1)).unwrap();
    let bootstrap = cluster.bootstrap();
    cluster.create_topic(TOPIC, 3, 1, &[]).unwrap();
    for (prefix, abort) in [("committed", false), ("aborted", true), ("last", false)] {
        produce_with_librdkafka(
            &bootstrap,
            TOPIC,
            &ProduceOpts {
                count: 90,
                partitions: Some(3),
                key_prefix: prefix.into(),
                transactional_id: Some("groups-txn".into()),
                abort,
                ..ProduceOpts::default()
            },
        )
        .unwrap();
    }
    let visible = by_partition(&dump_topic_with(&bootstrap, TOPIC, true).unwrap());
    let all = by_partition(&dump_topic_with(&bootstrap, TOPIC, false).unwrap());
    assert_eq!(visible.values().map(Vec::len).sum::<usize>(), 180);
    assert_eq!(all.values().map(Vec::len).sum::<usize>(), 270);
    let dist = cluster.dist();
    for (group, isolation, expected) in [
        ("rc", Isolation::ReadCommitted, &visible),
        ("ru", Isolation::ReadUncommitted, &all),
    ] {
        let count = expected.values().map(Vec::len).sum();
        let read =
            consume_group_with_librdkafka(&bootstrap, group, TOPIC, 10_000, isolation).unwrap();
        assert_read_from(expected, &BTreeMap::new(), &read, count, group);
        let java_group = format!("{group}-java");
        let read = consume_group_with_java(
            dist,
            &bootstrap,
            &java_group,
            TOPIC,
            count as u64,
            isolation,
        )
        .unwrap();
        assert_read_from(expected, &BTreeMap::new(), &read, count, &java_group);
    }
    // librdkafka commits right after the last record returned, even where a
    // transaction marker follows it.
    let last_read: BTreeMap<i32, i64> = visible
        .iter()
        .map(|(p, records)| (*p, records.last().unwrap().offset + 1))
        .collect();
    assert_eq!(committed(&cluster, "rc"), last_read);
}
