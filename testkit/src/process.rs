//! Child processes: running one to completion, signalling and waiting, and making
//! sure none outlives the test process.
//!
//! Two guards, for two shapes of child:
//! - [`Watched`] runs a long-lived server (a Kafka or ZooKeeper JVM, toxiproxy) under a
//!   watchdog shell that also removes the server's directory when the test process
//!   dies, since no destructor runs then.
//! - [`DeathGuard`] watches a process this one spawned itself (and so can reap and
//!   measure, see `measure.rs`): it only SIGKILLs it when the test process dies.
//!
//! Both rest on the same fact: a pipe whose only write end this process holds reads
//! EOF once this process is gone, however it ended (panic, exit, SIGKILL).

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// What a tool printed.
#[derive(Debug, Clone)]
pub struct ToolOutput {
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin from /dev/null) to completion and fails, with the tail of what it
/// printed, if it exits non-zero. `what` names it in errors.
pub(crate) fn output_checked(cmd: &mut Command, what: &str) -> Result<ToolOutput> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {what}"))?;
    let res = ToolOutput {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    };
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n--- stdout ---\n{}\n--- stderr ---\n{}",
            out.status,
            tail(&res.stdout, 40),
            tail(&res.stderr, 40)
        );
    }
    Ok(res)
}

/// The last `lines` lines of `text`: what an error message shows of a process's output.
pub(crate) fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The last `lines` lines of a log file, or why it cannot be read.
pub(crate) fn file_tail(path: &Path, lines: usize) -> String {
    fs::read(path)
        .map(|b| tail(&String::from_utf8_lossy(&b), lines))
        .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display()))
}

/// Sends `sig` (a name such as "TERM") to `pid`; a process already gone is no error.
pub(crate) fn signal(pid: u32, sig: &str) {
    let _ = Command::new("kill")
        .args(["-s", sig, &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Calls `ready` every `interval` until it returns true (then true) or `timeout` has
/// passed (then false).
pub(crate) fn wait_until(
    timeout: Duration,
    interval: Duration,
    mut ready: impl FnMut() -> bool,
) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        thread::sleep(interval);
    }
}

/// A running JVM (or other server) and its watchdog shell.
///
/// The shell (`bash`) starts the JVM in the background and a watcher subshell that
/// blocks reading its stdin, a pipe whose only write end this process holds. When this
/// process goes away for any reason (panic, exit with clusters in statics, SIGKILL),
/// the kernel closes the pipe, the watcher reads EOF, SIGKILLs the JVM and removes
/// `clean_dir` (the node's directory, which no destructor will remove then). When the
/// JVM exits by itself or is signalled through `stop`/`kill`, the shell's `wait`
/// returns, it kills the watcher (so nothing is removed) and exits too; only then is
/// the pipe closed.
#[derive(Debug)]
pub(crate) struct Watched {
    shell: Child,
    stdin: Option<ChildStdin>,
    jvm_pid: u32,
}

const WATCHDOG_SCRIPT: &str = r#"
"$@" </dev/null >>"$KT_LOG" 2>&1 &
jpid=$!
echo "$jpid"
{
  while read -r _; do :; done
  # A separate process, so the shell killing this watcher once the JVM is gone does
  # not cut the cleanup short.
  (
    kill -9 "$jpid"
    if [ -n "$KT_CLEAN_DIR" ]; then
      n=0; while kill -0 "$jpid" && [ $n -lt 100 ]; do sleep 0.1; n=$((n+1)); done
      rm -rf -- "$KT_CLEAN_DIR"; rmdir -- "${KT_CLEAN_DIR%/*}"
    fi
  ) &
} <&0 >/dev/null 2>&1 &
wpid=$!
exec 0</dev/null 1>/dev/null 2>/dev/null
wait "$jpid"; rc=$?
kill -9 "$wpid" 2>/dev/null
exit "$rc"
"#;

impl Watched {
    /// Starts `java` (any command) under the watchdog, its output appended to `log`;
    /// `clean_dir` is removed if this process dies while it runs.
    pub(crate) fn spawn(java: Command, log: &Path, clean_dir: Option<&Path>) -> Result<Watched> {
        let mut cmd = Command::new("bash");
        cmd.arg("-c")
            .arg(WATCHDOG_SCRIPT)
            .arg("kafka-testkit-watchdog");
        cmd.arg(java.get_program());
        cmd.args(java.get_args());
        if let Some(dir) = java.get_current_dir() {
            cmd.current_dir(dir);
        }
        for (k, v) in java.get_envs() {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        match clean_dir {
            Some(d) => cmd.env("KT_CLEAN_DIR", d),
            None => cmd.env_remove("KT_CLEAN_DIR"),
        };
        cmd.env("KT_LOG", log)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut shell = cmd
            .spawn()
            .context("spawning bash (kafka-testkit needs bash)")?;
        let mut line = String::new();
        BufReader::new(shell.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .context("reading the JVM pid from the watchdog")?;
        let jvm_pid: u32 = match line.trim().parse() {
            Ok(p) => p,
            Err(_) => {
                let _ = shell.kill();
                let _ = shell.wait();
                bail!("watchdog did not report a JVM pid (got {line:?})");
            }
        };
        let stdin = shell.stdin.take();
        Ok(Watched {
            shell,
            stdin,
            jvm_pid,
        })
    }

    /// The watched process's pid.
    pub(crate) fn pid(&self) -> u32 {
        self.jvm_pid
    }

    pub(crate) fn is_running(&mut self) -> bool {
        matches!(self.shell.try_wait(), Ok(None))
    }

    fn signal(&mut self, sig: &str) {
        if self.is_running() {
            signal(self.jvm_pid, sig);
        }
    }

    /// Waits for the shell (and so the JVM) to exit; true if it did in time.
    fn wait_timeout(&mut self, timeout: Duration) -> bool {
        wait_until(timeout, Duration::from_millis(50), || {
            !matches!(self.shell.try_wait(), Ok(None))
        })
    }

    /// SIGKILL, and wait until it is gone.
    pub(crate) fn kill(&mut self) {
        self.signal("KILL");
        // stdin is closed only once the shell is gone (and took its watcher with it), so
        // the watcher's cleanup does not run for a node that may be restarted.
        if !self.wait_timeout(Duration::from_secs(20)) {
            // Last resort: the watcher SIGKILLs the JVM on EOF.
            self.stdin.take();
            let _ = self.shell.kill();
            let _ = self.shell.wait();
        }
        self.stdin.take();
    }

    /// SIGTERM, then [`kill`](Self::kill) if it is still running after `timeout`.
    pub(crate) fn stop(&mut self, timeout: Duration) {
        self.signal("TERM");
        if !self.wait_timeout(timeout) {
            eprintln!(
                "kafka-testkit: JVM {} ignored SIGTERM for {timeout:?}; killing it",
                self.jvm_pid
            );
        }
        self.kill();
    }
}

/// `bash` blocked reading a pipe only this process writes: at EOF (this process died)
/// it SIGKILLs the guarded pid. Disarm it once that process is reaped, since its pid
/// may then be reused.
#[derive(Debug)]
pub(crate) struct DeathGuard {
    shell: Child,
}

/// The guard's script; `$0` is the pid to kill.
const GUARD_SCRIPT: &str = r#"read -r _; kill -9 "$0" 2>/dev/null"#;

impl DeathGuard {
    pub(crate) fn arm(pid: u32) -> Result<DeathGuard> {
        let pid = pid.to_string();
        let shell = Command::new("bash")
            .args(["-c", GUARD_SCRIPT, &pid])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting the guard shell (bash)")?;
        Ok(DeathGuard { shell })
    }

    /// Ends the guard without firing it. Safe to call more than once.
    pub(crate) fn disarm(&mut self) {
        let _ = self.shell.kill();
        let _ = self.shell.wait();
    }
}
