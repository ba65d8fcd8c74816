//! What a process tree costs: CPU time and resident memory, sampled from /proc.
//!
//! A [`MeteredChild`] owns the spawned process. A sampler thread reads, every
//! [`SAMPLE_INTERVAL`], `/proc/<pid>/stat` (user + system CPU ticks) and
//! `/proc/<pid>/status` (`VmRSS`, `VmHWM`) of the process and of every descendant
//! (`/proc/<pid>/task/<tid>/children`). The process is reaped only after /proc shows
//! it as a zombie, whose `stat` still holds its final CPU times. A descendant that
//! exits between two samples loses at most one interval of CPU time.
//!
//! A [`DeathGuard`] SIGKILLs the child when this process dies, so a tool outlives
//! neither a panic nor a `kill -9` of the harness.
//!
//! Linux only; elsewhere the numbers stay zero.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

use crate::lock;
use crate::process::{signal, wait_until, DeathGuard};

/// How often the sampler reads /proc.
const SAMPLE_INTERVAL: Duration = Duration::from_millis(50);

/// What a process tree had used at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Usage {
    /// Since the process was spawned.
    pub wall: Duration,
    /// User + system CPU seconds of the whole tree.
    pub cpu_seconds: f64,
    /// The largest resident set seen: the tree's summed `VmRSS` at a sample, or the
    /// root's `VmHWM` (its own peak between samples), whichever is larger.
    pub peak_rss_kib: u64,
}

/// How a metered process ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// Usage when it exited (see [`MeteredChild::usage`] for a snapshot before).
    pub usage: Usage,
}

#[derive(Debug, Default)]
struct Shared {
    /// Last CPU ticks seen per pid of the tree (exited descendants keep their last value).
    ticks: HashMap<u32, u64>,
    peak_rss_kib: u64,
}

/// A spawned process whose tree is being measured.
#[derive(Debug)]
pub struct MeteredChild {
    pid: u32,
    started: Instant,
    stdout: Option<ChildStdout>,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
    sampler: Option<JoinHandle<std::io::Result<ExitStatus>>>,
    ticks_per_second: f64,
    /// Kills the child if this process dies; disarmed once the child is reaped.
    guard: DeathGuard,
}

impl MeteredChild {
    /// Spawns `cmd` (stdin from /dev/null; stdout and stderr as the command sets them)
    /// and starts measuring it.
    pub fn spawn(mut cmd: Command) -> Result<MeteredChild> {
        let ticks_per_second = clock_ticks_per_second();
        let started = Instant::now();
        let mut child = cmd
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {}", cmd.get_program().to_string_lossy()))?;
        let pid = child.id();
        let guard = match DeathGuard::arm(pid) {
            Ok(g) => g,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e);
            }
        };
        let stdout = child.stdout.take();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let sampler = {
            let (shared, stop) = (shared.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("meter-{pid}"))
                .spawn(move || sample_until_exit(child, &shared, &stop))
                .context("starting the sampler thread")?
        };
        Ok(MeteredChild {
            pid,
            started,
            stdout,
            shared,
            stop,
            sampler: Some(sampler),
            ticks_per_second,
            guard,
        })
    }

    /// The root process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's stdout, if the command piped it (take it once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.stdout.take()
    }

    /// Whether the process has exited (the sampler reaped it).
    pub fn has_exited(&self) -> bool {
        self.sampler.as_ref().is_none_or(|s| s.is_finished())
    }

    /// What the tree has used so far.
    pub fn usage(&self) -> Usage {
        let shared = lock(&self.shared);
        Usage {
            wall: self.started.elapsed(),
            cpu_seconds: shared.ticks.values().sum::<u64>() as f64 / self.ticks_per_second,
            peak_rss_kib: shared.peak_rss_kib,
        }
    }

    /// Waits for the process to exit by itself.
    pub fn wait(mut self) -> Result<Finished> {
        self.join()
    }

    /// SIGTERM, then SIGKILL if it is still running after `grace`; waits for the exit.
    pub fn stop(mut self, grace: Duration) -> Result<Finished> {
        signal(self.pid, "TERM");
        if !wait_until(grace, SAMPLE_INTERVAL, || self.has_exited()) {
            signal(self.pid, "KILL");
        }
        self.join()
    }

    fn join(&mut self) -> Result<Finished> {
        let sampler = self
            .sampler
            .take()
            .ok_or_else(|| anyhow!("process {} was already waited for", self.pid))?;
        let status = sampler
            .join()
            .map_err(|_| anyhow!("the sampler of process {} panicked", self.pid))?
            .with_context(|| format!("waiting for process {}", self.pid))?;
        self.guard.disarm();
        Ok(Finished {
            status,
            usage: self.usage(),
        })
    }
}

impl Drop for MeteredChild {
    fn drop(&mut self) {
        if let Some(sampler) = self.sampler.take() {
            self.stop.store(true, Ordering::Relaxed);
            signal(self.pid, "KILL");
            let _ = sampler.join();
        }
        self.guard.disarm();
    }
}

/// Reads all of a child's stdout on a thread; join it after the child exited.
pub fn read_all_on_thread(mut pipe: ChildStdout) -> JoinHandle<std::io::Result<String>> {
    thread::spawn(move || {
        let mut text = String::new();
        pipe.read_to_string(&mut text).map(|_| text)
    })
}

fn sample_until_exit(
    mut child: Child,
    shared: &Mutex<Shared>,
    stop: &AtomicBool,
) -> std::io::Result<ExitStatus> {
    let root = child.id();
    loop {
        let root_state = sample(root, shared);
        // A zombie (or a vanished /proc entry: not Linux) means it has exited.
        if matches!(root_state, None | Some('Z') | Some('X')) || stop.load(Ordering::Relaxed) {
            return child.wait();
        }
        thread::sleep(SAMPLE_INTERVAL);
    }
}

/// One sample of the tree under `root`; returns the root's state letter.
fn sample(root: u32, shared: &Mutex<Shared>) -> Option<char> {
    let mut root_state = None;
    let mut rss_sum = 0;
    let mut root_hwm = 0;
    let mut seen = Vec::new();
    let mut pending = vec![root];
    while let Some(pid) = pending.pop() {
        let dir = Path::new("/proc").join(pid.to_string());
        let Some((state, ticks)) = read_stat(&dir) else {
            continue;
        };
        if pid == root {
            root_state = Some(state);
            root_hwm = read_status_kib(&dir, "VmHWM:").unwrap_or(0);
        }
        rss_sum += read_status_kib(&dir, "VmRSS:").unwrap_or(0);
        seen.push((pid, ticks));
        pending.extend(children(&dir));
    }
    let mut shared = lock(shared);
    for (pid, ticks) in seen {
        let slot = shared.ticks.entry(pid).or_default();
        *slot = (*slot).max(ticks);
    }
    shared.peak_rss_kib = shared.peak_rss_kib.max(rss_sum).max(root_hwm);
    root_state
}

/// CPU seconds (user + system, all threads) this process has used so far.
pub fn own_cpu_seconds() -> Result<f64> {
    let (_, ticks) =
        read_stat(Path::new("/proc/self")).ok_or_else(|| anyhow!("cannot read /proc/self/stat"))?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// The process state letter and utime + stime (in clock ticks) from `<dir>/stat`.
fn read_stat(proc_dir: &Path) -> Option<(char, u64)> {
    let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
    // "pid (comm) state ppid ..." and comm may contain spaces or parentheses.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Fields 14 and 15 of proc(5), counted from the state (field 3).
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((state, utime + stime))
}

/// A `kB` line such as `VmHWM:` from `<dir>/status`.
fn read_status_kib(proc_dir: &Path, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(proc_dir.join("status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Child pids of every thread of the process in `dir`.
fn children(proc_dir: &Path) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(proc_dir.join("task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("children")).ok())
        .flat_map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect::<Vec<u32>>()
        })
        .collect()
}

/// `getconf CLK_TCK`, or 100 (the Linux value for user-visible ticks).
fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|&t| t > 0.0)
        .unwrap_or(100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measures_a_busy_child_and_its_descendant() {
        // A shell that spins, plus a child that spins: both count.
        let mut cmd = Command::new("bash");
        cmd.args([
            "-c",
            "(end=$((SECONDS+1)); while [ $SECONDS -lt $end ]; do :; done) & \
             end=$((SECONDS+1)); while [ $SECONDS -lt $end ]; do :; done; wait",
        ]);
        let finished = MeteredChild::spawn(cmd).unwrap().wait().unwrap();
        assert!(finished.status.success());
        assert!(finished.usage.cpu_seconds > 0.0, "{:?}", finished.usage);
        assert!(finished.usage.peak_rss_kib > 0, "{:?}", finished.usage);
    }

    #[test]
    fn stop_ends_a_running_process() {
        let mut cmd = Command::new("sleep");
        cmd.arg("60");
        let child = MeteredChild::spawn(cmd).unwrap();
        let finished = child.stop(Duration::from_secs(5)).unwrap();
        assert!(!finished.status.success());
    }
}
