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
        let common = self.broker_range(api)?.intersect(&api.valid_versions());
        (!common.is_empty()).then_some(common.max)
    }
}

/// Runs the `ApiVersions` handshake on a fresh connection.
pub(super) async fn negotiate(connection: &Connection) -> Result<NegotiatedVersions, NetError> {
    let request = ApiVersionsRequest::default()
        .with_client_software_name(StrBytes::from_static_str(env!("CARGO_PKG_NAME")))
        .with_client_software_version(StrBytes::from_static_str(env!("CARGO_PKG_VERSION")));

    let frame = connection.exchange(&request, PREFERRED_VERSION).await?;
    if error_code(&frame) != Some(UNSUPPORTED_VERSION) {
        return accept(connection, frame, PREFERRED_VERSION);
    }
    let refusal = connection.decode::<ApiVersionsRequest>(frame, 0)?;
    let version = fallback_version(&refusal, PREFERRED_VERSION);
    tracing::debug!(
        connection = connection.label(),
        version,
        "broker refused ApiVersions v{PREFERRED_VERSION}, retrying"
    );
    let frame = connection.exchange(&request, version).await?;
    accept(connection, frame, version)
}

fn accept(
    connection: &Connection,
    frame: bytes::Bytes,
    version: i16,
) -> Result<NegotiatedVersions, NetError> {
    let response = connection.decode::<ApiVersionsRequest>(frame, version)?;
    if response.error_code != 0 {
        return Err(NetError::ApiVersionsRejected {
            label: connection.label().to_owned(),
            version,
            error_code: response.error_code,
        });
    }
    let negotiated = NegotiatedVersions::from_response(&response);
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
