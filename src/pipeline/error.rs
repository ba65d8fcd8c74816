//! Why a partition stopped: [`PartitionError`], the topic and partition it
//! happened to, and a [`Cause`] that keeps the facts (error codes, offsets,
//! the batch error) rather than a sentence.
//!
//! Its `Display` is the sentence an operator reads in the log and the run
//! summary; the wording is part of the interface (tests and scripts look for
//! it), so each cause writes exactly one. [`PartitionError::problem`] is the
//! sentence without the advice on how to go on, for the logs of a policy
//! that goes on by itself (`on_data_loss = continue`, `on_refused_batch = skip`).

use std::fmt;
use std::sync::Arc;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use crate::batch::{BatchError, TimestampType};

/// Whole batches a partition resends after the target refused them as
/// corrupt (damage on the way there) before it stops: past that, the target
/// cannot read what the source stored, and resending will not change it.
pub(super) const CORRUPT_RESEND_LIMIT: u32 = 3;

/// A failure that stops one partition (or, for a refused producer id, makes
/// the mirror take a new one); other partitions go on.
#[derive(Debug, thiserror::Error)]
#[error("{}{}", self.problem(), self.advice())]
pub(crate) struct PartitionError {
    /// The source topic.
    pub(super) topic: Arc<str>,
    pub(super) partition: i32,
    pub(super) cause: Cause,
}

/// What went wrong, with the offsets where they are known.
#[derive(Debug)]
#[non_exhaustive]
pub(crate) enum Cause {
    /// The source answered a Fetch at `offset` with an error no retry fixes.
    FetchRefused { error: ResponseError, offset: i64 },
    /// The fetched bytes at the fetch position `offset` cannot be used
    /// (damaged, cut inside a header, an unknown format).
    Unusable { offset: i64, error: BatchError },
    /// Old-format (magic 0 or 1) messages could not be rebuilt as a v2 batch.
    UpConvert {
        magic: i8,
        offset: i64,
        error: BatchError,
    },
    /// A batch that must be re-encoded (offset gaps, LogAppendTime) could not be.
    Reencode {
        offset: i64,
        records: i32,
        offsets: i64,
        timestamp_type: TimestampType,
        error: BatchError,
    },
    /// The target refused a batch.
    TargetRefused(Refusal),
    /// Retention deleted source offsets `from..=to` before they were copied.
    DeletedBeforeCopied { from: i64, to: i64 },
    /// The source's log ends at `log_end`, before the mirror's `next` offset:
    /// it lost data that was already copied.
    SourceTruncated { next: i64, log_end: i64 },
    /// The source's log diverges from the copy at `from` (`epoch`, the
    /// largest leader epoch the source still has up to ours, ends there): an
    /// unclean leader election truncated it, and source offsets `from..=to`,
    /// copied to the target, no longer exist on the source.
    SourceDiverged { from: i64, to: i64, epoch: i32 },
    /// The source topic was deleted and created again: its id changed.
    TopicRecreated { copied_from: Uuid, now: Uuid },
    /// Taken over from another instance of the mirror's name, whose
    /// checkpoint of it was written while copying source cluster `stored`.
    OtherSourceCluster { stored: String, current: String },
    /// To be taken over from another instance, but the checkpoints could
    /// not be read (`reason`), and reading again will not help.
    CheckpointUnreadable { reason: String },
}

/// A batch the target refused: the source offsets it held, the error code
/// and the broker's message, and what kind of refusal it was.
#[derive(Debug)]
pub(crate) struct Refusal {
    /// The batch's source offsets `start..end` (exclusive end), when known.
    pub(super) range: Option<(i64, i64)>,
    pub(super) error: Option<ResponseError>,
    /// The broker's error message, if it sent one.
    pub(super) message: Option<String>,
    pub(super) kind: RefusalKind,
}

/// Why the refusal matters, which decides the advice given.
#[derive(Debug)]
pub(crate) enum RefusalKind {
    /// The target topic's settings refuse the batch (`on_refused_batch` decides).
    ByTopic,
    /// The batch failed its CRC on the target: `damage` is what our copy of
    /// the source batch shows (`None`: it left whole).
    Corrupt { damage: Option<BatchError> },
    /// The target no longer takes the mirror's producer id, or its sequences
    /// disagree with ours: the reason a new producer id is taken.
    ProducerIdentity,
    /// As `ProducerIdentity`, while the batch named may already be on the
    /// target (its answer was lost): no answer under the old id can tell any
    /// more, and a new id could write it twice, so the partition stops.
    OutcomeUnknown,
    /// Any other error no retry fixes.
    Fatal,
}

impl PartitionError {
    pub(super) fn new(topic: Arc<str>, partition: i32, cause: Cause) -> Self {
        PartitionError {
            topic,
            partition,
            cause,
        }
    }

    /// What happened, without the advice on how to go on.
    pub(super) fn problem(&self) -> Problem<'_> {
        Problem(self)
    }

    /// How an operator goes on from a stop: the policy flag that would have
    /// gone on by itself.
    fn advice(&self) -> String {
        match &self.cause {
            Cause::TopicRecreated { .. } => "; to copy the new topic on top of the old copy, restart with --on-data-loss continue".to_owned(),
            Cause::DeletedBeforeCopied { to, .. } => format!(
                "; restart with --on-data-loss continue to copy on from offset {}",
                to + 1
            ),
            Cause::SourceTruncated { log_end, .. } => format!(
                "; restart with --on-data-loss continue to copy on from offset {log_end}"
            ),
            Cause::SourceDiverged { from, .. } => format!(
                "; restart with --on-data-loss continue to copy on from offset {from}"
            ),
            Cause::TargetRefused(Refusal {
                kind: RefusalKind::ByTopic,
                ..
            }) => "; change the target topic's settings, or restart with --on-refused-batch skip"
                .to_owned(),
            _ => String::new(),
        }
    }
}

/// [`PartitionError`] without its advice.
#[derive(Debug)]
pub(super) struct Problem<'a>(&'a PartitionError);

impl fmt::Display for Problem<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let PartitionError {
            topic,
            partition,
            cause,
        } = self.0;
        match cause {
            Cause::FetchRefused { error, offset } => write!(
                f,
                "source answered {error:?} to a Fetch of {topic}-{partition} at offset {offset}"
            ),
            Cause::Unusable { offset, error } => write!(
                f,
                "unusable data from the source in {topic}-{partition} at offset {offset}: {error}"
            ),
            Cause::UpConvert {
                magic,
                offset,
                error,
            } => write!(
                f,
                "cannot up-convert the magic {magic} messages at offset {offset} of {topic}-{partition}: {error}"
            ),
            Cause::Reencode {
                offset,
                records,
                offsets,
                timestamp_type,
                error,
            } => write!(
                f,
                "cannot re-encode the batch at offset {offset} of {topic}-{partition} \
                 ({records} records for {offsets} offsets, {timestamp_type:?}): {error}"
            ),
            Cause::TargetRefused(refusal) => {
                match refusal.range {
                    Some((start, end)) => write!(
                        f,
                        "target refused source offsets {start}..{} of {topic}-{partition}: ",
                        end - 1
                    )?,
                    None => write!(f, "target refused a batch of {topic}-{partition}: ")?,
                }
                match refusal.error {
                    Some(error) => write!(f, "{error:?}")?,
                    None => f.write_str("no error code")?,
                }
                if let Some(message) = &refusal.message {
                    write!(f, " ({message})")?;
                }
                match &refusal.kind {
                    RefusalKind::Corrupt {
                        damage: Some(damage),
                    } => write!(f, "; the source sent it damaged: {damage}"),
                    RefusalKind::Corrupt { damage: None } => write!(
                        f,
                        "; refused {CORRUPT_RESEND_LIMIT} times though its CRC matches: \
                         the target cannot read what the source stored"
                    ),
                    RefusalKind::OutcomeUnknown => f.write_str(
                        "; an earlier send of these offsets may be on the target, and only \
                         that producer id could have told: check the target's copy (a \
                         restart sends them again)",
                    ),
                    RefusalKind::ByTopic | RefusalKind::ProducerIdentity | RefusalKind::Fatal => {
                        Ok(())
                    }
                }
            }
            Cause::DeletedBeforeCopied { from, to } => write!(
                f,
                "source offsets {from}..{to} ({} offsets) of {topic}-{partition} were deleted by \
                 the source before they were copied (retention ran ahead of the mirror)",
                to - from + 1
            ),
            Cause::SourceTruncated { next, log_end } => write!(
                f,
                "the mirror's next offset {next} of {topic}-{partition} is past the source's log \
                 end {log_end}: the source lost data that was already copied (unclean leader \
                 election or truncation)"
            ),
            Cause::SourceDiverged { from, to, epoch } => write!(
                f,
                "source offsets {from}..{to} ({} offsets) of {topic}-{partition} were copied but \
                 no longer exist on the source: its log diverges from the copy at offset {from} \
                 (leader epoch {epoch} ends there; an unclean leader election truncated it)",
                to - from + 1
            ),
            Cause::TopicRecreated { copied_from, now } => write!(
                f,
                "source topic `{topic}` was deleted and recreated since its data was copied \
                 (topic id {copied_from} is now {now}); its offsets restarted"
            ),
            Cause::OtherSourceCluster { stored, current } => write!(
                f,
                "the checkpoint of {topic}-{partition} was written for source cluster {stored}, \
                 but this instance's source is cluster {current}: instances sharing a mirror \
                 name must copy the same source (use another name for another source)"
            ),
            Cause::CheckpointUnreadable { reason } => write!(
                f,
                "{topic}-{partition} cannot be taken over from another instance: its checkpoint \
                 cannot be read ({reason})"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn error(cause: Cause) -> String {
        PartitionError::new("orders".into(), 3, cause).to_string()
    }

    /// The sentences the summary prints, word for word as before the type existed.
    #[test]
    fn each_cause_reads_as_the_operator_knows_it() {
        assert_eq!(
            error(Cause::DeletedBeforeCopied { from: 10, to: 19 }),
            "source offsets 10..19 (10 offsets) of orders-3 were deleted by the source before \
             they were copied (retention ran ahead of the mirror); restart with --on-data-loss \
             continue to copy on from offset 20"
        );
        assert_eq!(
            error(Cause::SourceTruncated {
                next: 50,
                log_end: 40
            }),
            "the mirror's next offset 50 of orders-3 is past the source's log end 40: the source \
             lost data that was already copied (unclean leader election or truncation); restart \
             with --on-data-loss continue to copy on from offset 40"
        );
        let (old, new) = (Uuid::from_u128(1), Uuid::from_u128(2));
        assert_eq!(
            error(Cause::TopicRecreated {
                copied_from: old,
                now: new
            }),
            format!(
                "source topic `orders` was deleted and recreated since its data was copied (topic \
                 id {old} is now {new}); its offsets restarted; to copy the new topic on top of \
                 the old copy, restart with --on-data-loss continue"
            )
        );
        assert_eq!(
            error(Cause::FetchRefused {
                error: ResponseError::TopicAuthorizationFailed,
                offset: 7
            }),
            "source answered TopicAuthorizationFailed to a Fetch of orders-3 at offset 7"
        );
        let refused = |kind, range| {
            error(Cause::TargetRefused(Refusal {
                range,
                error: Some(ResponseError::MessageTooLarge),
                message: Some("too big".to_owned()),
                kind,
            }))
        };
        assert_eq!(
            refused(RefusalKind::ByTopic, Some((5, 9))),
            "target refused source offsets 5..8 of orders-3: MessageTooLarge (too big); change \
             the target topic's settings, or restart with --on-refused-batch skip"
        );
        assert_eq!(
            refused(RefusalKind::Fatal, None),
            "target refused a batch of orders-3: MessageTooLarge (too big)"
        );
        assert_eq!(
            refused(RefusalKind::Corrupt { damage: None }, Some((5, 9))),
            "target refused source offsets 5..8 of orders-3: MessageTooLarge (too big); refused \
             3 times though its CRC matches: the target cannot read what the source stored"
        );
    }

    #[test]
    fn the_problem_leaves_out_the_advice() {
        let lost = PartitionError::new(
            "orders".into(),
            0,
            Cause::DeletedBeforeCopied { from: 0, to: 4 },
        );
        let problem = lost.problem().to_string();
        assert!(
            problem.ends_with("(retention ran ahead of the mirror)"),
            "{problem}"
        );
        assert!(lost.to_string().starts_with(&problem));
    }
}
