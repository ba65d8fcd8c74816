//! kafka-testkit: fetches, caches and runs real Apache Kafka (KRaft) for kafka-mirror's
//! integration tests and demo. See README.md.
//!
//! A tour, from the bottom up:
//! - Processes and the machine: `process` (running, signalling and watching child
//!   processes so none outlives a test), `ports` (loopback ports), `cache` (the
//!   download cache and its lock), `measure` (CPU and memory of a process tree).
//! - Java: `java` (the runtime), `maven` (jars from Maven Central), `dist` (one Kafka
//!   version's jars and the JVM commands that run them), `properties` (config files).
//! - Clusters: `cluster` (spec, start, node control), `node` (a node's ports, files
//!   and storage format), `zookeeper` (ZooKeeper mode for 3.x), `wire` (the Metadata
//!   probe that tells when a cluster is ready).
//! - Clients and tools: `python` (librdkafka through confluent-kafka), `groups`
//!   (reading as a consumer group, committed offsets, groups of other protocols), `java_producer`,
//!   `mirrormaker`, `toxiproxy` and `proxy` (WAN and byte counting), `segments` (stored
//!   batches), `build` (building the mirror itself).

mod build;
mod cache;
mod cluster;
mod dist;
mod groups;
mod java;
mod java_producer;
mod maven;
mod measure;
mod mirrormaker;
mod node;
mod ports;
mod process;
mod properties;
mod proxy;
mod python;
mod segments;
mod toxiproxy;
mod wire;
mod zookeeper;

use std::sync::{Mutex, MutexGuard};

pub use build::cargo_build_release;
pub use cache::cache_root;
pub use cluster::{ClusterSpec, KafkaCluster};
pub use dist::{KafkaDist, TOOL_JVM_OPTS};
pub use groups::{
    committed_offsets, consume_group_with_java, consume_group_with_librdkafka,
    describe_group_with_kafka_python, group_members, groups_of_protocol, set_committed_offset,
    DescribedGroup, DescribedMember, GroupMember, Isolation,
};
pub use java::java_bin;
pub use java_producer::{produce_with_java, JavaProduceOpts};
pub use measure::{own_cpu_seconds, read_all_on_thread, Finished, MeteredChild, Usage};
pub use mirrormaker::{
    mirror_maker1_command, MirrorMaker2, MIRROR_MAKER1_JVM_OPTS, MIRROR_MAKER2_JVM_OPTS,
    MIRROR_MAKER2_VERSION,
};
pub use ports::free_ports;
pub use process::ToolOutput;
pub use properties::write_properties;
pub use proxy::CountingProxy;
pub use python::{
    clients_dir, consume_latency, dump_topic, dump_topic_as, dump_topic_with,
    generate_with_librdkafka, http_request, produce_with_librdkafka, receive_times, ConsumeLatency,
    DumpedRecord, Generate, Generated, HttpAnswer, MetricSample, ProduceOpts, Received,
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

/// Locks `m` even if a thread panicked while holding it: a test that fails while
/// using a shared cluster must not break the tests after it, nor its cleanup.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
