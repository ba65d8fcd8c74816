//! Topic selection: a flow's `topics` settings laid over the shared ones,
//! compiled into the [`TopicFilter`] that decides which source topics are
//! copied, the [`ReplicationPolicy`] that names them on the target, and the
//! refresh interval and configs never copied.

use std::time::Duration;

use regex::Regex;

use super::name_filter::{anchored, NameFilter};
use super::{invalid, ConfigError, PolicyKind, TopicsConfig};
use crate::policy::ReplicationPolicy;
use crate::topics::NOT_COPIED;

/// Default of `topics.refresh_interval_ms`: MirrorMaker 2's `refresh.topics.interval.seconds`.
const DEFAULT_TOPIC_REFRESH: Duration = Duration::from_secs(600);

/// What a [`TopicsConfig`] resolves to.
#[derive(Debug)]
pub(super) struct ResolvedTopics {
    pub(super) filter: TopicFilter,
    pub(super) policy: ReplicationPolicy,
    pub(super) refresh_interval: Duration,
    pub(super) never_copy_configs: Vec<String>,
}

impl TopicsConfig {
    /// These settings, with `defaults` filling in the keys not set here.
    pub(super) fn over(&self, defaults: &TopicsConfig) -> TopicsConfig {
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
    pub(super) fn resolve(
        &self,
        key: &str,
        checkpoint_topic: &str,
    ) -> Result<ResolvedTopics, ConfigError> {
        let filter = TopicFilter {
            names: NameFilter::new(key, self.include_pattern(), self.exclude.as_deref())?,
            include_internal: self
                .include_internal
                .as_deref()
                .map(|p| anchored(&format!("{key}.include_internal"), p))
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
    names: NameFilter,
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
        self.names.matches(topic)
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

#[cfg(test)]
mod tests {
    use crate::config::tests::MINIMAL;
    use crate::config::MirrorConfig;

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
}
