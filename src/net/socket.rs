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
