//! Where a partition starts copying: from its stored checkpoint (offset,
//! source topic id, last leader epoch, offset map), or, without one, at its
//! fresh start. The one place a partition starts, at startup
//! (`startup.rs`) or when it is taken over from another instance
//! (`ownership.rs`).

use uuid::Uuid;

use super::epochs::EpochHistory;
use super::slots::{Slot, Status};
use crate::checkpoint::Checkpoint;
use crate::offset_map::OffsetMap;

/// How [`start_partition`] started a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Started {
    /// Without a checkpoint: at its fresh start, looked up first.
    Fresh,
    /// From its checkpoint, offset map included.
    FromCheckpoint,
    /// From a checkpoint written before offset maps were kept: its offsets
    /// translate from the checkpointed offset on.
    FromOldCheckpoint,
}

/// A checkpoint written while the mirror copied another source cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OtherSource {
    /// The source cluster id stored with the checkpoint.
    pub(super) stored: String,
    /// The configured source's cluster id.
    pub(super) current: String,
}

/// Starts a partition that nothing is queued for: from its stored
/// checkpoint (offset, source topic id, the leader epoch of the last batch
/// copied, offset map), or without one at its fresh start, under the topic
/// id the source lists now (`topic_id`). The one place a partition starts,
/// at startup or when it is taken over from another instance.
pub(super) fn start_partition(
    slot: &mut Slot,
    topic_id: Uuid,
    stored: Option<&Checkpoint>,
    source_cluster: Option<&str>,
) -> Result<Started, OtherSource> {
    let Some(checkpoint) = stored else {
        slot.source_topic_id = topic_id;
        slot.state.start_at(0, OffsetMap::starting_at(0));
        slot.epochs = EpochHistory::default();
        slot.status = Status::Resolving {
            spec: slot.fresh_start,
            asked: false,
        };
        return Ok(Started::Fresh);
    };
    same_source(checkpoint, source_cluster)?;
    let offset = checkpoint.next_offset;
    let (map, started) = match checkpoint.stored_map() {
        Some(map) => (map, Started::FromCheckpoint),
        None if checkpoint.offset_map.is_none() => {
            (OffsetMap::starting_at(offset), Started::FromOldCheckpoint)
        }
        None => {
            tracing::info!(
                topic = %slot.topic,
                partition = slot.partition,
                offset,
                "the checkpoint's offset map is damaged; offsets translate from the checkpointed offset on"
            );
            (OffsetMap::starting_at(offset), Started::FromCheckpoint)
        }
    };
    // A checkpoint of an older incarnation of the topic keeps its topic id
    // here, so the engine's recreated-topic check reports it.
    slot.source_topic_id = checkpoint.topic_id;
    slot.state.start_at(offset, map);
    // The first Fetch checks that the source still holds the last batch
    // copied: it may have been truncated while we were away.
    slot.epochs = EpochHistory::resumed(checkpoint.leader_epoch, offset);
    slot.status = Status::Copying;
    Ok(started)
}

/// Whether a checkpoint was written while copying the source cluster
/// `source_cluster` (as far as both are known).
pub(super) fn same_source(
    checkpoint: &Checkpoint,
    source_cluster: Option<&str>,
) -> Result<(), OtherSource> {
    match (&checkpoint.source_cluster, source_cluster) {
        (Some(stored), Some(current)) if stored != current => Err(OtherSource {
            stored: stored.clone(),
            current: current.to_owned(),
        }),
        _ => Ok(()),
    }
}

/// Says which partitions started from checkpoints written before offset
/// maps were kept (by an older kafka-mirror), once for all of them.
pub(super) fn log_old_checkpoints(partitions: &[String]) {
    if let Some(example) = partitions.first() {
        tracing::info!(
            partitions = partitions.len(),
            example = %example,
            "checkpoints without an offset map (written by an older kafka-mirror): \
             their offsets translate from the checkpointed offset on"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cluster::OffsetSpec;
    use crate::offset_map::Translation;
    use crate::pipeline::partition::Writer;
    use crate::pipeline::testing::batch;

    const NOW: Uuid = Uuid::from_u128(7);
    const OLD: Uuid = Uuid::from_u128(3);

    fn unowned() -> Slot {
        Slot::unowned("t".into(), "copy.t".into(), 2, NOW, OffsetSpec::Latest)
    }

    /// Where 100..110 of the source landed: at 500.. on the target.
    fn checkpoint(offset_map: bool) -> Checkpoint {
        let mut copy = crate::pipeline::partition::PartitionState::new(100);
        copy.push_batch(batch(100, 10));
        let sent = copy
            .next_to_send(Writer::idempotent(1, 0), false)
            .expect("batch");
        copy.acked(sent.entry, 500);
        Checkpoint {
            next_offset: 110,
            topic_id: OLD,
            source_cluster: Some("src".into()),
            leader_epoch: Some(4),
            offset_map: offset_map.then(|| copy.offset_map().stored()),
        }
    }

    #[test]
    fn without_a_checkpoint_a_partition_looks_up_its_fresh_start() {
        let mut slot = unowned();
        slot.source_topic_id = OLD;
        let started = start_partition(&mut slot, NOW, None, Some("src"));
        assert_eq!(started, Ok(Started::Fresh));
        assert!(matches!(
            slot.status,
            Status::Resolving {
                spec: OffsetSpec::Latest,
                asked: false
            }
        ));
        assert_eq!(slot.source_topic_id, NOW, "the topic the source lists now");
    }

    #[test]
    fn a_checkpoint_gives_the_offset_topic_id_epoch_and_map() {
        let mut slot = unowned();
        let started = start_partition(&mut slot, NOW, Some(&checkpoint(true)), Some("src"));
        assert_eq!(started, Ok(Started::FromCheckpoint));
        assert!(slot.status.is_copying());
        assert_eq!(
            (slot.state.fetch_offset, slot.state.checkpointed),
            (110, 110)
        );
        assert_eq!(
            slot.source_topic_id, OLD,
            "the copied topic's id, for the recreated-topic check"
        );
        assert_eq!(slot.epochs.last(), 4);
        assert_eq!(
            slot.state.offset_map().translate(105),
            Translation::Exact(505)
        );

        let mut slot = unowned();
        let started = start_partition(&mut slot, NOW, Some(&checkpoint(false)), None);
        assert_eq!(started, Ok(Started::FromOldCheckpoint));
        assert_eq!(slot.state.offset_map(), &OffsetMap::starting_at(110));
    }

    #[test]
    fn a_checkpoint_of_another_source_cluster_is_refused() {
        let mut slot = unowned();
        let started = start_partition(&mut slot, NOW, Some(&checkpoint(true)), Some("other"));
        assert_eq!(
            started,
            Err(OtherSource {
                stored: "src".into(),
                current: "other".into()
            })
        );
        assert!(matches!(slot.status, Status::Unowned), "not started");
    }
}
