//! What the bench runs, from environment variables (all optional).
//!
//! `BENCH_SMOKE=1` swaps the defaults for the smoke's ([`SMOKE`]): every section
//! once, on a few MB, kafka-mirror and MirrorMaker 2 only, in a few minutes, for
//! CI to show that the harness still runs and its report still parses
//! (`scripts/test` runs it). Any other variable still overrides its default.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};

use crate::tools::Tool;
use crate::wan::WanLegs;

/// Every knob, with the environment variable that sets it.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// `BENCH_SMOKE`: `1` for the smoke's defaults; kafka-mirror is then the binary
    /// cargo built with the bench (`cargo bench --profile dev` in CI: no release
    /// build) and the report is read back and checked (see `report::check`).
    pub(crate) smoke: bool,
    /// `BENCH_DATA_MB`: MiB of record batches stored on the source (default 1024).
    pub(crate) data_mib: u64,
    /// `BENCH_PARTITIONS`: partitions of each of the two data topics (default 12).
    pub(crate) partitions: u32,
    /// `BENCH_TOOLS`: comma-separated, in the order they alternate
    /// (default `kafka-mirror,kafka-mirror-eos,mm2,mm2-eos,mm2-tuned,mm1`). Opt-in, as
    /// they add two full copies per rep: `kafka-mirror-x2` and `kafka-mirror-x3`, two or
    /// three kafka-mirror processes with the same name sharing the partitions.
    pub(crate) tools: Vec<Tool>,
    /// `BENCH_REPS`: how many times the tool sequence runs (default 2: A B C A B C).
    pub(crate) reps: u32,
    /// `BENCH_SECTIONS`: which parts run (default `throughput,limit,wan,sweep,latency,idle,failover,verify`).
    pub(crate) sections: Vec<Section>,
    /// `BENCH_TIMEOUT_S`: one run's limit before it counts as failed (default 1800).
    pub(crate) run_timeout_s: u64,
    /// `BENCH_WAN_DATA_MB`: MiB stored in the WAN topics (default 128).
    pub(crate) wan_data_mib: u64,
    /// `BENCH_WAN_RTTS`: round-trip times of the capped WAN runs, ms, half
    /// added each way (default `100,200`).
    pub(crate) wan_rtts_ms: Vec<u32>,
    /// `BENCH_WAN_CAP_MBIT`: bandwidth cap per direction and per proxy (default 400).
    pub(crate) wan_cap_mbit: u32,
    /// `BENCH_WAN_LEGS`: where the WAN sections put the tools (default `source`).
    pub(crate) wan_legs: WanLegs,
    /// `BENCH_RTTS`: round-trip times of the sweep, ms (default `0,10,50,100,200`).
    pub(crate) rtts_ms: Vec<u32>,
    /// `BENCH_SWEEP_DATA_MB`: MiB stored in the sweep's topics (default 32).
    pub(crate) sweep_data_mib: u64,
    /// `BENCH_LATENCY_RATE`: records per second of the latency run (default 2000).
    pub(crate) latency_rate: u32,
    /// `BENCH_LATENCY_WARMUP_S`: how long it produces before the records measured,
    /// which covers the tools' start (default 20).
    pub(crate) latency_warmup_s: u32,
    /// `BENCH_LATENCY_SECONDS`: how long it produces after the warm-up (default 30).
    pub(crate) latency_seconds: u32,
    /// `BENCH_IDLE_PARTITIONS`: partitions of the idle section's two topics together (default 5000).
    pub(crate) idle_partitions: u32,
    /// `BENCH_IDLE_SECONDS`: how long the tools run idle after catching up (default 60).
    pub(crate) idle_seconds: u32,
    /// `BENCH_FAILOVER_RECORDS`: records per partition of each of the failover
    /// section's two topics (default 2000).
    pub(crate) failover_records: u64,
    /// `BENCH_DATA_AGE_DAYS`: the data sets' records carry a CreateTime this
    /// many days back, a backfill (default 0: the time they are written; the
    /// smoke's 2). Older than the target's `producer.id.expiration.ms` (a day),
    /// kafka-mirror's idempotent copy sends them one batch at a time per
    /// partition. At most 6: the brokers' default retention (7 days) would
    /// delete older data from the topics MirrorMaker 1 creates.
    pub(crate) data_age_days: u32,
    /// `BENCH_OUT`: the markdown file written (default `target/bench/replication.md`,
    /// the smoke's `target/bench/replication-smoke.md`).
    pub(crate) out: Option<String>,
    /// `BENCH_MIRROR_ARGS`: extra arguments for `kafka-mirror run`, split on
    /// whitespace (e.g. `--config tuning.toml` to try other settings; default none).
    pub(crate) mirror_args: Vec<String>,
}

/// A part of the bench.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Section {
    Throughput,
    Limit,
    Wan,
    Sweep,
    Latency,
    Idle,
    Failover,
    Verify,
}

impl Section {
    const ALL: [(Section, &'static str); 8] = [
        (Section::Throughput, "throughput"),
        (Section::Limit, "limit"),
        (Section::Wan, "wan"),
        (Section::Sweep, "sweep"),
        (Section::Latency, "latency"),
        (Section::Idle, "idle"),
        (Section::Failover, "failover"),
        (Section::Verify, "verify"),
    ];

    /// Its name in `BENCH_SECTIONS` and in the report's section markers.
    pub(crate) fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(s, _)| *s == self)
            .map_or("?", |(_, n)| n)
    }
}

/// The defaults of the variables that size a run.
struct Defaults {
    data_mib: u64,
    partitions: u32,
    tools: &'static str,
    reps: u32,
    sections: &'static str,
    run_timeout_s: u64,
    wan_data_mib: u64,
    wan_rtts: &'static str,
    rtts: &'static str,
    sweep_data_mib: u64,
    latency_rate: u32,
    latency_warmup_s: u32,
    latency_seconds: u32,
    idle_partitions: u32,
    idle_seconds: u32,
    failover_records: u64,
    data_age_days: u32,
}

/// A full run's defaults (those in the field docs of [`Settings`]).
const FULL: Defaults = Defaults {
    data_mib: 1024,
    partitions: 12,
    tools: "kafka-mirror,kafka-mirror-eos,mm2,mm2-eos,mm2-tuned,mm1",
    reps: 2,
    sections: "throughput,limit,wan,sweep,latency,idle,failover,verify",
    run_timeout_s: 1800,
    wan_data_mib: 128,
    wan_rtts: "100,200",
    rtts: "0,10,50,100,200",
    sweep_data_mib: 32,
    latency_rate: 2000,
    latency_warmup_s: 20,
    latency_seconds: 30,
    idle_partitions: 5000,
    idle_seconds: 60,
    failover_records: 2000,
    data_age_days: 0,
};

/// The smoke's (`BENCH_SMOKE=1`): each section's code runs once with the
/// smallest amounts that still exercise it, one round trip in the sweep;
/// its figures mean nothing.
const SMOKE: Defaults = Defaults {
    data_mib: 4,
    partitions: 3,
    tools: "kafka-mirror,mm2",
    reps: 1,
    sections: FULL.sections,
    run_timeout_s: 180,
    wan_data_mib: 4,
    wan_rtts: "20",
    rtts: "20",
    sweep_data_mib: 2,
    latency_rate: 200,
    latency_warmup_s: 2,
    latency_seconds: 3,
    idle_partitions: 20,
    idle_seconds: 3,
    failover_records: 100,
    data_age_days: 2,
};

impl Settings {
    pub(crate) fn from_env() -> Result<Settings> {
        let smoke = num("BENCH_SMOKE", 0u8)? != 0;
        let d = if smoke { &SMOKE } else { &FULL };
        let names: Vec<&str> = Section::ALL.iter().map(|(_, n)| *n).collect();
        Ok(Settings {
            smoke,
            data_mib: num("BENCH_DATA_MB", d.data_mib)?,
            partitions: num("BENCH_PARTITIONS", d.partitions)?,
            tools: list("BENCH_TOOLS", d.tools)?
                .iter()
                .map(|t| Tool::parse(t))
                .collect::<Result<_>>()?,
            reps: num("BENCH_REPS", d.reps)?,
            sections: list("BENCH_SECTIONS", d.sections)?
                .iter()
                .map(|s| {
                    Section::ALL
                        .iter()
                        .find(|(_, n)| n == s)
                        .map(|(s, _)| *s)
                        .with_context(|| {
                            format!(
                                "BENCH_SECTIONS: unknown section {s:?} ({})",
                                names.join(", ")
                            )
                        })
                })
                .collect::<Result<_>>()?,
            run_timeout_s: num("BENCH_TIMEOUT_S", d.run_timeout_s)?,
            wan_data_mib: num("BENCH_WAN_DATA_MB", d.wan_data_mib)?,
            wan_rtts_ms: millis("BENCH_WAN_RTTS", d.wan_rtts)?,
            wan_cap_mbit: num("BENCH_WAN_CAP_MBIT", 400)?,
            wan_legs: WanLegs::parse(
                &std::env::var("BENCH_WAN_LEGS").unwrap_or_else(|_| "source".into()),
            )?,
            rtts_ms: millis("BENCH_RTTS", d.rtts)?,
            sweep_data_mib: num("BENCH_SWEEP_DATA_MB", d.sweep_data_mib)?,
            latency_rate: num("BENCH_LATENCY_RATE", d.latency_rate)?,
            latency_warmup_s: num("BENCH_LATENCY_WARMUP_S", d.latency_warmup_s)?,
            latency_seconds: num("BENCH_LATENCY_SECONDS", d.latency_seconds)?,
            idle_partitions: num("BENCH_IDLE_PARTITIONS", d.idle_partitions)?,
            idle_seconds: num("BENCH_IDLE_SECONDS", d.idle_seconds)?,
            failover_records: num("BENCH_FAILOVER_RECORDS", d.failover_records)?,
            data_age_days: data_age_days(d.data_age_days)?,
            out: std::env::var("BENCH_OUT").ok().filter(|s| !s.is_empty()),
            mirror_args: std::env::var("BENCH_MIRROR_ARGS")
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
        })
    }

    pub(crate) fn runs(&self, section: Section) -> bool {
        self.sections.contains(&section)
    }

    /// The environment variables that differ from the defaults, as a command prefix.
    pub(crate) fn command_line(&self) -> String {
        let mut vars: Vec<(String, String)> = std::env::vars()
            .filter(|(k, _)| k.starts_with("BENCH_"))
            .collect();
        vars.sort();
        let mut line = String::new();
        for (key, value) in vars {
            let _ = write!(line, "{key}={value} ");
        }
        // A bench built without optimizations was run with a dev-like profile,
        // as the smoke is in CI.
        line.push_str(if cfg!(debug_assertions) {
            "cargo bench --profile dev --bench replication"
        } else {
            "cargo bench --bench replication"
        });
        line
    }
}

fn num<T: std::str::FromStr>(key: &str, default: T) -> Result<T> {
    match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("{key}={v:?} is not a valid number")),
        Ok(_) | Err(std::env::VarError::NotPresent) => Ok(default),
        Err(e) => bail!("{key}: {e}"),
    }
}

fn list(key: &str, default: &str) -> Result<Vec<String>> {
    let value = match std::env::var(key) {
        Ok(v) if !v.trim().is_empty() => v,
        Ok(_) | Err(std::env::VarError::NotPresent) => default.to_string(),
        Err(e) => bail!("{key}: {e}"),
    };
    Ok(value
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect())
}

/// A comma-separated list of round-trip times, ms.
fn millis(key: &str, default: &str) -> Result<Vec<u32>> {
    list(key, default)?
        .iter()
        .map(|r| {
            r.parse()
                .with_context(|| format!("{key}: {r:?} is not a number of ms"))
        })
        .collect()
}

/// `BENCH_DATA_AGE_DAYS`, at most 6 (see [`Settings::data_age_days`]).
fn data_age_days(default: u32) -> Result<u32> {
    let days = num("BENCH_DATA_AGE_DAYS", default)?;
    if days > 6 {
        bail!(
            "BENCH_DATA_AGE_DAYS={days}: at most 6, or the brokers' default retention (7 days) \
             deletes the data from the topics MirrorMaker 1 creates"
        );
    }
    Ok(days)
}
