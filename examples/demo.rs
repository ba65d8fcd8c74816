//! The kafka-mirror demo: two real Kafka clusters on this machine, a sample data set,
//! one replication run, and a record-by-record check of the result.
//!
//!     cargo run --release --example demo
//!
//! What it does:
//! 1. builds `kafka-mirror` (release; a no-op when it is up to date);
//! 2. starts two single-node Kafka 4.4.0 clusters, "source" and "target" (the first run
//!    downloads Kafka from Maven Central and creates a Python venv with confluent-kafka
//!    under ~/.cache/kafka-mirror; later runs need no network);
//! 3. writes sample data into the source with clients we did not write:
//!    `orders` (librdkafka, zstd, keys, headers, JSON values), `clicks` (Kafka's Java
//!    producer, lz4, JSON click events) and `internal-audit` (excluded below); a consumer
//!    group, `billing`, reads part of `orders` and commits;
//! 4. runs `kafka-mirror run --source .. --target .. --exclude 'internal-.*' --groups billing
//!    --until-caught-up`, measuring its CPU time and peak memory from /proc;
//! 5. reads every topic back from both clusters with confluent-kafka and checks that every
//!    record matches (partition, order, key, value, headers, timestamp) and that
//!    `internal-audit` was not copied;
//! 6. fails `billing` over: it resumes on the target and must read exactly the `orders`
//!    records it had not read on the source, none twice.
//!
//! It exits non-zero, saying what differed, if anything does not match. The clusters are
//! removed when the demo ends, however it ends.

use std::collections::{BTreeMap, HashSet};
use std::error::Error;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use kafka_testkit::{
    cargo_build_release, consume_group_with_librdkafka, dump_topic, produce_with_java,
    produce_with_librdkafka, read_all_on_thread, ClusterSpec, Compression, DumpedRecord, Isolation,
    JavaProduceOpts, KafkaCluster, MeteredChild, ProduceOpts, Venv,
};

type Result<T, E = Box<dyn Error + Send + Sync>> = std::result::Result<T, E>;

const KAFKA_VERSION: &str = "4.4.0";
const EXCLUDE: &str = "internal-.*";
/// The topics the mirror should copy, and how many partitions each has.
const REPLICATED: &[(&str, u32)] = &[("orders", 6), ("clicks", 6)];
const EXCLUDED_TOPIC: &str = "internal-audit";

const ORDERS: u64 = 40_000;
const CLICKS: u64 = 200_000;
const AUDIT_EVENTS: u64 = 2_000;
/// The consumer group that fails over, and how many `orders` records it reads first.
const GROUP: &str = "billing";
const READ_BEFORE_FAILOVER: u64 = 12_345;

/// The mirror must be done by then (it usually needs a few seconds).
const MIRROR_TIMEOUT: Duration = Duration::from_secs(300);

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("\ndemo FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let demo_started = Instant::now();
    if cfg!(debug_assertions) {
        println!("(note: this demo was built without --release; checking 100 MB is slower)");
    }

    step(
        1,
        "building kafka-mirror (cargo build --release --bin kafka-mirror)",
    );
    let t = Instant::now();
    let mirror_bin = cargo_build_release(Path::new(env!("CARGO_MANIFEST_DIR")), "kafka-mirror")?;
    println!("  {} ({:.1} s)", mirror_bin.display(), secs(t));

    step(
        2,
        &format!("starting two local Kafka {KAFKA_VERSION} clusters"),
    );
    let t = Instant::now();
    let (source, target) = thread::scope(|s| {
        let source = s.spawn(|| KafkaCluster::start(ClusterSpec::new(KAFKA_VERSION, 1)));
        let target = s.spawn(|| KafkaCluster::start(ClusterSpec::new(KAFKA_VERSION, 1)));
        (join(source), join(target))
    });
    let (source, target) = (source?, target?);
    let (src, dst) = (source.bootstrap(), target.bootstrap());
    println!("  source {src}, target {dst} ({:.1} s)", secs(t));

    step(3, "writing sample data into the source");
    let written_mb = write_sample_data(&source)?;
    let read_on_source = consume_group_with_librdkafka(
        &src,
        GROUP,
        "orders",
        READ_BEFORE_FAILOVER,
        Isolation::ReadCommitted,
    )?;
    println!(
        "  consumer group `{GROUP}` read {} `orders` records on the source and committed",
        read_on_source.len()
    );

    step(4, "replicating");
    let args = [
        "run",
        "--source",
        &src,
        "--target",
        &dst,
        "--exclude",
        EXCLUDE,
        "--groups",
        GROUP,
        "--until-caught-up",
    ];
    println!("  $ kafka-mirror {}", shell_words(&args));
    let run = run_measured(&mirror_bin, &args)?;
    for line in run.stdout.lines() {
        println!("  | {line}");
    }
    if !run.success {
        return Err(format!(
            "kafka-mirror exited with {} (see its output above)",
            run.status
        )
        .into());
    }
    let summary = Summary::parse(&run.stdout)?;

    step(
        5,
        "verifying the target against the source with confluent-kafka",
    );
    let verified = verify(&src, &dst, &summary)?;
    print_samples(&verified.samples);

    step(
        6,
        &format!("failing `{GROUP}` over: it resumes on the target"),
    );
    let resumed = fail_over(&src, &dst, &read_on_source)?;

    let gb = summary.megabytes / 1000.0;
    println!("\n== kafka-mirror demo: OK ==");
    println!(
        "  throughput   {:.1} MB/s  ({:.1} MB of compressed record batches, {written_mb:.0} MB as produced, in {:.2} s; the process ran {:.2} s)",
        summary.mb_per_s, summary.megabytes, summary.seconds, run.wall.as_secs_f64()
    );
    println!(
        "  CPU          {:.2} s user+system  = {:.1} CPU s per GB of record batches",
        run.cpu_seconds,
        if gb > 0.0 { run.cpu_seconds / gb } else { 0.0 }
    );
    println!("  peak RSS     {:.1} MiB", run.peak_rss_kib as f64 / 1024.0);
    println!(
        "  verified     {} records in {} topics, {} partitions: identical on both clusters; `{EXCLUDED_TOPIC}` not copied",
        verified.records, verified.topics, verified.partitions
    );
    println!(
        "  failover     `{GROUP}` read {} records on the source, then the other {resumed} on the target: none missed, none twice",
        read_on_source.len()
    );
    println!("  demo took    {:.0} s", secs(demo_started));
    Ok(())
}

fn step(n: u32, what: &str) {
    println!("\n[{n}/6] {what}");
}

/// The group resumes on the target, where kafka-mirror committed its
/// translated offsets, and must read exactly the `orders` records it had not
/// read on the source, in each partition's order. Returns how many it read.
fn fail_over(src: &str, dst: &str, read_on_source: &[DumpedRecord]) -> Result<usize> {
    let all = dump_topic(src, "orders")?;
    let read: HashSet<(i32, i64)> = read_on_source
        .iter()
        .map(|r| (r.partition, r.offset))
        .collect();
    let unread: Vec<&DumpedRecord> = all
        .iter()
        .filter(|r| !read.contains(&(r.partition, r.offset)))
        .collect();
    let resumed = consume_group_with_librdkafka(
        dst,
        GROUP,
        "orders",
        unread.len() as u64 + 1,
        Isolation::ReadCommitted,
    )?;
    println!(
        "  `{GROUP}` read {} records on the target; {} were left unread on the source",
        resumed.len(),
        unread.len()
    );
    let (expected, got) = (by_partition(unread.iter().copied()), by_partition(&resumed));
    for (partition, wanted) in &expected {
        let read = got.get(partition).map_or(&[][..], Vec::as_slice);
        let same = wanted.len() == read.len()
            && wanted
                .iter()
                .zip(read)
                .all(|(w, r)| (&w.key, &w.value, &w.headers) == (&r.key, &r.value, &r.headers));
        if !same {
            return Err(format!(
                "`{GROUP}` on the target, partition {partition}: read {} records, expected the {} it had not read on the source",
                read.len(),
                wanted.len()
            )
            .into());
        }
    }
    if resumed.len() != unread.len() {
        return Err(format!(
            "`{GROUP}` read {} records on the target, expected {}",
            resumed.len(),
            unread.len()
        )
        .into());
    }
    Ok(resumed.len())
}

fn secs(since: Instant) -> f64 {
    since.elapsed().as_secs_f64()
}

fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

fn shell_words(args: &[&str]) -> String {
    args.iter()
        .map(|a| {
            if a.contains(['*', ' ', '\'']) {
                format!("'{a}'")
            } else {
                a.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------------------
// Sample data

/// Creates and fills the topics; returns the megabytes written (keys, values and headers,
/// before compression) to the topics the mirror copies.
fn write_sample_data(source: &KafkaCluster) -> Result<f64> {
    let bs = source.bootstrap();
    for (topic, partitions) in REPLICATED {
        source.create_topic(topic, *partitions, 1, &[])?;
    }
    source.create_topic(EXCLUDED_TOPIC, 1, 1, &[])?;

    // The Python (librdkafka) and Java producers each keep about one core busy, so they
    // run side by side.
    let payloads = ClickPayloads::write()?;
    thread::scope(|s| -> Result<f64> {
        let orders = s.spawn(|| -> Result<(String, f64)> {
            let t = Instant::now();
            // Keyed records spread by librdkafka's partitioner, 0-6 headers each,
            // JSON-like values of 50 B to 1.5 kB (every 10th a null "tombstone").
            let acked = produce_with_librdkafka(
                &bs,
                "orders",
                &ProduceOpts {
                    count: ORDERS,
                    compression: Compression::Zstd,
                    key_prefix: "order".into(),
                    ..Default::default()
                },
            )?;
            let mb = acked.iter().map(record_size).sum::<usize>() as f64 / 1e6;
            let line = format!(
                "  orders          {:>7} records {mb:>6.1} MB  librdkafka, zstd, keys + headers ({:.1} s)",
                acked.len(),
                secs(t)
            );
            Ok((line, mb))
        });
        let clicks = s.spawn(|| -> Result<(String, f64)> {
            let t = Instant::now();
            produce_with_java(
                source.dist(),
                &bs,
                "clicks",
                &JavaProduceOpts {
                    num_records: CLICKS,
                    payload_file: Some(payloads.path.clone()),
                    compression: Compression::Lz4,
                    producer_props: vec![
                        ("linger.ms".into(), "10".into()),
                        ("batch.size".into(), "65536".into()),
                    ],
                    ..Default::default()
                },
            )?;
            let mb = CLICKS as f64 * payloads.mean_len / 1e6;
            let line = format!(
                "  clicks          {CLICKS:>7} records {mb:>6.1} MB  Java producer, lz4, JSON events ({:.1} s)",
                secs(t)
            );
            Ok((line, mb))
        });
        let audit = s.spawn(|| -> Result<String> {
            produce_with_librdkafka(
                &bs,
                EXCLUDED_TOPIC,
                &ProduceOpts {
                    count: AUDIT_EVENTS,
                    compression: Compression::Gzip,
                    key_prefix: "audit".into(),
                    ..Default::default()
                },
            )?;
            Ok(format!(
                "  {EXCLUDED_TOPIC}  {AUDIT_EVENTS:>7} records             librdkafka, gzip (excluded from mirroring)"
            ))
        });
        let (orders, orders_mb) = join(orders)?;
        let (clicks, clicks_mb) = join(clicks)?;
        println!("{orders}\n{clicks}\n{}", join(audit)?);
        Ok(orders_mb + clicks_mb)
    })
}

fn record_size(r: &DumpedRecord) -> usize {
    r.key.as_ref().map_or(0, Vec::len)
        + r.value.as_ref().map_or(0, Vec::len)
        + r.headers
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
            .sum::<usize>()
}

/// A file of JSON click events, one per line; Kafka's ProducerPerformance sends a random
/// line as each record's value. Removed when dropped.
struct ClickPayloads {
    path: PathBuf,
    mean_len: f64,
}

impl ClickPayloads {
    fn write() -> Result<ClickPayloads> {
        const LINES: u64 = 20_000;
        const PAGES: &[&str] = &[
            "/",
            "/search",
            "/products",
            "/cart",
            "/checkout",
            "/account/orders",
        ];
        const AGENTS: &[&str] = &[
            "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0",
            "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1",
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36",
        ];
        let mut rng = XorShift(0x5eed_c1c5);
        let mut text = String::new();
        for i in 0..LINES {
            let page = PAGES[rng.below(PAGES.len() as u64) as usize];
            let product = rng.below(50_000);
            let query: String = (0..rng.below(6))
                .map(|_| {
                    ["red", "shoes", "kafka", "book", "lamp", "usb-c", "desk"]
                        [rng.below(7) as usize]
                })
                .collect::<Vec<_>>()
                .join("+");
            let _ = writeln!(
                text,
                r#"{{"event":"click","seq":{i},"ts":{},"user":"u-{:06}","session":"{:016x}","page":"{page}/{product}","referrer":"https://shop.example.com/search?q={query}","ua":"{}","viewport":[{},{}],"experiments":[{}]}}"#,
                1_732_000_000_000 + i * 37,
                rng.below(1_000_000),
                rng.next(),
                AGENTS[rng.below(AGENTS.len() as u64) as usize],
                [360, 1280, 1920][rng.below(3) as usize],
                [640, 720, 1080][rng.below(3) as usize],
                (0..rng.below(4))
                    .map(|e| format!("\"exp-{e}-{}\"", rng.below(2)))
                    .collect::<Vec<_>>()
                    .join(","),
            );
        }
        let path = std::env::temp_dir().join(format!(
            "kafka-mirror-demo-clicks-{}.jsonl",
            std::process::id()
        ));
        std::fs::write(&path, &text)?;
        let mean_len = (text.len() as u64 - LINES) as f64 / LINES as f64;
        Ok(ClickPayloads { path, mean_len })
    }
}

impl Drop for ClickPayloads {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A tiny deterministic generator, so every run writes the same click events.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

// ---------------------------------------------------------------------------------------
// Building and running the mirror

/// What one run of the mirror printed and cost.
struct MeasuredRun {
    success: bool,
    status: std::process::ExitStatus,
    stdout: String,
    wall: Duration,
    cpu_seconds: f64,
    peak_rss_kib: u64,
}

/// Runs the binary, measuring its CPU time and peak memory from /proc (testkit's
/// `MeteredChild`).
fn run_measured(bin: &Path, args: &[&str]) -> Result<MeasuredRun> {
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let mut child = MeteredChild::spawn(cmd)?;
    let reader = read_all_on_thread(child.take_stdout().ok_or("stdout is not piped")?);
    while !child.has_exited() {
        if child.usage().wall > MIRROR_TIMEOUT {
            child.stop(Duration::from_secs(5))?;
            return Err(format!("kafka-mirror did not catch up within {MIRROR_TIMEOUT:?}").into());
        }
        thread::sleep(Duration::from_millis(50));
    }
    let finished = child.wait()?;
    let stdout = reader.join().map_err(|_| "the stdout reader panicked")??;
    Ok(MeasuredRun {
        success: finished.status.success(),
        status: finished.status,
        stdout,
        wall: finished.usage.wall,
        cpu_seconds: finished.usage.cpu_seconds,
        peak_rss_kib: finished.usage.peak_rss_kib,
    })
}

/// The numbers in the mirror's `replicated ...` summary line.
struct Summary {
    records: u64,
    megabytes: f64,
    seconds: f64,
    mb_per_s: f64,
}

impl Summary {
    /// Parses `replicated T topics, P partitions: R records, B batches, M MB in S s (X MB/s)`.
    fn parse(stdout: &str) -> Result<Summary> {
        let re = regex::Regex::new(
            r"^replicated \d+ topics, \d+ partitions: (\d+) records, \d+ batches, ([\d.]+) MB in ([\d.]+) s \(([\d.]+) MB/s\)",
        )?;
        let caps = stdout
            .lines()
            .find_map(|l| re.captures(l))
            .ok_or("kafka-mirror printed no `replicated ...` summary line")?;
        Ok(Summary {
            records: caps[1].parse()?,
            megabytes: caps[2].parse()?,
            seconds: caps[3].parse()?,
            mb_per_s: caps[4].parse()?,
        })
    }
}

// ---------------------------------------------------------------------------------------
// Verification

struct Verified {
    records: usize,
    topics: usize,
    partitions: usize,
    samples: Vec<(String, DumpedRecord)>,
}

fn verify(src: &str, dst: &str, summary: &Summary) -> Result<Verified> {
    let mut problems = Vec::new();

    // Which topics exist where, with their partition counts (confluent-kafka's admin client).
    let source_topics = list_topics(src)?;
    let target_topics = list_topics(dst)?;
    if target_topics.contains_key(EXCLUDED_TOPIC) {
        problems.push(format!(
            "`{EXCLUDED_TOPIC}` is on the target although the mirror ran with --exclude '{EXCLUDE}'"
        ));
    } else {
        println!("  {EXCLUDED_TOPIC:<15} not on the target (excluded), as intended");
    }
    for (topic, partitions) in REPLICATED {
        match (source_topics.get(*topic), target_topics.get(*topic)) {
            (Some(s), Some(t)) if s == t && s == partitions => {}
            (s, t) => problems.push(format!(
                "`{topic}` has {s:?} partitions on the source and {t:?} on the target (expected {partitions})"
            )),
        }
    }

    // Read every replicated topic back from both clusters, four readers two at a time.
    let mut dumps: BTreeMap<&str, (Vec<DumpedRecord>, Vec<DumpedRecord>)> = BTreeMap::new();
    for (topic, _) in REPLICATED {
        let t = Instant::now();
        let (s, d) = thread::scope(|s| {
            let a = s.spawn(|| dump_topic(src, topic));
            let b = s.spawn(|| dump_topic(dst, topic));
            (join(a), join(b))
        });
        let (s, d) = (s?, d?);
        println!(
            "  {topic:<15} read {} records from the source and {} from the target ({:.1} s)",
            s.len(),
            d.len(),
            secs(t)
        );
        dumps.insert(topic, (s, d));
    }

    let expected = [("orders", ORDERS), ("clicks", CLICKS)];
    let mut records = 0;
    let mut partitions = 0;
    let mut samples = Vec::new();
    for (topic, (source, target)) in &dumps {
        if let Some((_, n)) = expected.iter().find(|(t, _)| t == topic) {
            if source.len() as u64 != *n {
                problems.push(format!(
                    "`{topic}`: the source holds {} records, the producer wrote {n}",
                    source.len()
                ));
            }
        }
        let before = problems.len();
        compare_topic(topic, source, target, &mut problems);
        if problems.len() == before {
            println!("  {topic:<15} every record matches: partition, order, key, value, headers, timestamp");
        }
        records += source.len();
        partitions += by_partition(source).len();
        samples.extend(
            target
                .iter()
                .step_by(target.len() / 2 + 1)
                .take(2)
                .map(|r| (topic.to_string(), r.clone())),
        );
    }
    if summary.records != records as u64 {
        problems.push(format!(
            "kafka-mirror reported {} records copied, the source topics hold {records}",
            summary.records
        ));
    }

    if problems.is_empty() {
        Ok(Verified {
            records,
            topics: dumps.len(),
            partitions,
            samples,
        })
    } else {
        let shown = problems
            .iter()
            .take(10)
            .map(|p| format!("\n  - {p}"))
            .collect::<String>();
        let more = problems.len().saturating_sub(10);
        Err(format!(
            "the target does not match the source ({} problems){shown}{}",
            problems.len(),
            if more > 0 {
                format!("\n  ... and {more} more")
            } else {
                String::new()
            }
        )
        .into())
    }
}

/// Compares two dumps partition by partition, record by record in offset order. Offsets
/// themselves are not compared: the target assigns its own.
fn compare_topic(
    topic: &str,
    source: &[DumpedRecord],
    target: &[DumpedRecord],
    problems: &mut Vec<String>,
) {
    let (src, dst) = (by_partition(source), by_partition(target));
    for (p, s) in &src {
        let d = dst.get(p).map(Vec::as_slice).unwrap_or_default();
        if s.len() != d.len() {
            problems.push(format!(
                "{topic}-{p}: {} records on the source, {} on the target",
                s.len(),
                d.len()
            ));
        }
        let mismatch = s.iter().zip(d).enumerate().find_map(|(i, (s, d))| {
            let field = if s.key != d.key {
                "key"
            } else if s.value != d.value {
                "value"
            } else if s.headers != d.headers {
                "headers"
            } else if (s.timestamp_type, s.timestamp) != (d.timestamp_type, d.timestamp) {
                "timestamp"
            } else {
                return None;
            };
            Some(format!(
                "{topic}-{p}: record #{i} (source offset {}, target offset {}) has a different {field}:\n      source {}\n      target {}",
                s.offset, d.offset, describe(s), describe(d)
            ))
        });
        problems.extend(mismatch);
    }
    for p in dst.keys().filter(|p| !src.contains_key(p)) {
        problems.push(format!(
            "{topic}-{p}: records on the target but none on the source"
        ));
    }
}

fn by_partition<'a>(
    records: impl IntoIterator<Item = &'a DumpedRecord>,
) -> BTreeMap<i32, Vec<&'a DumpedRecord>> {
    let mut map: BTreeMap<i32, Vec<&DumpedRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition).or_default().push(r);
    }
    map
}

/// Topic name -> partition count, internal topics left out.
fn list_topics(bootstrap: &str) -> Result<BTreeMap<String, u32>> {
    const SCRIPT: &str = r#"
import sys
from confluent_kafka.admin import AdminClient
md = AdminClient({"bootstrap.servers": sys.argv[1]}).list_topics(timeout=30)
for name, t in sorted(md.topics.items()):
    if not name.startswith("__"):
        print(name, len(t.partitions))
"#;
    let out = Command::new(Venv::get()?.python())
        .args(["-c", SCRIPT, bootstrap])
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "listing topics on {bootstrap} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let mut topics = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        if let Some((name, n)) = line.split_once(' ') {
            topics.insert(name.to_string(), n.parse()?);
        }
    }
    Ok(topics)
}

fn print_samples(samples: &[(String, DumpedRecord)]) {
    println!("\n  a few records as the target serves them:");
    for (topic, r) in samples {
        println!("  {topic}-{} @{}: {}", r.partition, r.offset, describe(r));
    }
}

/// One line about a record: key, headers, value (shortened), timestamp.
fn describe(r: &DumpedRecord) -> String {
    fn text(bytes: &Option<Vec<u8>>, max: usize) -> String {
        match bytes {
            None => "null".into(),
            Some(b) => {
                let s = match std::str::from_utf8(b) {
                    Ok(s) if !s.contains(char::is_control) => s,
                    _ => {
                        return format!(
                            "0x{}",
                            b.iter().map(|x| format!("{x:02x}")).collect::<String>()
                        )
                    }
                };
                if s.chars().count() > max {
                    format!(
                        "{}...({} B)",
                        s.chars().take(max).collect::<String>(),
                        b.len()
                    )
                } else {
                    s.to_string()
                }
            }
        }
    }
    let headers = r
        .headers
        .iter()
        .map(|(k, v)| format!("{k}={}", text(v, 16)))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "key={} headers=[{headers}] ts={} value={}",
        text(&r.key, 24),
        r.timestamp,
        text(&r.value, 60)
    )
}
