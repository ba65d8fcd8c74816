//! ACL sync: which of the source's ACLs a flow creates on its target, and
//! which target ACLs `--prune-acls` deletes.
//!
//! A source ACL is copied when its resource is one the flow mirrors:
//!
//! - a topic ACL, literal, on a topic the flow copies: renamed by the
//!   flow's policy (`orders` becomes `eu.orders` under `prefix`);
//! - a topic ACL, prefixed, whose prefix starts a topic the flow copies:
//!   its prefix renamed the same way, when the policy keeps prefixes
//!   (`{source}.{topic}` does; `{topic}-{source}` does not, and such an ACL
//!   is skipped rather than widened);
//! - a group ACL, literal, on a consumer group the flow syncs (`[groups]`
//!   selects it), with its name as it is;
//! - a group ACL, prefixed, whose prefix starts a group the flow syncs: the
//!   source's groups are listed (only when such an ACL is on either side)
//!   and the ACL is copied as it is when one of the groups `[groups]`
//!   selects starts with its prefix. Group names are the same on both
//!   clusters, so the copy grants nothing for those names that the source
//!   does not.
//!
//! Principals and hosts are kept as they are. The wildcard resource `*` is
//! never copied: on the target it would cover topics and groups the flow
//! does not mirror.
//!
//! Never broader than the source, and never a writer of the copies: unless
//! `acls.copy_write`, an ALLOW ACL on a topic is copied only for READ,
//! DESCRIBE and DESCRIBE_CONFIGS, ALL becomes READ (as MirrorMaker 2 does;
//! READ implies DESCRIBE), and WRITE, CREATE, DELETE, ALTER and
//! ALTER_CONFIGS are not copied, so only the mirror writes the copies until
//! a failover. DENY ACLs only narrow and are copied as they are.
//!
//! Sync is idempotent: only what the target lacks is created. Pruning
//! deletes a target ACL on a mirrored resource (the copied topics' target
//! names, the synced groups, the renamed prefixes of copied topics, the
//! prefixes of synced groups) that the source's ACLs no longer give, and
//! never one sync would not copy (such as a WRITE grant for the mirror's
//! own principal).

use std::collections::BTreeSet;
use std::sync::Arc;

use crate::cluster::{
    create_acls, delete_acls, describe_acls, AclBinding, AclError, Cluster, GroupClient,
    OPERATION_ALL, OPERATION_DESCRIBE, OPERATION_DESCRIBE_CONFIGS, OPERATION_READ, PATTERN_LITERAL,
    PATTERN_PREFIXED, PERMISSION_ALLOW, RESOURCE_GROUP, RESOURCE_TOPIC,
};
use crate::config::Flow;
use crate::groups;

/// The wildcard resource name: every topic or group.
const WILDCARD: &str = "*";

/// What a sync creates and (with prune) deletes on the target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AclChanges {
    /// ACLs the target lacks.
    pub create: Vec<AclBinding>,
    /// Target ACLs on mirrored resources the source no longer gives.
    pub delete: Vec<AclBinding>,
}

impl AclChanges {
    /// Whether the target is already in sync.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.delete.is_empty()
    }
}

/// The flow's view of ACLs: what it mirrors and how it names it.
#[derive(Debug)]
pub struct AclMapping<'a> {
    flow: &'a Flow,
    /// The source topics the flow copies now.
    topics: &'a [String],
    /// The source groups the flow syncs now (those its `[groups]` selects).
    groups: &'a [String],
}

impl<'a> AclMapping<'a> {
    /// The mapping of `flow`, which copies the source topics `topics` and
    /// syncs the source groups `groups`.
    pub fn new(flow: &'a Flow, topics: &'a [String], groups: &'a [String]) -> Self {
        AclMapping {
            flow,
            topics,
            groups,
        }
    }

    /// Whether a synced group starts with `prefix`.
    fn starts_a_group(&self, prefix: &str) -> bool {
        self.groups.iter().any(|g| g.starts_with(prefix))
    }

    /// The ACL the target gets for a source ACL, `None` when it is not copied.
    pub fn target_acl(&self, acl: &AclBinding) -> Option<AclBinding> {
        if acl.name == WILDCARD {
            return None;
        }
        let name = match (acl.resource_type, acl.pattern) {
            (RESOURCE_TOPIC, PATTERN_LITERAL) => self
                .topics
                .contains(&acl.name)
                .then(|| self.flow.target_topic(&acl.name))?,
            (RESOURCE_TOPIC, PATTERN_PREFIXED) => {
                if !self.topics.iter().any(|t| t.starts_with(&acl.name)) {
                    return None;
                }
                self.renamed_prefix(&acl.name)?
            }
            (RESOURCE_GROUP, PATTERN_LITERAL) => {
                let synced = self.flow.groups.as_ref()?.selects(&acl.name);
                synced.then(|| acl.name.clone())?
            }
            (RESOURCE_GROUP, PATTERN_PREFIXED) => {
                self.starts_a_group(&acl.name).then(|| acl.name.clone())?
            }
            _ => return None,
        };
        let operation = if acl.resource_type == RESOURCE_TOPIC
            && acl.permission == PERMISSION_ALLOW
            && !self.flow.acls.copy_write
        {
            match acl.operation {
                OPERATION_READ | OPERATION_DESCRIBE | OPERATION_DESCRIBE_CONFIGS => acl.operation,
                OPERATION_ALL => OPERATION_READ,
                _ => return None,
            }
        } else {
            acl.operation
        };
        Some(AclBinding {
            name,
            operation,
            ..acl.clone()
        })
    }

    /// The target prefix of a source prefix: the policy's name for it, when
    /// every name that starts with the prefix is named with that start.
    fn renamed_prefix(&self, prefix: &str) -> Option<String> {
        let renamed = self.flow.target_topic(prefix);
        let probe = format!("{prefix}x");
        (self.flow.target_topic(&probe) == format!("{renamed}x")).then_some(renamed)
    }

    /// Whether a target ACL is on a resource the flow mirrors.
    fn mirrors_target_resource(&self, acl: &AclBinding) -> bool {
        if acl.name == WILDCARD {
            return false;
        }
        match (acl.resource_type, acl.pattern) {
            (RESOURCE_TOPIC, PATTERN_LITERAL) => self
                .topics
                .iter()
                .any(|t| self.flow.target_topic(t) == acl.name),
            (RESOURCE_TOPIC, PATTERN_PREFIXED) => self
                .flow
                .policy
                .source_topic(&self.flow.source_alias, &acl.name)
                .is_some_and(|prefix| {
                    self.renamed_prefix(prefix).as_deref() == Some(acl.name.as_str())
                        && self.topics.iter().any(|t| t.starts_with(prefix))
                }),
            (RESOURCE_GROUP, PATTERN_LITERAL) => self
                .flow
                .groups
                .as_ref()
                .is_some_and(|g| g.selects(&acl.name)),
            (RESOURCE_GROUP, PATTERN_PREFIXED) => self.starts_a_group(&acl.name),
            _ => false,
        }
    }

    /// What the target needs to match the source: the copied ACLs it lacks
    /// and, when `prune`, its ACLs on mirrored resources that the source
    /// does not give (only those sync itself would create).
    pub fn changes(&self, source: &[AclBinding], target: &[AclBinding], prune: bool) -> AclChanges {
        let wanted: BTreeSet<AclBinding> = source
            .iter()
            .filter_map(|acl| self.target_acl(acl))
            .collect();
        let existing: BTreeSet<&AclBinding> = target.iter().collect();
        let create = wanted
            .iter()
            .filter(|acl| !existing.contains(acl))
            .cloned()
            .collect();
        let delete = if prune {
            existing
                .into_iter()
                .filter(|acl| !wanted.contains(*acl))
                .filter(|acl| self.mirrors_target_resource(acl))
                .filter(|acl| self.copyable_as_is(acl))
                .cloned()
                .collect()
        } else {
            Vec::new()
        };
        AclChanges { create, delete }
    }

    /// Whether sync could create this ACL: what it never copies (a write
    /// grant without `copy_write`) is never pruned either.
    fn copyable_as_is(&self, acl: &AclBinding) -> bool {
        acl.resource_type != RESOURCE_TOPIC
            || acl.permission != PERMISSION_ALLOW
            || self.flow.acls.copy_write
            || matches!(
                acl.operation,
                OPERATION_READ | OPERATION_DESCRIBE | OPERATION_DESCRIBE_CONFIGS
            )
    }
}

/// Both clusters' topic and group ACLs, and what the target needs for
/// `flow`, which copies the source topics `topics`. The source's groups are
/// listed only when a prefixed group ACL asks which ones it covers.
pub async fn acl_changes(
    flow: &Flow,
    topics: &[String],
    source: &Arc<Cluster>,
    target: &Cluster,
) -> Result<AclChanges, AclError> {
    let mut source_acls = describe_acls(source, RESOURCE_TOPIC).await?;
    source_acls.extend(describe_acls(source, RESOURCE_GROUP).await?);
    let mut target_acls = describe_acls(target, RESOURCE_TOPIC).await?;
    target_acls.extend(describe_acls(target, RESOURCE_GROUP).await?);
    tracing::debug!(
        source = source_acls.len(),
        target = target_acls.len(),
        "topic and group ACLs read"
    );
    let prefixed_group_acl = source_acls
        .iter()
        .chain(&target_acls)
        .any(|acl| acl.resource_type == RESOURCE_GROUP && acl.pattern == PATTERN_PREFIXED);
    let groups = match &flow.groups {
        Some(selection) if prefixed_group_acl => {
            let client = GroupClient::new(source.clone()).await?;
            groups::synced_groups(&client, &|group| selection.selects(group)).await?
        }
        _ => Vec::new(),
    };
    let mapping = AclMapping::new(flow, topics, &groups);
    Ok(mapping.changes(&source_acls, &target_acls, flow.acls.prune))
}

/// Makes the target's ACLs match the source's for `flow` ([`acl_changes`]):
/// creates what it lacks, deletes what is pruned. Returns what it did.
pub async fn sync_acls(
    flow: &Flow,
    topics: &[String],
    source: &Arc<Cluster>,
    target: &Cluster,
) -> Result<AclChanges, AclError> {
    let changes = acl_changes(flow, topics, source, target).await?;
    create_acls(target, &changes.create).await?;
    delete_acls(target, &changes.delete).await?;
    Ok(changes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::{OPERATION_WRITE, PERMISSION_DENY};
    use crate::config::MirrorConfig;

    const OPERATION_ALTER: i8 = 7;

    fn flow(extra: &str) -> Flow {
        let text = format!(
            "[source]\nbootstrap_servers = \"a:1\"\n[target]\nbootstrap_servers = \"b:1\"\n{extra}"
        );
        MirrorConfig::from_toml(&text)
            .expect("valid")
            .flows()
            .expect("flows")
            .remove(0)
    }

    fn acl(
        resource_type: i8,
        name: &str,
        pattern: i8,
        operation: i8,
        permission: i8,
    ) -> AclBinding {
        AclBinding {
            resource_type,
            name: name.into(),
            pattern,
            principal: "User:alice".into(),
            host: "*".into(),
            operation,
            permission,
        }
    }

    fn topic(name: &str, operation: i8) -> AclBinding {
        acl(
            RESOURCE_TOPIC,
            name,
            PATTERN_LITERAL,
            operation,
            PERMISSION_ALLOW,
        )
    }

    const PREFIX: &str =
        "[topics]\nreplication_policy = \"prefix\"\n[groups]\ninclude = \"app-.*\"\n";

    fn topics() -> Vec<String> {
        vec!["orders".into(), "orders-eu".into()]
    }

    #[test]
    fn literal_and_prefixed_topic_names_are_renamed_by_the_policy() {
        let flow = flow(PREFIX);
        let topics = topics();
        let mapping = AclMapping::new(&flow, &topics, &[]);
        let literal = mapping
            .target_acl(&topic("orders", OPERATION_READ))
            .unwrap();
        assert_eq!(literal.name, "source.orders");
        assert_eq!(
            (literal.principal.as_str(), literal.host.as_str()),
            ("User:alice", "*")
        );
        let prefixed = acl(
            RESOURCE_TOPIC,
            "orders-",
            PATTERN_PREFIXED,
            OPERATION_READ,
            PERMISSION_ALLOW,
        );
        let copied = mapping.target_acl(&prefixed).unwrap();
        assert_eq!(
            (copied.name.as_str(), copied.pattern),
            ("source.orders-", PATTERN_PREFIXED)
        );
        // Not mirrored: another topic, a prefix no copied topic has, the wildcard.
        assert_eq!(mapping.target_acl(&topic("payments", OPERATION_READ)), None);
        let other = acl(
            RESOURCE_TOPIC,
            "pay",
            PATTERN_PREFIXED,
            OPERATION_READ,
            PERMISSION_ALLOW,
        );
        assert_eq!(mapping.target_acl(&other), None);
        assert_eq!(mapping.target_acl(&topic("*", OPERATION_READ)), None);
    }

    #[test]
    fn a_prefix_the_policy_cannot_keep_is_skipped_not_widened() {
        let flow = flow(
            "[topics]\nreplication_policy = \"template\"\ntopic_template = \"{topic}-{source}\"\n",
        );
        let topics = topics();
        let mapping = AclMapping::new(&flow, &topics, &[]);
        assert_eq!(
            mapping
                .target_acl(&topic("orders", OPERATION_READ))
                .unwrap()
                .name,
            "orders-source"
        );
        let prefixed = acl(
            RESOURCE_TOPIC,
            "orders",
            PATTERN_PREFIXED,
            OPERATION_READ,
            PERMISSION_ALLOW,
        );
        assert_eq!(mapping.target_acl(&prefixed), None);
    }

    #[test]
    fn write_access_to_a_copy_is_never_granted_by_default() {
        let flow = flow(PREFIX);
        let topics = topics();
        let mapping = AclMapping::new(&flow, &topics, &[]);
        for operation in [OPERATION_WRITE, OPERATION_ALTER] {
            assert_eq!(mapping.target_acl(&topic("orders", operation)), None);
        }
        assert_eq!(
            mapping
                .target_acl(&topic("orders", OPERATION_ALL))
                .unwrap()
                .operation,
            OPERATION_READ
        );
        // DENY only narrows: kept whatever it denies.
        let deny = acl(
            RESOURCE_TOPIC,
            "orders",
            PATTERN_LITERAL,
            OPERATION_WRITE,
            PERMISSION_DENY,
        );
        assert_eq!(
            mapping.target_acl(&deny).unwrap().operation,
            OPERATION_WRITE
        );

        let flow = self::flow(&format!("{PREFIX}[acls]\nsync = true\ncopy_write = true\n"));
        let mapping = AclMapping::new(&flow, &topics, &[]);
        assert_eq!(
            mapping
                .target_acl(&topic("orders", OPERATION_WRITE))
                .unwrap()
                .operation,
            OPERATION_WRITE
        );
        assert_eq!(
            mapping
                .target_acl(&topic("orders", OPERATION_ALL))
                .unwrap()
                .operation,
            OPERATION_ALL
        );
    }

    fn group(name: &str, pattern: i8) -> AclBinding {
        acl(
            RESOURCE_GROUP,
            name,
            pattern,
            OPERATION_ALL,
            PERMISSION_ALLOW,
        )
    }

    #[test]
    fn group_acls_of_synced_groups_keep_their_names() {
        let flow = flow(PREFIX);
        let topics = topics();
        let mapping = AclMapping::new(&flow, &topics, &[]);
        let literal = |name: &str| group(name, PATTERN_LITERAL);
        assert_eq!(
            mapping.target_acl(&literal("app-billing")),
            Some(literal("app-billing"))
        );
        assert_eq!(mapping.target_acl(&literal("other")), None);
        let unsynced = self::flow("");
        assert_eq!(
            AclMapping::new(&unsynced, &topics, &[]).target_acl(&literal("app-billing")),
            None
        );
    }

    #[test]
    fn a_prefixed_group_acl_is_copied_only_when_it_starts_a_synced_group() {
        let flow = flow(PREFIX);
        let topics = topics();
        let groups = ["app-billing".to_owned()];
        let mapping = AclMapping::new(&flow, &topics, &groups);
        let prefixed = |name: &str| group(name, PATTERN_PREFIXED);
        // Kept as it is, ALL included: group names are the same on both sides.
        for prefix in ["app-", "app-bill", "a", "app-billing"] {
            assert_eq!(
                mapping.target_acl(&prefixed(prefix)),
                Some(prefixed(prefix)),
                "{prefix}"
            );
        }
        // No synced group starts with it, even one `[groups]` would select.
        for prefix in ["app-pay", "b", "app-billing-eu", "*"] {
            assert_eq!(mapping.target_acl(&prefixed(prefix)), None, "{prefix}");
        }
        // No groups listed: nothing is known to be covered.
        assert_eq!(
            AclMapping::new(&flow, &topics, &[]).target_acl(&prefixed("app-")),
            None
        );

        // Pruning: a stale prefix of a synced group goes, another prefix stays.
        let target = [prefixed("app-"), prefixed("app-bill"), prefixed("ops-")];
        let changes = mapping.changes(&[prefixed("app-")], &target, true);
        assert!(changes.create.is_empty());
        assert_eq!(changes.delete, [prefixed("app-bill")]);
    }

    #[test]
    fn only_what_the_target_lacks_is_created_and_prune_deletes_only_mirrored_acls() {
        let flow = flow(PREFIX);
        let topics = topics();
        let mapping = AclMapping::new(&flow, &topics, &[]);
        let source = [
            topic("orders", OPERATION_READ),
            topic("orders-eu", OPERATION_READ),
        ];
        let stale = topic("source.orders", OPERATION_DESCRIBE);
        let mirror_write = AclBinding {
            principal: "User:mirror".into(),
            ..topic("source.orders", OPERATION_WRITE)
        };
        let unrelated = topic("local", OPERATION_READ);
        let prefixed = |name: &str| {
            acl(
                RESOURCE_TOPIC,
                name,
                PATTERN_PREFIXED,
                OPERATION_READ,
                PERMISSION_ALLOW,
            )
        };
        // A prefix of copied topics, and one of no copied topic.
        let stale_prefix = prefixed("source.orders-");
        let target = [
            topic("source.orders", OPERATION_READ),
            stale.clone(),
            stale_prefix.clone(),
            prefixed("source.pay"),
            mirror_write,
            unrelated,
        ];
        let kept = mapping.changes(&source, &target, false);
        assert_eq!(kept.create, [topic("source.orders-eu", OPERATION_READ)]);
        assert!(kept.delete.is_empty());
        let pruned = mapping.changes(&source, &target, true);
        assert_eq!(pruned.create, kept.create);
        assert_eq!(pruned.delete, [stale, stale_prefix]);
        // Once created, nothing is left to do.
        let synced: Vec<_> = target.iter().cloned().chain(kept.create).collect();
        assert!(mapping.changes(&source, &synced, false).is_empty());
    }
}
