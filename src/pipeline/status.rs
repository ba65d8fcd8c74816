//! `kafka-mirror status`: the instances sharing each flow, read from Kafka
//! alone. The members of the flow's group on its target (DescribeGroups),
//! what each was given (its writer slot and partitions, decoded from the
//! assignment the group's leader sent it), and how far each partition's
//! stored checkpoint is behind the source's end. It sends Metadata,
//! FindCoordinator, DescribeGroups, ListOffsets and Fetch (of the
//! checkpoint topic) only, and writes nothing anywhere.

use std::collections::BTreeSet;
use std::fmt;

use serde::Serialize;

use super::lifecycle::selected_partitions;
use super::startup::offsets_of;
use super::{MirrorError, Targets};
use crate::assignment::TopicPartition;
use crate::checkpoint::CheckpointStore;
use crate::cluster::membership::{self, PROTOCOL_TYPE};
use crate::cluster::{GroupClient, OffsetSpec};
use crate::config::MirrorConfig;

/// The instances of every flow.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    /// One entry per flow, in config order.
    pub flows: Vec<FlowStatus>,
}

/// The instances of one flow and what each copies.
#[derive(Debug, Clone, Serialize)]
pub struct FlowStatus {
    /// The flow's name.
    pub name: String,
    /// Its group on the target.
    pub group: String,
    /// The group's state as its coordinator says (`Stable`, `Empty`,
    /// `PreparingRebalance`...).
    pub state: String,
    /// The running instances.
    pub members: Vec<MemberStatus>,
    /// Partitions of the flow no instance was given (none run, or a
    /// rebalance is under way).
    pub unassigned: Vec<PartitionLag>,
}

/// One running instance.
#[derive(Debug, Clone, Serialize)]
pub struct MemberStatus {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its `instances.instance_id`, if set.
    pub instance_id: Option<String>,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from.
    pub host: String,
    /// Its writer slot (exactly-once: its transactional id is
    /// `kafka-mirror.<name>.<slot>`).
    pub slot: Option<i32>,
    /// What it copies.
    pub partitions: Vec<PartitionLag>,
    /// Why its assignment could not be read, if it could not.
    pub unreadable: Option<String>,
}

/// One partition, how far its copy is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartitionLag {
    /// The source topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// The stored checkpoint: the next source offset to copy.
    pub checkpoint: Option<i64>,
    /// The source's end offset now.
    pub end: Option<i64>,
    /// `end - checkpoint`: what is not copied (as far as stored); unknown
    /// without both.
    pub lag: Option<i64>,
}

/// Reads every flow's group, checkpoints and source end offsets.
pub async fn status(config: MirrorConfig) -> Result<StatusReport, MirrorError> {
    config.validate()?;
    let mut targets = Targets::default();
    let mut flows = Vec::new();
    for flow in config.flows()? {
        let (source, target) = targets.flow_clusters(&flow)?;
        let group = flow.instances_group();
        let described = GroupClient::new(target.clone())
            .await?
            .describe(&group)
            .await?;
        let stored = match CheckpointStore::open_existing(
            target.clone(),
            &flow.checkpoints.topic,
            &flow.checkpoint_name,
        )
        .await?
        {
            Some(store) => store.load().await?,
            None => Default::default(),
        };
        let source_meta = source.metadata().await?;
        let partitions: Vec<TopicPartition> = selected_partitions(&flow, &source_meta);
        let isolation = flow.replication.isolation_level.wire_value();
        let ends = offsets_of(
            &source,
            &source_meta,
            partitions.clone(),
            OffsetSpec::Latest,
            isolation,
        )
        .await?;
        let lag = |(topic, partition): &TopicPartition| {
            let checkpoint = stored
                .get(&(flow.target_topic(topic), *partition))
                .map(|c| c.next_offset);
            let end = ends.get(&(topic.clone(), *partition)).copied();
            PartitionLag {
                topic: topic.clone(),
                partition: *partition,
                checkpoint,
                end,
                lag: end.zip(checkpoint).map(|(end, at)| (end - at).max(0)),
            }
        };
        let mut assigned = BTreeSet::new();
        let ours = described.protocol_type.is_empty() || described.protocol_type == PROTOCOL_TYPE;
        let members = described
            .members
            .into_iter()
            .filter(|_| ours)
            .map(|m| {
                let (slot, partitions, unreadable) =
                    match membership::decode_assignment(&m.assignment) {
                        Ok(a) => (a.slot, a.partitions, None),
                        Err(e) => (None, BTreeSet::new(), Some(e.to_string())),
                    };
                assigned.extend(partitions.iter().cloned());
                MemberStatus {
                    member_id: m.member_id,
                    instance_id: m.instance_id,
                    client_id: m.client_id,
                    host: m.client_host,
                    slot,
                    partitions: partitions.iter().map(lag).collect(),
                    unreadable,
                }
            })
            .collect();
        let unassigned = partitions
            .iter()
            .filter(|p| !assigned.contains(*p))
            .map(lag)
            .collect();
        flows.push(FlowStatus {
            name: flow.name,
            group,
            state: described.state,
            members,
            unassigned,
        });
    }
    Ok(StatusReport { flows })
}

impl MemberStatus {
    /// Its partitions' lag, added up (unknown lags left out).
    pub fn lag(&self) -> i64 {
        self.partitions.iter().filter_map(|p| p.lag).sum()
    }
}

impl fmt::Display for StatusReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for flow in &self.flows {
            write!(f, "{flow}")?;
        }
        Ok(())
    }
}

impl fmt::Display for FlowStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "flow {}: group {} ({}), {} instances",
            self.name,
            self.group,
            self.state,
            self.members.len()
        )?;
        for member in &self.members {
            write!(f, "  instance {}", member.member_id)?;
            if let Some(id) = &member.instance_id {
                write!(f, " (instance id {id})")?;
            }
            write!(f, ", {}@{}", member.client_id, member.host)?;
            if let Some(slot) = member.slot {
                write!(f, ", slot {slot}")?;
            }
            writeln!(
                f,
                ": {} partitions, lag {}",
                member.partitions.len(),
                member.lag()
            )?;
            if let Some(why) = &member.unreadable {
                writeln!(f, "    assignment unreadable: {why}")?;
            }
            for partition in &member.partitions {
                writeln!(f, "    {partition}")?;
            }
        }
        if !self.unassigned.is_empty() {
            writeln!(f, "  not assigned to any instance:")?;
            for partition in &self.unassigned {
                writeln!(f, "    {partition}")?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for PartitionLag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let known = |n: Option<i64>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
        write!(
            f,
            "{}-{}: checkpoint {}, source end {}, lag {}",
            self.topic,
            self.partition,
            known(self.checkpoint),
            known(self.end),
            known(self.lag)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lag(topic: &str, partition: i32, checkpoint: Option<i64>, end: i64) -> PartitionLag {
        PartitionLag {
            topic: topic.into(),
            partition,
            checkpoint,
            end: Some(end),
            lag: checkpoint.map(|c| end - c),
        }
    }

    #[test]
    fn the_text_names_each_instance_its_slot_partitions_and_lag() {
        let status = StatusReport {
            flows: vec![FlowStatus {
                name: "kafka-mirror".into(),
                group: "kafka-mirror.kafka-mirror".into(),
                state: "Stable".into(),
                members: vec![MemberStatus {
                    member_id: "m-1".into(),
                    instance_id: Some("host-a".into()),
                    client_id: "kafka-mirror".into(),
                    host: "/10.0.0.1".into(),
                    slot: Some(0),
                    partitions: vec![lag("orders", 0, Some(90), 100), lag("orders", 1, None, 5)],
                    unreadable: None,
                }],
                unassigned: vec![lag("orders", 2, Some(7), 7)],
            }],
        };
        assert_eq!(
            status.to_string(),
            "flow kafka-mirror: group kafka-mirror.kafka-mirror (Stable), 1 instances\n\
             \x20 instance m-1 (instance id host-a), kafka-mirror@/10.0.0.1, slot 0: 2 partitions, lag 10\n\
             \x20   orders-0: checkpoint 90, source end 100, lag 10\n\
             \x20   orders-1: checkpoint -, source end 5, lag -\n\
             \x20 not assigned to any instance:\n\
             \x20   orders-2: checkpoint 7, source end 7, lag 0\n"
        );
    }
}
