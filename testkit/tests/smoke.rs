//! Smoke tests of the kit against real Kafka brokers.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_testkit::{
    dump_topic, produce_with_java, produce_with_librdkafka, read_partition_batches, ClusterSpec,
    Compression, JavaProduceOpts, KafkaCluster, ProduceOpts, DEFAULT_KAFKA_VERSION,
    OLD_KAFKA_VERSION,
};

#[test]
fn single_node_produce_dump_and_stored_batches() {
    let t = Instant::now();
    let cluster = KafkaCluster::start(ClusterSpec::new(DEFAULT_KAFKA_VERSION, 1)).unwrap();
    eprintln!(
        "[timing] 1-node {DEFAULT_KAFKA_VERSION} start: {:?}",
        t.elapsed()
    );
    let bs = cluster.bootstrap();
    let topic = "smoke";
    cluster.create_topic(topic, 3, 1, &[]).unwrap();

    let t = Instant::now();
    let produced = produce_with_librdkafka(
        &bs,
        topic,
        &ProduceOpts {
            count: 1000,
            partitions: Some(3),
            compression: Compression::Zstd,
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!("[timing] librdkafka produce 1000: {:?}", t.elapsed());
    assert_eq!(produced.len(), 1000);

    let t = Instant::now();
    let summary = produce_with_java(
        cluster.dist(),
        &bs,
        topic,
        &JavaProduceOpts {
            num_records: 1000,
            record_size: 200,
            compression: Compression::Lz4,
            producer_props: vec![("linger.ms".into(), "10".into())],
            ..Default::default()
        },
    )
    .unwrap();
    eprintln!("[timing] ProducerPerformance 1000: {:?}", t.elapsed());
    assert!(summary.contains("1000 records sent"), "{summary}");

    let t = Instant::now();
    let dumped = dump_topic(&bs, topic).unwrap();
    eprintln!("[timing] dump 2000: {:?}", t.elapsed());
    assert_eq!(dumped.len(), 2000);

    // Every librdkafka record comes back exactly (key, value, headers, timestamp) at
    // the offset it was acknowledged at; per partition, offsets are dense and the
    // librdkafka records keep production order.
    let by_pos: BTreeMap<(i32, i64), _> = dumped
        .iter()
        .map(|r| ((r.partition, r.offset), r))
        .collect();
    for p in &produced {
        let d = by_pos[&(p.partition, p.offset)];
        assert_eq!(d, p, "record at {}/{}", p.partition, p.offset);
    }
    for part in 0..3 {
        let offs: Vec<i64> = dumped
            .iter()
            .filter(|r| r.partition == part)
            .map(|r| r.offset)
            .collect();
        assert_eq!(
            offs,
            (0..offs.len() as i64).collect::<Vec<_>>(),
            "partition {part}"
        );
        let keys: Vec<usize> = dumped
            .iter()
            .filter(|r| r.partition == part)
            .filter_map(|r| r.key.as_ref())
            .map(|k| {
                std::str::from_utf8(k)
                    .unwrap()
                    .strip_prefix("key-")
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert!(
            keys.windows(2).all(|w| w[0] < w[1]),
            "partition {part} order"
        );
        assert!(keys.iter().all(|k| k % 3 == part as usize));
    }
    assert!(produced.iter().any(|r| r.headers.len() > 2));
    assert!(produced.iter().any(|r| r.headers.is_empty()));
    assert!(produced.iter().any(|r| r.value.is_none()));
    let java: Vec<_> = dumped.iter().filter(|r| r.key.is_none()).collect();
    assert_eq!(java.len(), 1000);
    assert!(java
        .iter()
        .all(|r| r.value.as_ref().map(Vec::len) == Some(200) && r.headers.is_empty()));

    // Stored batches: magic 2, both codecs present, record counts add up.
    let mut batches = 0;
    let mut records = 0;
    let mut codecs = std::collections::BTreeSet::new();
    for part in 0..3 {
        let bs = read_partition_batches(&cluster.log_dir(0), topic, part).unwrap();
        let mut next = 0;
        for b in &bs {
            assert_eq!(b.magic(), 2);
            assert_eq!(b.base_offset(), next);
            assert_eq!(b.batch_length() as usize + 12, b.bytes.len());
            next = b.base_offset() + b.last_offset_delta() as i64 + 1;
            records += b.records_count() as usize;
            codecs.insert(b.codec());
        }
        batches += bs.len();
    }
    eprintln!("stored batches: {batches}");
    assert_eq!(records, 2000);
    assert!((3..2000).contains(&batches), "{batches} batches");
    assert_eq!(
        codecs,
        [Compression::Lz4.codec_id(), Compression::Zstd.codec_id()].into()
    );

    // Kafka's own tools agree: end offsets and a segment dump.
    let out = cluster
        .run_tool(
            "org.apache.kafka.tools.GetOffsetShell",
            ["--bootstrap-server", &bs, "--topic", topic],
        )
        .unwrap();
    let total: i64 = out
        .stdout
        .lines()
        .map(|l| l.rsplit(':').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(total, 2000, "{}", out.stdout);
    let seg = kafka_testkit::segment_files(&cluster.log_dir(0), topic, 0).unwrap();
    let out = cluster
        .run_tool(
            cluster.dist().dump_log_segments_class(),
            [std::ffi::OsString::from("--files"), seg[0].clone().into()],
        )
        .unwrap();
    assert!(out.stdout.contains("magic: 2"), "{}", out.stdout);

    cluster.delete_topic(topic).unwrap();
}

#[test]
fn three_nodes_kill_and_restart() {
    let t = Instant::now();
    let cluster = KafkaCluster::start(ClusterSpec::new(DEFAULT_KAFKA_VERSION, 3)).unwrap();
    eprintln!(
        "[timing] 3-node {DEFAULT_KAFKA_VERSION} start: {:?}",
        t.elapsed()
    );
    assert_eq!(cluster.node_count(), 3);
    assert_eq!(cluster.bootstrap().split(',').count(), 3);
    cluster
        .create_topic("replicated", 2, 3, &[("min.insync.replicas", "2")])
        .unwrap();
    let opts = ProduceOpts {
        count: 200,
        partitions: Some(2),
        idempotence: true,
        ..Default::default()
    };
    produce_with_librdkafka(&cluster.bootstrap(), "replicated", &opts).unwrap();

    let t = Instant::now();
    cluster.kill_node(2).unwrap();
    assert!(!cluster.is_node_running(2));
    // Two of three remain: still a quorum, still min.insync.replicas.
    let opts = ProduceOpts {
        key_prefix: "after-kill".into(),
        ..opts
    };
    produce_with_librdkafka(&cluster.bootstrap(), "replicated", &opts).unwrap();
    cluster.start_node(2).unwrap();
    eprintln!("[timing] kill + produce + restart node: {:?}", t.elapsed());
    let t = Instant::now();
    cluster.stop_node(1).unwrap();
    eprintln!("[timing] graceful stop of a node: {:?}", t.elapsed());
    cluster.start_node(1).unwrap();
    assert_eq!(
        dump_topic(&cluster.bootstrap(), "replicated")
            .unwrap()
            .len(),
        400
    );
}

#[test]
fn old_version_starts() {
    let t = Instant::now();
    let cluster = KafkaCluster::start(ClusterSpec::new(OLD_KAFKA_VERSION, 1)).unwrap();
    eprintln!(
        "[timing] 1-node {OLD_KAFKA_VERSION} start: {:?}",
        t.elapsed()
    );
    cluster.create_topic("old", 1, 1, &[]).unwrap();
    let out = cluster
        .run_tool(
            "org.apache.kafka.tools.TopicCommand",
            ["--bootstrap-server", &cluster.bootstrap(), "--list"],
        )
        .unwrap();
    assert!(out.stdout.lines().any(|l| l == "old"), "{}", out.stdout);
}

const HOLDER_ENV: &str = "KAFKA_TESTKIT_WATCHDOG_HOLDER";

/// Not a test on its own: run by `jvms_die_with_a_sigkilled_test_process` in a child
/// process, it starts a cluster (a KRaft one, or with `zookeeper` in the
/// environment variable a ZooKeeper-mode one), keeps it in a static (never
/// dropped) and waits.
#[test]
fn watchdog_holder() {
    let Some(mode) = std::env::var_os(HOLDER_ENV) else {
        return;
    };
    let spec = if mode == "zookeeper" {
        ClusterSpec {
            zookeeper: true,
            ..ClusterSpec::new(OLD_KAFKA_VERSION, 1)
        }
    } else {
        ClusterSpec::new(DEFAULT_KAFKA_VERSION, 1)
    };
    static HELD: std::sync::OnceLock<KafkaCluster> = std::sync::OnceLock::new();
    let c = HELD.get_or_init(|| KafkaCluster::start(spec).unwrap());
    println!("ROOT {}", c.root_dir().display());
    println!(
        "JVM_PIDS {}",
        c.jvm_pids()
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    std::thread::sleep(Duration::from_secs(600));
}

#[test]
fn jvms_die_with_a_sigkilled_test_process() {
    sigkill_holder("kraft", 1);
}

/// The ZooKeeper server dies with the test process too.
#[test]
fn zookeeper_dies_with_a_sigkilled_test_process() {
    sigkill_holder("zookeeper", 2);
}

/// Runs `watchdog_holder` in `mode`, checks it reports `jvms` live JVMs,
/// SIGKILLs it and waits for the JVMs and the cluster's files to go.
fn sigkill_holder(mode: &str, jvms: usize) {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "watchdog_holder",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(HOLDER_ENV, mode)
        .env_remove("KAFKA_TESTKIT_KEEP")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pids = Vec::new();
    let mut root = String::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(at) = line.find("ROOT ") {
            root = line[at + 5..].to_string();
        }
        // libtest may print "test watchdog_holder ... " in front on the same line.
        if let Some(at) = line.find("JVM_PIDS ") {
            pids = line[at + 9..]
                .split_whitespace()
                .map(|p| p.parse::<u32>().unwrap())
                .collect();
            break;
        }
    }
    assert_eq!(
        pids.len(),
        jvms,
        "holder in {mode} mode reported JVMs {pids:?}"
    );
    let alive = |pid: u32| {
        std::path::Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .is_ok_and(|s| !s.contains(") Z "))
    };
    assert!(pids.iter().all(|&p| alive(p)));
    let root = std::path::PathBuf::from(root);
    assert!(root.is_dir());
    child.kill().unwrap(); // SIGKILL: no destructors, no atexit
    child.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|&p| alive(p)) {
        assert!(
            Instant::now() < deadline,
            "JVMs {pids:?} outlived the SIGKILLed test process"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The watchdogs also removed the cluster's files.
    while root.exists() {
        assert!(
            Instant::now() < deadline,
            "{} outlived the SIGKILLed test process",
            root.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// ZooKeeper mode at an old inter-broker protocol: topics store the message
/// format their `message.format.version` names, magic 0 and 1, which librdkafka
/// reads back; dropping the cluster stops the ZooKeeper server too.
#[test]
fn zookeeper_mode_stores_old_message_formats() {
    let mut spec = ClusterSpec::new(OLD_KAFKA_VERSION, 1);
    spec.zookeeper = true;
    spec.broker_props = vec![
        ("inter.broker.protocol.version".into(), "2.8".into()),
        ("log.message.format.version".into(), "2.8".into()),
    ];
    let cluster = KafkaCluster::start(spec).unwrap();
    let zookeeper = cluster.zookeeper_connect().expect("a ZooKeeper address");
    assert!(!cluster.cluster_id().is_empty());
    for (topic, format, magic) in [("v0", "0.9.0", 0i8), ("v1", "0.10.2", 1)] {
        cluster
            .create_topic(topic, 1, 1, &[("message.format.version", format)])
            .unwrap();
        let opts = ProduceOpts {
            count: 50,
            compression: Compression::Gzip,
            no_headers: true,
            ..ProduceOpts::default()
        };
        let produced = produce_with_librdkafka(&cluster.bootstrap(), topic, &opts).unwrap();
        let dumped = dump_topic(&cluster.bootstrap(), topic).unwrap();
        assert_eq!(dumped.len(), produced.len());
        for (got, sent) in dumped.iter().zip(&produced) {
            assert_eq!((&got.key, &got.value), (&sent.key, &sent.value));
        }
        let stored = read_partition_batches(&cluster.log_dir(0), topic, 0).unwrap();
        assert!(!stored.is_empty());
        for entry in &stored {
            assert_eq!(entry.magic(), magic, "{topic} at {}", entry.base_offset());
        }
    }
    let root = cluster.root_dir().to_path_buf();
    drop(cluster);
    assert!(!root.exists(), "{} left behind", root.display());
    let port = zookeeper.rsplit(':').next().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err(),
        "ZooKeeper still listening on {addr}"
    );
}
