//! A TCP proxy on loopback that counts the bytes it forwards in each direction.
//!
//! Benchmarks put it in front of a broker's listener, with the broker advertising
//! the proxy's address ([`crate::ClusterSpec::advertise`]), so every connection a
//! client opens after reading metadata goes through it too. The proxy binds first
//! (the broker must know its address before it starts) and learns its upstream later
//! ([`CountingProxy::forward_to`]).
//!
//! Two threads per connection copy with 256 KiB buffers: the proxy costs some CPU
//! per byte, the same for every client measured through it.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;

use anyhow::{Context, Result};

use crate::lock;

const BUFFER: usize = 256 * 1024;

#[derive(Debug, Default)]
struct State {
    upstream: Mutex<Option<SocketAddr>>,
    to_upstream: AtomicU64,
    from_upstream: AtomicU64,
    closing: AtomicBool,
    /// Both ends of every open connection, to cut them when the proxy is dropped.
    open: Mutex<Vec<TcpStream>>,
}

/// A counting TCP proxy listening on `127.0.0.1:<port>`.
#[derive(Debug)]
pub struct CountingProxy {
    addr: SocketAddr,
    state: Arc<State>,
}

impl CountingProxy {
    /// Binds a free loopback port and starts accepting. Connections accepted before
    /// [`forward_to`](Self::forward_to) are closed at once.
    pub fn bind() -> Result<CountingProxy> {
        let listener =
            TcpListener::bind("127.0.0.1:0").context("binding the counting proxy's port")?;
        let addr = listener.local_addr()?;
        let state = Arc::new(State::default());
        let accept_state = state.clone();
        thread::Builder::new()
            .name(format!("proxy-{}", addr.port()))
            .spawn(move || accept_loop(listener, accept_state))
            .context("starting the proxy thread")?;
        Ok(CountingProxy { addr, state })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections are forwarded from now on.
    pub fn forward_to(&self, upstream: SocketAddr) {
        *lock(&self.state.upstream) = Some(upstream);
    }

    /// Bytes sent by clients to the upstream since the start (or the last reset).
    pub fn bytes_to_upstream(&self) -> u64 {
        self.state.to_upstream.load(Ordering::Relaxed)
    }

    /// Bytes the upstream sent back to clients.
    pub fn bytes_from_upstream(&self) -> u64 {
        self.state.from_upstream.load(Ordering::Relaxed)
    }

    /// Sets both counters to zero.
    pub fn reset_counters(&self) {
        self.state.to_upstream.store(0, Ordering::Relaxed);
        self.state.from_upstream.store(0, Ordering::Relaxed);
    }
}

impl Drop for CountingProxy {
    fn drop(&mut self) {
        self.state.closing.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
        for s in lock(&self.state.open).drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<State>) {
    for client in listener.incoming() {
        if state.closing.load(Ordering::Relaxed) {
            return;
        }
        let Ok(client) = client else { continue };
        let upstream = *lock(&state.upstream);
        let Some(upstream) = upstream else { continue };
        let Ok(server) = TcpStream::connect(upstream) else {
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(client2), Ok(server2)) = (client.try_clone(), server.try_clone()) else {
            continue;
        };
        {
            let mut open = lock(&state.open);
            open.retain(|s| s.peer_addr().is_ok());
            if let (Ok(a), Ok(b)) = (client.try_clone(), server.try_clone()) {
                open.extend([a, b]);
            }
        }
        let up = state.clone();
        let down = state.clone();
        let _ = thread::Builder::new()
            .name("proxy-up".into())
            .spawn(move || pump(client, server, &up.to_upstream));
        let _ = thread::Builder::new()
            .name("proxy-down".into())
            .spawn(move || pump(server2, client2, &down.from_upstream));
    }
}

/// Copies `from` to `to` until EOF or an error, counting, then half-closes `to`.
fn pump(mut from: TcpStream, mut to: TcpStream, counter: &AtomicU64) {
    let mut buf = vec![0u8; BUFFER];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                // Counted before it is passed on, so a reply never overtakes its count.
                counter.fetch_add(n as u64, Ordering::Relaxed);
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_and_counts_both_directions() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).unwrap();
            s.write_all(b"pong!!").unwrap();
        });
        let proxy = CountingProxy::bind().unwrap();
        proxy.forward_to(echo_addr);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        c.write_all(b"ping!").unwrap();
        let mut reply = [0u8; 6];
        c.read_exact(&mut reply).unwrap();
        assert_eq!(&reply, b"pong!!");
        assert_eq!(proxy.bytes_to_upstream(), 5);
        assert_eq!(proxy.bytes_from_upstream(), 6);
        proxy.reset_counters();
        assert_eq!(proxy.bytes_to_upstream(), 0);
    }
}
