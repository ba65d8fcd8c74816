//! Building a binary of the workspace with cargo, for examples and benchmarks that run it.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{anyhow, bail, Context, Result};

/// Runs `cargo build --release --bin <bin>` in `manifest_dir` (a no-op when it is up to
/// date) and returns the executable's path as cargo reports it, so `CARGO_TARGET_DIR`
/// and `build.target-dir` are honoured. Uses `$CARGO` when set (as under `cargo run`).
pub fn cargo_build_release(manifest_dir: &Path, bin: &str) -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    // Under `cargo run`/`cargo bench` the environment carries the outer build's
    // variables (CARGO_PKG_*, CARGO_MANIFEST_DIR, ...); build scripts that watch
    // them would make this build differ from a plain `cargo build --release` and
    // rebuild half the dependency tree every time one follows the other.
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy();
        if key.starts_with("CARGO_") && key != "CARGO_HOME" && key != "CARGO_TARGET_DIR" {
            cmd.env_remove(&*key);
        }
    }
    let out = cmd
        .args(["build", "--release", "--bin", bin])
        .arg("--message-format=json-render-diagnostics")
        .current_dir(manifest_dir)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", cargo.to_string_lossy()))?;
    if !out.status.success() {
        bail!(
            "`cargo build --release --bin {bin}` failed ({})",
            out.status
        );
    }
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin)
        .find_map(|m| m["executable"].as_str().map(PathBuf::from))
        .ok_or_else(|| anyhow!("cargo built {bin} but did not say where the executable is"))
}
