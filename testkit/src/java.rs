//! The Java runtime every JVM the kit starts runs on: where it is and whether it works.

use std::path::PathBuf;
use std::process::{Command, Stdio};

use anyhow::{anyhow, Result};

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

/// Fails with what to install when [`java_bin`] does not run, so a missing runtime is
/// reported before anything is fetched for it.
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
