//! Building Fetch requests and reading their responses by topic name, and
//! the incremental fetch sessions (KIP-227) that keep idle partitions out of
//! every request.
//!
//! Fetch v13+ names topics by id, older versions by name; requests carry both
//! (the codec writes the one the negotiated version has) and responses are
//! mapped back to names here, so callers never care which version was used.
//! Likewise each partition's `last_fetched_epoch` (v12+, KIP-320), which
//! [`Cluster::fetch_on`] leaves out for a broker too old to take it.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use kafka_protocol::messages::fetch_response::PartitionData;
use kafka_protocol::messages::{ApiKey, BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use uuid::Uuid;

use super::{Cluster, ClusterError, TopicNames};

/// One partition to fetch, and from where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionFetch {
    /// The topic's name.
    pub topic: String,
    /// The topic's id (used from Fetch v13 on).
    pub topic_id: Uuid,
    /// The partition.
    pub partition: i32,
    /// The first offset wanted.
    pub offset: i64,
    /// The source leader epoch of the batch fetched before `offset`, so the
    /// leader can tell whether its log still holds it (KIP-320); -1 when unknown.
    pub last_fetched_epoch: i32,
    /// The leader epoch the caller believes in, so a stale leader is refused;
    /// -1 to skip the check.
    pub leader_epoch: i32,
    /// The most bytes of this partition in the response (a first batch larger
    /// than this is still returned whole, KIP-74).
    pub max_bytes: i32,
}

/// A one-off Fetch request for these partitions, outside any fetch session.
pub fn fetch_request(
    partitions: &[PartitionFetch],
    isolation_level: i8,
    max_wait: Duration,
    max_bytes: i32,
) -> FetchRequest {
    let wanted: Vec<&PartitionFetch> = partitions.iter().collect();
    build_request(&wanted, &[], isolation_level, max_wait, max_bytes)
        .with_session_id(0)
        .with_session_epoch(FINAL_EPOCH)
}

/// Groups partitions by topic into a Fetch request; `forgotten` leave the session.
fn build_request(
    partitions: &[&PartitionFetch],
    forgotten: &[&PartitionFetch],
    isolation_level: i8,
    max_wait: Duration,
    max_bytes: i32,
) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut index: HashMap<&str, usize> = HashMap::new();
    for p in partitions {
        let slot = *index.entry(&p.topic).or_insert_with(|| {
            topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                    .with_topic_id(p.topic_id),
            );
            topics.len() - 1
        });
        topics[slot].partitions.push(
            FetchPartition::default()
                .with_partition(p.partition)
                .with_fetch_offset(p.offset)
                .with_last_fetched_epoch(p.last_fetched_epoch)
                .with_current_leader_epoch(p.leader_epoch)
                .with_partition_max_bytes(p.max_bytes),
        );
    }
    let mut forgotten_topics: Vec<ForgottenTopic> = Vec::new();
    for p in forgotten {
        match forgotten_topics
            .iter_mut()
            .find(|t| t.topic_id == p.topic_id && t.topic.0.as_str() == p.topic)
        {
            Some(topic) => topic.partitions.push(p.partition),
            None => forgotten_topics.push(
                ForgottenTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(p.topic.clone())))
                    .with_topic_id(p.topic_id)
                    .with_partitions(vec![p.partition]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(max_wait.as_millis().min(i32::MAX as u128) as i32)
        .with_min_bytes(1)
        .with_max_bytes(max_bytes)
        .with_isolation_level(isolation_level)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten_topics)
}

/// The first Fetch version that carries `last_fetched_epoch` (Kafka 2.7).
const LAST_FETCHED_EPOCH_VERSION: i16 = 12;

/// Leaves out of `request` what a Fetch at `version` cannot carry: below v12
/// a partition's `last_fetched_epoch` (the codec refuses to encode one), so a
/// broker that old answers without truncation detection.
fn fit_to_version(request: &mut FetchRequest, version: i16) {
    if version >= LAST_FETCHED_EPOCH_VERSION {
        return;
    }
    for partition in request.topics.iter_mut().flat_map(|t| &mut t.partitions) {
        partition.last_fetched_epoch = -1;
    }
}

impl Cluster {
    /// Sends a Fetch on the broker's `nth` connection (0 is the one every
    /// other call uses) and waits for the answer. A broker handles one
    /// request of a connection at a time, so Fetches that must overlap on the
    /// wire (over a long round trip) need connections of their own.
    pub async fn fetch_on(
        &self,
        broker: i32,
        nth: usize,
        mut request: FetchRequest,
    ) -> Result<FetchResponse, ClusterError> {
        let connection = self.connect((broker, nth), true).await?;
        if let Some(version) = connection.api_version(ApiKey::Fetch) {
            fit_to_version(&mut request, version);
        }
        connection
            .send(request)
            .await
            .map_err(|source| self.net_error(source))
    }
}

/// `session_epoch` of a request that opens a session.
const INITIAL_EPOCH: i32 = 0;
/// `session_epoch` of a request outside any session.
const FINAL_EPOCH: i32 = -1;

/// An incremental fetch session (KIP-227) with one broker.
///
/// The broker remembers the partitions of the session and where each is
/// read from, so a request names only what changed: a partition added, one
/// whose fetch offset, size or leader epoch moved, and in `forgotten` the
/// ones to drop. A partition with no new data costs nothing per Fetch, which
/// is what lets thousands of idle partitions be mirrored without thousands
/// of entries in every request and response.
///
/// The partitions given to [`FetchSession::request`] are the complete set
/// wanted from the broker this time: one left out is forgotten, or the broker
/// would keep answering for it. Any failure, a refused session or an
/// unanswered request, falls back to a full request that opens a new session.
/// Pure state: the caller sends the request and reports the outcome.
#[derive(Debug, Default)]
pub struct FetchSession {
    /// The broker's id for the session; 0 while there is none.
    id: i32,
    /// The epoch of the next request in the session.
    epoch: i32,
    /// What the broker holds for each partition, by topic, then partition
    /// (looked up by `&str`, so a Fetch clones only the names that changed).
    sent: HashMap<String, HashMap<i32, PartitionFetch>>,
}

impl FetchSession {
    /// The next Fetch for exactly these partitions.
    pub fn request(
        &mut self,
        wanted: &[PartitionFetch],
        isolation_level: i8,
        max_wait: Duration,
        max_bytes: i32,
    ) -> FetchRequest {
        if self.id == 0 {
            // A full request, which asks the broker to open a session.
            self.sent.clear();
            for p in wanted {
                self.remember(p);
            }
            let all: Vec<&PartitionFetch> = wanted.iter().collect();
            return build_request(&all, &[], isolation_level, max_wait, max_bytes)
                .with_session_id(0)
                .with_session_epoch(INITIAL_EPOCH);
        }
        let changed: Vec<&PartitionFetch> = wanted
            .iter()
            .filter(|p| {
                let held = self
                    .sent
                    .get(p.topic.as_str())
                    .and_then(|t| t.get(&p.partition));
                held != Some(*p)
            })
            .collect();
        let keep: std::collections::HashSet<(&str, i32)> = wanted
            .iter()
            .map(|p| (p.topic.as_str(), p.partition))
            .collect();
        let forgotten: Vec<PartitionFetch> = self
            .sent
            .values()
            .flat_map(HashMap::values)
            .filter(|p| !keep.contains(&(p.topic.as_str(), p.partition)))
            .cloned()
            .collect();
        let forgotten_refs: Vec<&PartitionFetch> = forgotten.iter().collect();
        let request = build_request(
            &changed,
            &forgotten_refs,
            isolation_level,
            max_wait,
            max_bytes,
        )
        .with_session_id(self.id)
        .with_session_epoch(self.epoch);
        for p in &forgotten {
            if let Some(topic) = self.sent.get_mut(p.topic.as_str()) {
                topic.remove(&p.partition);
            }
        }
        self.sent.retain(|_, partitions| !partitions.is_empty());
        for p in changed {
            self.remember(p);
        }
        self.epoch = if self.epoch == i32::MAX {
            1
        } else {
            self.epoch + 1
        };
        request
    }

    /// Notes what the broker now holds for `p`.
    fn remember(&mut self, p: &PartitionFetch) {
        self.sent
            .entry(p.topic.clone())
            .or_default()
            .insert(p.partition, p.clone());
    }

    /// Takes in the answer to the last request: the session the broker
    /// opened or kept, or, on a session error, none.
    pub fn answered(&mut self, response: &FetchResponse) {
        if response.error_code.is_err() {
            self.reset();
        } else if self.id == 0 {
            // 0: the broker keeps no session (its cache is full, or it is
            // too old); every request stays a full one.
            self.id = response.session_id;
            self.epoch = 1;
        }
    }

    /// Forgets the session: the next request is a full one. For a request
    /// that failed or was never answered, after which the epochs of the two
    /// sides may differ.
    pub fn reset(&mut self) {
        *self = FetchSession::default();
    }

    /// Whether requests are incremental.
    pub fn is_open(&self) -> bool {
        self.id != 0
    }
}

/// The partitions of a Fetch response with their topic names, whichever way
/// the response named them. A topic id the caller did not ask for is skipped.
///
/// Each topic is resolved once, and its name handed to each of its
/// partitions as a shared [`StrBytes`]: reading a response allocates nothing
/// per topic or partition.
pub fn response_partitions(
    response: FetchResponse,
    names: &TopicNames,
) -> impl Iterator<Item = (StrBytes, PartitionData)> + '_ {
    response
        .responses
        .into_iter()
        .filter_map(|topic| {
            Some((
                names.resolve(topic.topic_id, &topic.topic)?,
                topic.partitions,
            ))
        })
        .flat_map(|(name, partitions)| {
            partitions
                .into_iter()
                .map(move |partition| (name.clone(), partition))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::ResponseError;

    fn partition(topic: &str, partition: i32, offset: i64) -> PartitionFetch {
        PartitionFetch {
            topic: topic.to_owned(),
            topic_id: Uuid::nil(),
            partition,
            offset,
            last_fetched_epoch: -1,
            leader_epoch: 3,
            max_bytes: 1 << 20,
        }
    }

    fn request(session: &mut FetchSession, wanted: &[PartitionFetch]) -> FetchRequest {
        session.request(wanted, 1, Duration::from_millis(500), 1 << 24)
    }

    /// (topic, partition, offset) of every partition the request names.
    fn named(request: &FetchRequest) -> Vec<(String, i32, i64)> {
        request
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.topic.0.to_string(), p.partition, p.fetch_offset))
            })
            .collect()
    }

    fn forgotten(request: &FetchRequest) -> Vec<(String, i32)> {
        request
            .forgotten_topics_data
            .iter()
            .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.0.to_string(), p)))
            .collect()
    }

    fn opened(id: i32) -> FetchResponse {
        FetchResponse::default().with_session_id(id)
    }

    #[test]
    fn after_a_full_request_only_changes_are_sent() {
        let mut session = FetchSession::default();
        let idle = partition("idle", 0, 100);
        let busy = partition("busy", 0, 10);
        let full = request(&mut session, &[idle.clone(), busy.clone()]);
        assert_eq!((full.session_id, full.session_epoch), (0, INITIAL_EPOCH));
        assert_eq!(named(&full).len(), 2);
        session.answered(&opened(77));
        assert!(session.is_open());

        // Only the partition that moved is named; the idle one stays in the session.
        let moved = partition("busy", 0, 42);
        let next = request(&mut session, &[idle.clone(), moved.clone()]);
        assert_eq!((next.session_id, next.session_epoch), (77, 1));
        assert_eq!(named(&next), [("busy".to_owned(), 0, 42)]);
        assert!(forgotten(&next).is_empty());
        session.answered(&opened(77));

        // Nothing changed: an empty request, the next epoch.
        let quiet = request(&mut session, &[idle.clone(), moved.clone()]);
        assert_eq!((quiet.session_epoch, named(&quiet).len()), (2, 0));
        session.answered(&opened(77));

        // A partition left out is forgotten; a new one is added.
        let added = partition("busy", 1, 0);
        let changed = request(&mut session, &[moved, added]);
        assert_eq!(named(&changed), [("busy".to_owned(), 1, 0)]);
        assert_eq!(forgotten(&changed), [("idle".to_owned(), 0)]);
        // Coming back, it is named again in full.
        session.answered(&opened(77));
        let back = request(&mut session, &[idle]);
        assert_eq!(named(&back), [("idle".to_owned(), 0, 100)]);
    }

    #[test]
    fn session_errors_and_failures_fall_back_to_a_full_request() {
        let wanted = [partition("t", 0, 5), partition("t", 1, 9)];
        for error in [
            ResponseError::FetchSessionIdNotFound,
            ResponseError::InvalidFetchSessionEpoch,
        ] {
            let mut session = FetchSession::default();
            request(&mut session, &wanted);
            session.answered(&opened(5));
            request(&mut session, &wanted);
            session.answered(&FetchResponse::default().with_error_code(error.code()));
            assert!(!session.is_open());
            let full = request(&mut session, &wanted);
            assert_eq!((full.session_id, full.session_epoch), (0, INITIAL_EPOCH));
            assert_eq!(named(&full).len(), 2);
        }

        // A request that got no answer leaves the epochs unknown.
        let mut session = FetchSession::default();
        request(&mut session, &wanted);
        session.answered(&opened(5));
        request(&mut session, &wanted);
        session.reset();
        assert_eq!(named(&request(&mut session, &wanted)).len(), 2);
    }

    #[test]
    fn a_broker_that_opens_no_session_gets_full_requests() {
        let mut session = FetchSession::default();
        let wanted = [partition("t", 0, 5)];
        for _ in 0..3 {
            let full = request(&mut session, &wanted);
            assert_eq!((full.session_id, full.session_epoch), (0, INITIAL_EPOCH));
            assert_eq!(named(&full).len(), 1);
            session.answered(&opened(0));
        }
    }

    /// What a broker reads of the request at `version`: (partition, offset,
    /// last fetched epoch).
    fn read_back(mut request: FetchRequest, version: i16) -> Vec<(i32, i64, i32)> {
        use kafka_protocol::protocol::{Decodable, Encodable};
        fit_to_version(&mut request, version);
        let mut buf = bytes::BytesMut::new();
        request.encode(&mut buf, version).expect("encode");
        let read = FetchRequest::decode(&mut buf.freeze(), version).expect("decode");
        read.topics
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| (p.partition, p.fetch_offset, p.last_fetched_epoch))
            .collect()
    }

    #[test]
    fn the_epoch_of_the_last_fetched_batch_goes_to_brokers_that_take_it() {
        let mut known = partition("t", 0, 50);
        known.last_fetched_epoch = 4;
        let wanted = [known, partition("t", 1, 9)];
        let request = fetch_request(&wanted, 0, Duration::from_millis(1), 1 << 20);
        for version in [12, 13, 17] {
            assert_eq!(
                read_back(request.clone(), version),
                [(0, 50, 4), (1, 9, -1)],
                "v{version}"
            );
        }
        // Kafka before 2.7: no such field, and the Fetch still goes.
        assert_eq!(read_back(request, 11), [(0, 50, -1), (1, 9, -1)]);
    }

    /// As in Kafka's own fetch session handler, a partition whose last
    /// fetched epoch alone changed is sent again, or the broker would keep
    /// checking the old one.
    #[test]
    fn a_changed_last_fetched_epoch_is_sent_in_the_session() {
        let mut session = FetchSession::default();
        let mut p = partition("t", 0, 5);
        request(&mut session, std::slice::from_ref(&p));
        session.answered(&opened(3));
        p.last_fetched_epoch = 2;
        let next = request(&mut session, std::slice::from_ref(&p));
        assert_eq!(next.topics[0].partitions[0].last_fetched_epoch, 2);
        session.answered(&opened(3));
        assert!(named(&request(&mut session, &[p])).is_empty());
    }

    #[test]
    fn epochs_wrap_to_one() {
        let mut session = FetchSession::default();
        let wanted = [partition("t", 0, 5)];
        request(&mut session, &wanted);
        session.answered(&opened(9));
        session.epoch = i32::MAX;
        assert_eq!(request(&mut session, &wanted).session_epoch, i32::MAX);
        assert_eq!(request(&mut session, &wanted).session_epoch, 1);
    }
}
