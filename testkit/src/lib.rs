//! kafka-testkit: fetches, caches and runs real Apache Kafka (KRaft) for kafka-mirror's
//! integration tests and demo. See README.md.

mod build;
mod cache;
mod cluster;
mod dist;
mod java;
mod measure;
mod mirrormaker;
mod proxy;
mod python;
mod segments;
mod toxiproxy;

pub use build::cargo_build_release;
pub use cache::cache_root;
pub use cluster::{free_ports, ClusterSpec, KafkaCluster};
pub use dist::KafkaDist;
pub use java::{java_bin, produce_with_java, JavaProduceOpts, ToolOutput, TOOL_JVM_OPTS};
pub use measure::{own_cpu_seconds, read_all_on_thread, Finished, MeteredChild, Usage};
pub use mirrormaker::{
    mirror_maker1_command, write_properties, MirrorMaker2, MIRROR_MAKER1_JVM_OPTS,
    MIRROR_MAKER2_JVM_OPTS, MIRROR_MAKER2_VERSION,
};
pub use proxy::CountingProxy;
pub use python::{
    clients_dir, consume_latency, dump_topic, dump_topic_with, generate_with_librdkafka,
    produce_with_librdkafka, ConsumeLatency, DumpedRecord, Generate, Generated, ProduceOpts,
    TimestampType, Venv, PYTHON_REQUIREMENTS,
};
pub use segments::{read_partition_batches, segment_files, RawBatch};
pub use toxiproxy::{Toxiproxy, TOXIPROXY_VERSION};

pub use anyhow::{Error, Result};

/// The Kafka version tests use unless they ask for another.
pub const DEFAULT_KAFKA_VERSION: &str = "4.4.0";
/// The older version kept for migration tests.
pub const OLD_KAFKA_VERSION: &str = "3.9.1";

/// Producer compression codec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    /// The name both librdkafka and the Java producer use.
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The codec id in a v2 batch's attributes.
    pub fn codec_id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }
}
