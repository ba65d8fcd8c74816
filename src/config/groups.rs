//! Consumer group offset sync settings: a flow's `groups` laid over the
//! shared `[groups]`, resolved into the [`GroupSync`] that says whose
//! committed offsets the flow translates onto its target, and how often.

use std::time::Duration;

use super::name_filter::NameFilter;
use super::{invalid, ConfigError, GroupsConfig};

/// Default of `groups.sync_interval_ms`: often enough that a failed-over
/// group re-reads little, rare enough to cost the clusters nothing.
const DEFAULT_SYNC_INTERVAL: Duration = Duration::from_secs(10);

impl GroupsConfig {
    /// These settings, with `defaults` filling in the keys not set here.
    pub(super) fn over(&self, defaults: &GroupsConfig) -> GroupsConfig {
        GroupsConfig {
            include: self.include.clone().or_else(|| defaults.include.clone()),
            exclude: self.exclude.clone().or_else(|| defaults.exclude.clone()),
            sync_interval_ms: self.sync_interval_ms.or(defaults.sync_interval_ms),
            mm2_checkpoints: self.mm2_checkpoints.or(defaults.mm2_checkpoints),
        }
    }

    /// Compiles and checks the settings; `key` (`groups` or `flows[i].groups`)
    /// prefixes the errors. `None` when no `include` is set: the other keys
    /// are still checked, since a flow may add the include later.
    pub(super) fn resolve(&self, key: &str) -> Result<Option<GroupSync>, ConfigError> {
        let interval = match self.sync_interval_ms {
            None => DEFAULT_SYNC_INTERVAL,
            Some(0) => {
                return invalid(
                    &format!("{key}.sync_interval_ms"),
                    "must be at least 1".into(),
                )
            }
            Some(ms) => Duration::from_millis(ms),
        };
        // Compiled even without an include, so a bad exclude is reported.
        let filter = NameFilter::new(
            key,
            self.include.as_deref().unwrap_or(""),
            self.exclude.as_deref(),
        )?;
        Ok(self.include.is_some().then_some(GroupSync {
            filter,
            interval,
            mm2_checkpoints: self.mm2_checkpoints.unwrap_or(true),
        }))
    }
}

/// A flow's consumer group offset sync: which source groups' committed
/// offsets are translated onto the target, and how often.
#[derive(Debug, Clone)]
pub struct GroupSync {
    filter: NameFilter,
    interval: Duration,
    mm2_checkpoints: bool,
}

impl GroupSync {
    /// Whether the group's offsets are synced: its whole id matches
    /// `include` and not `exclude`.
    pub fn selects(&self, group: &str) -> bool {
        self.filter.matches(group)
    }

    /// The time between two syncs.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// Whether each sync also writes MirrorMaker 2's checkpoints
    /// ([`crate::groups::mm2`]).
    pub fn mm2_checkpoints(&self) -> bool {
        self.mm2_checkpoints
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::tests::MINIMAL;
    use crate::config::{Flow, MirrorConfig};

    fn flows(text: &str) -> Vec<Flow> {
        MirrorConfig::from_toml(text)
            .expect("valid")
            .flows()
            .expect("flows")
    }

    #[test]
    fn no_group_is_synced_unless_included() {
        assert!(flows(MINIMAL)[0].groups.is_none());
        let text = format!("{MINIMAL}\n[groups]\nexclude = \"tmp-.*\"\nsync_interval_ms = 5\n");
        assert!(flows(&text)[0].groups.is_none());

        let text = format!(
            "{MINIMAL}\n[groups]\ninclude = \"app-.*|billing\"\nexclude = \"app-test.*\"\n"
        );
        let sync = flows(&text)[0].groups.clone().expect("synced");
        assert_eq!(sync.interval(), Duration::from_secs(10));
        assert!(sync.mm2_checkpoints(), "written by default");
        assert!(sync.selects("app-orders"));
        assert!(sync.selects("billing"));
        // Whole ids only, and the exclude wins.
        assert!(!sync.selects("billing-2"));
        assert!(!sync.selects("my-app-orders"));
        assert!(!sync.selects("app-test-1"));
    }

    #[test]
    fn a_flow_overrides_the_shared_groups_key_by_key() {
        let text = "[groups]\ninclude = \"app-.*\"\nsync_interval_ms = 2000\n\
             [clusters.a]\nbootstrap_servers = \"127.0.0.1:1\"\n\
             [clusters.b]\nbootstrap_servers = \"127.0.0.1:2\"\n\
             [clusters.c]\nbootstrap_servers = \"127.0.0.1:3\"\n\
             [[flows]]\nsource = \"a\"\ntarget = \"b\"\n\
             [[flows]]\nsource = \"a\"\ntarget = \"c\"\ngroups = { exclude = \"app-eu\", sync_interval_ms = 500, mm2_checkpoints = false }\n\
             [[flows]]\nsource = \"b\"\ntarget = \"c\"\ngroups = { include = \"billing\" }\n";
        let flows = flows(text);
        let [shared, overridden, own] = [0, 1, 2].map(|i| flows[i].groups.clone().expect("synced"));
        assert!(shared.selects("app-eu") && !shared.selects("billing"));
        assert_eq!(shared.interval(), Duration::from_secs(2));
        assert!(overridden.selects("app-us") && !overridden.selects("app-eu"));
        assert_eq!(overridden.interval(), Duration::from_millis(500));
        assert!(!overridden.mm2_checkpoints());
        assert!(own.selects("billing") && !own.selects("app-eu"));
        assert_eq!(own.interval(), Duration::from_secs(2));
        assert!(shared.mm2_checkpoints() && own.mm2_checkpoints());
    }

    #[test]
    fn bad_group_settings_name_their_key() {
        let flows_base = "[clusters.a]\nbootstrap_servers = \"127.0.0.1:1\"\n\
             [clusters.b]\nbootstrap_servers = \"127.0.0.1:2\"\n\
             [[flows]]\nsource = \"a\"\ntarget = \"b\"\n";
        for (text, key, reason) in [
            (
                format!("{MINIMAL}\n[groups]\ninclude = \"app-(\"\n"),
                "groups.include",
                "not a valid regex",
            ),
            (
                format!("{MINIMAL}\n[groups]\nexclude = \"[\"\n"),
                "groups.exclude",
                "not a valid regex",
            ),
            (
                format!("{MINIMAL}\n[groups]\ninclude = \".*\"\nsync_interval_ms = 0\n"),
                "groups.sync_interval_ms",
                "must be at least 1",
            ),
            (
                format!("{flows_base}groups = {{ include = \"(\" }}\n"),
                "flows[0].groups.include",
                "not a valid regex",
            ),
            (
                format!("{flows_base}groups = {{ include = \"x\", sync_interval_ms = 0 }}\n"),
                "flows[0].groups.sync_interval_ms",
                "must be at least 1",
            ),
        ] {
            let err = MirrorConfig::from_toml(&text).expect_err(&text).to_string();
            assert!(
                err.contains(&format!("config key `{key}`: {reason}")),
                "{text}: {err}"
            );
        }
        let err = MirrorConfig::from_toml(&format!("{MINIMAL}\n[groups]\nincluded = \"x\"\n"))
            .expect_err("unknown key")
            .to_string();
        assert!(err.contains("unknown field `included`"), "{err}");
    }
}
