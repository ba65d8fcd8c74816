//! One Apache Kafka version's jars in the cache, and the JVM commands that run them:
//! the broker's, ZooKeeper's and Kafka's own tools.

use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, OnceLock};

use anyhow::Result;

use crate::java::java_bin;
use crate::lock;
use crate::maven::fetch_maven_lib;
use crate::process::{output_checked, ToolOutput};

/// JVM options for short-lived tools: small heap, fast start.
pub const TOOL_JVM_OPTS: &[&str] = &[
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];

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
        let mut memo = lock(memo);
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

    /// `java <jvm_opts> <logger at log_level> -cp lib/* <class>`: every JVM the kit
    /// starts from this distribution (brokers, ZooKeeper, tools, MirrorMaker 1).
    pub(crate) fn java_command<I>(&self, jvm_opts: I, log_level: &str, class: &str) -> Command
    where
        I: IntoIterator,
        I::Item: AsRef<OsStr>,
    {
        let mut cmd = Command::new(java_bin());
        cmd.args(jvm_opts)
            .args(self.log_config_jvm_args(log_level))
            .arg("-cp")
            .arg(self.java_classpath())
            .arg(class);
        cmd
    }

    /// Runs `java -Xmx256m -cp lib/* <class> <args>` and fails (with its output) if it exits non-zero.
    pub fn run_tool<I, S>(&self, class: &str, args: I) -> Result<ToolOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        output_checked(
            self.tool_command(class).args(&args),
            &format!("{class} {args:?}"),
        )
    }

    /// A `Command` for `java <tool opts> -cp lib/* <class>`; add args and run it yourself
    /// (e.g. to feed ConsoleProducer's stdin).
    pub fn tool_command(&self, class: &str) -> Command {
        self.java_command(TOOL_JVM_OPTS, "WARN", class)
    }

    /// System properties that configure the logger shipped in `lib/` at `level`.
    fn log_config_jvm_args(&self, level: &str) -> Vec<String> {
        if self.major() >= 4 {
            // slf4j-simple (added by the pom), to stderr.
            vec![
                format!(
                    "-Dorg.slf4j.simpleLogger.defaultLogLevel={}",
                    level.to_lowercase()
                ),
                "-Dorg.slf4j.simpleLogger.showDateTime=true".into(),
                "-Dorg.slf4j.simpleLogger.dateTimeFormat=HH:mm:ss.SSS".into(),
            ]
        } else {
            // reload4j; the file is written next to lib/ once.
            let file = self
                .dir()
                .join(format!("log4j-{}.properties", level.to_lowercase()));
            if !file.is_file() {
                let text = format!(
                    "log4j.rootLogger={level}, stderr\n\
                     log4j.appender.stderr=org.apache.log4j.ConsoleAppender\n\
                     log4j.appender.stderr.Target=System.err\n\
                     log4j.appender.stderr.layout=org.apache.log4j.PatternLayout\n\
                     log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n\n"
                );
                let tmp = file.with_extension(format!("tmp{}", std::process::id()));
                if std::fs::write(&tmp, text).is_ok() {
                    let _ = std::fs::rename(&tmp, &file);
                }
            }
            vec![format!("-Dlog4j.configuration=file:{}", file.display())]
        }
    }
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
