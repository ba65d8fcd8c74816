//! Producing with Kafka's Java producer (`ProducerPerformance` from the cached
//! distribution), to check the replicator against the reference client.

use std::ffi::OsString;
use std::path::PathBuf;

use anyhow::Result;

use crate::dist::KafkaDist;
use crate::Compression;

/// How `produce_with_java` shapes its records.
#[derive(Debug, Clone)]
pub struct JavaProduceOpts {
    pub num_records: u64,
    /// Random payloads of this size (ignored when `payload_file` is set).
    pub record_size: usize,
    /// Payloads taken from this file, one per line (ProducerPerformance's `--payload-file`).
    pub payload_file: Option<PathBuf>,
    pub compression: Compression,
    /// Extra producer properties (`acks`, `linger.ms`, `batch.size`, ...).
    pub producer_props: Vec<(String, String)>,
}

impl Default for JavaProduceOpts {
    fn default() -> Self {
        Self {
            num_records: 1000,
            record_size: 100,
            payload_file: None,
            compression: Compression::None,
            producer_props: Vec::new(),
        }
    }
}

/// Produces with Kafka's Java producer through `ProducerPerformance` (null keys, values
/// of `record_size` random bytes or lines of `payload_file`, as fast as possible).
/// Returns the tool's summary output.
pub fn produce_with_java(
    dist: &KafkaDist,
    bootstrap: &str,
    topic: &str,
    opts: &JavaProduceOpts,
) -> Result<String> {
    let mut args: Vec<OsString> = vec![
        "--topic".into(),
        topic.into(),
        "--num-records".into(),
        opts.num_records.to_string().into(),
        "--throughput".into(),
        "-1".into(),
    ];
    match &opts.payload_file {
        Some(p) => {
            args.push("--payload-file".into());
            args.push(p.into());
        }
        None => {
            args.push("--record-size".into());
            args.push(opts.record_size.to_string().into());
        }
    }
    args.push("--producer-props".into());
    args.push(format!("bootstrap.servers={bootstrap}").into());
    args.push(format!("compression.type={}", opts.compression.as_str()).into());
    args.push("acks=all".into());
    for (k, v) in &opts.producer_props {
        args.push(format!("{k}={v}").into());
    }
    let out = dist.run_tool("org.apache.kafka.tools.ProducerPerformance", args)?;
    Ok(out.stdout)
}
