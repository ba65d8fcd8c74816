//! The configuration file's schema: every table and key, what it means, and
//! its default. Only what serde can check is checked here (types, unknown
//! keys); the checks across keys are in `mod.rs`, `cluster.rs`, `topics.rs`,
//! `groups.rs` and `flows.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::{ByteRate, FlowConfig};

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
    /// Which consumer groups' committed offsets are translated onto the
    /// target, and how often: the defaults of every flow. Off unless
    /// `include` is set.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// Whether the ACLs of the copied topics and synced groups are copied
    /// onto the target. Off by default.
    #[serde(default)]
    pub acls: AclsConfig,
    /// How data moves.
    #[serde(default)]
    pub replication: ReplicationConfig,
    /// Where progress is stored.
    #[serde(default)]
    pub checkpoints: CheckpointConfig,
    /// How instances started with the same name share the work.
    #[serde(default)]
    pub instances: InstancesConfig,
    /// Limits on the whole process, across its flows.
    #[serde(default)]
    pub process: ProcessConfig,
    /// The HTTP endpoint: health, readiness, status, metrics.
    #[serde(default)]
    pub http: HttpConfig,
}

/// `[process]`: limits on the whole process, shared by all its flows.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessConfig {
    /// Source bytes fetched per second by all flows together (`50MB`,
    /// `40MiB`, `400Mbit`, or bytes); unset, no limit. Each flow's own
    /// `replication.max_bytes_per_sec` applies as well.
    #[serde(default)]
    pub max_bytes_per_sec: Option<ByteRate>,
}

/// The HTTP endpoint (`[http]`), off unless `listen` is set. It has no
/// authentication: bind it to a trusted address.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// `host:port` to serve on (`--http`).
    #[serde(default)]
    pub listen: Option<String>,
    /// Whether `POST /flows/NAME/pause` and `/resume` are served.
    #[serde(default)]
    pub control: bool,
    /// Metrics per partition; off for very many partitions (the per-topic
    /// aggregates stay).
    #[serde(default = "default_true")]
    pub partition_metrics: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: None,
            control: false,
            partition_metrics: true,
        }
    }
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
    pub password: Option<SecretString>,
    /// The environment variable holding the password.
    #[serde(default)]
    pub password_env: Option<String>,
    /// A file holding the password (one trailing newline is ignored).
    #[serde(default)]
    pub password_file: Option<PathBuf>,
    /// The OAUTHBEARER token (a JWT) itself; redacted in `Debug`.
    #[serde(default)]
    pub token: Option<SecretString>,
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

/// Consumer group offset sync: which groups' committed source offsets are
/// translated and committed on the target. Every key is optional: a flow's
/// `groups` table overrides the top-level `[groups]` key by key. No group is
/// synced unless `include` is set, since moving a group's offsets on the
/// target is the operator's decision.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupsConfig {
    /// Groups to sync: a regex that must match the whole group id. Unset, none are.
    #[serde(default)]
    pub include: Option<String>,
    /// Groups never synced even when included: a regex over the whole group id.
    #[serde(default)]
    pub exclude: Option<String>,
    /// How often the groups' offsets are synced (default 10 s; at least 1 ms).
    #[serde(default)]
    pub sync_interval_ms: Option<u64>,
    /// Whether each sync also writes MirrorMaker 2's checkpoints of the
    /// synced groups, for tools that read them (default true).
    #[serde(default)]
    pub mm2_checkpoints: Option<bool>,
}

/// `[acls]`: ACL sync, for every flow but where a flow's own `acls` table
/// sets a key (`[[flows]]` `acls = { sync = true }`). Sync creates on the target
/// the source's ACLs (literal and prefixed) on the topics a flow copies,
/// renamed as the topics are, and on the groups it syncs, never broader
/// than the source's; see [`crate::acls`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AclsConfig {
    /// Copy ACLs at start and every `topics.refresh_interval_ms` (default false).
    #[serde(default)]
    pub sync: bool,
    /// Also copy ALLOW ACLs that let a principal change a copied topic
    /// (WRITE, ALL, CREATE, DELETE, ALTER, ALTER_CONFIGS). Off by default,
    /// as MirrorMaker 2: only the mirror writes its copies, and ALL becomes READ.
    #[serde(default)]
    pub copy_write: bool,
    /// Delete target ACLs on the copied topics and synced groups that the
    /// source no longer has (default false).
    #[serde(default)]
    pub prune: bool,
}

/// `topics.replication_policy`: the kinds of [`ReplicationPolicy`](crate::policy::ReplicationPolicy).
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
    /// `num.replica.fetchers`). Unset, the count adapts: one on a LAN; across
    /// a long round trip it starts at the link's bandwidth-delay product's
    /// worth and probes on while the link stays idle (up to 8; see
    /// `pipeline/fetch_window.rs`); each Fetch of a window the link opened
    /// (each added one on a LAN) adds `fetch_max_bytes` to the memory
    /// budget, up to four times
    /// `in_flight_bytes`, and each added Fetch one more
    /// `partition_fetch_bytes` to what a partition may bring per Fetch. Set,
    /// it is fixed, the budget is `in_flight_bytes` alone and a partition's
    /// share is `partition_fetch_bytes`.
    #[serde(default)]
    pub fetchers_per_broker: Option<usize>,
    /// Produce requests in flight per target broker connection (in
    /// exactly-once mode, at least `transaction_max_in_flight_batches`).
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
    /// Copy exactly once: each instance writes through a transactional
    /// producer whose transactional id comes from the mirror's name, and
    /// commits the data and the checkpoints that cover it in one target
    /// transaction. A second instance of the same name fences the first.
    #[serde(default)]
    pub exactly_once: bool,
    /// Exactly-once: how long a transaction stays open under load before it
    /// is committed, and at least ten round trips to the target (a commit
    /// stops sending for about three); committed at once when caught up.
    /// About what a read_committed consumer of the target waits under load.
    #[serde(default = "default_transaction_interval_ms")]
    pub transaction_interval_ms: u64,
    /// Exactly-once: how long the target lets a transaction of ours stay
    /// open before aborting it (`transaction.timeout.ms`, at most the
    /// broker's `transaction.max.timeout.ms`). A crashed instance's open
    /// transaction holds read_committed consumers back this long, unless a
    /// restart aborts it sooner. 10 s, as Kafka Streams: a commit is due
    /// every `transaction_interval_ms`, so only a stuck one comes near it.
    #[serde(default = "default_transaction_timeout_ms")]
    pub transaction_timeout_ms: u64,
    /// Exactly-once: batches of one partition in flight to the target at
    /// once. The idempotent mode's limit of 5 is the broker's duplicate
    /// window: a batch whose answer was lost is resent and the broker
    /// recognises it. A transaction fails instead (aborted and copied again
    /// from its committed checkpoints), so it may go deeper, and a partition
    /// moves this many batches per round trip: 32 batches of 40 KB (the
    /// bench's average) per 200 ms is 6.4 MB/s per partition, 150 MB/s over
    /// 24 partitions. A target broker connection then carries as many
    /// Produce requests at once (one batch of a partition each), if
    /// `max_in_flight_requests` is lower. Memory stays within the budget.
    /// Without `exactly_once`, the limit is 5 whatever this says.
    #[serde(default = "default_transaction_max_in_flight_batches")]
    pub transaction_max_in_flight_batches: usize,
    /// Source bytes each flow fetches per second at most (`50MB`, `40MiB`,
    /// `400Mbit`, or bytes): a token bucket in front of its Fetches, so a
    /// copy over a shared link leaves the rest of it to other traffic and
    /// memory stays within the budget while it waits. Unset, no limit. A
    /// flow's `replication` table overrides it for that flow.
    #[serde(default)]
    pub max_bytes_per_sec: Option<ByteRate>,
}

impl ReplicationConfig {
    /// How long a source broker may hold a Fetch.
    pub fn fetch_max_wait(&self) -> Duration {
        Duration::from_millis(self.fetch_max_wait_ms)
    }

    /// Exactly-once: how long a transaction stays open.
    pub fn transaction_interval(&self) -> Duration {
        Duration::from_millis(self.transaction_interval_ms)
    }

    /// Exactly-once: how long the target lets a transaction of ours stay open.
    pub fn transaction_timeout(&self) -> Duration {
        Duration::from_millis(self.transaction_timeout_ms)
    }
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

/// `[instances]`: how processes started with the same name share its
/// partitions. Each flow's instances form a group on the flow's target
/// cluster (`kafka-mirror.<name>`) whose coordinator gives each its share;
/// one instance alone gets them all, so nothing here needs setting.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstancesConfig {
    /// How long the target's group coordinator waits for a silent instance
    /// before its partitions move to the others; an instance that cannot
    /// reach the coordinator this long stops writing first. Within the
    /// brokers' `group.min.session.timeout.ms` and
    /// `group.max.session.timeout.ms` (6 s and 30 min by default).
    #[serde(default = "default_session_timeout_ms")]
    pub session_timeout_ms: u64,
    /// How long a rebalance waits for every instance to join again, which
    /// an instance handing partitions over must do within: the time to let
    /// in-flight batches land and store their checkpoints.
    #[serde(default = "default_rebalance_timeout_ms")]
    pub rebalance_timeout_ms: u64,
    /// Makes the instance a static member (KIP-345): restarted within the
    /// session timeout, it takes its old place and partitions at once,
    /// without a rebalance. Unique per process.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `true` (default): instances of one name share the partitions. `false`:
    /// no group; a new instance takes over everything, fencing the older one
    /// with the transactional id, so it needs `replication.exactly_once`.
    #[serde(default = "default_true")]
    pub share: bool,
}

impl InstancesConfig {
    /// How long a silent instance keeps its partitions.
    pub fn session_timeout(&self) -> Duration {
        Duration::from_millis(self.session_timeout_ms)
    }

    /// How long a rebalance waits for every instance.
    pub fn rebalance_timeout(&self) -> Duration {
        Duration::from_millis(self.rebalance_timeout_ms)
    }
}

impl Default for InstancesConfig {
    fn default() -> Self {
        InstancesConfig {
            session_timeout_ms: default_session_timeout_ms(),
            rebalance_timeout_ms: default_rebalance_timeout_ms(),
            instance_id: None,
            share: true,
        }
    }
}

fn default_session_timeout_ms() -> u64 {
    10_000
}
fn default_rebalance_timeout_ms() -> u64 {
    60_000
}

pub(super) fn default_name() -> String {
    "kafka-mirror".to_owned()
}
fn default_true() -> bool {
    true
}
pub(super) fn default_client_id() -> String {
    "kafka-mirror".to_owned()
}
pub(super) fn default_connect_timeout_ms() -> u64 {
    10_000
}
pub(super) fn default_request_timeout_ms() -> u64 {
    30_000
}
pub(super) fn default_max_frame_bytes() -> usize {
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
fn default_transaction_interval_ms() -> u64 {
    100
}
fn default_transaction_timeout_ms() -> u64 {
    10_000
}
fn default_transaction_max_in_flight_batches() -> usize {
    32
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
            exactly_once: false,
            transaction_interval_ms: default_transaction_interval_ms(),
            transaction_timeout_ms: default_transaction_timeout_ms(),
            transaction_max_in_flight_batches: default_transaction_max_in_flight_batches(),
            max_bytes_per_sec: None,
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

fn deserialize_start<'de, D: serde::Deserializer<'de>>(d: D) -> Result<StartPosition, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Word(String),
        Millis(i64),
    }
    match Raw::deserialize(d)? {
        Raw::Millis(ms) => Ok(StartPosition::Timestamp(ms)),
        // Not the parser's message, which quotes the value: config errors never do.
        Raw::Word(word) => parse_start_position(&word).map_err(|_| {
            serde::de::Error::custom("not earliest, latest or a timestamp in ms since the epoch")
        }),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::tests::MINIMAL;

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
}
