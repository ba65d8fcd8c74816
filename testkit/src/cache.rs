//! Cache location and the cross-process lock used to fill it.

use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Root of the download cache: `$KAFKA_MIRROR_CACHE`, else `~/.cache/kafka-mirror`.
pub fn cache_root() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KAFKA_MIRROR_CACHE").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(dir));
    }
    let home = std::env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither KAFKA_MIRROR_CACHE nor HOME is set; cannot pick a cache directory")?;
    Ok(PathBuf::from(home).join(".cache").join("kafka-mirror"))
}

/// An exclusive `flock` on a lock file, released on drop (or when the process dies,
/// so a crashed filler never wedges the next run).
#[derive(Debug)]
pub(crate) struct CacheLock {
    _file: File,
}

impl CacheLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self> {
        if let Some(parent) = path.parent() {
            fs::create_dir_all(parent)
                .with_context(|| format!("creating cache directory {}", parent.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .with_context(|| format!("opening lock file {}", path.display()))?;
        file.lock()
            .with_context(|| format!("locking {}", path.display()))?;
        Ok(Self { _file: file })
    }
}
