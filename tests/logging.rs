//! What a run writes besides its summary, as a log collector or a person
//! reading a CI job sees it: `--log-format json` lines that each parse and
//! name their flow, topic and partition; without a terminal, a plain
//! progress line every few seconds; `--quiet`, nothing but the summary.
//!
//! The source broker also listens behind toxiproxy with its bandwidth
//! capped, so a small topic read through it takes long enough to be shown.

mod common;

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::*;
use kafka_testkit::{
    free_ports, generate_with_librdkafka, ClusterSpec, Compression, Generate, KafkaCluster,
    Toxiproxy,
};
use regex::Regex;
use serde_json::Value;

/// The source, its capped address, and the target, shared by the tests.
struct Setup {
    source: KafkaCluster,
    target: KafkaCluster,
    /// The source broker's capped listener, behind toxiproxy.
    slow: SocketAddr,
    /// Keeps the proxy running.
    _toxiproxy: Toxiproxy,
}

/// Bytes written to the topic read through the capped link.
const SLOW_BYTES: u64 = 2_400_000;
/// The cap, in kB/s: the topic takes about 6 s (compressed a little less),
/// more than one plain progress line's 5 s.
const SLOW_KB_PER_S: u64 = 350;

fn setup() -> &'static Setup {
    static SETUP: OnceLock<Setup> = OnceLock::new();
    SETUP.get_or_init(|| {
        let toxiproxy = Toxiproxy::start().expect("start toxiproxy");
        let slow = SocketAddr::from(([127, 0, 0, 1], free_ports(1).expect("a free port")[0]));
        let mut spec = ClusterSpec::new(KAFKA, 1);
        spec.extra_listeners
            .push(("SLOW".into(), "PLAINTEXT".into()));
        spec.advertise.push(("SLOW".into(), slow.to_string()));
        let source = KafkaCluster::start(spec).expect("start the source");
        let target = start_cluster(KAFKA, 1, &[]);
        let listener = source
            .listener_addr(0, "SLOW")
            .expect("the capped listener");
        toxiproxy
            .create_proxy("source", slow, listener)
            .expect("create the proxy");
        toxiproxy
            .set_link("source", 0, Some(SLOW_KB_PER_S))
            .expect("cap the link");
        Setup {
            source,
            target,
            slow,
            _toxiproxy: toxiproxy,
        }
    })
}

/// `run` arguments reading the source through the capped link.
fn slow_run_args(setup: &Setup, name: &str) -> Vec<String> {
    let mut args = run_args(&setup.source, &setup.target, name);
    let source = args.iter().position(|a| a == "--source").expect("--source");
    args[source + 1] = setup.slow.to_string();
    // Fetches small enough that the cap paces each one, so records land
    // all along rather than in one Fetch at the end; one at a time, as
    // toxiproxy caps each connection on its own.
    let tuning = config_file(
        "slow.toml",
        "[replication]\nfetch_max_bytes = 131072\npartition_fetch_bytes = 65536\nfetchers_per_broker = 1\n",
    );
    args.extend([
        "--topics".into(),
        "slow".into(),
        "--until-caught-up".into(),
        "--config".into(),
        tuning,
    ]);
    args
}

/// The topic read through the capped link, written once.
fn slow_topic(setup: &Setup) {
    static WRITTEN: OnceLock<()> = OnceLock::new();
    WRITTEN.get_or_init(|| {
        setup
            .source
            .create_topic("slow", 2, 1, &[])
            .expect("create the topic");
        generate_with_librdkafka(
            &setup.source.bootstrap(),
            "slow",
            Compression::None,
            Generate::Bytes(SLOW_BYTES),
            7,
        )
        .expect("write the data");
    });
}

/// Records copied, from the summary's first line.
fn records_copied(summary: &str) -> u64 {
    summary_count(summary, "partitions: ")
}

#[test]
fn json_logs_are_one_object_per_line_naming_flow_topic_and_partition() {
    let setup = setup();
    let topic = "json-logs";
    setup
        .source
        .create_topic(topic, 3, 1, &[])
        .expect("create the topic");
    produce_keyed(&setup.source, topic, 300, 3, "k", None);

    let mut args = vec!["--log-format".to_owned(), "json".into(), "-v".into()];
    args.extend(run_args(&setup.source, &setup.target, "json-logs"));
    args.extend(["--topics".into(), topic.into(), "--until-caught-up".into()]);
    let output = run_mirror(&args, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{}", tail(&stderr, 40));
    assert_eq!(records_copied(&stdout), 300, "{stdout}");

    let events: Vec<Value> = stderr
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    assert!(!events.is_empty(), "-v logs nothing");
    let flow_of = |event: &Value| -> Option<String> {
        event["spans"]
            .as_array()?
            .iter()
            .find(|span| span["name"] == "flow")
            .and_then(|span| span["flow"].as_str().map(str::to_owned))
    };
    let mut partitions_seen = std::collections::BTreeSet::new();
    for event in &events {
        let timestamp = event["timestamp"].as_str().unwrap_or_default();
        assert!(
            timestamp.len() >= 20 && timestamp.ends_with('Z'),
            "no UTC timestamp: {event}"
        );
        assert!(
            ["ERROR", "WARN", "INFO", "DEBUG", "TRACE"]
                .contains(&event["level"].as_str().unwrap_or_default()),
            "no level: {event}"
        );
        assert!(
            event["fields"]["message"].is_string(),
            "no message: {event}"
        );
        assert!(event["target"].is_string(), "no target: {event}");
        // An event about a partition says which, and whose.
        if let Some(partition) = event["fields"]["partition"].as_i64() {
            let about = event["fields"]["topic"].as_str();
            assert!(about.is_some(), "a partition without its topic: {event}");
            assert_eq!(
                flow_of(event).as_deref(),
                Some("json-logs"),
                "no flow: {event}"
            );
            if about == Some(topic) {
                partitions_seen.insert(partition);
            }
        }
    }
    // Each partition's start is logged at -v, with its own fields.
    assert_eq!(
        partitions_seen.into_iter().collect::<Vec<_>>(),
        [0, 1, 2],
        "partition events of {topic}:\n{}",
        tail(&stderr, 40)
    );
    // The flow's own events carry it too.
    assert!(
        events
            .iter()
            .any(|e| e["fields"]["message"] == "selected source topics"
                && flow_of(e).as_deref() == Some("json-logs")),
        "{}",
        tail(&stderr, 40)
    );
}

#[test]
fn without_a_terminal_progress_is_a_plain_line_every_few_seconds() {
    let setup = setup();
    slow_topic(setup);
    let output = run_mirror(
        &slow_run_args(setup, "plain-progress"),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{}", tail(&stderr, 40));
    let line = Regex::new(
        r"(?m)^flow plain-progress: ([\d,]+) of ([\d,]+) records \(\d+\.\d%\), [\d.]+ [kMG]?B copied, [\d.]+ [kMG]?B/s, (ETA \d+[smh]|stalled)",
    )
    .expect("the pattern");
    let lines: Vec<_> = line.captures_iter(&stderr).collect();
    assert!(
        !lines.is_empty(),
        "no progress line in a run of {stdout}\n{stderr}"
    );
    let number = |text: &str| text.replace(',', "").parse::<u64>().expect("a count");
    for captures in &lines {
        assert!(
            number(&captures[1]) <= number(&captures[2]),
            "{}",
            &captures[0]
        );
    }
    // Partway: the run was still copying when the line was written.
    assert!(
        number(&lines[0][1]) < records_copied(&stdout),
        "{}\n{stdout}",
        &lines[0][0]
    );
}

#[test]
fn quiet_prints_only_the_summary() {
    let setup = setup();
    slow_topic(setup);
    let mut command = mirror_command();
    // Only the flags decide here, not the tests' log settings.
    command.env_remove("RUST_LOG");
    command.arg("--quiet").args(slow_run_args(setup, "quiet"));
    let started = Instant::now();
    let output = wait_with_limit(RunningMirror::spawn(&mut command), Duration::from_secs(120));
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.starts_with("replicated 1 topics, 2 partitions: "),
        "{stdout}"
    );
    assert!(records_copied(&stdout) > 0, "{stdout}");
    // The run outlasted a progress line's interval, and said nothing.
    assert!(took > Duration::from_secs(6), "the run took only {took:?}");
    assert_eq!(stderr, "", "--quiet wrote to stderr");
}
