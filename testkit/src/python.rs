//! The Python venv (confluent-kafka, kafka-python, prometheus-client) and the client scripts in `clients/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::cache::{cache_root, CacheLock};
use crate::process::output_checked;
use crate::Compression;

/// Pinned client packages (confluent-kafka's wheels bundle librdkafka;
/// prometheus-client's parser reads the mirror's metrics).
pub const PYTHON_REQUIREMENTS: &[&str] = &[
    "confluent-kafka==2.16.1",
    "kafka-python==3.0.12",
    "prometheus-client==0.26.0",
];

/// The venv's directory in the cache: renamed whenever the requirements
/// change, so checkouts pinning different lists (branches, worktrees) each
/// keep their own instead of rebuilding one another's.
const VENV_DIR: &str = "venv-2";

const READY_MARKER: &str = ".kafka-testkit-ready";

/// `<cache>/venv-N` ([`VENV_DIR`]), created once (under a lock, marked complete only at the end) and reused.
#[derive(Debug, Clone)]
pub struct Venv {
    dir: PathBuf,
}

impl Venv {
    pub fn get() -> Result<Venv> {
        static VENV: OnceLock<std::result::Result<Venv, String>> = OnceLock::new();
        VENV.get_or_init(|| Self::create().map_err(|e| format!("{e:#}")))
            .clone()
            .map_err(|e| anyhow!(e))
    }

    fn create() -> Result<Venv> {
        let root = cache_root()?;
        let dir = root.join(VENV_DIR);
        let venv = Venv { dir: dir.clone() };
        let want = PYTHON_REQUIREMENTS.join("\n");
        let ready = |d: &Path| fs::read_to_string(d.join(READY_MARKER)).is_ok_and(|s| s == want);
        if ready(&dir) {
            return Ok(venv);
        }
        let _lock = CacheLock::acquire(&root.join("venv.lock"))?;
        if ready(&dir) {
            return Ok(venv);
        }
        let started = Instant::now();
        eprintln!(
            "kafka-testkit: creating {} with {}",
            dir.display(),
            PYTHON_REQUIREMENTS.join(" ")
        );
        if dir.exists() {
            fs::remove_dir_all(&dir)
                .with_context(|| format!("removing incomplete {}", dir.display()))?;
        }
        let python = std::env::var_os("KAFKA_MIRROR_PYTHON")
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "python3".into());
        let out = Command::new(&python)
            .args(["-m", "venv"])
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| anyhow!("Python 3 (`{}`) not found ({e}); kafka-testkit needs Python 3.9+ with the venv module (Debian: apt-get install python3 python3-venv; or set KAFKA_MIRROR_PYTHON)", python.to_string_lossy()))?;
        if !out.status.success() {
            bail!(
                "`{} -m venv {}` failed ({}); install the venv module (Debian: apt-get install python3-venv):\n{}",
                python.to_string_lossy(),
                dir.display(),
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        output_checked(
            Command::new(venv.python())
                .args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
                .args(PYTHON_REQUIREMENTS),
            "pip install",
        )
        .with_context(|| {
            format!(
                "pip could not install {} (is PyPI reachable?)",
                PYTHON_REQUIREMENTS.join(" ")
            )
        })?;
        fs::write(dir.join(READY_MARKER), &want)?;
        eprintln!(
            "kafka-testkit: venv ready in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(venv)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<venv>/bin/python`.
    pub fn python(&self) -> PathBuf {
        self.dir.join("bin").join("python")
    }

    /// Runs one of the scripts in `testkit/clients/` and returns its stdout.
    pub fn run_client(&self, script: &str, args: &[String]) -> Result<String> {
        let path = clients_dir().join(script);
        let out = output_checked(
            Command::new(self.python()).arg(&path).args(args),
            &format!("{script} {args:?}"),
        )?;
        Ok(out.stdout)
    }
}

/// `testkit/clients/`, where the committed Python client scripts live.
pub fn clients_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("clients")
}

/// The timestamp type of a record as the consumer saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TimestampType {
    NotAvailable,
    CreateTime,
    LogAppendTime,
}

/// One record, as `dump.py` read it (or as `produce.py` had it acknowledged).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedRecord {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In wire order; names may repeat, values may be null.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub timestamp_type: TimestampType,
    pub timestamp: i64,
}

#[derive(Deserialize)]
struct JsonRecord {
    partition: i32,
    offset: i64,
    key: Option<String>,
    value: Option<String>,
    headers: Vec<(String, Option<String>)>,
    timestamp_type: TimestampType,
    timestamp: i64,
}

fn b64(s: Option<String>) -> Result<Option<Vec<u8>>> {
    s.map(|s| {
        base64::engine::general_purpose::STANDARD
            .decode(s)
            .context("bad base64 from a client script")
    })
    .transpose()
}

pub(crate) fn parse_records(out: &str) -> Result<Vec<DumpedRecord>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let j: JsonRecord =
                serde_json::from_str(l).with_context(|| format!("bad JSON line {l:?}"))?;
            Ok(DumpedRecord {
                partition: j.partition,
                offset: j.offset,
                key: b64(j.key)?,
                value: b64(j.value)?,
                headers: j
                    .headers
                    .into_iter()
                    .map(|(k, v)| Ok((k, b64(v)?)))
                    .collect::<Result<_>>()?,
                timestamp_type: j.timestamp_type,
                timestamp: j.timestamp,
            })
        })
        .collect()
}

/// How `produce_with_librdkafka` shapes its records (see `clients/produce.py`).
#[derive(Debug, Clone)]
pub struct ProduceOpts {
    pub count: u64,
    /// Records go to partition `i % partitions` in turn; `None` lets librdkafka's
    /// partitioner pick by key.
    pub partitions: Option<u32>,
    pub compression: Compression,
    /// Prefix of every key (`<prefix>-<i>`), so several runs into one topic stay apart.
    pub key_prefix: String,
    /// Cycle through this many keys (`<prefix>-<i % n>`): many updates to few
    /// keys, for compacted topics. `None`: every key distinct.
    pub distinct_keys: Option<u64>,
    /// With `distinct_keys`: pick each record's key by a fixed pseudo-random
    /// sequence instead of in turn, so a key's last update can fall anywhere
    /// and compaction leaves gaps inside many batches.
    pub shuffle_keys: bool,
    /// Base of the explicit CreateTime timestamps (record i gets base + i ms);
    /// `None` means now minus one hour.
    pub base_timestamp_ms: Option<i64>,
    pub idempotence: bool,
    /// Produce everything in one transaction with this id (implies idempotence).
    pub transactional_id: Option<String>,
    /// Abort the transaction instead of committing it.
    pub abort: bool,
    /// No record gets headers: topics in the old message formats (magic 0
    /// and 1) refuse them.
    pub no_headers: bool,
    /// Extra librdkafka producer configuration.
    pub config: Vec<(String, String)>,
}

impl Default for ProduceOpts {
    fn default() -> Self {
        Self {
            count: 1000,
            partitions: None,
            compression: Compression::None,
            key_prefix: "key".into(),
            distinct_keys: None,
            shuffle_keys: false,
            base_timestamp_ms: None,
            idempotence: false,
            transactional_id: None,
            abort: false,
            no_headers: false,
            config: Vec::new(),
        }
    }
}

/// Produces `opts.count` records with confluent-kafka (librdkafka): keys, JSON-like
/// values of varying size (every 10th value null), 0, 1 or several headers, explicit
/// timestamps. Returns the records as acknowledged (with partition and offset), in
/// production order.
pub fn produce_with_librdkafka(
    bootstrap: &str,
    topic: &str,
    opts: &ProduceOpts,
) -> Result<Vec<DumpedRecord>> {
    let mut args = vec![
        "--bootstrap".to_string(),
        bootstrap.to_string(),
        "--topic".into(),
        topic.into(),
        "--count".into(),
        opts.count.to_string(),
        "--compression".into(),
        opts.compression.as_str().into(),
        "--key-prefix".into(),
        opts.key_prefix.clone(),
    ];
    if let Some(p) = opts.partitions {
        args.extend(["--partitions".into(), p.to_string()]);
    }
    if let Some(n) = opts.distinct_keys {
        args.extend(["--distinct-keys".into(), n.to_string()]);
    }
    if opts.shuffle_keys {
        args.push("--shuffle-keys".into());
    }
    if let Some(ts) = opts.base_timestamp_ms {
        args.extend(["--base-timestamp".into(), ts.to_string()]);
    }
    if opts.idempotence {
        args.push("--idempotence".into());
    }
    if let Some(t) = &opts.transactional_id {
        args.extend(["--transactional-id".into(), t.clone()]);
    }
    if opts.abort {
        args.push("--abort".into());
    }
    if opts.no_headers {
        args.push("--no-headers".into());
    }
    for (k, v) in &opts.config {
        args.extend(["--config".into(), format!("{k}={v}")]);
    }
    parse_records(&Venv::get()?.run_client("produce.py", &args)?)
}

/// Reads every partition of `topic` from the beginning to its end (high watermark) with
/// confluent-kafka, `read_committed`, and returns the records sorted by (partition, offset).
pub fn dump_topic(bootstrap: &str, topic: &str) -> Result<Vec<DumpedRecord>> {
    dump_topic_with(bootstrap, topic, true)
}

/// [`dump_topic`] choosing the isolation level.
pub fn dump_topic_with(
    bootstrap: &str,
    topic: &str,
    read_committed: bool,
) -> Result<Vec<DumpedRecord>> {
    let mut args = vec![
        "--bootstrap".to_string(),
        bootstrap.to_string(),
        "--topic".into(),
        topic.into(),
    ];
    if !read_committed {
        args.push("--read-uncommitted".into());
    }
    parse_records(&Venv::get()?.run_client("dump.py", &args)?)
}

/// [`dump_topic`] with extra librdkafka settings, such as SASL credentials
/// (`security.protocol`, `sasl.mechanism`, `sasl.username`, `sasl.password`);
/// the error says why a refused client was refused.
pub fn dump_topic_as(
    bootstrap: &str,
    topic: &str,
    config: &[(&str, &str)],
) -> Result<Vec<DumpedRecord>> {
    let mut args = vec![
        "--bootstrap".to_string(),
        bootstrap.to_string(),
        "--topic".into(),
        topic.into(),
        "--timeout".into(),
        "30".into(),
    ];
    for (k, v) in config {
        args.extend(["--config".into(), format!("{k}={v}")]);
    }
    parse_records(&Venv::get()?.run_client("dump.py", &args)?)
}

pub(crate) fn create_topic(
    bootstrap: &str,
    name: &str,
    partitions: u32,
    replication_factor: u16,
    configs: &[(&str, &str)],
) -> Result<()> {
    let mut args = vec![
        "create".to_string(),
        "--bootstrap".into(),
        bootstrap.into(),
        "--topic".into(),
        name.into(),
        "--partitions".into(),
        partitions.to_string(),
        "--replication-factor".into(),
        replication_factor.to_string(),
    ];
    for (k, v) in configs {
        args.extend(["--config".into(), format!("{k}={v}")]);
    }
    Venv::get()?.run_client("admin.py", &args).map(drop)
}

pub(crate) fn delete_topic(bootstrap: &str, name: &str) -> Result<()> {
    let args = vec![
        "delete".to_string(),
        "--bootstrap".into(),
        bootstrap.into(),
        "--topic".into(),
        name.into(),
    ];
    Venv::get()?.run_client("admin.py", &args).map(drop)
}

/// How much `generate_with_librdkafka` writes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Generate {
    /// As fast as possible until this many bytes (keys + values + headers) are acknowledged.
    Bytes(u64),
    /// As [`Generate::Bytes`], each record's CreateTime `age` before it is
    /// produced: a backfill of old data.
    Backfill { bytes: u64, age: Duration },
    /// This many records per second for this long, every key unique (`lat-<i>`).
    Rate { per_second: u32, seconds: f64 },
}

/// What `generate_with_librdkafka` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Generated {
    pub records: u64,
    /// Keys + values + headers, before compression.
    pub bytes: u64,
    pub seconds: f64,
}

/// Writes benchmark data with confluent-kafka (`clients/generate.py`): order events as
/// JSON values of 200 B to 3 kB, keys from a large key space, one to three headers,
/// compressed with `compression`, acks=all, linger.ms=20, batch.size=128 KiB. `seed`
/// picks the documents, so each call can write different ones.
pub fn generate_with_librdkafka(
    bootstrap: &str,
    topic: &str,
    compression: Compression,
    amount: Generate,
    seed: u64,
) -> Result<Generated> {
    let mut args = vec![
        "--bootstrap".to_string(),
        bootstrap.to_string(),
        "--topic".into(),
        topic.into(),
        "--compression".into(),
        compression.as_str().into(),
        "--seed".into(),
        seed.to_string(),
    ];
    match amount {
        Generate::Bytes(n) => args.extend(["--bytes".into(), n.to_string()]),
        Generate::Backfill { bytes, age } => args.extend([
            "--bytes".into(),
            bytes.to_string(),
            "--age-ms".into(),
            age.as_millis().to_string(),
        ]),
        Generate::Rate {
            per_second,
            seconds,
        } => args.extend([
            "--rate".into(),
            per_second.to_string(),
            "--seconds".into(),
            seconds.to_string(),
        ]),
    }
    let out = Venv::get()?.run_client("generate.py", &args)?;
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("generate.py printed {last:?}"))
}

/// Produce-to-consume delays a consumer saw (`clients/consume_latency.py`), in ms.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct ConsumeLatency {
    pub records: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub max_ms: Option<f64>,
}

/// Consumes the LogAppendTime `topic` from its end for `seconds` with confluent-kafka
/// (`read_committed`) and measures receive time minus append time, leaving out records appended in the
/// first `skip_seconds`.
pub fn consume_latency(
    bootstrap: &str,
    topic: &str,
    seconds: f64,
    skip_seconds: f64,
) -> Result<ConsumeLatency> {
    let mut args = consume_latency_args(bootstrap, topic, seconds);
    args.extend(["--skip-seconds".into(), skip_seconds.to_string()]);
    let out = Venv::get()?.run_client("consume_latency.py", &args)?;
    let last = out.lines().last().unwrap_or_default();
    serde_json::from_str(last).with_context(|| format!("consume_latency.py printed {last:?}"))
}

/// A record as [`receive_times`] received it.
#[derive(Debug, Clone, PartialEq)]
pub struct Received {
    pub key: Option<Vec<u8>>,
    /// When it arrived: ms since the Unix epoch, this machine's clock (the one
    /// local brokers stamp LogAppendTime with).
    pub received_ms: f64,
}

/// Consumes `topic` from its end with confluent-kafka, `read_committed` (a
/// transaction's records arrive once it commits), and returns when each record
/// arrived. Stops after `seconds`, or `idle_seconds` after the last record once
/// one has come.
pub fn receive_times(
    bootstrap: &str,
    topic: &str,
    seconds: f64,
    idle_seconds: f64,
) -> Result<Vec<Received>> {
    #[derive(Deserialize)]
    struct Line {
        key: Option<String>,
        received_ms: f64,
    }
    let mut args = consume_latency_args(bootstrap, topic, seconds);
    args.extend([
        "--records".into(),
        "--idle-seconds".into(),
        idle_seconds.to_string(),
    ]);
    let out = Venv::get()?.run_client("consume_latency.py", &args)?;
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let line: Line = serde_json::from_str(l)
                .with_context(|| format!("consume_latency.py printed {l:?}"))?;
            Ok(Received {
                key: b64(line.key)?,
                received_ms: line.received_ms,
            })
        })
        .collect()
}

fn consume_latency_args(bootstrap: &str, topic: &str, seconds: f64) -> Vec<String> {
    vec![
        "--bootstrap".to_string(),
        bootstrap.to_string(),
        "--topic".into(),
        topic.into(),
        "--seconds".into(),
        seconds.to_string(),
    ]
}

/// An HTTP answer as `http_get.py` printed it.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpAnswer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
    /// With `metrics`: each sample of the exposition, as the official
    /// Prometheus client's OpenMetrics parser read it.
    #[serde(default)]
    pub samples: Vec<MetricSample>,
}

/// One sample of a Prometheus exposition.
#[derive(Debug, Clone, Deserialize)]
pub struct MetricSample {
    /// The family's name (a counter's without `_total`).
    pub family: String,
    #[serde(rename = "type")]
    pub kind: String,
    /// The sample's own name (`..._total`, `..._bucket`).
    pub name: String,
    pub labels: std::collections::BTreeMap<String, String>,
    pub value: f64,
}

/// GETs (or with `post`, POSTs) `url` with Python's urllib; with `metrics`,
/// parses the body with prometheus-client's OpenMetrics parser, which fails
/// on an invalid exposition.
pub fn http_request(url: &str, post: bool, metrics: bool) -> Result<HttpAnswer> {
    let mut args = vec![url.to_string()];
    if post {
        args.push("--post".into());
    }
    if metrics {
        args.push("--metrics".into());
    }
    let out = Venv::get()?.run_client("http_get.py", &args)?;
    serde_json::from_str(&out).with_context(|| format!("http_get.py printed {out}"))
}
