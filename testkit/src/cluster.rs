//! Clusters of real Kafka brokers (KRaft, or ZooKeeper mode for 3.x), each JVM
//! under a watchdog.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

use crate::dist::KafkaDist;
use crate::java::{java_bin, tail};

/// What cluster to start.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Kafka version, e.g. "4.4.0" or "3.9.1".
    pub version: String,
    /// 1 or 3 combined broker+controller nodes.
    pub nodes: usize,
    /// Extra `server.properties` entries; they override the kit's defaults key by key.
    pub broker_props: Vec<(String, String)>,
    /// JVM options for each broker; `None` means `-Xmx512m -Xms256m`.
    pub jvm_opts: Option<Vec<String>>,
    /// Listeners besides PLAINTEXT and CONTROLLER, each on its own free port:
    /// `(name, security protocol)`, e.g. `("SASL_SSL", "SASL_SSL")` or
    /// `("MTLS", "SSL")`. Their `listener.name.<name>.*` settings go in
    /// `broker_props`. The PLAINTEXT listener stays for readiness checks,
    /// inter-broker traffic and the test clients.
    pub extra_listeners: Vec<(String, String)>,
    /// Addresses advertised instead of an extra listener's own (1-node
    /// clusters): `(listener name, host:port)`, e.g. a recording proxy in
    /// front of it, so that clients stay on the proxy after bootstrapping.
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

#[derive(Debug)]
struct NodeLayout {
    id: usize,
    broker_port: u16,
    /// The KRaft controller listener's port (none in ZooKeeper mode).
    controller_port: Option<u16>,
    /// Ports of `ClusterSpec::extra_listeners`, by listener name.
    extra_ports: BTreeMap<String, u16>,
    dir: PathBuf,
}

impl NodeLayout {
    fn props_file(&self) -> PathBuf {
        self.dir.join("server.properties")
    }
    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    fn log_file(&self) -> PathBuf {
        self.dir.join("broker.log")
    }
}

/// A running JVM and its watchdog shell.
///
/// The shell (`bash`) starts the JVM in the background and a watcher subshell that
/// blocks reading its stdin, a pipe whose only write end this process holds. When this
/// process goes away for any reason (panic, exit with clusters in statics, SIGKILL),
/// the kernel closes the pipe, the watcher reads EOF, SIGKILLs the JVM and removes
/// `clean_dir` (the node's directory, which no destructor will remove then). When the
/// JVM exits by itself or is signalled through `stop`/`kill`, the shell's `wait`
/// returns, it kills the watcher (so nothing is removed) and exits too; only then is
/// the pipe closed.
#[derive(Debug)]
pub(crate) struct Watched {
    shell: Child,
    stdin: Option<ChildStdin>,
    jvm_pid: u32,
}

const WATCHDOG_SCRIPT: &str = r#"
"$@" </dev/null >>"$KT_LOG" 2>&1 &
jpid=$!
echo "$jpid"
{
  while read -r _; do :; done
  # A separate process, so the shell killing this watcher once the JVM is gone does
  # not cut the cleanup short.
  (
    kill -9 "$jpid"
    if [ -n "$KT_CLEAN_DIR" ]; then
      n=0; while kill -0 "$jpid" && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
      rm -rf -- "$KT_CLEAN_DIR"; rmdir -- "${KT_CLEAN_DIR%/*}"
    fi
  ) &
} <&0 >/dev/null 2>&1 &
wpid=$!
exec 0</dev/null 1>/dev/null 2>/dev/null
wait "$jpid"; rc=$?
kill -9 "$wpid" 2>/dev/null
exit "$rc"
"#;

impl Watched {
    pub(crate) fn spawn(java: Command, log: &Path, clean_dir: Option<&Path>) -> Result<Watched> {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("kafka-testkit-watchdog");
        cmd.arg(java.get_program());
        cmd.args(java.get_args());
        if let Some(dir) = java.get_current_dir() {
            cmd.current_dir(dir);
        }
        for (k, v) in java.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        match clean_dir {
            Some(d) => cmd.env("KT_CLEAN_DIR", d),
            None => cmd.env_remove("KT_CLEAN_DIR"),
        };
        cmd.env("KT_LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut shell = cmd
            .spawn()
            .context("spawning bash (kafka-testkit needs bash)")?;
        let mut line = String::new();
        BufReader::new(shell.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .context("reading the JVM pid from the watchdog")?;
        let jvm_pid: u32 = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = shell.kill();
                let _ = shell.wait();
                bail!("watchdog did not report a JVM pid (got {line:?})");
            }
        };
        let stdin = shell.stdin.take();
        Ok(Watched {
            shell,
            stdin,
            jvm_pid,
        })
    }

    fn is_running(&mut self) -> bool {
        matches!(self.shell.try_wait(), Ok(None))
    }

    fn signal(&mut self, sig: &str) {
        if self.is_running() {
            let _ = Command::new("kill")
                .args(["-s", sig, &self.jvm_pid.to_string()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }

    /// Waits for the shell (and so the JVM) to exit; true if it did in time.
    fn wait_timeout(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.shell.try_wait() {
                Ok(Some(_)) | Err(_) => return true,
                Ok(None) if Instant::now() >= deadline => return false,
                Ok(None) => thread::sleep(Duration::from_millis(50)),
            }
        }
    }

    pub(crate) fn kill(&mut self) {
        self.signal("KILL");
        // stdin is closed only once the shell is gone (and took its watcher with it), so
        // the watcher's cleanup does not run for a node that may be restarted.
        if !self.wait_timeout(Duration::from_secs(20)) {
            // Last resort: the watcher SIGKILLs the JVM on EOF.
            self.stdin.take();
            let _ = self.shell.kill();
            let _ = self.shell.wait();
        }
        self.stdin.take();
    }

    fn stop(&mut self, timeout: Duration) {
        self.signal("TERM");
        if !self.wait_timeout(timeout) {
            eprintln!(
                "kafka-testkit: JVM {} ignored SIGTERM for {timeout:?}; killing it",
                self.jvm_pid
            );
        }
        self.kill();
    }
}

/// The single ZooKeeper server of a ZooKeeper-mode cluster, under a watchdog
/// like the brokers.
#[derive(Debug)]
struct ZooKeeper {
    port: u16,
    proc: Mutex<Option<Watched>>,
}

/// How long `start` waits for the ZooKeeper server to accept connections.
const ZOOKEEPER_READY_TIMEOUT: Duration = Duration::from_secs(60);

impl ZooKeeper {
    /// Starts `ZooKeeperServerMain` from the distribution's jars with its data
    /// in `dir`, and returns once it accepts connections on `port`.
    fn start(dist: &KafkaDist, dir: &Path, port: u16, keep: bool) -> Result<ZooKeeper> {
        fs::create_dir_all(dir.join("data"))?;
        let config = dir.join("zookeeper.properties");
        fs::write(
            &config,
            format!(
                "# written by kafka-testkit\n\
                 dataDir={}\n\
                 clientPort={port}\n\
                 clientPortAddress=127.0.0.1\n\
                 maxClientCnxns=0\n\
                 admin.enableServer=false\n",
                dir.join("data").display()
            ),
        )?;
        let log = dir.join("zookeeper.log");
        let mut java = Command::new(java_bin());
        java.args(["-Xmx128m", "-Xms64m", "-XX:+ExitOnOutOfMemoryError"])
            .args(dist.log_config_jvm_args("INFO"))
            .arg("-cp")
            .arg(dist.java_classpath())
            .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
            .arg(&config)
            .current_dir(dir);
        let clean = (!keep).then_some(dir);
        let mut watched = Watched::spawn(java, &log, clean)?;
        let deadline = Instant::now() + ZOOKEEPER_READY_TIMEOUT;
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        while TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            let log_tail = || {
                fs::read(&log)
                    .map(|b| tail(&String::from_utf8_lossy(&b), 40))
                    .unwrap_or_default()
            };
            if !watched.is_running() {
                bail!(
                    "ZooKeeper exited during startup; tail of {}:\n{}",
                    log.display(),
                    log_tail()
                );
            }
            if Instant::now() >= deadline {
                watched.kill();
                bail!(
                    "ZooKeeper not accepting connections on {addr} after {ZOOKEEPER_READY_TIMEOUT:?}; tail of {}:\n{}",
                    log.display(),
                    log_tail()
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(ZooKeeper {
            port,
            proc: Mutex::new(Some(watched)),
        })
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
        // The broker port, the controller's (KRaft), then the extra listeners'.
        let own_ports = if spec.zookeeper { 1 } else { 2 };
        let per_node = own_ports + spec.extra_listeners.len();
        let mut ports = free_ports(spec.nodes * per_node + 1)?;
        let zookeeper_port = ports.pop().unwrap_or_default();
        let layout: Vec<NodeLayout> = (0..spec.nodes)
            .map(|i| NodeLayout {
                id: i,
                broker_port: ports[per_node * i],
                controller_port: (!spec.zookeeper).then(|| ports[per_node * i + 1]),
                extra_ports: spec
                    .extra_listeners
                    .iter()
                    .enumerate()
                    .map(|(j, (name, _))| (name.clone(), ports[per_node * i + own_ports + j]))
                    .collect(),
                dir: root_path.join(format!("node-{i}")),
            })
            .collect();
        let voters = layout
            .iter()
            .filter_map(|n| Some(format!("{}@127.0.0.1:{}", n.id, n.controller_port?)))
            .collect::<Vec<_>>()
            .join(",");
        let rf = spec.nodes.min(3);
        let min_isr = if rf >= 3 { 2 } else { 1 };
        for n in &layout {
            fs::create_dir_all(n.data_dir())?;
            let mut props: BTreeMap<String, String> = BTreeMap::new();
            let mut set = |k: &str, v: String| {
                props.insert(k.to_string(), v);
            };
            let mut listeners = format!("PLAINTEXT://127.0.0.1:{}", n.broker_port);
            let mut advertised = listeners.clone();
            let mut protocols = String::from("PLAINTEXT:PLAINTEXT");
            if let Some(controller_port) = n.controller_port {
                set("process.roles", "broker,controller".into());
                set("node.id", n.id.to_string());
                set("controller.quorum.voters", voters.clone());
                set("controller.listener.names", "CONTROLLER".into());
                listeners.push_str(&format!(",CONTROLLER://127.0.0.1:{controller_port}"));
                protocols.push_str(",CONTROLLER:PLAINTEXT");
            } else {
                set("broker.id", n.id.to_string());
                set("zookeeper.connect", format!("127.0.0.1:{zookeeper_port}"));
                // Generous: both cores may be busy while the session starts.
                set("zookeeper.connection.timeout.ms", "60000".into());
                set("zookeeper.session.timeout.ms", "30000".into());
            }
            for (name, protocol) in &spec.extra_listeners {
                let port = n.extra_ports[name];
                listeners.push_str(&format!(",{name}://127.0.0.1:{port}"));
                let shown = spec
                    .advertise
                    .iter()
                    .find(|(listener, _)| listener == name)
                    .map_or_else(|| format!("127.0.0.1:{port}"), |(_, a)| a.clone());
                advertised.push_str(&format!(",{name}://{shown}"));
                protocols.push_str(&format!(",{name}:{protocol}"));
            }
            set("listeners", listeners);
            set("advertised.listeners", advertised);
            set("listener.security.protocol.map", protocols);
            set("inter.broker.listener.name", "PLAINTEXT".into());
            set("log.dirs", n.data_dir().display().to_string());
            set("num.partitions", "1".into());
            set("default.replication.factor", rf.to_string());
            set("min.insync.replicas", "1".into());
            set("offsets.topic.replication.factor", rf.to_string());
            set("offsets.topic.num.partitions", "5".into());
            set("transaction.state.log.replication.factor", rf.to_string());
            set("transaction.state.log.min.isr", min_isr.to_string());
            set("transaction.state.log.num.partitions", "5".into());
            set(
                "share.coordinator.state.topic.replication.factor",
                rf.to_string(),
            );
            set("share.coordinator.state.topic.min.isr", min_isr.to_string());
            set("group.initial.rebalance.delay.ms", "0".into());
            set("auto.create.topics.enable", "false".into());
            set("num.network.threads", "2".into());
            set("num.io.threads", "4".into());
            set("num.recovery.threads.per.data.dir", "1".into());
            set("log.cleaner.dedupe.buffer.size", "8388608".into());
            for (k, v) in &spec.broker_props {
                set(k, v.clone());
            }
            let mut text = String::from("# written by kafka-testkit\n");
            for (k, v) in &props {
                text.push_str(&format!("{k}={v}\n"));
            }
            fs::write(n.props_file(), text)?;
        }

        // ZooKeeper mode: the cluster id is generated by the first broker (read
        // back from Metadata below); nothing to format.
        let cluster_id = if spec.zookeeper {
            String::new()
        } else {
            random_cluster_id()?
        };
        let formatted = if spec.zookeeper { &[][..] } else { &layout[..] };
        // Format every node's storage in parallel (a JVM start each).
        let results: Vec<Result<()>> = thread::scope(|s| {
            let handles: Vec<_> = formatted
                .iter()
                .map(|n| {
                    let dist = &dist;
                    let cluster_id = &cluster_id;
                    let extra = &spec.format_args;
                    s.spawn(move || format_storage(dist, cluster_id, n, extra))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(anyhow!("format thread panicked")))
                })
                .collect()
        });
        for r in results {
            r?;
        }

        let jvm_opts = spec
            .jvm_opts
            .clone()
            .unwrap_or_else(|| vec!["-Xmx512m".into(), "-Xms256m".into()]);
        let zookeeper = spec
            .zookeeper
            .then(|| ZooKeeper::start(&dist, &root_path.join("zookeeper"), zookeeper_port, keep))
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
            cluster.cluster_id = zookeeper_cluster_id(&cluster.layout[0].data_dir())?;
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
        self.procs.lock().unwrap_or_else(|e| e.into_inner())
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
        let mut java = Command::new(java_bin());
        java.args(&self.jvm_opts)
            .arg("-XX:+ExitOnOutOfMemoryError")
            .arg("-Djava.awt.headless=true")
            .args(self.dist.log_config_jvm_args("INFO"))
            .arg("-cp")
            .arg(self.dist.java_classpath())
            .arg("kafka.Kafka")
            .arg(n.props_file())
            .current_dir(&n.dir);
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

    fn wait_ready(&self, nodes: &[usize]) -> Result<()> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let want = self.layout.len();
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
                match metadata_broker_count(n.broker_port) {
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
            Some(n) => fs::read(n.log_file())
                .map(|b| tail(&String::from_utf8_lossy(&b), lines))
                .unwrap_or_else(|e| format!("(cannot read {}: {e})", n.log_file().display())),
            None => String::new(),
        }
    }

    /// `127.0.0.1:port` of the ZooKeeper server; `None` for a KRaft cluster.
    pub fn zookeeper_connect(&self) -> Option<String> {
        self.zookeeper
            .as_ref()
            .map(|z| format!("127.0.0.1:{}", z.port))
    }

    /// "127.0.0.1:p1,127.0.0.1:p2,..." for every node (running or not).
    pub fn bootstrap(&self) -> String {
        self.layout
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.broker_port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// "127.0.0.1:p1,..." of the extra listener `name` on every node.
    pub fn listener_bootstrap(&self, name: &str) -> String {
        self.layout
            .iter()
            .map(|n| match n.extra_ports.get(name) {
                Some(port) => format!("127.0.0.1:{port}"),
                None => panic!("no extra listener named {name}"),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The address node `i`'s extra listener `name` listens on (not the one it
    /// advertises), or `None` without such a listener.
    pub fn listener_addr(&self, i: usize, name: &str) -> Option<SocketAddr> {
        let port = *self.layout.get(i)?.extra_ports.get(name)?;
        Some(SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// The PLAINTEXT address of node `i`.
    pub fn broker_addr(&self, i: usize) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.layout[i].broker_port))
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
            .filter_map(|w| w.is_running().then_some(w.jvm_pid))
            .collect();
        if let Some(zookeeper) = &self.zookeeper {
            let mut proc = zookeeper.proc.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(w) = proc.as_mut() {
                if w.is_running() {
                    pids.push(w.jvm_pid);
                }
            }
        }
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
    /// metadata listing every broker.
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
                    .then(|| format!("127.0.0.1:{}", n.broker_port))
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

    /// Runs a Kafka tool from this cluster's distribution (see [`KafkaDist::run_tool`]).
    pub fn run_tool<I, S>(&self, class: &str, args: I) -> Result<crate::ToolOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<std::ffi::OsString>,
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

fn format_storage(
    dist: &KafkaDist,
    cluster_id: &str,
    n: &NodeLayout,
    extra_args: &[String],
) -> Result<()> {
    let mut cmd = dist.tool_command(dist.storage_tool_class());
    cmd.args(["format", "-t", cluster_id, "-c"])
        .arg(n.props_file())
        .args(extra_args)
        .stdin(Stdio::null());
    let out = cmd.output().context("running the Kafka storage tool")?;
    if !out.status.success() {
        bail!(
            "formatting node {} with {} {} failed ({}):\n{}{}",
            n.id,
            dist.storage_tool_class(),
            dist.version(),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// The cluster id a ZooKeeper-mode broker generated (or read from ZooKeeper)
/// and wrote into its data directory's `meta.properties`.
fn zookeeper_cluster_id(data_dir: &Path) -> Result<String> {
    let file = data_dir.join("meta.properties");
    let text = fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix("cluster.id="))
        .map(|id| id.trim().to_string())
        .ok_or_else(|| anyhow!("{} has no cluster.id", file.display()))
}

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

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).
/// Like Kafka's own `Uuid.randomUuid`, never one that starts with '-': the
/// storage tool would take it for an option (seen as a flaky cluster start).
fn random_cluster_id() -> Result<String> {
    use base64::Engine as _;
    let mut urandom = fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    loop {
        let mut bytes = [0u8; 16];
        urandom
            .read_exact(&mut bytes)
            .context("reading /dev/urandom")?;
        let id = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        if !id.starts_with('-') {
            return Ok(id);
        }
    }
}

/// Sends a Metadata v4 request for no topics and returns how many brokers it lists.
/// (v4 is served by every KRaft-capable broker, including 4.x, which dropped v0-v3.)
pub(crate) fn metadata_broker_count(port: u16) -> Result<usize> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
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
    let mut r = Reader(&resp);
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
    fn string(&mut self) -> Result<()> {
        let l = i16::from_be_bytes(self.take(2)?.try_into().expect("2 bytes"));
        if l > 0 {
            self.take(l as usize)?;
        }
        Ok(())
    }
}
