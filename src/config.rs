//! The mirror's configuration: the TOML file, its defaults, and validation.
//!
//! Every key has a default except the clusters' bootstrap servers, so the
//! smallest useful file names a source and a target. Larger topologies name
//! their clusters and declare flows between them (`flows.rs`). Unknown keys
//! are refused (a typo must not silently fall back to a default), and every
//! error names the key that is wrong and why. The CLI (`cli.rs`) overlays its
//! flags on this.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use regex::Regex;
use serde::Deserialize;

use crate::net::sasl::{Mechanism, SaslOptions, Secret};
use crate::net::tls::{TlsConnector, TlsOptions};
use crate::net::{ConnectionOptions, Connector, FrameMemory, SocketOptions, TokenCommand};
use crate::policy::ReplicationPolicy;
use crate::topics::NOT_COPIED;

pub mod flows;
pub mod mirrormaker;
pub mod properties;

pub use flows::{Flow, FlowConfig};

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
    /// The file is not valid TOML or does not match the schema (unknown key, wrong type).
    #[error("config file {path}: {message}")]
    Parse {
        /// The file's path.
        path: String,
        /// The TOML parser's message, which names the key and its line.
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
    /// A key of a Kafka client properties file cannot be used.
    #[error("properties file {path}: key `{key}`: {reason}")]
    Property {
        /// The file's path.
        path: String,
        /// The Kafka client key, as written in the file.
        key: String,
        /// What is wrong with it (never its value, which may be a secret).
        reason: String,
    },
}

/// The whole configuration of one mirror process: one source into one
/// target, or named clusters and flows between them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MirrorConfig {
    /// Names this mirror's checkpoints. Two processes with the same name resume
    /// from each other's progress; different names replicate independently.
    #[serde(default = "default_name")]
    pub name: String,
    /// The cluster that is read, in a one-flow config.
    #[serde(default)]
    pub source: Option<ClusterConfig>,
    /// The cluster that is written, in a one-flow config.
    #[serde(default)]
    pub target: Option<ClusterConfig>,
    /// Clusters by alias, for `flows` to refer to.
    #[serde(default)]
    pub clusters: BTreeMap<String, ClusterConfig>,
    /// Copies between the `clusters`, each run by its own engine.
    #[serde(default)]
    pub flows: Vec<FlowConfig>,
    /// Which source topics are replicated and how they are named: the
    /// defaults of every flow.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// How data moves.
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// Where progress is stored.
    #[serde(default)]
    pub checkpoints: CheckpointConfig,
}

/// How to reach one cluster.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// `host:port` of one or more brokers, comma-separated; the rest are discovered.
    pub bootstrap_servers: String,
    /// The client id brokers see in their logs and quotas.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// SO_SNDBUF in bytes; 0 leaves it to the OS (autotuning). Raise it on
    /// high-latency links so the TCP window covers the bandwidth-delay product.
    #[serde(default)]
    pub send_buffer_bytes: usize,
    /// SO_RCVBUF in bytes; 0 leaves it to the OS (autotuning).
    #[serde(default)]
    pub receive_buffer_bytes: usize,
    /// Time allowed for a TCP connect.
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// Time allowed for a broker to answer one request before the connection is reset.
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// Largest response frame accepted from this cluster; checked before allocating.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: usize,
    /// TLS to the brokers; absent means plaintext.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// SASL authentication; absent means none.
    #[serde(default)]
    pub sasl: Option<SaslConfig>,
}

/// `[source.tls]`, `[target.tls]`, `[clusters.<alias>.tls]`: TLS to the brokers (rustls).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// On unless set to false, so the section alone turns TLS on.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// PEM CA certificates to trust; the system trust store when absent.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate chain, for mutual TLS (with `key_file`).
    #[serde(default)]
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file`.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// Name to verify and send as SNI instead of each broker's host.
    #[serde(default)]
    pub server_name: Option<String>,
    /// Accept any server certificate. Never in production; warned about on every connect.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

impl Default for TlsConfig {
    /// TLS on, verifying against the system roots.
    fn default() -> Self {
        TlsConfig {
            enabled: true,
            ca_file: None,
            cert_file: None,
            key_file: None,
            server_name: None,
            insecure_skip_verify: false,
        }
    }
}

/// `[source.sasl]`, `[target.sasl]`, `[clusters.<alias>.sasl]`: SASL authentication. With PLAIN and
/// SCRAM, exactly one of `password`, `password_env` and `password_file` gives
/// the password; with OAUTHBEARER, exactly one of `token`, `token_env`,
/// `token_file` and `token_command` gives the token.
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslConfig {
    /// `PLAIN`, `SCRAM-SHA-256`, `SCRAM-SHA-512` or `OAUTHBEARER`.
    pub mechanism: String,
    /// The user to authenticate as (not used with OAUTHBEARER).
    #[serde(default)]
    pub username: String,
    /// The password itself; redacted in `Debug`.
    #[serde(default)]
    pub password: Option<Secret>,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (one trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The OAUTHBEARER token (a JWT) itself; redacted in `Debug`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// The environment variable holding the token.
    #[serde(default)]
    pub token_env: Option<String>,
    /// A file holding the token (one trailing newline is ignored).
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// A command run with `sh -c` before every connection; its trimmed
    /// stdout is the token, so refreshed tokens are picked up.
    #[serde(default)]
    pub token_command: Option<String>,
}

impl fmt::Debug for SaslConfig {
    // By hand, so the password can never reach a log or an error.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslConfig")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "[redacted]"))
            .field("password_env", &self.password_env)
            .field("password_file", &self.password_file)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("token_env", &self.token_env)
            .field("token_file", &self.token_file)
            .field(
                "token_command",
                &self.token_command.as_ref().map(|_| "[set]"),
            )
            .finish()
    }
}

/// Topic selection, naming and lifecycle. Every key is optional: a flow's
/// `topics` table overrides the top-level `[topics]` key by key, which
/// overrides the defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicsConfig {
    /// Topics to replicate: a regex that must match the whole name (default `.*`).
    #[serde(default)]
    pub include: Option<String>,
    /// Topics never replicated even when included: a regex over the whole name.
    #[serde(default)]
    pub exclude: Option<String>,
    /// Internal-looking topics (`__*`, `mm2-*`, `*.internal`, `*-internal`,
    /// heartbeats) that are copied anyway: a regex over the whole name.
    #[serde(default)]
    pub include_internal: Option<String>,
    /// How target topics are named (default `identity`).
    #[serde(default)]
    pub replication_policy: Option<PolicyKind>,
    /// Between source alias and topic with the `prefix` policy (default `.`).
    #[serde(default)]
    pub separator: Option<String>,
    /// The target name with the `template` policy, from `{source}` and `{topic}`.
    #[serde(default)]
    pub topic_template: Option<String>,
    /// How often the source is checked for new topics and partitions and
    /// changed configs (default 10 minutes, as MirrorMaker 2).
    #[serde(default)]
    pub refresh_interval_ms: Option<u64>,
    /// Topic configs never copied, on top of the built-in list: settings the
    /// target keeps its own.
    #[serde(default)]
    pub never_copy_configs: Option<Vec<String>>,
}

/// `topics.replication_policy`: the kinds of [`ReplicationPolicy`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PolicyKind {
    /// Same names as on the source.
    Identity,
    /// `<source alias><separator><topic>`, as MirrorMaker 2.
    Prefix,
    /// `topic_template`.
    Template,
}

/// Where a partition with no checkpoint starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartPosition {
    /// The source's log start: copy everything it still holds.
    Earliest,
    /// The source's log end: copy only what arrives from now on.
    Latest,
    /// The first offset whose timestamp is at or after this many ms since the epoch.
    Timestamp(i64),
}

/// What to do when data the mirror never copied is gone from the source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DataLossPolicy {
    /// Stop the partition and report the lost range; an operator decides.
    Stop,
    /// Report the lost range, count it, and continue from the source's log start.
    Continue,
}

/// What to do with a batch the target refuses because of its own topic
/// settings: larger than its `max.message.bytes`, a timestamp outside its
/// `message.timestamp.*.max.ms`, a null key on a compacted topic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RefusedBatchPolicy {
    /// Stop the partition with the target's reason; an operator changes the
    /// target topic's settings and restarts.
    Stop,
    /// Skip the batch, log its source offsets and count it in the summary.
    Skip,
}

/// Which source records are visible to the mirror.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IsolationLevel {
    /// Only committed transactional data (and all non-transactional data) is copied.
    ReadCommitted,
    /// Everything, including open and aborted transactions, is copied as plain data.
    ReadUncommitted,
}

impl IsolationLevel {
    /// The value of the Fetch and ListOffsets `isolation_level` field.
    pub fn wire_value(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

/// How data moves from source to target.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicationConfig {
    /// `read_committed` (default) or `read_uncommitted`.
    #[serde(default = "default_isolation")]
    pub isolation_level: IsolationLevel,
    /// `earliest` (default), `latest`, or a timestamp in ms since the epoch.
    #[serde(default = "default_start", deserialize_with = "deserialize_start")]
    pub start_position: StartPosition,
    /// Bytes of source data held in memory at most: fetched and not yet
    /// checkpointed. This one number bounds memory whatever the two clusters' speeds,
    /// and bounds what a restart after a crash sends again.
    #[serde(default = "default_in_flight_bytes")]
    pub in_flight_bytes: usize,
    /// Largest Fetch response asked of one source broker.
    #[serde(default = "default_fetch_max_bytes")]
    pub fetch_max_bytes: usize,
    /// Largest slice of one partition in one Fetch response.
    #[serde(default = "default_partition_fetch_bytes")]
    pub partition_fetch_bytes: usize,
    /// How long a source broker may hold a Fetch waiting for new data.
    #[serde(default = "default_fetch_max_wait_ms")]
    pub fetch_max_wait_ms: u64,
    /// Fetches in flight at once per source broker, each for its own share of
    /// the partitions, on its own connection and fetch session (like Kafka's
    /// `num.replica.fetchers`). Unset, the count adapts: one on a LAN, more
    /// while a long round trip leaves the link idle (up to 8; see
    /// `pipeline/fetch_window.rs`), each adding `fetch_max_bytes` to the
    /// memory budget, up to four times `in_flight_bytes`. Set, it is fixed
    /// and the budget is `in_flight_bytes` alone.
    #[serde(default)]
    pub fetchers_per_broker: Option<usize>,
    /// Produce requests in flight per target broker connection.
    #[serde(default = "default_max_in_flight_requests")]
    pub max_in_flight_requests: usize,
    /// Replication factor of created target topics; -1 takes the broker's default.
    #[serde(default = "default_replication_factor")]
    pub replication_factor: i16,
    /// `stop` (default) or `continue` when uncopied data is gone from the source.
    #[serde(default = "default_data_loss")]
    pub on_data_loss: DataLossPolicy,
    /// `stop` (default) or `skip` when the target refuses a batch for its topic settings.
    #[serde(default = "default_refused_batch")]
    pub on_refused_batch: RefusedBatchPolicy,
    /// Time allowed at shutdown for in-flight batches to land before exiting.
    #[serde(default = "default_shutdown_timeout_ms")]
    pub shutdown_timeout_ms: u64,
    /// Threads that run the pipeline. One forwards well over 1 GB/s of
    /// plain TCP, and a second costs more in thread wakeups than it gives
    /// (measured: 1.36 against 1.05 CPU s per GB); raise it for TLS at high rates.
    #[serde(default = "default_threads")]
    pub threads: usize,
}

/// Where progress is stored.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointConfig {
    /// The compacted topic on the target cluster that holds the checkpoints.
    #[serde(default = "default_checkpoint_topic")]
    pub topic: String,
    /// Shortest time between two checkpoint writes.
    #[serde(default = "default_checkpoint_interval_ms")]
    pub interval_ms: u64,
}

fn default_name() -> String {
    "kafka-mirror".to_owned()
}
fn default_true() -> bool {
    true
}
fn default_client_id() -> String {
    "kafka-mirror".to_owned()
}
fn default_connect_timeout_ms() -> u64 {
    10_000
}
fn default_request_timeout_ms() -> u64 {
    30_000
}
fn default_max_frame_bytes() -> usize {
    128 * 1024 * 1024
}
fn default_isolation() -> IsolationLevel {
    IsolationLevel::ReadCommitted
}
fn default_start() -> StartPosition {
    StartPosition::Earliest
}
fn default_in_flight_bytes() -> usize {
    24 * 1024 * 1024
}
fn default_fetch_max_bytes() -> usize {
    6 * 1024 * 1024
}
fn default_partition_fetch_bytes() -> usize {
    1024 * 1024
}
fn default_fetch_max_wait_ms() -> u64 {
    500
}
fn default_max_in_flight_requests() -> usize {
    5
}
fn default_replication_factor() -> i16 {
    -1
}
fn default_data_loss() -> DataLossPolicy {
    DataLossPolicy::Stop
}
fn default_refused_batch() -> RefusedBatchPolicy {
    RefusedBatchPolicy::Stop
}
fn default_shutdown_timeout_ms() -> u64 {
    30_000
}
fn default_threads() -> usize {
    1
}
fn default_checkpoint_topic() -> String {
    "kafka-mirror-checkpoints".to_owned()
}
fn default_checkpoint_interval_ms() -> u64 {
    100
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        ReplicationConfig {
            isolation_level: default_isolation(),
            start_position: default_start(),
            in_flight_bytes: default_in_flight_bytes(),
            fetch_max_bytes: default_fetch_max_bytes(),
            partition_fetch_bytes: default_partition_fetch_bytes(),
            fetch_max_wait_ms: default_fetch_max_wait_ms(),
            fetchers_per_broker: None,
            max_in_flight_requests: default_max_in_flight_requests(),
            replication_factor: default_replication_factor(),
            on_data_loss: default_data_loss(),
            on_refused_batch: default_refused_batch(),
            shutdown_timeout_ms: default_shutdown_timeout_ms(),
            threads: default_threads(),
        }
    }
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            topic: default_checkpoint_topic(),
            interval_ms: default_checkpoint_interval_ms(),
        }
    }
}

impl ClusterConfig {
    /// A cluster reached through these bootstrap servers, every other setting at its default.
    pub fn new(bootstrap_servers: impl Into<String>) -> Self {
        ClusterConfig {
            bootstrap_servers: bootstrap_servers.into(),
            client_id: default_client_id(),
            send_buffer_bytes: 0,
            receive_buffer_bytes: 0,
            connect_timeout_ms: default_connect_timeout_ms(),
            request_timeout_ms: default_request_timeout_ms(),
            max_frame_bytes: default_max_frame_bytes(),
            tls: None,
            sasl: None,
        }
    }

    /// The bootstrap servers as a list, in the order given.
    pub fn bootstrap_list(&self) -> Vec<String> {
        self.bootstrap_servers
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The connection settings the network layer takes.
    pub fn connection_options(&self) -> ConnectionOptions {
        ConnectionOptions {
            client_id: self.client_id.clone(),
            socket: SocketOptions {
                send_buffer_bytes: (self.send_buffer_bytes > 0).then_some(self.send_buffer_bytes),
                recv_buffer_bytes: (self.receive_buffer_bytes > 0)
                    .then_some(self.receive_buffer_bytes),
                connect_timeout: Duration::from_millis(self.connect_timeout_ms),
                ..SocketOptions::default()
            },
            max_frame_bytes: self.max_frame_bytes,
            request_timeout: Duration::from_millis(self.request_timeout_ms),
            frame_memory: FrameMemory::default(),
        }
    }
}

impl ClusterConfig {
    /// How this cluster's connections are opened: reads the TLS files and
    /// the password. `side` is `source` or `target`, for error messages.
    pub fn connector(&self, side: &str) -> Result<Connector, ConfigError> {
        let invalid = |key: &str, reason: String| ConfigError::Invalid {
            key: format!("{side}.{key}"),
            reason,
        };
        let tls = match &self.tls {
            Some(tls) if tls.enabled => Some(
                TlsConnector::new(&TlsOptions {
                    ca_file: tls.ca_file.clone(),
                    cert_file: tls.cert_file.clone(),
                    key_file: tls.key_file.clone(),
                    server_name: tls.server_name.clone(),
                    insecure_skip_verify: tls.insecure_skip_verify,
                })
                .map_err(|e| invalid("tls", e.to_string()))?,
            ),
            _ => None,
        };
        let sasl = match &self.sasl {
            None => None,
            Some(sasl) => Some(SaslOptions {
                mechanism: sasl_mechanism(sasl).map_err(|r| invalid("sasl.mechanism", r))?,
                username: sasl.username.clone(),
                password: match sasl.token_command {
                    // Run before every connection, by the connector.
                    Some(_) => Secret::new(""),
                    None => sasl.resolve_secret(side)?,
                },
            }),
        };
        let token_command = self
            .sasl
            .as_ref()
            .and_then(|sasl| sasl.token_command.clone())
            .map(|command| TokenCommand {
                key: format!("{side}.sasl.token_command"),
                command,
            });
        Ok(Connector::plain(self.connection_options())
            .secured(tls, sasl)
            .with_token_command(token_command))
    }

    /// Checks what needs no network or file access; `side` (`source`,
    /// `target` or `clusters.<alias>`) prefixes the keys in errors.
    pub fn validate(&self, side: &str) -> Result<(), ConfigError> {
        let key = format!("{side}.bootstrap_servers");
        let servers = self.bootstrap_list();
        if servers.is_empty() {
            return invalid(&key, "needs at least one host:port".into());
        }
        for server in servers {
            let port_ok = server
                .rsplit_once(':')
                .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if !port_ok {
                return invalid(&key, format!("`{server}` is not host:port"));
            }
        }
        if self.max_frame_bytes < 1024 * 1024 {
            return invalid(
                &format!("{side}.max_frame_bytes"),
                "must be at least 1 MiB".into(),
            );
        }
        self.validate_security(side)
    }

    /// Checks the TLS and SASL keys that need no file access.
    fn validate_security(&self, side: &str) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| {
            Err(ConfigError::Invalid {
                key: format!("{side}.{key}"),
                reason: reason.to_owned(),
            })
        };
        if let Some(tls) = &self.tls {
            if tls.cert_file.is_some() != tls.key_file.is_some() {
                return invalid(
                    "tls.cert_file",
                    "cert_file and key_file must be set together",
                );
            }
            if tls.insecure_skip_verify && tls.ca_file.is_some() {
                return invalid(
                    "tls.insecure_skip_verify",
                    "contradicts tls.ca_file: a CA file is only used to verify",
                );
            }
        }
        if let Some(sasl) = &self.sasl {
            let mechanism = match sasl_mechanism(sasl) {
                Ok(mechanism) => mechanism,
                Err(reason) => return invalid("sasl.mechanism", &reason),
            };
            let passwords = [
                sasl.password.is_some(),
                sasl.password_env.is_some(),
                sasl.password_file.is_some(),
            ];
            let tokens = [
                sasl.token.is_some(),
                sasl.token_env.is_some(),
                sasl.token_file.is_some(),
                sasl.token_command.is_some(),
            ];
            let count = |set: &[bool]| set.iter().filter(|set| **set).count();
            if mechanism == Mechanism::OAuthBearer {
                if !sasl.username.is_empty() || count(&passwords) != 0 {
                    return invalid(
                        "sasl.username",
                        "OAUTHBEARER takes a token (token, token_env, token_file or token_command), no username or password",
                    );
                }
                if sasl
                    .token_command
                    .as_ref()
                    .is_some_and(|c| c.trim().is_empty())
                {
                    return invalid("sasl.token_command", "must be a non-empty command");
                }
                if count(&tokens) != 1 {
                    return invalid(
                        "sasl.token",
                        "set exactly one of token, token_env, token_file, token_command",
                    );
                }
            } else {
                if sasl.username.is_empty() {
                    return invalid("sasl.username", "must be non-empty");
                }
                if count(&tokens) != 0 {
                    return invalid("sasl.token", "only OAUTHBEARER takes a token");
                }
                if count(&passwords) != 1 {
                    return invalid(
                        "sasl.password",
                        "set exactly one of password, password_env, password_file",
                    );
                }
            }
        }
        Ok(())
    }
}

fn sasl_mechanism(sasl: &SaslConfig) -> Result<Mechanism, String> {
    Mechanism::from_name(&sasl.mechanism).ok_or_else(|| {
        format!(
            "`{}` is not PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 or OAUTHBEARER",
            sasl.mechanism
        )
    })
}

impl SaslConfig {
    /// The password, or the OAUTHBEARER token, from wherever it is
    /// configured. Errors name the key, the variable or the file, never the value.
    fn resolve_secret(&self, side: &str) -> Result<Secret, ConfigError> {
        let (kind, value, env, file) =
            if self.token.is_some() || self.token_env.is_some() || self.token_file.is_some() {
                ("token", &self.token, &self.token_env, &self.token_file)
            } else {
                (
                    "password",
                    &self.password,
                    &self.password_env,
                    &self.password_file,
                )
            };
        let invalid = |key: String, reason: String| ConfigError::Invalid {
            key: format!("{side}.sasl.{key}"),
            reason,
        };
        if let Some(secret) = value {
            return Ok(secret.clone());
        }
        if let Some(var) = env {
            return std::env::var(var).map(Secret::new).map_err(|e| {
                invalid(
                    format!("{kind}_env"),
                    format!("environment variable {var}: {e}"),
                )
            });
        }
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|e| {
                invalid(
                    format!("{kind}_file"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            let secret = text.strip_suffix('\n').unwrap_or(&text);
            let secret = secret.strip_suffix('\r').unwrap_or(secret);
            return Ok(Secret::new(secret));
        }
        Err(invalid(
            kind.to_owned(),
            format!("set one of {kind}, {kind}_env, {kind}_file"),
        ))
    }
}

impl MirrorConfig {
    /// A mirror between two clusters with every other setting at its default.
    pub fn new(source: ClusterConfig, target: ClusterConfig) -> Self {
        MirrorConfig {
            name: default_name(),
            source: Some(source),
            target: Some(target),
            clusters: BTreeMap::new(),
            flows: Vec::new(),
            topics: TopicsConfig::default(),
            replication: ReplicationConfig::default(),
            checkpoints: CheckpointConfig::default(),
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
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            message: e.to_string(),
        })
    }

    /// Parses and validates TOML text.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let config: MirrorConfig = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: "<text>".to_owned(),
            message: e.to_string(),
        })?;
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
        if self.checkpoints.topic.is_empty() {
            return invalid("checkpoints.topic", "must be non-empty".into());
        }
        self.flows().map(|_| ())
    }
}

/// An [`ConfigError::Invalid`] for a key.
fn invalid<T>(key: &str, reason: String) -> Result<T, ConfigError> {
    Err(ConfigError::Invalid {
        key: key.to_owned(),
        reason,
    })
}

/// Default of `topics.refresh_interval_ms`: MirrorMaker 2's `refresh.topics.interval.seconds`.
const DEFAULT_TOPIC_REFRESH: Duration = Duration::from_secs(600);

/// What a [`TopicsConfig`] resolves to.
#[derive(Debug)]
struct ResolvedTopics {
    filter: TopicFilter,
    policy: ReplicationPolicy,
    refresh_interval: Duration,
    never_copy_configs: Vec<String>,
}

impl TopicsConfig {
    /// These settings, with `defaults` filling in the keys not set here.
    fn over(&self, defaults: &TopicsConfig) -> TopicsConfig {
        TopicsConfig {
            include: self.include.clone().or_else(|| defaults.include.clone()),
            exclude: self.exclude.clone().or_else(|| defaults.exclude.clone()),
            include_internal: self
                .include_internal
                .clone()
                .or_else(|| defaults.include_internal.clone()),
            replication_policy: self.replication_policy.or(defaults.replication_policy),
            separator: self
                .separator
                .clone()
                .or_else(|| defaults.separator.clone()),
            topic_template: self
                .topic_template
                .clone()
                .or_else(|| defaults.topic_template.clone()),
            refresh_interval_ms: self.refresh_interval_ms.or(defaults.refresh_interval_ms),
            never_copy_configs: self
                .never_copy_configs
                .clone()
                .or_else(|| defaults.never_copy_configs.clone()),
        }
    }

    /// The include regex as written, `.*` by default.
    pub fn include_pattern(&self) -> &str {
        self.include.as_deref().unwrap_or(".*")
    }

    /// Compiles and checks the settings; `key` (`topics` or `flows[i].topics`)
    /// prefixes the errors.
    fn resolve(&self, key: &str, checkpoint_topic: &str) -> Result<ResolvedTopics, ConfigError> {
        let anchored = |name: &str, pattern: &str| {
            Regex::new(&format!("^(?:{pattern})$")).map_err(|e| ConfigError::Invalid {
                key: format!("{key}.{name}"),
                reason: format!("not a valid regex: {e}"),
            })
        };
        let filter = TopicFilter {
            include: anchored("include", self.include_pattern())?,
            exclude: self
                .exclude
                .as_deref()
                .map(|p| anchored("exclude", p))
                .transpose()?,
            include_internal: self
                .include_internal
                .as_deref()
                .map(|p| anchored("include_internal", p))
                .transpose()?,
            checkpoint_topic: checkpoint_topic.to_owned(),
        };
        let separator = self.separator.as_deref().unwrap_or(".");
        let policy = match self.replication_policy.unwrap_or(PolicyKind::Identity) {
            PolicyKind::Identity => Ok(ReplicationPolicy::identity()),
            PolicyKind::Prefix => ReplicationPolicy::prefix(separator)
                .map_err(|reason| (format!("{key}.separator"), reason)),
            PolicyKind::Template => match &self.topic_template {
                Some(text) => ReplicationPolicy::template(text)
                    .map_err(|reason| (format!("{key}.topic_template"), reason)),
                None => Err((
                    format!("{key}.topic_template"),
                    "required with replication_policy = \"template\", e.g. \"{source}.{topic}\""
                        .to_owned(),
                )),
            },
        }
        .map_err(|(key, reason)| ConfigError::Invalid { key, reason })?;
        let refresh_interval = match self.refresh_interval_ms {
            None => DEFAULT_TOPIC_REFRESH,
            Some(ms) if ms >= 100 => Duration::from_millis(ms),
            Some(_) => {
                return invalid(
                    &format!("{key}.refresh_interval_ms"),
                    "must be at least 100".into(),
                )
            }
        };
        let mut never_copy_configs: Vec<String> =
            NOT_COPIED.iter().map(|name| (*name).to_owned()).collect();
        never_copy_configs.extend(self.never_copy_configs.iter().flatten().cloned());
        Ok(ResolvedTopics {
            filter,
            policy,
            refresh_interval,
            never_copy_configs,
        })
    }
}

/// Decides which source topics are replicated.
#[derive(Debug, Clone)]
pub struct TopicFilter {
    include: Regex,
    exclude: Option<Regex>,
    include_internal: Option<Regex>,
    checkpoint_topic: String,
}

impl TopicFilter {
    /// Whether the topic is copied. Topics the broker calls internal
    /// (`__consumer_offsets`, `__transaction_state`) and the mirror's own
    /// checkpoint topic never are: copying them would corrupt the target's
    /// group and transaction state, or feed a mirror its own progress. Other
    /// internal-looking topics (see [`looks_internal`]) only when
    /// `include_internal` names them.
    pub fn selects(&self, topic: &str, internal: bool) -> bool {
        if internal || topic == self.checkpoint_topic {
            return false;
        }
        if looks_internal(topic)
            && !self
                .include_internal
                .as_ref()
                .is_some_and(|r| r.is_match(topic))
        {
            return false;
        }
        self.include.is_match(topic) && !self.exclude.as_ref().is_some_and(|e| e.is_match(topic))
    }
}

/// Topics that hold some system's own state rather than data, by the naming
/// conventions MirrorMaker 2 also skips: Kafka's `__*`, MirrorMaker 2's
/// `mm2-*` and `*.internal`/`*-internal` (its checkpoints, offset syncs and
/// the Connect topics of its dedicated mode), and its heartbeats.
pub fn looks_internal(topic: &str) -> bool {
    topic.starts_with("__")
        || topic.starts_with("mm2-")
        || topic.ends_with(".internal")
        || topic.ends_with("-internal")
        || topic == "heartbeats"
        || topic.ends_with(".heartbeats")
}

fn deserialize_start<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StartPosition, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Word(String),
        Millis(i64),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(StartPosition::Timestamp(ms)),
        Raw::Word(word) => parse_start_position(&word).map_err(serde::de::Error::custom),
    }
}

/// Parses `earliest`, `latest` or a timestamp in ms since the epoch.
pub fn parse_start_position(text: &str) -> Result<StartPosition, String> {
    match text {
        "earliest" => Ok(StartPosition::Earliest),
        "latest" => Ok(StartPosition::Latest),
        other => other
            .parse::<i64>()
            .ok()
            .filter(|ms| *ms >= 0)
            .map(StartPosition::Timestamp)
            .ok_or_else(|| {
                format!("`{other}` is not earliest, latest or a timestamp in ms since the epoch")
            }),
    }
}

impl ReplicationConfig {
    /// How long a source broker may hold a Fetch.
    pub fn fetch_max_wait(&self) -> Duration {
        Duration::from_millis(self.fetch_max_wait_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
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
        assert_eq!(config.checkpoints.topic, "kafka-mirror-checkpoints");
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
                "[replication]\nfetchers_per_broker = 0",
                "replication.fetchers_per_broker",
            ),
            ("[replication]\nstart_position = \"yesterday\"", "yesterday"),
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

    #[test]
    fn start_position_forms() {
        assert_eq!(parse_start_position("latest"), Ok(StartPosition::Latest));
        assert_eq!(
            parse_start_position("1700000000000"),
            Ok(StartPosition::Timestamp(1_700_000_000_000))
        );
        let text = format!("{MINIMAL}\n[replication]\nstart_position = 42\n");
        let config = MirrorConfig::from_toml(&text).expect("valid");
        assert_eq!(
            config.replication.start_position,
            StartPosition::Timestamp(42)
        );
    }

    #[test]
    fn filter_is_anchored_and_skips_internal_topics() {
        let text = format!(
            "{MINIMAL}\n[topics]\ninclude = \"orders.*|payments\"\nexclude = \"orders-internal\"\n"
        );
        let filter = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows")[0]
            .filter
            .clone();
        assert!(filter.selects("orders", false));
        assert!(filter.selects("orders.eu", false));
        assert!(!filter.selects("orders-internal", false));
        assert!(filter.selects("payments", false));
        assert!(!filter.selects("payments2", false));
        assert!(!filter.selects("orders.x", true));
        let all = MirrorConfig::from_toml(MINIMAL)
            .expect("valid")
            .flows()
            .expect("flows")[0]
            .filter
            .clone();
        assert!(!all.selects("__consumer_offsets", false));
        assert!(!all.selects("kafka-mirror-checkpoints", false));
        assert!(all.selects("anything", false));
        for internal in [
            "__schemas",
            "mm2-offset-syncs.b.internal",
            "eu.checkpoints.internal",
            "connect-internal",
            "heartbeats",
            "eu.heartbeats",
        ] {
            assert!(!all.selects(internal, false), "{internal}");
        }
        let text = format!("{MINIMAL}\n[topics]\ninclude_internal = \"heartbeats|__.*\"\n");
        let explicit = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows")[0]
            .filter
            .clone();
        assert!(explicit.selects("heartbeats", false));
        assert!(explicit.selects("__schemas", false));
        assert!(!explicit.selects("eu.heartbeats", false));
        // The broker's own internal topics and the checkpoints: never.
        assert!(!explicit.selects("__consumer_offsets", true));
        assert!(!explicit.selects("kafka-mirror-checkpoints", false));
    }

    #[test]
    fn security_sections_parse_and_never_show_the_password() {
        let text = format!(
            "{MINIMAL}\n[source.tls]\nca_file = \"/etc/ca.pem\"\n\
             [source.sasl]\nmechanism = \"SCRAM-SHA-512\"\nusername = \"mirror\"\npassword = \"s3cr3t-pw-123\"\n"
        );
        let config = MirrorConfig::from_toml(&text).expect("valid");
        let tls = config.source.as_ref().unwrap().tls.as_ref().expect("tls");
        assert!(tls.enabled && !tls.insecure_skip_verify);
        let debug = format!("{config:?}");
        assert!(!debug.contains("s3cr3t-pw-123"), "{debug}");
        assert!(debug.contains("[redacted]"), "{debug}");
        // The CA file is read when connecting; its absence names the key and the file.
        let err = config
            .source
            .as_ref()
            .unwrap()
            .connector("source")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("source.tls") && err.contains("/etc/ca.pem"),
            "{err}"
        );
        assert!(!err.contains("s3cr3t-pw-123"), "{err}");
    }

    #[test]
    fn password_sources_are_exclusive_and_named() {
        let sasl = |extra: &str| {
            format!("{MINIMAL}\n[target.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\n{extra}\n")
        };
        let err = MirrorConfig::from_toml(&sasl("password = \"a\"\npassword_env = \"B\""))
            .expect_err("two sources");
        assert!(err.to_string().contains("target.sasl.password"), "{err}");
        let err = MirrorConfig::from_toml(&sasl("")).expect_err("none");
        assert!(err.to_string().contains("exactly one"), "{err}");
        let err = MirrorConfig::from_toml(&format!(
            "{MINIMAL}\n[target.sasl]\nmechanism = \"GSSAPI\"\nusername = \"u\"\npassword = \"p\"\n"
        ))
        .expect_err("mechanism");
        assert!(err.to_string().contains("target.sasl.mechanism"), "{err}");
        let config =
            MirrorConfig::from_toml(&sasl("password_env = \"KAFKA_MIRROR_TEST_UNSET_VARIABLE\""))
                .expect("valid");
        let err = config
            .target
            .as_ref()
            .unwrap()
            .connector("target")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("target.sasl.password_env")
                && err.contains("KAFKA_MIRROR_TEST_UNSET_VARIABLE"),
            "{err}"
        );
        let file = std::env::temp_dir().join(format!("km-pw-{}", std::process::id()));
        std::fs::write(&file, "from-file\n").unwrap();
        let config =
            MirrorConfig::from_toml(&sasl(&format!("password_file = \"{}\"", file.display())))
                .expect("valid");
        let password = config
            .target
            .as_ref()
            .unwrap()
            .sasl
            .as_ref()
            .unwrap()
            .resolve_secret("target");
        assert_eq!(password.unwrap().expose(), "from-file");
        let _ = std::fs::remove_file(file);
        let err = MirrorConfig::from_toml(&format!("{MINIMAL}\n[source.tls]\ncafile = \"x\"\n"))
            .expect_err("unknown");
        assert!(err.to_string().contains("unknown field `cafile`"), "{err}");
    }

    #[test]
    fn oauthbearer_takes_a_token_and_nothing_else() {
        let sasl = |body: &str| {
            MirrorConfig::from_toml(&format!(
                "{MINIMAL}\n[source.sasl]\nmechanism = \"OAUTHBEARER\"\n{body}\n"
            ))
        };
        let config = sasl("token = \"eyJhbGciOiJub25lIn0.e30.\"").expect("valid");
        assert!(!format!("{config:?}").contains("eyJhbGci"));
        let password = config
            .source
            .as_ref()
            .unwrap()
            .sasl
            .as_ref()
            .unwrap()
            .resolve_secret("source");
        assert_eq!(password.unwrap().expose(), "eyJhbGciOiJub25lIn0.e30.");
        for (body, key) in [
            ("", "source.sasl.token"),
            ("token = \"t\"\nusername = \"u\"", "source.sasl.username"),
            ("password = \"p\"", "source.sasl.username"),
        ] {
            let err = sasl(body).expect_err(body).to_string();
            assert!(err.contains(key), "{body}: {err}");
        }
        let err = MirrorConfig::from_toml(&format!(
            "{MINIMAL}\n[source.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\ntoken = \"t\"\n"
        ))
        .expect_err("token with PLAIN")
        .to_string();
        assert!(err.contains("only OAUTHBEARER takes a token"), "{err}");
    }

    #[test]
    fn a_token_command_is_one_of_the_token_sources() {
        let sasl = |body: &str| {
            MirrorConfig::from_toml(&format!(
                "{MINIMAL}\n[source.sasl]\nmechanism = \"OAUTHBEARER\"\n{body}\n"
            ))
        };
        let config = sasl("token_command = \"get-token --secret=hunter2\"").expect("valid");
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter2"), "{debug}");
        let connector = config
            .source
            .as_ref()
            .unwrap()
            .connector("source")
            .expect("no file to read");
        assert!(!format!("{connector:?}").contains("hunter2"));
        for body in [
            "token_command = \"a\"\ntoken = \"t\"",
            "token_command = \"a\"\ntoken_file = \"/t\"",
        ] {
            let err = sasl(body).expect_err(body).to_string();
            assert!(
                err.contains("source.sasl.token") && err.contains("exactly one"),
                "{err}"
            );
        }
        let err = sasl("token_command = \" \"")
            .expect_err("empty")
            .to_string();
        assert!(err.contains("source.sasl.token_command"), "{err}");
        let err = MirrorConfig::from_toml(&format!(
            "{MINIMAL}\n[source.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"p\"\ntoken_command = \"t\"\n"
        ))
        .expect_err("token command with PLAIN")
        .to_string();
        assert!(err.contains("only OAUTHBEARER takes a token"), "{err}");
    }
}
