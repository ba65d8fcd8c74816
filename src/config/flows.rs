//! Flows: which cluster is copied into which, resolved from the file into
//! what one pipeline engine runs.
//!
//! A file declares either one `[source]` and one `[target]` (one flow, the
//! original form, kept as it was: its checkpoints are keyed by the mirror
//! `name` alone) or named `[clusters.<alias>]` and any number of `[[flows]]`
//! between them. Each flow's `topics`, `groups`, `replication` and `acls`
//! tables override the top-level `[topics]`, `[groups]`, `[replication]` and
//! `[acls]` key by key, so shared settings are written once.
//!
//! Loops are refused here, before anything connects: any cycle in the flow
//! graph (active-active, rings) needs a replication policy whose names record
//! the source cluster (`prefix`, or a template with `{source}`), because only
//! then can a flow tell a topic that came from its target from one that did
//! not (see `policy.rs`).

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::time::Duration;

use super::{
    invalid, AclsConfig, ByteRate, CheckpointConfig, ClusterConfig, ConfigError, GroupSync,
    GroupsConfig, InstancesConfig, MirrorConfig, ReplicationConfig, TopicFilter, TopicsConfig,
};
use crate::policy::ReplicationPolicy;

/// `[[flows]]`: one copy from a source cluster into a target cluster.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowConfig {
    /// Names the flow in logs, the summary and its checkpoint keys; by
    /// default `<source>-><target>`.
    #[serde(default)]
    pub name: Option<String>,
    /// The alias of the cluster that is read.
    pub source: String,
    /// The alias of the cluster that is written.
    pub target: String,
    /// Overrides of the top-level `[topics]` for this flow.
    #[serde(default)]
    pub topics: TopicsConfig,
    /// Overrides of the top-level `[groups]` for this flow.
    #[serde(default)]
    pub groups: GroupsConfig,
    /// Overrides of the top-level `[replication]` for this flow.
    #[serde(default)]
    pub replication: FlowReplicationConfig,
    /// Overrides of the top-level `[acls]` for this flow.
    #[serde(default)]
    pub acls: FlowAclsConfig,
}

/// `[flows.replication]`: the replication settings a flow may set for
/// itself; the rest are the top-level `[replication]`'s, shared by every
/// flow (one memory budget, one fetch sizing).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowReplicationConfig {
    /// This flow's `max_bytes_per_sec`, instead of `replication.max_bytes_per_sec`.
    #[serde(default)]
    pub max_bytes_per_sec: Option<ByteRate>,
}

impl FlowReplicationConfig {
    /// `defaults` with these settings laid over them.
    fn over(&self, defaults: &ReplicationConfig) -> ReplicationConfig {
        ReplicationConfig {
            max_bytes_per_sec: self.max_bytes_per_sec.or(defaults.max_bytes_per_sec),
            ..defaults.clone()
        }
    }
}

/// `[flows.acls]`: this flow's ACL sync settings, each one set laid over
/// the top-level `[acls]` (so one flow of many can sync, or prune).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlowAclsConfig {
    /// This flow's `acls.sync`.
    #[serde(default)]
    pub sync: Option<bool>,
    /// This flow's `acls.copy_write`.
    #[serde(default)]
    pub copy_write: Option<bool>,
    /// This flow's `acls.prune`.
    #[serde(default)]
    pub prune: Option<bool>,
}

impl FlowAclsConfig {
    /// `defaults` with these settings laid over them.
    fn over(&self, defaults: &AclsConfig) -> AclsConfig {
        AclsConfig {
            sync: self.sync.unwrap_or(defaults.sync),
            copy_write: self.copy_write.unwrap_or(defaults.copy_write),
            prune: self.prune.unwrap_or(defaults.prune),
        }
    }
}

/// Which way a flow copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// The source's topics, named on the target by the policy.
    Forward,
    /// Back where they came from (`kafka-mirror failback`): the copies a
    /// forward flow made, read on its target (this flow's source), each
    /// into the topic it was copied from. The filter and policy are the
    /// forward flow's.
    Back,
}

/// One flow, resolved: everything an engine needs to copy one source into one target.
#[derive(Debug, Clone)]
pub struct Flow {
    /// Unique among the flows of a config.
    pub name: String,
    /// The `mirror` field of this flow's checkpoint keys: the mirror name for
    /// a `[source]`/`[target]` config (as before flows existed), else
    /// `<mirror name>/<flow name>` so flows never share a key.
    pub checkpoint_name: String,
    /// The source cluster's alias (`source` in a one-flow config).
    pub source_alias: String,
    /// The target cluster's alias (`target` in a one-flow config).
    pub target_alias: String,
    /// The source cluster's config key (`source` or `clusters.<alias>`), for errors.
    pub source_key: String,
    /// The target cluster's config key, for errors.
    pub target_key: String,
    /// How to reach the source.
    pub source: ClusterConfig,
    /// How to reach the target.
    pub target: ClusterConfig,
    /// The topic settings in force (the flow's over the top-level ones).
    pub topics: TopicsConfig,
    /// Which source topics are copied.
    pub filter: TopicFilter,
    /// How target topics are named.
    pub policy: ReplicationPolicy,
    /// Forward, or back along a forward flow.
    pub direction: Direction,
    /// How often the source is checked for new topics, partitions and configs.
    pub topic_refresh_interval: Duration,
    /// Topic configs never copied: the built-in list plus the flow's own.
    pub never_copy_configs: Vec<String>,
    /// Which consumer groups' offsets are synced onto the target, and how
    /// often; `None` when no group is.
    pub groups: Option<GroupSync>,
    /// Whether and how ACLs are copied (the flow's `acls` over the top-level `[acls]`).
    pub acls: AclsConfig,
    /// How data moves.
    pub replication: ReplicationConfig,
    /// Where progress is stored.
    pub checkpoints: CheckpointConfig,
    /// How instances of the same name share the flow.
    pub instances: InstancesConfig,
}

impl Flow {
    /// Whether a source topic is copied by this flow: selected by the filter,
    /// and not a copy that came through the target (which would loop).
    /// Going back, a copy the forward flow made of a topic it selects.
    pub fn selects(&self, topic: &str, internal: bool) -> bool {
        match self.direction {
            Direction::Forward => {
                self.filter.selects(topic, internal)
                    && !self.policy.came_through(topic, &self.target_alias)
            }
            Direction::Back => self.origin(topic).is_some_and(|origin| {
                self.filter.selects(origin, internal)
                    && !self.policy.came_through(origin, &self.source_alias)
            }),
        }
    }

    /// The group on the target through which the instances of the flow's
    /// name share its partitions: `kafka-mirror.<checkpoint name>`.
    pub fn instances_group(&self) -> String {
        format!("kafka-mirror.{}", self.checkpoint_name)
    }

    /// The target topic a source topic is copied into.
    pub fn target_topic(&self, topic: &str) -> String {
        match self.direction {
            Direction::Forward => self.policy.target_topic(&self.source_alias, topic),
            Direction::Back => self.origin(topic).unwrap_or(topic).to_owned(),
        }
    }

    /// Going back, the topic on this flow's target that `topic` is a copy of.
    fn origin<'a>(&self, topic: &'a str) -> Option<&'a str> {
        self.policy.source_topic(&self.target_alias, topic)
    }

    /// The flow that copies this one's target topics back into the topics
    /// they were copied from, under its own checkpoint name
    /// (`<checkpoint name>/failback`), with the same group selection.
    pub fn failback(&self) -> Flow {
        let mut back = self.clone();
        back.name = format!("{}/failback", self.name);
        back.checkpoint_name = format!("{}/failback", self.checkpoint_name);
        std::mem::swap(&mut back.source_alias, &mut back.target_alias);
        std::mem::swap(&mut back.source_key, &mut back.target_key);
        std::mem::swap(&mut back.source, &mut back.target);
        back.direction = Direction::Back;
        back
    }
}

impl MirrorConfig {
    /// The flows this config declares, checked: clusters exist, names are
    /// unique, and no cycle of flows keeps topic names.
    pub fn flows(&self) -> Result<Vec<Flow>, ConfigError> {
        // The shared defaults are checked alone, so their errors name `topics.*`.
        self.topics.resolve("topics", &self.checkpoints.topic)?;
        self.groups.resolve("groups")?;
        let legacy = self.source.is_some() || self.target.is_some();
        let declared = !self.clusters.is_empty() || !self.flows.is_empty();
        if legacy && declared {
            return invalid(
                "source",
                "use either [source] and [target] (one flow) or [clusters.<alias>] and [[flows]], not both".into(),
            );
        }
        if legacy {
            let (Some(source), Some(target)) = (&self.source, &self.target) else {
                let missing = if self.source.is_none() {
                    "source"
                } else {
                    "target"
                };
                return invalid(missing, "missing: give both [source] and [target]".into());
            };
            let flow = self.flow(
                self.name.clone(),
                self.name.clone(),
                ("source", "source", source),
                ("target", "target", target),
                (&self.topics, &self.groups, &self.replication, &self.acls),
                "",
            )?;
            return Ok(vec![flow]);
        }
        if self.flows.is_empty() {
            return invalid(
                "flows",
                "no flow: give [source] and [target], or [clusters.<alias>] and [[flows]]".into(),
            );
        }
        for (alias, cluster) in &self.clusters {
            let valid = !alias.is_empty()
                && alias
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !valid {
                return invalid(
                    &format!("clusters.{alias}"),
                    "an alias is letters, digits, '_' and '-' (it can become part of topic names)"
                        .into(),
                );
            }
            cluster.validate(&format!("clusters.{alias}"))?;
        }
        let mut flows: Vec<Flow> = Vec::new();
        for (i, declared) in self.flows.iter().enumerate() {
            let key = format!("flows[{i}]");
            let cluster = |side: &str, alias: &str| {
                self.clusters
                    .get(alias)
                    .ok_or_else(|| ConfigError::Invalid {
                        key: format!("{key}.{side}"),
                        reason: format!(
                            "no cluster `{alias}`; declared: {}",
                            self.clusters.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    })
            };
            let source = cluster("source", &declared.source)?;
            let target = cluster("target", &declared.target)?;
            if declared.source == declared.target {
                return invalid(
                    &format!("{key}.target"),
                    "a flow copies between two clusters; source and target are the same".into(),
                );
            }
            let name = declared
                .name
                .clone()
                .unwrap_or_else(|| format!("{}->{}", declared.source, declared.target));
            if name.is_empty() || name.contains(['\n', '/']) {
                return invalid(
                    &format!("{key}.name"),
                    "must be non-empty, without '/' or newlines".into(),
                );
            }
            if let Some(other) = flows.iter().position(|f| f.name == name) {
                return invalid(
                    &format!("{key}.name"),
                    format!("flow name `{name}` is also flows[{other}]'s: give each flow its own `name`"),
                );
            }
            let source_key = format!("clusters.{}", declared.source);
            let target_key = format!("clusters.{}", declared.target);
            let flow = self.flow(
                name.clone(),
                format!("{}/{name}", self.name),
                (&declared.source, &source_key, source),
                (&declared.target, &target_key, target),
                (
                    &declared.topics.over(&self.topics),
                    &declared.groups.over(&self.groups),
                    &declared.replication.over(&self.replication),
                    &declared.acls.over(&self.acls),
                ),
                &format!("{key}."),
            )?;
            for alias in self.clusters.keys() {
                if let Some(sep) = flow
                    .policy
                    .separators()
                    .into_iter()
                    .find(|s| alias.contains(s))
                {
                    return invalid(
                        &format!("clusters.{alias}"),
                        format!(
                            "the alias contains `{sep}`, which {key}'s replication policy `{}` puts next to the source alias, so topic names could not be read back",
                            flow.policy
                        ),
                    );
                }
            }
            flows.push(flow);
        }
        refuse_unmarked_cycles(&flows)?;
        Ok(flows)
    }

    /// One resolved flow; `scope` (`""` or `flows[i].`) prefixes the keys
    /// in the errors of its topic and group settings.
    fn flow(
        &self,
        name: String,
        checkpoint_name: String,
        (source_alias, source_key, source): (&str, &str, &ClusterConfig),
        (target_alias, target_key, target): (&str, &str, &ClusterConfig),
        (topics, groups, replication, acls): (
            &TopicsConfig,
            &GroupsConfig,
            &ReplicationConfig,
            &AclsConfig,
        ),
        scope: &str,
    ) -> Result<Flow, ConfigError> {
        source.validate(source_key)?;
        target.validate(target_key)?;
        if source.max_frame_bytes < self.replication.fetch_max_bytes + 1024 * 1024 {
            return invalid(
                &format!("{source_key}.max_frame_bytes"),
                format!(
                    "must exceed replication.fetch_max_bytes ({}) by at least 1 MiB, or Fetch responses would be refused",
                    self.replication.fetch_max_bytes
                ),
            );
        }
        let resolved = topics.resolve(&format!("{scope}topics"), &self.checkpoints.topic)?;
        let groups = groups.resolve(&format!("{scope}groups"))?;
        Ok(Flow {
            name,
            checkpoint_name,
            source_alias: source_alias.to_owned(),
            target_alias: target_alias.to_owned(),
            source_key: source_key.to_owned(),
            target_key: target_key.to_owned(),
            source: source.clone(),
            target: target.clone(),
            topics: topics.clone(),
            filter: resolved.filter,
            policy: resolved.policy,
            direction: Direction::Forward,
            topic_refresh_interval: resolved.refresh_interval,
            never_copy_configs: resolved.never_copy_configs,
            groups,
            acls: acls.clone(),
            replication: replication.clone(),
            checkpoints: self.checkpoints.clone(),
            instances: self.instances.clone(),
        })
    }
}

/// Refuses a flow on a cycle of flows whose policy keeps topic names: its
/// copies would look local to the next flow and go round forever.
fn refuse_unmarked_cycles(flows: &[Flow]) -> Result<(), ConfigError> {
    for (i, flow) in flows.iter().enumerate() {
        if flow.policy.names_source() {
            continue;
        }
        let Some(path) = path_between(flows, &flow.target_alias, &flow.source_alias) else {
            continue;
        };
        let cycle = std::iter::once(flow.source_alias.as_str())
            .chain(path.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" -> ");
        return invalid(
            &format!("flows[{i}].topics.replication_policy"),
            format!(
                "flow `{}` is on the cycle {cycle}, and its topic names (`{}`) do not record the source cluster, \
                 so a copied topic would look local to the next flow and its records would be copied round the cycle forever; \
                 use replication_policy = \"prefix\" (or a topic_template with {{source}}) on every flow of the cycle",
                flow.name, flow.policy
            ),
        );
    }
    Ok(())
}

/// The clusters on a shortest path of flows from `from` to `to`, both included.
fn path_between(flows: &[Flow], from: &str, to: &str) -> Option<Vec<String>> {
    let mut came_from: BTreeMap<&str, &str> = BTreeMap::new();
    let mut seen = HashSet::from([from]);
    let mut queue = VecDeque::from([from]);
    while let Some(at) = queue.pop_front() {
        if at == to {
            let mut path = vec![to.to_owned()];
            let mut step = to;
            while let Some(previous) = came_from.get(step) {
                path.push((*previous).to_owned());
                step = previous;
            }
            path.reverse();
            return Some(path);
        }
        for flow in flows.iter().filter(|f| f.source_alias == at) {
            if seen.insert(&flow.target_alias) {
                came_from.insert(&flow.target_alias, at);
                queue.push_back(&flow.target_alias);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clusters(aliases: &[&str]) -> String {
        aliases
            .iter()
            .enumerate()
            .map(|(i, a)| {
                format!(
                    "[clusters.{a}]\nbootstrap_servers = \"127.0.0.1:{}\"\n",
                    9000 + i
                )
            })
            .collect()
    }

    fn flow(source: &str, target: &str, topics: &str) -> String {
        format!(
            "[[flows]]\nsource = \"{source}\"\ntarget = \"{target}\"\ntopics = {{ {topics} }}\n"
        )
    }

    #[test]
    fn a_source_target_file_is_one_flow_keyed_as_before() {
        let config = MirrorConfig::from_toml(
            "name = \"dr\"\n[source]\nbootstrap_servers = \"a:1\"\n[target]\nbootstrap_servers = \"b:1\"\n",
        )
        .expect("valid");
        let flows = config.flows().expect("flows");
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].checkpoint_name, "dr");
        assert_eq!(flows[0].target_topic("orders"), "orders");
    }

    #[test]
    fn hub_and_spokes_prefix_each_source() {
        let text = format!(
            "name = \"agg\"\n[topics]\nreplication_policy = \"prefix\"\ninclude = \"orders.*\"\n{}{}{}{}",
            clusters(&["eu", "us", "apac", "hub"]),
            flow("eu", "hub", ""),
            flow("us", "hub", "include = \"sales\""),
            flow("apac", "hub", "separator = \"_\""),
        );
        let flows = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows");
        let names: Vec<_> = flows.iter().map(|f| f.name.as_str()).collect();
        assert_eq!(names, ["eu->hub", "us->hub", "apac->hub"]);
        assert_eq!(flows[0].checkpoint_name, "agg/eu->hub");
        assert_eq!(flows[0].target_topic("orders"), "eu.orders");
        assert!(flows[0].selects("orders", false) && !flows[0].selects("sales", false));
        assert!(flows[1].selects("sales", false) && !flows[1].selects("orders", false));
        assert_eq!(flows[2].target_topic("orders"), "apac_orders");
    }

    #[test]
    fn active_active_with_prefix_never_copies_back() {
        let text = format!(
            "[topics]\nreplication_policy = \"prefix\"\n{}{}{}",
            clusters(&["a", "b"]),
            flow("a", "b", ""),
            flow("b", "a", ""),
        );
        let flows = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows");
        assert!(flows[0].selects("x", false));
        assert_eq!(flows[0].target_topic("x"), "a.x");
        // b holds a.x, the copy of a's x: flow b->a must not send it home.
        assert!(!flows[1].selects("a.x", false));
        assert!(flows[1].selects("x", false));
    }

    #[test]
    fn a_failback_flow_copies_the_copies_home() {
        let text = format!(
            "name = \"dr\"\n[topics]\nreplication_policy = \"prefix\"\ninclude = \"orders.*\"\n{}{}",
            clusters(&["a", "b"]),
            flow("a", "b", ""),
        );
        let flows = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows");
        let back = flows[0].failback();
        assert_eq!(
            (back.source_alias.as_str(), back.target_alias.as_str()),
            ("b", "a")
        );
        assert_eq!(
            back.source.bootstrap_servers,
            flows[0].target.bootstrap_servers
        );
        assert_eq!(back.checkpoint_name, "dr/a->b/failback");
        assert!(back.selects("a.orders", false));
        assert_eq!(back.target_topic("a.orders"), "orders");
        // b's own topics, copies of other clusters' and unselected topics stay.
        for other in [
            "orders",
            "c.orders",
            "a.payments",
            "a.kafka-mirror-checkpoints",
        ] {
            assert!(!back.selects(other, false), "{other}");
        }
        let identity = MirrorConfig::from_toml(
            "name = \"dr\"\n[source]\nbootstrap_servers = \"a:1\"\n[target]\nbootstrap_servers = \"b:1\"\n[topics]\nexclude = \"tmp.*\"\n",
        )
        .expect("valid")
        .flows()
        .expect("flows")[0]
            .failback();
        assert_eq!(identity.checkpoint_name, "dr/failback");
        assert!(identity.selects("orders", false));
        assert_eq!(identity.target_topic("orders"), "orders");
        assert!(!identity.selects("tmp1", false));
        assert!(!identity.selects("kafka-mirror-checkpoints", false));
        assert!(!identity.selects("__consumer_offsets", true));
    }

    #[test]
    fn identity_on_any_cycle_is_refused_with_the_reason() {
        for (aliases, edges) in [
            (&["a", "b"][..], &[("a", "b"), ("b", "a")][..]),
            (
                &["a", "b", "c"][..],
                &[("a", "b"), ("b", "c"), ("c", "a")][..],
            ),
        ] {
            let mut text = clusters(aliases);
            for (s, t) in edges {
                text.push_str(&flow(s, t, ""));
            }
            let err = MirrorConfig::from_toml(&text)
                .expect_err("cycle")
                .to_string();
            assert!(
                err.contains("flows[0].topics.replication_policy")
                    && err.contains("cycle a -> b")
                    && err.contains("forever")
                    && err.contains("prefix"),
                "{err}"
            );
        }
        // A chain is no cycle; a prefixed ring is fine.
        let chain = format!(
            "{}{}{}",
            clusters(&["a", "b", "c"]),
            flow("a", "b", ""),
            flow("b", "c", "")
        );
        assert!(MirrorConfig::from_toml(&chain).is_ok());
        let ring = format!(
            "[topics]\nreplication_policy = \"template\"\ntopic_template = \"{{topic}}-from-{{source}}\"\n{}{}{}",
            clusters(&["a", "b"]),
            flow("a", "b", ""),
            flow("b", "a", ""),
        );
        let flows = MirrorConfig::from_toml(&ring)
            .expect("valid")
            .flows()
            .expect("flows");
        assert!(!flows[1].selects("x-from-a", false));
    }

    #[test]
    fn a_flow_acls_table_sets_its_keys_over_the_shared_ones() {
        let text = format!(
            "[acls]\nsync = true\ncopy_write = true\n{}\
             [[flows]]\nsource = \"a\"\ntarget = \"b\"\n\
             [[flows]]\nsource = \"a\"\ntarget = \"c\"\nacls = {{ sync = false }}\n\
             [[flows]]\nsource = \"b\"\ntarget = \"c\"\nacls = {{ copy_write = false, prune = true }}\n",
            clusters(&["a", "b", "c"]),
        );
        let flows = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows");
        let acls: Vec<_> = flows
            .iter()
            .map(|f| (f.acls.sync, f.acls.copy_write, f.acls.prune))
            .collect();
        assert_eq!(
            acls,
            [
                (true, true, false),
                (false, true, false),
                (true, false, true)
            ]
        );
        // Without a top-level [acls], a flow turns sync on for itself alone.
        let text = format!(
            "{}{}[[flows]]\nsource = \"a\"\ntarget = \"c\"\nacls = {{ sync = true }}\n",
            clusters(&["a", "b", "c"]),
            flow("a", "b", ""),
        );
        let flows = MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows");
        assert!(!flows[0].acls.sync && flows[1].acls.sync);

        let text = format!(
            "{}[[flows]]\nsource = \"a\"\ntarget = \"b\"\nacls = {{ sync = true, purge = true }}\n",
            clusters(&["a", "b"]),
        );
        let err = MirrorConfig::from_toml(&text)
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("purge"), "{err}");
    }

    #[test]
    fn flow_mistakes_name_their_key() {
        let base = clusters(&["a", "b"]);
        for (extra, key) in [
            (flow("a", "nowhere", ""), "flows[0].target"),
            (flow("a", "a", ""), "flows[0].target"),
            (
                format!("{}{}", flow("a", "b", ""), flow("a", "b", "")),
                "flows[1].name",
            ),
            (flow("a", "b", "include = \"(\""), "flows[0].topics.include"),
            (
                flow("a", "b", "replication_policy = \"template\""),
                "flows[0].topics.topic_template",
            ),
            (
                format!(
                    "[clusters.a-1]\nbootstrap_servers = \"c:1\"\n{}",
                    flow(
                        "a",
                        "b",
                        "replication_policy = \"prefix\", separator = \"-\""
                    )
                ),
                "clusters.a-1",
            ),
            (
                "[source]\nbootstrap_servers = \"a:1\"\n".to_owned(),
                "source",
            ),
            (String::new(), "flows"),
        ] {
            let err = MirrorConfig::from_toml(&format!("{base}{extra}"))
                .expect_err(&extra)
                .to_string();
            assert!(err.contains(&format!("`{key}`")), "{extra}: {err}");
        }
        let err = MirrorConfig::from_toml("[source]\nbootstrap_servers = \"a:1\"\n")
            .expect_err("no target")
            .to_string();
        assert!(err.contains("`target`"), "{err}");
    }
}
