//! Many partitions, mostly idle: a source whose topics have thousands of
//! partitions holding a little data is copied by each tool, which is then left
//! running with nothing to copy, and its CPU in that time and its peak memory
//! are reported. kafka-mirror keeps one incremental fetch session (KIP-227)
//! per source broker, so an idle partition costs nothing per Fetch.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Result;

use crate::lab::DataSet;
use crate::run::{describe, Runner};
use crate::settings::Settings;
use crate::tools::Tool;

/// Runs every tool once over `data` and returns the report section.
pub(crate) fn section(runner: &Runner<'_>, settings: &Settings, data: &DataSet) -> Result<String> {
    let idle = Duration::from_secs(u64::from(settings.idle_seconds));
    let mut text = format!(
        "### {} partitions, mostly idle\n\nData set: {}. Each tool copies it, then runs {} s with \
         nothing new on the source.\n\n\
         | tool | caught up after s | CPU while idle, % of a core | peak RSS MiB |\n|---|---|---|---|\n",
        data.partitions,
        describe(data),
        settings.idle_seconds
    );
    let route = data.route(
        runner.lab.source.bootstrap(),
        runner.lab.metered.addr().to_string(),
    );
    for &tool in &settings.tools {
        if tool == Tool::Mm2Tuned {
            // Its tuning sets tasks.max to the partition count: thousands of tasks.
            continue;
        }
        let label = format!("idle-{}", tool.name());
        eprintln!("bench: {label}");
        let measured = runner.run_while(tool, &route, &runner.lab.metered, &label, idle, || {
            Ok(data.ends.clone())
        });
        match measured {
            Ok(m) => {
                let idle_cpu = m.idle_cpu_seconds.unwrap_or_default();
                eprintln!("bench: {label}: {idle_cpu:.2} CPU s idle in {idle:?}");
                let _ = writeln!(
                    text,
                    "| {} | {:.1} | {:.2} | {:.0} |",
                    tool.name(),
                    m.wall.as_secs_f64(),
                    100.0 * idle_cpu / idle.as_secs_f64(),
                    m.usage.peak_rss_kib as f64 / 1024.0
                );
            }
            Err(e) => {
                eprintln!("bench: {label} FAILED: {e:#}");
                let _ = writeln!(text, "| {} | failed | | |", tool.name());
            }
        }
    }
    text.push_str("\nmm2-tuned is left out: its tuning sets tasks.max to the partition count.\n");
    Ok(text)
}
