//! API version negotiation: the `ApiVersions` handshake that opens every
//! connection ([KIP-35]).
//!
//! The broker lists a version range per API; for each we use the highest
//! version inside both its range and `kafka-protocol`'s. That is what keeps one
//! client working against Kafka 3.x and 4.x brokers alike: 4.0 removed old
//! versions ([KIP-896], e.g. `Produce` below v3, `Fetch` below v4), and newer
//! brokers add versions we may not know yet.
//!
//! We ask with `ApiVersions` v3, which sends our software name and version
//! ([KIP-511]) and is understood by every broker since 2.4. A broker that does
//! not know the version we sent answers `UNSUPPORTED_VERSION` with its own
//! `ApiVersions` range, encoded at v0 whatever we asked for; we then retry at
//! the highest version it offers (or v0).
//!
//! [KIP-35]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-35+-+Retrieving+protocol+version
//! [KIP-511]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-511%3A+Collect+and+Expose+Client%27s+Name+and+Version+in+the+Brokers
//! [KIP-896]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-896%3A+Remove+old+client+protocol+API+versions+in+Kafka+4.0

use std::collections::HashMap;

use kafka_protocol::messages::{ApiKey, ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::{StrBytes, VersionRange};

use super::{Connection, NetError};

/// The `ApiVersions` version we try first.
const PREFERRED_VERSION: i16 = 3;

/// Kafka's `UNSUPPORTED_VERSION` error code.
const UNSUPPORTED_VERSION: i16 = 35;

/// The API versions a broker supports, as told by its `ApiVersions` response.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NegotiatedVersions {
    /// The broker's range per API. APIs this client does not know are left
    /// out: we could not encode them anyway.
    broker: HashMap<ApiKey, VersionRange>,
}

impl NegotiatedVersions {
    /// Reads the broker's ranges from an `ApiVersions` response.
    pub fn from_response(response: &ApiVersionsResponse) -> Self {
        let broker = response
            .api_keys
            .iter()
            .filter_map(|api| {
                let key = ApiKey::try_from(api.api_key).ok()?;
                let range = VersionRange {
                    min: api.min_version,
                    max: api.max_version,
                };
                Some((key, range))
            })
            .collect();
        Self { broker }
    }

    /// The broker's version range for `api`, if it listed one.
    pub fn broker_range(&self, api: ApiKey) -> Option<VersionRange> {
        self.broker.get(&api).copied()
    }

    /// The highest version of `api` that both the broker and `kafka-protocol`
    /// support, or `None` if the ranges do not overlap.
    pub fn version(&self, api: ApiKey) -> Option<i16> {
        self.version_within(api, api.valid_versions())
    }

    /// The highest version of `api` inside both the broker's range and `ours`.
    pub fn version_within(&self, api: ApiKey, ours: VersionRange) -> Option<i16> {
        let common = self.broker_range(api)?.intersect(&ours);
        (!common.is_empty()).then_some(common.max)
    }
}

/// Runs the `ApiVersions` handshake on a fresh connection.
pub(super) async fn negotiate(connection: &Connection) -> Result<NegotiatedVersions, NetError> {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(env!("CARGO_PKG_NAME")))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));

    let response = exchange(connection, &request, PREFERRED_VERSION).await?;
    if response.error_code != UNSUPPORTED_VERSION {
        return accept(connection, &response, PREFERRED_VERSION);
    }
    let version = fallback_version(&response, PREFERRED_VERSION);
    tracing::debug!(
        connection = connection.label(),
        version,
        "broker refused ApiVersions v{PREFERRED_VERSION}, retrying"
    );
    let response = exchange(connection, &request, version).await?;
    accept(connection, &response, version)
}

/// Sends `ApiVersions` at `version` and decodes the answer, at v0 if it is a
/// refusal, since that is how brokers encode one.
async fn exchange(
    connection: &Connection,
    request: &ApiVersionsRequest,
    version: i16,
) -> Result<ApiVersionsResponse, NetError> {
    let frame = connection.exchange(request, version).await?;
    let encoded_at = match error_code(&frame) {
        Some(UNSUPPORTED_VERSION) => 0,
        _ => version,
    };
    connection.decode::<ApiVersionsRequest>(frame, encoded_at)
}

fn accept(
    connection: &Connection,
    response: &ApiVersionsResponse,
    version: i16,
) -> Result<NegotiatedVersions, NetError> {
    if response.error_code != 0 {
        return Err(NetError::ApiVersionsRejected {
            label: connection.label().to_owned(),
            version,
            error_code: response.error_code,
        });
    }
    let negotiated = NegotiatedVersions::from_response(response);
    tracing::debug!(
        connection = connection.label(),
        produce = ?negotiated.version(ApiKey::Produce),
        fetch = ?negotiated.version(ApiKey::Fetch),
        metadata = ?negotiated.version(ApiKey::Metadata),
        "negotiated API versions"
    );
    Ok(negotiated)
}

/// The error code of an `ApiVersions` response frame, read before choosing the
/// version to decode it at: the response header is v0 (just the correlation
/// id) for every `ApiVersions` version, and `error_code` is the first body
/// field in all of them.
fn error_code(frame: &[u8]) -> Option<i16> {
    frame
        .get(4..6)
        .and_then(|code| code.first_chunk::<2>())
        .map(|code| i16::from_be_bytes(*code))
}

/// The version to retry `ApiVersions` at after `rejected` was refused: the
/// highest the broker listed below it, or v0 if it listed none.
fn fallback_version(refusal: &ApiVersionsResponse, rejected: i16) -> i16 {
    let ours = ApiKey::ApiVersions.valid_versions();
    NegotiatedVersions::from_response(refusal)
        .broker_range(ApiKey::ApiVersions)
        .map(|broker| broker.intersect(&ours))
        .filter(|common| !common.is_empty() && common.min < rejected)
        .map_or(0, |common| common.max.min(rejected - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_peer::Peer;
    use crate::net::ConnectionOptions;
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::{ListOffsetsRequest, OffsetCommitRequest};
    use kafka_protocol::protocol::Decodable;

    fn range(api: i16, min: i16, max: i16) -> ApiVersion {
        ApiVersion::default()
            .with_api_key(api)
            .with_min_version(min)
            .with_max_version(max)
    }

    fn connect(
        peer_stream: tokio::io::DuplexStream,
    ) -> tokio::task::JoinHandle<Result<Connection, NetError>> {
        tokio::spawn(async move {
            Connection::from_stream(
                peer_stream,
                &ConnectionOptions::default(),
                "test broker".to_owned(),
            )
            .await
        })
    }

    #[tokio::test]
    async fn picks_the_highest_common_version_per_api() {
        let (stream, mut peer) = Peer::pair();
        let connecting = connect(stream);

        let request = peer.read_request().await;
        assert_eq!(request.header.request_api_key, ApiKey::ApiVersions as i16);
        assert_eq!(request.header.request_api_version, PREFERRED_VERSION);
        let body =
            ApiVersionsRequest::decode(&mut request.body.clone(), PREFERRED_VERSION).unwrap();
        assert_eq!(&*body.client_software_name, "kafka-mirror");
        assert_eq!(&*body.client_software_version, env!("CARGO_PKG_VERSION"));

        // Ranges as a Kafka 4.x broker might list them, plus one API from the
        // future and one that only overlaps above what we speak.
        let response = ApiVersionsResponse::default().with_api_keys(vec![
            range(ApiKey::Produce as i16, 3, 12),
            range(ApiKey::Fetch as i16, 4, 99),
            range(ApiKey::ListOffsets as i16, 50, 60),
            range(ApiKey::OffsetCommit as i16, 2, 10),
            range(ApiKey::ApiVersions as i16, 0, 4),
            range(999, 0, 1),
        ]);
        peer.respond(
            ApiKey::ApiVersions,
            PREFERRED_VERSION,
            request.header.correlation_id,
            &response,
        )
        .await;
        let connection = connecting.await.unwrap().unwrap();

        assert_eq!(connection.api_version(ApiKey::Produce), Some(12));
        assert_eq!(
            connection.api_version(ApiKey::Fetch),
            Some(ApiKey::Fetch.valid_versions().max)
        );
        assert_eq!(connection.api_version(ApiKey::ListOffsets), None);
        assert_eq!(connection.api_version(ApiKey::Metadata), None);
        // kafka-protocol decodes OffsetCommit v10 answers but encodes requests
        // only up to v9: a request goes at v9.
        assert_eq!(connection.api_version(ApiKey::OffsetCommit), Some(10));
        assert_eq!(
            connection.request_version::<OffsetCommitRequest>().unwrap(),
            9
        );

        // No common version: refused before anything is sent.
        let err = connection
            .send(ListOffsetsRequest::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                NetError::UnsupportedApi {
                    api: ApiKey::ListOffsets,
                    broker: Some(VersionRange { min: 50, max: 60 }),
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(!err.is_retriable());
        assert!(!connection.is_closed());
    }

    /// What an old broker answers to an `ApiVersions` version it does not
    /// know: `UNSUPPORTED_VERSION` and its own range, encoded at v0.
    async fn refuse(peer: &mut Peer, api_versions_range: Option<(i16, i16)>) {
        let request = peer.read_request().await;
        assert_eq!(request.header.request_api_version, PREFERRED_VERSION);
        let api_keys = api_versions_range
            .map(|(min, max)| range(ApiKey::ApiVersions as i16, min, max))
            .into_iter()
            .collect();
        let refusal = ApiVersionsResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .with_api_keys(api_keys);
        peer.respond(
            ApiKey::ApiVersions,
            0,
            request.header.correlation_id,
            &refusal,
        )
        .await;
    }

    async fn accept_at(peer: &mut Peer, version: i16) {
        let request = peer.read_request().await;
        assert_eq!(request.header.request_api_key, ApiKey::ApiVersions as i16);
        assert_eq!(request.header.request_api_version, version);
        let response = ApiVersionsResponse::default().with_api_keys(vec![range(
            ApiKey::Metadata as i16,
            0,
            8,
        )]);
        peer.respond(
            ApiKey::ApiVersions,
            version,
            request.header.correlation_id,
            &response,
        )
        .await;
    }

    #[tokio::test]
    async fn retries_at_the_version_an_old_broker_offers() {
        let (stream, mut peer) = Peer::pair();
        let connecting = connect(stream);
        refuse(&mut peer, Some((0, 2))).await;
        accept_at(&mut peer, 2).await;
        let connection = connecting.await.unwrap().unwrap();
        assert_eq!(connection.api_version(ApiKey::Metadata), Some(8));
    }

    #[tokio::test]
    async fn retries_at_v0_when_the_refusal_lists_nothing() {
        let (stream, mut peer) = Peer::pair();
        let connecting = connect(stream);
        refuse(&mut peer, None).await;
        accept_at(&mut peer, 0).await;
        let connection = connecting.await.unwrap().unwrap();
        assert_eq!(connection.api_version(ApiKey::Metadata), Some(8));
    }

    #[tokio::test]
    async fn a_second_refusal_is_an_error() {
        let (stream, mut peer) = Peer::pair();
        let connecting = connect(stream);
        refuse(&mut peer, Some((0, 1))).await;
        let retry = peer.read_request().await;
        assert_eq!(retry.header.request_api_version, 1);
        let refusal = ApiVersionsResponse::default().with_error_code(UNSUPPORTED_VERSION);
        peer.respond(
            ApiKey::ApiVersions,
            0,
            retry.header.correlation_id,
            &refusal,
        )
        .await;
        let err = connecting.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                NetError::ApiVersionsRejected {
                    version: 1,
                    error_code: 35,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[test]
    fn fallback_never_retries_at_the_refused_version_or_above() {
        let claims = |min, max| {
            ApiVersionsResponse::default().with_api_keys(vec![range(
                ApiKey::ApiVersions as i16,
                min,
                max,
            )])
        };
        assert_eq!(fallback_version(&claims(0, 2), 3), 2);
        // A broker that refuses v3 yet claims it: step below.
        assert_eq!(fallback_version(&claims(0, 9), 3), 2);
        // Nothing usable below the refused version: v0, which every broker has.
        assert_eq!(fallback_version(&claims(3, 9), 3), 0);
        assert_eq!(fallback_version(&ApiVersionsResponse::default(), 3), 0);
    }
}
