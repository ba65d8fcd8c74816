//! Regenerates `protocol-fixtures/`: frames captured from real Kafka brokers.
//!
//!     cargo run -p kafka-testkit --example capture_fixtures           # all of them
//!     cargo run -p kafka-testkit --example capture_fixtures -- legacy # the old formats only
//!     cargo run -p kafka-testkit --example capture_fixtures -- errors # produce errors, leader change
//!
//! Starts a 1-node cluster whose PLAINTEXT listener *advertises* the port of a
//! recording proxy (`protocol-fixtures/capture.py proxy`), so every client that
//! bootstraps (through the proxy or not) then talks to the broker through the proxy.
//! Writes topics with librdkafka, reads them back with librdkafka consumers whose
//! `client.id` names the fixture, and lets `capture.py extract` pick, check and
//! write the frames. The v2 fixtures come from Kafka 4.4 (KRaft), the old
//! message formats (magic 0 and 1) from Kafka 3.9 in ZooKeeper mode. Produce
//! refusals and a leader change come from a 3-node Kafka 4.4 cluster, through
//! requests `capture.py requests` crafts and records itself (librdkafka will
//! not send a bad CRC or a sequence gap). See protocol-fixtures/README.md.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use base64::Engine as _;
use kafka_testkit::{
    produce_with_librdkafka, read_partition_batches, ClusterSpec, Compression, KafkaCluster,
    ProduceOpts, Venv, DEFAULT_KAFKA_VERSION, OLD_KAFKA_VERSION,
};
use serde_json::{json, Value};

/// The proxy process, killed on drop so no run leaves it behind.
struct Proxy(Child);

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("protocol-fixtures")
}

fn capture_py() -> PathBuf {
    fixtures_dir().join("capture.py")
}

fn run_capture(venv: &Venv, args: &[String]) -> Result<String> {
    let out = Command::new(venv.python())
        .arg(capture_py())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running capture.py")?;
    if !out.status.success() {
        bail!(
            "capture.py {args:?} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn strings(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

fn consume(
    venv: &Venv,
    bootstrap: &str,
    topic: &str,
    client_id: &str,
    read_committed: bool,
    config: &[&str],
) -> Result<()> {
    let mut args = strings(&[
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--client-id",
        client_id,
    ]);
    if read_committed {
        args.push("--read-committed".into());
    }
    for c in config {
        args.extend(["--config".into(), c.to_string()]);
    }
    let out = run_capture(venv, &args)?;
    eprintln!("capture_fixtures: {client_id} consumed {}", out.trim());
    Ok(())
}

fn produce(bootstrap: &str, topic: &str, opts: ProduceOpts) -> Result<()> {
    let n = produce_with_librdkafka(bootstrap, topic, &opts)?.len();
    eprintln!("capture_fixtures: produced {n} records to {topic}");
    Ok(())
}

fn setup(config: &[(&str, &str)]) -> Vec<(String, String)> {
    let mut v = vec![("client.id".to_string(), "setup".to_string())];
    v.extend(config.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    v
}

fn main() -> Result<()> {
    let venv = Venv::get()?;
    let out_dir = fixtures_dir().join("frames");
    match std::env::args().nth(1).as_deref() {
        None => {
            if out_dir.exists() {
                std::fs::remove_dir_all(&out_dir)?;
            }
            capture_v2(&venv, &out_dir)?;
            capture_errors(&venv, &out_dir)?;
            capture_legacy(&venv, &out_dir)
        }
        Some("legacy") => capture_legacy(&venv, &out_dir),
        Some("errors") => capture_errors(&venv, &out_dir),
        Some(other) => bail!("unknown argument {other:?}; `legacy` or `errors`"),
    }
}

/// A free loopback port for the proxy, and the address clients bootstrap from.
fn proxy_address() -> Result<(u16, String)> {
    let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    Ok((port, format!("127.0.0.1:{port}")))
}

/// Starts the recording proxy in front of `upstream`.
fn start_proxy(venv: &Venv, upstream: &str, proxy_port: u16, record_dir: &Path) -> Result<Proxy> {
    let mut child = Command::new(venv.python())
        .arg(capture_py())
        .args(["proxy", "--listen", &proxy_port.to_string()])
        .args(["--upstream", upstream, "--record"])
        .arg(record_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting the recording proxy")?;
    let stdout = child.stdout.take().expect("piped");
    let proxy = Proxy(child);
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    if line.trim() != "listening" {
        bail!("proxy did not start: {line:?}");
    }
    eprintln!("capture_fixtures: proxy :{proxy_port} -> {upstream}, recording in {record_dir:?}");
    Ok(proxy)
}

/// Lets `capture.py extract` pick the frames of `plan` out of the recording.
fn extract(
    venv: &Venv,
    record_dir: &Path,
    plan: &Value,
    work: &Path,
    out_dir: &Path,
) -> Result<()> {
    let plan_file = work.join("plan.json");
    std::fs::write(&plan_file, serde_json::to_string_pretty(plan)?)?;
    let args = vec![
        "extract".to_string(),
        "--record".into(),
        record_dir.display().to_string(),
        "--plan".into(),
        plan_file.display().to_string(),
        "--out".into(),
        out_dir.display().to_string(),
    ];
    print!("{}", run_capture(venv, &args)?);
    Ok(())
}

/// The v2 fixtures, from Kafka 4.4 (KRaft).
fn capture_v2(venv: &Venv, out_dir: &Path) -> Result<()> {
    let (proxy_port, bootstrap) = proxy_address()?;
    let mut spec = ClusterSpec::new(DEFAULT_KAFKA_VERSION, 1);
    spec.broker_props = vec![
        (
            "advertised.listeners".into(),
            format!("PLAINTEXT://{bootstrap}"),
        ),
        // The cleaner looks for work every 100 ms instead of every 15 s.
        ("log.cleaner.backoff.ms".into(), "100".into()),
    ];
    let cluster = KafkaCluster::start(spec)?;
    let work = tempfile::tempdir()?;
    let record_dir = work.path().join("recording");
    let upstream = cluster.broker_addr(0).to_string();
    let proxy = start_proxy(venv, &upstream, proxy_port, &record_dir)?;

    // One codec each: two producer runs, so at least two batches.
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ] {
        let topic = format!("codec-{}", codec.as_str());
        cluster.create_topic(&topic, 1, 1, &[])?;
        for prefix in ["a", "b"] {
            produce(
                &bootstrap,
                &topic,
                ProduceOpts {
                    count: 20,
                    compression: codec,
                    key_prefix: prefix.into(),
                    config: setup(&[]),
                    ..Default::default()
                },
            )?;
        }
        consume(
            venv,
            &bootstrap,
            &topic,
            &format!("fetch-{}", codec.as_str()),
            false,
            &[],
        )?;
    }

    // Transactions: committed, aborted, committed again, by two transactional ids.
    cluster.create_topic("txn", 1, 1, &[])?;
    for (tid, prefix, count, abort) in [
        ("txn-committer", "c1", 6, false),
        ("txn-aborter", "a1", 6, true),
        ("txn-committer", "c2", 4, false),
    ] {
        produce(
            &bootstrap,
            "txn",
            ProduceOpts {
                count,
                key_prefix: prefix.into(),
                transactional_id: Some(tid.into()),
                abort,
                config: setup(&[]),
                ..Default::default()
            },
        )?;
    }
    consume(
        venv,
        &bootstrap,
        "txn",
        "fetch-txn-read-uncommitted",
        false,
        &[],
    )?;
    consume(
        venv,
        &bootstrap,
        "txn",
        "fetch-txn-read-committed",
        true,
        &[],
    )?;

    // An idempotent producer's batches: several batches, so sequences above 0.
    cluster.create_topic("idempotent", 1, 1, &[])?;
    produce(
        &bootstrap,
        "idempotent",
        ProduceOpts {
            count: 24,
            idempotence: true,
            compression: Compression::Lz4,
            config: setup(&[("batch.num.messages", "6")]),
            ..Default::default()
        },
    )?;
    consume(
        venv,
        &bootstrap,
        "idempotent",
        "fetch-idempotent",
        false,
        &[],
    )?;

    // Compaction: an idempotent producer A writes 4 keys in 5 rounds, then a plain
    // producer B overwrites them in 6 rounds, each round also writing a key of its own
    // that nothing overwrites, and deletes key 0 last. Once cleaned, B's batches keep
    // one record of five (offset gaps), and A's last batch, all overwritten, is kept
    // empty because it holds A's last sequence.
    cluster.create_topic(
        "compacted",
        1,
        1,
        &[
            ("cleanup.policy", "compact"),
            ("segment.ms", "100"),
            ("min.cleanable.dirty.ratio", "0.01"),
        ],
    )?;
    let base = [
        "updates",
        "--bootstrap",
        &bootstrap,
        "--topic",
        "compacted",
        "--client-id",
        "setup",
        "--keys",
        "4",
        "--sleep",
        "0.2",
    ];
    let mut a = strings(&base);
    a.extend(strings(&["--rounds", "5", "--idempotent", "--tag", "A"]));
    run_capture(venv, &a)?;
    let mut b = strings(&base);
    b.extend(strings(&[
        "--rounds",
        "6",
        "--unique",
        "only-b",
        "--tombstone",
        "--tag",
        "B",
    ]));
    run_capture(venv, &b)?;
    // One more record after segment.ms rolls the segment holding B's last batch, so
    // the cleaner may clean it.
    let mut roll = strings(&base);
    roll.extend(strings(&["--rounds", "1", "--unique", "roll"]));
    roll[8] = "0".into(); // --keys 0
    run_capture(venv, &roll)?;
    wait_for_cleaner(&cluster)?;
    consume(venv, &bootstrap, "compacted", "fetch-compacted", false, &[])?;

    // A Fetch cut off by the size limit: batches of 0.7 to 2.5 KB, an 8000-byte limit.
    cluster.create_topic("truncated", 1, 1, &[])?;
    produce(
        &bootstrap,
        "truncated",
        ProduceOpts {
            count: 24,
            config: setup(&[("batch.num.messages", "4")]),
            ..Default::default()
        },
    )?;
    consume(
        venv,
        &bootstrap,
        "truncated",
        "fetch-truncated",
        false,
        &[
            "message.max.bytes=4000",
            "fetch.max.bytes=8000",
            "max.partition.fetch.bytes=8000",
            "receive.message.max.bytes=9000",
        ],
    )?;

    // Produce requests as librdkafka sends them.
    for codec in [Compression::Lz4, Compression::Zstd] {
        let topic = format!("produce-{}", codec.as_str());
        cluster.create_topic(&topic, 1, 1, &[])?;
        produce(
            &bootstrap,
            &topic,
            ProduceOpts {
                count: 20,
                compression: codec,
                config: vec![("client.id".into(), topic.clone())],
                ..Default::default()
            },
        )?;
    }

    drop(proxy);
    extract(venv, &record_dir, &plan(&cluster), work.path(), out_dir)
}

/// The old message formats: a Kafka 3.9 broker in ZooKeeper mode at
/// inter-broker protocol 2.8, one topic per format (`message.format.version`
/// 0.9.0 stores magic 0, 0.10.2 magic 1) and codec, each written by two
/// librdkafka producer runs of 10 records (so two wrappers when compressed).
/// The sidecars also list the records as the producer had them acknowledged.
fn capture_legacy(venv: &Venv, out_dir: &Path) -> Result<()> {
    let (proxy_port, bootstrap) = proxy_address()?;
    // In ZooKeeper mode the controller reaches the broker at its advertised
    // PLAINTEXT address before any proxy runs, so clients get a listener of
    // their own that advertises the proxy.
    let mut spec = ClusterSpec::new(OLD_KAFKA_VERSION, 1);
    spec.zookeeper = true;
    spec.extra_listeners = vec![("CLIENTS".into(), "PLAINTEXT".into())];
    spec.advertise = vec![("CLIENTS".into(), bootstrap.clone())];
    spec.broker_props = vec![
        ("inter.broker.protocol.version".into(), "2.8".into()),
        ("log.message.format.version".into(), "2.8".into()),
    ];
    let cluster = KafkaCluster::start(spec)?;
    let work = tempfile::tempdir()?;
    let record_dir = work.path().join("recording");
    let upstream = cluster.listener_bootstrap("CLIENTS");
    let proxy = start_proxy(venv, &upstream, proxy_port, &record_dir)?;
    let b64 = |bytes: &Option<Vec<u8>>| {
        bytes
            .as_ref()
            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
    };
    let mut fixtures = Vec::new();
    for (magic, format) in [(0, "0.9.0"), (1, "0.10.2")] {
        for codec in [
            Compression::None,
            Compression::Gzip,
            Compression::Snappy,
            Compression::Lz4,
        ] {
            let name = format!("fetch-v{magic}-{}", codec.as_str());
            let topic = format!("magic{magic}-{}", codec.as_str());
            cluster.create_topic(&topic, 1, 1, &[("message.format.version", format)])?;
            let mut produced = Vec::new();
            for prefix in ["a", "b"] {
                let opts = ProduceOpts {
                    count: 10,
                    compression: codec,
                    key_prefix: prefix.into(),
                    base_timestamp_ms: Some(1_700_000_000_000),
                    no_headers: true,
                    config: setup(&[]),
                    ..Default::default()
                };
                produced.extend(produce_with_librdkafka(&bootstrap, &topic, &opts)?);
            }
            consume(venv, &bootstrap, &topic, &name, false, &[])?;
            let produced: Vec<Value> = produced
                .iter()
                .map(|r| {
                    json!({"offset": r.offset, "key": b64(&r.key), "value": b64(&r.value),
                           "timestamp": r.timestamp})
                })
                .collect();
            fixtures.push(json!({
                "name": name,
                "client_id": name,
                "api_key": 1,
                "topic": topic,
                "description": format!(
                    "Fetch response of a magic {magic} topic (message.format.version={format}) \
                     written by two librdkafka producer runs of 10 records, \
                     compression.type={}: keys a-0..9 and b-0..9, every 10th value null, \
                     CreateTime timestamps from 1700000000000, no headers.", codec.as_str()),
                "capture": {"topic_config": {"message.format.version": format},
                            "broker": {"inter.broker.protocol.version": "2.8"},
                            "producer": {"compression.type": codec.as_str(), "linger.ms": 20}},
                "expect": {"magic": magic, "codec": codec.as_str(), "min_entries": 2},
                "produced": produced,
            }));
        }
    }
    drop(proxy);
    let plan = json!({
        "broker": format!(
            "Apache Kafka {} (ZooKeeper mode, 1 broker, inter.broker.protocol.version=2.8)",
            cluster.version()
        ),
        "client": format!("confluent-kafka {}", kafka_testkit::PYTHON_REQUIREMENTS[0]
            .trim_start_matches("confluent-kafka==")),
        "fixtures": fixtures,
    });
    extract(venv, &record_dir, &plan, work.path(), out_dir)
}

/// Waits until the cleaner has left its marks on the stored batches of `compacted`:
/// a batch with fewer records than its offset range, and an empty batch.
fn wait_for_cleaner(cluster: &KafkaCluster) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let batches = read_partition_batches(&cluster.log_dir(0), "compacted", 0);
        if let Ok(batches) = batches {
            let gap = batches
                .iter()
                .any(|b| b.records_count() > 0 && b.records_count() != b.last_offset_delta() + 1);
            let empty = batches.iter().any(|b| b.records_count() == 0);
            if gap && empty {
                eprintln!(
                    "capture_fixtures: cleaner ran ({} batches left)",
                    batches.len()
                );
                return Ok(());
            }
        }
        if Instant::now() >= deadline {
            bail!("the log cleaner did not compact `compacted` within 90 s");
        }
        thread::sleep(Duration::from_millis(500));
    }
}

fn plan(cluster: &KafkaCluster) -> Value {
    let mut fixtures = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        fixtures.push(json!({
            "name": format!("fetch-{codec}"),
            "client_id": format!("fetch-{codec}"),
            "api_key": 1,
            "topic": format!("codec-{codec}"),
            "description": format!(
                "Fetch response (READ_UNCOMMITTED) of a topic written by two librdkafka \
                 producer runs of 20 records, compression.type={codec}: keys, values of \
                 varying size with every 10th value null, 0/1/6 headers (a repeated name, a \
                 null value)."),
            "capture": {"producer": {"compression.type": codec, "linger.ms": 20, "acks": "all",
                                     "enable.idempotence": false},
                        "consumer": {"isolation.level": "read_uncommitted"}},
            "expect": {"codec": codec, "min_batches": 2},
        }));
    }
    fixtures.push(json!({
        "name": "fetch-txn-read-uncommitted",
        "client_id": "fetch-txn-read-uncommitted",
        "api_key": 1,
        "topic": "txn",
        "description": "Fetch response (READ_UNCOMMITTED) of a topic holding three \
            transactions: 6 records committed (transactional.id txn-committer), 6 records \
            aborted (txn-aborter), 4 records committed (txn-committer, new epoch). Holds the \
            transactional batches, the aborted ones included, and COMMIT/ABORT control batches.",
        "capture": {"consumer": {"isolation.level": "read_uncommitted"}},
        "expect": {"control_types": ["commit", "abort"], "producer_id": true, "min_batches": 6},
    }));
    fixtures.push(json!({
        "name": "fetch-txn-read-committed",
        "client_id": "fetch-txn-read-committed",
        "api_key": 1,
        "topic": "txn",
        "description": "Fetch response (READ_COMMITTED) of the same topic: the same batches \
            up to the last stable offset, plus the aborted_transactions list naming \
            txn-aborter's producer id and first offset.",
        "capture": {"consumer": {"isolation.level": "read_committed"}},
        "expect": {"control_types": ["commit", "abort"], "aborted_transactions": true,
                   "producer_id": true, "min_batches": 6},
    }));
    fixtures.push(json!({
        "name": "fetch-idempotent",
        "client_id": "fetch-idempotent",
        "api_key": 1,
        "topic": "idempotent",
        "description": "Fetch response of 24 records from one idempotent librdkafka producer \
            (lz4, batch.num.messages=6): producer id, epoch and base sequences 0, 6, 12, 18.",
        "capture": {"producer": {"enable.idempotence": true, "compression.type": "lz4",
                                 "batch.num.messages": 6}},
        "expect": {"codec": "lz4", "producer_id": true, "base_sequence_above_zero": true,
                   "min_batches": 2},
    }));
    fixtures.push(json!({
        "name": "fetch-compacted",
        "client_id": "fetch-compacted",
        "api_key": 1,
        "topic": "compacted",
        "description": "Fetch response of a compacted topic after the log cleaner ran \
            (cleanup.policy=compact, segment.ms=100, min.cleanable.dirty.ratio=0.01, broker \
            log.cleaner.backoff.ms=100). Idempotent producer A wrote keys key-0..3 in 5 \
            rounds, plain producer B overwrote them in 6 rounds, each also writing its own \
            key only-b-<round>, and deleted key-0 last (a tombstone). Cleaned batches keep \
            their offset range with fewer records (records_count != last_offset_delta + 1); \
            A's last batch is kept empty (records_count 0) because it holds A's last sequence.",
        "capture": {"topic_config": {"cleanup.policy": "compact", "segment.ms": 100,
                                     "min.cleanable.dirty.ratio": 0.01},
                    "broker": {"log.cleaner.backoff.ms": 100}},
        "expect": {"offset_gap": true, "empty_batch": true, "min_batches": 2},
    }));
    fixtures.push(json!({
        "name": "fetch-truncated",
        "client_id": "fetch-truncated",
        "api_key": 1,
        "topic": "truncated",
        "description": "Fetch response cut at the size limit: 24 uncompressed records in \
            batches of 4 (0.7 to 2.5 KB), fetched with fetch.max.bytes = \
            max.partition.fetch.bytes = 8000. The broker returns the first complete batches \
            and the cut-off start of the next one (KIP-74).",
        "capture": {"consumer": {"fetch.max.bytes": 8000, "max.partition.fetch.bytes": 8000}},
        "expect": {"codec": "none", "partial_tail": true},
    }));
    for codec in ["lz4", "zstd"] {
        fixtures.push(json!({
            "name": format!("produce-{codec}"),
            "client_id": format!("produce-{codec}"),
            "api_key": 0,
            "topic": format!("produce-{codec}"),
            "description": format!(
                "The first Produce request with records that librdkafka sent for 20 records \
                 to produce-{codec}, compression.type={codec}, acks=all, not idempotent."),
            "capture": {"producer": {"compression.type": codec, "linger.ms": 20, "acks": "all"}},
            "expect": {"codec": codec},
        }));
    }
    json!({
        "broker": format!("Apache Kafka {} (KRaft, 1 node)", cluster.version()),
        "client": format!("confluent-kafka {}", kafka_testkit::PYTHON_REQUIREMENTS[0]
            .trim_start_matches("confluent-kafka==")),
        "corrupt_from": "fetch-none",
        "fixtures": fixtures,
    })
}

/// Creates a topic whose partition `i` is on the nodes `assignment[i]`, led by
/// the first (the kit's `create_topic` leaves placement to the controller).
fn topic_on(
    venv: &Venv,
    cluster: &KafkaCluster,
    name: &str,
    assignment: &[&str],
    config: &[&str],
) -> Result<()> {
    let mut args = strings(&[
        "topic",
        "--bootstrap",
        &cluster.running_bootstrap(),
        "--name",
        name,
    ]);
    for a in assignment {
        args.extend(["--assignment".into(), a.to_string()]);
    }
    for c in config {
        args.extend(["--config".into(), c.to_string()]);
    }
    run_capture(venv, &args)?;
    Ok(())
}

/// Runs `steps` with `capture.py requests` (recording into `record_dir`) and
/// returns each step's result.
fn requests(
    venv: &Venv,
    cluster: &KafkaCluster,
    record_dir: &Path,
    steps: Value,
) -> Result<Vec<Value>> {
    let file = record_dir.with_extension("steps.json");
    std::fs::write(&file, serde_json::to_string_pretty(&steps)?)?;
    let mut args = strings(&["requests", "--steps"]);
    args.push(file.display().to_string());
    args.extend(["--record".into(), record_dir.display().to_string()]);
    for i in 0..cluster.node_count() {
        args.extend(["--broker".into(), format!("{i}={}", cluster.broker_addr(i))]);
    }
    let out = run_capture(venv, &args)?;
    out.lines()
        .map(|line| {
            eprintln!("capture_fixtures: {line}");
            Ok(serde_json::from_str::<Value>(line)?["result"].clone())
        })
        .collect()
}

/// A batch for `capture.py requests`: `count` records `<key>-<i>` of `topic`
/// partition `partition`, with the producer fields (and more) from `fields`.
fn batch(topic: &str, partition: i32, key: &str, count: usize, fields: Value) -> Value {
    let records: Vec<Value> = (0..count)
        .map(|i| json!([format!("{key}-{i}"), format!("value {i}")]))
        .collect();
    let mut b = json!({"topic": topic, "partition": partition, "records": records});
    if let (Some(b), Some(fields)) = (b.as_object_mut(), fields.as_object()) {
        b.extend(fields.clone());
    }
    b
}

/// Leader and leader epoch of `topic` partition 0 in a Metadata result.
fn leader_of(metadata: &Value, topic: &str) -> Result<(i64, i64)> {
    let topics = metadata["topics"].as_array().context("no topics")?;
    let t = topics
        .iter()
        .find(|t| t["name"] == topic)
        .with_context(|| format!("no {topic} in {metadata}"))?;
    let p = &t["partitions"][0];
    Ok((
        p["leader_id"].as_i64().context("leader")?,
        p["leader_epoch"].as_i64().context("epoch")?,
    ))
}

/// Produce refusals of every kind `classify` tells apart, and a leader change,
/// from a 3-node Kafka 4.4 cluster. Requests are crafted and recorded by
/// `capture.py requests`, each fixture's under a client id of its own name.
fn capture_errors(venv: &Venv, out_dir: &Path) -> Result<()> {
    let mut spec = ClusterSpec::new(DEFAULT_KAFKA_VERSION, 3);
    spec.jvm_opts = Some(vec!["-Xmx384m".into(), "-Xms128m".into()]);
    // Leadership stays where the leader change put it.
    spec.broker_props = vec![("auto.leader.rebalance.enable".into(), "false".into())];
    let cluster = KafkaCluster::start(spec)?;
    let work = tempfile::tempdir()?;
    let record_dir = work.path().join("recording");

    // Every partition on node 0 unless said otherwise, so one request reaches them all.
    topic_on(venv, &cluster, "seq", &["0"; 6], &[])?;
    topic_on(venv, &cluster, "small", &["0"], &["max.message.bytes=1000"])?;
    topic_on(
        venv,
        &cluster,
        "compacted",
        &["0"],
        &["cleanup.policy=compact"],
    )?;
    topic_on(venv, &cluster, "on1", &["1"], &[])?;
    // Kafka 4 caps min.insync.replicas at the replication factor: two replicas,
    // one of them stopped below.
    topic_on(venv, &cluster, "isr", &["1,0"], &["min.insync.replicas=2"])?;
    topic_on(venv, &cluster, "moving", &["0,1,2"], &[])?;
    topic_on(venv, &cluster, "slow", &["1,2"], &[])?;

    let init = requests(
        venv,
        &cluster,
        &record_dir,
        json!([{"op": "init_producer_id", "node": 0}]),
    )?;
    let pid = init[0]["producer_id"].as_i64().context("producer id")?;
    let epoch = init[0]["producer_epoch"]
        .as_i64()
        .context("producer epoch")?;
    let ts = 1_700_000_000_000_i64;
    let idem = |e: i64, seq: i32| json!({"producer_id": pid, "producer_epoch": e, "base_sequence": seq, "timestamp": ts});
    let produce = |name: &str, node: i32, partitions: Vec<Value>| json!({"op": "produce", "node": node, "client_id": name, "partitions": partitions});
    requests(
        venv,
        &cluster,
        &record_dir,
        json!([
            produce("produce-ok", 0, vec![
                batch("seq", 0, "a", 5, idem(epoch, 0)),
                batch("seq", 1, "b", 5, idem(epoch, 0)),
                batch("seq", 2, "c", 5, idem(epoch + 1, 0)),
                batch("seq", 3, "d", 3, json!({})),
            ]),
            // The first batch again, byte for byte.
            produce("produce-duplicate", 0, vec![batch("seq", 0, "a", 5, idem(epoch, 0))]),
            // seq 1 holds sequences 0..4: 8 leaves a gap.
            produce("produce-out-of-order", 0, vec![batch("seq", 1, "b", 2, idem(epoch, 8))]),
            // seq 2 was written at epoch + 1.
            produce("produce-stale-epoch", 0, vec![batch("seq", 2, "c", 2, idem(epoch, 5))]),
            // A producer id no InitProducerId handed out, mid-sequence.
            produce("produce-unknown-producer", 0, vec![batch("seq", 4, "u", 2,
                json!({"producer_id": pid + 100_000, "producer_epoch": 0, "base_sequence": 5}))]),
            produce("produce-refused-by-topic", 0, vec![
                batch("small", 0, "big", 1, json!({"value_bytes": 2000})),
                json!({"topic": "compacted", "partition": 0, "records": [[null, "no key"]]}),
                batch("seq", 3, "e", 2, json!({})),
            ]),
            produce("produce-corrupt", 0, vec![
                batch("seq", 5, "f", 3, json!({"bad_crc": true})),
                batch("seq", 3, "g", 2, json!({})),
            ]),
            // Node 1 leads on1 only; seq has no partition 9.
            produce("produce-not-leader", 1, vec![
                batch("seq", 3, "h", 2, json!({})),
                batch("seq", 9, "i", 2, json!({})),
                batch("on1", 0, "j", 2, json!({})),
            ]),
            // Data for the leader-change fetches.
            produce("setup", 0, vec![batch("moving", 0, "m", 4, json!({}))]),
            {"op": "metadata", "node": 1, "client_id": "metadata-before-leader-change",
             "topics": ["moving"]},
        ]),
    )?;

    // The leader change: node 0, leader of `moving`, shuts down (controlled),
    // node 1 takes over; node 0 comes back as a follower.
    cluster.stop_node(0)?;
    let after = requests(
        venv,
        &cluster,
        &record_dir,
        json!([
            {"op": "metadata", "node": 1, "client_id": "metadata-after-leader-change",
             "topics": ["moving"]},
            // Node 0 left the ISR of `isr` too, leaving 1 of the 2 it needs.
            produce("produce-not-enough-replicas", 1, vec![batch("isr", 0, "k", 2, json!({}))]),
        ]),
    )?;
    let (new_leader, new_epoch) = leader_of(&after[0], "moving")?;
    eprintln!("capture_fixtures: moving led by {new_leader} at epoch {new_epoch}");
    cluster.start_node(0)?;
    let back = requests(
        venv,
        &cluster,
        &record_dir,
        json!([{"op": "wait_isr", "node": 1, "topic": "moving", "partition": 0,
                "isr": [0, 1, 2]}]),
    )?;
    let (leader, current_epoch) = leader_of(&back[0], "moving")?;
    if leader == 0 {
        bail!("node 0 leads `moving` again");
    }
    requests(
        venv,
        &cluster,
        &record_dir,
        json!([
            produce("produce-old-leader", 0, vec![batch("moving", 0, "n", 2, json!({}))]),
            {"op": "fetch", "node": 0, "client_id": "fetch-old-leader-stale-epoch",
             "topic": "moving", "partition": 0, "leader_epoch": new_epoch - 1},
            {"op": "fetch", "node": 0, "client_id": "fetch-old-leader-current-epoch",
             "topic": "moving", "partition": 0, "leader_epoch": current_epoch},
        ]),
    )?;

    // A write whose fate is unknown: the follower of `slow` dies without leaving
    // the ISR (that takes replica.lag.time.max.ms), the leader appends and waits
    // for it past the request's timeout.
    cluster.kill_node(2)?;
    requests(
        venv,
        &cluster,
        &record_dir,
        json!([{"op": "produce", "node": 1, "client_id": "produce-timeout",
                "timeout_ms": 1000, "partitions": [batch("slow", 0, "t", 2, json!({}))]}]),
    )?;
    extract(
        venv,
        &record_dir,
        &errors_plan(&cluster),
        work.path(),
        out_dir,
    )
}

/// What each frame of `capture_errors` is, and the error codes it must hold
/// (per `topic/partition`; where a broker may answer either way, both).
fn errors_plan(cluster: &KafkaCluster) -> Value {
    let fx = |name: &str, api_key: i16, description: &str, errors: Value| {
        json!({"name": name, "client_id": name, "api_key": api_key, "raw": true,
               "description": description, "expect": {"errors": errors}})
    };
    let fixtures = vec![
        fx(
            "produce-ok",
            0,
            "Produce response: every batch written. seq/0 and seq/1 \
            idempotent (epoch E, sequences 0..4), seq/2 idempotent at epoch E+1, seq/3 \
            without a producer id.",
            json!({"seq/0": [0], "seq/1": [0], "seq/2": [0], "seq/3": [0]}),
        ),
        fx(
            "produce-duplicate",
            0,
            "Produce response to produce-ok's seq/0 batch sent \
            again byte for byte (same producer id, epoch and sequences): the broker \
            recognises one of the last 5 batches and answers success with the \
            original base offset, or DUPLICATE_SEQUENCE_NUMBER.",
            json!({"seq/0": [0, 46]}),
        ),
        fx(
            "produce-out-of-order",
            0,
            "Produce response to a batch with sequence 8 on \
            seq/1, whose last sequence is 4 (a gap).",
            json!({"seq/1": [45]}),
        ),
        fx(
            "produce-stale-epoch",
            0,
            "Produce response to a batch at epoch E on seq/2, \
            which the same producer id wrote at epoch E+1.",
            json!({"seq/2": [47, 90]}),
        ),
        fx(
            "produce-unknown-producer",
            0,
            "Produce response to a batch of a producer id \
            that no InitProducerId handed out, at sequence 5, on a partition it never \
            wrote (seq/4). Kafka 4 keeps no list of issued ids and takes it as a \
            producer whose earlier state expired: written.",
            json!({"seq/4": [0, 45, 59]}),
        ),
        fx(
            "produce-refused-by-topic",
            0,
            "Produce response to one request refused \
            partly by topic settings: a 2 KB batch to small/0 (max.message.bytes=1000), \
            a null key to compacted/0 (cleanup.policy=compact, with record_errors), \
            and a good batch to seq/3.",
            json!({"small/0": [10], "compacted/0": [87], "seq/3": [0]}),
        ),
        fx(
            "produce-corrupt",
            0,
            "Produce response to a batch whose stored CRC has its \
            low byte flipped (seq/5) next to a good one (seq/3).",
            json!({"seq/5": [2], "seq/3": [0]}),
        ),
        fx(
            "produce-not-leader",
            0,
            "Produce response from node 1 to one request for \
            seq/3 (led by node 0: the answer names the current leader, KIP-951), \
            seq/9 (no such partition) and on1/0 (led by node 1).",
            json!({"seq/3": [6], "seq/9": [3], "on1/0": [0]}),
        ),
        fx(
            "produce-not-enough-replicas",
            0,
            "Produce response (acks=all) from node 1 \
            for isr/0 (replicas [1, 0], min.insync.replicas=2) while node 0 is shut \
            down, so the ISR is [1]: refused before the append.",
            json!({"isr/0": [19]}),
        ),
        fx(
            "produce-old-leader",
            0,
            "Produce response from node 0 after the leader \
            change (see metadata-after-leader-change), node 0 back as a follower: \
            refused, naming the new leader and epoch.",
            json!({"moving/0": [6]}),
        ),
        fx(
            "produce-timeout",
            0,
            "Produce response (acks=all, timeout_ms=1000) for \
            slow/0, replicas [1, 2], right after node 2 was killed (SIGKILL): the \
            leader appended the batch, and the follower, still in the ISR, never \
            fetched it. Written or not is unknown to the client.",
            json!({"slow/0": [7]}),
        ),
        fx(
            "fetch-old-leader-stale-epoch",
            1,
            "Fetch response from node 0, the old \
            leader of moving/0, now a follower, to a fetch with the old leader epoch: \
            FENCED_LEADER_EPOCH, naming the current leader (KIP-951).",
            json!({"moving/0": [74]}),
        ),
        fx(
            "fetch-old-leader-current-epoch",
            1,
            "Fetch response from node 0, the old \
            leader of moving/0, now a follower, to a fetch with the current leader \
            epoch: consumers may fetch from followers (KIP-392, Fetch v11+), so it is \
            served from the follower, up to its high watermark.",
            json!({"moving/0": [0, 6]}),
        ),
    ];
    let mut fixtures = fixtures;
    for (name, leader, description) in [
        (
            "metadata-before-leader-change",
            0,
            "Metadata response (from node 1) for moving: \
          1 partition, replicas [0, 1, 2], led by node 0, all in the ISR.",
        ),
        (
            "metadata-after-leader-change",
            1,
            "Metadata response (from node 1) for moving \
          after node 0 shut down (controlled): led by node 1 at a higher leader epoch, \
          node 0 out of the ISR and of the broker list.",
        ),
    ] {
        fixtures.push(json!({
            "name": name, "client_id": name, "api_key": 3, "raw": true,
            "description": description, "expect": {"leaders": {"moving/0": leader}},
        }));
    }
    for f in &mut fixtures {
        f["capture"] = json!({"cluster": "3 nodes (ids 0, 1, 2)",
                              "broker": {"auto.leader.rebalance.enable": false},
                              "client": "capture.py requests"});
    }
    json!({
        "broker": format!("Apache Kafka {} (KRaft, 3 nodes)", cluster.version()),
        "client": "capture.py requests (crafted requests, versions negotiated as kafka-mirror does)",
        "fixtures": fixtures,
    })
}
