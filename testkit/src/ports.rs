//! Loopback ports: every server the kit starts listens on 127.0.0.1 only.

use std::net::{SocketAddr, TcpListener};

use anyhow::{Context, Result};

/// Picks `n` distinct free loopback ports (all listeners held until all are chosen).
pub fn free_ports(n: usize) -> Result<Vec<u16>> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<_>>()
        .context("binding 127.0.0.1:0 to pick a free port")?;
    listeners
        .iter()
        .map(|l| Ok(l.local_addr()?.port()))
        .collect()
}

/// `127.0.0.1:<port>`; its `Display` is the `host:port` clients are given.
pub(crate) fn loopback(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}
