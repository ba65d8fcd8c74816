//! Counters of what the pipeline did, and the summary printed at the end of a run.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use super::group_sync::GroupsSynced;
use super::partition::Acknowledged;
use crate::config::ByteRate;

/// Running totals, kept by the engine.
#[derive(Debug, Default, Clone)]
pub(crate) struct Counters {
    /// Records acknowledged by the target.
    pub(crate) records: u64,
    /// Batch bytes acknowledged by the target.
    pub(crate) bytes: u64,
    /// Batches acknowledged by the target.
    pub(crate) batches: u64,
    /// Control batches (transaction markers) not forwarded.
    pub(crate) control_batches_skipped: u64,
    /// Batches of aborted transactions not forwarded.
    pub(crate) aborted_batches_skipped: u64,
    /// Batches that compaction emptied, not forwarded.
    pub(crate) empty_batches_skipped: u64,
    /// Batches re-encoded before forwarding: compacted with offset gaps,
    /// LogAppendTime, or starting before the fetch position (trimmed to it).
    pub(crate) reencoded_batches: u64,
    /// v2 batches built from old-format (magic 0 and 1) messages.
    pub(crate) up_converted_batches: u64,
    /// Source offsets deleted before they were copied.
    pub(crate) offsets_lost: u64,
    /// Source offsets copied to the target that the source no longer holds:
    /// its log was truncated below them (an unclean leader election).
    pub(crate) offsets_truncated: u64,
    /// Produce requests that failed and were retried.
    pub(crate) produce_retries: u64,
    /// New producer ids taken because the target refused the old one.
    pub(crate) producer_renewals: u64,
    /// Old batches whose answer was lost, found on the target by reading it.
    pub(crate) found_on_target: u64,
    /// Batches the target refused for its topic settings, skipped by policy.
    pub(crate) refused_batches_skipped: u64,
    /// Records in those batches.
    pub(crate) refused_records_skipped: u64,
    /// The most Fetches any source broker had at once (its fetch window).
    pub(crate) most_fetchers: usize,
    /// Batch bytes copied out of Fetch responses to free them.
    pub(crate) bytes_copied: u64,
    /// Exactly-once: transactions committed.
    pub(crate) transactions_committed: u64,
    /// Exactly-once: transactions aborted (their data copied again).
    pub(crate) transactions_aborted: u64,
}

/// What one partition's batches came to: summed by topic for the
/// observation board (`view.rs`), while [`Counters`] keeps the flow's totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tally {
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) batches: u64,
    pub(crate) reencoded: u64,
    pub(crate) up_converted: u64,
    pub(crate) skipped_control: u64,
    pub(crate) skipped_aborted: u64,
    pub(crate) skipped_empty: u64,
    pub(crate) skipped_refused: u64,
}

/// Why a batch was not forwarded, for [`Counters::skipped`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Skipped {
    Control,
    Aborted,
    Empty,
    Refused,
}

impl Counters {
    /// A batch the target acknowledged: counted for the flow and its partition.
    pub(crate) fn landed(&mut self, tally: &mut Tally, acked: Acknowledged) {
        let (records, bytes) = (acked.records as u64, acked.bytes as u64);
        let batches = u64::from(acked.bytes > 0);
        self.records += records;
        self.bytes += bytes;
        self.batches += batches;
        tally.records += records;
        tally.bytes += bytes;
        tally.batches += batches;
    }

    /// A batch not forwarded.
    pub(crate) fn skipped(&mut self, tally: &mut Tally, why: Skipped) {
        let (flow, partition) = match why {
            Skipped::Control => (
                &mut self.control_batches_skipped,
                &mut tally.skipped_control,
            ),
            Skipped::Aborted => (
                &mut self.aborted_batches_skipped,
                &mut tally.skipped_aborted,
            ),
            Skipped::Empty => (&mut self.empty_batches_skipped, &mut tally.skipped_empty),
            Skipped::Refused => (
                &mut self.refused_batches_skipped,
                &mut tally.skipped_refused,
            ),
        };
        *flow += 1;
        *partition += 1;
    }

    /// A batch re-encoded before forwarding.
    pub(crate) fn reencoded(&mut self, tally: &mut Tally) {
        self.reencoded_batches += 1;
        tally.reencoded += 1;
    }

    /// v2 batches built from old-format messages.
    pub(crate) fn up_converted(&mut self, tally: &mut Tally, batches: usize) {
        self.up_converted_batches += batches as u64;
        tally.up_converted += batches as u64;
    }
}

/// A source partition of a flow.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FlowPartition {
    /// The flow's name.
    pub flow: String,
    /// The source topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
}

/// A partition that stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProblem {
    /// The flow the partition belongs to.
    pub flow: String,
    /// The source topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// What happened, in words an operator can act on.
    pub reason: String,
}

/// Progress a run made but could not store as checkpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnsavedCheckpoints {
    /// The flow.
    pub flow: String,
    /// Partitions whose stored checkpoint is behind what the target holds.
    pub partitions: usize,
    /// Source offsets copied past those checkpoints: what a restart copies again.
    pub offsets: u64,
    /// Why they could not be stored.
    pub reason: String,
}

impl fmt::Display for UnsavedCheckpoints {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "CHECKPOINTS NOT STORED [{}]: {} partitions ({} source offsets past their stored checkpoints): {}. \
             A restart resumes them from their stored checkpoints (partitions without one from start_position), \
             so the target gets those offsets' records again",
            self.flow, self.partitions, self.offsets, self.reason
        )
    }
}

/// What one instance copied of a flow whose instances share its partitions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnedPartitions {
    /// The flow.
    pub flow: String,
    /// The partitions it copied (at the end of the run), as `topic-partition`.
    pub partitions: Vec<String>,
    /// The flow's partitions, all told.
    pub of: usize,
}

impl fmt::Display for OwnedPartitions {
    /// "4 of 12 partitions (orders-0, orders-3, ...)", naming up to ten.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const NAMED: usize = 10;
        write!(f, "{} of {} partitions (", self.partitions.len(), self.of)?;
        let named = &self.partitions[..self.partitions.len().min(NAMED)];
        f.write_str(&named.join(", "))?;
        if self.partitions.len() > NAMED {
            f.write_str(", ...")?;
        }
        f.write_str(")")
    }
}

/// What a run did.
#[derive(Debug, Clone)]
pub struct Summary {
    /// Topics replicated.
    pub topics: usize,
    /// Partitions replicated.
    pub partitions: usize,
    /// Records the target acknowledged.
    pub records: u64,
    /// Record batch bytes the target acknowledged.
    pub bytes: u64,
    /// Batches the target acknowledged.
    pub batches: u64,
    /// Transaction markers not forwarded.
    pub control_batches_skipped: u64,
    /// Aborted transactional batches not forwarded.
    pub aborted_batches_skipped: u64,
    /// Batches emptied by compaction, not forwarded.
    pub empty_batches_skipped: u64,
    /// Batches decompressed, re-encoded and recompressed: compacted ones with
    /// offset gaps and LogAppendTime ones (the only batches not forwarded as
    /// the same bytes).
    pub reencoded_batches: u64,
    /// v2 batches built from messages in the old formats (magic 0 and 1),
    /// decoded and re-encoded since Kafka 4 refuses those formats.
    pub up_converted_batches: u64,
    /// Source offsets deleted by retention before they were copied.
    pub offsets_lost: u64,
    /// Source offsets copied to the target that the source no longer holds
    /// (an unclean leader election truncated its log below them).
    pub offsets_truncated: u64,
    /// Produce requests retried.
    pub produce_retries: u64,
    /// New producer ids taken because the target refused the old one (fenced,
    /// its state for us lost, or its sequences disagreeing with ours).
    pub producer_renewals: u64,
    /// Batches of data older than the target's producer expiry whose answer
    /// was lost, found on the target by reading its log (not resent).
    pub found_on_target: u64,
    /// Batches the target refused for its topic settings and that were skipped
    /// (`on_refused_batch = skip`).
    pub refused_batches_skipped: u64,
    /// Records in those batches.
    pub refused_records_skipped: u64,
    /// The most Fetches any source broker had at once: more than one when a
    /// long round trip made the fetch window grow (or when set so).
    pub most_fetchers: usize,
    /// The rate `max_bytes_per_sec` held the flow to (the lower of the
    /// flow's and the process's), when one was set; several flows: see each
    /// flow's totals.
    pub throttle: Option<ByteRate>,
    /// Batch bytes copied in memory, out of the Fetch responses they came in,
    /// so that partitions slower than the others do not keep whole responses
    /// alive. Every other byte goes from the source's socket to the target's
    /// without a copy in the process.
    pub bytes_copied: u64,
    /// Exactly-once: transactions committed.
    pub transactions_committed: u64,
    /// Exactly-once: transactions aborted; what they held was copied again.
    pub transactions_aborted: u64,
    /// Exactly-once: flows that stopped because another instance of the
    /// same name took over their transactional id, with what the target said.
    pub fenced: Vec<String>,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Partitions that stopped with an error.
    pub stopped: Vec<PartitionProblem>,
    /// Source topics deleted while running, no longer copied.
    pub deleted_topics: Vec<String>,
    /// Flows whose final checkpoints could not be stored.
    pub unsaved_checkpoints: Vec<UnsavedCheckpoints>,
    /// What this instance copied of each flow shared with other instances.
    pub owned: Vec<OwnedPartitions>,
    /// Each flow's own totals, when the run had several flows.
    pub flows: Vec<FlowTotals>,
    /// With `until_caught_up`: where the copy of each source partition this
    /// instance copied ends (the next source offset to copy, at least the
    /// source's end when the run began), for `--verify` to read up to.
    pub source_ends: BTreeMap<FlowPartition, i64>,
    /// What the last consumer group offset sync did, when groups are synced.
    pub groups: Option<GroupsSynced>,
}

/// What one flow of a run with several flows did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlowTotals {
    /// The flow's name.
    pub name: String,
    /// Topics it replicated.
    pub topics: usize,
    /// Partitions it replicated.
    pub partitions: usize,
    /// Records the target acknowledged.
    pub records: u64,
    /// Partitions that stopped with an error.
    pub stopped: usize,
    /// The rate `max_bytes_per_sec` held it to, when one was set.
    pub throttle: Option<ByteRate>,
}

impl Summary {
    pub(crate) fn new(
        topics: usize,
        partitions: usize,
        counters: &Counters,
        elapsed: Duration,
        stopped: Vec<PartitionProblem>,
    ) -> Self {
        Summary {
            topics,
            partitions,
            records: counters.records,
            bytes: counters.bytes,
            batches: counters.batches,
            control_batches_skipped: counters.control_batches_skipped,
            aborted_batches_skipped: counters.aborted_batches_skipped,
            empty_batches_skipped: counters.empty_batches_skipped,
            reencoded_batches: counters.reencoded_batches,
            up_converted_batches: counters.up_converted_batches,
            offsets_lost: counters.offsets_lost,
            offsets_truncated: counters.offsets_truncated,
            produce_retries: counters.produce_retries,
            producer_renewals: counters.producer_renewals,
            found_on_target: counters.found_on_target,
            refused_batches_skipped: counters.refused_batches_skipped,
            refused_records_skipped: counters.refused_records_skipped,
            most_fetchers: counters.most_fetchers,
            throttle: None,
            bytes_copied: counters.bytes_copied,
            transactions_committed: counters.transactions_committed,
            transactions_aborted: counters.transactions_aborted,
            fenced: Vec::new(),
            elapsed,
            stopped,
            deleted_topics: Vec::new(),
            unsaved_checkpoints: Vec::new(),
            owned: Vec::new(),
            flows: Vec::new(),
            source_ends: BTreeMap::new(),
            groups: None,
        }
    }

    /// One summary of a run with several flows: the totals of all, and each
    /// flow's own line. The run lasted as long as its longest flow.
    pub(crate) fn combine(mut parts: Vec<(String, Summary)>) -> Summary {
        if parts.len() == 1 {
            if let Some((_, only)) = parts.pop() {
                return only;
            }
        }
        let mut total = Summary::new(0, 0, &Counters::default(), Duration::ZERO, Vec::new());
        for (name, part) in parts {
            total.flows.push(FlowTotals {
                name,
                topics: part.topics,
                partitions: part.partitions,
                records: part.records,
                stopped: part.stopped.len(),
                throttle: part.throttle,
            });
            total.topics += part.topics;
            total.partitions += part.partitions;
            total.records += part.records;
            total.bytes += part.bytes;
            total.batches += part.batches;
            total.control_batches_skipped += part.control_batches_skipped;
            total.aborted_batches_skipped += part.aborted_batches_skipped;
            total.empty_batches_skipped += part.empty_batches_skipped;
            total.reencoded_batches += part.reencoded_batches;
            total.up_converted_batches += part.up_converted_batches;
            total.offsets_lost += part.offsets_lost;
            total.offsets_truncated += part.offsets_truncated;
            total.produce_retries += part.produce_retries;
            total.producer_renewals += part.producer_renewals;
            total.found_on_target += part.found_on_target;
            total.refused_batches_skipped += part.refused_batches_skipped;
            total.refused_records_skipped += part.refused_records_skipped;
            total.most_fetchers = total.most_fetchers.max(part.most_fetchers);
            total.bytes_copied += part.bytes_copied;
            total.transactions_committed += part.transactions_committed;
            total.transactions_aborted += part.transactions_aborted;
            total.fenced.extend(part.fenced);
            total.elapsed = total.elapsed.max(part.elapsed);
            total.stopped.extend(part.stopped);
            total.deleted_topics.extend(part.deleted_topics);
            total.unsaved_checkpoints.extend(part.unsaved_checkpoints);
            total.owned.extend(part.owned);
            total.source_ends.extend(part.source_ends);
            if let Some(groups) = part.groups {
                total
                    .groups
                    .get_or_insert_with(GroupsSynced::default)
                    .add(groups);
            }
        }
        total
    }

    /// Megabytes (10^6 bytes) per second of record batches.
    pub fn megabytes_per_second(&self) -> f64 {
        let seconds = self.elapsed.as_secs_f64();
        if seconds == 0.0 {
            0.0
        } else {
            self.bytes as f64 / 1e6 / seconds
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "replicated {} topics, {} partitions: {} records, {} batches, {:.1} MB in {:.1} s ({:.1} MB/s)",
            self.topics,
            self.partitions,
            self.records,
            self.batches,
            self.bytes as f64 / 1e6,
            self.elapsed.as_secs_f64(),
            self.megabytes_per_second()
        )?;
        writeln!(
            f,
            "skipped: {} transaction markers, {} aborted batches, {} empty batches; {} produce retries",
            self.control_batches_skipped,
            self.aborted_batches_skipped,
            self.empty_batches_skipped,
            self.produce_retries
        )?;
        if self.reencoded_batches > 0 {
            writeln!(
                f,
                "re-encoded: {} batches (compacted with offset gaps, LogAppendTime, or trimmed to the fetch position; same codec)",
                self.reencoded_batches
            )?;
        }
        if self.up_converted_batches > 0 {
            writeln!(
                f,
                "up-converted: {} batches (message formats v0/v1 rebuilt as v2; same codec)",
                self.up_converted_batches
            )?;
        }
        if self.most_fetchers > 1 {
            writeln!(
                f,
                "fetch window: up to {} Fetches at once from a source broker",
                self.most_fetchers
            )?;
        }
        if let Some(rate) = self.throttle {
            writeln!(f, "throttled to {rate} (max_bytes_per_sec)")?;
        }
        if self.bytes_copied > 0 {
            writeln!(
                f,
                "copied in memory: {:.1} MB of batches, to free the Fetch responses slower partitions kept alive",
                self.bytes_copied as f64 / 1e6
            )?;
        }
        if self.producer_renewals > 0 {
            writeln!(
                f,
                "producer: {} new producer ids (the target refused the previous one)",
                self.producer_renewals
            )?;
        }
        if self.transactions_committed + self.transactions_aborted > 0 {
            writeln!(
                f,
                "exactly-once: {} transactions committed, {} aborted (what they held was copied again)",
                self.transactions_committed, self.transactions_aborted
            )?;
        }
        for fenced in &self.fenced {
            writeln!(f, "{fenced}")?;
        }
        for owned in &self.owned {
            if self.flows.is_empty() {
                writeln!(f, "owned {owned}")?;
            } else {
                writeln!(f, "[{}] owned {owned}", owned.flow)?;
            }
        }
        if self.found_on_target > 0 {
            writeln!(
                f,
                "lost answers: {} batches found on the target by reading it, not resent (old data the target may have forgotten our producer for)",
                self.found_on_target
            )?;
        }
        if self.refused_batches_skipped > 0 {
            writeln!(
                f,
                "SKIPPED: {} batches ({} records) the target refused for its topic settings",
                self.refused_batches_skipped, self.refused_records_skipped
            )?;
        }
        if self.offsets_lost > 0 {
            writeln!(
                f,
                "LOST: {} source offsets were deleted before they were copied",
                self.offsets_lost
            )?;
        }
        if !self.deleted_topics.is_empty() {
            writeln!(
                f,
                "deleted on the source while running, no longer copied: {} topics ({})",
                self.deleted_topics.len(),
                self.deleted_topics.join(", ")
            )?;
        }
        if self.offsets_truncated > 0 {
            writeln!(
                f,
                "TRUNCATED: {} source offsets were copied but no longer exist on the source \
                 (its log was truncated below them)",
                self.offsets_truncated
            )?;
        }
        if let Some(groups) = &self.groups {
            write!(f, "{groups}")?;
        }
        for flow in &self.flows {
            writeln!(
                f,
                "flow {}: {} topics, {} partitions: {} records{}{}",
                flow.name,
                flow.topics,
                flow.partitions,
                flow.records,
                flow.throttle
                    .map(|rate| format!(", throttled to {rate}"))
                    .unwrap_or_default(),
                if flow.stopped > 0 {
                    format!(", {} partitions stopped", flow.stopped)
                } else {
                    String::new()
                }
            )?;
        }
        for problem in &self.stopped {
            let flow = if self.flows.is_empty() {
                String::new()
            } else {
                format!("[{}] ", problem.flow)
            };
            writeln!(
                f,
                "STOPPED {flow}{}-{}: {}",
                problem.topic, problem.partition, problem.reason
            )?;
        }
        for unsaved in &self.unsaved_checkpoints {
            writeln!(f, "{unsaved}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(flow: &str, records: u64, seconds: u64, stopped: &[&str]) -> (String, Summary) {
        let counters = Counters {
            records,
            bytes: records * 100,
            batches: records / 10,
            ..Counters::default()
        };
        let stopped = stopped
            .iter()
            .map(|topic| PartitionProblem {
                flow: flow.to_owned(),
                topic: (*topic).to_owned(),
                partition: 0,
                reason: "broken".to_owned(),
            })
            .collect();
        let summary = Summary::new(2, 3, &counters, Duration::from_secs(seconds), stopped);
        (flow.to_owned(), summary)
    }

    #[test]
    fn one_flow_prints_as_before() {
        let (_, alone) = part("source->target", 50, 1, &["orders"]);
        let text = Summary::combine(vec![part("source->target", 50, 1, &["orders"])]).to_string();
        assert_eq!(text, alone.to_string());
        assert!(text.contains("STOPPED orders-0: broken"), "{text}");
        assert!(!text.contains("flow "), "{text}");
    }

    #[test]
    fn every_count_adds_up_across_flows() {
        let flow = |k: u64, fetchers: usize| {
            let counters = Counters {
                control_batches_skipped: k,
                aborted_batches_skipped: k,
                empty_batches_skipped: k,
                reencoded_batches: k,
                up_converted_batches: k,
                offsets_lost: k,
                offsets_truncated: k,
                produce_retries: k,
                producer_renewals: k,
                found_on_target: k,
                refused_batches_skipped: k,
                refused_records_skipped: k,
                transactions_committed: k,
                transactions_aborted: k,
                most_fetchers: fetchers,
                bytes_copied: k * 1_000_000,
                ..Counters::default()
            };
            Summary::new(1, 1, &counters, Duration::ZERO, Vec::new())
        };
        let total = Summary::combine(vec![("a".into(), flow(1, 3)), ("b".into(), flow(2, 1))]);
        let counts = [
            total.control_batches_skipped,
            total.aborted_batches_skipped,
            total.empty_batches_skipped,
            total.reencoded_batches,
            total.up_converted_batches,
            total.offsets_lost,
            total.offsets_truncated,
            total.produce_retries,
            total.producer_renewals,
            total.found_on_target,
            total.refused_batches_skipped,
            total.refused_records_skipped,
            total.transactions_committed,
            total.transactions_aborted,
        ];
        assert_eq!(counts, [3; 14]);
        assert_eq!(total.most_fetchers, 3);
        assert_eq!(total.bytes_copied, 3_000_000);
        let text = total.to_string();
        for line in [
            "fetch window: up to 3 Fetches at once from a source broker",
            "copied in memory: 3.0 MB of batches",
            "exactly-once: 3 transactions committed, 3 aborted",
            "TRUNCATED: 3 source offsets were copied but no longer exist on the source",
        ] {
            assert!(
                text.contains(line),
                "{line}:
{text}"
            );
        }
    }

    #[test]
    fn several_flows_add_up_and_name_each_flow() {
        let total = Summary::combine(vec![
            part("eu->hub", 100, 2, &[]),
            part("us->hub", 30, 5, &["sales"]),
        ]);
        assert_eq!((total.topics, total.partitions, total.records), (4, 6, 130));
        assert_eq!(total.elapsed, Duration::from_secs(5));
        let text = total.to_string();
        for line in [
            "replicated 4 topics, 6 partitions: 130 records, 13 batches",
            "flow eu->hub: 2 topics, 3 partitions: 100 records\n",
            "flow us->hub: 2 topics, 3 partitions: 30 records, 1 partitions stopped",
            "STOPPED [us->hub] sales-0: broken",
        ] {
            assert!(text.contains(line), "{line}:\n{text}");
        }
    }

    #[test]
    fn what_an_instance_owned_is_named_per_flow() {
        let owned = |flow: &str, count: usize| OwnedPartitions {
            flow: flow.into(),
            partitions: (0..count).map(|p| format!("orders-{p}")).collect(),
            of: 24,
        };
        let (name, mut alone) = part("eu->hub", 10, 1, &[]);
        alone.owned.push(owned(&name, 3));
        assert!(
            alone
                .to_string()
                .contains("owned 3 of 24 partitions (orders-0, orders-1, orders-2)\n"),
            "{alone}"
        );
        let (other, mut second) = part("us->hub", 10, 1, &[]);
        second.owned.push(owned(&other, 12));
        let total = Summary::combine(vec![(name, alone), (other, second)]);
        let text = total.to_string();
        assert!(text.contains("[eu->hub] owned 3 of 24"), "{text}");
        assert!(
            text.contains("[us->hub] owned 12 of 24 partitions (orders-0, "),
            "{text}"
        );
        assert!(text.contains("orders-9, ...)\n"), "ten named: {text}");
    }

    #[test]
    fn unsaved_checkpoints_are_carried_and_say_what_a_restart_does() {
        let (name, mut part) = part("eu->hub", 100, 2, &[]);
        part.unsaved_checkpoints.push(UnsavedCheckpoints {
            flow: name.clone(),
            partitions: 6000,
            offsets: 48_000,
            reason: "no leader".into(),
        });
        let total = Summary::combine(vec![(name, part), self::part("us->hub", 30, 5, &[])]);
        assert_eq!(total.unsaved_checkpoints.len(), 1);
        let text = total.to_string();
        assert!(
            text.contains(
                "CHECKPOINTS NOT STORED [eu->hub]: 6000 partitions (48000 source offsets past \
                 their stored checkpoints): no leader. A restart resumes them"
            ),
            "{text}"
        );
    }
}
