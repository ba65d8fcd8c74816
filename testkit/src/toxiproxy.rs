//! Toxiproxy (Shopify's TCP proxy with injected latency and bandwidth limits), to put
//! a WAN between a client and the brokers.
//!
//! The server is built once with `go install` from the Go module proxy into
//! `<cache>/toxiproxy/<version>/bin` (in a temporary directory renamed into place,
//! under a lock file, like the Kafka jars), so later runs need no network. It runs
//! under the same watchdog as the brokers and is driven through its HTTP API with a
//! few lines of HTTP/1.1 over `TcpStream`.

use std::fs;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::cache::{cache_root, fill_once};
use crate::ports::{free_ports, loopback};
use crate::process::{wait_until, Watched};

/// The toxiproxy release built; its server command is `cmd/server`.
pub const TOXIPROXY_VERSION: &str = "v2.12.0";

const MODULE: &str = "github.com/Shopify/toxiproxy/v2/cmd/server";

/// A running toxiproxy server.
#[derive(Debug)]
pub struct Toxiproxy {
    api: SocketAddr,
    process: Watched,
    _dir: tempfile::TempDir,
}

impl Toxiproxy {
    /// Builds the server if it is not cached yet, and starts it on a free loopback port.
    pub fn start() -> Result<Toxiproxy> {
        let bin = install()?;
        let dir = tempfile::Builder::new()
            .prefix("toxiproxy-")
            .tempdir()
            .context("creating toxiproxy's directory")?;
        let port = free_ports(1)?[0];
        let mut cmd = Command::new(&bin);
        cmd.args(["-host", "127.0.0.1", "-port", &port.to_string()]);
        let log = dir.path().join("toxiproxy.log");
        let process = Watched::spawn(cmd, &log, None)?;
        let proxy = Toxiproxy {
            api: loopback(port),
            process,
            _dir: dir,
        };
        let answering = wait_until(Duration::from_secs(20), Duration::from_millis(100), || {
            proxy.request("GET", "/version", None).is_ok()
        });
        if !answering {
            bail!(
                "toxiproxy did not answer on {} within 20 s: {}",
                proxy.api,
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        Ok(proxy)
    }

    /// A proxy named `name` listening on `listen` and forwarding to `upstream`.
    pub fn create_proxy(&self, name: &str, listen: SocketAddr, upstream: SocketAddr) -> Result<()> {
        let body = serde_json::json!({
            "name": name, "listen": listen.to_string(), "upstream": upstream.to_string(), "enabled": true,
        });
        self.request("POST", "/proxies", Some(&body.to_string()))
            .map(drop)
            .with_context(|| format!("creating toxiproxy proxy {name}"))
    }

    /// Sets the proxy's link: `one_way_latency_ms` added in each direction (so the
    /// round trip grows by twice that) and, if given, a bandwidth cap in each direction
    /// in kilobytes (1000 B) per second. Replaces what was set before.
    pub fn set_link(
        &self,
        proxy: &str,
        one_way_latency_ms: u32,
        cap_kb_per_s: Option<u64>,
    ) -> Result<()> {
        for stream in ["upstream", "downstream"] {
            for kind in ["latency", "bandwidth"] {
                let path = format!("/proxies/{proxy}/toxics/{kind}_{stream}");
                // Absent toxics answer 404; anything else is a real failure.
                match self.request("DELETE", &path, None) {
                    Ok(_) => {}
                    Err(e) if e.to_string().contains("HTTP 404") => {}
                    Err(e) => return Err(e),
                }
            }
            if one_way_latency_ms > 0 {
                self.add_toxic(
                    proxy,
                    "latency",
                    stream,
                    serde_json::json!({"latency": one_way_latency_ms, "jitter": 0}),
                )?;
            }
            if let Some(rate) = cap_kb_per_s {
                self.add_toxic(
                    proxy,
                    "bandwidth",
                    stream,
                    serde_json::json!({"rate": rate}),
                )?;
            }
        }
        Ok(())
    }

    fn add_toxic(
        &self,
        proxy: &str,
        kind: &str,
        stream: &str,
        attributes: serde_json::Value,
    ) -> Result<()> {
        let body = serde_json::json!({
            "name": format!("{kind}_{stream}"), "type": kind, "stream": stream, "toxicity": 1.0,
            "attributes": attributes,
        });
        self.request(
            "POST",
            &format!("/proxies/{proxy}/toxics"),
            Some(&body.to_string()),
        )
        .map(drop)
        .with_context(|| format!("adding {kind} toxic ({stream}) to {proxy}"))
    }

    /// One HTTP/1.1 request; returns the body of a 2xx answer.
    fn request(&self, method: &str, path: &str, body: Option<&str>) -> Result<String> {
        let mut s = TcpStream::connect_timeout(&self.api, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        let body = body.unwrap_or("");
        write!(
            s,
            "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            self.api,
            body.len()
        )?;
        let mut answer = String::new();
        s.read_to_string(&mut answer)?;
        let status: u16 = answer
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| anyhow!("toxiproxy sent no HTTP status: {answer:?}"))?;
        let content = answer
            .split_once("\r\n\r\n")
            .map_or("", |(_, b)| b)
            .to_string();
        if !(200..300).contains(&status) {
            bail!("toxiproxy {method} {path}: HTTP {status}: {content}");
        }
        Ok(content)
    }
}

impl Drop for Toxiproxy {
    fn drop(&mut self) {
        self.process.kill();
    }
}

/// `<cache>/toxiproxy/<version>/bin/toxiproxy-server`, built with `go install` if absent.
fn install() -> Result<PathBuf> {
    let root = cache_root()?.join("toxiproxy");
    let bin = |d: &Path| d.join("bin").join("toxiproxy-server");
    let dir = fill_once(
        &root,
        TOXIPROXY_VERSION,
        |d| bin(d).is_file(),
        |tmp| {
            let gobin = tmp.join("bin");
            eprintln!(
                "kafka-testkit: building toxiproxy {TOXIPROXY_VERSION} with go install into {}",
                root.join(TOXIPROXY_VERSION).display()
            );
            let out = Command::new("go")
                .args(["install", &format!("{MODULE}@{TOXIPROXY_VERSION}")])
                .env("GOBIN", &gobin)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| {
                    anyhow!("Go (`go`) not found ({e}); building toxiproxy needs Go 1.22+ on PATH")
                })?;
            if !out.status.success() {
                bail!(
                "go install {MODULE}@{TOXIPROXY_VERSION} failed (is the Go module proxy reachable?): {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
            }
            fs::rename(gobin.join("server"), bin(tmp)).context("naming the toxiproxy binary")
        },
    )?;
    Ok(bin(&dir))
}
