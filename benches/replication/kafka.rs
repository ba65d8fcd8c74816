//! The harness's own view of the two clusters, through kafka-mirror's library
//! (metadata, ListOffsets): cheap enough to poll every 100 ms while a tool runs,
//! which a JVM tool per poll would not be on two cores. Topics are created and
//! deleted with confluent-kafka's admin client (testkit).

use std::collections::BTreeMap;
use std::sync::Arc;

use anyhow::{Context, Result};
use kafka_mirror::cluster::{Cluster, Metadata, OffsetSpec, Role};
use kafka_mirror::net::{ConnectionOptions, Connector};
use kafka_testkit::KafkaCluster;
use tokio::runtime::Runtime;

/// ListOffsets' isolation levels.
const READ_UNCOMMITTED: i8 = 0;
const READ_COMMITTED: i8 = 1;

/// End offsets by (topic, partition).
pub(crate) type Ends = BTreeMap<(String, i32), i64>;

/// One cluster, for the harness.
pub(crate) struct Admin {
    cluster: Arc<Cluster>,
    bootstrap: String,
}

impl Admin {
    pub(crate) fn new(role: Role, bootstrap: &str) -> Admin {
        let options = ConnectionOptions {
            client_id: "replication-bench".into(),
            ..ConnectionOptions::default()
        };
        Admin {
            cluster: Cluster::new(role, vec![bootstrap.to_string()], Connector::plain(options)),
            bootstrap: bootstrap.to_string(),
        }
    }

    pub(crate) fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub(crate) fn metadata(&self, rt: &Runtime) -> Result<Metadata> {
        rt.block_on(self.cluster.metadata())
            .with_context(|| format!("metadata from {}", self.bootstrap))
    }

    /// Topics that are not Kafka's own (`__*`).
    pub(crate) fn user_topics(&self, rt: &Runtime) -> Result<Vec<String>> {
        Ok(self
            .metadata(rt)?
            .topics
            .into_keys()
            .filter(|t| !t.starts_with("__"))
            .collect())
    }

    /// High watermarks of every partition of `topics`. A topic that does not exist
    /// yet, or a partition whose leader is not ready (a topic just created), is left out.
    pub(crate) fn end_offsets(&self, rt: &Runtime, topics: &[String]) -> Result<Ends> {
        self.latest_offsets(rt, topics, READ_UNCOMMITTED)
    }

    /// Last stable offsets: how far a read_committed consumer can read (below
    /// the first open transaction), as [`Admin::end_offsets`] otherwise.
    pub(crate) fn stable_offsets(&self, rt: &Runtime, topics: &[String]) -> Result<Ends> {
        self.latest_offsets(rt, topics, READ_COMMITTED)
    }

    fn latest_offsets(&self, rt: &Runtime, topics: &[String], isolation_level: i8) -> Result<Ends> {
        let metadata = self.metadata(rt)?;
        let partitions: Vec<(String, i32)> = topics
            .iter()
            .filter_map(|t| metadata.topics.get(t).map(|m| (t, m)))
            .flat_map(|(t, m)| m.partitions.keys().map(move |p| (t.clone(), *p)))
            .collect();
        let found = rt.block_on(self.cluster.list_offsets(
            &metadata,
            &partitions,
            OffsetSpec::Latest,
            isolation_level,
        ));
        Ok(found
            .into_iter()
            .filter_map(|(tp, r)| r.ok().map(|offset| (tp, offset)))
            .collect())
    }
}

impl Admin {
    /// Waits until every one of the `partitions` partitions of `topics` answers
    /// ListOffsets from its leader: a topic just created can still refuse writes with
    /// NOT_LEADER_OR_FOLLOWER after metadata lists its leaders.
    pub(crate) fn wait_ready(
        &self,
        rt: &Runtime,
        topics: &[String],
        partitions: usize,
    ) -> Result<()> {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while self.end_offsets(rt, topics)?.len() < partitions {
            if std::time::Instant::now() > deadline {
                anyhow::bail!("{topics:?} not ready on {} after 60 s", self.bootstrap);
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        Ok(())
    }
}

/// Deletes every topic on `cluster` that is not Kafka's own and not in `keep`.
pub(crate) fn delete_topics_except(
    rt: &Runtime,
    admin: &Admin,
    cluster: &KafkaCluster,
    keep: &[String],
) -> Result<()> {
    for topic in admin.user_topics(rt)? {
        if !keep.contains(&topic) {
            cluster
                .delete_topic(&topic)
                .with_context(|| format!("deleting {topic}"))?;
        }
    }
    Ok(())
}

/// Sum of the end offsets per topic.
pub(crate) fn per_topic(ends: &Ends) -> BTreeMap<&str, i64> {
    let mut sums = BTreeMap::new();
    for ((topic, _), end) in ends {
        *sums.entry(topic.as_str()).or_default() += end;
    }
    sums
}

/// Records per topic on `cluster` as Kafka's own GetOffsetShell reports them (end
/// offsets summed): the check after each run that does not rely on our code.
pub(crate) fn offsets_by_kafka_tool(
    cluster: &KafkaCluster,
    topics: &[String],
) -> Result<BTreeMap<String, i64>> {
    let out = cluster.run_tool(
        "org.apache.kafka.tools.GetOffsetShell",
        [
            "--bootstrap-server".to_string(),
            cluster.bootstrap(),
            "--topic".into(),
            format!("^({})$", topics.join("|")),
        ],
    )?;
    let mut sums = BTreeMap::new();
    for line in out.stdout.lines().filter(|l| !l.trim().is_empty()) {
        // topic:partition:offset (topic names here have no ':')
        let mut fields = line.rsplitn(3, ':');
        let (Some(offset), Some(_), Some(topic)) = (fields.next(), fields.next(), fields.next())
        else {
            anyhow::bail!("unexpected GetOffsetShell line {line:?}");
        };
        let offset: i64 = offset
            .parse()
            .with_context(|| format!("GetOffsetShell line {line:?}"))?;
        *sums.entry(topic.to_string()).or_default() += offset;
    }
    Ok(sums)
}
