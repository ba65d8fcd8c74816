//! One cluster node on disk and on the network: its ports and directory, what its
//! `server.properties` says, and formatting its KRaft storage before the first start.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::thread;

use anyhow::{anyhow, Context, Result};

use crate::cluster::ClusterSpec;
use crate::dist::KafkaDist;
use crate::ports::{free_ports, loopback};
use crate::properties::write_properties;
use crate::zookeeper;

/// Where a node keeps the cluster's metadata.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Quorum {
    /// KRaft: the node is also a controller, listening on this port.
    Controller(u16),
    /// ZooKeeper mode: the port of the cluster's ZooKeeper server.
    ZooKeeper(u16),
}

#[derive(Debug)]
pub(crate) struct NodeLayout {
    pub(crate) id: usize,
    pub(crate) broker_port: u16,
    pub(crate) quorum: Quorum,
    /// Ports of `ClusterSpec::extra_listeners`, by listener name.
    pub(crate) extra_ports: BTreeMap<String, u16>,
    pub(crate) dir: PathBuf,
}

impl NodeLayout {
    pub(crate) fn props_file(&self) -> PathBuf {
        self.dir.join("server.properties")
    }
    pub(crate) fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }
    pub(crate) fn log_file(&self) -> PathBuf {
        self.dir.join("broker.log")
    }
}

/// Free ports and a `node-<i>` directory under `root` for every node of `spec`;
/// in ZooKeeper mode also the ZooKeeper server's port.
pub(crate) fn plan(spec: &ClusterSpec, root: &Path) -> Result<(Vec<NodeLayout>, Option<u16>)> {
    // The broker port, the controller's (KRaft), then the extra listeners'.
    let own_ports = if spec.zookeeper { 1 } else { 2 };
    let per_node = own_ports + spec.extra_listeners.len();
    let mut ports = free_ports(spec.nodes * per_node + usize::from(spec.zookeeper))?;
    let zookeeper_port = if spec.zookeeper { ports.pop() } else { None };
    let layout = (0..spec.nodes)
        .map(|i| NodeLayout {
            id: i,
            broker_port: ports[per_node * i],
            quorum: match zookeeper_port {
                Some(port) => Quorum::ZooKeeper(port),
                None => Quorum::Controller(ports[per_node * i + 1]),
            },
            extra_ports: spec
                .extra_listeners
                .iter()
                .enumerate()
                .map(|(j, (name, _))| (name.clone(), ports[per_node * i + own_ports + j]))
                .collect(),
            dir: root.join(format!("node-{i}")),
        })
        .collect();
    Ok((layout, zookeeper_port))
}

/// Creates each node's data directory and writes its `server.properties`: the kit's
/// defaults, overridden key by key by `spec.broker_props`.
pub(crate) fn write_server_properties(spec: &ClusterSpec, layout: &[NodeLayout]) -> Result<()> {
    let voters = layout
        .iter()
        .filter_map(|n| match n.quorum {
            Quorum::Controller(port) => Some(format!("{}@{}", n.id, loopback(port))),
            Quorum::ZooKeeper(_) => None,
        })
        .collect::<Vec<_>>()
        .join(",");
    let rf = spec.nodes.min(3);
    let min_isr = if rf >= 3 { 2 } else { 1 };
    for n in layout {
        fs::create_dir_all(n.data_dir())?;
        let mut props: BTreeMap<String, String> = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            props.insert(k.to_string(), v);
        };
        let mut listeners = format!("PLAINTEXT://{}", loopback(n.broker_port));
        let mut advertised = listeners.clone();
        let mut protocols = String::from("PLAINTEXT:PLAINTEXT");
        match n.quorum {
            Quorum::Controller(controller_port) => {
                set("process.roles", "broker,controller".into());
                set("node.id", n.id.to_string());
                set("controller.quorum.voters", voters.clone());
                set("controller.listener.names", "CONTROLLER".into());
                listeners.push_str(&format!(",CONTROLLER://{}", loopback(controller_port)));
                protocols.push_str(",CONTROLLER:PLAINTEXT");
            }
            Quorum::ZooKeeper(port) => {
                for (k, v) in zookeeper::broker_settings(n.id, port) {
                    set(k, v);
                }
            }
        }
        for (name, protocol) in &spec.extra_listeners {
            let addr = loopback(n.extra_ports[name]);
            listeners.push_str(&format!(",{name}://{addr}"));
            // The listener's entries are taken in node order: node i shows the i-th.
            let shown = spec
                .advertise
                .iter()
                .filter(|(listener, _)| listener == name)
                .nth(n.id)
                .map_or_else(|| addr.to_string(), |(_, a)| a.clone());
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
        // kafka-mirror instances sharing a name form a group; tests run them
        // with short session timeouts so that a killed one is replaced fast.
        set("group.min.session.timeout.ms", "1000".into());
        set("auto.create.topics.enable", "false".into());
        set("num.network.threads", "2".into());
        set("num.io.threads", "4".into());
        set("num.recovery.threads.per.data.dir", "1".into());
        set("log.cleaner.dedupe.buffer.size", "8388608".into());
        for (k, v) in &spec.broker_props {
            set(k, v.clone());
        }
        write_properties(&n.props_file(), &props.into_iter().collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Formats every node's KRaft storage for `cluster_id`, in parallel (a JVM start
/// each). `extra_args` go to the storage tool's `format`.
pub(crate) fn format_storage(
    dist: &KafkaDist,
    cluster_id: &str,
    layout: &[NodeLayout],
    extra_args: &[String],
) -> Result<()> {
    let results: Vec<Result<()>> = thread::scope(|s| {
        let handles: Vec<_> = layout
            .iter()
            .map(|n| s.spawn(move || format_node(dist, cluster_id, n, extra_args)))
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow!("format thread panicked")))
            })
            .collect()
    });
    results.into_iter().collect()
}

fn format_node(
    dist: &KafkaDist,
    cluster_id: &str,
    n: &NodeLayout,
    extra_args: &[String],
) -> Result<()> {
    let mut args = vec![
        "format".into(),
        "-t".into(),
        cluster_id.into(),
        "-c".into(),
        n.props_file().into_os_string(),
    ];
    args.extend(extra_args.iter().map(Into::into));
    dist.run_tool(dist.storage_tool_class(), args)
        .map(drop)
        .with_context(|| format!("formatting node {} with Kafka {}", n.id, dist.version()))
}

/// A Kafka cluster id: 16 random bytes, URL-safe base64 without padding (22 chars).
/// Like Kafka's own `Uuid.randomUuid`, never one that starts with '-': the
/// storage tool would take it for an option (seen as a flaky cluster start).
pub(crate) fn random_cluster_id() -> Result<String> {
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
