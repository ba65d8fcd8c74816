//! TCP connect with the socket options a cross-region replicator needs.
//!
//! Mirroring between regions is a long fat pipe: throughput per connection is
//! bounded by window / RTT. The kernel's autotuning usually does best, so the
//! buffer sizes default to `None` (on Linux, setting `SO_RCVBUF` switches
//! autotuning off for that socket). When they are set, they are set *before*
//! `connect`, because the TCP window scale is agreed in the SYN handshake and
//! cannot grow later to cover a bigger buffer.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, TcpKeepalive, Type};
use tokio::net::{TcpSocket, TcpStream};

use super::NetError;

/// How to open a TCP connection to a broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketOptions {
    /// Disable Nagle's algorithm. Kafka requests are written whole, so
    /// batching small writes only adds latency to small requests.
    pub nodelay: bool,
    /// `SO_SNDBUF` in bytes; `None` leaves the OS default and autotuning.
    pub send_buffer_bytes: Option<usize>,
    /// `SO_RCVBUF` in bytes; `None` leaves the OS default and autotuning.
    /// Set it for high bandwidth-delay paths where autotuning's ceiling
    /// (`net.ipv4.tcp_rmem`) is too low.
    pub recv_buffer_bytes: Option<usize>,
    /// Idle time before TCP keepalive probes start; `None` disables them.
    /// Catches peers that vanished without a FIN (NAT or firewall timeouts).
    pub keepalive: Option<Duration>,
    /// Upper bound on resolving the name and completing the TCP handshake.
    pub connect_timeout: Duration,
}

impl Default for SocketOptions {
    fn default() -> Self {
        Self {
            nodelay: true,
            send_buffer_bytes: None,
            recv_buffer_bytes: None,
            keepalive: Some(Duration::from_secs(60)),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// Resolves `addr` (`host:port`) and connects to the first address that
/// accepts, with `opts` applied, all within `opts.connect_timeout`.
pub async fn connect_tcp(addr: &str, opts: &SocketOptions) -> Result<TcpStream, NetError> {
    tokio::time::timeout(opts.connect_timeout, resolve_and_connect(addr, opts))
        .await
        .map_err(|_| NetError::ConnectTimeout {
            addr: addr.to_owned(),
            timeout: opts.connect_timeout,
        })?
}

async fn resolve_and_connect(addr: &str, opts: &SocketOptions) -> Result<TcpStream, NetError> {
    let resolve_error = |source: io::Error| NetError::Resolve {
        addr: addr.to_owned(),
        source: Arc::new(source),
    };
    let candidates = tokio::net::lookup_host(addr).await.map_err(resolve_error)?;

    let mut last_error = None;
    for candidate in candidates {
        match connect_one(candidate, opts).await {
            Ok(stream) => {
                tracing::debug!(addr, %candidate, "connected");
                return Ok(stream);
            }
            Err(err) => {
                tracing::debug!(addr, %candidate, error = %err, "connect attempt failed");
                last_error = Some(err);
            }
        }
    }
    Err(match last_error {
        Some(source) => NetError::Connect {
            addr: addr.to_owned(),
            source: Arc::new(source),
        },
        None => resolve_error(io::Error::new(
            io::ErrorKind::NotFound,
            "the name resolved to no addresses",
        )),
    })
}

/// Creates the socket with socket2 so every option (keepalive time included)
/// is applied before the handshake, then lets tokio drive the connect.
async fn connect_one(addr: SocketAddr, opts: &SocketOptions) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_nonblocking(true)?;
    socket.set_nodelay(opts.nodelay)?;
    if let Some(bytes) = opts.send_buffer_bytes {
        socket.set_send_buffer_size(bytes)?;
    }
    if let Some(bytes) = opts.recv_buffer_bytes {
        socket.set_recv_buffer_size(bytes)?;
    }
    if let Some(idle) = opts.keepalive {
        socket.set_tcp_keepalive(&TcpKeepalive::new().with_time(idle))?;
    }
    let socket = TcpSocket::from_std_stream(socket.into());
    socket.connect(addr).await
}

/// The most a reader waits to gather before it is woken: a frame's bytes
/// come in a few of these, not in a wakeup per arriving segment.
const MOST_WATERMARK: usize = 1024 * 1024;

/// How many bytes a plain TCP socket gathers before its reader is woken
/// (`SO_RCVLOWAT`). A large Fetch response arrives a segment at a time; each
/// wakeup costs a sleep, a context switch and a read, which profiles showed
/// as a tenth of the mirror's CPU. A reader that knows how many bytes of the
/// frame are still to come asks for that many (up to [`MOST_WATERMARK`]), and
/// for one again once the frame is whole, so it never waits for bytes that
/// will not come. (Linux still wakes it when the receive window runs low.)
/// A TLS stream, or any other, has none: its reads are of records, not of
/// the socket's bytes.
#[derive(Debug)]
pub(crate) struct ReadWatermark {
    /// A second handle to the socket, dropped with the reader.
    socket: Option<Socket>,
    current: usize,
}

impl ReadWatermark {
    /// The watermark of `stream`'s socket; none if it cannot be shared.
    pub(crate) fn of(stream: &TcpStream) -> Self {
        ReadWatermark {
            socket: socket2::SockRef::from(stream).try_clone().ok(),
            current: 1,
        }
    }

    /// For a stream that is not a plain TCP socket.
    pub(crate) fn none() -> Self {
        ReadWatermark {
            socket: None,
            current: 1,
        }
    }

    /// Wake the reader once `bytes` (at least 1, at most [`MOST_WATERMARK`])
    /// have arrived. A socket that refuses keeps waking at every segment,
    /// which is slower, not wrong.
    pub(crate) fn wait_for(&mut self, bytes: usize) {
        let bytes = bytes.clamp(1, MOST_WATERMARK);
        let Some(socket) = &self.socket else { return };
        if bytes == self.current {
            return;
        }
        match set_receive_low_watermark(socket, bytes) {
            Ok(()) => self.current = bytes,
            Err(e) => {
                tracing::debug!(error = %e, "SO_RCVLOWAT refused; reading at every segment");
                self.socket = None;
            }
        }
    }
}

/// `setsockopt(SO_RCVLOWAT)`, which neither socket2 nor tokio offers.
#[allow(unsafe_code)]
fn set_receive_low_watermark(socket: &Socket, bytes: usize) -> io::Result<()> {
    let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open while `socket` lives, and the option's
    // value is a c_int whose address and size are passed as the call expects.
    let result = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVLOWAT,
            std::ptr::from_ref(&value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn applies_options_and_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let opts = SocketOptions {
            recv_buffer_bytes: Some(256 * 1024),
            ..SocketOptions::default()
        };
        let stream = connect_tcp(&addr, &opts).await.unwrap();
        assert!(stream.nodelay().unwrap());
        // Linux doubles the requested size for bookkeeping; other OSes may
        // round. Either way it was applied, not left at the default.
        let recv = socket2::SockRef::from(&stream).recv_buffer_size().unwrap();
        assert!(recv >= 256 * 1024, "recv buffer {recv}");
    }

    #[tokio::test]
    async fn a_reader_is_woken_once_its_watermark_has_arrived() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let mut reader = connect_tcp(&addr, &SocketOptions::default()).await.unwrap();
        let (mut writer, _) = listener.accept().await.unwrap();
        let mut watermark = ReadWatermark::of(&reader);
        watermark.wait_for(1000);
        let mut buf = vec![0; 2000];
        writer.write_all(&[7; 600]).await.unwrap();
        let early = tokio::time::timeout(Duration::from_millis(200), reader.read(&mut buf)).await;
        assert!(early.is_err(), "woken with 600 of 1000 bytes: {early:?}");
        writer.write_all(&[7; 400]).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
            .await
            .expect("woken once 1000 bytes are there")
            .unwrap();
        assert_eq!(read, 1000);
        // Back to one: a single byte wakes it.
        watermark.wait_for(1);
        writer.write_all(&[7]).await.unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), reader.read(&mut buf))
            .await
            .expect("woken by one byte")
            .unwrap();
        assert_eq!(read, 1);
    }

    #[tokio::test]
    async fn refused_connect_names_the_address() {
        // Bind then drop to get a port that (almost certainly) refuses.
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        drop(listener);
        let err = connect_tcp(&addr, &SocketOptions::default())
            .await
            .unwrap_err();
        assert!(matches!(err, NetError::Connect { .. }), "{err:?}");
        assert!(err.to_string().contains(&addr));
        assert!(err.is_retriable());
    }

    #[tokio::test]
    async fn unresolvable_name_is_a_resolve_error() {
        let err = connect_tcp("no-such-host.invalid:9092", &SocketOptions::default())
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                NetError::Resolve { .. } | NetError::ConnectTimeout { .. }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("no-such-host.invalid:9092"));
    }
}
