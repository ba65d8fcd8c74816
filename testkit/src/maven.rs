//! Fetching jars and their runtime dependencies from Maven Central into the cache
//! (Kafka's own for [`crate::KafkaDist`], connect-mirror's for MirrorMaker 2).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::cache::{cache_root, fill_once};
use crate::java::require_java;
use crate::process::output_checked;

/// Fetches the runtime dependencies of `pom` with Maven into `<cache>/<kind>/<version>/lib`
/// (unless `marker_jar` is already there) and returns `<cache>/<kind>/<version>`
/// (filled as [`fill_once`] says).
pub(crate) fn fetch_maven_lib(
    kind: &str,
    version: &str,
    label: &str,
    pom: &str,
    marker_jar: &str,
) -> Result<PathBuf> {
    if version.is_empty()
        || !version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
    {
        bail!("invalid version {version:?} of {kind}");
    }
    require_java()?;
    let root = cache_root()?.join(kind);
    let complete = |d: &Path| d.join("lib").join(marker_jar).is_file();
    fill_once(&root, version, complete, |tmp| {
        require_mvn()?;
        fs::write(tmp.join("pom.xml"), pom)?;
        let started = Instant::now();
        eprintln!(
            "kafka-testkit: fetching {label} from Maven Central into {}",
            root.join(version).display()
        );
        output_checked(
            Command::new("mvn")
                .args([
                    "-q",
                    "-B",
                    "dependency:copy-dependencies",
                    "-DoutputDirectory=lib",
                    "-DincludeScope=runtime",
                ])
                .current_dir(tmp),
            "mvn dependency:copy-dependencies",
        )
        .with_context(|| format!("mvn could not fetch {label} (is Maven Central reachable?)"))?;
        if !complete(tmp) {
            bail!("mvn finished but fetched no {marker_jar} for {label}");
        }
        eprintln!(
            "kafka-testkit: fetched {label} in {:.1}s",
            started.elapsed().as_secs_f64()
        );
        Ok(())
    })
}

fn require_mvn() -> Result<()> {
    match Command::new("mvn")
        .arg("-v")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(anyhow!("`mvn -v` failed ({s}); kafka-testkit needs Apache Maven 3.8+ to fetch Kafka (Debian: apt-get install maven)")),
        Err(e) => Err(anyhow!("Apache Maven (`mvn`) not found ({e}); kafka-testkit needs Maven 3.8+ on PATH to fetch Kafka from Maven Central (Debian: apt-get install maven)")),
    }
}
