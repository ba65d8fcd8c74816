//! Running Kafka's own Java tools from the cached `lib/`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use anyhow::{anyhow, bail, Context, Result};

use crate::dist::KafkaDist;
use crate::Compression;

/// The `java` to run: `$KAFKA_MIRROR_JAVA`, else `$JAVA_HOME/bin/java`, else `java` on PATH.
pub fn java_bin() -> PathBuf {
    if let Some(j) = std::env::var_os("KAFKA_MIRROR_JAVA").filter(|v| !v.is_empty()) {
        return PathBuf::from(j);
    }
    if let Some(home) = std::env::var_os("JAVA_HOME").filter(|v| !v.is_empty()) {
        let j = PathBuf::from(home).join("bin").join("java");
        if j.is_file() {
            return j;
        }
    }
    PathBuf::from("java")
}

pub(crate) fn require_java() -> Result<()> {
    let java = java_bin();
    match Command::new(&java)
        .arg("-version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(anyhow!("`{} -version` failed ({s}); kafka-testkit needs a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless; or set KAFKA_MIRROR_JAVA / JAVA_HOME)", java.display())),
        Err(e) => Err(anyhow!("Java (`{}`) not found ({e}); kafka-testkit needs a Java 17+ runtime to run Kafka (Debian: apt-get install openjdk-17-jre-headless; or set KAFKA_MIRROR_JAVA / JAVA_HOME)", java.display())),
    }
}

/// JVM options for short-lived tools: small heap, fast start.
pub const TOOL_JVM_OPTS: &[&str] = &[
    "-Xmx256m",
    "-XX:+UseSerialGC",
    "-XX:TieredStopAtLevel=1",
    "-Djava.awt.headless=true",
];

/// What a tool printed.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
}

impl KafkaDist {
    /// Runs `java -Xmx256m -cp lib/* <class> <args>` and fails (with its output) if it exits non-zero.
    pub fn run_tool<I, S>(&self, class: &str, args: I) -> Result<ToolOutput>
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut cmd = self.tool_command(class);
        cmd.args(&args).stdin(Stdio::null());
        let out: Output = cmd.output().with_context(|| format!("running {class}"))?;
        let res = ToolOutput {
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        if !out.status.success() {
            bail!(
                "{class} {:?} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
                args,
                out.status,
                tail(&res.stdout, 40),
                tail(&res.stderr, 40)
            );
        }
        Ok(res)
    }

    /// A `Command` for `java <tool opts> -cp lib/* <class>`; add args and run it yourself
    /// (e.g. to feed ConsoleProducer's stdin).
    pub fn tool_command(&self, class: &str) -> Command {
        let mut cmd = Command::new(java_bin());
        cmd.args(TOOL_JVM_OPTS);
        cmd.args(self.log_config_jvm_args("WARN"));
        cmd.arg("-cp").arg(self.java_classpath()).arg(class);
        cmd
    }

    /// System properties that configure the logger shipped in `lib/` at `level`.
    pub(crate) fn log_config_jvm_args(&self, level: &str) -> Vec<String> {
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

/// How `produce_with_java` shapes its records.
#[derive(Debug, Clone)]
pub struct JavaProduceOpts {
    pub num_records: u64,
    /// Random payloads of this size (ignored when `payload_file` is set).
    pub record_size: usize,
    /// Payloads taken from this file, one per line (ProducerPerformance's `--payload-file`).
    pub payload_file: Option<PathBuf>,
    pub compression: Compression,
    /// Extra producer properties (`acks`, `linger.ms`, `batch.size`, ...).
    pub producer_props: Vec<(String, String)>,
}

impl Default for JavaProduceOpts {
    fn default() -> Self {
        Self {
            num_records: 1000,
            record_size: 100,
            payload_file: None,
            compression: Compression::None,
            producer_props: Vec::new(),
        }
    }
}

/// Produces with Kafka's Java producer through `ProducerPerformance` (null keys, values
/// of `record_size` random bytes or lines of `payload_file`, as fast as possible).
/// Returns the tool's summary output.
pub fn produce_with_java(
    dist: &KafkaDist,
    bootstrap: &str,
    topic: &str,
    opts: &JavaProduceOpts,
) -> Result<String> {
    let mut args: Vec<OsString> = vec![
        "--topic".into(),
        topic.into(),
        "--num-records".into(),
        opts.num_records.to_string().into(),
        "--throughput".into(),
        "-1".into(),
    ];
    match &opts.payload_file {
        Some(p) => {
            args.push("--payload-file".into());
            args.push(p.into());
        }
        None => {
            args.push("--record-size".into());
            args.push(opts.record_size.to_string().into());
        }
    }
    args.push("--producer-props".into());
    args.push(format!("bootstrap.servers={bootstrap}").into());
    args.push(format!("compression.type={}", opts.compression.as_str()).into());
    args.push("acks=all".into());
    for (k, v) in &opts.producer_props {
        args.push(format!("{k}={v}").into());
    }
    let out = dist.run_tool("org.apache.kafka.tools.ProducerPerformance", args)?;
    Ok(out.stdout)
}

pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
