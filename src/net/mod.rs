//! The connection layer: one TCP or TLS connection to one Kafka broker.
//!
//! This layer owns sockets, framing, correlation and version negotiation, and
//! nothing else: it knows no topics, partitions or offsets. Above it, the
//! pipeline builds `Fetch` and `Produce` requests from `kafka-protocol` types
//! and hands them to a [`Connection`]; below it are bytes on a socket.
//!
//! - [`frame`]: sans-io encoding of request frames and splitting/decoding of
//!   response frames (the [protocol guide]'s "size, header, body" framing).
//! - [`splice`]: request frames that carry record batches by reference, so
//!   a Produce request never copies the records it forwards.
//! - [`FrameMemory`]: the buffers large responses (Fetch) are read into,
//!   counted for the memory budget and reused.
//! - [`socket`]: TCP connect with the socket options that matter for WAN
//!   replication (buffer sizes set before connect, keepalive, nodelay).
//! - [`Connection`]: a cheap, cloneable handle to a pipelined connection with a
//!   writer task and a reader task; it matches responses to callers by
//!   correlation id and poisons itself on the first failure.
//! - [`tls`]: rustls client configuration and the TLS handshake.
//! - [`sasl`]: SASL PLAIN, SCRAM and OAUTHBEARER over `SaslHandshake`/`SaslAuthenticate`.
//! - [`Connector`]: TCP, then TLS and SASL when configured, for one cluster.
//! - [`versions`]: the `ApiVersions` handshake ([KIP-35], [KIP-511]) that
//!   picks, per API, the highest version both sides speak.
//!
//! [protocol guide]: https://kafka.apache.org/protocol.html
//! [KIP-35]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-35+-+Retrieving+protocol+version
//! [KIP-511]: https://cwiki.apache.org/confluence/display/KAFKA/KIP-511%3A+Collect+and+Expose+Client%27s+Name+and+Version+in+the+Brokers

mod connection;
mod connector;
pub mod frame;
mod frame_memory;
pub mod sasl;
pub mod socket;
pub mod splice;
pub mod tls;
pub mod versions;

#[cfg(test)]
pub(crate) mod test_peer;

use std::error::Error as StdError;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::VersionRange;

pub use connection::{Connection, ConnectionOptions, PendingResponse};
pub use connector::{Connector, TokenCommand};
pub use frame_memory::FrameMemory;
pub use socket::{connect_tcp, SocketOptions};
pub use versions::NegotiatedVersions;

/// A boxed codec error: `kafka-protocol` reports `anyhow::Error`, which is not a
/// `std::error::Error`, so it is converted (keeping its chain) into this.
pub type CodecError = Arc<dyn StdError + Send + Sync>;

/// Everything that can go wrong in the connection layer.
///
/// Cloneable so that one failure can be handed to every request waiting on a
/// poisoned connection. Use [`NetError::is_retriable`] to decide whether to
/// reconnect and try again.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The broker address could not be resolved (or resolved to nothing).
    #[error("could not resolve broker address {addr}")]
    Resolve {
        /// The address as configured, `host:port`.
        addr: String,
        /// What the resolver said.
        #[source]
        source: Arc<io::Error>,
    },

    /// Every resolved address refused or failed the TCP connect.
    #[error("could not connect to {addr}")]
    Connect {
        /// The address as configured, `host:port`.
        addr: String,
        /// The error from the last address tried.
        #[source]
        source: Arc<io::Error>,
    },

    /// Resolving and connecting took longer than the connect timeout.
    #[error("connecting to {addr} timed out after {timeout:?}")]
    ConnectTimeout {
        /// The address as configured, `host:port`.
        addr: String,
        /// The configured connect timeout.
        timeout: Duration,
    },

    /// Reading from or writing to an established connection failed.
    #[error("I/O error on the connection to {label}")]
    Io {
        /// Which connection, e.g. `broker 1 (10.0.0.5:9092)`.
        label: String,
        /// The socket error.
        #[source]
        source: Arc<io::Error>,
    },

    /// The broker closed the connection (for example after
    /// `connections.max.idle.ms`, or while shutting down).
    #[error("{label} closed the connection ({buffered_bytes} bytes of an unfinished response frame were buffered)")]
    PeerClosed {
        /// Which connection.
        label: String,
        /// Bytes of a response frame received before the close; non-zero
        /// means the broker hung up mid-response.
        buffered_bytes: usize,
    },

    /// A response frame announced a size that is negative or above the limit.
    /// Checked before anything is allocated for it.
    #[error("response frame of {size} bytes is over the limit of {max} bytes (or negative)")]
    FrameTooLarge {
        /// The size from the frame's 4-byte length prefix.
        size: i32,
        /// The configured `max_frame_bytes`.
        max: usize,
    },

    /// A request could not be encoded (a field does not fit the version).
    #[error("could not encode {api:?} v{version} request")]
    Encode {
        /// The request's API.
        api: ApiKey,
        /// The version it was encoded at.
        version: i16,
        /// What `kafka-protocol` reported.
        #[source]
        source: CodecError,
    },

    /// A response frame could not be decoded as the expected message.
    #[error("could not decode {api:?} v{version} response")]
    Decode {
        /// The API of the request this answers.
        api: ApiKey,
        /// The version it was decoded at.
        version: i16,
        /// What `kafka-protocol` reported.
        #[source]
        source: CodecError,
    },

    /// A response decoded but did not use the whole frame: a version mismatch
    /// between what we asked for and what the broker encoded.
    #[error("{api:?} v{version} response has {remaining} bytes left over after decoding")]
    TrailingBytes {
        /// The API of the request this answers.
        api: ApiKey,
        /// The version it was decoded at.
        version: i16,
        /// Bytes not consumed by the decoder.
        remaining: usize,
    },

    /// A response arrived that no request is waiting for at that position:
    /// Kafka answers in request order, so the stream is out of sync.
    #[error("{label} sent a response with correlation id {correlation_id}, expected {}", fmt_expected(*expected))]
    UnexpectedResponse {
        /// Which connection.
        label: String,
        /// The correlation id the response carried.
        correlation_id: i32,
        /// The id of the oldest request in flight, if any.
        expected: Option<i32>,
    },

    /// A response frame too short to carry a correlation id.
    #[error("{label} sent a {size}-byte response frame, too short for a response header")]
    ShortFrame {
        /// Which connection.
        label: String,
        /// The frame's size (without the size prefix).
        size: usize,
    },

    /// The broker and we share no version of this API.
    #[error("{label} supports {api:?} versions {}, this client {ours}", fmt_range(*broker))]
    UnsupportedApi {
        /// Which connection.
        label: String,
        /// The API we wanted to use.
        api: ApiKey,
        /// The broker's range from `ApiVersions`, `None` if it does not list the API.
        broker: Option<VersionRange>,
        /// The range `kafka-protocol` can encode.
        ours: VersionRange,
    },

    /// The broker rejected the `ApiVersions` handshake with an error code.
    #[error("{label} rejected ApiVersions v{version} with error code {error_code}")]
    ApiVersionsRejected {
        /// Which connection.
        label: String,
        /// The `ApiVersions` version we sent.
        version: i16,
        /// The Kafka error code in the response.
        error_code: i16,
    },

    /// No response arrived within the request timeout. The connection is
    /// poisoned: a lost answer would shift every later one.
    #[error("{label} did not answer {api:?} request (correlation id {correlation_id}) within {timeout:?}")]
    Timeout {
        /// Which connection.
        label: String,
        /// The API of the request.
        api: ApiKey,
        /// The request's correlation id.
        correlation_id: i32,
        /// The configured request timeout.
        timeout: Duration,
    },

    /// The TLS handshake failed: an untrusted or mismatched certificate, a
    /// refused client certificate, or a peer that does not speak TLS.
    #[error("TLS handshake with {addr} failed: {reason}")]
    Tls {
        /// The address as configured, `host:port`.
        addr: String,
        /// rustls's verdict or the I/O failure, with a hint when one helps.
        reason: String,
        /// False for certificate and protocol verdicts, which a retry repeats.
        retriable: bool,
    },

    /// The Kafka handshake (ApiVersions, then SASL) did not finish within the
    /// connect timeout.
    #[error("{addr} did not complete the Kafka handshake within {timeout:?}{hint}")]
    HandshakeTimeout {
        /// The address as configured, `host:port`.
        addr: String,
        /// The configured connect timeout.
        timeout: Duration,
        /// A hint at the usual cause, or empty.
        hint: &'static str,
    },

    /// The peer's first answer was not a Kafka response: typically a
    /// plaintext client talking to a TLS listener.
    #[error("{addr} did not answer in the Kafka protocol ({detail}){hint}")]
    NotKafka {
        /// The address as configured, `host:port`.
        addr: String,
        /// What the connection saw.
        detail: String,
        /// A hint at the usual cause.
        hint: &'static str,
    },

    /// The command that prints the OAUTHBEARER token failed. Its output is
    /// never included: it may hold the token.
    #[error("{key}: {reason}")]
    TokenCommand {
        /// The config key, e.g. `source.sasl.token_command`.
        key: String,
        /// What went wrong (exit status, timeout), without the command's output.
        reason: String,
    },

    /// SASL authentication was refused, or could not be carried out.
    #[error("{label}: {failure}")]
    Sasl {
        /// Which connection.
        label: String,
        /// What went wrong; never holds the secret.
        failure: sasl::SaslFailure,
    },

    /// The connection failed earlier (see `cause`) and takes no more requests.
    #[error("connection to {label} is closed")]
    Closed {
        /// Which connection.
        label: String,
        /// The failure that poisoned it, or `None` if the connection's tasks
        /// went away without one (the runtime shut down).
        #[source]
        cause: Option<Arc<NetError>>,
    },
}

impl NetError {
    /// Whether this is a security failure (TLS or SASL) that says the
    /// configuration is wrong, rather than that a broker is unavailable.
    pub fn is_security_failure(&self) -> bool {
        match self {
            NetError::Tls { retriable, .. } => !retriable,
            NetError::Sasl { .. } | NetError::TokenCommand { .. } => true,
            NetError::Closed { cause, .. } => {
                cause.as_ref().is_some_and(|c| c.is_security_failure())
            }
            _ => false,
        }
    }

    /// Whether the same request may succeed on a new connection.
    ///
    /// Transport failures (resolve, connect, I/O, timeouts, a broker hang-up,
    /// an out-of-sync response stream) are retriable after reconnecting.
    /// Codec failures, over-size frames and missing API versions are not: the
    /// same broker will send the same bytes again, so retrying only loops.
    pub fn is_retriable(&self) -> bool {
        match self {
            NetError::Resolve { .. }
            | NetError::Connect { .. }
            | NetError::ConnectTimeout { .. }
            | NetError::Io { .. }
            | NetError::PeerClosed { .. }
            | NetError::UnexpectedResponse { .. }
            | NetError::ShortFrame { .. }
            | NetError::HandshakeTimeout { .. }
            | NetError::NotKafka { .. }
            | NetError::Timeout { .. } => true,
            NetError::Tls { retriable, .. } => *retriable,
            NetError::Sasl { .. } => false,
            // A token service may be briefly down: reconnects try again, with backoff.
            NetError::TokenCommand { .. } => true,
            NetError::FrameTooLarge { .. }
            | NetError::Encode { .. }
            | NetError::Decode { .. }
            | NetError::TrailingBytes { .. }
            | NetError::UnsupportedApi { .. }
            | NetError::ApiVersionsRejected { .. } => false,
            NetError::Closed { cause, .. } => cause.as_ref().is_none_or(|c| c.is_retriable()),
        }
    }
}

fn fmt_expected(expected: Option<i32>) -> String {
    match expected {
        Some(id) => format!("{id} next"),
        None => "no response (no request in flight)".to_owned(),
    }
}

fn fmt_range(range: Option<VersionRange>) -> String {
    match range {
        Some(range) => range.to_string(),
        None => "none (not listed)".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_is_as_retriable_as_its_cause() {
        let closed = |cause: NetError| NetError::Closed {
            label: "b".into(),
            cause: Some(Arc::new(cause)),
        };
        let too_large = NetError::FrameTooLarge { size: -1, max: 10 };
        let eof = NetError::PeerClosed {
            label: "b".into(),
            buffered_bytes: 0,
        };
        assert!(!closed(too_large).is_retriable());
        assert!(closed(eof).is_retriable());
    }

    #[test]
    fn messages_name_the_context() {
        let err = NetError::UnsupportedApi {
            label: "broker 1 (127.0.0.1:9092)".into(),
            api: ApiKey::Fetch,
            broker: None,
            ours: VersionRange { min: 4, max: 18 },
        };
        assert_eq!(
            err.to_string(),
            "broker 1 (127.0.0.1:9092) supports Fetch versions none (not listed), this client 4..18"
        );
    }
}
