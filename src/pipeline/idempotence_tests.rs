//! A property test of one partition's produce path (its [`PartitionState`]
//! and the [`ProduceStage`]'s handling of each answer) against a model of an
//! idempotent Kafka broker partition, over random sequences of events:
//! sends, answers, requests lost before the broker, answers lost after it
//! appended, each error class [`classify`](super::produce) knows, leader
//! moves, a producer id the broker stops taking, and renewals when the stage
//! asks for one.
//!
//! The model keeps, per producer id, the epoch, the last five batches'
//! sequence ranges and offsets, and the next expected sequence: a duplicate of
//! one of the five is answered as a success with its original offset (or, as
//! old brokers do, DUPLICATE_SEQUENCE_NUMBER without one), a new epoch must
//! start at sequence 0, a producer it has no state for may start at any
//! sequence, anything else is OUT_OF_ORDER_SEQUENCE_NUMBER. Its log may hold
//! records written before the mirror's, and the source has commit markers
//! between batches, so the partition's offset map is checked against the
//! offsets the model gave: every committed source offset translates to the
//! target offset of the first copied record at or after it.
//!
//! [`PartitionState`]: super::partition::PartitionState

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use proptest::prelude::*;
use uuid::Uuid;

use super::error::{Cause, Refusal, RefusalKind};
use super::metadata::MetadataView;
use super::ownership::Lease;
use super::produce::{NoAnswer, ProduceContext, ProduceJob, ProduceReply, ProduceStage};
use super::producer::ProducerIdentity;
use super::slots::{SlotId, Slots, Status};
use super::stats::Counters;
use super::testing::{batch, metadata, produced, slot};
use crate::cluster::{ClusterError, Role};
use crate::config::ReplicationConfig;
use crate::offset_map::Translation;

const TARGET: &str = "copy.t";
const BROKERS: [i32; 3] = [1, 2, 3];
/// Batches the broker remembers per producer for duplicate detection.
const REMEMBERED: usize = 5;

/// A batch as the broker received it (and, in its log, the offset of its
/// first record there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Attempt {
    /// The source batch: its base offset.
    source: i64,
    producer_id: i64,
    epoch: i16,
    sequence: i32,
    records: i32,
    /// The target offset of its first record, once appended.
    target: i64,
}

impl Attempt {
    fn identity(&self) -> (i64, i16) {
        (self.producer_id, self.epoch)
    }
}

/// What the broker keeps of one producer id.
#[derive(Debug)]
struct ProducerEntry {
    epoch: i16,
    /// `(first sequence, last sequence, offset)` of the last five batches.
    last: VecDeque<(i32, i32, i64)>,
    next: i32,
}

/// How the broker answers an attempt it processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Appended, its first record at this offset.
    Appended(i64),
    /// Already in the log, its first record at this offset.
    Duplicate(i64),
    OutOfOrder,
    /// Our producer id or epoch is no longer taken.
    Refused,
}

/// A Produce answer for the one partition: its error and base offset.
type Answer = (Option<ResponseError>, i64);

impl Verdict {
    /// The answer as a broker gives it; `old_broker` answers a duplicate
    /// with DUPLICATE_SEQUENCE_NUMBER and no offset.
    fn answer(self, old_broker: bool) -> Answer {
        match self {
            Verdict::Appended(offset) => (None, offset),
            Verdict::Duplicate(_) if old_broker => {
                (Some(ResponseError::DuplicateSequenceNumber), -1)
            }
            Verdict::Duplicate(offset) => (None, offset),
            Verdict::OutOfOrder => (Some(ResponseError::OutOfOrderSequenceNumber), -1),
            Verdict::Refused => (Some(ResponseError::InvalidProducerEpoch), -1),
        }
    }
}

/// One partition of an idempotent broker, replicated (its state survives a
/// leader move), with the source batches its log holds.
#[derive(Debug, Default)]
struct ModelBroker {
    log: Vec<Attempt>,
    /// The offset the next record appended gets.
    next_offset: i64,
    producers: HashMap<i64, ProducerEntry>,
    /// Producer ids the broker no longer takes (fenced).
    refused: HashSet<i64>,
}

impl ModelBroker {
    fn produce(&mut self, a: Attempt) -> Verdict {
        if self.refused.contains(&a.producer_id) {
            return Verdict::Refused;
        }
        let last_sequence = a.sequence + a.records - 1;
        match self.producers.get(&a.producer_id) {
            Some(entry) if a.epoch < entry.epoch => return Verdict::Refused,
            Some(entry) if a.epoch > entry.epoch && a.sequence != 0 => return Verdict::OutOfOrder,
            Some(entry) if a.epoch == entry.epoch => {
                if let Some(&(_, _, offset)) = entry
                    .last
                    .iter()
                    .find(|&&(first, last, _)| (first, last) == (a.sequence, last_sequence))
                {
                    return Verdict::Duplicate(offset);
                }
                if a.sequence != entry.next {
                    return Verdict::OutOfOrder;
                }
            }
            // A new epoch at sequence 0, or no state: any first sequence.
            _ => {}
        }
        let offset = self.next_offset;
        self.next_offset += i64::from(a.records);
        self.log.push(Attempt {
            target: offset,
            ..a
        });
        let entry = self
            .producers
            .entry(a.producer_id)
            .or_insert(ProducerEntry {
                epoch: a.epoch,
                last: VecDeque::new(),
                next: 0,
            });
        if entry.epoch != a.epoch {
            entry.epoch = a.epoch;
            entry.last.clear();
        }
        entry.last.push_back((a.sequence, last_sequence, offset));
        if entry.last.len() > REMEMBERED {
            entry.last.pop_front();
        }
        entry.next = last_sequence + 1;
        Verdict::Appended(offset)
    }
}

/// What happens to the oldest request on a connection.
#[derive(Debug, Clone, Copy)]
enum Fate {
    /// Processed and answered.
    Answered,
    /// Lost before the broker: the connection fails.
    LostRequest,
    /// Processed (appended if the broker takes it), the answer lost.
    LostAnswer,
    /// NOT_LEADER_OR_FOLLOWER: refused before the append.
    NotLeader,
    /// NOT_ENOUGH_REPLICAS: refused before the append.
    NotEnoughReplicas,
    /// REQUEST_TIMED_OUT, appended or not.
    TimedOut { appended: bool },
    /// NOT_ENOUGH_REPLICAS_AFTER_APPEND: appended if the broker took it.
    AfterAppend,
}

#[derive(Debug, Clone)]
enum Event {
    /// The fetch stage queues up to this many more source batches.
    Fetch(u8),
    /// The produce stage starts what it may.
    Send,
    /// The oldest request of a connection (picked by index) meets its fate.
    Deliver(u8, Fate),
    /// A connection drops: its first `processed` requests reached the
    /// broker, the others did not; every answer is lost.
    Disconnect(u8, u8),
    /// The partition's leader moves to another broker.
    MoveLeader,
    /// The stage's metadata catches up with the leader.
    Refresh,
    /// The broker stops taking the current producer id.
    Fence,
    /// The engine asks for a new producer id if the stage says one is due.
    Renew,
    /// A checkpoint at the committed offset is stored.
    Checkpoint,
}

fn fate() -> impl Strategy<Value = Fate> {
    prop_oneof![
        4 => Just(Fate::Answered),
        1 => Just(Fate::LostRequest),
        2 => Just(Fate::LostAnswer),
        1 => Just(Fate::NotLeader),
        1 => Just(Fate::NotEnoughReplicas),
        1 => any::<bool>().prop_map(|appended| Fate::TimedOut { appended }),
        1 => Just(Fate::AfterAppend),
    ]
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        2 => (1u8..4).prop_map(Event::Fetch),
        5 => Just(Event::Send),
        8 => (any::<u8>(), fate()).prop_map(|(c, f)| Event::Deliver(c, f)),
        1 => (any::<u8>(), 0u8..4).prop_map(|(c, p)| Event::Disconnect(c, p)),
        1 => Just(Event::MoveLeader),
        2 => Just(Event::Refresh),
        1 => Just(Event::Fence),
        2 => Just(Event::Renew),
        1 => Just(Event::Checkpoint),
    ]
}

/// A request on its way: the job and the one batch it carries.
#[derive(Debug)]
struct Pending {
    job: ProduceJob,
    attempt: Attempt,
}

/// The produce stage of one partition `t-0`, wired to the model broker.
struct Harness {
    config: ReplicationConfig,
    meta: MetadataView,
    slots: Slots,
    id: SlotId,
    stage: ProduceStage,
    counters: Counters,
    broker: ModelBroker,
    leader: i32,
    next_producer_id: i64,
    /// Requests in flight per broker connection, oldest first.
    connections: HashMap<i32, VecDeque<Pending>>,
    /// Source batches as `(base offset, records)`, in source order.
    source: Vec<(i64, i32)>,
    /// The source offset after the last batch or marker fetched.
    source_end: i64,
    /// The broker answers duplicates without their offset.
    old_broker: bool,
    /// The source batches the stage was told may have been written, and the
    /// identity they were sent with, until it is told they were.
    unknown: HashMap<i64, (i64, i16)>,
    committed: i64,
    now: Instant,
}

impl Harness {
    /// A partition copied into a target that held `held` records before.
    fn new(held: i64, old_broker: bool) -> Self {
        let mut slots = Slots::default();
        let id = slots.push(slot("t", Uuid::from_u128(1), 0, 0));
        let mut meta = MetadataView::default();
        meta.set(
            Role::Target,
            metadata(TARGET, Uuid::from_u128(9), &[(0, Some(1))]),
        );
        Harness {
            config: ReplicationConfig::default(),
            meta,
            slots,
            id,
            // The model broker never forgets a producer.
            stage: ProduceStage::new(ProducerIdentity::new((1000, 0)))
                .with_producer_expiry(Duration::MAX),
            counters: Counters::default(),
            broker: ModelBroker {
                next_offset: held,
                ..ModelBroker::default()
            },
            leader: 1,
            next_producer_id: 1001,
            connections: HashMap::new(),
            source: Vec::new(),
            source_end: 0,
            old_broker,
            unknown: HashMap::new(),
            committed: 0,
            now: Instant::now(),
        }
    }

    fn stopped(&self) -> Option<&Cause> {
        match &self.slots[self.id].status {
            Status::Stopped(error) => Some(&error.cause),
            _ => None,
        }
    }

    /// Queues source batches; every third is a transaction's last, its
    /// commit marker (an offset with nothing to copy) after it.
    fn fetch(&mut self, batches: u8) {
        for _ in 0..batches {
            let base = self.source_end;
            let records = (self.source.len() % 3) as i32 + 1;
            let state = &mut self.slots[self.id].state;
            state.push_batch(batch(base, records));
            self.source.push((base, records));
            self.source_end = base + i64::from(records);
            if self.source.len() % 3 == 0 {
                self.source_end += 1;
                state.push_skip(self.source_end);
            }
        }
    }

    fn send(&mut self) -> Result<(), TestCaseError> {
        // Past any backoff.
        self.now += Duration::from_secs(10);
        let cx = ProduceContext {
            config: &self.config,
            meta: &self.meta,
            transaction: None,
            lease: Lease::default(),
        };
        let jobs = self.stage.start(&mut self.slots, cx, self.now);
        for job in jobs {
            let wire = produced(&job);
            prop_assert_eq!(wire.len(), 1, "one partition, one batch per request");
            // The source batch the entry holds, by the end of its range.
            let range = self.slots[self.id].state.entry_range(job.sent[0].1);
            let index = self
                .source
                .iter()
                .position(|&(base, n)| Some(base + i64::from(n)) == range.map(|(_, end)| end));
            prop_assert!(index.is_some(), "unknown entry {:?}", range);
            let index = index.unwrap_or_default();
            let attempt = Attempt {
                source: self.source[index].0,
                producer_id: wire[0].producer_id(),
                epoch: wire[0].producer_epoch(),
                sequence: wire[0].base_sequence(),
                records: wire[0].records_count(),
                target: -1,
            };
            if let Some(&identity) = self.unknown.get(&attempt.source) {
                prop_assert_eq!(
                    identity,
                    attempt.identity(),
                    "source batch {} of unknown fate resent under a new identity",
                    attempt.source
                );
            }
            self.connections
                .entry(job.broker)
                .or_default()
                .push_back(Pending { job, attempt });
        }
        Ok(())
    }

    /// The connection a `pick` names, among those with requests in flight.
    fn connection(&self, pick: u8) -> Option<i32> {
        let mut busy: Vec<i32> = self
            .connections
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&b, _)| b)
            .collect();
        busy.sort_unstable();
        (!busy.is_empty()).then(|| busy[usize::from(pick) % busy.len()])
    }

    /// The broker processes an attempt: only the leader appends.
    fn process(&mut self, broker: i32, attempt: Attempt) -> Option<Verdict> {
        (broker == self.leader).then(|| self.broker.produce(attempt))
    }

    fn deliver(&mut self, pick: u8, fate: Fate) {
        let Some(broker) = self.connection(pick) else {
            return;
        };
        let Some(Pending { job, attempt }) = self
            .connections
            .get_mut(&broker)
            .and_then(VecDeque::pop_front)
        else {
            return;
        };
        let old_broker = self.old_broker;
        let error = |e: ResponseError| Ok((Some(e), -1));
        let not_leader = error(ResponseError::NotLeaderOrFollower);
        let answer = match fate {
            Fate::Answered => match self.process(broker, attempt) {
                Some(verdict) => Ok(verdict.answer(old_broker)),
                None => not_leader,
            },
            Fate::LostRequest => Err(()),
            Fate::LostAnswer => {
                self.process(broker, attempt);
                Err(())
            }
            Fate::NotLeader => not_leader,
            Fate::NotEnoughReplicas if broker == self.leader => {
                error(ResponseError::NotEnoughReplicas)
            }
            Fate::TimedOut { appended } if broker == self.leader => {
                if appended {
                    self.process(broker, attempt);
                }
                error(ResponseError::RequestTimedOut)
            }
            Fate::AfterAppend => match self.process(broker, attempt) {
                None => not_leader,
                Some(Verdict::Appended(_)) => error(ResponseError::NotEnoughReplicasAfterAppend),
                Some(verdict) => Ok(verdict.answer(old_broker)),
            },
            Fate::NotEnoughReplicas | Fate::TimedOut { .. } => not_leader,
        };
        self.reply(job, attempt, answer);
    }

    fn disconnect(&mut self, pick: u8, processed: u8) {
        let Some(broker) = self.connection(pick) else {
            return;
        };
        let pending: Vec<Pending> = self
            .connections
            .get_mut(&broker)
            .map(|q| q.drain(..).collect())
            .unwrap_or_default();
        for (i, Pending { job, attempt }) in pending.into_iter().enumerate() {
            if i < usize::from(processed) {
                self.process(broker, attempt);
            }
            self.reply(job, attempt, Err(()));
        }
    }

    /// Hands the stage an answer: an error code and base offset, or a lost
    /// connection.
    fn reply(&mut self, job: ProduceJob, attempt: Attempt, answer: Result<Answer, ()>) {
        let maybe_written = match answer {
            Err(()) => true,
            Ok((error, _)) => matches!(
                error,
                Some(ResponseError::RequestTimedOut | ResponseError::NotEnoughReplicasAfterAppend)
            ),
        };
        match answer {
            Ok((None | Some(ResponseError::DuplicateSequenceNumber), _)) => {
                self.unknown.remove(&attempt.source);
            }
            _ if maybe_written => {
                self.unknown.insert(attempt.source, attempt.identity());
            }
            _ => {}
        }
        let result = answer
            .map(response)
            .map_err(|()| ClusterError::UnknownBroker {
                role: Role::Target,
                broker: job.broker,
            });
        let reply = ProduceReply {
            broker: job.broker,
            sent: job.sent,
            result: result.map_err(NoAnswer::Failed),
        };
        let cx = ProduceContext {
            config: &self.config,
            meta: &self.meta,
            transaction: None,
            lease: Lease::default(),
        };
        self.stage
            .answered(&mut self.slots, cx, &mut self.counters, reply, self.now);
    }

    fn move_leader(&mut self) {
        let at = BROKERS.iter().position(|&b| b == self.leader).unwrap_or(0);
        self.leader = BROKERS[(at + 1) % BROKERS.len()];
    }

    fn refresh(&mut self) {
        let leader = self.leader;
        self.meta.set(
            Role::Target,
            metadata(TARGET, Uuid::from_u128(9), &[(0, Some(leader))]),
        );
    }

    fn fence(&mut self) {
        let (id, _) = self.identity();
        self.broker.refused.insert(id);
    }

    fn identity(&mut self) -> (i64, i16) {
        let producer = self.stage.producer();
        (producer.id, producer.epoch)
    }

    fn renew(&mut self) {
        let in_flight = self.stage.in_flight() > 0;
        let Some(reason) = self.stage.producer().due(&self.slots, in_flight, self.now) else {
            return;
        };
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        self.stage.producer().renewed(
            &mut self.slots,
            &mut self.counters,
            reason,
            Ok((id, 0)),
            self.now,
        );
    }

    fn checkpoint(&mut self) {
        let state = &mut self.slots[self.id].state;
        let committed = state.committed();
        state.checkpoint_stored(committed);
    }

    fn apply(&mut self, event: &Event) -> Result<(), TestCaseError> {
        match *event {
            Event::Fetch(n) => self.fetch(n),
            Event::Send => self.send()?,
            Event::Deliver(pick, fate) => self.deliver(pick, fate),
            Event::Disconnect(pick, processed) => self.disconnect(pick, processed),
            Event::MoveLeader => self.move_leader(),
            Event::Refresh => self.refresh(),
            Event::Fence => self.fence(),
            Event::Renew => self.renew(),
            Event::Checkpoint => self.checkpoint(),
        }
        self.check()
    }

    /// What holds after every event: the target holds a prefix of the source
    /// batches, each once, in order; the checkpointable offset never passes it
    /// and never goes back; the offset map ends there and translates every
    /// offset before it to where the target has the record.
    fn check(&mut self) -> Result<(), TestCaseError> {
        let held: Vec<i64> = self.broker.log.iter().map(|a| a.source).collect();
        let expected: Vec<i64> = self
            .source
            .iter()
            .take(held.len())
            .map(|&(b, _)| b)
            .collect();
        prop_assert_eq!(
            &held,
            &expected,
            "the target's log is not the source's order, once each"
        );
        // The first source batch the target does not hold.
        let end = self
            .source
            .get(held.len())
            .map_or(self.source_end, |&(base, _)| base);
        let committed = self.slots[self.id].state.committed();
        prop_assert!(
            committed <= end,
            "checkpointable offset {committed} past the target's {end}"
        );
        prop_assert!(
            committed >= self.committed,
            "checkpointable offset went back"
        );
        self.committed = committed;
        self.check_offset_map(committed)
    }

    /// Every source offset up to `committed` translates to the target offset
    /// of the first record at or after it that the target holds, or to the
    /// end of what it holds before `committed` (what is acknowledged). Only
    /// a duplicate answered without an offset before anything was mapped may
    /// leave offsets out of the map's reach, never mapped wrong.
    fn check_offset_map(&self, committed: i64) -> Result<(), TestCaseError> {
        let map = self.slots[self.id].state.offset_map();
        prop_assert_eq!(map.end(), committed);
        let acknowledged = self
            .broker
            .log
            .iter()
            .take_while(|a| a.source < committed)
            .count();
        let log = &self.broker.log[..acknowledged];
        let copy_end = log.last().map_or(Translation::NothingCopied, |last| {
            Translation::Exact(last.target + i64::from(last.records))
        });
        let mut next = 0;
        for c in 0..=committed {
            while log
                .get(next)
                .is_some_and(|a| a.source + i64::from(a.records) <= c)
            {
                next += 1;
            }
            let expected = log.get(next).map_or(copy_end, |a| {
                Translation::Exact(a.target + (c - a.source).max(0))
            });
            match map.translate(c) {
                // Not guessed: the map restarted after such a duplicate.
                Translation::TooOld { .. } | Translation::NothingCopied if self.old_broker => {}
                got => prop_assert_eq!(got, expected, "source offset {}", c),
            }
        }
        Ok(())
    }

    /// No more faults: every answer delivered until the stage has nothing left.
    fn drain(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..200 {
            if self.stopped().is_some() {
                break;
            }
            self.refresh();
            self.renew();
            self.send()?;
            let brokers: Vec<i32> = self.connections.keys().copied().collect();
            for broker in brokers {
                while self.connections.get(&broker).is_some_and(|q| !q.is_empty()) {
                    self.deliver_from(broker);
                    self.check()?;
                }
            }
            self.check()?;
            if self.slots[self.id].state.committed() == self.source_end {
                break;
            }
        }
        match self.stopped() {
            // Stopping is safe where switching ids is not, but it is due only
            // when the broker stopped taking the producer id a batch of
            // unknown fate was sent with: nothing else can tell its fate then.
            Some(Cause::TargetRefused(Refusal {
                kind: RefusalKind::OutcomeUnknown,
                range: Some((start, _)),
                ..
            })) => {
                let start = *start;
                let fenced = self
                    .unknown
                    .get(&start)
                    .is_some_and(|(id, _)| self.broker.refused.contains(id));
                prop_assert!(
                    fenced,
                    "stopped on batch {} whose fate could be learned",
                    start
                );
            }
            Some(other) => prop_assert!(false, "stopped: {:?}", other),
            None => {
                let held: Vec<i64> = self.broker.log.iter().map(|a| a.source).collect();
                let all: Vec<i64> = self.source.iter().map(|&(b, _)| b).collect();
                prop_assert_eq!(held, all, "every source batch on the target once, in order");
                prop_assert_eq!(self.slots[self.id].state.committed(), self.source_end);
            }
        }
        Ok(())
    }

    fn deliver_from(&mut self, broker: i32) {
        let mut busy: Vec<i32> = self
            .connections
            .iter()
            .filter(|(_, q)| !q.is_empty())
            .map(|(&b, _)| b)
            .collect();
        busy.sort_unstable();
        if let Some(pick) = busy.iter().position(|&b| b == broker) {
            self.deliver(pick as u8, Fate::Answered);
        }
    }
}

/// A Produce answer for `copy.t-0`, the topic named (as brokers before v13 do).
fn response((error, base_offset): Answer) -> ProduceResponse {
    ProduceResponse::default().with_responses(vec![TopicProduceResponse::default()
        .with_name(TopicName(StrBytes::from_static_str(TARGET)))
        .with_partition_responses(vec![PartitionProduceResponse::default()
            .with_index(0)
            .with_error_code(error.map_or(0, |e| e.code()))
            .with_base_offset(base_offset)])])
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any interleaving of answers, losses, errors, leader moves and renewals
    /// leaves every source batch on the target once, in order, never moves
    /// the checkpoint past what the target holds, never resends a batch of
    /// unknown fate under another producer id or epoch, and maps every
    /// checkpointed source offset to where the target holds its record.
    #[test]
    fn every_batch_lands_once_in_order(
        initial in 1u8..6,
        events in proptest::collection::vec(event(), 0..80),
        held in 0i64..1000,
        old_broker in any::<bool>(),
    ) {
        let mut h = Harness::new(held, old_broker);
        h.fetch(initial);
        for event in &events {
            h.apply(event)?;
        }
        h.drain()?;
    }
}
