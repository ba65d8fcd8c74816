//! `--max-bytes-per-sec`: a mirror far behind its source copies at the rate
//! it is given, measured as a user would (what the target's log grows by
//! over ten seconds), holds little memory while it waits, and still copies
//! every record unchanged.

mod common;

use std::time::{Duration, Instant};

use common::*;
use kafka_testkit::{generate_with_librdkafka, segment_files, Compression, Generate, KafkaCluster};

const TOPIC: &str = "throttled";
const PARTITIONS: i32 = 4;
/// The rate asked for, and its bytes per second.
const RATE: &str = "2MB";
const BYTES_PER_SECOND: f64 = 2e6;

/// Bytes of the topic's log segments on the cluster's broker: what its
/// partitions hold (kafka-log-dirs' sizes), 0 before the topic exists.
fn log_bytes(cluster: &KafkaCluster, topic: &str) -> u64 {
    (0..PARTITIONS)
        .flat_map(|partition| {
            segment_files(&cluster.log_dir(0), topic, partition).unwrap_or_default()
        })
        .map(|file| std::fs::metadata(file).map_or(0, |meta| meta.len()))
        .sum()
}

/// A line of `/proc/<pid>/status`, in kB.
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

#[test]
fn copies_at_the_rate_asked_with_little_memory_and_every_record_lands() {
    let clusters = shared_clusters(&[], &[]);
    let (source, target) = (&clusters.source, &clusters.target);
    source
        .create_topic(TOPIC, PARTITIONS as u32, 1, &[])
        .expect("create topic");
    generate_with_librdkafka(
        &source.bootstrap(),
        TOPIC,
        Compression::None,
        Generate::Bytes(30_000_000),
        18,
    )
    .expect("write 30 MB");
    let source_bytes = log_bytes(source, TOPIC);

    let mut args = run_args(source, target, "throttle");
    // A budget far above what the source holds: only the throttle keeps
    // the mirror from fetching it all into memory.
    args.extend(
        [
            "--topics",
            TOPIC,
            "--max-bytes-per-sec",
            RATE,
            "--in-flight-bytes",
            "256000000",
        ]
        .map(String::from),
    );
    let mut mirror = RunningMirror::spawn(mirror_command().args(&args));
    // Past the first burst (2 MiB) and the start-up.
    mirror.wait_until("copying", Duration::from_secs(60), || {
        log_bytes(target, TOPIC) >= 4_000_000
    });
    let (started, from) = (Instant::now(), log_bytes(target, TOPIC));
    std::thread::sleep(Duration::from_secs(10));
    let (seconds, to) = (started.elapsed().as_secs_f64(), log_bytes(target, TOPIC));
    let rate = (to - from) as f64 / seconds;
    println!(
        "copied {} bytes in {seconds:.2} s: {rate:.0} B/s",
        to - from
    );
    let off = (rate - BYTES_PER_SECOND).abs() / BYTES_PER_SECOND;
    assert!(
        off < 0.05,
        "copied at {rate:.0} B/s over {seconds:.1} s, {:.1}% off {BYTES_PER_SECOND} B/s",
        off * 100.0
    );
    // Its peak so far: a mirror that read ahead of the rate would hold the
    // 30 MB not yet copied.
    let peak_kb = proc_status_kb(mirror.id(), "VmHWM");
    println!("peak resident memory: {peak_kb} kB");
    assert!(
        peak_kb < 48 * 1024,
        "the mirror's resident memory reached {peak_kb} kB while throttled"
    );

    mirror.wait_until("copying everything", Duration::from_secs(60), || {
        log_bytes(target, TOPIC) >= source_bytes
    });
    let output = terminate(mirror);
    let summary = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{summary}");
    assert!(
        summary.contains("throttled to 2.0 MB/s"),
        "the summary names the throttle:\n{summary}"
    );
    let records = assert_same_records(source, target, TOPIC);
    assert!(records > 10_000, "{records} records");
}
