//! The two clusters, the proxies in front of them, and the data sets on the source.

use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use kafka_mirror::cluster::Role;
use kafka_testkit::{
    generate_with_librdkafka, ClusterSpec, Compression, CountingProxy, Generate, KafkaCluster,
    DEFAULT_KAFKA_VERSION,
};
use tokio::runtime::Runtime;

use crate::kafka::{per_topic, Admin, Ends};
use crate::tools::Route;

/// The broker listener the tools reach the target through, advertised at the
/// counting proxy's address so that every connection passes the proxy.
pub(crate) const METERED: &str = "METERED";

/// Broker heap: small, like the tests', but enough for 1 GiB topics.
const BROKER_JVM_OPTS: &[&str] = &["-Xmx768m", "-Xms768m"];

/// A source and a target cluster, one broker each, on this machine.
pub(crate) struct Lab {
    pub(crate) rt: Runtime,
    pub(crate) source: KafkaCluster,
    pub(crate) target: KafkaCluster,
    /// Direct (unmetered) clients for the harness's own polling.
    pub(crate) src_admin: Admin,
    pub(crate) dst_admin: Admin,
    /// Counts what the tools send to the target.
    pub(crate) metered: CountingProxy,
    /// Config files and tool logs of each run.
    pub(crate) dir: tempfile::TempDir,
}

impl Lab {
    /// Starts both clusters side by side, with extra listeners (name, advertised
    /// address) for the WAN proxies.
    pub(crate) fn start(
        source_extra: Vec<(String, SocketAddr)>,
        target_extra: Vec<(String, SocketAddr)>,
    ) -> Result<Lab> {
        let metered = CountingProxy::bind()?;
        let spec = |extra: &[(String, SocketAddr)]| {
            let mut spec = ClusterSpec::new(DEFAULT_KAFKA_VERSION, 1);
            spec.jvm_opts = Some(BROKER_JVM_OPTS.iter().map(|s| s.to_string()).collect());
            for (name, addr) in extra {
                spec.extra_listeners
                    .push((name.clone(), "PLAINTEXT".into()));
                spec.advertise.push((name.clone(), addr.to_string()));
            }
            spec
        };
        let mut target_listeners = vec![(METERED.to_string(), metered.addr())];
        target_listeners.extend(target_extra);
        let (source, target) = thread::scope(|s| {
            let source = s.spawn(|| KafkaCluster::start(spec(&source_extra)));
            let target = s.spawn(|| KafkaCluster::start(spec(&target_listeners)));
            (join(source), join(target))
        });
        let (source, target) = (source?, target?);
        metered.forward_to(
            target
                .listener_addr(0, METERED)
                .context("the target has no metered listener")?,
        );
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .context("starting the tokio runtime")?;
        Ok(Lab {
            rt,
            src_admin: Admin::new(Role::Source, &source.bootstrap()),
            dst_admin: Admin::new(Role::Target, &target.bootstrap()),
            source,
            target,
            metered,
            dir: tempfile::Builder::new()
                .prefix("replication-bench-")
                .tempdir()
                .context("creating the bench's work directory")?,
        })
    }
}

pub(crate) fn join<T>(handle: thread::ScopedJoinHandle<'_, T>) -> T {
    handle
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
}

/// Topics on the source holding one data set, and what they hold.
#[derive(Debug, Clone)]
pub(crate) struct DataSet {
    pub(crate) topics: Vec<String>,
    /// Over all topics.
    pub(crate) partitions: u32,
    pub(crate) partitions_per_topic: u32,
    /// Record batches as stored (the `.log` segment files).
    pub(crate) stored_bytes: u64,
    /// Keys, values and headers before compression.
    pub(crate) raw_bytes: u64,
    pub(crate) records: u64,
    pub(crate) ends: Ends,
    /// How long before it was written each record's CreateTime is.
    pub(crate) age: Duration,
}

const MIB: u64 = 1024 * 1024;

impl DataSet {
    /// Creates `<prefix>-lz4` and `<prefix>-zstd` with `partitions` each and fills them
    /// (librdkafka, one producer per topic in parallel) until each stores at least
    /// half of `mib` MiB of record batches, stamped `age` back.
    pub(crate) fn write(
        lab: &Lab,
        prefix: &str,
        mib: u64,
        partitions: u32,
        age: Duration,
    ) -> Result<DataSet> {
        let codecs = [(Compression::Lz4, "lz4"), (Compression::Zstd, "zstd")];
        let topics: Vec<String> = codecs
            .iter()
            .map(|(_, c)| format!("{prefix}-{c}"))
            .collect();
        for t in &topics {
            lab.source.create_topic(t, partitions, 1, &[])?;
        }
        let want = (mib * MIB).div_ceil(codecs.len() as u64);
        let log_dir = lab.source.log_dir(0);
        let bootstrap = lab.source.bootstrap();
        let written: Vec<Result<(u64, u64)>> = thread::scope(|s| {
            let handles: Vec<_> = codecs
                .iter()
                .zip(&topics)
                .map(|((codec, _), topic)| {
                    let (log_dir, bootstrap) = (&log_dir, &bootstrap);
                    s.spawn(move || fill_topic(bootstrap, log_dir, topic, *codec, want, age))
                })
                .collect();
            handles.into_iter().map(join).collect()
        });
        let mut raw_bytes = 0;
        let mut records = 0;
        for w in written {
            let (r, b) = w?;
            records += r;
            raw_bytes += b;
        }
        let ends = lab.src_admin.end_offsets(&lab.rt, &topics)?;
        anyhow::ensure!(
            ends.len() == topics.len() * partitions as usize,
            "end offsets of {} of the {} source partitions found",
            ends.len(),
            topics.len() * partitions as usize
        );
        let stored_bytes = topics
            .iter()
            .map(|t| stored_bytes(&log_dir, t))
            .sum::<Result<u64>>()?;
        let sum: i64 = per_topic(&ends).values().sum();
        anyhow::ensure!(
            sum as u64 == records,
            "the source's end offsets add up to {sum}, the producers wrote {records} records"
        );
        Ok(DataSet {
            topics,
            partitions: partitions * codecs.len() as u32,
            partitions_per_topic: partitions,
            stored_bytes,
            raw_bytes,
            records,
            ends,
            age,
        })
    }
}

impl DataSet {
    /// Copying this data set from `source` to `target` (bootstrap addresses).
    pub(crate) fn route(&self, source: String, target: String) -> Route {
        Route {
            source,
            target,
            topics: self.topics.clone(),
            partitions_per_topic: self.partitions_per_topic,
            target_configs: Vec::new(),
            groups: None,
        }
    }
}

/// Produces into `topic` until it stores `want` bytes: a first guess at the
/// compression ratio, then chunks sized by the ratio seen so far. Records
/// are stamped `age` back.
fn fill_topic(
    bootstrap: &str,
    log_dir: &Path,
    topic: &str,
    codec: Compression,
    want: u64,
    age: Duration,
) -> Result<(u64, u64)> {
    let (mut records, mut raw) = (0u64, 0u64);
    let mut ratio = 3.0;
    for seed in 1.. {
        let stored = stored_bytes(log_dir, topic)?;
        if stored >= want {
            break;
        }
        if stored > 0 {
            ratio = raw as f64 / stored as f64;
        }
        // 2% over, so the last chunk rarely falls just short.
        let chunk = ((want - stored) as f64 * ratio * 1.02) as u64 + 1;
        let amount = if age.is_zero() {
            Generate::Bytes(chunk)
        } else {
            Generate::Backfill { bytes: chunk, age }
        };
        let g = generate_with_librdkafka(bootstrap, topic, codec, amount, seed)?;
        records += g.records;
        raw += g.bytes;
    }
    Ok((records, raw))
}

/// Bytes in the `.log` segment files of every partition of `topic` in `log_dir`.
pub(crate) fn stored_bytes(log_dir: &Path, topic: &str) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(log_dir).with_context(|| format!("reading {}", log_dir.display()))? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_partition = name
            .strip_prefix(topic)
            .and_then(|rest| rest.strip_prefix('-'))
            .is_some_and(|p| p.parse::<u32>().is_ok());
        if !is_partition {
            continue;
        }
        for file in fs::read_dir(entry.path())? {
            let file = file?;
            if file.path().extension().is_some_and(|e| e == "log") {
                total += file.metadata()?.len();
            }
        }
    }
    Ok(total)
}
