//! Java `.properties` files for the JVMs the kit configures (brokers, ZooKeeper,
//! MirrorMaker) and for callers that configure their own.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{bail, Context, Result};

/// Writes a Java properties file (keys and values must not need escaping).
pub fn write_properties(path: &Path, props: &[(String, String)]) -> Result<()> {
    let mut text = String::from("# written by kafka-testkit\n");
    for (k, v) in props {
        if k.contains(['=', ':', '\n', ' ']) || v.contains('\n') {
            bail!("property {k:?}={v:?} would need escaping");
        }
        let _ = writeln!(text, "{k}={v}");
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}
