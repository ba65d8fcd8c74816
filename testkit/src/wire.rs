//! The one Kafka request the kit speaks itself: a Metadata probe telling whether a
//! broker is up and sees every broker of its cluster.
//!
//! Standard library only (like `segments.rs`), so whether a cluster is ready never
//! depends on the code under test, and each probe costs no client process.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{bail, Result};

/// Sends a Metadata v4 request for no topics and returns how many brokers it lists.
/// (v4 is served by every KRaft-capable broker, including 4.x, which dropped v0-v3.)
pub(crate) fn metadata_broker_count(addr: SocketAddr) -> Result<usize> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    let client_id = b"kafka-testkit";
    let mut body = Vec::new();
    body.extend_from_slice(&3i16.to_be_bytes()); // api key: Metadata
    body.extend_from_slice(&4i16.to_be_bytes()); // api version
    body.extend_from_slice(&1i32.to_be_bytes()); // correlation id
    body.extend_from_slice(&(client_id.len() as i16).to_be_bytes());
    body.extend_from_slice(client_id);
    body.extend_from_slice(&0i32.to_be_bytes()); // topics: empty array
    body.push(0); // allow_auto_topic_creation
    let mut req = (body.len() as i32).to_be_bytes().to_vec();
    req.extend_from_slice(&body);
    s.write_all(&req)?;
    let mut len = [0u8; 4];
    s.read_exact(&mut len)?;
    let len = i32::from_be_bytes(len);
    if !(8..=16 << 20).contains(&len) {
        bail!("bad Metadata response length {len}");
    }
    let mut resp = vec![0u8; len as usize];
    s.read_exact(&mut resp)?;
    broker_count(&resp)
}

/// The number of brokers in a Metadata v4 response body (after the length prefix).
fn broker_count(resp: &[u8]) -> Result<usize> {
    let mut r = Reader(resp);
    let corr = r.i32()?;
    if corr != 1 {
        bail!("Metadata response correlation id {corr}");
    }
    let _throttle = r.i32()?;
    let n = r.i32()?;
    if n < 0 {
        bail!("negative broker count");
    }
    for _ in 0..n {
        r.i32()?; // node id
        r.string()?; // host
        r.i32()?; // port
        r.string()?; // rack
    }
    Ok(n as usize)
}

/// A cursor over a response body that fails, instead of panicking, on a cut-off one.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if self.0.len() < n {
            bail!("truncated Metadata response");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn i32(&mut self) -> Result<i32> {
        Ok(i32::from_be_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    /// Skips a nullable string.
    fn string(&mut self) -> Result<()> {
        let l = i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        if l > 0 {
            self.take(l as usize)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A Metadata v4 response body listing `hosts`, the first with a rack.
    fn response(correlation_id: i32, hosts: &[&str]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&correlation_id.to_be_bytes());
        b.extend_from_slice(&0i32.to_be_bytes()); // throttle
        b.extend_from_slice(&(hosts.len() as i32).to_be_bytes());
        for (i, host) in hosts.iter().enumerate() {
            b.extend_from_slice(&(i as i32).to_be_bytes());
            b.extend_from_slice(&(host.len() as i16).to_be_bytes());
            b.extend_from_slice(host.as_bytes());
            b.extend_from_slice(&9092i32.to_be_bytes());
            if i == 0 {
                b.extend_from_slice(&2i16.to_be_bytes());
                b.extend_from_slice(b"r1");
            } else {
                b.extend_from_slice(&(-1i16).to_be_bytes()); // null rack
            }
        }
        b.extend_from_slice(&[0xAB; 8]); // cluster id, controller, topics: not read
        b
    }

    #[test]
    fn counts_the_brokers_listed() {
        let body = response(1, &["127.0.0.1", "localhost", "h"]);
        assert_eq!(broker_count(&body).unwrap(), 3);
    }

    #[test]
    fn a_cut_off_response_is_an_error() {
        let body = response(1, &["127.0.0.1", "localhost"]);
        assert!(broker_count(&body[..20]).is_err());
    }

    #[test]
    fn another_correlation_id_is_an_error() {
        assert!(broker_count(&response(7, &["h"])).is_err());
    }
}
