//! ZooKeeper mode (Kafka 3.x only): the cluster's one ZooKeeper server, what its
//! brokers need in `server.properties` instead of KRaft's settings, and the cluster
//! id they generate.
//!
//! It is the one mode where `inter.broker.protocol.version` below 3.0 is allowed, so
//! topics can still store the old message formats (magic 0 and 1).

use std::fs;
use std::net::TcpStream;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};

use crate::dist::KafkaDist;
use crate::lock;
use crate::ports::loopback;
use crate::process::{file_tail, wait_until, Watched};
use crate::properties::write_properties;

/// How long `start` waits for the ZooKeeper server to accept connections.
const ZOOKEEPER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// The single ZooKeeper server of a ZooKeeper-mode cluster, under a watchdog
/// like the brokers; killed on drop.
#[derive(Debug)]
pub(crate) struct ZooKeeper {
    port: u16,
    proc: Mutex<Option<Watched>>,
}

impl ZooKeeper {
    /// Starts `ZooKeeperServerMain` from the distribution's jars with its data
    /// in `dir`, and returns once it accepts connections on `port`.
    pub(crate) fn start(dist: &KafkaDist, dir: &Path, port: u16, keep: bool) -> Result<ZooKeeper> {
        let data = dir.join("data");
        fs::create_dir_all(&data)?;
        let config = dir.join("zookeeper.properties");
        let settings = [
            ("dataDir", data.display().to_string()),
            ("clientPort", port.to_string()),
            ("clientPortAddress", "127.0.0.1".to_string()),
            ("maxClientCnxns", "0".to_string()),
            ("admin.enableServer", "false".to_string()),
        ];
        write_properties(&config, &settings.map(|(k, v)| (k.to_string(), v)))?;
        let log = dir.join("zookeeper.log");
        let mut java = dist.java_command(
            ["-Xmx128m", "-Xms64m", "-XX:+ExitOnOutOfMemoryError"],
            "INFO",
            "org.apache.zookeeper.server.ZooKeeperServerMain",
        );
        java.arg(&config).current_dir(dir);
        let clean = (!keep).then_some(dir);
        let mut watched = Watched::spawn(java, &log, clean)?;
        let addr = loopback(port);
        let mut exited = false;
        let accepting = wait_until(ZOOKEEPER_READY_TIMEOUT, Duration::from_millis(100), || {
            if TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_ok() {
                return true;
            }
            exited = !watched.is_running();
            exited
        });
        if exited {
            bail!(
                "ZooKeeper exited during startup; tail of {}:\n{}",
                log.display(),
                file_tail(&log, 40)
            );
        }
        if !accepting {
            watched.kill();
            bail!(
                "ZooKeeper not accepting connections on {addr} after {ZOOKEEPER_READY_TIMEOUT:?}; tail of {}:\n{}",
                log.display(),
                file_tail(&log, 40)
            );
        }
        Ok(ZooKeeper {
            port,
            proc: Mutex::new(Some(watched)),
        })
    }

    /// `127.0.0.1:port`, the brokers' `zookeeper.connect`.
    pub(crate) fn connect(&self) -> String {
        loopback(self.port).to_string()
    }

    /// The server's pid while it runs.
    pub(crate) fn pid(&self) -> Option<u32> {
        let mut proc = lock(&self.proc);
        let w = proc.as_mut()?;
        w.is_running().then(|| w.pid())
    }
}

impl Drop for ZooKeeper {
    fn drop(&mut self) {
        let proc = self.proc.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(mut w) = proc.take() {
            w.kill();
        }
    }
}

/// What broker `broker_id` needs in `server.properties` to keep its metadata in the
/// ZooKeeper server on `port`.
pub(crate) fn broker_settings(broker_id: usize, port: u16) -> [(&'static str, String); 4] {
    [
        ("broker.id", broker_id.to_string()),
        ("zookeeper.connect", loopback(port).to_string()),
        // Generous: both cores may be busy while the session starts.
        ("zookeeper.connection.timeout.ms", "60000".into()),
        ("zookeeper.session.timeout.ms", "30000".into()),
    ]
}

/// The cluster id a ZooKeeper-mode broker generated (or read from ZooKeeper)
/// and wrote into its data directory's `meta.properties`.
pub(crate) fn cluster_id(data_dir: &Path) -> Result<String> {
    let file = data_dir.join("meta.properties");
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("cluster.id="))
        .map(|id| id.trim().to_string())
        .ok_or_else(|| anyhow!("{} has no cluster.id", file.display()))
}
