//! The replicators compared, and how each is started.
//!
//! Every tool copies the same topics from the same source into freshly emptied
//! target topics with the same names, and runs until the harness has seen the
//! target catch up and stops it.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};
use kafka_testkit::{
    cargo_build_release, free_ports, mirror_maker1_command, write_properties, KafkaDist,
    MirrorMaker2, MIRROR_MAKER1_JVM_OPTS, MIRROR_MAKER2_JVM_OPTS, MIRROR_MAKER2_VERSION,
    OLD_KAFKA_VERSION,
};

use crate::settings::{Section, Settings};

/// A replicator, as configured for the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tool {
    /// This project's release binary.
    KafkaMirror,
    /// The same with `--exactly-once`: data and checkpoints committed in one
    /// target transaction every `transaction_interval_ms` (100 by default).
    KafkaMirrorEos,
    /// N processes of kafka-mirror's default command, started together with the
    /// same name: they share the partitions through a group on the target.
    KafkaMirrorInstances(usize),
    /// MirrorMaker 2, dedicated mode, defaults (plus the identity replication policy
    /// and replication factors of 1).
    Mm2,
    /// The same with exactly-once source support (KIP-618, dedicated mode since
    /// Kafka 3.5) enabled for the target: one transaction per task poll.
    Mm2Eos,
    /// MirrorMaker 2 tuned as its documentation advises: a task per partition, larger
    /// producer batches with linger, larger fetches, lz4 on the producer.
    Mm2Tuned,
    /// MirrorMaker 1 (Kafka 3.9.1), defaults: one stream.
    Mm1,
}

impl Tool {
    /// Every tool and its name in `BENCH_TOOLS` and the report.
    const NAMES: [(Tool, &'static str); 8] = [
        (Tool::KafkaMirror, "kafka-mirror"),
        (Tool::KafkaMirrorEos, "kafka-mirror-eos"),
        (Tool::KafkaMirrorInstances(2), "kafka-mirror-x2"),
        (Tool::KafkaMirrorInstances(3), "kafka-mirror-x3"),
        (Tool::Mm2, "mm2"),
        (Tool::Mm2Eos, "mm2-eos"),
        (Tool::Mm2Tuned, "mm2-tuned"),
        (Tool::Mm1, "mm1"),
    ];

    pub(crate) fn parse(name: &str) -> Result<Tool> {
        match Self::NAMES.iter().find(|(_, n)| *n == name) {
            Some((tool, _)) => Ok(*tool),
            None => {
                let known: Vec<&str> = Self::NAMES.iter().map(|(_, n)| *n).collect();
                bail!("BENCH_TOOLS: unknown tool {name:?} ({})", known.join(", "))
            }
        }
    }

    pub(crate) fn name(self) -> &'static str {
        Self::NAMES
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("?", |(_, n)| n)
    }

    /// This project's binary, in either mode.
    pub(crate) fn is_kafka_mirror(self) -> bool {
        matches!(
            self,
            Tool::KafkaMirror | Tool::KafkaMirrorEos | Tool::KafkaMirrorInstances(_)
        )
    }

    /// How many processes of its command a run starts.
    pub(crate) fn instances(self) -> usize {
        match self {
            Tool::KafkaMirrorInstances(n) => n,
            _ => 1,
        }
    }

    /// For a variant of several instances, the same tool as one: what the
    /// report compares it with.
    pub(crate) fn single_instance(self) -> Option<Tool> {
        match self {
            Tool::KafkaMirrorInstances(_) => Some(Tool::KafkaMirror),
            _ => None,
        }
    }

    /// For an exactly-once variant, the same tool without it: what the report
    /// compares it with.
    pub(crate) fn without_exactly_once(self) -> Option<Tool> {
        match self {
            Tool::KafkaMirrorEos => Some(Tool::KafkaMirror),
            Tool::Mm2Eos => Some(Tool::Mm2),
            _ => None,
        }
    }

    /// Whether it writes the target in transactions: its data counts once
    /// committed, and transaction markers take offsets of their own.
    pub(crate) fn is_transactional(self) -> bool {
        self.without_exactly_once().is_some()
    }

    /// Whether record i of source partition p lands in target partition p. MirrorMaker 1
    /// re-partitions with its producer's partitioner, so only totals per topic compare.
    pub(crate) fn keeps_partitions(self) -> bool {
        self != Tool::Mm1
    }

    /// Whether the target topics must exist before it starts (MirrorMaker 1 creates none).
    pub(crate) fn needs_target_topics(self) -> bool {
        self == Tool::Mm1
    }

    /// One line on how it is set up, for the report; `mirror_build` says which
    /// build of kafka-mirror ran ([`Tools::mirror_build`]).
    pub(crate) fn describe(self, mirror_build: &str) -> String {
        match self {
            Tool::KafkaMirror => format!("{mirror_build}, default settings"),
            Tool::KafkaMirrorEos => format!(
                "{mirror_build}, `--exactly-once` (transaction_interval_ms 100, the default)"
            ),
            Tool::KafkaMirrorInstances(n) => format!(
                "{n} processes of {mirror_build}, default settings and name, started together: \
                 they share the partitions through a group on the target; CPU and peak RSS summed over the {n} process trees"
            ),
            Tool::Mm2 => format!(
                "connect-mirror {MIRROR_MAKER2_VERSION}, dedicated mode, defaults; IdentityReplicationPolicy"
            ),
            Tool::Mm2Eos => format!(
                "as mm2, with dst.exactly.once.source.support = enabled, dedicated.mode.enable.internal.rest = true \
                 (a listener on loopback) and src.consumer.isolation.level = read_committed, as the Kafka {MIRROR_MAKER2_VERSION} \
                 documentation asks; transaction.boundary = poll (the default)"
            ),
            Tool::Mm2Tuned => format!(
                "connect-mirror {MIRROR_MAKER2_VERSION}: tasks.max = partitions, producer batch.size 256 KiB, linger.ms 50, lz4, consumer fetch.max.bytes 8 MiB, max.poll.records 2000"
            ),
            Tool::Mm1 => format!("kafka.tools.MirrorMaker {OLD_KAFKA_VERSION}, defaults (1 stream)"),
        }
    }
}

/// Where one run copies from and to.
#[derive(Debug, Clone)]
pub(crate) struct Route {
    pub(crate) source: String,
    pub(crate) target: String,
    pub(crate) topics: Vec<String>,
    pub(crate) partitions_per_topic: u32,
    /// When not empty, the harness creates the target topics with these configs
    /// before the tool starts (it does anyway for tools that create none).
    pub(crate) target_configs: Vec<(String, String)>,
    /// A regex of consumer groups whose committed offsets the tool also carries
    /// over to the target (kafka-mirror: `--groups` and `--until-caught-up`;
    /// MirrorMaker 2: checkpoints and `sync.group.offsets`, every second, under its
    /// default replication policy, so target topics are named
    /// `<MM2_SOURCE_ALIAS>.<topic>`). `None`: the data only.
    pub(crate) groups: Option<String>,
}

impl Route {
    /// Partitions over all topics.
    pub(crate) fn partitions(&self) -> u32 {
        self.partitions_per_topic * self.topics.len() as u32
    }

    /// A regex matching exactly its topics.
    pub(crate) fn topics_regex(&self) -> String {
        format!("^({})$", self.topics.join("|"))
    }
}

/// What the tools need, fetched or built once.
#[derive(Debug)]
pub(crate) struct Tools {
    mirror_bin: Option<PathBuf>,
    /// Which build `mirror_bin` is, for the report.
    mirror_build: &'static str,
    /// Appended to kafka-mirror's command line.
    mirror_args: Vec<String>,
    mm2: Option<MirrorMaker2>,
    mm1: Option<KafkaDist>,
}

impl Tools {
    /// Builds kafka-mirror (release) and fetches MirrorMaker 2 and Kafka 3.9.1 into the
    /// cache, as far as the tools and sections of `settings` need them. The smoke
    /// uses the binary cargo built with the bench instead (with the bench's
    /// profile and features), which costs no build of its own.
    pub(crate) fn prepare(settings: &Settings) -> Result<Tools> {
        let tools = &settings.tools;
        let needs_mirror =
            tools.iter().any(|t| t.is_kafka_mirror()) || settings.runs(Section::Verify);
        let (mirror_bin, mirror_build) = match (needs_mirror, settings.smoke) {
            (false, _) => (None, "none"),
            (true, true) => (
                Some(PathBuf::from(env!("CARGO_BIN_EXE_kafka-mirror"))),
                "the bench's own build (cargo bench's profile)",
            ),
            (true, false) => (
                Some(cargo_build_release(
                    Path::new(env!("CARGO_MANIFEST_DIR")),
                    "kafka-mirror",
                )?),
                "the release build",
            ),
        };
        let mm2 = if tools
            .iter()
            .any(|t| matches!(t, Tool::Mm2 | Tool::Mm2Eos | Tool::Mm2Tuned))
        {
            Some(MirrorMaker2::get(MIRROR_MAKER2_VERSION)?)
        } else {
            None
        };
        let mm1 = if tools.contains(&Tool::Mm1) {
            Some(KafkaDist::get(OLD_KAFKA_VERSION)?)
        } else {
            None
        };
        Ok(Tools {
            mirror_bin,
            mirror_build,
            mirror_args: settings.mirror_args.clone(),
            mm2,
            mm1,
        })
    }

    /// Which build of kafka-mirror runs, for the report.
    pub(crate) fn mirror_build(&self) -> &'static str {
        self.mirror_build
    }

    /// `kafka-mirror verify` of `route`'s topics, its report as JSON on stdout,
    /// comparing every `sample`th batch's records (1: all).
    pub(crate) fn verify_command(&self, route: &Route, sample: u32) -> Result<Command> {
        let Some(bin) = &self.mirror_bin else {
            bail!("kafka-mirror was not built");
        };
        let mut cmd = Command::new(bin);
        cmd.args([
            "verify",
            "--source",
            &route.source,
            "--target",
            &route.target,
        ])
        .args(["--topics", &route.topics_regex()])
        .args(["--format", "json", "--sample", &sample.to_string()]);
        Ok(cmd)
    }

    /// The command that runs `tool` along `route`, its config files written into `dir`.
    /// `run` names this run (consumer groups must not resume an earlier one).
    pub(crate) fn command(
        &self,
        tool: Tool,
        route: &Route,
        dir: &Path,
        run: &str,
    ) -> Result<Command> {
        match tool {
            Tool::KafkaMirror | Tool::KafkaMirrorEos | Tool::KafkaMirrorInstances(_) => {
                let Some(bin) = &self.mirror_bin else {
                    bail!("kafka-mirror was not built");
                };
                let mut cmd = Command::new(bin);
                cmd.args(["run", "--source", &route.source, "--target", &route.target])
                    .args(["--topics", &route.topics_regex()]);
                match &route.groups {
                    // Its last group sync runs once caught up, before it exits.
                    Some(groups) => cmd.args(["--groups", groups, "--until-caught-up"]),
                    // Not `--until-caught-up`: like the others it runs until the
                    // harness stops it (SIGTERM, a clean exit 0), also when the
                    // source is still being written (the latency runs).
                    None => &mut cmd,
                };
                if tool == Tool::KafkaMirrorEos {
                    cmd.arg("--exactly-once");
                }
                cmd.args(&self.mirror_args);
                Ok(cmd)
            }
            Tool::Mm2 | Tool::Mm2Eos | Tool::Mm2Tuned => {
                let Some(mm2) = &self.mm2 else {
                    bail!("MirrorMaker 2 was not fetched");
                };
                let file = dir.join("mm2.properties");
                write_properties(&file, &mm2_properties(tool, route)?)?;
                Ok(mm2.command(&file, MIRROR_MAKER2_JVM_OPTS))
            }
            Tool::Mm1 => {
                let Some(dist) = &self.mm1 else {
                    bail!("Kafka {OLD_KAFKA_VERSION} was not fetched");
                };
                let consumer = dir.join("mm1-consumer.properties");
                let producer = dir.join("mm1-producer.properties");
                write_properties(
                    &consumer,
                    &props(&[
                        ("bootstrap.servers", &route.source),
                        ("group.id", &format!("bench-mm1-{run}")),
                        ("auto.offset.reset", "earliest"),
                    ]),
                )?;
                write_properties(&producer, &props(&[("bootstrap.servers", &route.target)]))?;
                mirror_maker1_command(
                    dist,
                    &consumer,
                    &producer,
                    &route.topics_regex(),
                    1,
                    MIRROR_MAKER1_JVM_OPTS,
                )
            }
        }
    }
}

fn props(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// MirrorMaker 2's alias of the source cluster (`clusters` below): the prefix of
/// the target topics under its default replication policy.
pub(crate) const MM2_SOURCE_ALIAS: &str = "src";

/// MirrorMaker 2's dedicated-mode configuration: clusters `src` and `dst`, one flow.
fn mm2_properties(tool: Tool, route: &Route) -> Result<Vec<(String, String)>> {
    let mut p = props(&[
        ("clusters", "src,dst"),
        ("src.bootstrap.servers", &route.source),
        ("dst.bootstrap.servers", &route.target),
        ("src->dst.enabled", "true"),
        ("dst->src.enabled", "false"),
        ("src->dst.topics", &route.topics.join(",")),
        // Single-broker clusters.
        ("replication.factor", "1"),
        ("checkpoints.topic.replication.factor", "1"),
        ("heartbeats.topic.replication.factor", "1"),
        ("offset-syncs.topic.replication.factor", "1"),
        ("offset.storage.replication.factor", "1"),
        ("config.storage.replication.factor", "1"),
        ("status.storage.replication.factor", "1"),
        // No authorizer on the brokers.
        ("sync.topic.acls.enabled", "false"),
        // Each run's worker joins the Connect group the previous run's left
        // on the same clusters; one stopped without leaving it (killed after
        // the grace period) would hold its tasks for Connect's default 5
        // minutes before they are reassigned. The smoke's failover run once
        // waited out exactly that.
        ("scheduled.rebalance.max.delay.ms", "0"),
    ]);
    match &route.groups {
        // Its defaults otherwise: DefaultReplicationPolicy, offset.lag.max 100.
        Some(groups) => p.extend(props(&[
            ("src->dst.groups", groups),
            ("emit.checkpoints.enabled", "true"),
            ("emit.checkpoints.interval.seconds", "1"),
            ("sync.group.offsets.enabled", "true"),
            ("sync.group.offsets.interval.seconds", "1"),
            // The groups exist before it starts; a refresh costs little here.
            ("refresh.groups.interval.seconds", "1"),
        ])),
        None => p.extend(props(&[(
            "replication.policy.class",
            "org.apache.kafka.connect.mirror.IdentityReplicationPolicy",
        )])),
    }
    if tool == Tool::Mm2Eos {
        // What Kafka's documentation asks for exactly-once in dedicated mode: the
        // target's workers write in transactions, and the internal REST server
        // lets the leader fence earlier tasks' producers before new ones start.
        let port = free_ports(1)?[0];
        p.extend(props(&[
            ("dst.exactly.once.source.support", "enabled"),
            ("dedicated.mode.enable.internal.rest", "true"),
            ("listeners", &format!("http://127.0.0.1:{port}")),
            ("src.consumer.isolation.level", "read_committed"),
        ]));
    }
    if tool == Tool::Mm2Tuned {
        let tasks = route.partitions().to_string();
        p.extend(props(&[
            ("tasks.max", &tasks),
            // Every task has its own consumer and producer: per-task buffers
            // must fit 24 tasks in the 2 GiB heap of connect-mirror-maker.sh
            // (128 MiB producer buffers and 50 MiB fetches ran out of it).
            ("dst.producer.batch.size", "262144"),
            ("dst.producer.linger.ms", "50"),
            ("dst.producer.compression.type", "lz4"),
            ("src.consumer.fetch.max.bytes", "8388608"),
            ("src.consumer.max.poll.records", "2000"),
        ]));
    }
    Ok(p)
}
