//! Records a read_committed consumer can read from the target, counted from the
//! broker's own segment files. A tool that writes in transactions leaves a
//! marker after each one in every partition it touched, so its end offsets
//! (even the last stable offsets) run ahead of its records by the number of
//! transactions: only a count tells when it holds all the source's records.
//! Batch headers are enough (record counts, producer ids, the marker's type),
//! so a count of a GiB reads a few hundred KiB and can run in the polling loop.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use kafka_testkit::segment_files;

use crate::kafka::Ends;

/// Record batch v2: the header before the records.
const HEADER: usize = 61;
/// Attributes: bit 4 transactional, bit 5 control.
const TRANSACTIONAL: i16 = 0x10;
const CONTROL: i16 = 0x20;
/// A control record's key holds (version, type); type 1 is COMMIT, 0 ABORT.
const COMMIT: i16 = 1;

/// Per partition of `below`, the records of committed transactions and outside
/// transactions in the batches before that offset (a last stable offset: every
/// transaction below it has its marker).
pub(crate) fn committed_records(log_dir: &Path, below: &Ends) -> Result<Ends> {
    below
        .iter()
        .map(|((topic, partition), &end)| {
            let count = count_partition(log_dir, topic, *partition, end)
                .with_context(|| format!("counting the records of {topic}-{partition}"))?;
            Ok(((topic.clone(), *partition), count))
        })
        .collect()
}

fn count_partition(log_dir: &Path, topic: &str, partition: i32, below: i64) -> Result<i64> {
    let mut committed = 0;
    // Records of each producer's open transaction, until its marker.
    let mut open: HashMap<i64, i64> = HashMap::new();
    for path in segment_files(log_dir, topic, partition)? {
        let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mut header = [0u8; HEADER];
        let mut position = 0u64;
        // A batch below `below` is whole on disk: the broker writes it before
        // the offset moves. What follows may be a write in progress.
        while file.read_exact_at(&mut header, position).is_ok() {
            let base_offset = i64::from_be_bytes(field(&header, 0));
            let length = i32::from_be_bytes(field(&header, 8));
            if base_offset >= below || length <= 0 {
                return Ok(committed);
            }
            let attributes = i16::from_be_bytes(field(&header, 21));
            let producer_id = i64::from_be_bytes(field(&header, 43));
            let records = i64::from(i32::from_be_bytes(field(&header, 57)));
            if attributes & CONTROL != 0 {
                let records = open.remove(&producer_id).unwrap_or(0);
                let size = (12 + length as usize).saturating_sub(HEADER);
                if control_type(&file, position + HEADER as u64, size)? == COMMIT {
                    committed += records;
                }
            } else if attributes & TRANSACTIONAL != 0 {
                *open.entry(producer_id).or_default() += records;
            } else {
                committed += records;
            }
            position += 12 + length as u64;
        }
    }
    Ok(committed)
}

/// The type in the key of the control record at `position`, `size` bytes long:
/// length (varint), attributes (a byte), timestamp delta, offset delta and key
/// length (varints) come before it.
fn control_type(file: &File, position: u64, size: usize) -> Result<i16> {
    let mut record = vec![0u8; size.min(32)];
    file.read_exact_at(&mut record, position)
        .context("reading a control record")?;
    let mut at = skip_varint(&record, 0)? + 1;
    for _ in 0..3 {
        at = skip_varint(&record, at)?;
    }
    match record.get(at + 2..at + 4) {
        Some(kind) => Ok(i16::from_be_bytes([kind[0], kind[1]])),
        None => bail!("a control record too short for its key"),
    }
}

fn skip_varint(bytes: &[u8], mut at: usize) -> Result<usize> {
    loop {
        let Some(&b) = bytes.get(at) else {
            bail!("a varint runs past the control record");
        };
        at += 1;
        if b & 0x80 == 0 {
            return Ok(at);
        }
    }
}

fn field<const N: usize>(header: &[u8; HEADER], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&header[at..at + N]);
    out
}
