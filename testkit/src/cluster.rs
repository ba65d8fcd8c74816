//! Clusters of real Kafka brokers on loopback (KRaft, or ZooKeeper mode for 3.x):
//! what to start ([`ClusterSpec`]), starting it, and running, stopping and killing
//! its nodes ([`KafkaCluster`]). Each JVM runs under a watchdog (`process.rs`), so
//! none outlives the test process.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::dist::KafkaDist;
use crate::lock;
use crate::node::{self, NodeLayout};
use crate::ports::loopback;
use crate::process::{file_tail, ToolOutput, Watched};
use crate::wire::metadata_broker_count;
use crate::zookeeper::{self, ZooKeeper};

/// A test broker's JVM options: a small heap; the client compiler only and
/// the serial collector, since on a 2-core machine running several brokers
/// the optimizing compiler's and G1's threads take CPU the tests need, and a
/// test broker's load never repays them. (The bench sets its own.)
const DEFAULT_JVM_OPTS: [&str; 4] = [
    "-Xmx512m",
    "-Xms256m",
    "-XX:TieredStopAtLevel=1",
    "-XX:+UseSerialGC",
];

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Kafka version, e.g. "4.4.0" or "3.9.1".
    pub version: String,
    /// 1 or 3 combined broker+controller nodes.
    pub nodes: usize,
    /// Extra `server.properties` entries; they override the kit's defaults key by key.
    pub broker_props: Vec<(String, String)>,
    /// JVM options for each broker; `None`: a 512 MiB heap, the client
    /// compiler only and the serial collector (`DEFAULT_JVM_OPTS`).
    pub jvm_opts: Option<Vec<String>>,
    /// Listeners besides PLAINTEXT and CONTROLLER, each on its own free port:
    /// `(name, security protocol)`, e.g. `("SASL_SSL", "SASL_SSL")` or
    /// `("MTLS", "SSL")`. Their `listener.name.<name>.*` settings go in
    /// `broker_props`. The PLAINTEXT listener stays for readiness checks,
    /// inter-broker traffic and the test clients.
    pub extra_listeners: Vec<(String, String)>,
    /// Addresses advertised instead of an extra listener's own:
    /// `(listener name, host:port)`, one entry per node in node order, e.g.
    /// a recording proxy in front of each, so that clients stay on the
    /// proxies after bootstrapping.
    pub advertise: Vec<(String, String)>,
    /// Extra arguments for `kafka-storage format`, e.g.
    /// `["--add-scram", "SCRAM-SHA-512=[name=u,password=p]"]`. KRaft only.
    pub format_args: Vec<String>,
    /// Keep metadata in a ZooKeeper (one server, from the same Kafka
    /// distribution's jars) instead of KRaft. Kafka 3.x only: it is the one
    /// mode where `inter.broker.protocol.version` below 3.0 is allowed, so
    /// topics can still store the old message formats (magic 0 and 1) through
    /// `log.message.format.version` / `message.format.version`.
    pub zookeeper: bool,
}

impl Default for ClusterSpec {
    fn default() -> Self {
        Self {
            version: crate::DEFAULT_KAFKA_VERSION.to_string(),
            nodes: 1,
            broker_props: Vec::new(),
            jvm_opts: None,
            extra_listeners: Vec::new(),
            advertise: Vec::new(),
            format_args: Vec::new(),
            zookeeper: false,
        }
    }
}

impl ClusterSpec {
    pub fn new(version: &str, nodes: usize) -> Self {
        Self {
            version: version.to_string(),
            nodes,
            ..Self::default()
        }
    }
}

/// How long `start` and `start_node` wait for brokers to serve metadata.
const READY_TIMEOUT: Duration = Duration::from_secs(120);
/// How long `stop_node` waits for a graceful shutdown before SIGKILL.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running cluster of `nodes` JVMs on loopback: combined broker+controller
/// nodes in KRaft mode, or brokers and one ZooKeeper server in ZooKeeper mode.
///
/// Methods take `&self` so a cluster can be shared between tests through a `static`
/// `OnceLock`. Dropping it kills every JVM and removes its directories (set
/// `KAFKA_TESTKIT_KEEP=1` to keep them); JVMs also die when the test process dies.
#[derive(Debug)]
pub struct KafkaCluster {
    dist: KafkaDist,
    layout: Vec<NodeLayout>,
    procs: Mutex<Vec<Option<Watched>>>,
    /// Dropped after the brokers (see `Drop`), so they never lose it while running.
    zookeeper: Option<ZooKeeper>,
    jvm_opts: Vec<String>,
    cluster_id: String,
    keep: bool,
    _root: Option<tempfile::TempDir>,
    root_path: PathBuf,
}

impl KafkaCluster {
    /// Fetches the version if needed, formats each node's log dir and starts every node,
    /// returning once every node serves metadata listing all brokers.
    pub fn start(spec: ClusterSpec) -> Result<KafkaCluster> {
        if spec.nodes == 0 {
            bail!("a cluster needs at least one node");
        }
        let started = Instant::now();
        let dist = KafkaDist::get(&spec.version)?;
        let root = tempfile::Builder::new()
            .prefix("kafka-testkit-")
            .tempdir()
            .context("creating the cluster's temporary directory")?;
        let root_path = root.path().to_path_buf();
        let keep =
            std::env::var_os("KAFKA_TESTKIT_KEEP").is_some_and(|v| !v.is_empty() && v != "0");
        let root = if keep {
            eprintln!(
                "kafka-testkit: keeping cluster files in {}",
                root_path.display()
            );
            let _ = root.keep();
            None
        } else {
            Some(root)
        };

        if spec.zookeeper && dist.major() >= 4 {
            bail!(
                "Kafka {} has no ZooKeeper mode (removed in 4.0); use 3.x",
                dist.version()
            );
        }
        let (layout, zookeeper_port) = node::plan(&spec, &root_path)?;
        node::write_server_properties(&spec, &layout)?;
        // ZooKeeper mode: the cluster id is generated by the first broker (read
        // back from its data directory below); nothing to format.
        let cluster_id = match zookeeper_port {
            Some(_) => String::new(),
            None => {
                let id = node::random_cluster_id()?;
                node::format_storage(&dist, &id, &layout, &spec.format_args)?;
                id
            }
        };

        let jvm_opts = spec
            .jvm_opts
            .clone()
            .unwrap_or_else(|| DEFAULT_JVM_OPTS.iter().map(|o| o.to_string()).collect());
        let zookeeper = zookeeper_port
            .map(|port| ZooKeeper::start(&dist, &root_path.join("zookeeper"), port, keep))
            .transpose()?;
        let mut cluster = KafkaCluster {
            dist,
            zookeeper,
            procs: Mutex::new((0..layout.len()).map(|_| None).collect()),
            layout,
            jvm_opts,
            cluster_id,
            keep,
            _root: root,
            root_path,
        };
        for i in 0..cluster.layout.len() {
            cluster.spawn_node(i)?;
        }
        cluster.wait_ready(&(0..cluster.layout.len()).collect::<Vec<_>>())?;
        if cluster.zookeeper.is_some() {
            cluster.cluster_id = zookeeper::cluster_id(&cluster.layout[0].data_dir())?;
        }
        eprintln!(
            "kafka-testkit: Kafka {} cluster of {} node(s) ready at {} in {:.1}s",
            cluster.dist.version(),
            cluster.layout.len(),
            cluster.bootstrap(),
            started.elapsed().as_secs_f64()
        );
        Ok(cluster)
    }

    fn procs(&self) -> MutexGuard<'_, Vec<Option<Watched>>> {
        lock(&self.procs)
    }

    fn node(&self, i: usize) -> Result<&NodeLayout> {
        self.layout
            .get(i)
            .ok_or_else(|| anyhow!("node {i} out of range (cluster has {})", self.layout.len()))
    }

    fn spawn_node(&self, i: usize) -> Result<()> {
        let n = self.node(i)?;
        let mut procs = self.procs();
        if let Some(w) = procs[i].as_mut() {
            if w.is_running() {
                bail!("node {i} is already running");
            }
        }
        let jvm_opts = self
            .jvm_opts
            .iter()
            .map(String::as_str)
            .chain(["-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true"]);
        let mut java = self.dist.java_command(jvm_opts, "INFO", "kafka.Kafka");
        java.arg(n.props_file()).current_dir(&n.dir);
        {
            let mut f = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(n.log_file())?;
            writeln!(f, "===== kafka-testkit: starting node {i} =====")?;
        }
        let clean = (!self.keep).then_some(n.dir.as_path());
        procs[i] = Some(Watched::spawn(java, &n.log_file(), clean)?);
        Ok(())
    }

    /// Waits until each of `nodes` serves metadata listing every running
    /// broker (not every broker: a node can be started while another is down,
    /// as an unclean leader election needs).
    fn wait_ready(&self, nodes: &[usize]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let want = self
            .procs()
            .iter_mut()
            .filter_map(Option::as_mut)
            .filter_map(|w| w.is_running().then_some(()))
            .count();
        let mut pending: Vec<usize> = nodes.to_vec();
        let mut last_err: BTreeMap<usize, String> = BTreeMap::new();
        while !pending.is_empty() {
            let mut still = Vec::new();
            for &i in &pending {
                let n = &self.layout[i];
                {
                    let mut procs = self.procs();
                    let running = procs[i].as_mut().is_some_and(|w| w.is_running());
                    if !running {
                        bail!(
                            "Kafka node {i} exited during startup; tail of {}:\n{}",
                            n.log_file().display(),
                            self.log_tail(i, 60)
                        );
                    }
                }
                match metadata_broker_count(loopback(n.broker_port)) {
                    Ok(c) if c >= want => {}
                    Ok(c) => {
                        last_err.insert(i, format!("metadata lists {c} of {want} brokers"));
                        still.push(i);
                    }
                    Err(e) => {
                        last_err.insert(i, format!("{e:#}"));
                        still.push(i);
                    }
                }
            }
            pending = still;
            if pending.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                let mut msg = format!(
                    "Kafka {} nodes {:?} not ready after {:?}",
                    self.dist.version(),
                    pending,
                    READY_TIMEOUT
                );
                for &i in &pending {
                    msg.push_str(&format!(
                        "\n--- node {i} ({}), last probe: {} ---\n{}",
                        self.layout[i].log_file().display(),
                        last_err.get(&i).map(String::as_str).unwrap_or("-"),
                        self.log_tail(i, 40)
                    ));
                }
                bail!(msg);
            }
            thread::sleep(Duration::from_millis(250));
        }
        Ok(())
    }

    /// Last `lines` lines of node `i`'s broker log.
    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        match self.layout.get(i) {
            Some(n) => file_tail(&n.log_file(), lines),
            None => String::new(),
        }
    }

    /// `127.0.0.1:port` of the ZooKeeper server; `None` for a KRaft cluster.
    pub fn zookeeper_connect(&self) -> Option<String> {
        self.zookeeper.as_ref().map(ZooKeeper::connect)
    }

    /// "127.0.0.1:p1,127.0.0.1:p2,..." for every node (running or not).
    pub fn bootstrap(&self) -> String {
        self.layout
            .iter()
            .map(|n| loopback(n.broker_port).to_string())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// "127.0.0.1:p1,..." of the extra listener `name` on every node.
    pub fn listener_bootstrap(&self, name: &str) -> String {
        self.layout
            .iter()
            .map(|n| match n.extra_ports.get(name) {
                Some(&port) => loopback(port).to_string(),
                None => panic!("no extra listener named {name}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address node `i`'s extra listener `name` listens on (not the one it
    /// advertises), or `None` without such a listener.
    pub fn listener_addr(&self, i: usize, name: &str) -> Option<SocketAddr> {
        let port = *self.layout.get(i)?.extra_ports.get(name)?;
        Some(loopback(port))
    }

    /// The PLAINTEXT address of node `i`.
    pub fn broker_addr(&self, i: usize) -> SocketAddr {
        loopback(self.layout[i].broker_port)
    }

    pub fn node_count(&self) -> usize {
        self.layout.len()
    }

    pub fn dist(&self) -> &KafkaDist {
        &self.dist
    }

    pub fn version(&self) -> &str {
        self.dist.version()
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    /// Node `i`'s Kafka data directory (`log.dirs`): `<dir>/<topic>-<partition>/*.log`.
    pub fn log_dir(&self, i: usize) -> PathBuf {
        self.layout[i].data_dir()
    }

    /// Node `i`'s broker log file (stdout and stderr of the JVM).
    pub fn broker_log_file(&self, i: usize) -> PathBuf {
        self.layout[i].log_file()
    }

    /// The cluster's temporary root directory.
    pub fn root_dir(&self) -> &Path {
        &self.root_path
    }

    /// Pids of the running JVMs: the brokers, then the ZooKeeper server in
    /// ZooKeeper mode.
    pub fn jvm_pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self
            .procs()
            .iter_mut()
            .flatten()
            .filter_map(|w| w.is_running().then(|| w.pid()))
            .collect();
        pids.extend(self.zookeeper.as_ref().and_then(ZooKeeper::pid));
        pids
    }

    pub fn is_node_running(&self, i: usize) -> bool {
        self.procs()
            .get_mut(i)
            .and_then(Option::as_mut)
            .is_some_and(|w| w.is_running())
    }

    /// Graceful stop: SIGTERM to the JVM, wait (SIGKILL after 60 s).
    pub fn stop_node(&self, i: usize) -> Result<()> {
        self.node(i)?;
        let w = self.procs()[i].take();
        if let Some(mut w) = w {
            w.stop(STOP_TIMEOUT);
        }
        Ok(())
    }

    /// Hard stop: SIGKILL to the JVM.
    pub fn kill_node(&self, i: usize) -> Result<()> {
        self.node(i)?;
        let w = self.procs()[i].take();
        if let Some(mut w) = w {
            w.kill();
        }
        Ok(())
    }

    /// Restarts a stopped node with the same ports and log dir and waits until it serves
    /// metadata listing every running broker.
    pub fn start_node(&self, i: usize) -> Result<()> {
        self.spawn_node(i)?;
        self.wait_ready(&[i])
    }

    /// Bootstrap string of the nodes that are running right now.
    pub fn running_bootstrap(&self) -> String {
        let mut procs = self.procs();
        self.layout
            .iter()
            .zip(procs.iter_mut())
            .filter_map(|(n, w)| {
                w.as_mut()
                    .is_some_and(|w| w.is_running())
                    .then(|| loopback(n.broker_port).to_string())
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Creates a topic and waits until every partition has a leader (Python admin client).
    pub fn create_topic(
        &self,
        name: &str,
        partitions: u32,
        replication_factor: u16,
        configs: &[(&str, &str)],
    ) -> Result<()> {
        crate::python::create_topic(
            &self.running_bootstrap(),
            name,
            partitions,
            replication_factor,
            configs,
        )
    }

    /// Deletes a topic and waits until metadata no longer lists it.
    pub fn delete_topic(&self, name: &str) -> Result<()> {
        crate::python::delete_topic(&self.running_bootstrap(), name)
    }

    /// Deletes the records of `topic`-`partition` below `before` with Kafka's
    /// DeleteRecordsCommand (the DeleteRecords API): the partition's log
    /// start offset becomes `before`, even inside a batch.
    pub fn delete_records(&self, topic: &str, partition: i32, before: i64) -> Result<()> {
        let plan = self
            .root_path
            .join(format!("delete-records-{topic}-{partition}-{before}.json"));
        let json = format!(
            r#"{{"version":1,"partitions":[{{"topic":"{topic}","partition":{partition},"offset":{before}}}]}}"#
        );
        std::fs::write(&plan, json).with_context(|| format!("write {}", plan.display()))?;
        let bootstrap = self.running_bootstrap();
        let output = self.run_tool(
            "org.apache.kafka.tools.DeleteRecordsCommand",
            [
                "--bootstrap-server".as_ref(),
                bootstrap.as_ref(),
                "--offset-json-file".as_ref(),
                plan.as_os_str(),
            ],
        )?;
        // It prints `partition: <topic>-<p>  low_watermark: <offset>` or `error: ...`.
        anyhow::ensure!(
            output.stdout.contains(&format!("low_watermark: {before}")),
            "DeleteRecordsCommand did not move the log start to {before}:\n{}\n{}",
            output.stdout,
            output.stderr
        );
        Ok(())
    }

    /// Runs a Kafka tool from this cluster's distribution (see [`KafkaDist::run_tool`]).
    pub fn run_tool<I, S>(&self, class: &str, args: I) -> Result<ToolOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.dist.run_tool(class, args)
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        let mut procs = self.procs();
        for w in procs.iter_mut() {
            if let Some(mut w) = w.take() {
                w.kill();
            }
        }
    }
}
