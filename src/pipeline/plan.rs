//! `kafka-mirror plan`: what a run would do to its targets, without doing it.
//!
//! For each flow it selects and names the source topics with the same code a
//! run starts with ([`super::startup::target_specs`]) and compares them with
//! the target ([`crate::topics::plan`]): the topics that would be replicated,
//! their target names, partition counts and configs, and what would be
//! created, grown or reconfigured; with `acls.sync`, the ACLs that would be
//! created (and pruned) on the target ([`crate::acls`]). It sends Metadata,
//! DescribeConfigs and DescribeAcls only (and ListGroups, for what a
//! prefixed group ACL covers), and writes nothing anywhere.

use std::fmt;

use super::{lifecycle, MirrorError, Targets};
use crate::acls::{acl_changes, AclChanges};
use crate::cluster::{AclBinding, AclError};
use crate::config::MirrorConfig;
use crate::topics::{self, ConfigChange, TopicPlan};

/// What a run of every flow would do.
#[derive(Debug, Clone)]
pub struct Plan {
    /// One entry per flow, in config order.
    pub flows: Vec<FlowPlan>,
}

/// What a run of one flow would do.
#[derive(Debug, Clone)]
pub struct FlowPlan {
    /// The flow's name.
    pub name: String,
    /// The source cluster's alias.
    pub source: String,
    /// The target cluster's alias.
    pub target: String,
    /// The source topics it would copy, in name order.
    pub topics: Vec<PlannedTopic>,
    /// The include regex, to explain an empty plan.
    pub include: String,
    /// What ACL sync would do.
    pub acls: AclPlan,
}

/// What ACL sync would do to one flow's target.
#[derive(Debug, Clone)]
pub enum AclPlan {
    /// `acls.sync` is off.
    Off,
    /// A cluster has no authorizer; the sentence says which.
    Unavailable(String),
    /// The ACLs that would be created and deleted.
    Changes(AclChanges),
}

/// One source topic and what its target topic needs.
#[derive(Debug, Clone)]
pub struct PlannedTopic {
    /// The source topic.
    pub source: String,
    /// The target topic: its wanted state and the changes to reach it.
    pub target: TopicPlan,
}

/// Reads every flow's clusters and lists what a run would do.
pub async fn plan(config: MirrorConfig) -> Result<Plan, MirrorError> {
    config.validate()?;
    let mut targets = Targets::default();
    let mut flows = Vec::new();
    for flow in config.flows()? {
        let (source, target) = targets.flow_clusters(&flow)?;
        let source_meta = source.metadata().await?;
        let specs = lifecycle::target_specs(&flow, &source, &source_meta).await?;
        let (names, wanted): (Vec<String>, Vec<_>) = specs.into_iter().unzip();
        let planned = topics::plan(&target, &wanted, &flow.never_copy_configs).await?;
        let acls = if flow.acls.sync {
            match acl_changes(&flow, &names, &source, &target).await {
                Ok(changes) => AclPlan::Changes(changes),
                Err(e @ AclError::SecurityDisabled { .. }) => AclPlan::Unavailable(e.to_string()),
                Err(e) => return Err(e.into()),
            }
        } else {
            AclPlan::Off
        };
        flows.push(FlowPlan {
            acls,
            include: flow.topics.include_pattern().to_owned(),
            name: flow.name,
            source: flow.source_alias,
            target: flow.target_alias,
            topics: names
                .into_iter()
                .zip(planned)
                .map(|(source, target)| PlannedTopic { source, target })
                .collect(),
        });
    }
    Ok(Plan { flows })
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for flow in &self.flows {
            writeln!(
                f,
                "flow {}: {} -> {}, {} topics",
                flow.name,
                flow.source,
                flow.target,
                flow.topics.len()
            )?;
            if flow.topics.is_empty() {
                writeln!(f, "  no source topic matches `{}`", flow.include)?;
            }
            for topic in &flow.topics {
                let spec = &topic.target.spec;
                write!(
                    f,
                    "  {} -> {}: {} partitions; ",
                    topic.source, spec.name, spec.partitions
                )?;
                match topic.target.existing_partitions {
                    None => {
                        write!(f, "create")?;
                        if !spec.configs.is_empty() {
                            let configs: Vec<String> = spec
                                .configs
                                .iter()
                                .map(|(k, v)| format!("{k}={v}"))
                                .collect();
                            write!(f, " with {}", configs.join(", "))?;
                        }
                    }
                    Some(has) => {
                        let mut changes = Vec::new();
                        if has < spec.partitions {
                            changes.push(format!("add partitions {has} -> {}", spec.partitions));
                        }
                        changes.extend(topic.target.config_changes.iter().map(|c| match c {
                            ConfigChange::Set(k, v) => format!("set {k}={v}"),
                            ConfigChange::Reset(k) => format!("reset {k}"),
                        }));
                        if changes.is_empty() {
                            write!(f, "exists, up to date")?;
                        } else {
                            write!(f, "exists: {}", changes.join(", "))?;
                        }
                    }
                }
                writeln!(f)?;
            }
            match &flow.acls {
                AclPlan::Off => {}
                AclPlan::Unavailable(why) => writeln!(f, "  {why}")?,
                AclPlan::Changes(changes) if changes.is_empty() => {
                    writeln!(f, "  ACLs: up to date")?
                }
                AclPlan::Changes(changes) => {
                    for acl in &changes.create {
                        writeln!(f, "  create ACL {}", AclLine(acl))?;
                    }
                    for acl in &changes.delete {
                        writeln!(f, "  delete ACL {}", AclLine(acl))?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// One ACL as a plan line: `ALLOW User:alice READ on topic eu.orders (literal) from *`.
struct AclLine<'a>(&'a AclBinding);

impl fmt::Display for AclLine<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let acl = self.0;
        write!(
            f,
            "{} {} {} on {} {} ({}) from {}",
            acl.permission_name(),
            acl.principal,
            acl.operation_name(),
            acl.resource_name(),
            acl.name,
            acl.pattern_name(),
            acl.host
        )
    }
}
