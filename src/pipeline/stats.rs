//! Counters of what the pipeline did, and the summary printed at the end of a run.

use std::fmt;
use std::time::Duration;

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
    /// Batches re-encoded before forwarding: compacted with offset gaps, or LogAppendTime.
    pub(crate) reencoded_batches: u64,
    /// v2 batches built from old-format (magic 0 and 1) messages.
    pub(crate) up_converted_batches: u64,
    /// Source offsets deleted before they were copied.
    pub(crate) offsets_lost: u64,
    /// Produce requests that failed and were retried.
    pub(crate) produce_retries: u64,
}

/// A partition that stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionProblem {
    /// The source topic.
    pub topic: String,
    /// The partition.
    pub partition: i32,
    /// What happened, in words an operator can act on.
    pub reason: String,
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
    /// Produce requests retried.
    pub produce_retries: u64,
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Partitions that stopped with an error.
    pub stopped: Vec<PartitionProblem>,
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
            produce_retries: counters.produce_retries,
            elapsed,
            stopped,
        }
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
                "re-encoded: {} batches (compacted with offset gaps, or LogAppendTime; same codec)",
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
        if self.offsets_lost > 0 {
            writeln!(
                f,
                "LOST: {} source offsets were deleted before they were copied",
                self.offsets_lost
            )?;
        }
        for problem in &self.stopped {
            writeln!(
                f,
                "STOPPED {}-{}: {}",
                problem.topic, problem.partition, problem.reason
            )?;
        }
        Ok(())
    }
}
