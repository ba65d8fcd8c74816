//! One Kafka cluster as the mirror sees it: bootstrap, metadata, and a
//! connection per broker, reconnected with backoff.
//!
//! The pipeline asks for "the connection to broker 3" and gets one, whether it
//! is already open, must be opened, or was just lost; a broker that keeps
//! failing is retried with exponential backoff so an outage never becomes a
//! tight reconnect loop. Leader routing lives in [`Metadata`] snapshots.
//!
//! Beside it: building and reading Fetch, Produce and ListOffsets requests
//! (`fetch`, `produce`, `offsets`), finding coordinators (`coordinator`),
//! consumer groups from the outside (`groups`), a transactional
//! producer's coordinator requests (`transactions`), and ACLs (`acls`).

mod acls;
mod coordinator;
mod fetch;
mod groups;
pub mod membership;
mod metadata;
mod offsets;
mod produce;
mod transactions;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{ApiKey, MetadataRequest};
use kafka_protocol::protocol::Request;
use tokio::sync::Mutex as AsyncMutex;

pub use acls::{
    create_acls, delete_acls, describe_acls, AclBinding, AclError, OPERATION_ALL,
    OPERATION_DESCRIBE, OPERATION_DESCRIBE_CONFIGS, OPERATION_READ, OPERATION_WRITE,
    PATTERN_LITERAL, PATTERN_PREFIXED, PERMISSION_ALLOW, PERMISSION_DENY, RESOURCE_GROUP,
    RESOURCE_TOPIC,
};
pub use fetch::{fetch_request, response_partitions, FetchSession, PartitionFetch};
pub use groups::{
    CommitOutcome, CommittedOffset, CommittedOffsets, DescribedGroup, DescribedMember, GroupClient,
    GroupError, GroupOp, GroupState, ListedGroup,
};
pub use metadata::{Metadata, PartitionMetadata, TopicMetadata, TopicNames};
pub use offsets::{OffsetLookupError, OffsetResult, OffsetSpec};
pub use produce::produce_request;
pub use transactions::{TransactionCoordinator, TransactionError};

use crate::backoff::Backoff;
use crate::net::frame::api_key;
use crate::net::splice::Splices;
use crate::net::{Connection, Connector, FrameMemory, NetError, PendingResponse};
use crate::observe::metrics::requests;
use crate::sync::lock;

/// Which side of the mirror a cluster is, for messages that must say which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// The cluster that is read.
    Source,
    /// The cluster that is written.
    Target,
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Role::Source => "source",
            Role::Target => "target",
        })
    }
}

/// A failure to reach or query a cluster.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClusterError {
    /// No bootstrap server answered.
    #[error("{role} cluster unreachable: no bootstrap server answered ({attempts})")]
    Unreachable {
        /// Which cluster.
        role: Role,
        /// Each server tried, with its error.
        attempts: String,
    },
    /// A broker id that the latest metadata does not list.
    #[error("{role} cluster: broker {broker} is not in the cluster metadata")]
    UnknownBroker {
        /// Which cluster.
        role: Role,
        /// The node id asked for.
        broker: i32,
    },
    /// A broker failed recently and is not dialled again before its backoff has passed.
    #[error("{role} cluster: broker {broker} failed recently; waiting before reconnecting")]
    Backoff {
        /// Which cluster.
        role: Role,
        /// The node id.
        broker: i32,
    },
    /// A request to a broker failed at the connection level.
    #[error("{role} cluster: {source}")]
    Net {
        /// Which cluster.
        role: Role,
        /// The connection error, naming the broker.
        #[source]
        source: NetError,
    },
}

impl ClusterError {
    /// Whether trying again later (after reconnecting) may succeed.
    pub fn is_retriable(&self) -> bool {
        match self {
            ClusterError::Unreachable { .. }
            | ClusterError::UnknownBroker { .. }
            | ClusterError::Backoff { .. } => true,
            ClusterError::Net { source, .. } => source.is_retriable(),
        }
    }
}

/// Backoff between reconnects to one broker: 100 ms doubling up to 10 s.
const RECONNECT_BASE: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(10);

/// The link to one broker: the open connection, or when to try again.
#[derive(Debug)]
struct BrokerLink {
    connection: Option<Connection>,
    backoff: Backoff,
    /// A connection was open before: the next one is a reconnect.
    opened: bool,
}

impl Default for BrokerLink {
    fn default() -> Self {
        BrokerLink {
            connection: None,
            backoff: Backoff::new(RECONNECT_BASE, RECONNECT_MAX),
            opened: false,
        }
    }
}

/// A link that concurrent callers wait on together.
type SharedLink = Arc<AsyncMutex<BrokerLink>>;

/// A client for one cluster, shared by every task that talks to it.
#[derive(Debug)]
pub struct Cluster {
    role: Role,
    bootstrap: Vec<String>,
    connector: Connector,
    /// Broker addresses from the latest metadata.
    addresses: Mutex<HashMap<i32, String>>,
    /// One link per broker and connection number (0 unless a caller asks for
    /// more); the async lock makes concurrent callers share one connect.
    links: Mutex<HashMap<(i32, usize), SharedLink>>,
    /// The highest version sent of each API capped with [`Cluster::cap_version`].
    version_caps: Mutex<HashMap<ApiKey, i16>>,
}

impl Cluster {
    /// A client for the cluster behind these bootstrap servers. Connects lazily.
    pub fn new(role: Role, bootstrap: Vec<String>, connector: Connector) -> Arc<Self> {
        Arc::new(Cluster {
            role,
            bootstrap,
            connector,
            addresses: Mutex::new(HashMap::new()),
            links: Mutex::new(HashMap::new()),
            version_caps: Mutex::new(HashMap::new()),
        })
    }

    /// Sends `api` to this cluster at version `max` at most from now on,
    /// whatever its brokers support, on the connections open and those still
    /// to open. For a caller whose use of an API stops at a version: a
    /// transactional producer of transaction version 1 (KIP-98) sends
    /// Produce at most v11, since v12+ tells a Kafka 4 broker that the
    /// producer follows transaction version 2 (KIP-890), which adds
    /// partitions to the transaction by itself.
    pub fn cap_version(&self, api: ApiKey, max: i16) {
        lock(&self.version_caps).insert(api, max);
    }

    /// The version `R` goes at on `connection`: the highest both sides
    /// support, within this cluster's cap for the API. Every request sent
    /// through the cluster's methods goes at this version; callers that
    /// send on a [`Connection`] themselves ask here.
    pub fn request_version<R: Request>(
        &self,
        connection: &Connection,
    ) -> Result<i16, ClusterError> {
        connection
            .request_version_at_most::<R>(self.version_cap::<R>())
            .map_err(|source| self.net_error(source))
    }

    fn version_cap<R: Request>(&self) -> Option<i16> {
        lock(&self.version_caps).get(&api_key::<R>()).copied()
    }

    /// Sends `request` on `connection` at [`Cluster::request_version`].
    async fn send_on<R: Request>(
        &self,
        connection: &Connection,
        request: R,
    ) -> Result<R::Response, NetError> {
        let version = connection.request_version_at_most::<R>(self.version_cap::<R>())?;
        connection.send_versioned(request, version).await
    }

    /// Which side of the mirror this cluster is.
    pub fn role(&self) -> Role {
        self.role
    }

    /// The memory this cluster's large responses (Fetch) are held in.
    pub fn frame_memory(&self) -> &FrameMemory {
        &self.connector.options().frame_memory
    }

    /// Fetches metadata for all topics from any reachable broker and
    /// remembers the broker addresses it lists.
    ///
    /// A bootstrap connection that answered is kept as the link to the
    /// broker listed at its address: over a long round trip, opening it
    /// again would cost another handshake before the first request.
    pub async fn metadata(&self) -> Result<Metadata, ClusterError> {
        let request = MetadataRequest::default().with_topics(None);
        let (response, bootstrapped) = self.send_any_from(request).await?;
        let metadata = Metadata::from_response(response);
        *lock(&self.addresses) = metadata.brokers.clone();
        if let Some((address, connection)) = bootstrapped {
            self.adopt(&metadata, &address, connection);
        }
        Ok(metadata)
    }

    /// Makes `connection`, opened to a bootstrap `address`, the link to the
    /// broker `metadata` lists there, unless that broker has one already.
    fn adopt(&self, metadata: &Metadata, address: &str, connection: Connection) {
        let Some((&broker, _)) = metadata.brokers.iter().find(|(_, a)| *a == address) else {
            return;
        };
        let link = lock(&self.links).entry((broker, 0)).or_default().clone();
        // A link being opened or in use is left alone.
        if let Ok(mut link) = link.try_lock() {
            if link.connection.is_none() {
                link.connection = Some(connection);
                link.opened = true;
            }
        };
    }

    /// Opens `broker`'s `nth` connection ahead of its first request, so
    /// that request need not wait for the handshake.
    pub async fn open_connection(&self, broker: i32, nth: usize) -> Result<(), ClusterError> {
        self.connect((broker, nth), true).await.map(drop)
    }

    /// Sends a request to any broker: a known one first, then the bootstrap servers.
    ///
    /// A TLS or SASL failure ends the search at once: it says the
    /// configuration is wrong, and other brokers of the cluster would only
    /// refuse the same way.
    pub async fn send_any<R>(&self, request: R) -> Result<R::Response, ClusterError>
    where
        R: Request + Clone + Send + 'static,
    {
        Ok(self.send_any_from(request).await?.0)
    }

    /// [`Cluster::send_any`], with the bootstrap connection that answered
    /// (and its address), if it was one.
    async fn send_any_from<R>(
        &self,
        request: R,
    ) -> Result<(R::Response, Option<(String, Connection)>), ClusterError>
    where
        R: Request + Clone + Send + 'static,
    {
        let mut attempts = Vec::new();
        let known: Vec<i32> = lock(&self.addresses).keys().copied().collect();
        for broker in known {
            match self.connect((broker, 0), false).await {
                Ok(connection) => match self.send_on(&connection, request.clone()).await {
                    Ok(response) => return Ok((response, None)),
                    Err(e) => attempts.push(format!("broker {broker}: {e}")),
                },
                Err(ClusterError::Net { source, .. }) if source.is_security_failure() => {
                    return Err(self.net_error(source))
                }
                Err(e) => attempts.push(e.to_string()),
            }
        }
        for address in &self.bootstrap {
            match self.connector.connect(address).await {
                Ok(connection) => match self.send_on(&connection, request.clone()).await {
                    Ok(response) => return Ok((response, Some((address.clone(), connection)))),
                    Err(e) => match self.connector.explain_first_request_failure(address, e) {
                        e if e.is_security_failure() => return Err(self.net_error(e)),
                        e => attempts.push(format!("{address}: {e}")),
                    },
                },
                Err(e) if e.is_security_failure() => return Err(self.net_error(e)),
                Err(e) => attempts.push(format!("{address}: {e}")),
            }
        }
        Err(ClusterError::Unreachable {
            role: self.role,
            attempts: attempts.join("; "),
        })
    }

    /// The connection to one broker, opened if needed. A broker that failed
    /// recently is not dialled again before its backoff has passed: the caller
    /// waits here instead, so no caller can spin on a dead broker.
    pub async fn broker(&self, broker: i32) -> Result<Connection, ClusterError> {
        self.connect((broker, 0), true).await
    }

    /// The shortest round trip of the open connections to `broker` (see
    /// [`Connection::round_trip`]); `None` before one is open.
    pub fn round_trip(&self, broker: i32) -> Option<Duration> {
        self.round_trip_of(|id| id == broker)
    }

    /// The shortest round trip of the open connections to any broker.
    pub fn shortest_round_trip(&self) -> Option<Duration> {
        self.round_trip_of(|_| true)
    }

    fn round_trip_of(&self, brokers: impl Fn(i32) -> bool) -> Option<Duration> {
        // `try_lock` never waits, so the links' map stays locked only briefly.
        lock(&self.links)
            .iter()
            .filter(|((id, _), _)| brokers(*id))
            .filter_map(|(_, link)| link.try_lock().ok()?.connection.as_ref()?.round_trip())
            .min()
    }

    /// The connection to one broker; `wait_backoff` false fails at once
    /// instead of waiting out a backoff (for callers with other brokers to try).
    async fn connect(
        &self,
        (broker, nth): (i32, usize),
        wait_backoff: bool,
    ) -> Result<Connection, ClusterError> {
        let link = lock(&self.links).entry((broker, nth)).or_default().clone();
        let mut link = link.lock().await;
        if let Some(connection) = &link.connection {
            if connection.is_closed() {
                link.connection = None;
                link.backoff.fail(Instant::now());
            } else if connection.is_expired() {
                // The SASL session is about to end: requests already sent
                // finish on the old connection, new ones go to a new one.
                tracing::debug!(role = %self.role, broker, "SASL session lifetime reached; reconnecting");
                link.connection = None;
            } else {
                return Ok(connection.clone());
            }
        }
        if let Some(at) = link.backoff.until().filter(|at| *at > Instant::now()) {
            if !wait_backoff {
                return Err(ClusterError::Backoff {
                    role: self.role,
                    broker,
                });
            }
            tokio::time::sleep_until(at.into()).await;
        }
        let address = self.address_of(broker)?;
        match self.connector.connect(&address).await {
            Ok(connection) => {
                link.backoff.reset();
                link.connection = Some(connection.clone());
                if std::mem::replace(&mut link.opened, true) {
                    requests().reconnected(self.role, broker);
                }
                Ok(connection)
            }
            Err(source) => {
                link.backoff.fail(Instant::now());
                Err(ClusterError::Net {
                    role: self.role,
                    source,
                })
            }
        }
    }

    /// The address of `broker`, as the last metadata gave it.
    fn address_of(&self, broker: i32) -> Result<String, ClusterError> {
        lock(&self.addresses)
            .get(&broker)
            .cloned()
            .ok_or(ClusterError::UnknownBroker {
                role: self.role,
                broker,
            })
    }

    /// A connection to `broker` of the caller's own, outside the ones
    /// shared by [`Cluster::send`] and its kind, whose requests may wait
    /// `request_timeout` for their answers: for requests the broker holds
    /// (JoinGroup waits for a whole group), which would hold up every request
    /// queued behind them on a shared connection. Not reconnected: the
    /// caller opens another when it closes.
    pub async fn dedicated_connection(
        &self,
        broker: i32,
        request_timeout: Duration,
    ) -> Result<Connection, ClusterError> {
        let address = self.address_of(broker)?;
        self.connector
            .clone()
            .with_request_timeout(request_timeout)
            .connect(&address)
            .await
            .map_err(|source| self.net_error(source))
    }

    /// Sends a request to one broker.
    pub async fn send<R>(&self, broker: i32, request: R) -> Result<R::Response, ClusterError>
    where
        R: Request + Send + 'static,
    {
        let pending = self.enqueue(broker, request).await?;
        pending
            .response()
            .await
            .map_err(|source| self.net_error(source))
    }

    /// Sends one broker a request whose fields moved between versions:
    /// `build` makes it for the version it goes at
    /// ([`Connection::request_version`]).
    pub async fn send_built<R>(
        &self,
        broker: i32,
        build: impl FnOnce(i16) -> R,
    ) -> Result<R::Response, ClusterError>
    where
        R: Request + Send + 'static,
    {
        let connection = self.broker(broker).await?;
        let version = self.request_version::<R>(&connection)?;
        connection
            .send_versioned(build(version), version)
            .await
            .map_err(|source| self.net_error(source))
    }

    /// Queues a request to one broker without waiting for the answer:
    /// requests queued one after another reach the broker in that order.
    pub async fn enqueue<R>(
        &self,
        broker: i32,
        request: R,
    ) -> Result<PendingResponse<R>, ClusterError>
    where
        R: Request + Send + 'static,
    {
        self.enqueue_spliced(broker, request, Splices::default())
            .await
    }

    /// [`Cluster::enqueue`] for a request whose record batches go out by
    /// reference ([`Splices`]).
    pub async fn enqueue_spliced<R>(
        &self,
        broker: i32,
        request: R,
        splices: Splices,
    ) -> Result<PendingResponse<R>, ClusterError>
    where
        R: Request + Send + 'static,
    {
        let connection = self.broker(broker).await?;
        let version = self.request_version::<R>(&connection)?;
        connection
            .enqueue_versioned(request, version, splices)
            .await
            .map_err(|source| self.net_error(source))
    }

    /// Wraps a connection error with this cluster's role.
    pub fn net_error(&self, source: NetError) -> ClusterError {
        ClusterError::Net {
            role: self.role,
            source,
        }
    }
}

/// ` on <topic>-<partition>`, for a broker's error about one partition;
/// empty for one about the whole request.
fn on_partition(partition: &Option<(String, i32)>) -> String {
    partition
        .as_ref()
        .map_or_else(String::new, |(topic, p)| format!(" on {topic}-{p}"))
}

/// ` (<message>)`, for the broker's own words on an error; empty when it
/// gave none.
fn detail(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use kafka_protocol::messages::metadata_response::MetadataResponseBroker;
    use kafka_protocol::messages::{
        ApiVersionsResponse, BrokerId, MetadataResponse, ProduceRequest, ProduceResponse,
    };
    use kafka_protocol::protocol::StrBytes;
    use tokio::net::TcpListener;

    use super::*;
    use crate::net::test_peer::Peer;
    use crate::net::ConnectionOptions;

    /// Accepts one connection and answers its version handshake as a
    /// broker offering Produce v3 to v13.
    async fn accept(listener: &TcpListener) -> Peer<tokio::net::TcpStream> {
        accept_offering(listener, ApiKey::Produce, 3, 13).await
    }

    /// Accepts one connection and answers its version handshake as a
    /// broker offering `api` from `min` to `max`.
    async fn accept_offering(
        listener: &TcpListener,
        api: ApiKey,
        min: i16,
        max: i16,
    ) -> Peer<tokio::net::TcpStream> {
        let (stream, _) = listener.accept().await.unwrap();
        let mut peer = Peer::over(stream);
        let hello = peer.read_request().await;
        assert_eq!(hello.header.request_api_key, ApiKey::ApiVersions as i16);
        let ranges = ApiVersionsResponse::default().with_api_keys(vec![ApiVersion::default()
            .with_api_key(api as i16)
            .with_min_version(min)
            .with_max_version(max)]);
        let version = hello.header.request_api_version;
        peer.respond(
            ApiKey::ApiVersions,
            version,
            hello.header.correlation_id,
            &ranges,
        )
        .await;
        peer
    }

    /// The version of the one Produce request of a connection.
    async fn produce_version_seen(listener: &TcpListener) -> i16 {
        let mut peer = accept(listener).await;
        let produce = peer.read_request().await;
        assert_eq!(produce.header.request_api_key, ApiKey::Produce as i16);
        let version = produce.header.request_api_version;
        let answer = ProduceResponse::default();
        peer.respond(
            ApiKey::Produce,
            version,
            produce.header.correlation_id,
            &answer,
        )
        .await;
        version
    }

    #[tokio::test]
    async fn a_capped_api_goes_at_its_cap_and_others_at_the_highest_common_version() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let cluster = Cluster::new(
            Role::Target,
            vec![address],
            Connector::plain(ConnectionOptions::default()),
        );
        let broker = tokio::spawn(async move {
            let uncapped = produce_version_seen(&listener).await;
            let capped = produce_version_seen(&listener).await;
            // The last connection sends nothing but the handshake.
            let mut peer = accept(&listener).await;
            peer.expect_eof().await;
            (uncapped, capped)
        });
        cluster.send_any(ProduceRequest::default()).await.unwrap();
        cluster.cap_version(ApiKey::Produce, 11);
        cluster.send_any(ProduceRequest::default()).await.unwrap();

        // A cap below what the broker takes is refused before anything is sent.
        cluster.cap_version(ApiKey::Produce, 2);
        let error = cluster
            .send_any(ProduceRequest::default())
            .await
            .unwrap_err();
        assert!(error.to_string().contains("Produce"), "{error}");
        assert_eq!(broker.await.unwrap(), (13, 11));
    }

    /// Over a long round trip a second handshake with the broker the
    /// bootstrap connection reached would delay the first request to it.
    #[tokio::test]
    async fn the_bootstrap_connection_becomes_the_link_to_the_broker_listed_at_its_address() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let cluster = Cluster::new(
            Role::Source,
            vec![address.to_string()],
            Connector::plain(ConnectionOptions::default()),
        );
        let broker = tokio::spawn(async move {
            let mut peer = accept_offering(&listener, ApiKey::Metadata, 0, 12).await;
            let ask = peer.read_request().await;
            assert_eq!(ask.header.request_api_key, ApiKey::Metadata as i16);
            let answer =
                MetadataResponse::default().with_brokers(vec![MetadataResponseBroker::default()
                    .with_node_id(BrokerId(1))
                    .with_host(StrBytes::from_string(address.ip().to_string()))
                    .with_port(i32::from(address.port()))]);
            let version = ask.header.request_api_version;
            peer.respond(
                ApiKey::Metadata,
                version,
                ask.header.correlation_id,
                &answer,
            )
            .await;
            (peer, listener)
        });
        let metadata = cluster.metadata().await.unwrap();
        assert_eq!(metadata.brokers[&1], address.to_string());
        let (peer, listener) = broker.await.unwrap();
        assert!(cluster.round_trip(1).is_some(), "broker 1 has an open link");
        cluster.open_connection(1, 0).await.unwrap();
        let second = tokio::time::timeout(Duration::from_millis(200), listener.accept()).await;
        assert!(second.is_err(), "no second connection to broker 1");
        drop(peer);
    }
}
