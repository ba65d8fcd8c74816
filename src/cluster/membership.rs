//! Membership of a kafka-mirror group on the target cluster: instances that
//! share a name share its partitions through the target's group coordinator,
//! as Kafka Connect's workers do, on the classic group protocol with
//! kafka-mirror's own protocol type, [`PROTOCOL_TYPE`]. (KIP-848's
//! server-side assignment is for protocol type `consumer` only: Kafka 4's
//! coordinator keeps classic groups for every other protocol type.)
//!
//! A rebalance, as the coordinator runs it:
//!
//! 1. FindCoordinator (through [`GroupClient`]), then JoinGroup, which the
//!    coordinator holds until every member has joined (up to the rebalance
//!    timeout), so the member talks to it on a connection of its own. From
//!    v4 a first join without a member id is refused with MEMBER_ID_REQUIRED
//!    and the id to use; the member joins again with it (KIP-394). A group
//!    instance id makes the member static (KIP-345): it keeps its place
//!    across restarts within the session timeout.
//! 2. The leader reads every member's [`Holdings`] (the partitions it copies,
//!    the bytes it copied recently), runs [`assignment::assign`] and sends
//!    every member's [`Assignment`] in its SyncGroup; the others send none
//!    and get their own back.
//! 3. Heartbeats, every `heartbeat_interval`. REBALANCE_IN_PROGRESS: join
//!    again, still copying (cooperative, KIP-429). UNKNOWN_MEMBER_ID or
//!    ILLEGAL_GENERATION: the member is out of the group and its partitions
//!    may be another member's already: they are lost, and it joins again. No
//!    answer for a session timeout counts the same. FENCED_INSTANCE_ID:
//!    another process runs with the same group instance id; the partitions
//!    are lost and the member stops (rejoining would fence the other in
//!    turn, as Kafka's own clients reason).
//! 4. A member told to revoke partitions stops them, says so
//!    ([`Membership::revoked`]) and joins again, so that the next rebalance
//!    can give them to another member. It keeps heartbeating meanwhile.
//! 5. LeaveGroup.
//!
//! [`Membership`] is the state machine, without I/O: it says what to send
//! next ([`Membership::poll`]), builds each request for the version the
//! connection speaks, and applies the answers, returning the
//! [`MemberEvent`]s its owner acts on. [`GroupMember`] drives it over a
//! connection to the coordinator.

mod protocol;

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;

pub use protocol::CodecError;

use super::{detail, Cluster, ClusterError, GroupClient, GroupError};
use crate::assignment::{self, Assignment, Holdings, Member, TopicPartition};
use crate::backoff::Backoff;
use crate::net::Connection;

/// kafka-mirror's protocol type, as Kafka Connect's is `connect`: the
/// coordinator keeps groups of different types apart, and tools list it.
pub const PROTOCOL_TYPE: &str = "kafka-mirror";
/// The one protocol a member offers; its bytes carry their own version.
pub const PROTOCOL_NAME: &str = "cooperative";

/// How much longer than the rebalance timeout a JoinGroup answer may take,
/// as Kafka's clients allow.
const JOIN_ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// Backoff after a refused or unanswered request.
const RETRY_BASE: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(2);

/// The first versions that carry a group instance id (KIP-345).
const STATIC_JOIN_VERSION: i16 = 5;
const STATIC_SYNC_VERSION: i16 = 3;
const STATIC_HEARTBEAT_VERSION: i16 = 3;
const STATIC_LEAVE_VERSION: i16 = 3;
/// The first SyncGroup version that names the protocol type (KIP-559).
const SYNC_NAMES_PROTOCOL_VERSION: i16 = 5;

/// How a member takes part in its group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    /// The group id: the instances' shared name.
    pub group: String,
    /// Makes the member static (KIP-345): a restart within the session
    /// timeout keeps its place, without a rebalance. Unique per process.
    pub group_instance_id: Option<String>,
    /// How long the coordinator keeps a member that stopped heartbeating;
    /// within the broker's `group.min.session.timeout.ms` and
    /// `group.max.session.timeout.ms`.
    pub session_timeout: Duration,
    /// How long a rebalance waits for every member to join again, which a
    /// member revoking partitions must do within.
    pub rebalance_timeout: Duration,
    /// How often a member heartbeats.
    pub heartbeat_interval: Duration,
}

impl MemberConfig {
    /// A dynamic member of `group`, heartbeating three times per session
    /// timeout, as Kafka's clients do.
    pub fn new(
        group: impl Into<String>,
        session_timeout: Duration,
        rebalance_timeout: Duration,
    ) -> Self {
        MemberConfig {
            group: group.into(),
            group_instance_id: None,
            session_timeout,
            rebalance_timeout,
            heartbeat_interval: session_timeout / 3,
        }
    }
}

/// A member's assignment as the group's leader encoded it (what
/// DescribeGroups shows of a member), for `kafka-mirror status`.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment, CodecError> {
    protocol::decode_assignment(bytes)
}

/// The group requests a member sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestKind {
    /// JoinGroup.
    Join,
    /// SyncGroup.
    Sync,
    /// Heartbeat.
    Heartbeat,
    /// LeaveGroup.
    Leave,
}

impl std::fmt::Display for RequestKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RequestKind::Join => "JoinGroup",
            RequestKind::Sync => "SyncGroup",
            RequestKind::Heartbeat => "Heartbeat",
            RequestKind::Leave => "LeaveGroup",
        })
    }
}

/// Why a member could not take part in its group, or left it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MembershipError {
    /// The group's coordinator could not be found.
    #[error("group {group:?}: finding its coordinator: {source}")]
    Coordinator {
        /// The group.
        group: String,
        /// The lookup's error, naming the cluster.
        #[source]
        source: Box<GroupError>,
    },
    /// The coordinator could not be reached or did not answer.
    #[error("group {group:?}, {request}: {source}")]
    Unreachable {
        /// The group.
        group: String,
        /// What was sent.
        request: RequestKind,
        /// The connection error, naming the cluster and broker.
        #[source]
        source: Box<ClusterError>,
    },
    /// The coordinator refused a request.
    #[error(
        "group {group:?}, {request} as member {member_id:?}: {error}{}",
        detail(message)
    )]
    Refused {
        /// The group.
        group: String,
        /// What was refused.
        request: RequestKind,
        /// The member id sent; empty before the first join.
        member_id: String,
        /// The coordinator's error.
        error: ResponseError,
        /// What the error means here; may be empty.
        message: String,
    },
    /// The coordinator no longer counts the member (or its generation) in
    /// the group: its partitions may already be another member's.
    #[error(
        "group {group:?}: member {member_id:?} of generation {generation} is out of the group \
         ({error}); its partitions may already be another member's"
    )]
    MembershipLost {
        /// The group.
        group: String,
        /// The member id it had.
        member_id: String,
        /// The generation it had joined.
        generation: i32,
        /// UNKNOWN_MEMBER_ID or ILLEGAL_GENERATION.
        error: ResponseError,
    },
    /// No answer from the coordinator for a session timeout: it has most
    /// likely removed the member.
    #[error(
        "group {group:?}: member {member_id:?} heard nothing from the coordinator for the session \
         timeout ({timeout:?}), so it counts itself out of the group"
    )]
    SessionExpired {
        /// The group.
        group: String,
        /// The member id it had.
        member_id: String,
        /// The session timeout.
        timeout: Duration,
    },
    /// Another process joined with this member's group instance id.
    #[error(
        "group {group:?}: another process joined as group instance {instance_id:?}, \
         so this one stops (each process needs its own group instance id)"
    )]
    FencedInstance {
        /// The group.
        group: String,
        /// The group instance id both use.
        instance_id: String,
    },
    /// A member joined with metadata the leader cannot read.
    #[error("group {group:?}: the metadata of member {member_id:?} is unreadable: {source}")]
    BadMetadata {
        /// The group.
        group: String,
        /// The member whose metadata it is.
        member_id: String,
        /// What is wrong with it.
        #[source]
        source: CodecError,
    },
    /// The leader sent an assignment this member cannot read.
    #[error("group {group:?}: the assignment of generation {generation} is unreadable: {source}")]
    BadAssignment {
        /// The group.
        group: String,
        /// The generation it came with.
        generation: i32,
        /// What is wrong with it.
        #[source]
        source: CodecError,
    },
    /// A group instance id, but a coordinator too old to take one.
    #[error(
        "group {group:?}: {request} v{version} cannot carry a group instance id \
         (static membership needs v{needed}, Kafka 2.3)"
    )]
    StaticMembershipUnsupported {
        /// The group.
        group: String,
        /// The request.
        request: RequestKind,
        /// The version the coordinator speaks.
        version: i16,
        /// The version needed.
        needed: i16,
    },
    /// The member left its group or was fenced: nothing more to do.
    #[error("group {group:?}: the member has left the group")]
    Stopped {
        /// The group.
        group: String,
    },
}

impl MembershipError {
    /// Whether trying again (after a new coordinator lookup) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            MembershipError::Coordinator { source, .. } => source.is_retriable(),
            MembershipError::Unreachable { source, .. } => source.is_retriable(),
            MembershipError::Refused { error, .. } => matches!(
                error,
                ResponseError::CoordinatorLoadInProgress
                    | ResponseError::CoordinatorNotAvailable
                    | ResponseError::NotCoordinator
            ),
            _ => false,
        }
    }

    /// Whether the coordinator must be looked up again: it moved, or its
    /// broker cannot be reached.
    pub fn coordinator_moved(&self) -> bool {
        match self {
            MembershipError::Coordinator { .. } | MembershipError::Unreachable { .. } => true,
            MembershipError::Refused { error, .. } => matches!(
                error,
                ResponseError::CoordinatorNotAvailable | ResponseError::NotCoordinator
            ),
            _ => false,
        }
    }
}

/// What the owner of a member must act on.
#[derive(Debug)]
pub enum MemberEvent {
    /// A generation's assignment: copy `assignment.partitions` (those not
    /// copied yet are new); stop `assignment.revoke`, then call
    /// [`Membership::revoked`].
    Assigned {
        /// The generation.
        generation: i32,
        /// This member's part.
        assignment: Assignment,
    },
    /// The member, which was in the group, is out of it without having
    /// revoked its partitions: stop copying them at once, another member
    /// may be given them. It joins again by itself (unless `cause` is
    /// [`MembershipError::FencedInstance`]: then it stops).
    Lost {
        /// The partitions it copied (none if it copied none).
        partitions: BTreeSet<TopicPartition>,
        /// Why.
        cause: MembershipError,
    },
}

/// What a member does next, from [`Membership::poll`].
#[derive(Debug)]
pub enum Next {
    /// Send this request to the coordinator now, built by
    /// [`Membership::join_request`] (and its kind) for the version the
    /// connection speaks; give the answer to [`Membership::join_answered`]
    /// (and its kind), or say [`Membership::unanswered`].
    Send(RequestKind),
    /// Nothing to send before this instant.
    Wait(Instant),
    /// A request is out: nothing until its answer.
    AwaitAnswer,
    /// Something for the owner, found by the clock (a session that ended).
    Event(MemberEvent),
    /// The member left or was fenced.
    Done,
}

#[derive(Debug, Clone)]
enum State {
    /// JoinGroup is due (after any backoff) or out.
    Joining,
    /// Joined: SyncGroup is due or out, with the leader's assignments.
    Syncing {
        assignments: Vec<(String, Bytes)>,
    },
    /// Assigned: heartbeating, and stopping `revoking` before joining again.
    Stable {
        revoking: BTreeSet<TopicPartition>,
    },
    /// LeaveGroup is due or out.
    Leaving,
    Done,
}

/// One member's state in its group, without I/O (see the module docs).
/// A clone is the view of a process that stalled at that point.
#[derive(Debug, Clone)]
pub struct Membership {
    config: MemberConfig,
    /// Every partition the group copies: what the member assigns if it leads.
    partitions: BTreeSet<TopicPartition>,
    member_id: String,
    /// The generation joined; -1 before and after losing it.
    generation: i32,
    leader: bool,
    /// What the member copies (partitions being revoked included), in which
    /// generation it was assigned, and the bytes it reports.
    holdings: Holdings,
    state: State,
    in_flight: Option<RequestKind>,
    retry: Backoff,
    next_heartbeat: Instant,
    /// When the request out was sent.
    sent_at: Instant,
    /// When the last request the coordinator answered counting the member
    /// in the group was sent: the coordinator heard from the member after
    /// this, so its session there lasts at least until this plus the
    /// session timeout.
    confirmed_at: Instant,
    /// Why the next JoinGroup goes, for the broker's log (KIP-800).
    reason: &'static str,
}

impl Membership {
    /// A member about to join; `partitions` are the group's, for when it leads.
    pub fn new(config: MemberConfig, partitions: BTreeSet<TopicPartition>, now: Instant) -> Self {
        Membership {
            config,
            partitions,
            member_id: String::new(),
            generation: -1,
            leader: false,
            holdings: Holdings {
                generation: -1,
                ..Holdings::default()
            },
            state: State::Joining,
            in_flight: None,
            retry: Backoff::new(RETRY_BASE, RETRY_MAX),
            next_heartbeat: now,
            sent_at: now,
            confirmed_at: now,
            reason: "starting",
        }
    }

    /// How the member takes part.
    pub fn config(&self) -> &MemberConfig {
        &self.config
    }

    /// The member id the coordinator gave; empty before.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation joined; -1 when not in the group.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// Whether the member leads the generation it joined.
    pub fn is_leader(&self) -> bool {
        self.leader
    }

    /// The partitions the member copies, those it is revoking included.
    pub fn owned(&self) -> &BTreeSet<TopicPartition> {
        &self.holdings.owned
    }

    /// The group's partitions changed: what the member assigns if it leads
    /// the next rebalance (see [`Membership::rejoin`] to start one).
    pub fn set_partitions(&mut self, partitions: BTreeSet<TopicPartition>) {
        self.partitions = partitions;
    }

    /// The bytes copied recently, by partition, reported at the next join.
    pub fn set_recent_bytes(&mut self, recent_bytes: BTreeMap<TopicPartition, u64>) {
        self.holdings.recent_bytes = recent_bytes;
    }

    /// Asks for a rebalance (partitions were added, say): the member joins
    /// again, still copying. Once revocations are done if any are under way.
    pub fn rejoin(&mut self, reason: &'static str) {
        if matches!(&self.state, State::Stable { revoking } if revoking.is_empty()) {
            self.state = State::Joining;
            self.reason = reason;
        }
    }

    /// The partitions to revoke are stopped: the member no longer copies
    /// them and joins again, so the next rebalance can move them.
    pub fn revoked(&mut self) {
        if let State::Stable { revoking } = &mut self.state {
            if !revoking.is_empty() {
                for p in std::mem::take(revoking) {
                    self.holdings.owned.remove(&p);
                }
                self.state = State::Joining;
                self.reason = "revoked partitions for another member";
            }
        }
    }

    /// Leaves the group, once any request out is answered. Stop copying
    /// first: the partitions go to other members at once.
    pub fn leave(&mut self) {
        if matches!(self.state, State::Done) {
            return;
        }
        self.state = if self.member_id.is_empty() {
            State::Done
        } else {
            State::Leaving
        };
    }

    /// When the member's session ends unless the coordinator answers
    /// before: a heartbeat's answer is awaited no longer than this.
    pub fn deadline(&self) -> Option<Instant> {
        matches!(self.state, State::Stable { .. })
            .then(|| self.confirmed_at + self.config.session_timeout)
    }

    /// Until when the member may write for the partitions it copies: the
    /// coordinator cannot have removed it from the group (and given them
    /// to another member) before then. The send time of the last request it
    /// answered counting the member in, plus the session timeout; `None`
    /// when the member copies nothing.
    pub fn lease_end(&self) -> Option<Instant> {
        let holds = !self.holdings.owned.is_empty() && !matches!(self.state, State::Done);
        holds.then(|| self.confirmed_at + self.config.session_timeout)
    }

    /// What to do now.
    ///
    /// A session that ends without an answer loses nothing by itself: the
    /// coordinator may have removed the member, or may have been down or
    /// moving all along. Writes wait meanwhile (the lease ended), and the
    /// member goes on asking: the coordinator's answer says whether it
    /// still holds its partitions (it copies on from where it was) or not
    /// (`UNKNOWN_MEMBER_ID`, `ILLEGAL_GENERATION`: lost). Losing them on its
    /// own would copy again all that is past the last checkpoint, even
    /// when no other member took them.
    pub fn poll(&mut self, now: Instant) -> Next {
        if self.in_flight.is_some() && self.deadline().is_some_and(|end| now >= end) {
            self.unanswered(now);
        }
        if self.in_flight.is_some() {
            return Next::AwaitAnswer;
        }
        if let Some(at) = self.retry.until().filter(|at| *at > now) {
            if !matches!(self.state, State::Done) {
                return Next::Wait(at);
            }
        }
        let kind = match &self.state {
            State::Joining => RequestKind::Join,
            State::Syncing { .. } => RequestKind::Sync,
            State::Stable { .. } if now < self.next_heartbeat => {
                return Next::Wait(self.next_heartbeat)
            }
            State::Stable { .. } => RequestKind::Heartbeat,
            State::Leaving => RequestKind::Leave,
            State::Done => return Next::Done,
        };
        self.in_flight = Some(kind);
        self.sent_at = now;
        Next::Send(kind)
    }

    /// The request out got no answer (or could not be sent): it is tried
    /// again after a backoff; an unanswered SyncGroup by joining again, an
    /// unanswered LeaveGroup not at all (the session timeout removes the
    /// member).
    pub fn unanswered(&mut self, now: Instant) {
        let Some(kind) = self.in_flight.take() else {
            return;
        };
        self.retry.fail(now);
        match kind {
            RequestKind::Sync => self.rejoin_now("no answer to SyncGroup"),
            RequestKind::Leave => self.state = State::Done,
            RequestKind::Join | RequestKind::Heartbeat => {}
        }
    }

    /// The JoinGroup for `version`.
    pub fn join_request(&self, version: i16) -> Result<JoinGroupRequest, MembershipError> {
        let metadata = protocol::encode_metadata(&self.holdings);
        Ok(JoinGroupRequest::default()
            .with_group_id(self.group_id())
            .with_session_timeout_ms(millis(self.config.session_timeout))
            .with_rebalance_timeout_ms(millis(self.config.rebalance_timeout))
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_group_instance_id(self.instance_id(
                RequestKind::Join,
                version,
                STATIC_JOIN_VERSION,
            )?)
            .with_protocol_type(StrBytes::from_static_str(PROTOCOL_TYPE))
            .with_protocols(vec![JoinGroupRequestProtocol::default()
                .with_name(StrBytes::from_static_str(PROTOCOL_NAME))
                .with_metadata(metadata)])
            .with_reason(Some(StrBytes::from_static_str(self.reason))))
    }

    /// The SyncGroup for `version`: every member's assignment if this
    /// member leads, none otherwise.
    pub fn sync_request(&self, version: i16) -> Result<SyncGroupRequest, MembershipError> {
        let assignments = match &self.state {
            State::Syncing { assignments } => assignments
                .iter()
                .map(|(member, assignment)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_string(member.clone()))
                        .with_assignment(assignment.clone())
                })
                .collect(),
            _ => Vec::new(),
        };
        let names = version >= SYNC_NAMES_PROTOCOL_VERSION;
        Ok(SyncGroupRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_group_instance_id(self.instance_id(
                RequestKind::Sync,
                version,
                STATIC_SYNC_VERSION,
            )?)
            .with_protocol_type(names.then(|| StrBytes::from_static_str(PROTOCOL_TYPE)))
            .with_protocol_name(names.then(|| StrBytes::from_static_str(PROTOCOL_NAME)))
            .with_assignments(assignments))
    }

    /// The Heartbeat for `version`.
    pub fn heartbeat_request(&self, version: i16) -> Result<HeartbeatRequest, MembershipError> {
        Ok(HeartbeatRequest::default()
            .with_group_id(self.group_id())
            .with_generation_id(self.generation)
            .with_member_id(StrBytes::from_string(self.member_id.clone()))
            .with_group_instance_id(self.instance_id(
                RequestKind::Heartbeat,
                version,
                STATIC_HEARTBEAT_VERSION,
            )?))
    }

    /// The LeaveGroup for `version`.
    pub fn leave_request(&self, version: i16) -> Result<LeaveGroupRequest, MembershipError> {
        let member_id = StrBytes::from_string(self.member_id.clone());
        let request = LeaveGroupRequest::default().with_group_id(self.group_id());
        if version < STATIC_LEAVE_VERSION {
            self.instance_id(RequestKind::Leave, version, STATIC_LEAVE_VERSION)?;
            return Ok(request.with_member_id(member_id));
        }
        Ok(request.with_members(vec![MemberIdentity::default()
            .with_member_id(member_id)
            .with_group_instance_id(
                self.config
                    .group_instance_id
                    .clone()
                    .map(StrBytes::from_string),
            )
            .with_reason(Some(StrBytes::from_static_str("stopping")))]))
    }

    /// Applies a JoinGroup answer. As leader, the member assigns the
    /// group's partitions here.
    pub fn join_answered(
        &mut self,
        response: JoinGroupResponse,
        now: Instant,
    ) -> Result<Option<MemberEvent>, MembershipError> {
        if !self.answer_expected(RequestKind::Join) {
            return Ok(None);
        }
        match response.error_code.err() {
            None => {
                self.retry.reset();
                self.member_id = response.member_id.to_string();
                self.generation = response.generation_id;
                self.leader = response.leader == response.member_id;
                self.confirmed_at = self.sent_at;
                let assignments = if self.leader && !response.skip_assignment {
                    self.assign(&response.members)
                        .inspect_err(|_| self.retry.fail(now))?
                } else {
                    Vec::new()
                };
                tracing::debug!(
                    group = %self.config.group,
                    member_id = %self.member_id,
                    generation = self.generation,
                    leader = self.leader,
                    "joined the group"
                );
                self.state = State::Syncing { assignments };
                Ok(None)
            }
            Some(ResponseError::MemberIdRequired) => {
                // KIP-394: join again with the id the coordinator chose.
                self.member_id = response.member_id.to_string();
                Ok(None)
            }
            Some(error) => self.refused(RequestKind::Join, error, now),
        }
    }

    /// Applies a SyncGroup answer: the member's assignment.
    pub fn sync_answered(
        &mut self,
        response: SyncGroupResponse,
        now: Instant,
    ) -> Result<Option<MemberEvent>, MembershipError> {
        if !self.answer_expected(RequestKind::Sync) {
            return Ok(None);
        }
        if let Some(error) = response.error_code.err() {
            if matches!(
                error,
                ResponseError::NotCoordinator | ResponseError::CoordinatorNotAvailable
            ) {
                // The new coordinator runs a new rebalance.
                self.rejoin_now("the coordinator moved");
            }
            return self.refused(RequestKind::Sync, error, now);
        }
        let given = if response.assignment.is_empty() {
            Assignment::default()
        } else {
            protocol::decode_assignment(&response.assignment).map_err(|source| {
                self.retry.fail(now);
                self.rejoin_now("unreadable assignment");
                MembershipError::BadAssignment {
                    group: self.config.group.clone(),
                    generation: self.generation,
                    source,
                }
            })?
        };
        // Whatever the leader listed, the member stops all it copies and
        // was not given.
        let revoke: BTreeSet<TopicPartition> = self
            .holdings
            .owned
            .difference(&given.partitions)
            .cloned()
            .collect();
        self.holdings.owned.extend(given.partitions.iter().cloned());
        self.holdings.generation = self.generation;
        self.holdings.slot = given.slot;
        self.retry.reset();
        self.confirmed_at = self.sent_at;
        self.next_heartbeat = now + self.config.heartbeat_interval;
        self.state = State::Stable {
            revoking: revoke.clone(),
        };
        tracing::info!(
            group = %self.config.group,
            member_id = %self.member_id,
            generation = self.generation,
            partitions = given.partitions.len(),
            revoke = revoke.len(),
            slot = ?given.slot,
            "assigned"
        );
        Ok(Some(MemberEvent::Assigned {
            generation: self.generation,
            assignment: Assignment {
                partitions: given.partitions,
                revoke,
                slot: given.slot,
            },
        }))
    }

    /// Applies a Heartbeat answer.
    pub fn heartbeat_answered(
        &mut self,
        response: HeartbeatResponse,
        now: Instant,
    ) -> Result<Option<MemberEvent>, MembershipError> {
        if !self.answer_expected(RequestKind::Heartbeat) {
            return Ok(None);
        }
        match response.error_code.err() {
            None => {
                self.retry.reset();
                self.confirmed_at = self.sent_at;
                self.next_heartbeat = now + self.config.heartbeat_interval;
                Ok(None)
            }
            Some(ResponseError::RebalanceInProgress) => {
                self.retry.reset();
                self.confirmed_at = self.sent_at;
                self.next_heartbeat = now + self.config.heartbeat_interval;
                // Revoking: the join follows `revoked`, within the rebalance timeout.
                self.rejoin("rebalance in progress");
                Ok(None)
            }
            Some(error) => self.refused(RequestKind::Heartbeat, error, now),
        }
    }

    /// Applies a LeaveGroup answer: the member is out either way.
    pub fn leave_answered(&mut self, response: LeaveGroupResponse) -> Result<(), MembershipError> {
        if !self.answer_expected(RequestKind::Leave) {
            return Ok(());
        }
        self.state = State::Done;
        self.holdings.owned.clear();
        self.generation = -1;
        // A member the coordinator already forgot has left too.
        let refused = std::iter::once(response.error_code)
            .chain(response.members.iter().map(|m| m.error_code))
            .filter_map(|code| code.err())
            .find(|error| *error != ResponseError::UnknownMemberId);
        match refused {
            None => Ok(()),
            Some(error) => Err(self.refusal(RequestKind::Leave, error)),
        }
    }

    fn group_id(&self) -> GroupId {
        GroupId(StrBytes::from_string(self.config.group.clone()))
    }

    /// The group instance id to send, if any and if `version` can carry it.
    fn instance_id(
        &self,
        request: RequestKind,
        version: i16,
        needed: i16,
    ) -> Result<Option<StrBytes>, MembershipError> {
        match &self.config.group_instance_id {
            None => Ok(None),
            Some(_) if version < needed => Err(MembershipError::StaticMembershipUnsupported {
                group: self.config.group.clone(),
                request,
                version,
                needed,
            }),
            Some(id) => Ok(Some(StrBytes::from_string(id.clone()))),
        }
    }

    /// Whether an answer of `kind` is the one awaited (it is then no
    /// longer) and still matters: after [`Membership::leave`], only the
    /// LeaveGroup's does.
    fn answer_expected(&mut self, kind: RequestKind) -> bool {
        if self.in_flight != Some(kind) {
            return false;
        }
        self.in_flight = None;
        kind == RequestKind::Leave || !matches!(self.state, State::Leaving | State::Done)
    }

    /// The leader's assignment of the group's partitions to the members.
    fn assign(
        &self,
        members: &[JoinGroupResponseMember],
    ) -> Result<Vec<(String, Bytes)>, MembershipError> {
        let members = members
            .iter()
            .map(|m| {
                let id = m.member_id.to_string();
                match protocol::decode_metadata(&m.metadata) {
                    Ok(holdings) => Ok(Member { id, holdings }),
                    Err(source) => Err(MembershipError::BadMetadata {
                        group: self.config.group.clone(),
                        member_id: id,
                        source,
                    }),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(
            group = %self.config.group,
            generation = self.generation,
            members = members.len(),
            partitions = self.partitions.len(),
            "assigning the group's partitions as its leader"
        );
        Ok(assignment::assign(&members, &self.partitions)
            .iter()
            .map(|(member, assignment)| (member.clone(), protocol::encode_assignment(assignment)))
            .collect())
    }

    /// What a refusal means: out of the group (lost), fenced (lost, and
    /// stop), or an error, after which the request is tried again later.
    fn refused(
        &mut self,
        request: RequestKind,
        error: ResponseError,
        now: Instant,
    ) -> Result<Option<MemberEvent>, MembershipError> {
        match error {
            ResponseError::UnknownMemberId | ResponseError::IllegalGeneration
                if self.generation < 0 && self.holdings.owned.is_empty() =>
            {
                // Nothing to lose (the loss was told already): join afresh.
                if error == ResponseError::UnknownMemberId {
                    self.member_id.clear();
                }
                self.state = State::Joining;
                Ok(None)
            }
            ResponseError::UnknownMemberId | ResponseError::IllegalGeneration => {
                let cause = MembershipError::MembershipLost {
                    group: self.config.group.clone(),
                    member_id: self.member_id.clone(),
                    generation: self.generation,
                    error,
                };
                if error == ResponseError::UnknownMemberId {
                    self.member_id.clear();
                }
                Ok(Some(self.lose(cause)))
            }
            ResponseError::FencedInstanceId => {
                let cause = MembershipError::FencedInstance {
                    group: self.config.group.clone(),
                    instance_id: self.config.group_instance_id.clone().unwrap_or_default(),
                };
                let lost = self.lose(cause);
                self.state = State::Done;
                Ok(Some(lost))
            }
            ResponseError::RebalanceInProgress => {
                self.rejoin_now("rebalance in progress");
                Ok(None)
            }
            error => {
                self.retry.fail(now);
                Err(self.refusal(request, error))
            }
        }
    }

    fn refusal(&self, request: RequestKind, error: ResponseError) -> MembershipError {
        let message = match error {
            ResponseError::InconsistentGroupProtocol => {
                "another kind of client uses this group id, a consumer group of the same name say"
            }
            ResponseError::InvalidSessionTimeout => {
                "the broker takes session timeouts between its group.min.session.timeout.ms \
                 and group.max.session.timeout.ms"
            }
            ResponseError::GroupMaxSizeReached => "the broker's group.max.size is reached",
            _ => "",
        };
        MembershipError::Refused {
            group: self.config.group.clone(),
            request,
            member_id: self.member_id.clone(),
            error,
            message: message.to_owned(),
        }
    }

    /// Out of the group: every partition is lost, and the member joins again.
    fn lose(&mut self, cause: MembershipError) -> MemberEvent {
        tracing::warn!(
            group = %self.config.group,
            partitions = self.holdings.owned.len(),
            %cause,
            "lost the group membership"
        );
        let partitions = self.start_over("lost the membership");
        MemberEvent::Lost { partitions, cause }
    }

    /// Gives up everything the member holds, its writer slot included (its
    /// owner could not keep it: exactly-once, another member took the
    /// slot's transactional id), and joins again as a member holding
    /// nothing. Returns the partitions it held. Stop copying them first.
    pub fn start_over(&mut self, reason: &'static str) -> BTreeSet<TopicPartition> {
        let partitions = std::mem::take(&mut self.holdings.owned);
        self.holdings.generation = -1;
        self.holdings.slot = None;
        self.generation = -1;
        self.leader = false;
        if !matches!(self.state, State::Leaving | State::Done) {
            self.state = State::Joining;
            self.reason = reason;
        }
        // An answer to the request out would be to the member it was.
        self.in_flight = None;
        partitions
    }

    /// Joins again at once, partitions kept (after a revocation if one is
    /// under way).
    fn rejoin_now(&mut self, reason: &'static str) {
        match &self.state {
            State::Stable { revoking } if !revoking.is_empty() => {}
            State::Leaving | State::Done => {}
            _ => {
                self.state = State::Joining;
                self.reason = reason;
            }
        }
    }
}

fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

/// A coordinator's answer, to whichever request was out.
enum Answer {
    Join(JoinGroupResponse),
    Sync(SyncGroupResponse),
    Heartbeat(HeartbeatResponse),
    Leave(LeaveGroupResponse),
}

/// The request out: its answer, or `None` when the member's session ended
/// before it came.
type Pending = Pin<Box<dyn Future<Output = Result<Option<Answer>, MembershipError>> + Send>>;

/// What a request needs to reach the coordinator: the group client that
/// finds it, and the connection to it once opened. The request out holds
/// it (finding the coordinator and connecting are part of the request), so
/// that a wait cancelled midway resumes where it was instead of starting
/// over.
#[derive(Debug)]
struct CoordinatorLink {
    groups: GroupClient,
    connection: Option<Connection>,
}

impl CoordinatorLink {
    /// The connection to `group`'s coordinator, found and opened if needed.
    async fn connection(
        &mut self,
        config: &MemberConfig,
        kind: RequestKind,
    ) -> Result<Connection, MembershipError> {
        if let Some(connection) = &self.connection {
            if !connection.is_closed() && !connection.is_expired() {
                return Ok(connection.clone());
            }
        }
        let broker = self
            .groups
            .coordinator_of(&config.group)
            .await
            .map_err(|source| MembershipError::Coordinator {
                group: config.group.clone(),
                source: Box::new(source),
            })?;
        let connection = self
            .groups
            .cluster()
            .dedicated_connection(broker, config.rebalance_timeout + JOIN_ANSWER_MARGIN)
            .await
            .map_err(|source| MembershipError::Unreachable {
                group: config.group.clone(),
                request: kind,
                source: Box::new(source),
            })?;
        self.connection = Some(connection.clone());
        Ok(connection)
    }

    /// Sends `membership`'s request of `kind` and waits for the answer.
    async fn exchange(
        &mut self,
        membership: &Membership,
        kind: RequestKind,
    ) -> Result<Answer, MembershipError> {
        match kind {
            RequestKind::Join => {
                self.send(membership, kind, Membership::join_request, Answer::Join)
                    .await
            }
            RequestKind::Sync => {
                self.send(membership, kind, Membership::sync_request, Answer::Sync)
                    .await
            }
            RequestKind::Heartbeat => {
                self.send(
                    membership,
                    kind,
                    Membership::heartbeat_request,
                    Answer::Heartbeat,
                )
                .await
            }
            RequestKind::Leave => {
                self.send(membership, kind, Membership::leave_request, Answer::Leave)
                    .await
            }
        }
    }

    /// One request, built for the version the coordinator's connection speaks.
    async fn send<R>(
        &mut self,
        membership: &Membership,
        kind: RequestKind,
        build: fn(&Membership, i16) -> Result<R, MembershipError>,
        answer: fn(R::Response) -> Answer,
    ) -> Result<Answer, MembershipError>
    where
        R: Request + Send + Sync + 'static,
        R::Response: Send,
    {
        let connection = self.connection(&membership.config, kind).await?;
        let unreachable = |source| MembershipError::Unreachable {
            group: membership.config.group.clone(),
            request: kind,
            source: Box::new(self.groups.cluster().net_error(source)),
        };
        let version = connection.request_version::<R>().map_err(unreachable)?;
        let request = build(membership, version)?;
        let response = connection
            .send_versioned(request, version)
            .await
            .map_err(unreachable)?;
        Ok(answer(response))
    }

    /// Forgets the coordinator when `error` says it moved: the next request
    /// looks it up again.
    fn forget_if_moved(&mut self, group: &str, error: &MembershipError) {
        if error.coordinator_moved() {
            self.connection = None;
            self.groups.forget_coordinator(group);
        }
    }
}

/// A member driven over a connection of its own to the group's coordinator:
/// [`GroupMember::next_event`] sends what the group needs until its owner
/// has something to act on.
pub struct GroupMember {
    membership: Membership,
    /// Between requests here; the request out holds it meanwhile.
    link: Arc<tokio::sync::Mutex<CoordinatorLink>>,
    pending: Option<Pending>,
}

impl std::fmt::Debug for GroupMember {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupMember")
            .field("membership", &self.membership)
            .field("request_out", &self.pending.is_some())
            .finish_non_exhaustive()
    }
}

impl GroupMember {
    /// A member of `config.group` on `cluster`; it joins on the first
    /// [`GroupMember::next_event`].
    pub async fn new(
        cluster: Arc<Cluster>,
        config: MemberConfig,
        partitions: BTreeSet<TopicPartition>,
    ) -> Result<Self, MembershipError> {
        let groups =
            GroupClient::new(cluster)
                .await
                .map_err(|source| MembershipError::Coordinator {
                    group: config.group.clone(),
                    source: Box::new(source),
                })?;
        let link = CoordinatorLink {
            groups,
            connection: None,
        };
        Ok(GroupMember {
            membership: Membership::new(config, partitions, Instant::now()),
            link: Arc::new(tokio::sync::Mutex::new(link)),
            pending: None,
        })
    }

    /// The member's state.
    pub fn membership(&self) -> &Membership {
        &self.membership
    }

    /// The member's state, to report bytes, set the partitions, say a
    /// revocation is done or ask for a rebalance.
    pub fn membership_mut(&mut self) -> &mut Membership {
        &mut self.membership
    }

    /// Joins, syncs and heartbeats until the owner has something to act
    /// on. Connection failures and a moving coordinator are retried here;
    /// an error returned is one that retrying will not cure (calling again
    /// joins again). After a [`MembershipError::FencedInstance`] loss or a
    /// leave: [`MembershipError::Stopped`].
    ///
    /// Cancel-safe, so it can wait in a `select!`: the request out, from
    /// the coordinator lookup to its answer, stays out, and the next call
    /// goes on waiting for it.
    pub async fn next_event(&mut self) -> Result<MemberEvent, MembershipError> {
        loop {
            match self.step().await {
                Ok(Some(event)) => return Ok(event),
                Ok(None) => {}
                Err(error) if error.is_retriable() => {
                    tracing::debug!(%error, "group request failed; trying again");
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Leaves the group: stop copying first. A request out is dropped (a
    /// JoinGroup may be held for the rebalance timeout) and the LeaveGroup
    /// goes on a new connection. A coordinator that cannot be told removes
    /// the member after its session timeout anyway.
    pub async fn leave(mut self) -> Result<(), MembershipError> {
        if self.pending.take().is_some() {
            self.membership.unanswered(Instant::now());
            self.link.lock().await.connection = None;
        }
        self.membership.leave();
        loop {
            match self.step().await {
                Err(MembershipError::Stopped { .. }) => return Ok(()),
                Ok(_) => {}
                Err(error) if error.is_retriable() => {}
                Err(error) => return Err(error),
            }
        }
    }

    /// One step: the answer to the request out applied, or the next request
    /// sent, or a wait.
    async fn step(&mut self) -> Result<Option<MemberEvent>, MembershipError> {
        if let Some(pending) = self.pending.as_mut() {
            let answer = pending.await;
            self.pending = None;
            return self.apply(answer);
        }
        let now = Instant::now();
        match self.membership.poll(now) {
            Next::Event(event) => Ok(Some(event)),
            Next::Done => Err(MembershipError::Stopped {
                group: self.membership.config.group.clone(),
            }),
            Next::Wait(at) => {
                tokio::time::sleep_until(at.into()).await;
                Ok(None)
            }
            // A request was being sent when a call was cancelled.
            Next::AwaitAnswer => {
                self.membership.unanswered(now);
                Ok(None)
            }
            Next::Send(kind) => {
                self.pending = Some(self.request(kind));
                Ok(None)
            }
        }
    }

    /// The request of `kind` as a future of its own, built from the
    /// membership as it is now. Until the member's session ends its answer
    /// is awaited no longer than that; once it has ended, as long as the
    /// connection lets it: only an answer tells where the member stands.
    fn request(&self, kind: RequestKind) -> Pending {
        let link = self.link.clone();
        let membership = self.membership.clone();
        let session_end = membership.deadline().filter(|end| *end > Instant::now());
        Box::pin(async move {
            let mut link = link.lock_owned().await;
            let exchange = link.exchange(&membership, kind);
            match session_end {
                Some(end) => match tokio::time::timeout_at(end.into(), exchange).await {
                    Ok(answer) => answer.map(Some),
                    Err(_) => {
                        // The connection may be stuck: the next request opens another.
                        link.connection = None;
                        Ok(None)
                    }
                },
                None => exchange.await.map(Some),
            }
        })
    }

    fn apply(
        &mut self,
        answer: Result<Option<Answer>, MembershipError>,
    ) -> Result<Option<MemberEvent>, MembershipError> {
        let now = Instant::now();
        let applied = match answer {
            Ok(Some(Answer::Join(r))) => self.membership.join_answered(r, now),
            Ok(Some(Answer::Sync(r))) => self.membership.sync_answered(r, now),
            Ok(Some(Answer::Heartbeat(r))) => self.membership.heartbeat_answered(r, now),
            Ok(Some(Answer::Leave(r))) => self.membership.leave_answered(r).map(|()| None),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        // Without an answer applied, the membership hears so.
        self.membership.unanswered(now);
        if let Err(error) = &applied {
            // The request is over, so the link is free.
            if let Ok(mut link) = self.link.try_lock() {
                link.forget_if_moved(&self.membership.config.group, error);
            }
        }
        applied
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::leave_group_response::MemberResponse;
    use kafka_protocol::protocol::{Decodable, Encodable};

    const SESSION: Duration = Duration::from_secs(9);

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        (topic.to_owned(), partition)
    }

    fn partitions(count: i32) -> BTreeSet<TopicPartition> {
        (0..count).map(|p| tp("t", p)).collect()
    }

    fn config() -> MemberConfig {
        MemberConfig::new("mirror", SESSION, Duration::from_secs(30))
    }

    fn round_trip<M: Encodable + Decodable>(message: &M, version: i16) -> M {
        let mut buf = bytes::BytesMut::new();
        message.encode(&mut buf, version).unwrap();
        M::decode(&mut buf.freeze(), version).unwrap()
    }

    fn sent(member: &mut Membership, now: Instant) -> RequestKind {
        match member.poll(now) {
            Next::Send(kind) => kind,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    fn join_answer(error: ResponseError, member_id: &str) -> JoinGroupResponse {
        JoinGroupResponse::default()
            .with_error_code(error.code())
            .with_member_id(StrBytes::from_string(member_id.to_owned()))
    }

    fn joined(
        member_id: &str,
        leader: &str,
        generation: i32,
        members: Vec<JoinGroupResponseMember>,
    ) -> JoinGroupResponse {
        JoinGroupResponse::default()
            .with_generation_id(generation)
            .with_member_id(StrBytes::from_string(member_id.to_owned()))
            .with_leader(StrBytes::from_string(leader.to_owned()))
            .with_protocol_name(Some(StrBytes::from_static_str(PROTOCOL_NAME)))
            .with_members(members)
    }

    fn joined_member(id: &str, holdings: &Holdings) -> JoinGroupResponseMember {
        JoinGroupResponseMember::default()
            .with_member_id(StrBytes::from_string(id.to_owned()))
            .with_metadata(protocol::encode_metadata(holdings))
    }

    fn synced(assignment: &Assignment) -> SyncGroupResponse {
        SyncGroupResponse::default().with_assignment(protocol::encode_assignment(assignment))
    }

    fn heartbeat(error: Option<ResponseError>) -> HeartbeatResponse {
        HeartbeatResponse::default().with_error_code(error.map_or(0, |e| e.code()))
    }

    /// A follower that joined as `m-1` in generation 3 and was given `given`.
    fn stable_member(given: &[i32], now: Instant) -> Membership {
        let mut member = Membership::new(config(), partitions(6), now);
        assert_eq!(sent(&mut member, now), RequestKind::Join);
        member
            .join_answered(joined("m-1", "m-0", 3, vec![]), now)
            .unwrap();
        assert_eq!(sent(&mut member, now), RequestKind::Sync);
        let assignment = Assignment {
            partitions: given.iter().map(|&p| tp("t", p)).collect(),
            revoke: BTreeSet::new(),
            slot: Some(0),
        };
        member.sync_answered(synced(&assignment), now).unwrap();
        member
    }

    fn metadata_sent(member: &Membership) -> Holdings {
        let request = member.join_request(9).unwrap();
        protocol::decode_metadata(&request.protocols[0].metadata).unwrap()
    }

    #[test]
    fn the_first_join_learns_its_member_id_and_joins_again_with_it() {
        let now = Instant::now();
        let mut member = Membership::new(config(), partitions(4), now);
        assert_eq!(sent(&mut member, now), RequestKind::Join);
        assert!(matches!(member.poll(now), Next::AwaitAnswer));
        let first = round_trip(&member.join_request(9).unwrap(), 9);
        assert_eq!(&*first.group_id.0, "mirror");
        assert!(first.member_id.is_empty());
        assert_eq!(first.session_timeout_ms, 9_000);
        assert_eq!(first.rebalance_timeout_ms, 30_000);
        assert_eq!(&*first.protocol_type, PROTOCOL_TYPE);
        assert_eq!(&*first.protocols[0].name, PROTOCOL_NAME);
        assert_eq!(first.group_instance_id, None);

        let answer = join_answer(ResponseError::MemberIdRequired, "m-1");
        assert!(member.join_answered(answer, now).unwrap().is_none());
        assert_eq!(sent(&mut member, now), RequestKind::Join);
        assert_eq!(&*member.join_request(9).unwrap().member_id, "m-1");
    }

    #[test]
    fn the_leader_assigns_every_member_and_followers_send_no_assignment() {
        let now = Instant::now();
        let mut leader = Membership::new(config(), partitions(6), now);
        sent(&mut leader, now);
        let other = Holdings {
            generation: 2,
            owned: [tp("t", 0), tp("t", 1), tp("t", 2), tp("t", 3)].into(),
            recent_bytes: BTreeMap::new(),
            slot: Some(0),
        };
        let members = vec![
            joined_member("m-0", &metadata_sent(&leader)),
            joined_member("m-1", &other),
        ];
        leader
            .join_answered(joined("m-0", "m-0", 3, members), now)
            .unwrap();
        assert!(leader.is_leader());
        assert_eq!(leader.generation(), 3);
        assert_eq!(sent(&mut leader, now), RequestKind::Sync);
        let request = round_trip(&leader.sync_request(5).unwrap(), 5);
        assert_eq!(request.generation_id, 3);
        assert_eq!(request.protocol_type.as_deref(), Some(PROTOCOL_TYPE));
        let assignments: BTreeMap<String, Assignment> = request
            .assignments
            .iter()
            .map(|a| {
                let decoded = protocol::decode_assignment(&a.assignment).unwrap();
                (a.member_id.to_string(), decoded)
            })
            .collect();
        // m-1 holds 4 of 6: it keeps 3 and revokes 1; the leader starts the
        // 2 nobody holds and gets the third once m-1 has let it go. m-1
        // keeps its writer slot, the new leader takes the next.
        assert_eq!(assignments["m-1"].partitions.len(), 3);
        assert_eq!(assignments["m-1"].revoke.len(), 1);
        assert_eq!(assignments["m-1"].slot, Some(0));
        assert_eq!(assignments["m-0"].slot, Some(1));
        assert_eq!(
            assignments["m-0"].partitions,
            [tp("t", 4), tp("t", 5)].into()
        );

        let mut follower = Membership::new(config(), partitions(6), now);
        sent(&mut follower, now);
        follower
            .join_answered(joined("m-1", "m-0", 3, vec![]), now)
            .unwrap();
        assert!(!follower.is_leader());
        sent(&mut follower, now);
        assert!(follower.sync_request(5).unwrap().assignments.is_empty());
        // Before v5 the protocol is not named.
        let old = round_trip(&follower.sync_request(4).unwrap(), 4);
        assert_eq!(old.protocol_type, None);
    }

    #[test]
    fn a_returning_static_leader_skips_the_assignment() {
        let now = Instant::now();
        let mut leader = Membership::new(config(), partitions(6), now);
        sent(&mut leader, now);
        let mut answer = joined(
            "m-0",
            "m-0",
            4,
            vec![joined_member("m-0", &Holdings::default())],
        );
        answer.skip_assignment = true;
        leader.join_answered(answer, now).unwrap();
        sent(&mut leader, now);
        assert!(leader.sync_request(5).unwrap().assignments.is_empty());
    }

    #[test]
    fn an_assignment_is_copied_and_heartbeats_keep_the_session() {
        let now = Instant::now();
        let mut member = Membership::new(config(), partitions(6), now);
        sent(&mut member, now);
        member
            .join_answered(joined("m-1", "m-0", 3, vec![]), now)
            .unwrap();
        sent(&mut member, now);
        let assignment = Assignment {
            partitions: [tp("t", 1), tp("t", 4)].into(),
            revoke: BTreeSet::new(),
            slot: Some(2),
        };
        let event = member.sync_answered(synced(&assignment), now).unwrap();
        let Some(MemberEvent::Assigned {
            generation: 3,
            assignment: got,
        }) = event
        else {
            panic!("expected the assignment, got {event:?}");
        };
        assert_eq!(got, assignment);
        assert_eq!(member.owned(), &assignment.partitions);
        assert_eq!(metadata_sent(&member).generation, 3);
        assert_eq!(
            metadata_sent(&member).slot,
            Some(2),
            "reported at the next join"
        );

        let interval = member.config().heartbeat_interval;
        assert!(matches!(member.poll(now), Next::Wait(at) if at == now + interval));
        let later = now + interval;
        assert_eq!(sent(&mut member, later), RequestKind::Heartbeat);
        let request = round_trip(&member.heartbeat_request(4).unwrap(), 4);
        assert_eq!((request.generation_id, &*request.member_id), (3, "m-1"));
        assert!(member
            .heartbeat_answered(heartbeat(None), later)
            .unwrap()
            .is_none());
        // Heard from at `later`: the session runs from there.
        assert_eq!(member.deadline(), Some(later + SESSION));
    }

    #[test]
    fn a_rebalance_joins_again_still_copying() {
        let now = Instant::now();
        let mut member = stable_member(&[0, 1], now);
        let later = now + member.config().heartbeat_interval;
        sent(&mut member, later);
        let event = member
            .heartbeat_answered(heartbeat(Some(ResponseError::RebalanceInProgress)), later)
            .unwrap();
        assert!(event.is_none());
        assert_eq!(sent(&mut member, later), RequestKind::Join);
        let metadata = metadata_sent(&member);
        assert_eq!(metadata.owned, [tp("t", 0), tp("t", 1)].into());
        assert_eq!(metadata.generation, 3);
        assert_eq!(&*member.join_request(9).unwrap().member_id, "m-1");
    }

    #[test]
    fn revoked_partitions_are_stopped_before_the_member_joins_again() {
        let now = Instant::now();
        let mut member = stable_member(&[0, 1, 2], now);
        // Generation 4 keeps 0 and 1 here and moves 2.
        member.rejoin("test");
        sent(&mut member, now);
        member
            .join_answered(joined("m-1", "m-0", 4, vec![]), now)
            .unwrap();
        sent(&mut member, now);
        let given = Assignment {
            partitions: [tp("t", 0), tp("t", 1)].into(),
            revoke: [tp("t", 2)].into(),
            slot: None,
        };
        let event = member.sync_answered(synced(&given), now).unwrap();
        assert!(
            matches!(event, Some(MemberEvent::Assigned { ref assignment, .. }) if *assignment == given)
        );
        assert_eq!(
            member.owned().len(),
            3,
            "still copying 2 until it is stopped"
        );
        // Heartbeats go on, and a rebalance waits for the revocation.
        let later = now + member.config().heartbeat_interval;
        assert_eq!(sent(&mut member, later), RequestKind::Heartbeat);
        member
            .heartbeat_answered(heartbeat(Some(ResponseError::RebalanceInProgress)), later)
            .unwrap();
        assert!(matches!(member.poll(later), Next::Wait(_)));
        member.revoked();
        assert_eq!(sent(&mut member, later), RequestKind::Join);
        assert_eq!(metadata_sent(&member).owned, given.partitions);
    }

    #[test]
    fn a_member_out_of_the_group_loses_its_partitions_and_joins_again() {
        for (error, keeps_id) in [
            (ResponseError::UnknownMemberId, false),
            (ResponseError::IllegalGeneration, true),
        ] {
            let now = Instant::now();
            let mut member = stable_member(&[0, 5], now);
            let later = now + member.config().heartbeat_interval;
            sent(&mut member, later);
            let event = member
                .heartbeat_answered(heartbeat(Some(error)), later)
                .unwrap();
            let Some(MemberEvent::Lost {
                partitions,
                cause:
                    MembershipError::MembershipLost {
                        generation: 3,
                        error: cause,
                        member_id,
                        ..
                    },
            }) = event
            else {
                panic!("expected a loss, got {event:?}");
            };
            assert_eq!(partitions, [tp("t", 0), tp("t", 5)].into());
            assert_eq!((cause, member_id.as_str()), (error, "m-1"));
            assert!(member.owned().is_empty());
            assert_eq!(member.generation(), -1);
            assert_eq!(sent(&mut member, later), RequestKind::Join);
            let metadata = metadata_sent(&member);
            assert!(metadata.owned.is_empty());
            assert_eq!(metadata.generation, -1);
            assert_eq!(member.member_id() == "m-1", keeps_id, "{error:?}");
        }
        // Refused at SyncGroup, the same.
        let now = Instant::now();
        let mut member = stable_member(&[1], now);
        member.rejoin("test");
        sent(&mut member, now);
        member
            .join_answered(joined("m-1", "m-0", 4, vec![]), now)
            .unwrap();
        sent(&mut member, now);
        let answer =
            SyncGroupResponse::default().with_error_code(ResponseError::IllegalGeneration.code());
        let event = member.sync_answered(answer, now).unwrap();
        assert!(
            matches!(event, Some(MemberEvent::Lost { ref partitions, .. }) if partitions.len() == 1)
        );
        // Its old member id is unknown too by now: nothing more is lost.
        sent(&mut member, now);
        let answer = join_answer(ResponseError::UnknownMemberId, "");
        assert!(member.join_answered(answer, now).unwrap().is_none());
        assert_eq!(sent(&mut member, now), RequestKind::Join);
        assert!(member.join_request(9).unwrap().member_id.is_empty());
    }

    #[test]
    fn a_member_that_hears_nothing_for_a_session_keeps_asking() {
        let now = Instant::now();
        let mut member = stable_member(&[2], now);
        let later = now + member.config().heartbeat_interval;
        sent(&mut member, later);
        member.unanswered(later);
        assert!(
            matches!(member.poll(later), Next::Wait(_)),
            "a backoff first"
        );
        let end = now + SESSION;
        assert_eq!(
            sent(&mut member, end),
            RequestKind::Heartbeat,
            "only the coordinator says the member is out"
        );
        assert_eq!(member.owned().len(), 1);
        assert_eq!(member.lease_end(), Some(end), "writes wait meanwhile");
    }

    /// The lease runs from when the last answered request was sent, not
    /// from its answer: the coordinator's session clock started before.
    /// Once it ends, nothing is written and nothing is lost yet: the
    /// member asks again, and the coordinator's answer decides.
    #[test]
    fn the_lease_runs_from_the_send_of_the_last_answered_request() {
        let now = Instant::now();
        let joining = Membership::new(config(), partitions(2), now);
        assert_eq!(joining.lease_end(), None, "copies nothing yet");
        let mut member = stable_member(&[0, 1], now);
        assert_eq!(member.lease_end(), Some(now + SESSION));
        let sent_at = now + member.config().heartbeat_interval;
        sent(&mut member, sent_at);
        let answered_at = sent_at + Duration::from_secs(2);
        member
            .heartbeat_answered(heartbeat(None), answered_at)
            .unwrap();
        let end = sent_at + SESSION;
        assert_eq!(member.lease_end(), Some(end));

        // A heartbeat goes out, unanswered when the lease ends: the member
        // asks again after a backoff, and keeps its partitions meanwhile.
        sent(&mut member, end - Duration::from_millis(1));
        let Next::Wait(retry) = member.poll(end) else {
            panic!("a backoff after the unanswered heartbeat");
        };
        assert_eq!(sent(&mut member, retry), RequestKind::Heartbeat);
        assert_eq!(member.owned().len(), 2, "nothing lost on its own");
        assert_eq!(member.lease_end(), Some(end), "writes wait");
        // The coordinator still counts it in: the lease runs again.
        member
            .heartbeat_answered(heartbeat(None), retry + Duration::from_secs(1))
            .unwrap();
        assert_eq!(member.lease_end(), Some(retry + SESSION));
        // Later, the coordinator says it was removed: now it is lost.
        let next = end + SESSION / 2;
        sent(&mut member, next);
        let lost = member
            .heartbeat_answered(heartbeat(Some(ResponseError::UnknownMemberId)), next)
            .unwrap();
        assert!(
            matches!(lost, Some(MemberEvent::Lost { ref partitions, .. }) if partitions.len() == 2),
            "{lost:?}"
        );
        assert_eq!(member.lease_end(), None);
        assert_eq!(sent(&mut member, next), RequestKind::Join);
        assert!(metadata_sent(&member).owned.is_empty());
        assert_eq!(
            metadata_sent(&member).slot,
            None,
            "its writer slot given up"
        );
    }

    #[test]
    fn a_fenced_static_member_stops() {
        let now = Instant::now();
        let mut config = config();
        config.group_instance_id = Some("host-a".into());
        let mut member = Membership::new(config, partitions(2), now);
        sent(&mut member, now);
        let request = round_trip(&member.join_request(5).unwrap(), 5);
        assert_eq!(request.group_instance_id.as_deref(), Some("host-a"));
        let error = member.join_request(4).unwrap_err();
        assert!(matches!(
            error,
            MembershipError::StaticMembershipUnsupported {
                version: 4,
                needed: 5,
                ..
            }
        ));
        assert!(!error.is_retriable());

        let answer = join_answer(ResponseError::FencedInstanceId, "");
        let event = member.join_answered(answer, now).unwrap();
        let Some(MemberEvent::Lost { cause, .. }) = event else {
            panic!("expected a loss, got {event:?}");
        };
        assert_eq!(
            cause.to_string(),
            "group \"mirror\": another process joined as group instance \"host-a\", so this one \
             stops (each process needs its own group instance id)"
        );
        assert!(matches!(member.poll(now), Next::Done));
    }

    #[test]
    fn refusals_are_typed_and_say_whether_to_retry() {
        let now = Instant::now();
        let mut member = Membership::new(config(), partitions(2), now);
        sent(&mut member, now);
        let error = member
            .join_answered(join_answer(ResponseError::NotCoordinator, ""), now)
            .unwrap_err();
        assert!(error.is_retriable() && error.coordinator_moved());
        assert!(matches!(member.poll(now), Next::Wait(at) if at > now));
        let later = now + RETRY_MAX;
        assert_eq!(sent(&mut member, later), RequestKind::Join);

        let answer = join_answer(ResponseError::InconsistentGroupProtocol, "");
        let error = member.join_answered(answer, later).unwrap_err();
        assert!(!error.is_retriable());
        assert_eq!(
            error.to_string(),
            "group \"mirror\", JoinGroup as member \"\": InconsistentGroupProtocol (another kind \
             of client uses this group id, a consumer group of the same name say)"
        );
        // An answer nobody waits for changes nothing.
        let stray =
            member.heartbeat_answered(heartbeat(Some(ResponseError::UnknownMemberId)), later);
        assert!(matches!(stray, Ok(None)));
    }

    #[test]
    fn an_unreadable_metadata_or_assignment_is_an_error_naming_it() {
        let now = Instant::now();
        let mut leader = Membership::new(config(), partitions(2), now);
        sent(&mut leader, now);
        let broken = JoinGroupResponseMember::default()
            .with_member_id(StrBytes::from_static_str("m-9"))
            .with_metadata(Bytes::from_static(&[0, 0, 0]));
        let error = leader
            .join_answered(joined("m-0", "m-0", 1, vec![broken]), now)
            .unwrap_err();
        assert!(
            matches!(error, MembershipError::BadMetadata { ref member_id, .. } if member_id == "m-9")
        );

        let mut member = Membership::new(config(), partitions(2), now);
        sent(&mut member, now);
        member
            .join_answered(joined("m-1", "m-0", 2, vec![]), now)
            .unwrap();
        sent(&mut member, now);
        let answer =
            SyncGroupResponse::default().with_assignment(Bytes::from_static(&[0, 0, 0, 0, 0, 1]));
        let error = member.sync_answered(answer, now).unwrap_err();
        assert!(matches!(
            error,
            MembershipError::BadAssignment { generation: 2, .. }
        ));
        assert!(matches!(
            member.poll(now + RETRY_MAX),
            Next::Send(RequestKind::Join)
        ));
    }

    #[test]
    fn leaving_sends_the_member_in_either_layout_and_ends() {
        let now = Instant::now();
        let mut member = stable_member(&[0], now);
        member.leave();
        assert_eq!(sent(&mut member, now), RequestKind::Leave);
        let old = round_trip(&member.leave_request(2).unwrap(), 2);
        assert_eq!(&*old.member_id, "m-1");
        let new = round_trip(&member.leave_request(5).unwrap(), 5);
        assert_eq!(&*new.members[0].member_id, "m-1");
        let answer = LeaveGroupResponse::default().with_members(vec![MemberResponse::default()
            .with_member_id(StrBytes::from_static_str("m-1"))
            .with_error_code(ResponseError::UnknownMemberId.code())]);
        member.leave_answered(answer).unwrap();
        assert!(member.owned().is_empty());
        assert!(matches!(member.poll(now), Next::Done));

        // A JoinGroup answered after `leave` changes nothing.
        let mut member = stable_member(&[0], now);
        member.rejoin("test");
        sent(&mut member, now);
        member.leave();
        assert!(matches!(member.poll(now), Next::AwaitAnswer));
        let answer = joined(
            "m-1",
            "m-1",
            4,
            vec![joined_member("m-1", &Holdings::default())],
        );
        assert!(member.join_answered(answer, now).unwrap().is_none());
        assert_eq!(sent(&mut member, now), RequestKind::Leave);

        let mut never_joined = Membership::new(config(), partitions(1), now);
        never_joined.leave();
        assert!(matches!(never_joined.poll(now), Next::Done));
    }

    #[test]
    fn every_request_encodes_at_every_version_the_broker_may_pick() {
        let now = Instant::now();
        let member = stable_member(&[0], now);
        let mut static_member = member.clone();
        static_member.config.group_instance_id = Some("host-a".into());
        for (member, from) in [(&member, 0), (&static_member, 5)] {
            for version in from.max(2)..=9 {
                round_trip(&member.join_request(version).unwrap(), version);
            }
        }
        for (member, from) in [(&member, 0), (&static_member, 3)] {
            for version in from..=5 {
                round_trip(&member.sync_request(version).unwrap(), version);
                round_trip(&member.leave_request(version).unwrap(), version);
            }
            for version in from..=4 {
                round_trip(&member.heartbeat_request(version).unwrap(), version);
            }
        }
    }
}
