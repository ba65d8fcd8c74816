//! Consumer groups, through clients nobody here wrote: reading a topic as a group
//! member with librdkafka (`clients/consume_group.py`) or with Kafka's own Java
//! consumer (`kafka-console-consumer`), keeping a Java member in a group, and reading
//! or setting a group's committed offsets with Kafka's `kafka-consumer-groups`
//! (ConsumerGroupCommand), and groups of other protocol types: listed by Kafka's
//! `kafka-groups`, described with kafka-python's admin client.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tempfile::TempDir;

use crate::cluster::KafkaCluster;
use crate::dist::KafkaDist;
use crate::process::{wait_until, Watched};
use crate::python::{parse_records, Venv};
use crate::{DumpedRecord, TimestampType};

/// `kafka-consumer-groups` (in `org.apache.kafka.tools` since 3.8).
const CONSUMER_GROUP_COMMAND: &str = "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand";
/// `kafka-groups` (Kafka 4.0+): groups of every type and protocol.
const GROUPS_COMMAND: &str = "org.apache.kafka.tools.GroupsCommand";

/// How long the Java consumer waits for a record before it stops reading.
const JAVA_IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the Java consumer's formatter prints for a null key, value or header value.
/// A real value with exactly these bytes would read back as null.
const NULL_LITERAL: &str = "kafka-testkit:null";

/// Separates a record's headers in the Java consumer's output: a control character,
/// which never appears in the escaped values.
const HEADERS_SEPARATOR: char = '\u{1f}';

/// A consumer's isolation level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isolation {
    ReadUncommitted,
    ReadCommitted,
}

impl Isolation {
    /// The name both librdkafka and the Java consumer use.
    pub fn as_str(self) -> &'static str {
        match self {
            Isolation::ReadUncommitted => "read_uncommitted",
            Isolation::ReadCommitted => "read_committed",
        }
    }
}

/// Reads `topic` as a member of `group` with confluent-kafka (librdkafka): from the
/// group's committed offsets (the beginning where it has none), up to `max_records`
/// records or until every partition is at its end, then commits, with explicit
/// offsets, the offset after the last record returned of each partition that
/// returned any (auto-commit off), and leaves the group. A partial read is shared
/// out between the partitions (small fetches, and a partition that returned its
/// share waits for the others), so it stops inside every partition. Returns the
/// records in the order they were returned.
pub fn consume_group_with_librdkafka(
    bootstrap: &str,
    group: &str,
    topic: &str,
    max_records: u64,
    isolation: Isolation,
) -> Result<Vec<DumpedRecord>> {
    let args = [
        "--bootstrap",
        bootstrap,
        "--group",
        group,
        "--topic",
        topic,
        "--max-records",
        &max_records.to_string(),
        "--isolation",
        isolation.as_str(),
    ]
    .map(String::from);
    parse_records(&Venv::get()?.run_client("consume_group.py", &args)?)
}

/// Reads `topic` as a member of `group` with Kafka's Java consumer
/// (`kafka-console-consumer --group`): from the group's committed offsets (the
/// beginning where it has none), up to `max_records` records, or fewer when none
/// arrives for 20 s (so pass the count expected when reading to the end). It
/// auto-commits; on exit it seeks back to the first record it did not print and the
/// close commits that position, so the group's committed offsets end right after the
/// records returned (read them with [`committed_offsets`] to be sure). Fetches are
/// small (about one batch per partition), so the partitions take turns and a
/// partial read stops inside every partition. Returns the records in the order
/// they were printed.
///
/// The formatter prints keys, values and header values escaped by Kafka's
/// `BytesDeserializer` (printable ASCII as is, every other byte as `\xNN`) and null as
/// `kafka-testkit:null`; header names must hold no `:`, tab or newline.
pub fn consume_group_with_java(
    dist: &KafkaDist,
    bootstrap: &str,
    group: &str,
    topic: &str,
    max_records: u64,
    isolation: Isolation,
) -> Result<Vec<DumpedRecord>> {
    if max_records == 0 {
        return Ok(Vec::new());
    }
    let mut args = vec![
        "--bootstrap-server".to_string(),
        bootstrap.into(),
        "--group".into(),
        group.into(),
        "--topic".into(),
        topic.into(),
        "--from-beginning".into(),
        "--max-messages".into(),
        max_records.min(i32::MAX as u64).to_string(),
        "--timeout-ms".into(),
        JAVA_IDLE_TIMEOUT.as_millis().to_string(),
        "--isolation-level".into(),
        isolation.as_str().into(),
    ];
    args.extend(console_consumer_properties(
        dist,
        &["max.partition.fetch.bytes=1024"],
    ));
    let formatter_flag = if dist.major() >= 4 {
        "--formatter-property"
    } else {
        "--property"
    };
    let bytes = "org.apache.kafka.common.serialization.BytesDeserializer";
    for prop in [
        "print.timestamp=true".to_string(),
        "print.partition=true".into(),
        "print.offset=true".into(),
        "print.headers=true".into(),
        "print.key=true".into(),
        "print.value=true".into(),
        format!("key.deserializer={bytes}"),
        format!("value.deserializer={bytes}"),
        format!("headers.deserializer={bytes}"),
        format!("null.literal={NULL_LITERAL}"),
        format!("headers.separator={HEADERS_SEPARATOR}"),
    ] {
        args.extend([formatter_flag.to_string(), prop]);
    }
    let out = dist.run_tool(dist.console_consumer_class(), args)?;
    out.stdout
        .lines()
        .filter(|l| !l.is_empty())
        .map(|l| parse_console_line(l).with_context(|| format!("console consumer printed {l:?}")))
        .collect()
}

/// `--command-property k=v` (`--consumer-property` before Kafka 4) for each setting.
fn console_consumer_properties(dist: &KafkaDist, settings: &[&str]) -> Vec<String> {
    let flag = if dist.major() >= 4 {
        "--command-property"
    } else {
        "--consumer-property"
    };
    settings
        .iter()
        .flat_map(|s| [flag.to_string(), s.to_string()])
        .collect()
}

/// One line of the formatter set up in [`consume_group_with_java`]:
/// `<type>:<ts>\tPartition:<p>\tOffset:<o>\t<headers>\t<key>\t<value>`.
fn parse_console_line(line: &str) -> Result<DumpedRecord> {
    let fields: Vec<&str> = line.split('\t').collect();
    let [timestamp, partition, offset, headers, key, value] = fields[..] else {
        bail!("expected 6 tab-separated fields, got {}", fields.len());
    };
    let (timestamp_type, timestamp) = match timestamp.split_once(':') {
        None if timestamp == "NO_TIMESTAMP" => (TimestampType::NotAvailable, -1),
        Some(("CreateTime", ts)) => (TimestampType::CreateTime, ts.parse()?),
        Some(("LogAppendTime", ts)) => (TimestampType::LogAppendTime, ts.parse()?),
        _ => bail!("bad timestamp {timestamp:?}"),
    };
    let field = |text: &str, name: &str| -> Result<i64> {
        text.strip_prefix(name)
            .ok_or_else(|| anyhow!("expected {name}..., got {text:?}"))?
            .parse()
            .with_context(|| format!("bad {name}"))
    };
    let headers = if headers == "NO_HEADERS" {
        Vec::new()
    } else {
        headers
            .split(HEADERS_SEPARATOR)
            .map(|h| {
                let (name, value) = h
                    .split_once(':')
                    .ok_or_else(|| anyhow!("header without `:`: {h:?}"))?;
                Ok((name.to_string(), unescape(value)?))
            })
            .collect::<Result<_>>()?
    };
    Ok(DumpedRecord {
        partition: i32::try_from(field(partition, "Partition:")?)?,
        offset: field(offset, "Offset:")?,
        key: unescape(key)?,
        value: unescape(value)?,
        headers,
        timestamp_type,
        timestamp,
    })
}

/// Undoes `org.apache.kafka.common.utils.Bytes#toString` (every byte outside
/// printable ASCII, and `\`, as `\xNN`); [`NULL_LITERAL`] is null.
fn unescape(text: &str) -> Result<Option<Vec<u8>>> {
    if text == NULL_LITERAL {
        return Ok(None);
    }
    let raw = text.as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' {
            let hex = raw
                .get(i + 2..i + 4)
                .filter(|_| raw.get(i + 1) == Some(&b'x'))
                .ok_or_else(|| anyhow!("bad escape at {i} in {text:?}"))?;
            bytes.push(u8::from_str_radix(std::str::from_utf8(hex)?, 16)?);
            i += 4;
        } else {
            bytes.push(raw[i]);
            i += 1;
        }
    }
    Ok(Some(bytes))
}

/// `group`'s committed offsets on `cluster`, by (topic, partition), as
/// `kafka-consumer-groups --describe --offsets` lists them; empty when the group has
/// none (or does not exist). Partitions a member holds without a committed offset are
/// left out.
pub fn committed_offsets(
    cluster: &KafkaCluster,
    group: &str,
) -> Result<BTreeMap<(String, i32), i64>> {
    let out = describe_group(cluster, group, "--offsets")?;
    let mut lines = out.lines().skip_while(|l| !l.starts_with("GROUP"));
    let Some(header) = lines.next() else {
        return Ok(BTreeMap::new());
    };
    let mut offsets = BTreeMap::new();
    for [topic, partition, offset] in
        table_cells(header, lines, ["TOPIC", "PARTITION", "CURRENT-OFFSET"])?
    {
        if offset == "-" {
            continue;
        }
        offsets.insert((topic.to_string(), partition.parse()?), offset.parse()?);
    }
    Ok(offsets)
}

/// The `wanted` columns of each row of a table a Kafka tool printed: a
/// `header` of column names, then `rows` of whitespace-separated cells
/// (blank lines skipped).
fn table_cells<'a, const N: usize>(
    header: &str,
    rows: impl Iterator<Item = &'a str>,
    wanted: [&str; N],
) -> Result<Vec<[&'a str; N]>> {
    let columns: Vec<&str> = header.split_whitespace().collect();
    let mut at = [0; N];
    for (i, name) in wanted.iter().enumerate() {
        at[i] = columns
            .iter()
            .position(|c| c == name)
            .ok_or_else(|| anyhow!("no {name} column in {header:?}"))?;
    }
    rows.filter(|l| !l.trim().is_empty())
        .map(|line| {
            let row: Vec<&str> = line.split_whitespace().collect();
            let mut cells = [""; N];
            for (cell, &i) in cells.iter_mut().zip(&at) {
                *cell = row
                    .get(i)
                    .copied()
                    .ok_or_else(|| anyhow!("short row {line:?}"))?;
            }
            Ok(cells)
        })
        .collect()
}

/// How many members `group` has on `cluster` (`kafka-consumer-groups --describe
/// --state`); 0 when it has none or does not exist.
pub fn group_members(cluster: &KafkaCluster, group: &str) -> Result<usize> {
    let out = describe_group(cluster, group, "--state")?;
    // GROUP  COORDINATOR (ID)  ASSIGNMENT-STRATEGY  STATE  #MEMBERS: the count is last.
    let Some(row) = out.lines().skip_while(|l| !l.starts_with("GROUP")).nth(1) else {
        return Ok(0);
    };
    let count = row.split_whitespace().last().unwrap_or_default();
    count
        .parse()
        .with_context(|| format!("no member count in {row:?}"))
}

/// `kafka-consumer-groups --describe --group <group> <what>`; a group that does not
/// exist gives no output.
fn describe_group(cluster: &KafkaCluster, group: &str, what: &str) -> Result<String> {
    let out = cluster.run_tool(
        CONSUMER_GROUP_COMMAND,
        [
            "--bootstrap-server",
            &cluster.bootstrap(),
            "--describe",
            "--group",
            group,
            what,
        ],
    );
    match out {
        Ok(out) if out.stderr.contains("does not exist") => Ok(String::new()),
        Ok(out) => Ok(out.stdout),
        Err(e) if format!("{e:#}").contains("does not exist") => Ok(String::new()),
        Err(e) => Err(e),
    }
}

/// A group as DescribeGroups shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DescribedGroup {
    /// `Stable`, `PreparingRebalance`, `CompletingRebalance`, `Empty`, `Dead`.
    pub state: String,
    /// `consumer`, `connect`, or any other client's own.
    pub protocol_type: String,
    /// The protocol the coordinator chose (a consumer group's assignor).
    pub protocol: String,
    /// The members, in the coordinator's order.
    pub members: Vec<DescribedMember>,
}

/// A member of a [`DescribedGroup`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DescribedMember {
    /// The id the coordinator gave it.
    pub member_id: String,
    /// Its group instance id, if static.
    pub group_instance_id: Option<String>,
    /// The client id it connected with.
    pub client_id: String,
}

/// Describes `group` (of any protocol type) with kafka-python's admin client
/// (`clients/describe_group.py`): `kafka-consumer-groups --describe` refuses
/// groups that are not consumer groups.
pub fn describe_group_with_kafka_python(bootstrap: &str, group: &str) -> Result<DescribedGroup> {
    let args = ["--bootstrap", bootstrap, "--group", group].map(String::from);
    let out = Venv::get()?.run_client("describe_group.py", &args)?;
    serde_json::from_str(out.trim()).with_context(|| format!("describe_group.py printed {out:?}"))
}

/// The groups of protocol type `protocol` on `cluster` with their types
/// (`classic`, `consumer`, ...), as Kafka's `kafka-groups --list --protocol`
/// (GroupsCommand, Kafka 4.0+) lists them.
pub fn groups_of_protocol(cluster: &KafkaCluster, protocol: &str) -> Result<Vec<(String, String)>> {
    let out = cluster.run_tool(
        GROUPS_COMMAND,
        [
            "--bootstrap-server",
            &cluster.bootstrap(),
            "--list",
            "--protocol",
            protocol,
        ],
    )?;
    // GROUP  TYPE  PROTOCOL, one row per group.
    let mut rows = out.stdout.lines().skip_while(|l| !l.starts_with("GROUP"));
    let header = rows
        .next()
        .ok_or_else(|| anyhow!("no header in kafka-groups' output:\n{}", out.stdout))?;
    let mut groups = Vec::new();
    for [group, kind, listed_protocol] in table_cells(header, rows, ["GROUP", "TYPE", "PROTOCOL"])?
    {
        if listed_protocol != protocol {
            bail!("kafka-groups --protocol {protocol} listed {group} {kind} {listed_protocol}");
        }
        groups.push((group.to_owned(), kind.to_owned()));
    }
    Ok(groups)
}

/// Gives `group` the committed offset `offset` for `topic`-`partition` without
/// consuming (`kafka-consumer-groups --reset-offsets --to-offset --execute`). The
/// group must have no members; the tool keeps the offset within the partition's
/// log start and end.
pub fn set_committed_offset(
    cluster: &KafkaCluster,
    group: &str,
    topic: &str,
    partition: i32,
    offset: i64,
) -> Result<()> {
    let out = cluster.run_tool(
        CONSUMER_GROUP_COMMAND,
        [
            "--bootstrap-server".to_string(),
            cluster.bootstrap(),
            "--reset-offsets".into(),
            "--group".into(),
            group.into(),
            "--topic".into(),
            format!("{topic}:{partition}"),
            "--to-offset".into(),
            offset.to_string(),
            "--execute".into(),
        ],
    )?;
    // It prints `GROUP TOPIC PARTITION NEW-OFFSET` rows, or why it did nothing
    // (an active group) with exit code 0.
    let done = out.stdout.lines().any(|l| {
        let row: Vec<&str> = l.split_whitespace().collect();
        row.len() == 4 && row[0] == group && row[1] == topic && row[2] == partition.to_string()
    });
    if !done {
        bail!(
            "kafka-consumer-groups did not reset {group} on {topic}-{partition}:\n{}\n{}",
            out.stdout,
            out.stderr
        );
    }
    Ok(())
}

/// A Java consumer (`kafka-console-consumer`) kept running in a group, reading a topic
/// without committing (auto-commit off), so the group has an active member. Killed
/// when dropped; [`leave`](Self::leave) stops it cleanly.
#[derive(Debug)]
pub struct GroupMember {
    process: Watched,
    /// Holds the consumer's log.
    dir: TempDir,
}

impl GroupMember {
    /// Starts the consumer in `group` on `topic` and waits until the group lists it as
    /// a member (60 s at most).
    pub fn join(cluster: &KafkaCluster, group: &str, topic: &str) -> Result<GroupMember> {
        let dist = cluster.dist();
        let dir = tempfile::Builder::new()
            .prefix("kafka-testkit-member-")
            .tempdir()?;
        let mut cmd = dist.tool_command(dist.console_consumer_class());
        cmd.args([
            "--bootstrap-server",
            &cluster.bootstrap(),
            "--group",
            group,
            "--topic",
            topic,
        ])
        .args(console_consumer_properties(
            dist,
            &["enable.auto.commit=false"],
        ));
        let process = Watched::spawn(cmd, &dir.path().join("consumer.log"), None)?;
        let mut member = GroupMember { process, dir };
        let mut last = Ok(0);
        let joined = wait_until(Duration::from_secs(60), Duration::from_millis(500), || {
            last = group_members(cluster, group);
            matches!(last, Ok(n) if n > 0) || !member.process.is_running()
        });
        if !joined || !member.process.is_running() {
            let log =
                std::fs::read_to_string(member.dir.path().join("consumer.log")).unwrap_or_default();
            bail!("the Java consumer did not join {group} ({last:?}); its output:\n{log}");
        }
        Ok(member)
    }

    /// Stops the consumer with SIGTERM: it leaves the group as it closes.
    pub fn leave(mut self) {
        self.process.stop(Duration::from_secs(30));
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        self.process.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_lines_parse_back_to_the_bytes() {
        let line = "CreateTime:1700000000123\tPartition:2\tOffset:41\t\
                    trace-id:t-1\u{1f}bin:\\x00,\\xFF\\x5C\u{1f}empty:kafka-testkit:null\t\
                    key-1\t{\"a\":1}";
        let r = parse_console_line(line).unwrap();
        assert_eq!(r.partition, 2);
        assert_eq!(r.offset, 41);
        assert_eq!(r.timestamp_type, TimestampType::CreateTime);
        assert_eq!(r.timestamp, 1_700_000_000_123);
        assert_eq!(r.key.as_deref(), Some(&b"key-1"[..]));
        assert_eq!(r.value.as_deref(), Some(&b"{\"a\":1}"[..]));
        assert_eq!(
            r.headers,
            vec![
                ("trace-id".to_string(), Some(b"t-1".to_vec())),
                ("bin".to_string(), Some(vec![0, b',', 255, b'\\'])),
                ("empty".to_string(), None),
            ]
        );
        let r = parse_console_line(
            "LogAppendTime:5\tPartition:0\tOffset:0\tNO_HEADERS\tkafka-testkit:null\t",
        )
        .unwrap();
        assert_eq!(
            (r.key, r.value, r.headers),
            (None, Some(Vec::new()), Vec::new())
        );
        assert!(parse_console_line("Partition:0\tOffset:0").is_err());
        assert!(unescape("\\x4").is_err());
    }
}
