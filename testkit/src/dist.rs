//! Fetching Apache Kafka's jars from Maven Central into the cache.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};

use crate::cache::{cache_root, CacheLock};
use crate::java::require_java;

/// Kafka's jars for one version, unpacked as a `lib/` directory in the cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaDist {
    version: String,
    dir: PathBuf,
}

impl KafkaDist {
    /// Returns the cached distribution of `version` (e.g. "4.4.0", "3.9.1"), fetching
    /// `org.apache.kafka:kafka_2.13` and `org.apache.kafka:kafka-tools` with Maven on
    /// first use. The fetch happens in a temporary directory renamed into place, under a
    /// lock file, so parallel tests never see a half-filled `lib/` and a second run needs
    /// no network.
    pub fn get(version: &str) -> Result<KafkaDist> {
        // One fetch per version per process; other processes are held off by the lock file.
        static MEMO: OnceLock<Mutex<Vec<KafkaDist>>> = OnceLock::new();
        let memo = MEMO.get_or_init(|| Mutex::new(Vec::new()));
        let mut memo = memo.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = memo.iter().find(|d| d.version == version) {
            return Ok(d.clone());
        }
        let d = Self::fetch(version)?;
        memo.push(d.clone());
        Ok(d)
    }

    fn fetch(version: &str) -> Result<KafkaDist> {
        let dir = fetch_maven_lib(
            "kafka",
            version,
            &format!("Apache Kafka {version}"),
            &pom_xml(version),
            &format!("kafka_2.13-{version}.jar"),
        )?;
        Ok(KafkaDist {
            version: version.to_string(),
            dir,
        })
    }

    /// The Kafka version, e.g. "4.4.0".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Major version number (3 or 4).
    pub fn major(&self) -> u32 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .unwrap_or(0)
    }

    /// `<cache>/kafka/<version>`.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// `<cache>/kafka/<version>/lib`, holding every runtime jar.
    pub fn lib_dir(&self) -> PathBuf {
        self.dir.join("lib")
    }

    /// The classpath for `java -cp`: `<lib>/*` (the JVM expands the wildcard).
    pub fn java_classpath(&self) -> String {
        format!("{}/*", self.lib_dir().display())
    }

    /// Main class of the storage (format) tool.
    pub fn storage_tool_class(&self) -> &'static str {
        "kafka.tools.StorageTool"
    }

    /// Main class of `kafka-dump-log`: moved to `org.apache.kafka.tools` in 4.0.
    pub fn dump_log_segments_class(&self) -> &'static str {
        if self.major() >= 4 {
            "org.apache.kafka.tools.DumpLogSegments"
        } else {
            "kafka.tools.DumpLogSegments"
        }
    }

    /// Main class of `kafka-configs`: moved to `org.apache.kafka.tools` in 4.0.
    pub fn config_command_class(&self) -> &'static str {
        if self.major() >= 4 {
            "org.apache.kafka.tools.ConfigCommand"
        } else {
            "kafka.admin.ConfigCommand"
        }
    }

    /// Main class of `kafka-console-producer`: moved to `org.apache.kafka.tools` in 4.0.
    pub fn console_producer_class(&self) -> &'static str {
        if self.major() >= 4 {
            "org.apache.kafka.tools.ConsoleProducer"
        } else {
            "kafka.tools.ConsoleProducer"
        }
    }

    /// Main class of `kafka-console-consumer` (`org.apache.kafka.tools.consumer` in 3.9 and 4.x).
    pub fn console_consumer_class(&self) -> &'static str {
        "org.apache.kafka.tools.consumer.ConsoleConsumer"
    }
}

/// Fetches the runtime dependencies of `pom` with Maven into `<cache>/<kind>/<version>/lib`
/// (unless `marker_jar` is already there) and returns `<cache>/<kind>/<version>`. The
/// fetch happens in a temporary directory renamed into place, under a lock file, so
/// parallel users never see a half-filled `lib/` and a second run needs no network.
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
    let dir = root.join(version);
    let complete = |d: &Path| d.join("lib").join(marker_jar).is_file();
    if complete(&dir) {
        return Ok(dir);
    }
    let _lock = CacheLock::acquire(&root.join(format!("{version}.lock")))?;
    if complete(&dir) {
        return Ok(dir);
    }
    require_mvn()?;
    let tmp = tempfile::Builder::new()
        .prefix(&format!(".tmp-{version}-"))
        .tempdir_in(&root)
        .with_context(|| format!("creating a temporary directory in {}", root.display()))?;
    fs::write(tmp.path().join("pom.xml"), pom)?;
    let started = Instant::now();
    eprintln!(
        "kafka-testkit: fetching {label} from Maven Central into {}",
        dir.display()
    );
    let out = Command::new("mvn")
        .args([
            "-q",
            "-B",
            "dependency:copy-dependencies",
            "-DoutputDirectory=lib",
            "-DincludeScope=runtime",
        ])
        .current_dir(tmp.path())
        .stdin(Stdio::null())
        .output()
        .context("running mvn")?;
    if !out.status.success() {
        bail!(
            "mvn could not fetch {label} (is Maven Central reachable?): {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    if !complete(tmp.path()) {
        bail!("mvn finished but fetched no {marker_jar} for {label}");
    }
    if dir.exists() {
        // A leftover from an interrupted, pre-rename layout: nobody can be using it
        // because it never passed `complete`.
        fs::remove_dir_all(&dir).with_context(|| format!("removing stale {}", dir.display()))?;
    }
    let tmp_path = tmp.keep();
    fs::rename(&tmp_path, &dir)
        .with_context(|| format!("renaming {} to {}", tmp_path.display(), dir.display()))?;
    eprintln!(
        "kafka-testkit: fetched {label} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(dir)
}

fn pom_xml(version: &str) -> String {
    // Kafka 4.x's artifacts pull slf4j-api 1.7 without any binding (the release tarball
    // ships its own log4j2 bridge), so the broker would log nothing; slf4j-simple gives
    // it a stderr logger. 3.x brings slf4j-reload4j itself.
    let extra = if version.starts_with("3.") || version.starts_with("2.") {
        ""
    } else {
        "<dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version></dependency>"
    };
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Throwaway pom written by kafka-testkit to fetch Apache Kafka {version}. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-testkit</groupId>
  <artifactId>kafka-dist</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka-tools</artifactId><version>{version}</version></dependency>
    {extra}
  </dependencies>
</project>
"#
    )
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
