//! MirrorMaker configurations read as kafka-mirror's own, so people who run
//! MirrorMaker today switch without rewriting anything.
//!
//! - [`mm1`]: the classic `kafka-mirror-maker.sh` (MirrorMaker 1): a consumer
//!   properties file for the source, a producer properties file for the
//!   target, and `--whitelist`/`--include`.
//! - [`mm2`]: a MirrorMaker 2 dedicated-mode file (`connect-mirror-maker.sh
//!   mm2.properties`): `clusters`, per-cluster client settings, `A->B.enabled`
//!   flows, topic lists, replication policy, consumer group offset sync,
//!   topic ACL sync (`sync.topic.acls.enabled`, on by default in MirrorMaker
//!   2 as here: the flow's `acls.sync`). MirrorMaker 1 had neither group
//!   offset sync nor ACL sync, so [`mm1`] turns neither on.
//!
//! Both give a [`Translation`]: the equivalent [`MirrorConfig`] and, once per
//! key, what was not carried over and why. A key is ignored only where that
//! cannot change what data arrives or how it is secured (tuning, thread
//! counts, MirrorMaker 2's own side features); a key whose meaning cannot be
//! honoured (custom Java classes, turning topic config sync off) is an error
//! naming it. [`to_toml`] writes a translation out as a native config file
//! (`kafka-mirror convert`).

use std::collections::BTreeMap;
use std::path::Path;

use super::properties::{self, is_connection_key, property_error, Properties};
use super::{
    ClusterConfig, ConfigError, FlowAclsConfig, FlowConfig, GroupsConfig, IsolationLevel,
    MirrorConfig, PolicyKind, RefusedBatchPolicy, StartPosition, TopicsConfig,
};

/// A MirrorMaker configuration in kafka-mirror's terms.
#[derive(Debug, Clone)]
pub struct Translation {
    /// The equivalent config.
    pub config: MirrorConfig,
    /// What was not carried over, one line per key, for the operator.
    pub notices: Vec<String>,
}

/// The options of `kafka-mirror mm1`, named as `kafka-mirror-maker.sh` names them.
#[derive(Debug, Clone, Default)]
pub struct Mm1Options {
    /// `--consumer.config`: the source cluster, and `group.id`,
    /// `auto.offset.reset`, `isolation.level` and the fetch sizes.
    pub consumer_config: std::path::PathBuf,
    /// `--producer.config`: the target cluster.
    pub producer_config: std::path::PathBuf,
    /// `--whitelist` or `--include`: a Java regex; `,` separates alternatives.
    pub include: Option<String>,
    /// `--num.streams`: consumer threads; nothing to do for an async mirror.
    pub num_streams: Option<u32>,
    /// `--offset.commit.interval.ms`: how often progress is stored.
    pub offset_commit_interval_ms: Option<u64>,
    /// `--abort.on.send.failure` (MirrorMaker's default: true).
    pub abort_on_send_failure: Option<bool>,
    /// Options that load custom Java classes (`--message.handler`, ...),
    /// with their values: refused, since their effect cannot be reproduced.
    pub custom_classes: Vec<(String, String)>,
}

/// Consumer keys `mm1` reads itself instead of leaving them to
/// [`properties::apply`], which would report them as meaningless.
const MM1_CONSUMER_KEYS: &[&str] = &[
    "group.id",
    "auto.offset.reset",
    "isolation.level",
    "fetch.max.bytes",
    "max.partition.fetch.bytes",
    "fetch.max.wait.ms",
];

/// Translates a MirrorMaker 1 command line.
pub fn mm1(options: &Mm1Options) -> Result<Translation, ConfigError> {
    let consumer_path = options.consumer_config.display().to_string();
    let producer_path = options.producer_config.display().to_string();
    let flag_error = |flag: &str, reason: String| ConfigError::Invalid {
        key: flag.to_owned(),
        reason,
    };
    if let Some((flag, value)) = options.custom_classes.first() {
        return Err(flag_error(
            flag,
            format!(
                "`{value}` is custom Java code, which kafka-mirror cannot run; \
                 it forwards records as they are"
            ),
        ));
    }
    let include = match options.include.as_deref().map(mm1_include) {
        Some(regex) if !regex.is_empty() => regex,
        _ => {
            return Err(flag_error(
                "--whitelist",
                "required (or --include): the topics to mirror, a regex".into(),
            ))
        }
    };

    let consumer = Properties::from_file(&options.consumer_config)?;
    let producer = Properties::from_file(&options.producer_config)?;
    let mut notices = Vec::new();
    let mut source = ClusterConfig::new("");
    let consumer_connection = consumer.filtered(|k| !MM1_CONSUMER_KEYS.contains(&k));
    properties::apply(&mut source, &consumer_connection, &consumer_path)?;
    let mut target = ClusterConfig::new("");
    properties::apply(&mut target, &producer, &producer_path)?;
    for (path, props, cluster) in [
        (&consumer_path, &consumer, &source),
        (&producer_path, &producer, &target),
    ] {
        if cluster.bootstrap_servers.trim().is_empty() {
            return Err(property_error(path, props, "bootstrap.servers", "required"));
        }
    }

    let mut config = MirrorConfig::new(source, target);
    config.topics.include = Some(include);
    // MirrorMaker 1 kept its progress as the consumer group's offsets; here
    // the group names the checkpoints.
    config.name = consumer
        .get("group.id")
        .unwrap_or("kafka-mirror-mm1")
        .to_owned();
    let replication = &mut config.replication;
    // Like the Java consumer MirrorMaker 1 ran, a partition without progress
    // starts at the end unless the file says otherwise.
    replication.start_position = match consumer.get("auto.offset.reset") {
        None | Some("latest") => StartPosition::Latest,
        Some("earliest") => StartPosition::Earliest,
        Some(_) => {
            return Err(property_error(
                &consumer_path,
                &consumer,
                "auto.offset.reset",
                "must be earliest or latest",
            ))
        }
    };
    match consumer.get("isolation.level") {
        Some("read_uncommitted") => replication.isolation_level = IsolationLevel::ReadUncommitted,
        Some("read_committed") => replication.isolation_level = IsolationLevel::ReadCommitted,
        None => notices.push(
            "isolation.level: MirrorMaker 1's consumer read uncommitted data by default; \
             kafka-mirror copies only committed transactions unless the consumer file sets \
             isolation.level=read_uncommitted"
                .to_owned(),
        ),
        Some(_) => {
            return Err(property_error(
                &consumer_path,
                &consumer,
                "isolation.level",
                "must be read_committed or read_uncommitted",
            ))
        }
    }
    let size = |key: &str| -> Result<Option<usize>, ConfigError> {
        consumer
            .get(key)
            .map(|v| {
                v.trim().parse::<usize>().map_err(|_| {
                    property_error(&consumer_path, &consumer, key, "must be a size in bytes")
                })
            })
            .transpose()
    };
    if let Some(bytes) = size("fetch.max.bytes")? {
        replication.fetch_max_bytes = bytes;
    }
    if let Some(bytes) = size("max.partition.fetch.bytes")? {
        replication.partition_fetch_bytes = bytes;
    }
    if let Some(ms) = size("fetch.max.wait.ms")? {
        replication.fetch_max_wait_ms = ms as u64;
    }
    if options.abort_on_send_failure == Some(false) {
        // MirrorMaker 1 logged the failed send and went on.
        replication.on_refused_batch = RefusedBatchPolicy::Skip;
    }
    if let Some(ms) = options.offset_commit_interval_ms {
        config.checkpoints.interval_ms = ms;
    }
    if let Some(streams) = options.num_streams {
        notices.push(format!(
            "--num.streams {streams}: ignored; one kafka-mirror process copies every partition concurrently"
        ));
    }
    Ok(Translation { config, notices })
}

/// MirrorMaker 1's topic list as a regex: `,` separated alternatives, and
/// spaces and quotes dropped, as its `IncludeList` does.
fn mm1_include(list: &str) -> String {
    list.chars()
        .filter(|c| !matches!(c, ' ' | '"' | '\''))
        .map(|c| if c == ',' { '|' } else { c })
        .collect()
}

/// MirrorMaker 2 keys with no counterpart that change nothing about the data
/// copied: its side features and the Kafka Connect machinery around it.
const MM2_IGNORED: &[(&str, &str)] = &[
    (
        "tasks.max",
        "one kafka-mirror process copies every partition concurrently",
    ),
    (
        "emit.heartbeats.enabled",
        "kafka-mirror writes no heartbeats topic",
    ),
    (
        "emit.heartbeats.interval.seconds",
        "kafka-mirror writes no heartbeats topic",
    ),
    (
        "emit.checkpoints.enabled",
        "kafka-mirror writes MirrorMaker 2's checkpoints along its group offset sync, \
         where sync.group.offsets.enabled = true",
    ),
    (
        "emit.checkpoints.interval.seconds",
        "kafka-mirror writes MirrorMaker 2's checkpoints at each group offset sync \
         (sync.group.offsets.interval.seconds)",
    ),
    ("sync.group.offsets.interval.seconds", GROUPS_UNUSED),
    (
        "emit.offset-syncs.enabled",
        "kafka-mirror keeps its progress in its checkpoint topic",
    ),
    (
        "sync.topic.acls.interval.seconds",
        "ACLs follow at the topic refresh interval, refresh_interval_ms",
    ),
    (
        "sync.topic.configs.interval.seconds",
        "configs follow at refresh_interval_ms",
    ),
    (
        "refresh.groups.enabled",
        "kafka-mirror looks for matching groups at every offset sync",
    ),
    (
        "refresh.groups.interval.seconds",
        "kafka-mirror looks for matching groups at every offset sync",
    ),
    ("groups", GROUPS_UNUSED),
    ("groups.exclude", GROUPS_UNUSED),
    ("groups.blacklist", GROUPS_UNUSED),
];

/// Why a group sync setting of a flow that does not sync groups is ignored.
const GROUPS_UNUSED: &str = "used only where sync.group.offsets.enabled = true";

/// Suffixes of MirrorMaker 2 and Kafka Connect settings for their own
/// internal topics, storage and workers: nothing kafka-mirror has.
const MM2_INTERNAL_SUFFIXES: &[&str] = &[
    ".replication.factor",
    ".topic.location",
    "storage.topic",
    "storage.partitions",
    ".converter",
    "dedicated.mode.enable.internal.rest",
    "offset.flush.interval.ms",
    "offset.flush.timeout.ms",
];

/// Per-cluster client sections MirrorMaker 2 splits settings into.
const MM2_CLIENT_SECTIONS: &[&str] = &["consumer.", "producer.", "admin."];

const MM2_DEFAULT_POLICY: &str = "org.apache.kafka.connect.mirror.DefaultReplicationPolicy";
const MM2_IDENTITY_POLICY: &str = "org.apache.kafka.connect.mirror.IdentityReplicationPolicy";
/// MirrorMaker 2's `groups` and `groups.exclude` defaults: every group but
/// the console consumers', Kafka Connect's and the internal ones.
const MM2_DEFAULT_GROUPS: &str = ".*";
const MM2_DEFAULT_GROUPS_EXCLUDE: &str = "console-consumer-.*, connect-.*, __.*";
/// MirrorMaker 2's `sync.group.offsets.interval.seconds` default.
const MM2_DEFAULT_GROUP_SYNC_SECONDS: u64 = 60;
/// MirrorMaker 2's `sync.topic.acls.enabled` default (`MirrorSourceConfig`).
const MM2_DEFAULT_ACL_SYNC: bool = true;

/// Translates a MirrorMaker 2 dedicated-mode properties file.
pub fn mm2(props: &Properties, path: &str) -> Result<Translation, ConfigError> {
    let error = |key: &str, reason: &str| property_error(path, props, key, reason);
    let aliases: Vec<&str> = props
        .get("clusters")
        .ok_or_else(|| error("clusters", "required: the cluster aliases, comma-separated"))?
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .collect();
    if aliases.is_empty() {
        return Err(error("clusters", "names no cluster"));
    }
    let mut notices = BTreeMap::new();
    let mut used = vec!["clusters".to_owned()];

    // Clusters: the top-level connection settings, then the alias's own.
    let shared = props.filtered(|k| is_connection_key(k) && k != "bootstrap.servers");
    let mut clusters = BTreeMap::new();
    for alias in &aliases {
        let prefix = format!("{alias}.");
        let own = props
            .with_prefix(&prefix)
            .filtered(|k| !MM2_CLIENT_SECTIONS.iter().any(|s| k.starts_with(s)));
        let mut cluster = ClusterConfig::new("");
        properties::apply(
            &mut cluster,
            &shared.overlaid(&own),
            &format!("{path} ({prefix}*)"),
        )?;
        if cluster.bootstrap_servers.trim().is_empty() {
            return Err(error(&format!("{alias}.bootstrap.servers"), "required"));
        }
        for key in own.keys() {
            used.push(format!("{prefix}{key}"));
        }
        clusters.insert((*alias).to_owned(), cluster);
    }
    used.extend(shared.keys().map(str::to_owned));

    // A setting of flow `A->B`, or the top-level one.
    let setting = |flow: &str, key: &str| -> Option<(String, String)> {
        let own = format!("{flow}.{key}");
        props
            .get(&own)
            .map(|v| (own, v.to_owned()))
            .or_else(|| props.get(key).map(|v| (key.to_owned(), v.to_owned())))
    };
    let mut flows = Vec::new();
    for source in &aliases {
        for target in aliases.iter().filter(|t| *t != source) {
            let flow = format!("{source}->{target}");
            let enabled_key = format!("{flow}.enabled");
            used.push(enabled_key.clone());
            match props.get(&enabled_key).map(str::trim) {
                Some("true") => {}
                None | Some("false") => continue,
                Some(_) => return Err(error(&enabled_key, "must be true or false")),
            }
            let mut topics = TopicsConfig::default();
            if let Some((key, list)) = setting(&flow, "topics") {
                topics.include = Some(mm2_regex_list(&list));
                used.push(key);
            }
            let exclude =
                setting(&flow, "topics.exclude").or_else(|| setting(&flow, "topics.blacklist"));
            if let Some((key, list)) = exclude {
                topics.exclude = Some(mm2_regex_list(&list));
                used.push(key);
            }
            if let Some((key, class)) = setting(&flow, "replication.policy.class") {
                topics.replication_policy = Some(match class.trim() {
                    MM2_DEFAULT_POLICY => PolicyKind::Prefix,
                    MM2_IDENTITY_POLICY => PolicyKind::Identity,
                    other => {
                        return Err(error(
                            &key,
                            &format!(
                            "`{other}` is custom Java code; kafka-mirror offers MirrorMaker 2's \
                                 default (prefix) and identity policies, and topic_template for \
                                 other names"
                        ),
                        ))
                    }
                });
                used.push(key);
            } else {
                // MirrorMaker 2's default: DefaultReplicationPolicy.
                topics.replication_policy = Some(PolicyKind::Prefix);
            }
            if let Some((key, separator)) = setting(&flow, "replication.policy.separator") {
                topics.separator = Some(separator);
                used.push(key);
            }
            if let Some((key, value)) = setting(&flow, "sync.topic.configs.enabled") {
                if value.trim() != "true" {
                    return Err(error(
                        &key,
                        "kafka-mirror always copies topic configs, except the ones listed in \
                         never_copy_configs: remove this key, or convert the file and list \
                         the configs to keep there",
                    ));
                }
                used.push(key);
            }
            if let Some((key, list)) = setting(&flow, "config.properties.exclude") {
                topics.never_copy_configs = Some(mm2_config_names(&list, &key, &mut notices));
                used.push(key);
            }
            if let Some((key, value)) = setting(&flow, "refresh.topics.interval.seconds") {
                let seconds: u64 = value
                    .trim()
                    .parse()
                    .map_err(|_| error(&key, "must be a number of seconds"))?;
                topics.refresh_interval_ms = Some(seconds.saturating_mul(1000));
                used.push(key);
            }
            let mut groups = GroupsConfig::default();
            let sync = setting(&flow, "sync.group.offsets.enabled");
            if let Some((key, value)) = &sync {
                match value.trim() {
                    "true" | "false" => used.push(key.clone()),
                    _ => return Err(error(key, "must be true or false")),
                }
            }
            if sync.is_some_and(|(_, value)| value.trim() == "true") {
                let include = setting(&flow, "groups");
                let exclude =
                    setting(&flow, "groups.exclude").or_else(|| setting(&flow, "groups.blacklist"));
                let interval = setting(&flow, "sync.group.offsets.interval.seconds");
                groups.include = Some(mm2_regex_list(
                    include
                        .as_ref()
                        .map_or(MM2_DEFAULT_GROUPS, |(_, list)| list),
                ));
                groups.exclude = Some(mm2_regex_list(
                    exclude
                        .as_ref()
                        .map_or(MM2_DEFAULT_GROUPS_EXCLUDE, |(_, list)| list),
                ));
                let seconds = match &interval {
                    None => MM2_DEFAULT_GROUP_SYNC_SECONDS,
                    Some((key, value)) => value
                        .trim()
                        .parse()
                        .ok()
                        .filter(|seconds| *seconds > 0)
                        .ok_or_else(|| error(key, "must be a number of seconds, at least 1"))?,
                };
                groups.sync_interval_ms = Some(seconds.saturating_mul(1000));
                let emit = setting(&flow, "emit.checkpoints.enabled");
                if let Some((key, value)) = &emit {
                    groups.mm2_checkpoints = Some(match value.trim() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(error(key, "must be true or false")),
                    });
                }
                used.extend(
                    [include, exclude, interval, emit]
                        .into_iter()
                        .flatten()
                        .map(|(key, _)| key),
                );
            }
            // MirrorMaker 2 copies only literal topic ACLs, ALL as READ and
            // without WRITE; kafka-mirror's sync is never broader (no write
            // access to a copy at all unless copy_write) and also follows
            // prefixed topic ACLs and the synced groups' ACLs.
            let acl_sync = match setting(&flow, "sync.topic.acls.enabled") {
                None => MM2_DEFAULT_ACL_SYNC,
                Some((key, value)) => {
                    let on = match value.trim() {
                        "true" => true,
                        "false" => false,
                        _ => return Err(error(&key, "must be true or false")),
                    };
                    used.push(key);
                    on
                }
            };
            flows.push(FlowConfig {
                name: None,
                source: (*source).to_owned(),
                target: (*target).to_owned(),
                topics,
                groups,
                replication: Default::default(),
                acls: FlowAclsConfig {
                    sync: Some(acl_sync),
                    ..FlowAclsConfig::default()
                },
            });
        }
    }
    if flows.is_empty() {
        return Err(error(
            "clusters",
            "no flow is enabled: set `A->B.enabled = true` for each copy",
        ));
    }

    let mut config = MirrorConfig::new(ClusterConfig::new(""), ClusterConfig::new(""));
    config.source = None;
    config.target = None;
    config.name = "mm2".to_owned();
    config.clusters = clusters;
    config.flows = flows;
    if let Some(factor) = props.get("replication.factor") {
        config.replication.replication_factor = factor
            .trim()
            .parse()
            .map_err(|_| error("replication.factor", "must be a number"))?;
        used.push("replication.factor".to_owned());
    }
    // KIP-656: a worker setting of MirrorMaker 2's dedicated mode, per
    // target cluster (`B.exactly.once.source.support`) or for all; the
    // replication settings of a converted file are the run's, so any one
    // enabled turns exactly-once on for every flow.
    for key in props
        .keys()
        .filter(|key| key.ends_with("exactly.once.source.support"))
    {
        match props.get(key).map(str::trim).unwrap_or_default() {
            "enabled" => config.replication.exactly_once = true,
            "disabled" | "preparing" => {}
            _ => return Err(error(key, "must be enabled, preparing or disabled")),
        }
        used.push(key.to_owned());
    }

    for key in props.keys() {
        if used.iter().any(|u| u == key) {
            continue;
        }
        // Drop `A.` or `A->B.` to find the setting's own name.
        let bare = aliases
            .iter()
            .flat_map(|a| {
                let flow_prefix = aliases.iter().map(move |b| format!("{a}->{b}."));
                std::iter::once(format!("{a}.")).chain(flow_prefix)
            })
            .find_map(|prefix| key.strip_prefix(prefix.as_str()).map(str::to_owned))
            .unwrap_or_else(|| key.to_owned());
        let reason = if let Some((_, why)) = MM2_IGNORED.iter().find(|(k, _)| *k == bare) {
            (*why).to_owned()
        } else if MM2_INTERNAL_SUFFIXES.iter().any(|s| bare.ends_with(s)) {
            "a setting of MirrorMaker 2's or Kafka Connect's own topics and workers".to_owned()
        } else if MM2_CLIENT_SECTIONS.iter().any(|s| bare.starts_with(s)) {
            "client tuning of MirrorMaker 2's consumers, producers or admin clients".to_owned()
        } else {
            "not a setting kafka-mirror knows".to_owned()
        };
        notices.insert(key.to_owned(), reason);
    }
    let notices = notices
        .into_iter()
        .map(|(key, reason)| format!("{key}: ignored ({reason})"))
        .collect();
    Ok(Translation { config, notices })
}

/// MirrorMaker 2's topic lists: comma-separated regexes, each matching the
/// whole name.
fn mm2_regex_list(list: &str) -> String {
    let parts: Vec<&str> = list
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    match parts[..] {
        [single] => single.to_owned(),
        _ => parts
            .iter()
            .map(|p| format!("(?:{p})"))
            .collect::<Vec<_>>()
            .join("|"),
    }
}

/// `config.properties.exclude` regexes as config names: `retention\.ms` is
/// `retention.ms`; a real pattern cannot be listed and is reported.
fn mm2_config_names(list: &str, key: &str, notices: &mut BTreeMap<String, String>) -> Vec<String> {
    let mut names = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let name = item.replace("\\.", ".");
        if name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-' || c == '_')
        {
            names.push(name);
        } else {
            notices.insert(
                format!("{key} ({item})"),
                "a pattern, not a config name: list the names it meant in never_copy_configs"
                    .to_owned(),
            );
        }
    }
    names
}

/// Writes a translated config as a kafka-mirror TOML file, its notices as
/// comments on top. Passwords are never written: a cluster whose password
/// was in the MirrorMaker file reads it from an environment variable named
/// in a comment.
pub fn to_toml(translation: &Translation, origin: &Path) -> String {
    use toml::{Table, Value};
    let config = &translation.config;
    let mut header = vec![format!(
        "# kafka-mirror config converted from {} by `kafka-mirror convert`.",
        origin.display()
    )];
    let mut root = Table::new();
    root.insert("name".into(), Value::String(config.name.clone()));
    let mut replication = Table::new();
    if config.replication.replication_factor != -1 {
        replication.insert(
            "replication_factor".into(),
            Value::Integer(config.replication.replication_factor.into()),
        );
    }
    if config.replication.exactly_once {
        replication.insert("exactly_once".into(), Value::Boolean(true));
    }
    if !replication.is_empty() {
        root.insert("replication".into(), Value::Table(replication));
    }
    let mut clusters = Table::new();
    for (alias, cluster) in &config.clusters {
        let mut table = Table::new();
        table.insert(
            "bootstrap_servers".into(),
            Value::String(cluster.bootstrap_servers.clone()),
        );
        if cluster.client_id != ClusterConfig::new("").client_id {
            table.insert("client_id".into(), Value::String(cluster.client_id.clone()));
        }
        if let Some(tls) = &cluster.tls {
            let mut t = Table::new();
            t.insert("enabled".into(), Value::Boolean(tls.enabled));
            for (key, file) in [
                ("ca_file", &tls.ca_file),
                ("cert_file", &tls.cert_file),
                ("key_file", &tls.key_file),
            ] {
                if let Some(file) = file {
                    t.insert(key.into(), Value::String(file.display().to_string()));
                }
            }
            table.insert("tls".into(), Value::Table(t));
        }
        if let Some(sasl) = &cluster.sasl {
            let mut s = Table::new();
            s.insert("mechanism".into(), Value::String(sasl.mechanism.clone()));
            s.insert("username".into(), Value::String(sasl.username.clone()));
            if sasl.password.is_some() || sasl.password_env.is_some() {
                let variable = sasl.password_env.clone().unwrap_or_else(|| {
                    format!(
                        "KAFKA_MIRROR_{}_PASSWORD",
                        alias.to_ascii_uppercase().replace('-', "_")
                    )
                });
                header.push(format!(
                    "# Set {variable} to the SASL password of cluster {alias} before running."
                ));
                s.insert("password_env".into(), Value::String(variable));
            }
            if let Some(file) = &sasl.password_file {
                s.insert(
                    "password_file".into(),
                    Value::String(file.display().to_string()),
                );
            }
            table.insert("sasl".into(), Value::Table(s));
        }
        clusters.insert(alias.clone(), Value::Table(table));
    }
    root.insert("clusters".into(), Value::Table(clusters));
    let flows = config
        .flows
        .iter()
        .map(|flow| {
            let mut table = Table::new();
            table.insert("source".into(), Value::String(flow.source.clone()));
            table.insert("target".into(), Value::String(flow.target.clone()));
            let topics = topics_table(&flow.topics);
            if !topics.is_empty() {
                table.insert("topics".into(), Value::Table(topics));
            }
            let groups = groups_table(&flow.groups);
            if !groups.is_empty() {
                table.insert("groups".into(), Value::Table(groups));
            }
            let acls = acls_table(&flow.acls);
            if !acls.is_empty() {
                table.insert("acls".into(), Value::Table(acls));
            }
            Value::Table(table)
        })
        .collect();
    root.insert("flows".into(), Value::Array(flows));
    for notice in &translation.notices {
        header.push(format!("# {notice}"));
    }
    // `toml` writes plain values first, then tables: a valid file whatever the
    // order above. A table of strings, numbers and tables always serializes.
    let body = toml::to_string(&root).expect("a TOML table serializes");
    format!("{}\n\n{body}", header.join("\n"))
}

fn topics_table(topics: &TopicsConfig) -> toml::Table {
    use toml::Value;
    let mut table = toml::Table::new();
    let strings = [
        ("include", &topics.include),
        ("exclude", &topics.exclude),
        ("separator", &topics.separator),
    ];
    for (key, value) in strings {
        if let Some(value) = value {
            table.insert(key.into(), Value::String(value.clone()));
        }
    }
    if let Some(policy) = topics.replication_policy {
        let name = match policy {
            PolicyKind::Identity => "identity",
            PolicyKind::Prefix => "prefix",
            PolicyKind::Template => "template",
        };
        table.insert("replication_policy".into(), Value::String(name.into()));
    }
    if let Some(ms) = topics.refresh_interval_ms {
        table.insert(
            "refresh_interval_ms".into(),
            Value::Integer(i64::try_from(ms).unwrap_or(i64::MAX)),
        );
    }
    if let Some(names) = &topics.never_copy_configs {
        table.insert(
            "never_copy_configs".into(),
            Value::Array(names.iter().cloned().map(Value::String).collect()),
        );
    }
    table
}

fn groups_table(groups: &GroupsConfig) -> toml::Table {
    use toml::Value;
    let mut table = toml::Table::new();
    for (key, value) in [("include", &groups.include), ("exclude", &groups.exclude)] {
        if let Some(value) = value {
            table.insert(key.into(), Value::String(value.clone()));
        }
    }
    if let Some(ms) = groups.sync_interval_ms {
        table.insert(
            "sync_interval_ms".into(),
            Value::Integer(i64::try_from(ms).unwrap_or(i64::MAX)),
        );
    }
    if let Some(write) = groups.mm2_checkpoints {
        table.insert("mm2_checkpoints".into(), Value::Boolean(write));
    }
    table
}

fn acls_table(acls: &FlowAclsConfig) -> toml::Table {
    [
        ("sync", acls.sync),
        ("copy_write", acls.copy_write),
        ("prune", acls.prune),
    ]
    .into_iter()
    .filter_map(|(key, value)| Some((key.to_owned(), toml::Value::Boolean(value?))))
    .collect()
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;

    use super::*;
    use crate::config::properties::tests::assert_named_without_secret;
    use crate::config::Flow;

    const SECRET: &str = "Zq7-s3cr3t-Xv";

    #[test]
    fn mm2_exactly_once_source_support_turns_exactly_once_on() {
        let head =
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\n";
        for (line, on) in [
            ("", false),
            ("exactly.once.source.support=enabled\n", true),
            ("B.exactly.once.source.support=enabled\n", true),
            ("exactly.once.source.support=preparing\n", false),
        ] {
            let text = format!("{head}{line}");
            let props = Properties::parse(&text).expect("valid syntax");
            let translation = mm2(&props, "mm2.properties").expect(&text);
            assert_eq!(translation.config.replication.exactly_once, on, "{text}");
            let converted = to_toml(&translation, Path::new("mm2.properties"));
            let reread = MirrorConfig::from_toml(&converted).expect("converted file");
            assert_eq!(reread.replication.exactly_once, on, "{converted}");
            assert!(translation.notices.is_empty(), "{:?}", translation.notices);
        }
        let props = Properties::parse(&format!("{head}exactly.once.source.support=yes\n"))
            .expect("valid syntax");
        let err = mm2(&props, "mm2.properties").expect_err("not a value");
        assert!(
            err.to_string().contains("exactly.once.source.support"),
            "{err}"
        );
    }

    #[test]
    fn broken_mirrormaker_files_never_show_a_secret() {
        let plain = "org.apache.kafka.common.security.plain.PlainLoginModule";
        let head =
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\n\
                    A.security.protocol=SASL_SSL\nA.sasl.mechanism=PLAIN\n";
        for (line, key) in [
            (format!("A.ssl.key.password={SECRET}"), "ssl.key.password"),
            (
                format!("A.ssl.truststore.pasword={SECRET}"),
                "ssl.truststore.pasword",
            ),
            (
                format!("A.sasl.jaas.config={plain} required username=u password=abc {SECRET};"),
                "sasl.jaas.config",
            ),
            (
                format!("A.sasl.jaas.config={plain} required username=u password=\"{SECRET};"),
                "sasl.jaas.config",
            ),
        ] {
            let text = format!("{head}{line}\n");
            let props = Properties::parse(&text).expect("valid syntax");
            let err = mm2(&props, "mm2.properties").expect_err(&text);
            assert_named_without_secret(&err, "mm2.properties (A.*)", 7, key, &text);
        }

        let file = |text: &str| {
            let mut file = tempfile::NamedTempFile::new().expect("temp file");
            file.write_all(text.as_bytes()).expect("write");
            file
        };
        let consumer = file(&format!(
            "bootstrap.servers=a:1\nsecurity.protocol=SSL\nssl.key.password={SECRET}\n"
        ));
        let producer = file(&format!(
            "bootstrap.servers=b:1\nsecurity.protocol=SASL_SSL\nsasl.mechanism=PLAIN\n\
             sasl.jaas.config={plain} required username=\"{SECRET}\" password={SECRET} x;\n"
        ));
        let options = |consumer: &Path, producer: &Path| Mm1Options {
            consumer_config: consumer.to_owned(),
            producer_config: producer.to_owned(),
            include: Some("t".into()),
            ..Mm1Options::default()
        };
        let good = file("bootstrap.servers=c:1\n");
        for (consumer, producer, named, line, key) in [
            (
                consumer.path(),
                good.path(),
                consumer.path(),
                3,
                "ssl.key.password",
            ),
            (
                good.path(),
                producer.path(),
                producer.path(),
                4,
                "sasl.jaas.config",
            ),
        ] {
            let err = mm1(&options(consumer, producer)).expect_err("broken");
            let path = named.display().to_string();
            assert_named_without_secret(&err, &path, line, key, &path);
        }
    }

    #[test]
    fn mm2_group_offset_sync_maps_per_flow_with_its_defaults() {
        let text = "clusters=A,B,C\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\n\
                    C.bootstrap.servers=c:1\n\
                    A->B.enabled=true\nA->C.enabled=true\nB->C.enabled=true\n\
                    A->B.sync.group.offsets.enabled=true\n\
                    sync.group.offsets.enabled=false\n\
                    A->C.sync.group.offsets.enabled=true\n\
                    A->C.groups=app-.*, connect-.*\nA->C.groups.exclude=app-test\n\
                    A->C.sync.group.offsets.interval.seconds=5\n\
                    A->C.emit.checkpoints.enabled=false\n\
                    B->C.groups=orphans\nB->C.emit.checkpoints.enabled=true\n\
                    emit.checkpoints.interval.seconds=5\n";
        let props = Properties::parse(text).expect("valid syntax");
        let translation = mm2(&props, "mm2.properties").expect("translates");
        let flows = translation.config.flows().expect("flows");
        let names: Vec<_> = flows.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["A->B", "A->C", "B->C"]);

        // MirrorMaker 2's defaults: every group but its usual exclusions, each minute.
        let defaults = flows[0].groups.clone().expect("A->B syncs");
        assert_eq!(defaults.interval(), std::time::Duration::from_secs(60));
        assert!(
            defaults.mm2_checkpoints(),
            "MirrorMaker 2 emits checkpoints by default"
        );
        assert!(defaults.selects("app-orders"));
        for excluded in ["console-consumer-4711", "connect-mm2", "__internal"] {
            assert!(!defaults.selects(excluded), "{excluded}");
        }
        // The flow's own lists replace them, both of them.
        let own = flows[1].groups.clone().expect("A->C syncs");
        assert_eq!(own.interval(), std::time::Duration::from_secs(5));
        assert!(!own.mm2_checkpoints(), "emit.checkpoints.enabled=false");
        assert!(own.selects("app-orders") && own.selects("connect-x"));
        assert!(!own.selects("app-test") && !own.selects("billing"));
        // Off unless enabled, whatever the group lists say.
        assert!(flows[2].groups.is_none());
        assert_eq!(
            translation.notices,
            [
                "B->C.emit.checkpoints.enabled: ignored (kafka-mirror writes MirrorMaker 2's \
                 checkpoints along its group offset sync, where sync.group.offsets.enabled = true)",
                "B->C.groups: ignored (used only where sync.group.offsets.enabled = true)",
                "emit.checkpoints.interval.seconds: ignored (kafka-mirror writes MirrorMaker 2's \
                 checkpoints at each group offset sync (sync.group.offsets.interval.seconds))",
            ]
        );

        // `convert` writes the same settings as a native file.
        let converted =
            MirrorConfig::from_toml(&to_toml(&translation, Path::new("mm2.properties")))
                .expect("the converted file is valid")
                .flows()
                .expect("flows");
        let own = converted[1].groups.clone().expect("A->C syncs");
        assert_eq!(own.interval(), std::time::Duration::from_secs(5));
        assert!(!own.mm2_checkpoints());
        assert!(own.selects("connect-x") && !own.selects("app-test"));
        assert!(!converted[0]
            .groups
            .clone()
            .expect("A->B")
            .selects("connect-mm2"));
        assert!(converted[2].groups.is_none());
    }

    #[test]
    fn mm2_topic_acl_sync_is_on_by_default_and_set_per_flow() {
        let text = "clusters=A,B,C\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\n\
                    C.bootstrap.servers=c:1\n\
                    A->B.enabled=true\nA->C.enabled=true\nB->C.enabled=true\n\
                    A->C.sync.topic.acls.enabled=false\n\
                    sync.topic.acls.interval.seconds=30\n";
        let props = Properties::parse(text).expect("valid syntax");
        let translation = mm2(&props, "mm2.properties").expect("translates");
        let synced = |flows: &[Flow]| -> Vec<bool> { flows.iter().map(|f| f.acls.sync).collect() };
        let flows = translation.config.flows().expect("flows");
        // MirrorMaker 2's default is on; A->C turns it off for itself.
        assert_eq!(synced(&flows), [true, false, true]);
        assert!(flows.iter().all(|f| !f.acls.copy_write && !f.acls.prune));
        assert_eq!(
            translation.notices,
            [
                "sync.topic.acls.interval.seconds: ignored (ACLs follow at the topic refresh \
              interval, refresh_interval_ms)"
            ]
        );
        // `convert` writes each flow's choice.
        let converted = to_toml(&translation, Path::new("mm2.properties"));
        assert!(
            converted.contains("[flows.acls]\nsync = false"),
            "{converted}"
        );
        let reread = MirrorConfig::from_toml(&converted)
            .expect("the converted file is valid")
            .flows()
            .expect("flows");
        assert_eq!(synced(&reread), [true, false, true]);

        // Off for every flow at the top level, back on for one.
        let text = "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\n\
                    A->B.enabled=true\nB->A.enabled=true\nsync.topic.acls.enabled=false\n\
                    B->A.sync.topic.acls.enabled=true\n";
        let props = Properties::parse(text).expect("valid syntax");
        let translation = mm2(&props, "mm2.properties").expect("translates");
        assert_eq!(
            synced(&translation.config.flows().expect("flows")),
            [false, true]
        );
        assert!(translation.notices.is_empty(), "{:?}", translation.notices);

        let text = "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\n\
                    A->B.enabled=true\nA->B.sync.topic.acls.enabled=yes\n";
        let props = Properties::parse(text).expect("valid syntax");
        let err = mm2(&props, "mm2.properties").expect_err("not a boolean");
        assert!(
            err.to_string().contains("A->B.sync.topic.acls.enabled"),
            "{err}"
        );
    }

    #[test]
    fn mm2_group_sync_mistakes_name_their_key() {
        let head =
            "clusters=A,B\nA.bootstrap.servers=a:1\nB.bootstrap.servers=b:1\nA->B.enabled=true\n";
        for (line, key) in [
            (
                "sync.group.offsets.enabled=yes",
                "sync.group.offsets.enabled",
            ),
            (
                "A->B.sync.group.offsets.enabled=true\nA->B.sync.group.offsets.interval.seconds=0",
                "A->B.sync.group.offsets.interval.seconds",
            ),
            (
                "sync.group.offsets.enabled=true\nA->B.groups=app-(",
                "flows[0].groups.include",
            ),
            (
                "sync.group.offsets.enabled=true\nemit.checkpoints.enabled=no",
                "emit.checkpoints.enabled",
            ),
        ] {
            let text = format!("{head}{line}\n");
            let props = Properties::parse(&text).expect("valid syntax");
            let err = mm2(&props, "mm2.properties")
                .and_then(|t| t.config.validate().map(|()| t))
                .expect_err(&text)
                .to_string();
            assert!(err.contains(&format!("key `{key}`")), "{text}: {err}");
        }
    }
}
