//! The `kafka-mirror` binary: parse flags, set up logging, run, report.
//!
//! Exit codes: 0 when the run ended normally (caught up, or stopped by a
//! signal after in-flight batches landed); 1 when the mirror could not run
//! (bad config, unreachable cluster, ...); 2 when some partitions stopped with
//! an error (named in the summary on stdout) while the others were copied;
//! 3 when the final checkpoints could not be stored, so a restart copies
//! again what this run copied past the stored ones (the summary says how much);
//! 4 when the data was copied but the last consumer group offset sync could
//! not sync every selected group (the summary names them); 5 when `failover`
//! finds the cutover not ready (groups with members on the source, or data
//! not copied within its timeout), or `failback` does not complete (groups
//! with members on the target, data left to copy back after its timeout, or
//! the forward checkpoints could not be rewritten); `failback` also exits 2,
//! 3 or 4 for its copy back as `run` does; 6 when an exactly-once run that
//! does not share (`instances.share = false`) was fenced by another instance
//! of the same name, which took over (restarting this one would fence that
//! one in turn), or when another process joined with this one's
//! `instances.instance_id`; 7 when `verify`, or `run --until-caught-up
//! --verify` after a run that ended with 0, finds a partition whose copy
//! differs from the source (the report names each one).

mod cli;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::signal::unix::{signal, SignalKind};
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, Format, LogFormat};
use kafka_mirror::config::mirrormaker;
use kafka_mirror::config::properties::Properties;
use kafka_mirror::config::{ConfigError, MirrorConfig};
use kafka_mirror::observe::{http, Board};
use kafka_mirror::pipeline::{
    self, Failback, RunOptions, Summary, SwitchOptions, VerifyOptions, VerifyProgress,
};
use progress::{read_board, read_checks, ProgressLog};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let log = cli.log_format;
    // Progress for a person or a CI log watching a run that ends, or a
    // check; JSON logs carry the engine's progress events instead (every
    // line stays JSON).
    let shows_progress = match &cli.command {
        Command::Run(args) => args.run.until_caught_up,
        Command::Verify(_) => true,
        _ => false,
    };
    let progress = (shows_progress && !cli.quiet && log == LogFormat::Text)
        .then(|| progress::Display::for_stderr(std::io::stderr().is_terminal()));
    let log_writer = progress
        .as_ref()
        .map_or_else(ProgressLog::default, progress::Display::log_writer);
    init_logging(cli.verbose, cli.quiet, log, log_writer);
    let job = match configure(cli.command) {
        Ok(job) => job,
        Err(e) => return fail(log, e),
    };
    let threads = match &job {
        Job::Run(config, ..) => config.replication.threads,
        Job::Failback(config, _) => config.replication.threads,
        Job::Verify(..) => 2,
        Job::Plan(_) | Job::Offsets(..) | Job::Status(..) | Job::Failover(..) | Job::Print(_) => 1,
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(log, format_args!("cannot start the async runtime: {e}")),
    };
    let (config, options, verify_after) = match job {
        Job::Run(config, options, verify_after) => (config, options, verify_after),
        Job::Plan(config) => {
            return match runtime.block_on(pipeline::plan(config)) {
                Ok(plan) => {
                    print!("{plan}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(log, e),
            }
        }
        Job::Offsets(config, format) => {
            return match runtime.block_on(pipeline::offsets(config)) {
                Ok(offsets) => print_listing(&offsets, format, log),
                Err(e) => fail(log, e),
            }
        }
        Job::Status(config, format) => {
            return match runtime.block_on(pipeline::status(config)) {
                Ok(status) => print_listing(&status, format, log),
                Err(e) => fail(log, e),
            }
        }
        Job::Verify(config, options, format) => {
            let check = check(config, options, progress, format, log);
            return runtime.block_on(check);
        }
        Job::Failover(config, options) => {
            return match runtime.block_on(pipeline::failover(config, options)) {
                Ok(failover) => {
                    print!("{failover}");
                    if failover.flows.iter().all(|flow| flow.is_ready()) {
                        if failover.is_complete() {
                            ExitCode::SUCCESS
                        } else {
                            ExitCode::from(4)
                        }
                    } else {
                        ExitCode::from(5)
                    }
                }
                Err(e) => fail(log, e),
            }
        }
        Job::Failback(config, options) => {
            return match runtime.block_on(pipeline::failback(config, options)) {
                Ok(failback) => {
                    print!("{failback}");
                    failback_exit(&failback)
                }
                Err(e) => fail(log, e),
            }
        }
        Job::Print(text) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
    };
    let verify_config = verify_after.then(|| config.clone());
    let interrupted = AtomicBool::new(false);
    let result = runtime.block_on(async {
        let signal = match shutdown_signal() {
            Ok(signal) => signal,
            Err(e) => return Err(format!("cannot listen for SIGINT/SIGTERM: {e}")),
        };
        let shutdown = async {
            signal.await;
            interrupted.store(true, Ordering::Relaxed);
        };
        let board = Board::new();
        if let Some(address) = &config.http.listen {
            http::start(address, &config.http, board.clone())
                .await
                .map_err(|e| e.to_string())?;
        }
        let run = pipeline::run_observed(config, options, &board, shutdown);
        let summary = match progress.clone() {
            Some(display) => display.show_while(|| read_board(&board), run).await,
            None => run.await,
        };
        summary.map_err(|e| e.to_string())
    });
    let summary = match result {
        Err(e) => return fail(log, e),
        Ok(summary) => summary,
    };
    print!("{summary}");
    let code = run_exit(&summary);
    match verify_config {
        // A run that was stopped, or did not copy everything, is not
        // checked: its summary already says what is missing.
        Some(config) if code == ExitCode::SUCCESS && !interrupted.load(Ordering::Relaxed) => {
            let options = VerifyOptions {
                sample: 1,
                source_ends: summary.source_ends,
            };
            runtime.block_on(async {
                let signal = match shutdown_signal() {
                    Ok(signal) => signal,
                    Err(e) => return fail(log, format_args!("cannot listen for SIGINT: {e}")),
                };
                tokio::select! {
                    code = check(config, options, progress, Format::Text, log) => code,
                    () = signal => fail(log, "interrupted before the check ended"),
                }
            })
        }
        _ => code,
    }
}

/// A run's exit code, from its summary (see the module doc).
fn run_exit(summary: &Summary) -> ExitCode {
    if !summary.fenced.is_empty() {
        ExitCode::from(6)
    } else if !summary.unsaved_checkpoints.is_empty() {
        ExitCode::from(3)
    } else if !summary.stopped.is_empty() {
        ExitCode::from(2)
    } else if summary.groups.as_ref().is_some_and(|g| g.has_failures()) {
        ExitCode::from(4)
    } else {
        ExitCode::SUCCESS
    }
}

/// Compares the copies, showing progress on `progress` if given, and
/// prints the report: 0 when every copy agrees, 7 when one differs.
async fn check(
    config: MirrorConfig,
    options: VerifyOptions,
    progress: Option<progress::Display>,
    format: Format,
    log: LogFormat,
) -> ExitCode {
    let counters = VerifyProgress::default();
    let work = pipeline::verify_observed(config, options, &counters);
    let report = match progress {
        Some(display) => display.show_while(|| read_checks(&counters), work).await,
        None => work.await,
    };
    match report {
        Ok(report) => match print_listing(&report, format, log) {
            code if code != ExitCode::SUCCESS => code,
            _ if report.agrees() => ExitCode::SUCCESS,
            _ => ExitCode::from(7),
        },
        Err(e) => fail(log, e),
    }
}

/// Reports why the command could not run, and exits 1: a line for people,
/// or with JSON logs an error event, so every line of stderr is JSON.
fn fail(log: LogFormat, why: impl std::fmt::Display) -> ExitCode {
    match log {
        LogFormat::Text => eprintln!("kafka-mirror: {why}"),
        LogFormat::Json => tracing::error!("{why}"),
    }
    ExitCode::from(1)
}

/// A failback's exit code: 0 when done (or, without --apply, ready), else
/// the first problem as `run` counts them, 5 for the rest.
fn failback_exit(failback: &Failback) -> ExitCode {
    let flows = &failback.flows;
    if !flows.iter().all(|flow| flow.is_ready()) {
        return ExitCode::from(5);
    }
    if !failback.applied || flows.iter().all(|flow| flow.is_complete()) {
        return ExitCode::SUCCESS;
    }
    let summaries = || {
        flows
            .iter()
            .filter_map(|f| f.outcome.as_ref())
            .map(|o| &o.summary)
    };
    if summaries().any(|s| !s.unsaved_checkpoints.is_empty()) {
        ExitCode::from(3)
    } else if summaries().any(|s| !s.stopped.is_empty()) {
        ExitCode::from(2)
    } else if summaries().any(|s| s.groups.as_ref().is_some_and(|g| g.has_failures())) {
        ExitCode::from(4)
    } else {
        ExitCode::from(5)
    }
}

/// What a command line asks for.
enum Job {
    /// Replicate; then, if asked, check the copy.
    Run(MirrorConfig, RunOptions, bool),
    /// Show what a run would do to the targets.
    Plan(MirrorConfig),
    /// List the selected consumer groups' offsets on both clusters.
    Offsets(MirrorConfig, Format),
    /// List each flow's instances and what they copy.
    Status(MirrorConfig, Format),
    /// Compare each selected partition with its copy.
    Verify(MirrorConfig, VerifyOptions, Format),
    /// Move the selected groups to the target.
    Failover(MirrorConfig, SwitchOptions),
    /// Copy back what the target got since a failover, and the groups.
    Failback(MirrorConfig, SwitchOptions),
    /// Print this and exit (`convert`).
    Print(String),
}

/// Reads the command line's config into a job.
fn configure(command: Command) -> Result<Job, ConfigError> {
    let translation = match command {
        Command::Run(args) => {
            let options = RunOptions {
                until_caught_up: args.run.until_caught_up,
            };
            return Ok(Job::Run(args.run.to_config()?, options, args.verify));
        }
        Command::Plan(args) => return Ok(Job::Plan(args.to_config()?)),
        Command::Status(args) => return Ok(Job::Status(args.run.to_config()?, args.format)),
        Command::Verify(args) => {
            let options = VerifyOptions {
                sample: args.sample,
                source_ends: Default::default(),
            };
            return Ok(Job::Verify(args.run.to_config()?, options, args.format));
        }
        Command::Failover(args) => {
            let (config, options) = args.to_switch(Duration::from_secs(300))?;
            return Ok(Job::Failover(config, options));
        }
        Command::Failback(args) => {
            let (config, options) = args.to_switch(Duration::from_secs(600))?;
            return Ok(Job::Failback(config, options));
        }
        Command::Offsets(args) => {
            let config = args.flow.layered_config()?;
            config.validate()?;
            return Ok(Job::Offsets(config, args.format));
        }
        Command::Mm1(args) => args.to_translation()?,
        Command::Mm2(args) => args.to_translation()?,
        Command::Convert(args) => {
            let props = Properties::from_file(&args.file)?;
            let translation = mirrormaker::mm2(&props, &args.file.display().to_string())?;
            translation.config.validate()?;
            return Ok(Job::Print(mirrormaker::to_toml(&translation, &args.file)));
        }
    };
    for notice in &translation.notices {
        tracing::warn!("{notice}");
    }
    Ok(Job::Run(translation.config, RunOptions::default(), false))
}

/// Prints a listing as text or JSON.
fn print_listing<T: std::fmt::Display + serde::Serialize>(
    listing: &T,
    format: Format,
    log: LogFormat,
) -> ExitCode {
    match format {
        Format::Text => print!("{listing}"),
        Format::Json => match serde_json::to_string_pretty(listing) {
            Ok(json) => println!("{json}"),
            Err(e) => return fail(log, format_args!("cannot write the listing as JSON: {e}")),
        },
    }
    ExitCode::SUCCESS
}

/// Quiet by default (warnings and errors only); `-v` shows progress,
/// `--quiet` errors only. Text for people, JSON for log collectors.
fn init_logging(verbose: u8, quiet: bool, format: LogFormat, stderr: ProgressLog) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, _) => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let logger = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(move || stderr.clone());
    match format {
        // Colours only for a person at a terminal: log files and collectors
        // get plain text, and NO_COLOR (https://no-color.org) turns them off.
        LogFormat::Text => {
            let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
            logger.with_ansi(colour).init();
        }
        // tracing-subscriber's JSON: `timestamp`, `level`, `target`, the
        // event's `fields` (with `message`), and its spans' fields (`span`,
        // `spans`: the flow).
        LogFormat::Json => logger.json().with_ansi(false).init(),
    }
}

/// Resolves at the first SIGINT or SIGTERM.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
