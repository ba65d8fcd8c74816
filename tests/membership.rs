//! Group membership against a real Kafka broker: three kafka-mirror members
//! (tasks of one tokio runtime) share a set of partitions through the
//! broker's group coordinator, with kafka-mirror's protocol type. Every
//! partition is copied by exactly one member, within one of even; the
//! partitions of a member that leaves, or that stops heartbeating, move to
//! the others; the stalled member hears it lost them; a stale generation is
//! refused and the error typed; and Kafka's own tools see the group.
//!
//! Each member's "copying" is a board the test reads: a member starts a
//! partition when assigned it and stops one at once when told to revoke it,
//! and every start is checked against what the other live members copy.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use kafka_mirror::assignment::TopicPartition;
use kafka_mirror::cluster::membership::{
    GroupMember, MemberConfig, MemberEvent, Membership, MembershipError, Next, RequestKind,
    PROTOCOL_NAME, PROTOCOL_TYPE,
};
use kafka_mirror::cluster::{Cluster, GroupClient, Role};
use kafka_mirror::net::{ConnectionOptions, Connector};
use kafka_protocol::ResponseError;
use kafka_testkit::{describe_group_with_kafka_python, groups_of_protocol, KafkaCluster};
use tokio::sync::{mpsc, oneshot};

const GROUP: &str = "membership-test";
/// Short, for a short test: the broker is started allowing it.
const SESSION: Duration = Duration::from_secs(5);
const REBALANCE: Duration = Duration::from_secs(20);
/// How long a group may take to settle after a change.
const SETTLE_LIMIT: Duration = Duration::from_secs(60);

/// The partitions the group shares: 10, so three members copy 4, 3 and 3.
fn all_partitions() -> BTreeSet<TopicPartition> {
    let orders = (0..6).map(|p| ("orders".to_owned(), p));
    let logs = (0..4).map(|p| ("logs".to_owned(), p));
    orders.chain(logs).collect()
}

/// Why a member lost its partitions, as the test checks it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum LossCause {
    SessionExpired,
    OutOfGroup(ResponseError),
    Other(String),
}

/// What the members copy, as they report it.
#[derive(Debug, Default)]
struct Board {
    /// By member name: its member id, generation, and the partitions it copies.
    copying: BTreeMap<&'static str, (String, i32, BTreeSet<TopicPartition>)>,
    /// Members that stopped heartbeating: what they hold no longer counts.
    stalled: BTreeSet<&'static str>,
    /// Each loss: the member, the partitions, why.
    losses: Vec<(&'static str, BTreeSet<TopicPartition>, LossCause)>,
    /// Partitions a member started while another live member copied them.
    overlaps: Vec<String>,
    /// Errors that ended a member's task.
    failures: Vec<String>,
}

impl Board {
    fn copy(
        &mut self,
        name: &'static str,
        member_id: &str,
        generation: i32,
        partitions: &BTreeSet<TopicPartition>,
    ) {
        for (other, (_, _, theirs)) in &self.copying {
            if *other == name || self.stalled.contains(other) {
                continue;
            }
            for p in partitions.intersection(theirs) {
                self.overlaps.push(format!(
                    "{p:?}: {name} (generation {generation}) and {other}"
                ));
            }
        }
        let entry = (member_id.to_owned(), generation, partitions.clone());
        self.copying.insert(name, entry);
    }
}

type SharedBoard = Arc<Mutex<Board>>;

enum Command {
    /// A copy of the member's state, as a process that stalled there would keep it.
    Snapshot(oneshot::Sender<Membership>),
    /// Stop driving the member (no heartbeats) until told to go on.
    Stall(oneshot::Receiver<()>),
    /// LeaveGroup, and the task ends.
    Leave(oneshot::Sender<Result<(), String>>),
}

/// Runs one member: copies what it is assigned, revokes at once, obeys commands.
async fn run_member(
    name: &'static str,
    cluster: Arc<Cluster>,
    board: SharedBoard,
    mut commands: mpsc::UnboundedReceiver<Command>,
) {
    let config = MemberConfig::new(GROUP, SESSION, REBALANCE);
    let mut member = match GroupMember::new(cluster, config, all_partitions()).await {
        Ok(member) => member,
        Err(e) => return board.lock().unwrap().failures.push(format!("{name}: {e}")),
    };
    loop {
        tokio::select! {
            command = commands.recv() => match command {
                Some(Command::Snapshot(reply)) => {
                    let _ = reply.send(member.membership().clone());
                }
                Some(Command::Stall(resume)) => {
                    board.lock().unwrap().stalled.insert(name);
                    let _ = resume.await;
                }
                Some(Command::Leave(done)) => {
                    board.lock().unwrap().copying.remove(name);
                    let _ = done.send(member.leave().await.map_err(|e| e.to_string()));
                    return;
                }
                None => return,
            },
            event = member.next_event() => match event {
                Ok(MemberEvent::Assigned { generation, assignment }) => {
                    let member_id = member.membership().member_id().to_owned();
                    board.lock().unwrap().copy(name, &member_id, generation, &assignment.partitions);
                    if !assignment.revoke.is_empty() {
                        member.membership_mut().revoked();
                    }
                }
                Ok(MemberEvent::Lost { partitions, cause }) => {
                    let cause = match cause {
                        MembershipError::SessionExpired { .. } => LossCause::SessionExpired,
                        MembershipError::MembershipLost { error, .. } => LossCause::OutOfGroup(error),
                        other => LossCause::Other(other.to_string()),
                    };
                    let mut board = board.lock().unwrap();
                    board.copying.remove(name);
                    board.stalled.remove(name);
                    board.losses.push((name, partitions, cause));
                }
                Err(e) => return board.lock().unwrap().failures.push(format!("{name}: {e}")),
            },
        }
    }
}

/// Waits until exactly `names` copy, all in one generation, every partition
/// once, within one of even; returns each one's member id and partitions.
async fn settled(
    board: &SharedBoard,
    names: &[&'static str],
) -> BTreeMap<&'static str, (String, BTreeSet<TopicPartition>)> {
    let all = all_partitions();
    let started = Instant::now();
    loop {
        {
            let board = board.lock().unwrap();
            assert!(board.failures.is_empty(), "{:?}", board.failures);
            let live: Vec<_> = board
                .copying
                .iter()
                .filter(|(name, _)| !board.stalled.contains(*name))
                .collect();
            let names_match = live.iter().map(|(n, _)| **n).eq(names.iter().copied());
            let generations: BTreeSet<i32> = live.iter().map(|(_, (_, g, _))| *g).collect();
            let copied: usize = live.iter().map(|(_, (_, _, p))| p.len()).sum();
            let union: BTreeSet<&TopicPartition> =
                live.iter().flat_map(|(_, (_, _, p))| p).collect();
            let counts: Vec<usize> = live.iter().map(|(_, (_, _, p))| p.len()).collect();
            let balanced =
                counts.iter().max().unwrap_or(&0) - counts.iter().min().unwrap_or(&0) <= 1;
            if names_match
                && generations.len() == 1
                && copied == all.len()
                && union.len() == all.len()
                && balanced
            {
                return live
                    .into_iter()
                    .map(|(name, (id, _, partitions))| (*name, (id.clone(), partitions.clone())))
                    .collect();
            }
            assert!(
                started.elapsed() < SETTLE_LIMIT,
                "the group did not settle on {names:?} within {SETTLE_LIMIT:?}: {board:#?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Members {
    commands: BTreeMap<&'static str, mpsc::UnboundedSender<Command>>,
}

impl Members {
    fn send(&self, name: &str, command: Command) {
        let sent = self.commands[name].send(command);
        assert!(sent.is_ok(), "{name}'s task has ended");
    }

    async fn snapshot(&self, name: &str) -> Membership {
        let (reply, membership) = oneshot::channel();
        self.send(name, Command::Snapshot(reply));
        membership.await.expect("a snapshot")
    }

    async fn leave(&self, name: &str) {
        let (done, left) = oneshot::channel();
        self.send(name, Command::Leave(done));
        let result = left.await.expect("an answer");
        assert_eq!(result, Ok(()), "{name} leaving");
    }
}

/// This binary's broker. The testkit's brokers take session timeouts from
/// 1 s, so the eviction below takes seconds.
fn kafka() -> &'static KafkaCluster {
    &shared_clusters(&[], &[]).target
}

fn target_cluster(kafka: &KafkaCluster) -> Arc<Cluster> {
    Cluster::new(
        Role::Target,
        vec![kafka.bootstrap()],
        Connector::plain(ConnectionOptions::default()),
    )
}

#[test]
fn members_share_partitions_through_the_group_coordinator() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(scenario(kafka()));
}

/// The mirror waits for its member's next event in a `select!` beside the
/// pipeline's events and a 50 ms tick, so the wait is cancelled again and
/// again; a coordinator lookup or a connection cut short each time must not
/// keep the member from ever joining (it once did, after a target broker
/// restart on a busy machine: no heartbeat for minutes, every write held).
/// Here every wait is cancelled at its first pause.
#[test]
fn a_member_whose_every_wait_is_cancelled_still_joins() {
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(async {
        let config = MemberConfig::new("membership-cancelled", SESSION, REBALANCE);
        let mut member = GroupMember::new(target_cluster(kafka()), config, all_partitions())
            .await
            .expect("a member");
        let started = Instant::now();
        let mut cancelled = 0u64;
        let assignment = loop {
            assert!(
                started.elapsed() < SETTLE_LIMIT,
                "no assignment within {SETTLE_LIMIT:?}, after {cancelled} cancelled waits: {member:?}"
            );
            tokio::select! {
                biased;
                event = member.next_event() => match event {
                    Ok(MemberEvent::Assigned { assignment, .. }) => break assignment,
                    other => panic!("expected an assignment, got {other:?}"),
                },
                () = tokio::task::yield_now() => cancelled += 1,
            }
        };
        assert_eq!(assignment.partitions, all_partitions());
        assert!(cancelled > 0, "no wait was cancelled: the test tested nothing");
        member.leave().await.expect("leave");
    });
}

async fn scenario(kafka: &KafkaCluster) {
    let cluster = target_cluster(kafka);
    let board = SharedBoard::default();
    let mut commands = BTreeMap::new();
    for name in ["a", "b", "c"] {
        let (send, receive) = mpsc::unbounded_channel();
        tokio::spawn(run_member(name, cluster.clone(), board.clone(), receive));
        commands.insert(name, send);
    }
    let members = Members { commands };

    // Three members: 4, 3 and 3 of the 10 partitions, each once.
    let three = settled(&board, &["a", "b", "c"]).await;
    let mut counts: Vec<usize> = three.values().map(|(_, p)| p.len()).collect();
    counts.sort_unstable();
    assert_eq!(counts, [3, 3, 4]);

    // Kafka's tools see the group: its protocol type and its members.
    // (Blocking tools, run off the members' worker threads.)
    let described =
        tokio::task::block_in_place(|| describe_group_with_kafka_python(&kafka.bootstrap(), GROUP))
            .unwrap_or_else(|e| panic!("describing {GROUP}: {e:#}"));
    assert_eq!(described.protocol_type, PROTOCOL_TYPE);
    assert_eq!(described.protocol, PROTOCOL_NAME);
    assert_eq!(described.state, "Stable");
    let described_ids: BTreeSet<&str> = described
        .members
        .iter()
        .map(|m| m.member_id.as_str())
        .collect();
    let our_ids: BTreeSet<&str> = three.values().map(|(id, _)| id.as_str()).collect();
    assert_eq!(described_ids, our_ids);
    assert!(described
        .members
        .iter()
        .all(|m| m.client_id == "kafka-mirror" && m.group_instance_id.is_none()));
    let listed = tokio::task::block_in_place(|| groups_of_protocol(kafka, PROTOCOL_TYPE))
        .unwrap_or_else(|e| panic!("kafka-groups --list: {e:#}"));
    assert!(
        listed
            .iter()
            .any(|(group, kind)| group == GROUP && kind.eq_ignore_ascii_case("classic")),
        "{listed:?}"
    );

    // What a process that stalls now would remember.
    let stale = members.snapshot("a").await;

    // C leaves: A and B take its partitions, keeping their own.
    members.leave("c").await;
    let two = settled(&board, &["a", "b"]).await;
    for name in ["a", "b"] {
        assert_eq!(two[name].1.len(), 5);
        assert!(
            three[name].1.is_subset(&two[name].1),
            "{name} kept its partitions"
        );
    }

    // The stale view's heartbeat: refused for its generation, typed.
    stale_generation_is_refused(&cluster, stale, &two["a"].0).await;

    // B stops heartbeating: after the session timeout the coordinator
    // removes it and A takes everything.
    let (resume, resumed) = oneshot::channel();
    members.send("b", Command::Stall(resumed));
    let stalled_at = Instant::now();
    let alone = settled(&board, &["a"]).await;
    let moved_after = stalled_at.elapsed();
    assert_eq!(alone["a"].1, all_partitions());
    let heartbeat = SESSION / 3;
    assert!(
        moved_after >= SESSION - heartbeat && moved_after < SESSION + Duration::from_secs(15),
        "B's partitions moved {moved_after:?} after it stalled (session timeout {SESSION:?})"
    );

    // B goes on: it first hears it lost its partitions, then joins again.
    resume.send(()).expect("b waits");
    let two_again = settled(&board, &["a", "b"]).await;
    assert_eq!(two_again["b"].1.len(), 5);
    let losses = board.lock().unwrap().losses.clone();
    match &losses[..] {
        [("b", partitions, cause)] => {
            assert_eq!(partitions, &two["b"].1);
            assert!(
                matches!(
                    cause,
                    LossCause::SessionExpired
                        | LossCause::OutOfGroup(ResponseError::UnknownMemberId)
                ),
                "{cause:?}"
            );
        }
        other => panic!("expected one loss, of b: {other:?}"),
    }

    members.leave("a").await;
    members.leave("b").await;
    let board = board.lock().unwrap();
    assert!(board.overlaps.is_empty(), "{:?}", board.overlaps);
    assert!(board.failures.is_empty(), "{:?}", board.failures);
}

/// Sends the heartbeat of `stale` (a copy of a member's state from an older
/// generation), whose member is still in the group under `member_id`.
async fn stale_generation_is_refused(
    cluster: &Arc<Cluster>,
    mut stale: Membership,
    member_id: &str,
) {
    assert_eq!(stale.member_id(), member_id);
    let old_generation = stale.generation();
    let owned = stale.owned().clone();
    // Just before its session would end, a heartbeat is due.
    let due = stale.deadline().expect("a stable member") - Duration::from_millis(1);
    assert!(matches!(
        stale.poll(due),
        Next::Send(RequestKind::Heartbeat)
    ));
    let mut groups = GroupClient::new(cluster.clone())
        .await
        .expect("group client");
    let coordinator = groups.coordinator_of(GROUP).await.expect("coordinator");
    let answer = cluster
        .send_built(coordinator, |version| {
            stale.heartbeat_request(version).expect("a heartbeat")
        })
        .await
        .expect("an answer");
    let event = stale.heartbeat_answered(answer, Instant::now());
    match event {
        Ok(Some(MemberEvent::Lost {
            partitions,
            cause:
                MembershipError::MembershipLost {
                    generation,
                    error: ResponseError::IllegalGeneration,
                    member_id: lost_id,
                    ..
                },
        })) => {
            assert_eq!(partitions, owned);
            assert_eq!(generation, old_generation);
            assert_eq!(lost_id, member_id);
        }
        other => panic!("expected ILLEGAL_GENERATION as a loss, got {other:?}"),
    }
}
