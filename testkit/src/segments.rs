//! Raw record batches straight from a broker's segment files (stdlib only, on purpose
//! independent of the main crate's codec, so tests can compare stored bytes).

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// One stored record batch, bytes exactly as on disk (baseOffset included).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBatch {
    /// Segment file it came from.
    pub segment: PathBuf,
    /// Position inside the segment file.
    pub position: u64,
    pub bytes: Vec<u8>,
}

impl RawBatch {
    pub fn base_offset(&self) -> i64 {
        i64::from_be_bytes(self.bytes[0..8].try_into().expect("8 bytes"))
    }
    pub fn batch_length(&self) -> i32 {
        i32::from_be_bytes(self.bytes[8..12].try_into().expect("4 bytes"))
    }
    pub fn partition_leader_epoch(&self) -> i32 {
        i32::from_be_bytes(self.bytes[12..16].try_into().expect("4 bytes"))
    }
    pub fn magic(&self) -> i8 {
        self.bytes[16] as i8
    }
    /// Only meaningful for magic 2 (as are the accessors below).
    pub fn crc(&self) -> u32 {
        u32::from_be_bytes(self.bytes[17..21].try_into().expect("4 bytes"))
    }
    pub fn attributes(&self) -> i16 {
        i16::from_be_bytes(self.bytes[21..23].try_into().expect("2 bytes"))
    }
    /// 0 none, 1 gzip, 2 snappy, 3 lz4, 4 zstd.
    pub fn codec(&self) -> u8 {
        (self.attributes() & 0x7) as u8
    }
    pub fn is_transactional(&self) -> bool {
        self.attributes() & 0x10 != 0
    }
    pub fn is_control(&self) -> bool {
        self.attributes() & 0x20 != 0
    }
    pub fn last_offset_delta(&self) -> i32 {
        i32::from_be_bytes(self.bytes[23..27].try_into().expect("4 bytes"))
    }
    pub fn producer_id(&self) -> i64 {
        i64::from_be_bytes(self.bytes[43..51].try_into().expect("8 bytes"))
    }
    pub fn producer_epoch(&self) -> i16 {
        i16::from_be_bytes(self.bytes[51..53].try_into().expect("2 bytes"))
    }
    pub fn base_sequence(&self) -> i32 {
        i32::from_be_bytes(self.bytes[53..57].try_into().expect("4 bytes"))
    }
    pub fn records_count(&self) -> i32 {
        i32::from_be_bytes(self.bytes[57..61].try_into().expect("4 bytes"))
    }
    /// Bytes from `attributes` on (what the CRC covers): equal between two clusters
    /// when a batch was forwarded unchanged.
    pub fn crc_covered(&self) -> &[u8] {
        &self.bytes[21..]
    }
}

/// Segment files (`*.log`) of `<log_dir>/<topic>-<partition>`, in base-offset order.
pub fn segment_files(log_dir: &Path, topic: &str, partition: i32) -> Result<Vec<PathBuf>> {
    let dir = log_dir.join(format!("{topic}-{partition}"));
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for e in fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "log") {
            if let Some(base) = p
                .file_stem()
                .and_then(|s| s.to_str())
                .and_then(|s| s.parse::<u64>().ok())
            {
                files.push((base, p));
            }
        }
    }
    files.sort();
    Ok(files.into_iter().map(|(_, p)| p).collect())
}

/// Every record batch stored for one partition, in offset order. A torn batch at the
/// very end of the last segment (a write in progress) is left out.
pub fn read_partition_batches(
    log_dir: &Path,
    topic: &str,
    partition: i32,
) -> Result<Vec<RawBatch>> {
    let mut out = Vec::new();
    let files = segment_files(log_dir, topic, partition)?;
    let n = files.len();
    for (idx, f) in files.into_iter().enumerate() {
        let data = fs::read(&f).with_context(|| format!("reading {}", f.display()))?;
        let mut pos = 0usize;
        while pos < data.len() {
            if data.len() - pos < 17 {
                if idx + 1 == n {
                    break;
                }
                bail!(
                    "{}: {} trailing bytes at {pos}",
                    f.display(),
                    data.len() - pos
                );
            }
            let len = i32::from_be_bytes(data[pos + 8..pos + 12].try_into().expect("4 bytes"));
            if len <= 0 {
                // Preallocated (file.preallocate) zeros: end of data.
                break;
            }
            let end = pos + 12 + len as usize;
            if end > data.len() {
                if idx + 1 == n {
                    break;
                }
                bail!(
                    "{}: batch at {pos} runs past the end of the segment",
                    f.display()
                );
            }
            out.push(RawBatch {
                segment: f.clone(),
                position: pos as u64,
                bytes: data[pos..end].to_vec(),
            });
            pos = end;
        }
    }
    Ok(out)
}
