//! A pipelined connection to one broker.
//!
//! Two tasks own the stream: a writer fed with whole encoded frames through a
//! channel, and a reader that splits response frames off the socket and hands
//! each to the request waiting for it. Callers only encode, queue and wait, so
//! a caller that is cancelled (its future dropped) can never leave half a frame
//! on the wire.
//!
//! Kafka answers the requests on one connection in the order it received them
//! ([protocol guide], "Network"), so the reader expects the oldest request in
//! flight to be answered next. Anything else (an unknown correlation id, a
//! lost answer, a framing or decode failure, an I/O error) means the stream
//! can no longer be trusted: the connection *poisons* itself, every waiting
//! request gets the same error, and later requests fail fast with
//! [`NetError::Closed`]. The owner reconnects.
//!
//! [protocol guide]: https://kafka.apache.org/protocol.html#protocol_network

use std::collections::VecDeque;
use std::fmt;
use std::mem;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::ApiKey;
use kafka_protocol::protocol::{Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};

use super::frame::{
    api_key, decode_response, encode_request, frame_len, peek_correlation_id, try_split_frame,
    SIZE_PREFIX,
};
use super::frame_memory::FrameMemory;
use super::socket::SocketOptions;
use super::splice::{RequestFrame, Splices};
use super::versions::{self, NegotiatedVersions};
use super::NetError;
use crate::sync::lock;

/// Encoded frames queued for the writer. Bounded so that callers feel
/// backpressure when the socket is slower than they are.
const WRITE_QUEUE_FRAMES: usize = 32;

/// How much room the reader makes before each read when the size of the next
/// frame is not known yet.
const READ_CHUNK: usize = 64 * 1024;

/// How connections are opened and how long they wait.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionOptions {
    /// Sent in every request header; brokers log it and apply quotas by it.
    pub client_id: String,
    /// TCP options for the connections a [`Connector`](super::Connector) opens.
    pub socket: SocketOptions,
    /// Largest response frame accepted, excluding the 4-byte size prefix. Must
    /// exceed the largest fetch response asked for (`max_bytes`, plus one
    /// batch that may overshoot it, plus headers). A bigger frame poisons the
    /// connection without being allocated.
    pub max_frame_bytes: usize,
    /// How long a request may wait for its response, queueing included. Must
    /// exceed the `max_wait_ms` of any fetch, which the broker may hold that
    /// long before answering.
    pub request_timeout: Duration,
    /// Where large response frames are read into and counted; share one per
    /// cluster, so its [`FrameMemory::live_bytes`] is what that cluster's
    /// responses hold.
    pub frame_memory: FrameMemory,
}

impl Default for ConnectionOptions {
    fn default() -> Self {
        Self {
            client_id: "kafka-mirror".to_owned(),
            socket: SocketOptions::default(),
            // The broker's default `socket.request.max.bytes` is 100 MiB; a
            // further MiB covers response headers around the record data.
            max_frame_bytes: 101 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            frame_memory: FrameMemory::default(),
        }
    }
}

/// A handle to a connection to one broker. Cheap to clone; the connection
/// closes when the last handle is dropped.
///
/// Several requests may be in flight at once (pipelining); each `send` waits
/// only for its own response.
#[derive(Clone)]
pub struct Connection {
    inner: Arc<Inner>,
}

/// What the handles share. Its drop is what closes the connection.
struct Inner {
    shared: Arc<Shared>,
    /// The writer task's queue of encoded frames.
    frames: mpsc::Sender<RequestFrame>,
    client_id: StrBytes,
    request_timeout: Duration,
    /// Next correlation id; `fetch_add` wraps at `i32::MAX`, which Kafka allows.
    next_correlation_id: AtomicI32,
    /// Set once the `ApiVersions` handshake is done.
    versions: OnceLock<NegotiatedVersions>,
    /// How long that handshake took: a round trip with no data and no waiting.
    round_trip: OnceLock<Duration>,
    /// When the broker will end an authenticated session (KIP-368), less a
    /// margin; the owner opens a new connection instead from then on.
    expires_at: OnceLock<tokio::time::Instant>,
}

/// What the handles and the two tasks share.
struct Shared {
    /// Names the connection in errors and logs.
    label: String,
    /// Never held across code that can panic halfway through an update, so
    /// a poisoned lock still guards a consistent state.
    state: Mutex<State>,
    /// Flipped to `true` to stop both tasks: on poisoning, or when the last
    /// handle is dropped. The tasks drop their halves of the stream, which
    /// closes the socket.
    close: watch::Sender<bool>,
}

enum State {
    /// Requests written (or queued to be written), oldest first: the order in
    /// which the broker will answer them.
    Open { in_flight: VecDeque<InFlight> },
    /// The first failure; the connection takes no more requests.
    Poisoned(Arc<NetError>),
}

struct InFlight {
    correlation_id: i32,
    /// Dropped without a value when the connection is poisoned. If the caller
    /// was cancelled the receiver is gone, and its answer is discarded.
    respond: oneshot::Sender<Bytes>,
}

impl Connection {
    /// Runs a connection over an already connected stream (plain TCP, TLS,
    /// anything that reads and writes bytes) and negotiates API versions.
    pub async fn from_stream<S>(
        stream: S,
        options: &ConnectionOptions,
        label: String,
    ) -> Result<Self, NetError>
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let connection = Self::start(stream, options, label);
        let started = tokio::time::Instant::now();
        let negotiated = versions::negotiate(&connection).await?;
        connection
            .inner
            .round_trip
            .get_or_init(|| started.elapsed());
        connection.inner.versions.get_or_init(|| negotiated);
        Ok(connection)
    }

    /// Spawns the reader and writer tasks, without the version handshake.
    fn start<S>(stream: S, options: &ConnectionOptions, label: String) -> Self
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (close, _) = watch::channel(false);
        let shared = Arc::new(Shared {
            label,
            state: Mutex::new(State::Open {
                in_flight: VecDeque::new(),
            }),
            close,
        });
        let (reader, writer) = tokio::io::split(stream);
        let (frames, queued) = mpsc::channel(WRITE_QUEUE_FRAMES);
        tokio::spawn(read_loop(
            Arc::clone(&shared),
            reader,
            options.max_frame_bytes,
            options.frame_memory.clone(),
        ));
        tokio::spawn(write_loop(Arc::clone(&shared), writer, queued));
        Self {
            inner: Arc::new(Inner {
                shared,
                frames,
                client_id: StrBytes::from_string(options.client_id.clone()),
                request_timeout: options.request_timeout,
                next_correlation_id: AtomicI32::new(0),
                versions: OnceLock::new(),
                round_trip: OnceLock::new(),
                expires_at: OnceLock::new(),
            }),
        }
    }

    /// Sends `request` at the highest version both we and the broker support,
    /// and waits for its response.
    ///
    /// Every request must get a response: a `Produce` with `acks=0` gets none
    /// from the broker, so it would time out and poison the connection.
    /// kafka-mirror always produces with `acks=all`.
    pub async fn send<R: Request>(&self, request: R) -> Result<R::Response, NetError> {
        let version = self.request_version::<R>()?;
        self.send_versioned(request, version).await
    }

    /// Sends `request` at an explicit `version`, for callers that must pin or
    /// cap a version (for example, to keep naming topics by name rather than by
    /// id). The broker must support it; see [`Connection::api_version`].
    pub async fn send_versioned<R: Request>(
        &self,
        request: R,
        version: i16,
    ) -> Result<R::Response, NetError> {
        let frame = self.exchange(&request, version).await?;
        self.decode::<R>(frame, version)
    }

    /// The version [`Connection::send`] uses for `api`: the highest that both
    /// the broker and `kafka-protocol` support. `None` if there is none.
    pub fn api_version(&self, api: ApiKey) -> Option<i16> {
        self.inner.versions.get()?.version(api)
    }

    /// The round trip of the version handshake, which the broker answers at
    /// once: the network's share of every request's time.
    pub fn round_trip(&self) -> Option<Duration> {
        self.inner.round_trip.get().copied()
    }

    /// Whether the connection has failed and takes no more requests.
    pub fn is_closed(&self) -> bool {
        matches!(*lock(&self.inner.shared.state), State::Poisoned(_))
    }

    /// Marks the connection as due for replacement after `lifetime`: the
    /// broker closes an authenticated session when its lifetime ends.
    pub fn expire_after(&self, lifetime: Duration) {
        let _ = self
            .inner
            .expires_at
            .set(tokio::time::Instant::now() + lifetime);
    }

    /// Whether the session lifetime set by [`Connection::expire_after`] has
    /// passed: requests already sent finish, new ones belong on a new connection.
    pub fn is_expired(&self) -> bool {
        self.inner
            .expires_at
            .get()
            .is_some_and(|at| tokio::time::Instant::now() >= *at)
    }

    /// The connection's name in errors and logs.
    pub fn label(&self) -> &str {
        &self.inner.shared.label
    }

    /// The version [`Connection::send`] sends `R` at: the highest that the
    /// broker supports and `kafka-protocol` can encode for `R`. That can be
    /// below [`Connection::api_version`]: for a few APIs the crate decodes a
    /// newer response than it encodes a request (OffsetFetch and OffsetCommit
    /// v10, InitProducerId v6). Callers whose request fields moved between
    /// versions build the request for this one.
    pub fn request_version<R: Request>(&self) -> Result<i16, NetError> {
        self.request_version_at_most::<R>(None)
    }

    /// [`Connection::request_version`], at most `cap` when one is given: for
    /// a caller whose use of an API stops at a version (a transactional
    /// producer of transaction version 1 sends Produce at most v11).
    pub fn request_version_at_most<R: Request>(&self, cap: Option<i16>) -> Result<i16, NetError> {
        let api = api_key::<R>();
        let mut ours = api.valid_versions().intersect(&R::VERSIONS);
        if let Some(cap) = cap {
            ours.max = ours.max.min(cap);
        }
        let versions = self.inner.versions.get();
        versions
            .and_then(|versions| versions.version_within(api, ours))
            .ok_or_else(|| NetError::UnsupportedApi {
                label: self.label().to_owned(),
                api,
                broker: versions.and_then(|versions| versions.broker_range(api)),
                ours,
            })
    }

    /// Encodes, queues and awaits one request, returning the raw response
    /// frame. The request timeout covers queueing too: a writer stuck on a
    /// stalled socket is as fatal as a broker that does not answer.
    pub(super) async fn exchange<R: Request>(
        &self,
        request: &R,
        version: i16,
    ) -> Result<Bytes, NetError> {
        self.queue(request, version, &Splices::default())
            .await?
            .frame()
            .await
    }

    /// Puts a request on the wire queue and returns without waiting for the
    /// answer. Requests queued one after another by the same caller reach
    /// the broker in that order, which a caller that pipelines ordered data
    /// (Produce with sequences) needs: spawned `send` calls give no such
    /// guarantee, since tasks may run in any order.
    pub async fn enqueue<R: Request>(&self, request: R) -> Result<PendingResponse<R>, NetError> {
        self.enqueue_spliced(request, Splices::default()).await
    }

    /// [`Connection::enqueue`] for a request whose frame carries `splices`
    /// (record batches sent by reference, with rewritten headers).
    pub async fn enqueue_spliced<R: Request>(
        &self,
        request: R,
        splices: Splices,
    ) -> Result<PendingResponse<R>, NetError> {
        let version = self.request_version::<R>()?;
        self.enqueue_versioned(request, version, splices).await
    }

    /// [`Connection::enqueue_spliced`] at an explicit `version`, which the
    /// broker must support (see [`Connection::request_version_at_most`]).
    pub async fn enqueue_versioned<R: Request>(
        &self,
        request: R,
        version: i16,
        splices: Splices,
    ) -> Result<PendingResponse<R>, NetError> {
        let queued = self.queue(&request, version, &splices).await?;
        Ok(PendingResponse {
            queued,
            version,
            request: std::marker::PhantomData,
        })
    }

    async fn queue<R: Request>(
        &self,
        request: &R,
        version: i16,
        splices: &Splices,
    ) -> Result<Queued, NetError> {
        let inner = &self.inner;
        inner.shared.check_open()?;
        let correlation_id = inner.next_correlation_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_request(
            correlation_id,
            Some(&inner.client_id),
            version,
            request,
            splices,
        )?;
        let deadline = tokio::time::Instant::now() + inner.request_timeout;
        let timeout = || {
            let err = NetError::Timeout {
                label: self.label().to_owned(),
                api: api_key::<R>(),
                correlation_id,
                timeout: inner.request_timeout,
            };
            inner.shared.poison(err.clone());
            err
        };
        let permit = match tokio::time::timeout_at(deadline, inner.frames.reserve()).await {
            Ok(permit) => permit.map_err(|_| inner.shared.failure())?,
            Err(_elapsed) => return Err(timeout()),
        };
        let response = inner.shared.register(correlation_id, permit, frame)?;
        Ok(Queued {
            connection: self.clone(),
            response,
            deadline,
            correlation_id,
            api: api_key::<R>(),
        })
    }

    /// Decodes a response frame; a frame that does not decode poisons the
    /// connection, since it means we and the broker disagree on the protocol.
    pub(super) fn decode<R: Request>(
        &self,
        frame: Bytes,
        version: i16,
    ) -> Result<R::Response, NetError> {
        match decode_response::<R>(frame, version) {
            Ok((_correlation_id, response)) => Ok(response),
            Err(err) => {
                self.inner.shared.poison(err.clone());
                Err(err)
            }
        }
    }
}

impl fmt::Debug for Connection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connection")
            .field("label", &self.label())
            .field("closed", &self.is_closed())
            .finish_non_exhaustive()
    }
}

/// A request on its way to the broker, from [`Connection::enqueue`]; await
/// [`PendingResponse::response`] for its answer. Dropping it discards the answer.
pub struct PendingResponse<R: Request> {
    queued: Queued,
    version: i16,
    request: std::marker::PhantomData<fn() -> R>,
}

impl<R: Request> PendingResponse<R> {
    /// Waits for the answer, within the connection's request timeout counted
    /// from when the request was queued.
    pub async fn response(self) -> Result<R::Response, NetError> {
        let connection = self.queued.connection.clone();
        let frame = self.queued.frame().await?;
        connection.decode::<R>(frame, self.version)
    }
}

impl<R: Request> fmt::Debug for PendingResponse<R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PendingResponse")
            .field("connection", &self.queued.connection.label())
            .field("correlation_id", &self.queued.correlation_id)
            .finish_non_exhaustive()
    }
}

/// A registered request: the receiver of its response frame and its deadline.
struct Queued {
    connection: Connection,
    response: oneshot::Receiver<Bytes>,
    deadline: tokio::time::Instant,
    correlation_id: i32,
    api: ApiKey,
}

impl Queued {
    async fn frame(self) -> Result<Bytes, NetError> {
        let shared = &self.connection.inner.shared;
        match tokio::time::timeout_at(self.deadline, self.response).await {
            Ok(frame) => frame.map_err(|_| shared.failure()),
            Err(_elapsed) => {
                let err = NetError::Timeout {
                    label: shared.label.clone(),
                    api: self.api,
                    correlation_id: self.correlation_id,
                    timeout: self.connection.inner.request_timeout,
                };
                shared.poison(err.clone());
                Err(err)
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.shared.close.send_replace(true);
    }
}

impl Shared {
    /// Fails fast if the connection is already poisoned.
    fn check_open(&self) -> Result<(), NetError> {
        match &*lock(&self.state) {
            State::Open { .. } => Ok(()),
            State::Poisoned(cause) => Err(self.closed(Some(Arc::clone(cause)))),
        }
    }

    fn closed(&self, cause: Option<Arc<NetError>>) -> NetError {
        NetError::Closed {
            label: self.label.clone(),
            cause,
        }
    }

    /// The error for a request that was waiting when the connection failed:
    /// the failure itself, so that every waiter sees the same error.
    fn failure(&self) -> NetError {
        match &*lock(&self.state) {
            State::Poisoned(cause) => NetError::clone(cause),
            // The tasks are gone without poisoning: the runtime is shutting down.
            State::Open { .. } => self.closed(None),
        }
    }

    /// Records the request as in flight and queues its frame, under one lock
    /// so that the queue order is the order the reader expects answers in.
    fn register(
        &self,
        correlation_id: i32,
        permit: mpsc::Permit<'_, RequestFrame>,
        frame: RequestFrame,
    ) -> Result<oneshot::Receiver<Bytes>, NetError> {
        let mut state = lock(&self.state);
        match &mut *state {
            State::Poisoned(cause) => Err(self.closed(Some(Arc::clone(cause)))),
            State::Open { in_flight } => {
                let (respond, response) = oneshot::channel();
                in_flight.push_back(InFlight {
                    correlation_id,
                    respond,
                });
                permit.send(frame);
                Ok(response)
            }
        }
    }

    /// Hands a response frame to the oldest request in flight, which must be
    /// the one it answers.
    fn deliver(&self, frame: Bytes) -> Result<(), NetError> {
        let Some(correlation_id) = peek_correlation_id(&frame) else {
            return Err(NetError::ShortFrame {
                label: self.label.clone(),
                size: frame.len(),
            });
        };
        let mut state = lock(&self.state);
        let State::Open { in_flight } = &mut *state else {
            // Poisoned meanwhile; the reader is about to be told to stop.
            return Ok(());
        };
        let oldest = in_flight.front().map(|oldest| oldest.correlation_id);
        if oldest != Some(correlation_id) {
            return Err(NetError::UnexpectedResponse {
                label: self.label.clone(),
                correlation_id,
                expected: oldest,
            });
        }
        if let Some(answered) = in_flight.pop_front() {
            drop(state);
            // Fails only if the caller was cancelled: nobody wants the
            // answer, and the stream stays in step.
            let _ = answered.respond.send(frame);
        }
        Ok(())
    }

    /// Marks the connection failed (the first failure wins), wakes every
    /// waiting request and stops both tasks.
    fn poison(&self, err: NetError) {
        let cause = Arc::new(err);
        let waiting = {
            let mut state = lock(&self.state);
            if let State::Poisoned(_) = *state {
                return;
            }
            match mem::replace(&mut *state, State::Poisoned(Arc::clone(&cause))) {
                State::Open { in_flight } => in_flight,
                State::Poisoned(_) => VecDeque::new(),
            }
        };
        let error = error_chain(&*cause);
        if waiting.is_empty() {
            tracing::debug!(connection = %self.label, %error, "connection closed");
        } else {
            tracing::warn!(
                connection = %self.label,
                %error,
                in_flight = waiting.len(),
                "connection failed"
            );
        }
        self.close.send_replace(true);
        // Dropping the senders wakes the waiters, who then read the cause.
        drop(waiting);
    }
}

/// An error and its sources on one line, for logs: `NetError`'s own message
/// leaves the cause (the socket error, the codec's complaint) to `source()`.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut line = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        line.push_str(": ");
        line.push_str(&cause.to_string());
        source = cause.source();
    }
    line
}

/// Reads response frames and delivers them until the stream fails or the
/// connection is closed.
///
/// Frames of `READ_CHUNK` bytes or more are read straight into a buffer of
/// their own from `memory`, which counts them while any slice of them lives
/// and reuses their buffers; smaller ones are split off the read buffer.
async fn read_loop<R: AsyncRead + Unpin>(
    shared: Arc<Shared>,
    mut reader: R,
    max_frame_bytes: usize,
    memory: FrameMemory,
) {
    let mut closed = shared.close.subscribe();
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let failure = loop {
        let next = match frame_len(&buf, max_frame_bytes) {
            Ok(Some(len)) if len >= READ_CHUNK && buf.len() < SIZE_PREFIX + len => {
                let read = tokio::select! {
                    biased;
                    _ = closed.wait_for(|closed| *closed) => return,
                    read = read_large_frame(&mut reader, &mut buf, len, &memory, &shared.label) => read,
                };
                read.map(Some)
            }
            Ok(_) => try_split_frame(&mut buf, max_frame_bytes),
            Err(err) => Err(err),
        };
        match next {
            Ok(Some(frame)) => match shared.deliver(frame) {
                Ok(()) => continue,
                Err(err) => break err,
            },
            Ok(None) => {}
            Err(err) => break err,
        }
        if buf.capacity() == buf.len() {
            buf.reserve(READ_CHUNK);
        }
        let read = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => return,
            read = reader.read_buf(&mut buf) => read,
        };
        match read {
            Ok(0) => {
                break NetError::PeerClosed {
                    label: shared.label.clone(),
                    buffered_bytes: buf.len(),
                }
            }
            Ok(_) => {}
            Err(err) => {
                break NetError::Io {
                    label: shared.label.clone(),
                    source: Arc::new(err),
                }
            }
        }
    };
    shared.poison(failure);
}

/// Reads the frame of `len` bytes whose size prefix is at the front of `buf`
/// into a buffer of its own: the bytes already buffered are moved over (at
/// most one read's worth), the rest is read straight into it.
async fn read_large_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    len: usize,
    memory: &FrameMemory,
    label: &str,
) -> Result<Bytes, NetError> {
    buf.advance(SIZE_PREFIX);
    let mut frame = memory.buffer(len);
    let bytes = frame.bytes_mut();
    bytes.extend_from_slice(&buf.split_to(buf.len().min(len)));
    while bytes.len() < len {
        let want = len - bytes.len();
        match reader.read_buf(&mut (&mut *bytes).limit(want)).await {
            Ok(0) => {
                return Err(NetError::PeerClosed {
                    label: label.to_owned(),
                    buffered_bytes: SIZE_PREFIX + bytes.len(),
                })
            }
            Ok(_) => {}
            Err(err) => {
                return Err(NetError::Io {
                    label: label.to_owned(),
                    source: Arc::new(err),
                })
            }
        }
    }
    Ok(frame.freeze())
}

/// Writes queued frames, each in full, until the stream fails or the
/// connection is closed. Only closing interrupts a write, and then the stream
/// is discarded anyway.
async fn write_loop<W: AsyncWrite + Unpin>(
    shared: Arc<Shared>,
    mut writer: W,
    mut queued: mpsc::Receiver<RequestFrame>,
) {
    let mut closed = shared.close.subscribe();
    loop {
        let mut frame = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => return,
            frame = queued.recv() => match frame {
                Some(frame) => frame,
                None => return,
            },
        };
        let written = tokio::select! {
            biased;
            _ = closed.wait_for(|closed| *closed) => return,
            written = write_frame(&mut writer, &mut frame) => written,
        };
        if let Err(err) = written {
            shared.poison(NetError::Io {
                label: shared.label.clone(),
                source: Arc::new(err),
            });
            return;
        }
    }
}

/// Writes a frame's segments with vectored writes (`writev` on TCP).
async fn write_frame<W: AsyncWrite + Unpin>(
    writer: &mut W,
    frame: &mut RequestFrame,
) -> std::io::Result<()> {
    writer.write_all_buf(frame).await?;
    // A no-op for TCP; TLS streams need it to push the record out.
    writer.flush().await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::test_peer::{Peer, Received};
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::metadata_response::MetadataResponseTopic;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::Decodable;

    /// Metadata v12: a flexible version, so headers carry tagged fields.
    const METADATA_VERSION: i16 = 12;

    fn options() -> ConnectionOptions {
        ConnectionOptions {
            request_timeout: Duration::from_secs(5),
            max_frame_bytes: 1024 * 1024,
            ..ConnectionOptions::default()
        }
    }

    fn start(options: &ConnectionOptions) -> (Connection, Peer) {
        let (stream, peer) = Peer::pair();
        (
            Connection::start(stream, options, "test broker".to_owned()),
            peer,
        )
    }

    fn metadata_for(topic: &str) -> MetadataRequest {
        let name = TopicName(StrBytes::from_string(topic.to_owned()));
        MetadataRequest::default().with_topics(Some(vec![
            MetadataRequestTopic::default().with_name(Some(name))
        ]))
    }

    fn requested_topic(request: &Received) -> String {
        let decoded = MetadataRequest::decode(&mut request.body.clone(), METADATA_VERSION).unwrap();
        let topics = decoded.topics.unwrap();
        topics[0].name.as_ref().unwrap().0.to_string()
    }

    fn answered_topic(response: &MetadataResponse) -> String {
        response.topics[0].name.as_ref().unwrap().0.to_string()
    }

    /// Answers a metadata request with a response naming the same topic, so
    /// each caller can tell whether it got its own answer.
    async fn echo(peer: &mut Peer, request: &Received) {
        let name = TopicName(StrBytes::from_string(requested_topic(request)));
        let response = MetadataResponse::default()
            .with_topics(vec![MetadataResponseTopic::default().with_name(Some(name))]);
        peer.respond(
            ApiKey::Metadata,
            METADATA_VERSION,
            request.header.correlation_id,
            &response,
        )
        .await;
    }

    fn spawn_metadata(
        connection: &Connection,
        topic: &str,
    ) -> tokio::task::JoinHandle<Result<MetadataResponse, NetError>> {
        let connection = connection.clone();
        let request = metadata_for(topic);
        tokio::spawn(async move { connection.send_versioned(request, METADATA_VERSION).await })
    }

    #[test]
    fn logged_errors_carry_their_cause() {
        let err = NetError::Io {
            label: "broker 1".to_owned(),
            source: Arc::new(std::io::Error::other("connection reset")),
        };
        assert_eq!(
            error_chain(&err),
            "I/O error on the connection to broker 1: connection reset"
        );
    }

    #[tokio::test]
    async fn pipelined_requests_each_get_their_own_response() {
        let (connection, mut peer) = start(&options());
        let topics = ["a", "b", "c"];
        let calls = topics.map(|topic| spawn_metadata(&connection, topic));

        // All three reach the broker before any is answered.
        let mut received = Vec::new();
        for _ in topics {
            received.push(peer.read_request().await);
        }
        for request in &received {
            assert_eq!(request.header.client_id.as_deref(), Some("kafka-mirror"));
            echo(&mut peer, request).await;
        }
        for (call, topic) in calls.into_iter().zip(topics) {
            assert_eq!(answered_topic(&call.await.unwrap().unwrap()), topic);
        }
        assert!(!connection.is_closed());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn many_concurrent_callers_across_threads() {
        let (connection, mut peer) = start(&options());
        let topics: Vec<String> = (0..200).map(|i| format!("topic-{i}")).collect();
        let calls: Vec<_> = topics
            .iter()
            .map(|topic| spawn_metadata(&connection, topic))
            .collect();
        let broker = tokio::spawn(async move {
            for _ in 0..200 {
                let request = peer.read_request().await;
                echo(&mut peer, &request).await;
            }
            peer
        });
        for (call, topic) in calls.into_iter().zip(&topics) {
            assert_eq!(&answered_topic(&call.await.unwrap().unwrap()), topic);
        }
        // Keep the broker's end open: dropping it would close the connection.
        let _peer = broker.await.unwrap();
        assert!(!connection.is_closed());
    }

    #[tokio::test]
    async fn correlation_ids_wrap_around() {
        let (connection, mut peer) = start(&options());
        connection
            .inner
            .next_correlation_id
            .store(i32::MAX - 1, Ordering::Relaxed);
        for expected in [i32::MAX - 1, i32::MAX, i32::MIN] {
            let call = spawn_metadata(&connection, "t");
            let request = peer.read_request().await;
            assert_eq!(request.header.correlation_id, expected);
            echo(&mut peer, &request).await;
            call.await.unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn unknown_correlation_id_poisons() {
        let (connection, mut peer) = start(&options());
        let call = spawn_metadata(&connection, "a");
        let request = peer.read_request().await;
        let sent = request.header.correlation_id;
        let stray = sent.wrapping_add(100);
        peer.respond(
            ApiKey::Metadata,
            METADATA_VERSION,
            stray,
            &MetadataResponse::default(),
        )
        .await;

        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, NetError::UnexpectedResponse { correlation_id, expected: Some(expected), .. }
                if correlation_id == stray && expected == sent),
            "{err:?}"
        );
        let later = connection
            .send_versioned(metadata_for("b"), METADATA_VERSION)
            .await
            .unwrap_err();
        assert!(
            matches!(&later, NetError::Closed { cause: Some(cause), .. }
                if matches!(**cause, NetError::UnexpectedResponse { .. })),
            "{later:?}"
        );
        // Poisoning closes the socket.
        peer.expect_eof().await;
    }

    #[tokio::test]
    async fn response_with_nothing_in_flight_poisons() {
        let (connection, mut peer) = start(&options());
        peer.respond(
            ApiKey::Metadata,
            METADATA_VERSION,
            0,
            &MetadataResponse::default(),
        )
        .await;
        peer.expect_eof().await;
        let err = connection
            .send_versioned(metadata_for("a"), METADATA_VERSION)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, NetError::Closed { cause: Some(cause), .. }
                if matches!(**cause, NetError::UnexpectedResponse { expected: None, .. })),
            "{err:?}"
        );
    }

    /// A Metadata response of about 200 KiB: a "large" frame for the reader.
    fn large_metadata_response(correlation_id: i32) -> Vec<u8> {
        let topics = (0..4000)
            .map(|i| {
                MetadataResponseTopic::default().with_name(Some(TopicName(StrBytes::from_string(
                    format!("a-topic-with-a-long-name-{i:08}"),
                ))))
            })
            .collect();
        crate::net::test_peer::response_frame(
            ApiKey::Metadata,
            METADATA_VERSION,
            correlation_id,
            &MetadataResponse::default().with_topics(topics),
        )
    }

    /// A connection whose Metadata request the peer has read, and the large
    /// frame that answers it.
    struct AwaitingLargeFrame {
        connection: Connection,
        peer: Peer,
        memory: FrameMemory,
        pending: tokio::task::JoinHandle<Result<MetadataResponse, NetError>>,
        frame: Vec<u8>,
    }

    async fn awaiting_large_frame() -> AwaitingLargeFrame {
        let options = options();
        let memory = options.frame_memory.clone();
        let (connection, mut peer) = start(&options);
        let pending = spawn_metadata(&connection, "a");
        let request = peer.read_request().await;
        let frame = large_metadata_response(request.header.correlation_id);
        AwaitingLargeFrame {
            connection,
            peer,
            memory,
            pending,
            frame,
        }
    }

    #[tokio::test]
    async fn a_large_frame_read_in_pieces_is_counted_while_referenced() {
        let mut exchange = awaiting_large_frame().await;
        let frame = &exchange.frame;
        assert!(frame.len() > 3 * READ_CHUNK);
        for piece in frame.chunks(frame.len() / 3 + 1) {
            exchange.peer.write(piece).await;
            tokio::task::yield_now().await;
        }
        let response = exchange.pending.await.unwrap().unwrap();
        assert_eq!(response.topics.len(), 4000);
        assert_eq!(
            response.topics[3999].name.as_ref().map(|n| n.0.as_str()),
            Some("a-topic-with-a-long-name-00003999")
        );
        // The decoded names are slices of the frame: it is still counted.
        assert_eq!(exchange.memory.live_bytes(), frame.len() - 4);
        drop(response);
        assert_eq!(exchange.memory.live_bytes(), 0);
        assert!(!exchange.connection.is_closed());
    }

    #[tokio::test]
    async fn eof_inside_a_large_frame_fails_and_releases_its_memory() {
        let mut exchange = awaiting_large_frame().await;
        let half = exchange.frame.len() / 2;
        exchange.peer.write(&exchange.frame[..half]).await;
        drop(exchange.peer);
        let err = exchange.pending.await.unwrap().unwrap_err();
        assert!(
            matches!(err, NetError::PeerClosed { buffered_bytes, .. } if buffered_bytes == half),
            "{err:?}"
        );
        assert_eq!(exchange.memory.live_bytes(), 0);
        assert!(exchange.connection.is_closed());
    }

    #[tokio::test]
    async fn partial_frame_then_eof_fails_every_waiter_and_later_calls_fast() {
        let (connection, mut peer) = start(&options());
        let first = spawn_metadata(&connection, "a");
        let request = peer.read_request().await;
        let second = spawn_metadata(&connection, "b");
        peer.read_request().await;

        let response = crate::net::test_peer::response_frame(
            ApiKey::Metadata,
            METADATA_VERSION,
            request.header.correlation_id,
            &MetadataResponse::default(),
        );
        peer.write(&response[..6]).await;
        drop(peer);

        let first = first.await.unwrap().unwrap_err();
        let second = second.await.unwrap().unwrap_err();
        for err in [&first, &second] {
            assert!(
                matches!(
                    err,
                    NetError::PeerClosed {
                        buffered_bytes: 6,
                        ..
                    }
                ),
                "{err:?}"
            );
            assert!(err.is_retriable());
        }
        assert_eq!(first.to_string(), second.to_string());
        assert!(connection.is_closed());

        let later = tokio::time::timeout(
            Duration::from_millis(100),
            connection.send_versioned(metadata_for("c"), METADATA_VERSION),
        )
        .await
        .expect("a closed connection fails fast")
        .unwrap_err();
        assert!(
            matches!(&later, NetError::Closed { cause: Some(cause), .. }
                if matches!(**cause, NetError::PeerClosed { .. })),
            "{later:?}"
        );
        assert!(later.is_retriable());
        assert!(later.to_string().contains("test broker"));
    }

    #[tokio::test]
    async fn stalled_peer_times_out_and_poisons() {
        let options = ConnectionOptions {
            request_timeout: Duration::from_millis(100),
            ..options()
        };
        let (connection, mut peer) = start(&options);
        let first = spawn_metadata(&connection, "a");
        let stalled = peer.read_request().await;
        let second = spawn_metadata(&connection, "b");
        peer.read_request().await;

        let err = first.await.unwrap().unwrap_err();
        assert!(
            matches!(err, NetError::Timeout { api: ApiKey::Metadata, correlation_id, .. }
                if correlation_id == stalled.header.correlation_id),
            "{err:?}"
        );
        assert!(err.is_retriable());
        // The second request is behind the lost answer: it fails too, with
        // the first timeout or its own.
        let err = second.await.unwrap().unwrap_err();
        assert!(matches!(err, NetError::Timeout { .. }), "{err:?}");
        assert!(connection.is_closed());
        peer.expect_eof().await;
    }

    #[tokio::test]
    async fn oversize_frame_is_refused_and_poisons() {
        let options = ConnectionOptions {
            max_frame_bytes: 1024,
            ..options()
        };
        let (connection, mut peer) = start(&options);
        let call = spawn_metadata(&connection, "a");
        peer.read_request().await;
        peer.write(&i32::MAX.to_be_bytes()).await;

        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                NetError::FrameTooLarge {
                    size: i32::MAX,
                    max: 1024
                }
            ),
            "{err:?}"
        );
        let later = connection
            .send_versioned(metadata_for("b"), METADATA_VERSION)
            .await
            .unwrap_err();
        assert!(!later.is_retriable(), "{later:?}");
    }

    #[tokio::test]
    async fn frame_too_short_for_a_header_poisons() {
        let (connection, mut peer) = start(&options());
        let call = spawn_metadata(&connection, "a");
        peer.read_request().await;
        peer.write(&[0, 0, 0, 2, 0, 0]).await;
        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(err, NetError::ShortFrame { size: 2, .. }),
            "{err:?}"
        );
        assert!(connection.is_closed());
    }

    #[tokio::test]
    async fn undecodable_response_poisons() {
        let (connection, mut peer) = start(&options());
        let call = spawn_metadata(&connection, "a");
        let request = peer.read_request().await;
        // A well-framed response whose body is cut short.
        let mut frame = 6_u32.to_be_bytes().to_vec();
        frame.extend_from_slice(&request.header.correlation_id.to_be_bytes());
        frame.extend_from_slice(&[0, 0]);
        peer.write(&frame).await;

        let err = call.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                NetError::Decode {
                    api: ApiKey::Metadata,
                    version: METADATA_VERSION,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(connection.is_closed());
    }

    #[tokio::test]
    async fn cancelled_caller_does_not_desync_the_next_request() {
        let (connection, mut peer) = start(&options());
        let cancelled = connection.send_versioned(metadata_for("cancelled"), METADATA_VERSION);
        // Drive the request until the broker has it, then drop the caller.
        let abandoned = tokio::select! {
            _ = cancelled => panic!("answered before the broker responded"),
            request = peer.read_request() => request,
        };
        let next = spawn_metadata(&connection, "next");
        let request = peer.read_request().await;
        echo(&mut peer, &abandoned).await;
        echo(&mut peer, &request).await;

        assert_eq!(answered_topic(&next.await.unwrap().unwrap()), "next");
        assert!(!connection.is_closed());
    }

    #[tokio::test]
    async fn dropping_the_last_handle_closes_the_socket() {
        let (connection, mut peer) = start(&options());
        let clone = connection.clone();
        drop(connection);
        let call = spawn_metadata(&clone, "still open");
        let request = peer.read_request().await;
        echo(&mut peer, &request).await;
        call.await.unwrap().unwrap();
        drop(clone);
        peer.expect_eof().await;
    }

    #[tokio::test]
    async fn connect_negotiates_over_tcp() {
        use kafka_protocol::messages::api_versions_response::ApiVersion;
        use kafka_protocol::messages::ApiVersionsResponse;

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = BytesMut::new();
            let mut frame = loop {
                if let Some(frame) = try_split_frame(&mut buf, 1 << 20).unwrap() {
                    break frame;
                }
                assert_ne!(socket.read_buf(&mut buf).await.unwrap(), 0);
            };
            let header =
                kafka_protocol::protocol::decode_request_header_from_buffer(&mut frame).unwrap();
            let response =
                ApiVersionsResponse::default().with_api_keys(vec![ApiVersion::default()
                    .with_api_key(ApiKey::Metadata as i16)
                    .with_min_version(0)
                    .with_max_version(12)]);
            let frame = crate::net::test_peer::response_frame(
                ApiKey::ApiVersions,
                header.request_api_version,
                header.correlation_id,
                &response,
            );
            socket.write_all(&frame).await.unwrap();
            socket
        });

        let connection = crate::net::Connector::plain(options())
            .connect(&addr)
            .await
            .unwrap();
        assert_eq!(connection.label(), addr);
        assert_eq!(connection.api_version(ApiKey::Metadata), Some(12));
        drop(broker.await.unwrap());
    }
}
