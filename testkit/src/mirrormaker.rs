//! Apache Kafka's own replicators, for comparisons: MirrorMaker 2 in dedicated mode
//! (`org.apache.kafka:connect-mirror`, fetched from Maven Central into the cache) and
//! the legacy MirrorMaker 1 (`kafka.tools.MirrorMaker`, in the Kafka 3.x broker jar;
//! removed in 4.0, but its clients talk to 4.x brokers).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Result};

use crate::dist::KafkaDist;
use crate::java::java_bin;
use crate::maven::fetch_maven_lib;
use crate::process::{output_checked, ToolOutput};
use crate::python::clients_dir;

/// The connect-mirror version used by default: the newest one Maven Central serves
/// here (4.4.0 is not published there), talking to 4.4.0 brokers.
pub const MIRROR_MAKER2_VERSION: &str = "4.3.1";

/// The JVM options Kafka's start scripts give MirrorMaker 2
/// (`connect-mirror-maker.sh` heap, `kafka-run-class.sh` GC settings).
pub const MIRROR_MAKER2_JVM_OPTS: &[&str] = &[
    "-Xms256m",
    "-Xmx2g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
];

/// The JVM options of `kafka-mirror-maker.sh` (1 GiB heap) with the same GC settings.
pub const MIRROR_MAKER1_JVM_OPTS: &[&str] = &[
    "-Xmx1g",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-XX:InitiatingHeapOccupancyPercent=35",
    "-XX:+ExplicitGCInvokesConcurrent",
    "-Djava.awt.headless=true",
];

/// MirrorMaker 2's jars (connect-mirror and its runtime dependencies) in the cache.
#[derive(Debug, Clone)]
pub struct MirrorMaker2 {
    version: String,
    dir: PathBuf,
}

impl MirrorMaker2 {
    /// The cached jars of `version`, fetched with Maven on first use.
    pub fn get(version: &str) -> Result<MirrorMaker2> {
        let pom = format!(
            r#"<?xml version="1.0" encoding="UTF-8"?>
<!-- Throwaway pom written by kafka-testkit to fetch MirrorMaker 2 {version}. -->
<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.kafka-testkit</groupId>
  <artifactId>connect-mirror-dist</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-mirror</artifactId><version>{version}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-simple</artifactId><version>1.7.36</version></dependency>
  </dependencies>
</project>
"#
        );
        let dir = fetch_maven_lib(
            "connect-mirror",
            version,
            &format!("MirrorMaker 2 (connect-mirror {version})"),
            &pom,
            &format!("connect-mirror-{version}.jar"),
        )?;
        Ok(MirrorMaker2 {
            version: version.to_string(),
            dir,
        })
    }

    pub fn version(&self) -> &str {
        &self.version
    }

    /// `java <jvm_opts> -cp lib/* org.apache.kafka.connect.mirror.MirrorMaker <properties>`,
    /// logging warnings and errors to stderr.
    pub fn command(&self, properties: &Path, jvm_opts: &[&str]) -> Command {
        let mut cmd = self.java_command(jvm_opts, "org.apache.kafka.connect.mirror.MirrorMaker");
        cmd.arg(properties);
        cmd
    }

    /// Runs `program`, a single-file Java program in `clients/` (compiled in
    /// memory by the `java` launcher, JEP 330), with MirrorMaker 2's jars on
    /// the class path (its client API: `RemoteClusterUtils`, `Checkpoint`).
    pub fn run_java_client(&self, program: &str, args: &[String]) -> Result<ToolOutput> {
        let path = clients_dir().join(program);
        output_checked(
            self.java_command(&["-Xmx256m"], &path).args(args),
            &format!("{program} {args:?}"),
        )
    }

    /// `java <jvm_opts> -cp lib/* <main>`, logging warnings and errors to stderr.
    fn java_command(&self, jvm_opts: &[&str], main: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(java_bin());
        cmd.args(jvm_opts)
            .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
            .arg("-cp")
            .arg(format!("{}/*", self.dir.join("lib").display()))
            .arg(main);
        cmd
    }
}

/// `java <jvm_opts> -cp <3.x lib>/* kafka.tools.MirrorMaker ...`: MirrorMaker 1 copying
/// the topics matching `include` with `streams` consumer threads.
pub fn mirror_maker1_command(
    dist: &KafkaDist,
    consumer_config: &Path,
    producer_config: &Path,
    include: &str,
    streams: u32,
    jvm_opts: &[&str],
) -> Result<Command> {
    if dist.major() >= 4 {
        bail!(
            "MirrorMaker 1 was removed in Kafka 4.0; use a 3.x distribution, not {}",
            dist.version()
        );
    }
    let mut cmd = dist.java_command(jvm_opts, "WARN", "kafka.tools.MirrorMaker");
    cmd.arg("--consumer.config")
        .arg(consumer_config)
        .arg("--producer.config")
        .arg(producer_config)
        .args(["--include", include])
        .args(["--num.streams", &streams.to_string()]);
    Ok(cmd)
}
