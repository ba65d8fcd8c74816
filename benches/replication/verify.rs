//! kafka-mirror's check of a copy: once kafka-mirror has copied the throughput
//! data set, `kafka-mirror verify` compares source and target record by record,
//! in full and with `--sample` (every Nth batch's records). Its wall time, CPU and
//! peak RSS come from /proc as the tools' do, the bytes it read (both clusters)
//! from its JSON report. A copy that does not agree, or a count that is not the
//! data set's, is a failed run.

use std::fmt::Write as _;
use std::fs::File;
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use kafka_testkit::{read_all_on_thread, MeteredChild};
use serde_json::Value;

use crate::lab::DataSet;
use crate::run::{describe, Runner};
use crate::tools::{Route, Tool};

/// The `--sample` of the quick check.
const SAMPLE: u32 = 10;

/// Copies `data` with kafka-mirror, verifies the copy twice and returns the
/// report section.
pub(crate) fn section(runner: &Runner<'_>, data: &DataSet) -> Result<String> {
    let lab = runner.lab;
    let mut text = format!(
        "### Verify: `kafka-mirror verify` of kafka-mirror's copy\n\n\
         Data set: {} (the throughput section's), copied by kafka-mirror into the emptied target, then compared.\n\n\
         | check | MB read (both sides) | wall s | of which checking | CPU s | MB/s | MB/s per core | peak RSS MiB | records compared | agrees |\n\
         |---|---|---|---|---|---|---|---|---|---|\n",
        describe(data)
    );
    eprintln!("bench: verify-copy");
    let copy_route = data.route(lab.source.bootstrap(), lab.metered.addr().to_string());
    if let Err(e) = runner.run(
        Tool::KafkaMirror,
        &copy_route,
        data,
        &lab.metered,
        "verify-copy",
    ) {
        eprintln!("bench: verify-copy FAILED: {e:#}");
        failed(&mut text, "the copy", &e);
        return Ok(text);
    }
    let route = data.route(lab.source.bootstrap(), lab.target.bootstrap());
    for sample in [1, SAMPLE] {
        let check = match sample {
            1 => "`verify`".to_string(),
            n => format!("`verify --sample {n}`"),
        };
        let label = format!("verify-sample{sample}");
        eprintln!("bench: {label}");
        match verify(runner, &route, data, sample, &label) {
            Ok(v) => {
                let mb = v.bytes_read as f64 / 1e6;
                eprintln!(
                    "bench: {label}: {mb:.1} MB in {:.1} s, {:.2} CPU s, peak RSS {:.0} MiB",
                    v.wall_s, v.cpu_s, v.peak_rss_mib
                );
                let _ = writeln!(
                    text,
                    "| {check} | {mb:.1} | {:.2} | {:.2} | {:.2} | {:.1} | {:.1} | {:.0} | {} of {} | yes |",
                    v.wall_s,
                    v.checking_s,
                    v.cpu_s,
                    mb / v.wall_s,
                    mb / v.cpu_s,
                    v.peak_rss_mib,
                    v.compared,
                    data.records
                );
            }
            Err(e) => {
                eprintln!("bench: {label} FAILED: {e:#}");
                failed(&mut text, &check, &e);
            }
        }
    }
    text.push_str(
        "\nMB read: the record batches `verify` fetched from both clusters, from its JSON report \
         (`bytes_read`); wall, CPU and peak RSS: its process, from /proc, start-up included; \
         of which checking: the time its report gives (`seconds`: connecting, reading and comparing, not the process start \
         or the printing). MB/s: MB read over the wall time; MB/s per core: MB read per CPU second (decompression included). Records compared: \
         those whose contents were compared (`--sample N` compares every Nth batch's and counts \
         the rest).\n",
    );
    Ok(text)
}

fn failed(text: &mut String, check: &str, e: &anyhow::Error) {
    let first = format!("{e:#}");
    let _ = writeln!(
        text,
        "| {check} | failed: {} | | | | | | | | |",
        first.lines().next().unwrap_or("")
    );
}

/// What one `verify` run measured.
struct Verified {
    bytes_read: u64,
    wall_s: f64,
    /// The check's own time, from its report.
    checking_s: f64,
    cpu_s: f64,
    peak_rss_mib: f64,
    compared: u64,
}

/// Runs `kafka-mirror verify` over `route` and checks that it agrees and
/// counted every record of `data` on the source.
fn verify(
    runner: &Runner<'_>,
    route: &Route,
    data: &DataSet,
    sample: u32,
    label: &str,
) -> Result<Verified> {
    let log_path = runner.lab.dir.path().join(format!("{label}.log"));
    let mut cmd = runner.tools.verify_command(route, sample)?;
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::from(File::create(&log_path)?));
    let mut child = MeteredChild::spawn(cmd)?;
    let stdout = child
        .take_stdout()
        .map(read_all_on_thread)
        .context("verify's stdout was not piped")?;
    let finished = child.wait()?;
    let output = stdout
        .join()
        .map_err(|_| anyhow::anyhow!("reading verify's stdout panicked"))?
        .context("reading verify's stdout")?;
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let report: Value = serde_json::from_str(&output).with_context(|| {
        format!(
            "verify exited with {} and printed no JSON report: {output}\n{}",
            finished.status,
            log()
        )
    })?;
    let partitions: Vec<&Value> = report["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|f| f["partitions"].as_array().into_iter().flatten())
        .collect();
    if !finished.status.success() {
        let differing: Vec<String> = partitions
            .iter()
            .filter(|p| !p["difference"].is_null())
            .map(|p| {
                let topic = p["topic"].as_str().unwrap_or("?");
                format!("{topic}-{}: {}", p["partition"], p["difference"])
            })
            .collect();
        bail!(
            "verify exited with {}: {}\n{}",
            finished.status,
            differing.join("; "),
            log()
        );
    }
    let sum = |value: fn(&Value) -> &Value| -> u64 {
        partitions
            .iter()
            .map(|p| value(p).as_u64().unwrap_or(0))
            .sum()
    };
    let source_records = sum(|p| &p["source"]["records"]);
    let compared = sum(|p| &p["compared"]);
    if source_records != data.records || (sample == 1 && compared != data.records) {
        bail!(
            "verify counted {source_records} records on the source in {} partitions and compared {compared}, \
             the data set holds {}",
            partitions.len(),
            data.records
        );
    }
    let usage = finished.usage;
    Ok(Verified {
        bytes_read: report["bytes_read"]
            .as_u64()
            .context("verify's report has no bytes_read")?,
        wall_s: usage.wall.as_secs_f64(),
        checking_s: report["seconds"]
            .as_f64()
            .context("verify's report has no seconds")?,
        cpu_s: usage.cpu_seconds,
        peak_rss_mib: usage.peak_rss_kib as f64 / 1024.0,
        compared,
    })
}
