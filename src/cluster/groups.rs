//! Consumer groups on one cluster, from the outside as Kafka's admin client
//! sees them: which groups exist and in what state, where a group's
//! coordinator is, what offsets a group committed, and committing offsets
//! for a group with no members. Joining a group (kafka-mirror's own) is
//! `membership.rs`, which finds its coordinator here.
//!
//! Group requests go to the group's coordinator, the leader of the
//! `__consumer_offsets` partition the group hashes to. When it moves, or is
//! still loading that partition, the request is retried after a new lookup,
//! with backoff; every other refusal is a [`GroupError`] naming the group,
//! and the topic and partition when the broker refused one. ListGroups is
//! answered per broker (each lists the groups it coordinates), so every
//! broker is asked.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use kafka_protocol::messages::{
    DescribeGroupsRequest, GroupId, ListGroupsRequest, OffsetCommitRequest, OffsetFetchRequest,
    OffsetFetchResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::task::JoinSet;

use super::coordinator::{find_coordinators, CoordinatorType, LookupError, Refusal};
use super::{detail, on_partition, Cluster, ClusterError, Metadata, Role};
use crate::backoff::Backoff;

/// Retries of one group request (coordinator moves, loading, a broker
/// down): about 10 s in all, the time a coordinator takes to move. A group
/// sync runs again on its next interval anyway.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);
const RETRY_ATTEMPTS: u32 = 8;

/// The first OffsetFetch version that names its groups in a list (KIP-709).
const GROUPS_LIST_OFFSET_FETCH_VERSION: i16 = 8;

/// A group's state as ListGroups reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupState {
    /// No members: offsets may be committed from outside the group.
    Empty,
    /// Being removed, without members.
    Dead,
    /// Members joined: `Stable`, a rebalance under way (`PreparingRebalance`,
    /// `CompletingRebalance`, `Assigning`, `Reconciling`), as the broker names it.
    Active(String),
    /// The broker's ListGroups version reports no states (before v4, Kafka 2.6).
    Unreported,
}

impl std::fmt::Display for GroupState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            GroupState::Empty => "Empty",
            GroupState::Dead => "Dead",
            GroupState::Active(state) => state,
            GroupState::Unreported => "state not reported",
        })
    }
}

impl GroupState {
    fn from_wire(state: &str) -> Self {
        match state {
            "" => GroupState::Unreported,
            "Empty" => GroupState::Empty,
            "Dead" => GroupState::Dead,
            other => GroupState::Active(other.to_owned()),
        }
    }
}

/// A group as a broker lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedGroup {
    /// The group id.
    pub id: String,
    /// Its state.
    pub state: GroupState,
    /// `classic`, `consumer`, `share` or `streams` (ListGroups v5, Kafka
    /// 3.8+); empty from older brokers, which have only classic groups.
    pub group_type: String,
    /// The protocol type its members joined with: `consumer`, `connect`,
    /// kafka-mirror's own; empty for a group without members.
    pub protocol_type: String,
}

impl ListedGroup {
    /// Whether the group keeps its positions as committed offsets: a share
    /// group (KIP-932) keeps them per record, out of reach of OffsetFetch,
    /// and kafka-mirror's own groups keep none.
    pub fn commits_offsets(&self) -> bool {
        self.group_type != "share" && self.protocol_type != super::membership::PROTOCOL_TYPE
    }
}

/// A group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommittedOffset {
    /// The next offset the group reads.
    pub offset: i64,
    /// The metadata committed with it (a consumer's own note).
    pub metadata: Option<String>,
}

/// A group's committed offsets by topic and partition.
pub type CommittedOffsets = BTreeMap<(String, i32), CommittedOffset>;

/// A group as DescribeGroups tells it: its members and what each joined
/// with and was assigned, in the bytes of the group's protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedGroup {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, `Dead`.
    pub state: String,
    /// The protocol type its members joined with; empty for a group
    /// without members.
    pub protocol_type: String,
    /// Its members, in the coordinator's order.
    pub members: Vec<DescribedMember>,
}

/// One member of a [`DescribedGroup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescribedMember {
    /// The member id the coordinator gave it.
    pub member_id: String,
    /// Its static group instance id, if it has one.
    pub instance_id: Option<String>,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from.
    pub client_host: String,
    /// Its assignment, as the group's leader encoded it.
    pub assignment: Bytes,
}

/// What became of a commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Every partition committed.
    Committed,
    /// Refused because the group has members (it took some since its state
    /// was read): nothing is committed from outside a live group.
    GroupActive(ResponseError),
}

/// The group request that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GroupOp {
    /// Reading the cluster's brokers.
    Metadata,
    /// ListGroups on one broker.
    ListGroups {
        /// The broker asked.
        broker: i32,
    },
    /// FindCoordinator for a group.
    FindCoordinator {
        /// The group.
        group: String,
    },
    /// OffsetFetch of a group.
    FetchOffsets {
        /// The group.
        group: String,
    },
    /// OffsetCommit for a group.
    CommitOffsets {
        /// The group.
        group: String,
    },
    /// DescribeGroups of a group.
    Describe {
        /// The group.
        group: String,
    },
}

impl std::fmt::Display for GroupOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupOp::Metadata => f.write_str("reading the cluster's brokers"),
            GroupOp::ListGroups { broker } => write!(f, "listing the groups of broker {broker}"),
            GroupOp::FindCoordinator { group } => {
                write!(f, "finding the coordinator of group {group:?}")
            }
            GroupOp::FetchOffsets { group } => {
                write!(f, "reading the committed offsets of group {group:?}")
            }
            GroupOp::CommitOffsets { group } => write!(f, "committing offsets of group {group:?}"),
            GroupOp::Describe { group } => write!(f, "describing group {group:?}"),
        }
    }
}

/// A group request that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// The broker could not be reached or the request not sent.
    #[error("{op}: {source}")]
    Unreachable {
        /// What was asked.
        op: GroupOp,
        /// The connection or cluster error, naming the cluster and broker.
        #[source]
        source: ClusterError,
    },
    /// The broker answered with an error.
    #[error(
        "{role} cluster, {op}{}: {error}{}",
        on_partition(partition),
        detail(message)
    )]
    Refused {
        /// Which cluster.
        role: Role,
        /// What was asked.
        op: GroupOp,
        /// The topic and partition the error is about, when it is about one.
        partition: Option<(String, i32)>,
        /// The broker's error.
        error: ResponseError,
        /// The broker's own words, or what the error means here; may be empty.
        message: String,
    },
}

impl GroupError {
    /// Whether asking again (after a new coordinator lookup) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            GroupError::Unreachable { source, .. } => source.is_retriable(),
            GroupError::Refused { error, .. } => matches!(
                error,
                ResponseError::CoordinatorLoadInProgress
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::NotCoordinator
                    | ResponseError::UnstableOffsetCommit
            ),
        }
    }

    /// Whether the group's coordinator must be looked up again: it moved,
    /// or its broker cannot be reached.
    fn coordinator_moved(&self) -> bool {
        match self {
            GroupError::Unreachable { .. } => true,
            GroupError::Refused { error, .. } => matches!(
                error,
                ResponseError::CoordinatorNotAvailable | ResponseError::NotCoordinator
            ),
        }
    }
}

/// Errors of an OffsetCommit that mean the group has members: a commit from
/// outside the group (generation -1, no member id) is accepted only while it
/// has none.
fn means_active(error: ResponseError) -> bool {
    matches!(
        error,
        ResponseError::UnknownMemberId
            | ResponseError::IllegalGeneration
            | ResponseError::RebalanceInProgress
            | ResponseError::StaleMemberEpoch
    )
}

/// Tries again after retriable errors, with backoff, a bounded number of times.
#[derive(Debug)]
struct Retry {
    backoff: Backoff,
    attempts: u32,
}

impl Retry {
    fn new() -> Self {
        Retry {
            backoff: Backoff::new(RETRY_BASE, RETRY_MAX),
            attempts: 0,
        }
    }

    /// Waits before the next attempt after `error`, or hands it back when
    /// it is final or the attempts are spent.
    async fn after(&mut self, error: GroupError) -> Result<(), GroupError> {
        if !error.is_retriable() || self.attempts >= RETRY_ATTEMPTS {
            return Err(error);
        }
        self.attempts += 1;
        self.backoff.fail(Instant::now());
        tracing::debug!(%error, attempt = self.attempts, "retrying a group request");
        if let Some(at) = self.backoff.until() {
            tokio::time::sleep_until(at.into()).await;
        }
        Ok(())
    }
}

/// The consumer-group requests of one cluster, with the coordinators found
/// so far. Held for one sync, or across syncs to keep the coordinators.
#[derive(Debug)]
pub struct GroupClient {
    cluster: Arc<Cluster>,
    metadata: Metadata,
    coordinators: HashMap<String, i32>,
}

impl GroupClient {
    /// A client for `cluster`; reads its brokers.
    pub async fn new(cluster: Arc<Cluster>) -> Result<Self, GroupError> {
        let mut retry = Retry::new();
        let metadata = loop {
            match cluster.metadata().await {
                Ok(metadata) => break metadata,
                Err(source) => {
                    let op = GroupOp::Metadata;
                    retry.after(GroupError::Unreachable { op, source }).await?;
                }
            }
        };
        Ok(GroupClient {
            cluster,
            metadata,
            coordinators: HashMap::new(),
        })
    }

    /// The cluster's metadata as read when the client was made.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The cluster asked.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    /// The broker coordinating `group`: the one found before, or looked up,
    /// retrying while the coordinator moves or loads.
    pub async fn coordinator_of(&mut self, group: &str) -> Result<i32, GroupError> {
        let mut retry = Retry::new();
        loop {
            match self.coordinator(group).await {
                Ok(broker) => return Ok(broker),
                Err(error) => retry.after(error).await?,
            }
        }
    }

    /// Forgets `group`'s coordinator (it moved): the next request looks it up.
    pub fn forget_coordinator(&mut self, group: &str) {
        self.coordinators.remove(group);
    }

    /// Every group of the cluster, asking every broker at once. A group a
    /// coordinator move shows on two brokers is listed once, active if
    /// either says so.
    pub async fn list_groups(&self) -> Result<Vec<ListedGroup>, GroupError> {
        let mut requests = JoinSet::new();
        for &broker in self.metadata.brokers.keys() {
            let cluster = self.cluster.clone();
            requests.spawn(async move { list_groups_of(&cluster, broker).await });
        }
        let mut groups: BTreeMap<String, ListedGroup> = BTreeMap::new();
        while let Some(joined) = requests.join_next().await {
            let Ok(listed) = joined else {
                continue;
            };
            for group in listed? {
                match groups.get(&group.id) {
                    Some(known) if matches!(known.state, GroupState::Active(_)) => {}
                    _ => {
                        groups.insert(group.id.clone(), group);
                    }
                }
            }
        }
        Ok(groups.into_values().collect())
    }

    /// Looks up the coordinators of these groups in one request where the
    /// brokers allow (FindCoordinator v4+), so the group requests that
    /// follow need no lookup of their own. Best effort: a group whose lookup
    /// fails here is looked up again, alone, when it is used.
    pub async fn find_coordinators(&mut self, groups: &[&str]) {
        let keys: Vec<&str> = groups
            .iter()
            .copied()
            .filter(|group| !self.coordinators.contains_key(*group))
            .collect();
        let Some(&first) = keys.first() else {
            return;
        };
        match self.lookup(&keys).await {
            Ok(found) => {
                for (group, result) in found {
                    match result {
                        Ok(broker) => {
                            self.coordinators.insert(group, broker);
                        }
                        Err(error) => tracing::debug!(%error, "coordinator lookup"),
                    }
                }
            }
            Err(error) => tracing::debug!(%error, group = first, "coordinator lookup"),
        }
    }

    /// The offsets `group` committed, with their metadata; empty for a group
    /// that does not exist.
    pub async fn committed_offsets(&mut self, group: &str) -> Result<CommittedOffsets, GroupError> {
        let role = self.cluster.role();
        self.at_coordinator(group, move |cluster, broker| async move {
            let response = cluster
                .send_built(broker, |version| offset_fetch_request(group, version))
                .await
                .map_err(|source| GroupError::Unreachable {
                    op: GroupOp::FetchOffsets {
                        group: group.to_owned(),
                    },
                    source,
                })?;
            read_offset_fetch(role, group, response)
        })
        .await
    }

    /// Commits `offsets` for `group` from outside it (generation -1, no
    /// member id), with their metadata and no leader epoch: epochs are the
    /// other cluster's. The coordinator accepts it only while the group has
    /// no members, and creates a group that does not exist.
    pub async fn commit(
        &mut self,
        group: &str,
        offsets: &CommittedOffsets,
    ) -> Result<CommitOutcome, GroupError> {
        let role = self.cluster.role();
        let request = offset_commit_request(group, offsets);
        self.at_coordinator(group, move |cluster, broker| {
            let request = request.clone();
            async move {
                let response = cluster.send(broker, request).await.map_err(|source| {
                    GroupError::Unreachable {
                        op: GroupOp::CommitOffsets {
                            group: group.to_owned(),
                        },
                        source,
                    }
                })?;
                read_offset_commit(role, group, response)
            }
        })
        .await
    }

    /// The group's members and their assignments (DescribeGroups); a group
    /// that does not exist is described as `Dead` with none.
    pub async fn describe(&mut self, group: &str) -> Result<DescribedGroup, GroupError> {
        let role = self.cluster.role();
        let op = || GroupOp::Describe {
            group: group.to_owned(),
        };
        let request = DescribeGroupsRequest::default()
            .with_groups(vec![GroupId(StrBytes::from_string(group.to_owned()))]);
        self.at_coordinator(group, move |cluster, broker| {
            let request = request.clone();
            async move {
                let response = cluster
                    .send(broker, request)
                    .await
                    .map_err(|source| GroupError::Unreachable { op: op(), source })?;
                let Some(described) = response.groups.into_iter().next() else {
                    return Err(GroupError::Refused {
                        role,
                        op: op(),
                        partition: None,
                        error: ResponseError::UnknownServerError,
                        message: "the group is missing from the broker's answer".into(),
                    });
                };
                match described.error_code.err() {
                    // Newer brokers say so of a group that does not exist.
                    Some(ResponseError::GroupIdNotFound) => {
                        return Ok(DescribedGroup {
                            state: "Dead".to_owned(),
                            protocol_type: String::new(),
                            members: Vec::new(),
                        })
                    }
                    Some(error) => {
                        return Err(GroupError::Refused {
                            role,
                            op: op(),
                            partition: None,
                            error,
                            message: String::new(),
                        })
                    }
                    None => {}
                }
                Ok(DescribedGroup {
                    state: described.group_state.to_string(),
                    protocol_type: described.protocol_type.to_string(),
                    members: described
                        .members
                        .into_iter()
                        .map(|m| DescribedMember {
                            member_id: m.member_id.to_string(),
                            instance_id: m.group_instance_id.map(|id| id.to_string()),
                            client_id: m.client_id.to_string(),
                            client_host: m.client_host.to_string(),
                            assignment: m.member_assignment,
                        })
                        .collect(),
                })
            }
        })
        .await
    }

    /// Runs `attempt` at the group's coordinator, looking it up again and
    /// retrying while it moves or loads.
    async fn at_coordinator<T, F, Fut>(
        &mut self,
        group: &str,
        mut attempt: F,
    ) -> Result<T, GroupError>
    where
        F: FnMut(Arc<Cluster>, i32) -> Fut,
        Fut: Future<Output = Result<T, GroupError>>,
    {
        let mut retry = Retry::new();
        loop {
            let result = match self.coordinator(group).await {
                Ok(broker) => attempt(self.cluster.clone(), broker).await,
                Err(error) => Err(error),
            };
            match result {
                Ok(value) => return Ok(value),
                Err(error) => {
                    if error.coordinator_moved() {
                        self.forget_coordinator(group);
                    }
                    retry.after(error).await?;
                }
            }
        }
    }

    /// The group's coordinator, known or looked up (once: the caller retries).
    async fn coordinator(&mut self, group: &str) -> Result<i32, GroupError> {
        if let Some(&broker) = self.coordinators.get(group) {
            return Ok(broker);
        }
        let found = self.lookup(&[group]).await?;
        let broker = found
            .into_iter()
            .find(|(key, _)| key == group)
            .map_or_else(
                || {
                    Err(GroupError::Refused {
                        role: self.cluster.role(),
                        op: GroupOp::FindCoordinator {
                            group: group.to_owned(),
                        },
                        partition: None,
                        error: ResponseError::CoordinatorNotAvailable,
                        message: "the group is missing from the broker's answer".into(),
                    })
                },
                |(_, result)| result,
            )?;
        self.coordinators.insert(group.to_owned(), broker);
        Ok(broker)
    }

    /// One FindCoordinator round for `groups` ([`find_coordinators`]).
    async fn lookup(
        &mut self,
        groups: &[&str],
    ) -> Result<Vec<(String, Result<i32, GroupError>)>, GroupError> {
        let role = self.cluster.role();
        let op = |group: &str| GroupOp::FindCoordinator {
            group: group.to_owned(),
        };
        let refused = |op, refusal: Refusal| GroupError::Refused {
            role,
            op,
            partition: None,
            error: refusal.error,
            message: refusal.message,
        };
        let first = groups.first().copied().unwrap_or_default();
        let found = find_coordinators(
            &self.cluster,
            &mut self.metadata,
            CoordinatorType::Group,
            groups,
        )
        .await
        .map_err(|error| match error {
            LookupError::Unreachable(source) => GroupError::Unreachable {
                op: op(first),
                source,
            },
            LookupError::Refused(refusal) => refused(op(first), refusal),
        })?;
        Ok(found
            .into_iter()
            .map(|(group, result)| {
                let result = result.map_err(|refusal| refused(op(&group), refusal));
                (group, result)
            })
            .collect())
    }
}

/// ListGroups on one broker, retried while it loads.
async fn list_groups_of(cluster: &Cluster, broker: i32) -> Result<Vec<ListedGroup>, GroupError> {
    let op = || GroupOp::ListGroups { broker };
    let mut retry = Retry::new();
    loop {
        let result = match cluster.send(broker, ListGroupsRequest::default()).await {
            Ok(response) => match response.error_code.err() {
                None => Ok(response.groups),
                Some(error) => Err(GroupError::Refused {
                    role: cluster.role(),
                    op: op(),
                    partition: None,
                    error,
                    message: String::new(),
                }),
            },
            Err(source) => Err(GroupError::Unreachable { op: op(), source }),
        };
        match result {
            Ok(groups) => {
                return Ok(groups
                    .into_iter()
                    .map(|group| ListedGroup {
                        id: group.group_id.0.to_string(),
                        state: GroupState::from_wire(&group.group_state),
                        group_type: group.group_type.to_string(),
                        protocol_type: group.protocol_type.to_string(),
                    })
                    .collect())
            }
            Err(error) => retry.after(error).await?,
        }
    }
}

fn offset_fetch_request(group: &str, version: i16) -> OffsetFetchRequest {
    let id = GroupId(StrBytes::from_string(group.to_owned()));
    // No topic list: every partition the group committed.
    if version >= GROUPS_LIST_OFFSET_FETCH_VERSION {
        OffsetFetchRequest::default().with_groups(vec![OffsetFetchRequestGroup::default()
            .with_group_id(id)
            .with_topics(None)])
    } else {
        OffsetFetchRequest::default()
            .with_group_id(id)
            .with_topics(None)
    }
}

/// One partition of an OffsetFetch answer, in either layout.
struct FetchedPartition {
    topic: String,
    partition: i32,
    offset: i64,
    metadata: Option<StrBytes>,
    error_code: i16,
}

/// The partitions of an OffsetFetch answer's topics: the answer before v8
/// and each group's in v8+ hold the same fields in types of their own.
macro_rules! flatten {
    ($topics:expr) => {
        $topics
            .into_iter()
            .flat_map(|t| {
                let topic = t.name.0.to_string();
                t.partitions.into_iter().map(move |p| FetchedPartition {
                    topic: topic.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    metadata: p.metadata,
                    error_code: p.error_code,
                })
            })
            .collect::<Vec<_>>()
    };
}

/// A group's committed offsets from an OffsetFetch answer (either layout);
/// partitions without a commit (offset -1) are left out.
fn read_offset_fetch(
    role: Role,
    group: &str,
    response: OffsetFetchResponse,
) -> Result<CommittedOffsets, GroupError> {
    let refused = |error, partition, message: &str| GroupError::Refused {
        role,
        op: GroupOp::FetchOffsets {
            group: group.to_owned(),
        },
        partition,
        error,
        message: message.to_owned(),
    };
    let (error_code, partitions) = if response.groups.is_empty() {
        (response.error_code, flatten!(response.topics))
    } else {
        let answer = response
            .groups
            .into_iter()
            .find(|g| &*g.group_id.0 == group)
            .ok_or_else(|| {
                let missing = "the group is missing from the broker's answer";
                refused(ResponseError::CoordinatorNotAvailable, None, missing)
            })?;
        (answer.error_code, flatten!(answer.topics))
    };
    match error_code.err() {
        None => {}
        // A group that never existed, as Kafka 4's coordinator says it.
        Some(ResponseError::GroupIdNotFound) => return Ok(CommittedOffsets::new()),
        Some(error) => return Err(refused(error, None, "")),
    }
    let mut offsets = CommittedOffsets::new();
    for p in partitions {
        if let Some(error) = p.error_code.err() {
            return Err(refused(error, Some((p.topic, p.partition)), ""));
        }
        if p.offset >= 0 {
            let committed = CommittedOffset {
                offset: p.offset,
                metadata: p.metadata.map(|m| m.to_string()),
            };
            offsets.insert((p.topic, p.partition), committed);
        }
    }
    Ok(offsets)
}

fn offset_commit_request(group: &str, offsets: &CommittedOffsets) -> OffsetCommitRequest {
    let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
    // The map is sorted by topic: each topic's partitions are consecutive.
    for ((topic, partition), committed) in offsets {
        let partition = OffsetCommitRequestPartition::default()
            .with_partition_index(*partition)
            .with_committed_offset(committed.offset)
            .with_committed_leader_epoch(-1)
            .with_committed_metadata(committed.metadata.clone().map(StrBytes::from_string));
        match topics.last_mut() {
            Some(last) if &*last.name.0 == topic.as_str() => last.partitions.push(partition),
            _ => topics.push(
                OffsetCommitRequestTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.clone())))
                    .with_partitions(vec![partition]),
            ),
        }
    }
    OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.to_owned())))
        .with_generation_id_or_member_epoch(-1)
        .with_member_id(StrBytes::default())
        .with_topics(topics)
}

/// What an OffsetCommit answer says: committed, refused because the group
/// has members, or an error (the first partition refused otherwise).
fn read_offset_commit(
    role: Role,
    group: &str,
    response: kafka_protocol::messages::OffsetCommitResponse,
) -> Result<CommitOutcome, GroupError> {
    let mut active = None;
    for topic in response.topics {
        for p in topic.partitions {
            match p.error_code.err() {
                None => {}
                Some(error) if means_active(error) => active = Some(error),
                Some(error) => {
                    return Err(GroupError::Refused {
                        role,
                        op: GroupOp::CommitOffsets {
                            group: group.to_owned(),
                        },
                        partition: Some((topic.name.0.to_string(), p.partition_index)),
                        error,
                        message: String::new(),
                    })
                }
            }
        }
    }
    Ok(active.map_or(CommitOutcome::Committed, CommitOutcome::GroupActive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::offset_commit_response::{
        OffsetCommitResponsePartition, OffsetCommitResponseTopic,
    };
    use kafka_protocol::messages::offset_fetch_response::{
        OffsetFetchResponseGroup, OffsetFetchResponsePartitions, OffsetFetchResponseTopics,
    };
    use kafka_protocol::messages::OffsetCommitResponse;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn round_trip<M: Encodable + Decodable>(message: &M, version: i16) -> M {
        let mut buf = bytes::BytesMut::new();
        message.encode(&mut buf, version).unwrap();
        M::decode(&mut buf.freeze(), version).unwrap()
    }

    #[test]
    fn offset_fetch_asks_for_every_partition_in_both_layouts() {
        let grouped = round_trip(&offset_fetch_request("g", 9), 9);
        assert_eq!(&*grouped.groups[0].group_id.0, "g");
        assert_eq!(grouped.groups[0].topics, None);
        let old = round_trip(&offset_fetch_request("g", 7), 7);
        assert_eq!(&*old.group_id.0, "g");
        assert_eq!(old.topics, None);
    }

    fn fetched(offset: i64, metadata: &'static str, error: i16) -> OffsetFetchResponsePartitions {
        OffsetFetchResponsePartitions::default()
            .with_partition_index(0)
            .with_committed_offset(offset)
            .with_committed_leader_epoch(7)
            .with_metadata(Some(StrBytes::from_static_str(metadata)))
            .with_error_code(error)
    }

    fn fetch_answer(topics: Vec<OffsetFetchResponseTopics>, error: i16) -> OffsetFetchResponse {
        OffsetFetchResponse::default().with_groups(vec![OffsetFetchResponseGroup::default()
            .with_group_id(GroupId(StrBytes::from_static_str("g")))
            .with_error_code(error)
            .with_topics(topics)])
    }

    fn topic(
        name: &'static str,
        partitions: Vec<OffsetFetchResponsePartitions>,
    ) -> OffsetFetchResponseTopics {
        OffsetFetchResponseTopics::default()
            .with_name(TopicName(StrBytes::from_static_str(name)))
            .with_partitions(partitions)
    }

    #[test]
    fn committed_offsets_keep_their_metadata_and_skip_partitions_without_a_commit() {
        let answer = fetch_answer(
            vec![
                topic("orders", vec![fetched(42, "app-note", 0)]),
                topic("logs", vec![fetched(-1, "", 0)]),
            ],
            0,
        );
        let offsets = read_offset_fetch(Role::Source, "g", answer).unwrap();
        let expected = CommittedOffset {
            offset: 42,
            metadata: Some("app-note".into()),
        };
        assert_eq!(offsets.len(), 1);
        assert_eq!(offsets[&("orders".to_owned(), 0)], expected);
    }

    #[test]
    fn offset_fetch_errors_name_the_group_and_partition() {
        let unknown_group = fetch_answer(vec![], ResponseError::GroupIdNotFound.code());
        assert!(read_offset_fetch(Role::Target, "g", unknown_group)
            .unwrap()
            .is_empty());

        let moved = fetch_answer(vec![], ResponseError::NotCoordinator.code());
        let error = read_offset_fetch(Role::Target, "g", moved).unwrap_err();
        assert!(error.is_retriable() && error.coordinator_moved());

        let refused = ResponseError::TopicAuthorizationFailed.code();
        let answer = fetch_answer(vec![topic("orders", vec![fetched(-1, "", refused)])], 0);
        let error = read_offset_fetch(Role::Source, "g", answer).unwrap_err();
        assert!(!error.is_retriable());
        assert_eq!(
            error.to_string(),
            "source cluster, reading the committed offsets of group \"g\" on orders-0: \
             TopicAuthorizationFailed"
        );
    }

    #[test]
    fn a_commit_goes_from_outside_the_group_with_metadata_and_no_epoch() {
        let mut offsets = CommittedOffsets::new();
        for (topic, partition, offset) in [("a", 0, 5), ("a", 1, 6), ("b", 0, 7)] {
            let committed = CommittedOffset {
                offset,
                metadata: Some(format!("m{offset}")),
            };
            offsets.insert((topic.to_owned(), partition), committed);
        }
        for version in [2, 7, 9] {
            let request = round_trip(&offset_commit_request("g", &offsets), version);
            assert_eq!(request.generation_id_or_member_epoch, -1);
            assert!(request.member_id.is_empty());
            let sent: Vec<_> = request
                .topics
                .iter()
                .flat_map(|t| {
                    t.partitions.iter().map(move |p| {
                        (
                            t.name.0.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.committed_metadata.as_deref().map(str::to_owned),
                        )
                    })
                })
                .collect();
            // No leader epoch (it is not sent before v6, which reads as -1).
            let epoch = -1;
            assert_eq!(
                sent,
                [
                    ("a".into(), 0, 5, epoch, Some("m5".into())),
                    ("a".into(), 1, 6, epoch, Some("m6".into())),
                    ("b".into(), 0, 7, epoch, Some("m7".into())),
                ]
            );
        }
    }

    fn commit_answer(errors: &[i16]) -> OffsetCommitResponse {
        OffsetCommitResponse::default().with_topics(vec![OffsetCommitResponseTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("orders")))
            .with_partitions(
                errors
                    .iter()
                    .enumerate()
                    .map(|(i, &e)| {
                        OffsetCommitResponsePartition::default()
                            .with_partition_index(i as i32)
                            .with_error_code(e)
                    })
                    .collect(),
            )])
    }

    #[test]
    fn a_commit_refused_for_members_is_an_active_group_not_an_error() {
        let ok = read_offset_commit(Role::Target, "g", commit_answer(&[0, 0])).unwrap();
        assert_eq!(ok, CommitOutcome::Committed);
        for error in [
            ResponseError::UnknownMemberId,
            ResponseError::IllegalGeneration,
            ResponseError::RebalanceInProgress,
            ResponseError::StaleMemberEpoch,
        ] {
            let outcome = read_offset_commit(
                Role::Target,
                "g",
                commit_answer(&[error.code(), error.code()]),
            );
            assert_eq!(outcome.unwrap(), CommitOutcome::GroupActive(error));
        }
        let loading = ResponseError::CoordinatorLoadInProgress.code();
        let error = read_offset_commit(Role::Target, "g", commit_answer(&[loading])).unwrap_err();
        assert!(error.is_retriable() && !error.coordinator_moved());
        let too_large = ResponseError::OffsetMetadataTooLarge.code();
        let error =
            read_offset_commit(Role::Target, "g", commit_answer(&[0, too_large])).unwrap_err();
        assert!(!error.is_retriable());
        assert!(error.to_string().contains("orders-1"), "{error}");
    }

    #[test]
    fn listed_states() {
        assert_eq!(GroupState::from_wire("Empty"), GroupState::Empty);
        assert_eq!(GroupState::from_wire("Dead"), GroupState::Dead);
        assert_eq!(GroupState::from_wire(""), GroupState::Unreported);
        assert_eq!(
            GroupState::from_wire("Reconciling"),
            GroupState::Active("Reconciling".into())
        );
    }
}
