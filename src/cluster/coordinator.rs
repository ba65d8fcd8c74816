//! Finding coordinators: which broker coordinates a consumer group (the
//! leader of its `__consumer_offsets` partition) or a transactional id (the
//! leader of its `__transaction_state` partition). One FindCoordinator
//! request looks up many keys from v4 on (KIP-699), one key each before.
//!
//! Callers keep what they found and look a key up again when its
//! coordinator moves; this module only asks.

use kafka_protocol::error::ParseResponseErrorCode;
use kafka_protocol::messages::{FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use super::{Cluster, ClusterError, Metadata};

/// The first FindCoordinator version that looks up many keys at once (KIP-699).
const BATCHED_COORDINATORS_VERSION: i16 = 4;

/// What a coordinator is looked up for: FindCoordinator's key type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum CoordinatorType {
    /// A consumer group, keyed by group id.
    Group,
    /// A transactional producer, keyed by transactional id.
    Transaction,
}

impl CoordinatorType {
    fn key_type(self) -> i8 {
        match self {
            CoordinatorType::Group => 0,
            CoordinatorType::Transaction => 1,
        }
    }
}

/// A broker's refusal, for one key or for the whole lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Refusal {
    /// The broker's error.
    pub(super) error: ResponseError,
    /// The broker's own words, or what the error means here; may be empty.
    pub(super) message: String,
}

/// Why a lookup got no answer at all.
#[derive(Debug)]
pub(super) enum LookupError {
    /// No broker could be asked.
    Unreachable(ClusterError),
    /// Nothing to ask: the cluster lists no brokers.
    Refused(Refusal),
}

/// Each key's coordinator, or the broker's refusal for that key.
pub(super) type Found = Vec<(String, Result<i32, Refusal>)>;

/// One FindCoordinator round for `keys` (one request from v4 on, one per key
/// before), asked of the first broker of `metadata` that can be reached.
/// `metadata` is read first when it lists no brokers (none read yet), and
/// again when a coordinator is a broker it does not list (one just started),
/// so the caller can connect to every coordinator found.
pub(super) async fn find_coordinators(
    cluster: &Cluster,
    metadata: &mut Metadata,
    kind: CoordinatorType,
    keys: &[&str],
) -> Result<Found, LookupError> {
    if metadata.brokers.is_empty() {
        *metadata = cluster.metadata().await.map_err(LookupError::Unreachable)?;
    }
    let mut brokers: Vec<i32> = metadata.brokers.keys().copied().collect();
    brokers.sort_unstable();
    let mut reached = Err(LookupError::Refused(Refusal {
        error: ResponseError::CoordinatorNotAvailable,
        message: "the cluster lists no brokers".into(),
    }));
    for broker in brokers {
        reached = cluster
            .broker(broker)
            .await
            .map_err(LookupError::Unreachable);
        if reached.is_ok() {
            break;
        }
    }
    let connection = reached?;
    let version = cluster
        .request_version::<FindCoordinatorRequest>(&connection)
        .map_err(LookupError::Unreachable)?;
    let batches: Vec<&[&str]> = if version >= BATCHED_COORDINATORS_VERSION {
        vec![keys]
    } else {
        keys.chunks(1).collect()
    };
    let mut found = Vec::with_capacity(keys.len());
    for batch in batches {
        let request = find_coordinator_request(kind, batch, version);
        let response = connection
            .send_versioned(request, version)
            .await
            .map_err(|source| LookupError::Unreachable(cluster.net_error(source)))?;
        found.extend(read_find_coordinator(batch, response));
    }
    let unknown = found
        .iter()
        .any(|(_, r)| matches!(r, Ok(b) if !metadata.brokers.contains_key(b)));
    if unknown {
        *metadata = cluster.metadata().await.map_err(LookupError::Unreachable)?;
    }
    Ok(found)
}

fn find_coordinator_request(
    kind: CoordinatorType,
    keys: &[&str],
    version: i16,
) -> FindCoordinatorRequest {
    let keys = keys.iter().map(|k| StrBytes::from_string((*k).to_owned()));
    let request = FindCoordinatorRequest::default().with_key_type(kind.key_type());
    if version >= BATCHED_COORDINATORS_VERSION {
        request.with_coordinator_keys(keys.collect())
    } else {
        request.with_key(keys.take(1).next().unwrap_or_default())
    }
}

/// Each key's coordinator from a FindCoordinator answer, in either layout.
fn read_find_coordinator(keys: &[&str], response: FindCoordinatorResponse) -> Found {
    let result = |error_code: i16, message: Option<StrBytes>, node: i32| match error_code.err() {
        None => Ok(node),
        Some(error) => Err(Refusal {
            error,
            message: message.map(|m| m.to_string()).unwrap_or_default(),
        }),
    };
    if response.coordinators.is_empty() {
        // Before v4: the answer for the one key asked.
        return keys
            .first()
            .map(|key| {
                let node = result(
                    response.error_code,
                    response.error_message,
                    response.node_id.0,
                );
                ((*key).to_owned(), node)
            })
            .into_iter()
            .collect();
    }
    response
        .coordinators
        .into_iter()
        .map(|c| {
            let node = result(c.error_code, c.error_message, c.node_id.0);
            (c.key.to_string(), node)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::messages::find_coordinator_response::Coordinator;
    use kafka_protocol::messages::BrokerId;
    use kafka_protocol::protocol::{Decodable, Encodable};

    fn round_trip<M: Encodable + Decodable>(message: &M, version: i16) -> M {
        let mut buf = bytes::BytesMut::new();
        message.encode(&mut buf, version).unwrap();
        M::decode(&mut buf.freeze(), version).unwrap()
    }

    #[test]
    fn a_lookup_batches_from_v4_and_asks_one_key_before() {
        let keys = ["a", "b"];
        let batched = round_trip(
            &find_coordinator_request(CoordinatorType::Group, &keys, 4),
            4,
        );
        assert_eq!(
            batched.coordinator_keys,
            ["a", "b"].map(StrBytes::from_static_str)
        );
        assert_eq!(batched.key_type, 0);
        let single = round_trip(
            &find_coordinator_request(CoordinatorType::Transaction, &keys[1..], 3),
            3,
        );
        assert_eq!(&*single.key, "b");
        assert_eq!(single.key_type, 1);

        let old = FindCoordinatorResponse::default().with_node_id(BrokerId(2));
        let found = read_find_coordinator(&["b"], old);
        assert!(matches!(found.as_slice(), [(g, Ok(2))] if g == "b"));

        let new = FindCoordinatorResponse::default().with_coordinators(vec![
            Coordinator::default()
                .with_key(StrBytes::from_static_str("a"))
                .with_node_id(BrokerId(1)),
            Coordinator::default()
                .with_key(StrBytes::from_static_str("b"))
                .with_error_code(ResponseError::CoordinatorLoadInProgress.code()),
        ]);
        let found = read_find_coordinator(&keys, new);
        assert!(matches!(found[0], (ref g, Ok(1)) if g == "a"));
        assert_eq!(found[1].0, "b");
        assert_eq!(
            found[1].1,
            Err(Refusal {
                error: ResponseError::CoordinatorLoadInProgress,
                message: String::new()
            })
        );
    }
}
