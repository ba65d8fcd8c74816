//! The markdown report: the machine, the settings, and one table per section.
//! Each section starts with a marker naming it (an HTML comment, invisible once
//! rendered), by which [`check`] finds it again in the written file.

use std::fmt::Write as _;

use anyhow::{bail, Result};

use crate::run::Measured;
use crate::settings::Section;
use crate::tools::Tool;

/// Starts the marker line of a section; its name and [`MARKER_END`] follow.
const MARKER: &str = "<!-- bench section: ";
const MARKER_END: &str = " -->";

/// Adds `text` as a paragraph or table.
#[derive(Debug, Default)]
pub(crate) struct Report {
    text: String,
}

impl Report {
    pub(crate) fn push(&mut self, text: &str) {
        self.text.push_str(text);
        if !text.ends_with('\n') {
            self.text.push('\n');
        }
        self.text.push('\n');
    }

    /// Adds the text of `section`, after its marker.
    pub(crate) fn section(&mut self, section: Section, text: &str) {
        self.text
            .push_str(&format!("{MARKER}{}{MARKER_END}\n", section.name()));
        self.push(text);
    }

    pub(crate) fn text(&self) -> &str {
        &self.text
    }
}

/// Parses a written report back: every section of `sections` must be there,
/// each with at least one table, every table with at least one row, and every
/// row with a number (a cell whose first word, less a trailing `%` or `×`, is a
/// finite number) and no failed run (a cell starting with "failed").
pub(crate) fn check(report: &str, sections: &[Section]) -> Result<()> {
    let mut problems = Vec::new();
    for &section in sections {
        let name = section.name();
        let marker = format!("{MARKER}{name}{MARKER_END}");
        let Some((_, rest)) = report.split_once(&marker) else {
            problems.push(format!("{name}: not in the report"));
            continue;
        };
        let text = rest.split(MARKER).next().unwrap_or_default();
        let rows = table_rows(text);
        if rows.is_empty() {
            problems.push(format!("{name}: no table with rows"));
        }
        for row in rows {
            let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
            if cells.iter().any(|c| c.starts_with("failed")) {
                problems.push(format!("{name}: a failed run: {row}"));
            } else if !cells.iter().any(|c| is_number(c)) {
                problems.push(format!("{name}: a row without a number: {row}"));
            }
        }
    }
    if !problems.is_empty() {
        bail!(
            "the report does not hold what it should:\n{}",
            problems.join("\n")
        );
    }
    Ok(())
}

/// The body rows of every markdown table in `text` (header and separator rows left out).
fn table_rows(text: &str) -> Vec<&str> {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut rows = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let is_separator = |l: &str| l.starts_with("|-") || l.starts_with("|:");
        if line.starts_with('|')
            && !is_separator(line)
            && !lines.get(i + 1).is_some_and(|next| is_separator(next))
        {
            rows.push(*line);
        }
    }
    rows
}

fn is_number(cell: &str) -> bool {
    cell.split_whitespace()
        .next()
        .map(|word| word.trim_end_matches(['%', '×']))
        .and_then(|word| word.parse::<f64>().ok())
        .is_some_and(f64::is_finite)
}

/// "N cores (model), M GiB RAM", from /proc.
pub(crate) fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .and_then(|l| l.split_once(':'))
        .map_or("unknown CPU", |(_, m)| m.trim())
        .to_string();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_gib = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|kib| kib.parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0 / 1024.0);
    format!("{cores} cores ({model}), {mem_gib:.0} GiB RAM")
}

/// Median of a non-empty slice (the mean of the middle two for an even count).
pub(crate) fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// The value below which a fraction `q` (0..=1) of `values` lies (nearest rank);
/// `None` for no values.
pub(crate) fn percentile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// One tool's runs summarised.
#[derive(Debug, Clone)]
pub(crate) struct ToolSummary {
    pub(crate) tool: Tool,
    pub(crate) runs: usize,
    pub(crate) failures: Vec<String>,
    pub(crate) mb_s: Vec<f64>,
    /// Median MB/s from the first record on the target until caught up.
    pub(crate) copying_mb_s: f64,
    pub(crate) cpu_s_per_gb: f64,
    pub(crate) peak_rss_mib: f64,
    pub(crate) wire_mb: f64,
    pub(crate) extra_records: i64,
}

impl ToolSummary {
    pub(crate) fn new(
        tool: Tool,
        stored_bytes: u64,
        results: &[&Result<Measured, String>],
    ) -> ToolSummary {
        let ok: Vec<&Measured> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        let failures = results
            .iter()
            .filter_map(|r| r.as_ref().err().cloned())
            .collect();
        let gb = stored_bytes as f64 / 1e9;
        let mut cpu: Vec<f64> = ok.iter().map(|m| m.usage.cpu_seconds / gb).collect();
        let mut rss: Vec<f64> = ok
            .iter()
            .map(|m| m.usage.peak_rss_kib as f64 / 1024.0)
            .collect();
        let mut wire: Vec<f64> = ok.iter().map(|m| m.wire_to_target as f64 / 1e6).collect();
        let mut copying: Vec<f64> = ok
            .iter()
            .map(|m| stored_bytes as f64 / 1e6 / m.copying.as_secs_f64())
            .collect();
        ToolSummary {
            tool,
            runs: results.len(),
            failures,
            mb_s: ok
                .iter()
                .map(|m| stored_bytes as f64 / 1e6 / m.wall.as_secs_f64())
                .collect(),
            copying_mb_s: median(&mut copying),
            cpu_s_per_gb: median(&mut cpu),
            peak_rss_mib: median(&mut rss),
            wire_mb: median(&mut wire),
            extra_records: ok.iter().map(|m| m.extra_records).max().unwrap_or(0),
        }
    }

    pub(crate) fn median_mb_s(&self) -> f64 {
        median(&mut self.mb_s.clone())
    }
}

/// The throughput table, then each tool against kafka-mirror when it ran.
pub(crate) fn throughput_table(summaries: &[ToolSummary], stored_bytes: u64) -> String {
    let mut t = String::from(
        "| tool | MB/s (median, min–max) | MB/s after the first record | CPU s per GB | peak RSS MiB | MB sent to target | sent / stored |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for s in summaries {
        if s.mb_s.is_empty() {
            let _ = writeln!(
                t,
                "| {} | failed ({} of {} runs): {} | | | | | |",
                s.tool.name(),
                s.failures.len(),
                s.runs,
                s.failures
                    .first()
                    .map_or("", |f| f.lines().next().unwrap_or(""))
            );
            continue;
        }
        let min = s.mb_s.iter().copied().fold(f64::INFINITY, f64::min);
        let max = s.mb_s.iter().copied().fold(0.0, f64::max);
        let mut notes = String::new();
        if !s.failures.is_empty() {
            let _ = write!(notes, " ({} of {} runs failed)", s.failures.len(), s.runs);
        }
        if s.extra_records > 0 {
            let _ = write!(notes, " ({} duplicate records)", s.extra_records);
        }
        let _ = writeln!(
            t,
            "| {}{notes} | {:.1} ({:.1}–{:.1}) | {:.1} | {:.2} | {:.0} | {:.1} | {:.2} |",
            s.tool.name(),
            s.median_mb_s(),
            min,
            max,
            s.copying_mb_s,
            s.cpu_s_per_gb,
            s.peak_rss_mib,
            s.wire_mb,
            s.wire_mb * 1e6 / stored_bytes as f64,
        );
    }
    t.push_str(&against_base(
        summaries,
        "Exactly-once against the same tool without it",
        Tool::without_exactly_once,
    ));
    t.push_str(&against_base(
        summaries,
        "Several instances with the same name against one (CPU and peak RSS summed over the instances)",
        Tool::single_instance,
    ));
    let Some(base) = succeeded(summaries, Tool::KafkaMirror) else {
        return t;
    };
    t.push_str(
        "\nAgainst kafka-mirror (how many times kafka-mirror is faster, or uses less):\n\n\
         | tool | MB/s | CPU per GB | peak RSS | bytes sent |\n|---|---|---|---|---|\n",
    );
    let ratio = |num: f64, den: f64| {
        if den > 0.0 && num.is_finite() {
            format!("{:.1}×", num / den)
        } else {
            "–".into()
        }
    };
    for s in summaries
        .iter()
        .filter(|s| s.tool != Tool::KafkaMirror && !s.mb_s.is_empty())
    {
        let _ = writeln!(
            t,
            "| {} | {} | {} | {} | {} |",
            s.tool.name(),
            ratio(base.median_mb_s(), s.median_mb_s()),
            ratio(s.cpu_s_per_gb, base.cpu_s_per_gb),
            ratio(s.peak_rss_mib, base.peak_rss_mib),
            ratio(s.wire_mb, base.wire_mb),
        );
    }
    t
}

/// The summary of `tool` if it ran and at least one run succeeded.
pub(crate) fn succeeded(summaries: &[ToolSummary], tool: Tool) -> Option<&ToolSummary> {
    summaries
        .iter()
        .find(|s| s.tool == tool && !s.mb_s.is_empty())
}

/// Each variant against the tool it derives from (`base_of`), when both ran,
/// under `heading`: what the variant costs on the same brokers and data.
fn against_base(
    summaries: &[ToolSummary],
    heading: &str,
    base_of: impl Fn(Tool) -> Option<Tool>,
) -> String {
    let mut t = String::new();
    for variant in summaries.iter().filter(|s| !s.mb_s.is_empty()) {
        let Some(base) = base_of(variant.tool).and_then(|tool| succeeded(summaries, tool)) else {
            continue;
        };
        if t.is_empty() {
            let _ = write!(
                t,
                "\n{heading} (% of its value):\n\n\
                 | tool | MB/s | MB/s after the first record | CPU s per GB | peak RSS |\n|---|---|---|---|---|\n",
            );
        }
        let percent = |num: f64, den: f64| format!("{:.0}%", 100.0 * num / den);
        let _ = writeln!(
            t,
            "| {} against {} | {} | {} | {} | {} |",
            variant.tool.name(),
            base.tool.name(),
            percent(variant.median_mb_s(), base.median_mb_s()),
            percent(variant.copying_mb_s, base.copying_mb_s),
            percent(variant.cpu_s_per_gb, base.cpu_s_per_gb),
            percent(variant.peak_rss_mib, base.peak_rss_mib),
        );
    }
    t
}
