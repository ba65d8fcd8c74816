//! Command-line interface: flags, and how they combine with a config file.
//!
//! Flags override the file; without a file, `--source` and `--target` are
//! enough and everything else takes its default. A file of named clusters and
//! flows takes the flags that apply to every flow, and refuses the ones that
//! name one source or target.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use kafka_mirror::config::mirrormaker::{self, Mm1Options, Translation};
use kafka_mirror::config::properties::{self, Properties};
use kafka_mirror::config::{
    parse_start_position, ByteRate, ClusterConfig, ConfigError, DataLossPolicy, IsolationLevel,
    MirrorConfig, RefusedBatchPolicy, StartPosition,
};
use kafka_mirror::pipeline::SwitchOptions;

/// Replicates Kafka topics between clusters by forwarding raw record batches:
/// no decompression, no re-encoding, the destination gets the same bytes.
#[derive(Debug, Parser)]
#[command(name = "kafka-mirror", version, about, long_about = None)]
pub(crate) struct Cli {
    /// More log output: -v for progress, -vv for debugging. RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub(crate) verbose: u8,
    /// Print only the summary (and errors): no progress, no warnings.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub(crate) quiet: bool,
    /// How log lines are written to stderr: text for people, json (one
    /// object per line) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub(crate) log_format: LogFormat,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Replicate the selected topics from the source cluster to the target
    /// cluster, or run every flow of the config file.
    Run(RunCommandArgs),
    /// Run a MirrorMaker 1 command line as it is (kafka-mirror-maker.sh's
    /// options): the consumer file is the source, the producer file the target.
    #[command(name = "mm1")]
    Mm1(Mm1Args),
    /// Run a MirrorMaker 2 dedicated-mode properties file as it is
    /// (connect-mirror-maker.sh mm2.properties).
    #[command(name = "mm2")]
    Mm2(Mm2Args),
    /// Print the kafka-mirror TOML config equivalent to a MirrorMaker 2
    /// properties file.
    Convert(ConvertArgs),
    /// List, for each flow, the topics a run would replicate, their target
    /// names, partitions and configs, and what it would create or change on
    /// the target, without changing anything. Takes the options of `run`.
    Plan(RunArgs),
    /// List, for each flow, the instances running under its name: each one's
    /// id, host, writer slot, the partitions it copies and their lag (source
    /// end minus stored checkpoint), and the partitions none copies. Read
    /// from Kafka alone; takes the options of `run`.
    Status(StatusArgs),
    /// Compare each selected partition's committed records on the source
    /// with its copy on the target (the rename policy applied): counts,
    /// first and last offsets, and each record's timestamp, key, value and
    /// headers, in order. Exits 7 naming each partition that differs.
    /// Takes the options of `run`.
    Verify(VerifyArgs),
    /// List, for each consumer group --groups selects, its committed offsets
    /// on the source, their translation through the offset maps stored with
    /// the checkpoints, the group's offsets on the target and how much is not
    /// copied yet. Commits nothing.
    Offsets(OffsetsArgs),
    /// A planned cutover of the --groups groups to the target: checks they
    /// have no members on the source, waits until the stored checkpoints cover
    /// everything the source holds, syncs the groups one last time and says
    /// what to do next. Without --apply it reports what it would do.
    Failover(SwitchArgs),
    /// After a failover, copy back to the source what was written on the
    /// target since, and the --groups groups with it: the flow runs
    /// backwards from where its copy ended, until caught up; then its
    /// checkpoints are rewritten so the mirror, restarted, goes on after the
    /// copied-back records. Takes the options of the forward `run`. Without
    /// --apply it reports what it would do.
    Failback(SwitchArgs),
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum LogFormat {
    /// One line of text per event.
    Text,
    /// One JSON object per event, with the event's fields and its spans'
    /// (the flow, and for a partition's events its topic and partition).
    Json,
}

/// Options of `kafka-mirror failover` and `failback`.
#[derive(Debug, Args)]
pub(crate) struct SwitchArgs {
    /// The forward flow (source, target, topics, groups, name), as given to `run`.
    #[command(flatten)]
    pub(crate) flow: FlowArgs,
    /// Do it (without it, only report what would be done and how ready it is).
    #[arg(long)]
    pub(crate) apply: bool,
    /// Seconds to wait: failover for the copy to cover the source (default
    /// 300); failback for the copy back, which stops where it got to and
    /// resumes there when run again (default 600).
    #[arg(long, value_name = "SECONDS")]
    pub(crate) timeout: Option<u64>,
}

impl SwitchArgs {
    /// The config and options, `default_timeout` unless --timeout is given.
    pub(crate) fn to_switch(
        &self,
        default_timeout: Duration,
    ) -> Result<(MirrorConfig, SwitchOptions), ConfigError> {
        let config = self.flow.layered_config()?;
        config.validate()?;
        let timeout = self.timeout.map_or(default_timeout, Duration::from_secs);
        let options = SwitchOptions {
            apply: self.apply,
            timeout,
        };
        Ok((config, options))
    }
}

/// Options of `kafka-mirror status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The flows, as given to `run`.
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// How to print the listing.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// Options of `kafka-mirror verify`.
#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// The flows, as given to `run`.
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// How to print the report.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
    /// Compare the records of every Nth source batch only (counts are
    /// always compared in full): a quick look at very large topics.
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub(crate) sample: u32,
}

/// Options of `kafka-mirror offsets`.
#[derive(Debug, Args)]
pub(crate) struct OffsetsArgs {
    #[command(flatten)]
    pub(crate) flow: FlowArgs,
    /// How to print the listing.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub(crate) format: Format,
}

/// How a listing is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Format {
    /// Lines for people.
    Text,
    /// One JSON document, for scripts.
    Json,
}

/// Options of `kafka-mirror mm1`: MirrorMaker 1's, spelled the same.
#[derive(Debug, Args)]
pub(crate) struct Mm1Args {
    /// Consumer properties: the source cluster (bootstrap.servers, security),
    /// group.id (names the checkpoints), auto.offset.reset, isolation.level.
    #[arg(long = "consumer.config", value_name = "FILE")]
    pub(crate) consumer_config: PathBuf,
    /// Producer properties: the target cluster (bootstrap.servers, security).
    #[arg(long = "producer.config", value_name = "FILE")]
    pub(crate) producer_config: PathBuf,
    /// Topics to mirror: a regex matched against the whole name; `,` separates alternatives.
    #[arg(long, value_name = "REGEX", conflicts_with = "include")]
    pub(crate) whitelist: Option<String>,
    /// Same as --whitelist (its newer name).
    #[arg(long, value_name = "REGEX")]
    pub(crate) include: Option<String>,
    /// Consumer threads in MirrorMaker 1; accepted and ignored.
    #[arg(long = "num.streams", value_name = "N")]
    pub(crate) num_streams: Option<u32>,
    /// How often progress is stored, in ms.
    #[arg(long = "offset.commit.interval.ms", value_name = "MS")]
    pub(crate) offset_commit_interval_ms: Option<u64>,
    /// true (default): a batch the target refuses stops its partition; false:
    /// it is skipped, logged and counted.
    #[arg(long = "abort.on.send.failure", value_name = "BOOL")]
    pub(crate) abort_on_send_failure: Option<bool>,
    /// Accepted for old command lines; has no effect (as in MirrorMaker 1).
    #[arg(long = "new.consumer")]
    pub(crate) new_consumer: bool,
    /// Custom Java message handler: refused (records are forwarded as they are).
    #[arg(long = "message.handler", value_name = "CLASS")]
    pub(crate) message_handler: Option<String>,
    /// Arguments of --message.handler: refused with it.
    #[arg(long = "message.handler.args", value_name = "ARGS")]
    pub(crate) message_handler_args: Option<String>,
    /// Custom Java rebalance listener: refused.
    #[arg(long = "consumer.rebalance.listener", value_name = "CLASS")]
    pub(crate) rebalance_listener: Option<String>,
    /// Arguments of --consumer.rebalance.listener: refused with it.
    #[arg(long = "rebalance.listener.args", value_name = "ARGS")]
    pub(crate) rebalance_listener_args: Option<String>,
}

impl Mm1Args {
    /// The equivalent config, with what was not carried over.
    pub(crate) fn to_translation(&self) -> Result<Translation, ConfigError> {
        let custom_classes = [
            ("--message.handler", &self.message_handler),
            ("--message.handler.args", &self.message_handler_args),
            ("--consumer.rebalance.listener", &self.rebalance_listener),
            ("--rebalance.listener.args", &self.rebalance_listener_args),
        ]
        .into_iter()
        .filter_map(|(flag, value)| Some((flag.to_owned(), value.clone()?)))
        .collect();
        let translation = mirrormaker::mm1(&Mm1Options {
            consumer_config: self.consumer_config.clone(),
            producer_config: self.producer_config.clone(),
            include: self.whitelist.clone().or_else(|| self.include.clone()),
            num_streams: self.num_streams,
            offset_commit_interval_ms: self.offset_commit_interval_ms,
            abort_on_send_failure: self.abort_on_send_failure,
            custom_classes,
        })?;
        translation.config.validate()?;
        Ok(translation)
    }
}

/// Options of `kafka-mirror mm2`.
#[derive(Debug, Args)]
pub(crate) struct Mm2Args {
    /// The MirrorMaker 2 properties file.
    #[arg(value_name = "MM2_PROPERTIES")]
    pub(crate) file: PathBuf,
    /// Only the flows into these target clusters (connect-mirror-maker.sh's --clusters).
    #[arg(long, value_name = "ALIAS", num_args = 1..)]
    pub(crate) clusters: Vec<String>,
}

impl Mm2Args {
    /// The equivalent config, with what was not carried over.
    pub(crate) fn to_translation(&self) -> Result<Translation, ConfigError> {
        let props = Properties::from_file(&self.file)?;
        let mut translation = mirrormaker::mm2(&props, &self.file.display().to_string())?;
        if !self.clusters.is_empty() {
            let flows = &mut translation.config.flows;
            flows.retain(|flow| self.clusters.contains(&flow.target));
            if flows.is_empty() {
                return Err(ConfigError::Invalid {
                    key: "--clusters".to_owned(),
                    reason: format!("no enabled flow writes into {}", self.clusters.join(", ")),
                });
            }
        }
        translation.config.validate()?;
        Ok(translation)
    }
}

/// Options of `kafka-mirror convert`.
#[derive(Debug, Args)]
pub(crate) struct ConvertArgs {
    /// The MirrorMaker 2 properties file.
    #[arg(value_name = "MM2_PROPERTIES")]
    pub(crate) file: PathBuf,
}

/// The config, clusters, topics and consumer groups a command works on:
/// the options `run` shares with the commands that read or act on the same
/// flows and groups.
#[derive(Debug, Args)]
pub(crate) struct FlowArgs {
    /// TOML config file (see README: every key, its default and meaning).
    #[arg(short, long, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
    /// Source bootstrap servers, host:port,... (overrides source.bootstrap_servers).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub(crate) source: Option<String>,
    /// Target bootstrap servers, host:port,... (overrides target.bootstrap_servers).
    #[arg(long, value_name = "HOST:PORT,...")]
    pub(crate) target: Option<String>,
    /// Kafka client .properties file for the source cluster (bootstrap.servers,
    /// security.protocol, ssl.*, sasl.*: see README), applied after --config
    /// and before the other flags.
    #[arg(long, value_name = "FILE")]
    pub(crate) source_properties: Option<PathBuf>,
    /// Kafka client .properties file for the target cluster, as --source-properties.
    #[arg(long, value_name = "FILE")]
    pub(crate) target_properties: Option<PathBuf>,
    /// Regex of topics to replicate, matched against the whole name (overrides topics.include).
    #[arg(long, value_name = "REGEX")]
    pub(crate) topics: Option<String>,
    /// Regex of topics never replicated, matched against the whole name (overrides topics.exclude).
    #[arg(long, value_name = "REGEX")]
    pub(crate) exclude: Option<String>,
    /// Regex of consumer groups whose committed offsets are translated onto
    /// the target, matched against the whole group id (overrides
    /// groups.include). No group is synced without it or groups.include.
    #[arg(long, value_name = "REGEX")]
    pub(crate) groups: Option<String>,
    /// Mirror name: checkpoints are kept per name, so a restart with the same
    /// name resumes where the last run stopped (overrides name).
    #[arg(long)]
    pub(crate) name: Option<String>,
}

/// Options of `kafka-mirror run`: the run's, which `plan`, `status` and
/// `verify` take too, and what only a run does.
#[derive(Debug, Args)]
pub(crate) struct RunCommandArgs {
    #[command(flatten)]
    pub(crate) run: RunArgs,
    /// With --until-caught-up: once caught up, check the copy as `verify`
    /// does, each source partition up to where the run copied it; exits 7
    /// naming each partition that differs.
    #[arg(long, requires = "until_caught_up")]
    pub(crate) verify: bool,
}

/// The options of a run.
#[derive(Debug, Args)]
pub(crate) struct RunArgs {
    #[command(flatten)]
    pub(crate) flow: FlowArgs,
    /// Stop once the target holds everything the source held when the run
    /// began; print a summary and exit 0.
    #[arg(long)]
    pub(crate) until_caught_up: bool,
    /// Where partitions without a checkpoint start: earliest, latest, or a
    /// timestamp in ms since the epoch (overrides replication.start_position).
    #[arg(long, value_name = "POSITION", value_parser = parse_start_position)]
    pub(crate) start_position: Option<StartPosition>,
    /// When data that was never copied is gone from the source (retention ran
    /// ahead, or the topic was recreated): `stop` the partition and report it
    /// (default), or report it and `continue` from the source's earliest offset.
    #[arg(long, value_name = "POLICY", value_parser = parse_data_loss)]
    pub(crate) on_data_loss: Option<DataLossPolicy>,
    /// When the target refuses a batch for its topic settings (over its
    /// max.message.bytes, a timestamp it does not accept): `stop` the partition
    /// (default), or `skip` the batch, logging and counting it.
    #[arg(long, value_name = "POLICY", value_parser = parse_refused_batch)]
    pub(crate) on_refused_batch: Option<RefusedBatchPolicy>,
    /// read_committed (default: only committed transactions are copied) or
    /// read_uncommitted (open and aborted transactions are copied as plain data).
    #[arg(long, value_name = "LEVEL", value_parser = parse_isolation)]
    pub(crate) isolation_level: Option<IsolationLevel>,
    /// Replication factor of target topics the mirror creates; -1 takes the
    /// target broker's default (overrides replication.replication_factor).
    #[arg(long, value_name = "N", allow_hyphen_values = true)]
    pub(crate) replication_factor: Option<i16>,
    /// Memory budget in bytes: source data fetched and not yet checkpointed
    /// (overrides replication.in_flight_bytes).
    #[arg(long, value_name = "BYTES")]
    pub(crate) in_flight_bytes: Option<usize>,
    /// Threads that run the pipeline (overrides replication.threads).
    #[arg(long, value_name = "N")]
    pub(crate) threads: Option<usize>,
    /// Source bytes each flow fetches per second at most: 50MB (10^6
    /// bytes), 40MiB (2^20), 400Mbit (10^6 bits), 1.5GB or a number of
    /// bytes (overrides replication.max_bytes_per_sec, for every flow).
    #[arg(long, value_name = "RATE")]
    pub(crate) max_bytes_per_sec: Option<ByteRate>,
    /// Copy exactly once: data and the checkpoints that cover it are
    /// committed in one target transaction, and a second instance of the
    /// same name fences this one (sets replication.exactly_once).
    #[arg(long)]
    pub(crate) exactly_once: bool,
    /// This process's own id among the instances of its name (static
    /// membership: restarted within the session timeout, it takes its
    /// partitions back at once); unique per process (sets instances.instance_id).
    #[arg(long, value_name = "ID")]
    pub(crate) instance_id: Option<String>,
    /// Serve /health, /ready, /status and /metrics on this address
    /// (host:port; sets http.listen). No authentication: bind it to a
    /// trusted address.
    #[arg(long, value_name = "ADDR")]
    pub(crate) http: Option<String>,
    /// Copy the ACLs of the copied topics and synced groups onto the target,
    /// never granting write on a copy (sets acls.sync, for every flow).
    #[arg(long)]
    pub(crate) sync_acls: bool,
    /// With ACL sync, delete target ACLs on the copied topics and synced
    /// groups that the source no longer has (sets acls.sync and acls.prune,
    /// for every flow).
    #[arg(long)]
    pub(crate) prune_acls: bool,
}

fn parse_data_loss(text: &str) -> Result<DataLossPolicy, String> {
    match text {
        "stop" => Ok(DataLossPolicy::Stop),
        "continue" => Ok(DataLossPolicy::Continue),
        other => Err(format!("`{other}` is not stop or continue")),
    }
}

fn parse_refused_batch(text: &str) -> Result<RefusedBatchPolicy, String> {
    match text {
        "stop" => Ok(RefusedBatchPolicy::Stop),
        "skip" => Ok(RefusedBatchPolicy::Skip),
        other => Err(format!("`{other}` is not stop or skip")),
    }
}

fn parse_isolation(text: &str) -> Result<IsolationLevel, String> {
    match text {
        "read_committed" => Ok(IsolationLevel::ReadCommitted),
        "read_uncommitted" => Ok(IsolationLevel::ReadUncommitted),
        other => Err(format!(
            "`{other}` is not read_committed or read_uncommitted"
        )),
    }
}

impl FlowArgs {
    /// The config file (if any) with these flags laid over it, not yet
    /// validated: a file may hold only tuning keys and leave the clusters to
    /// the flags, and the caller may lay more flags over it.
    pub(crate) fn layered_config(&self) -> Result<MirrorConfig, ConfigError> {
        let mut config = match &self.config {
            Some(path) => MirrorConfig::read_file(path)?,
            None => MirrorConfig::new(ClusterConfig::new(""), ClusterConfig::new("")),
        };
        if let Some(name) = &self.name {
            config.name = name.clone();
        }
        if config.clusters.is_empty() && config.flows.is_empty() {
            // A one-flow config: the file may leave either cluster to the flags.
            config.source.get_or_insert_with(|| ClusterConfig::new(""));
            config.target.get_or_insert_with(|| ClusterConfig::new(""));
        }
        let (Some(source), Some(target)) = (config.source.as_mut(), config.target.as_mut()) else {
            // A config of named clusters and flows: the one-flow flags have no
            // single cluster or flow to apply to.
            self.refuse_one_flow_flags()?;
            return Ok(config);
        };
        for (file, cluster) in [
            (&self.source_properties, &mut *source),
            (&self.target_properties, &mut *target),
        ] {
            if let Some(path) = file {
                let props = Properties::from_file(path)?;
                properties::apply(cluster, &props, &path.display().to_string())?;
            }
        }
        if let Some(servers) = &self.source {
            source.bootstrap_servers = servers.clone();
        }
        if let Some(servers) = &self.target {
            target.bootstrap_servers = servers.clone();
        }
        for (side, cluster) in [("source", &*source), ("target", &*target)] {
            if cluster.bootstrap_servers.trim().is_empty() {
                return Err(ConfigError::Invalid {
                    key: format!("{side}.bootstrap_servers"),
                    reason: format!(
                        "required: give --config FILE, --{side}, or --{side}-properties FILE with bootstrap.servers"
                    ),
                });
            }
        }
        if let Some(topics) = &self.topics {
            config.topics.include = Some(topics.clone());
        }
        if let Some(exclude) = &self.exclude {
            config.topics.exclude = Some(exclude.clone());
        }
        if let Some(groups) = &self.groups {
            config.groups.include = Some(groups.clone());
        }
        Ok(config)
    }

    /// Refuses the flags that only mean something with one source and one target.
    fn refuse_one_flow_flags(&self) -> Result<(), ConfigError> {
        let given = [
            ("--source", self.source.is_some()),
            ("--target", self.target.is_some()),
            ("--source-properties", self.source_properties.is_some()),
            ("--target-properties", self.target_properties.is_some()),
            ("--topics", self.topics.is_some()),
            ("--exclude", self.exclude.is_some()),
            ("--groups", self.groups.is_some()),
        ];
        match given.iter().find(|(_, set)| *set) {
            None => Ok(()),
            Some((flag, _)) => Err(ConfigError::Invalid {
                key: (*flag).to_owned(),
                reason: "applies to a config with one [source] and [target]; with [clusters] and [[flows]], \
                         set the cluster's or the flow's keys in the file"
                    .to_owned(),
            }),
        }
    }
}

impl RunArgs {
    /// The config file (if any) with the flags laid over it, validated as a
    /// whole: a file may hold only tuning keys and leave the clusters to the flags.
    pub(crate) fn to_config(&self) -> Result<MirrorConfig, ConfigError> {
        let mut config = self.flow.layered_config()?;
        let replication = &mut config.replication;
        if let Some(position) = self.start_position {
            replication.start_position = position;
        }
        if let Some(policy) = self.on_data_loss {
            replication.on_data_loss = policy;
        }
        if let Some(policy) = self.on_refused_batch {
            replication.on_refused_batch = policy;
        }
        if let Some(level) = self.isolation_level {
            replication.isolation_level = level;
        }
        if let Some(factor) = self.replication_factor {
            replication.replication_factor = factor;
        }
        if let Some(bytes) = self.in_flight_bytes {
            replication.in_flight_bytes = bytes;
        }
        if let Some(threads) = self.threads {
            replication.threads = threads;
        }
        if let Some(rate) = self.max_bytes_per_sec {
            replication.max_bytes_per_sec = Some(rate);
            for flow in &mut config.flows {
                flow.replication.max_bytes_per_sec = Some(rate);
            }
        }
        replication.exactly_once |= self.exactly_once;
        config.acls.sync |= self.sync_acls || self.prune_acls;
        config.acls.prune |= self.prune_acls;
        // The flags are the operator's word for this run: over each flow's own.
        for flow in &mut config.flows {
            if self.sync_acls || self.prune_acls {
                flow.acls.sync = Some(true);
            }
            if self.prune_acls {
                flow.acls.prune = Some(true);
            }
        }
        if let Some(id) = &self.instance_id {
            config.instances.instance_id = Some(id.clone());
        }
        if let Some(address) = &self.http {
            config.http.listen = Some(address.clone());
        }
        config.validate()?;
        Ok(config)
    }
}
