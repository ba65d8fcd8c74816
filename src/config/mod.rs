//! The mirror's configuration: the TOML file, its defaults, and validation.
//!
//! Every key has a default except the clusters' bootstrap servers, so the
//! smallest useful file names a source and a target. Larger topologies name
//! their clusters and declare flows between them. Unknown keys are refused
//! (a typo must not silently fall back to a default), and every error names
//! the key that is wrong and why. The CLI (`cli.rs`) overlays its flags on
//! this.
//!
//! - this module: [`MirrorConfig`]'s entry points (read, parse, validate)
//!   and [`ConfigError`];
//! - `schema.rs`: the file's structs and enums, with their defaults;
//! - `cluster.rs`: a [`ClusterConfig`] checked and turned into the
//!   [`Connector`](crate::net::Connector) that opens its connections (TLS,
//!   SASL and where its secrets come from);
//! - `topics.rs`: which topics a flow copies ([`TopicFilter`]) and how its
//!   topic settings resolve;
//! - `groups.rs`: which consumer groups' offsets a flow syncs onto its
//!   target, and how often ([`GroupSync`]);
//! - `name_filter.rs`: the include/exclude regexes both of them select by;
//! - `rate.rs`: byte rates as people write them ([`ByteRate`]: `50MB`,
//!   `40MiB`, `400Mbit`), for the throttles;
//! - [`flows`]: the flows between clusters, checked for loops;
//! - [`properties`] and [`mirrormaker`]: Kafka client properties files and
//!   MirrorMaker 1 and 2 configurations, read as kafka-mirror's own.

use std::collections::BTreeMap;
use std::path::Path;

mod cluster;
pub mod flows;
mod groups;
pub mod mirrormaker;
mod name_filter;
pub mod properties;
mod rate;
mod schema;
mod toml_error;
mod topics;

pub use flows::{Direction, Flow, FlowAclsConfig, FlowConfig, FlowReplicationConfig};
pub use groups::GroupSync;
pub use rate::{ByteRate, RateError};
pub use schema::{
    parse_start_position, AclsConfig, CheckpointConfig, ClusterConfig, DataLossPolicy,
    GroupsConfig, HttpConfig, InstancesConfig, IsolationLevel, MirrorConfig, PolicyKind,
    ProcessConfig, RefusedBatchPolicy, ReplicationConfig, SaslConfig, StartPosition, TlsConfig,
    TopicsConfig,
};
pub use topics::{looks_internal, TopicFilter};

/// A configuration that cannot be used, naming the key and the problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file's path.
        path: String,
        /// Why the read failed.
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema (unknown key,
    /// wrong type). Never shows the line or a value: either may be a secret.
    #[error("config file {path}, line {line}, column {column}{}: {message}",
        .key.as_ref().map(|key| format!(", key `{key}`")).unwrap_or_default())]
    Parse {
        /// The file's path.
        path: String,
        /// Where the error is, from 1.
        line: usize,
        /// Where in the line, in characters from 1.
        column: usize,
        /// The dotted key at that place, when there is one.
        key: Option<String>,
        /// What is wrong, without the values the parser quotes.
        message: String,
    },
    /// A key has a value that parses but cannot be used.
    #[error("config key `{key}`: {reason}")]
    Invalid {
        /// The dotted key, as written in the file.
        key: String,
        /// What is wrong with its value.
        reason: String,
    },
    /// A Kafka client properties file is not valid Java properties syntax.
    #[error("properties file {path}: {message}")]
    PropertiesSyntax {
        /// The file's path.
        path: String,
        /// What is wrong and on which line (never the line's text).
        message: String,
    },
    /// A key of a Kafka client properties file cannot be used.
    #[error("properties file {path}{}: key `{key}`: {reason}",
        .line.map(|line| format!(", line {line}")).unwrap_or_default())]
    Property {
        /// The file's path.
        path: String,
        /// The line the key is set on; none for a key that is missing.
        line: Option<usize>,
        /// The Kafka client key, as written in the file.
        key: String,
        /// What is wrong with it (never its value, which may be a secret).
        reason: String,
    },
}

impl MirrorConfig {
    /// A mirror between two clusters with every other setting at its default.
    pub fn new(source: ClusterConfig, target: ClusterConfig) -> Self {
        MirrorConfig {
            name: schema::default_name(),
            source: Some(source),
            target: Some(target),
            clusters: BTreeMap::new(),
            flows: Vec::new(),
            topics: TopicsConfig::default(),
            groups: GroupsConfig::default(),
            acls: AclsConfig::default(),
            replication: ReplicationConfig::default(),
            checkpoints: CheckpointConfig::default(),
            instances: InstancesConfig::default(),
            process: ProcessConfig::default(),
            http: HttpConfig::default(),
        }
    }

    /// Reads and validates a TOML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let config = Self::read_file(path)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads a TOML file without validating it, for callers that lay
    /// command-line flags over it first (a file may hold only tuning keys).
    pub fn read_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        toml::from_str(&text)
            .map_err(|e| toml_error::parse_error(&path.display().to_string(), &text, &e))
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: MirrorConfig =
            toml::from_str(text).map_err(|e| toml_error::parse_error("<text>", text, &e))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what the types cannot: non-empty lists, valid regexes, consistent
    /// sizes, flows between declared clusters without loops.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.name.is_empty() || self.name.contains(['\n', '/']) {
            return invalid("name", "must be non-empty, without '/' or newlines".into());
        }
        let r = &self.replication;
        if r.partition_fetch_bytes == 0 || r.partition_fetch_bytes > r.fetch_max_bytes {
            return invalid(
                "replication.partition_fetch_bytes",
                "must be between 1 and replication.fetch_max_bytes".into(),
            );
        }
        if r.fetch_max_bytes > i32::MAX as usize {
            return invalid("replication.fetch_max_bytes", "must fit in 31 bits".into());
        }
        if r.in_flight_bytes < r.partition_fetch_bytes {
            return invalid(
                "replication.in_flight_bytes",
                "must be at least replication.partition_fetch_bytes".into(),
            );
        }
        if r.fetchers_per_broker
            .is_some_and(|n| !(1..=16).contains(&n))
        {
            return invalid(
                "replication.fetchers_per_broker",
                "must be between 1 and 16".into(),
            );
        }
        if !(1..=256).contains(&r.threads) {
            return invalid("replication.threads", "must be between 1 and 256".into());
        }
        if r.transaction_interval_ms == 0 {
            return invalid(
                "replication.transaction_interval_ms",
                "must be at least 1".into(),
            );
        }
        // The transaction must outlive its interval, and a broker takes
        // `transaction.timeout.ms` as an i32.
        if r.transaction_timeout_ms <= r.transaction_interval_ms
            || r.transaction_timeout_ms > i32::MAX as u64
        {
            return invalid(
                "replication.transaction_timeout_ms",
                "must be longer than replication.transaction_interval_ms and fit in 31 bits".into(),
            );
        }
        if r.transaction_max_in_flight_batches == 0 {
            return invalid(
                "replication.transaction_max_in_flight_batches",
                "must be at least 1".into(),
            );
        }
        if r.max_in_flight_requests == 0 {
            return invalid(
                "replication.max_in_flight_requests",
                "must be at least 1".into(),
            );
        }
        if r.replication_factor == 0 || r.replication_factor < -1 {
            return invalid(
                "replication.replication_factor",
                "must be -1 (broker default) or at least 1".into(),
            );
        }
        self.validate_instances()?;
        if self.checkpoints.topic.is_empty() {
            return invalid("checkpoints.topic", "must be non-empty".into());
        }
        self.flows().map(|_| ())
    }
}

impl MirrorConfig {
    fn validate_instances(&self) -> Result<(), ConfigError> {
        let i = &self.instances;
        // The group requests carry both as an i32 of ms.
        for (key, ms) in [
            ("instances.session_timeout_ms", i.session_timeout_ms),
            ("instances.rebalance_timeout_ms", i.rebalance_timeout_ms),
        ] {
            if ms == 0 || ms > i32::MAX as u64 {
                return invalid(key, "must be at least 1 and fit in 31 bits".into());
            }
        }
        if i.instance_id
            .as_ref()
            .is_some_and(|id| id.trim().is_empty())
        {
            return invalid("instances.instance_id", "must be non-empty when set".into());
        }
        if !i.share && !self.replication.exactly_once {
            return invalid(
                "instances.share",
                "false needs replication.exactly_once (--exactly-once): without sharing, only a \
                 transactional id fences an older instance that a new one takes over from"
                    .into(),
            );
        }
        Ok(())
    }
}

/// An [`ConfigError::Invalid`] for a key.
fn invalid<T>(key: &str, reason: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(super) const MINIMAL: &str = r#"
        [source]
        bootstrap_servers = "127.0.0.1:9092"
        [target]
        bootstrap_servers = "127.0.0.1:9093,127.0.0.1:9094"
    "#;

    #[test]
    fn minimal_file_takes_defaults() {
        let config = MirrorConfig::from_toml(MINIMAL).expect("valid");
        assert_eq!(config.name, "kafka-mirror");
        assert_eq!(
            config.target.as_ref().unwrap().bootstrap_list(),
            ["127.0.0.1:9093", "127.0.0.1:9094"]
        );
        assert_eq!(
            config.replication.isolation_level,
            IsolationLevel::ReadCommitted
        );
        assert_eq!(config.replication.start_position, StartPosition::Earliest);
        assert_eq!(config.replication.on_data_loss, DataLossPolicy::Stop);
        assert_eq!(config.replication.transaction_max_in_flight_batches, 32);
        assert_eq!(config.checkpoints.topic, "kafka-mirror-checkpoints");
        assert_eq!(config.instances, InstancesConfig::default());
        assert!(config.instances.share);
        assert_eq!(
            config.instances.session_timeout(),
            std::time::Duration::from_secs(10)
        );
    }

    #[test]
    fn instances_that_do_not_share_need_exactly_once() {
        let text = format!(
            "{MINIMAL}\n[replication]\nexactly_once = true\n\
             [instances]\nshare = false\ninstance_id = \"host-a\"\nsession_timeout_ms = 3000\n"
        );
        let config = MirrorConfig::from_toml(&text).expect("valid");
        assert!(!config.instances.share);
        assert_eq!(config.instances.instance_id.as_deref(), Some("host-a"));
        assert_eq!(config.instances.session_timeout_ms, 3000);
    }

    #[test]
    fn unknown_key_is_named() {
        let text = format!("{MINIMAL}\n[replication]\nin_flight_byte = 5\n");
        let err = MirrorConfig::from_toml(&text).expect_err("unknown key");
        let message = err.to_string();
        assert!(
            message.contains("unknown field `in_flight_byte`"),
            "{message}"
        );
    }

    #[test]
    fn missing_target_is_named() {
        let err = MirrorConfig::from_toml("[source]\nbootstrap_servers = \"a:1\"\n")
            .expect_err("no target");
        assert!(err.to_string().contains("`target`: missing"), "{err}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let cases = [
            ("[topics]\ninclude = \"(\"", "topics.include"),
            ("[topics]\nexclude = \"[\"", "topics.exclude"),
            (
                "[replication]\nreplication_factor = 0",
                "replication.replication_factor",
            ),
            (
                "[replication]\nin_flight_bytes = 10",
                "replication.in_flight_bytes",
            ),
            ("[replication]\nthreads = 0", "replication.threads"),
            (
                "[replication]\ntransaction_max_in_flight_batches = 0",
                "replication.transaction_max_in_flight_batches",
            ),
            (
                "[replication]\nfetchers_per_broker = 0",
                "replication.fetchers_per_broker",
            ),
            (
                "[replication]\nstart_position = \"yesterday\"",
                "key `replication.start_position`: not earliest, latest",
            ),
            (
                "[instances]\nsession_timeout_ms = 0",
                "instances.session_timeout_ms",
            ),
            (
                "[instances]\nrebalance_timeout_ms = 3000000000",
                "instances.rebalance_timeout_ms",
            ),
            ("[instances]\ninstance_id = \" \"", "instances.instance_id"),
            (
                "[instances]\nshare = false",
                "instances.share`: false needs replication.exactly_once",
            ),
        ];
        for (extra, expected) in cases {
            let err = MirrorConfig::from_toml(&format!("{MINIMAL}\n{extra}\n")).expect_err(extra);
            assert!(err.to_string().contains(expected), "{extra}: {err}");
        }
        let err = MirrorConfig::from_toml(
            "[source]\nbootstrap_servers = \"nohost\"\n[target]\nbootstrap_servers = \"b:1\"\n",
        )
        .expect_err("no port");
        assert!(
            err.to_string().contains("source.bootstrap_servers"),
            "{err}"
        );
    }
}
