//! Cache location, the cross-process lock used to fill it, and filling one entry
//! so that nobody ever sees it half-filled.

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

/// `<root>/<version>`, first filled by `fill` unless `complete` says it already is.
///
/// `fill` gets a temporary directory in `root`, renamed into place once it returns, all
/// under the lock file `<root>/<version>.lock`: parallel users never see a half-filled
/// entry, and a second run needs no network.
pub(crate) fn fill_once(
    root: &Path,
    version: &str,
    complete: impl Fn(&Path) -> bool,
    fill: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = root.join(version);
    if complete(&dir) {
        return Ok(dir);
    }
    let _lock = CacheLock::acquire(&root.join(format!("{version}.lock")))?;
    if complete(&dir) {
        return Ok(dir);
    }
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{version}-"))
        .tempdir_in(root)
        .with_context(|| format!("creating a temporary directory in {}", root.display()))?;
    fill(tmp.path())?;
    if dir.exists() {
        // A leftover from an interrupted, pre-rename layout: nobody can be using it
        // because it never passed `complete`.
        fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    let tmp_path = tmp.keep();
    fs::rename(&tmp_path, &dir)
        .with_context(|| format!("renaming {} to {}", tmp_path.display(), dir.display()))?;
    Ok(dir)
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
