//! The progress of `run --until-caught-up` and of `verify` for whoever
//! watches it: a bar per flow on a terminal (indicatif), a plain line per
//! flow every few seconds otherwise (a log file, a CI job). Both say the
//! same: records copied of those to copy (`verify`: source offsets read of
//! those to read), bytes, the rate and the time left.
//!
//! Progress only reads what the flows publish; the engines (and `verify`'s
//! readers) own the numbers.
//! On a terminal, log lines are written above the bars through
//! [`ProgressLog`], so neither tears the other.

use std::collections::{HashMap, VecDeque};
use std::fmt::Write as _;
use std::future::Future;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use indicatif::{DecimalBytes, HumanCount, MultiProgress, ProgressBar, ProgressStyle};
use kafka_mirror::observe::{Board, FlowPhase, FlowView};
use kafka_mirror::pipeline::{FlowCheckProgress, VerifyProgress};

/// How often the plain lines are written.
const LINE_INTERVAL: Duration = Duration::from_secs(5);
/// How often the flows are read (and the bars redrawn): as often as the
/// engines publish.
const READ_INTERVAL: Duration = kafka_mirror::observe::board::PUBLISH_INTERVAL;
/// How far back the rate looks: long enough to smooth the bursts of fetches
/// and checkpoints, short enough to follow a throttle or a slower link.
const RATE_WINDOW: Duration = Duration::from_secs(10);

/// What a flow's progress counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Work {
    /// A run copying records.
    Copy,
    /// `verify` reading source offsets (and their copies).
    Check,
}

impl Work {
    /// What is counted, and what is done to the bytes.
    fn words(self) -> (&'static str, &'static str) {
        match self {
            Work::Copy => ("records", "copied"),
            Work::Check => ("offsets", "read"),
        }
    }
}

/// One flow's progress, as read from what it publishes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlowProgress {
    /// The flow's name.
    pub(crate) flow: String,
    pub(crate) work: Work,
    /// Records copied by this run, or offsets checked.
    pub(crate) count: u64,
    /// What is left up to where the work ends (a run: offsets up to the
    /// source's end when it began); none while the flow starts.
    pub(crate) left: Option<u64>,
    /// Bytes copied, or read from both clusters.
    pub(crate) bytes: u64,
    /// The flow's work is over.
    pub(crate) done: bool,
}

impl From<&FlowView> for FlowProgress {
    fn from(view: &FlowView) -> Self {
        FlowProgress {
            flow: view.name.clone(),
            work: Work::Copy,
            count: view.topics.iter().map(|topic| topic.records).sum(),
            left: view.to_copy,
            bytes: view.topics.iter().map(|topic| topic.bytes).sum(),
            done: view.phase == FlowPhase::Done,
        }
    }
}

impl From<FlowCheckProgress> for FlowProgress {
    fn from(check: FlowCheckProgress) -> Self {
        FlowProgress {
            flow: check.name,
            work: Work::Check,
            count: check.offsets_read,
            left: check
                .offsets_total
                .map(|total| total.saturating_sub(check.offsets_read)),
            bytes: check.bytes_read,
            done: check.done,
        }
    }
}

/// Each flow's progress, as the board shows it now.
pub(crate) fn read_board(board: &Board) -> Vec<FlowProgress> {
    board
        .flows()
        .iter()
        .map(|view| view.as_ref().into())
        .collect()
}

/// Each flow's progress in `verify`, as it is now.
pub(crate) fn read_checks(progress: &VerifyProgress) -> Vec<FlowProgress> {
    progress.flows().into_iter().map(Into::into).collect()
}

/// Records and bytes per second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Rate {
    pub(crate) records_per_sec: f64,
    pub(crate) bytes_per_sec: f64,
}

/// One flow's rate over the last [`RATE_WINDOW`], from its readings.
#[derive(Debug, Default)]
pub(crate) struct Throughput {
    /// (when, records copied, bytes copied), oldest first.
    readings: VecDeque<(Instant, u64, u64)>,
}

impl Throughput {
    /// Takes a reading and returns the rate since the oldest one in the
    /// window (none before two readings some time apart).
    pub(crate) fn observe(&mut self, now: Instant, records: u64, bytes: u64) -> Option<Rate> {
        // Keep one reading older than the window, so the rate always spans it.
        while self.readings.len() > 1
            && self
                .readings
                .get(1)
                .is_some_and(|(when, ..)| now.duration_since(*when) >= RATE_WINDOW)
        {
            self.readings.pop_front();
        }
        self.readings.push_back((now, records, bytes));
        let (since, records_then, bytes_then) = *self.readings.front()?;
        let seconds = now.duration_since(since).as_secs_f64();
        (seconds > 0.0).then(|| Rate {
            records_per_sec: records.saturating_sub(records_then) as f64 / seconds,
            bytes_per_sec: bytes.saturating_sub(bytes_then) as f64 / seconds,
        })
    }
}

/// A flow's progress in words: "1,234 of 5,000 records (24.7%), 45.60 MB
/// copied, 12.30 MB/s, ETA 12s" (`verify`: "offsets", "read").
pub(crate) fn describe(progress: &FlowProgress, rate: Option<Rate>) -> String {
    let (unit, verb) = progress.work.words();
    let count = HumanCount(progress.count);
    let bytes = DecimalBytes(progress.bytes);
    if progress.done {
        return format!("done, {count} {unit} ({bytes}) {verb}");
    }
    let Some(left) = progress.left else {
        return "starting".to_owned();
    };
    let total = progress.count.saturating_add(left);
    let percent = if total == 0 {
        100.0
    } else {
        progress.count as f64 * 100.0 / total as f64
    };
    let mut text = format!(
        "{count} of {} {unit} ({percent:.1}%), {bytes} {verb}",
        HumanCount(total)
    );
    match rate {
        Some(rate) => {
            // Writing to a String cannot fail.
            let _ = write!(text, ", {}/s", DecimalBytes(rate.bytes_per_sec as u64));
            if rate.records_per_sec > 0.0 {
                let eta = Duration::from_secs_f64(left as f64 / rate.records_per_sec);
                let _ = write!(text, ", ETA {}", short_duration(eta));
            } else {
                text.push_str(", stalled");
            }
        }
        None => text.push_str(", measuring the rate"),
    }
    text
}

/// The plain line of a flow: "flow NAME: " and its [`describe`].
pub(crate) fn progress_line(progress: &FlowProgress, rate: Option<Rate>) -> String {
    format!("flow {}: {}", progress.flow, describe(progress, rate))
}

/// A duration as a person reads a countdown: 12s, 3m05s, 2h07m.
fn short_duration(duration: Duration) -> String {
    let seconds = duration.as_secs_f64().ceil() as u64;
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// Where progress goes.
#[derive(Debug, Clone)]
pub(crate) enum Display {
    /// A bar per flow, redrawn in place on a terminal.
    Bars(MultiProgress),
    /// A plain line per flow every [`LINE_INTERVAL`], to stderr.
    Lines,
}

impl Display {
    /// Bars when stderr is a terminal, plain lines otherwise.
    pub(crate) fn for_stderr(terminal: bool) -> Display {
        if terminal {
            Display::Bars(MultiProgress::new())
        } else {
            Display::Lines
        }
    }

    /// Stderr for the log: above the bars, if any.
    pub(crate) fn log_writer(&self) -> ProgressLog {
        ProgressLog {
            bars: match self {
                Display::Bars(bars) => Some(bars.clone()),
                Display::Lines => None,
            },
        }
    }

    /// Shows the progress that `read` returns until `work` is done, then
    /// shows its end and returns what `work` returned.
    pub(crate) async fn show_while<T>(
        self,
        mut read: impl FnMut() -> Vec<FlowProgress>,
        work: impl Future<Output = T>,
    ) -> T {
        let mut shown = Shown {
            display: self,
            flows: HashMap::new(),
            last_lines: Instant::now(),
        };
        let mut tick = tokio::time::interval(READ_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tokio::pin!(work);
        loop {
            tokio::select! {
                done = &mut work => {
                    shown.finish(&read());
                    return done;
                }
                _ = tick.tick() => shown.show(&read(), Instant::now()),
            }
        }
    }
}

/// What is on display: each flow's rate, and its bar.
#[derive(Debug)]
struct Shown {
    display: Display,
    flows: HashMap<String, (Throughput, Option<ProgressBar>)>,
    /// When the plain lines were last written (or the display started).
    last_lines: Instant,
}

impl Shown {
    /// Takes a reading of each flow: its rate.
    fn rates(&mut self, flows: &[FlowProgress], now: Instant) -> Vec<Option<Rate>> {
        flows
            .iter()
            .map(|flow| {
                let (throughput, _) = self.flows.entry(flow.flow.clone()).or_default();
                throughput.observe(now, flow.count, flow.bytes)
            })
            .collect()
    }

    /// Updates each flow's bar, or writes its line once the interval passed.
    fn show(&mut self, flows: &[FlowProgress], now: Instant) {
        let rates = self.rates(flows, now);
        match &self.display {
            Display::Bars(bars) => {
                for (flow, rate) in flows.iter().zip(rates) {
                    let (_, bar) = self.flows.entry(flow.flow.clone()).or_default();
                    let bar = bar.get_or_insert_with(|| bars.add(new_bar(&flow.flow)));
                    // The words first: the bar is redrawn with the last change.
                    bar.set_message(describe(flow, rate));
                    let left = flow.left.unwrap_or(0);
                    bar.set_length(flow.count.saturating_add(left).max(1));
                    bar.set_position(flow.count);
                }
            }
            Display::Lines if now.duration_since(self.last_lines) >= LINE_INTERVAL => {
                self.last_lines = now;
                for (flow, rate) in flows.iter().zip(rates) {
                    // A failed write to stderr has nowhere to be reported.
                    let _ = writeln!(io::stderr(), "{}", progress_line(flow, rate));
                }
            }
            Display::Lines => {}
        }
    }

    /// Leaves each bar at its final state, and the cursor below them for
    /// the summary; the lines say nothing more, the summary does.
    fn finish(&mut self, flows: &[FlowProgress]) {
        if let Display::Bars(_) = self.display {
            self.show(flows, Instant::now());
            let bars: Vec<&ProgressBar> = self
                .flows
                .values()
                .filter_map(|(_, bar)| bar.as_ref())
                .collect();
            for bar in &bars {
                bar.finish();
            }
            if !bars.is_empty() {
                let _ = writeln!(io::stderr());
            }
        }
    }
}

/// A flow's bar: its name, the bar, and the words of [`describe`].
fn new_bar(flow: &str) -> ProgressBar {
    // The template is a constant known to parse; a bar without it still counts.
    let style = ProgressStyle::with_template("{prefix:.bold} [{bar:25}] {wide_msg}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    ProgressBar::no_length()
        .with_style(style)
        .with_prefix(format!("flow {flow}"))
}

/// Stderr for the log, written above the progress bars while there are
/// any (they are hidden for the write and drawn again below it).
#[derive(Debug, Clone, Default)]
pub(crate) struct ProgressLog {
    bars: Option<MultiProgress>,
}

impl Write for ProgressLog {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.bars {
            Some(bars) => bars.suspend(|| io::stderr().write(buf)),
            None => io::stderr().write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

#[cfg(test)]
mod tests {
    use kafka_mirror::observe::TopicTotals;

    use super::*;

    fn flow(copied: u64, left: u64, bytes: u64) -> FlowProgress {
        FlowProgress {
            flow: "orders".into(),
            work: Work::Copy,
            count: copied,
            left: Some(left),
            bytes,
            done: false,
        }
    }

    #[test]
    fn a_line_says_how_much_of_what_how_fast_and_how_long() {
        let rate = Rate {
            records_per_sec: 313.0,
            bytes_per_sec: 12_300_000.0,
        };
        assert_eq!(
            progress_line(&flow(1_234, 3_766, 45_600_000), Some(rate)),
            "flow orders: 1,234 of 5,000 records (24.7%), 45.60 MB copied, 12.30 MB/s, ETA 13s"
        );
    }

    #[test]
    fn before_a_rate_is_known_the_line_says_so() {
        assert_eq!(
            progress_line(&flow(0, 5_000, 0), None),
            "flow orders: 0 of 5,000 records (0.0%), 0 B copied, measuring the rate"
        );
    }

    #[test]
    fn no_records_moving_is_stalled_not_an_endless_eta() {
        let rate = Rate {
            records_per_sec: 0.0,
            bytes_per_sec: 0.0,
        };
        assert_eq!(
            describe(&flow(10, 10, 1_000), Some(rate)),
            "10 of 20 records (50.0%), 1.00 kB copied, 0 B/s, stalled"
        );
    }

    #[test]
    fn nothing_to_copy_is_done_and_a_starting_flow_says_so() {
        assert!(describe(&flow(0, 0, 0), None).starts_with("0 of 0 records (100.0%)"));
        let mut starting = flow(0, 0, 0);
        starting.left = None;
        assert_eq!(progress_line(&starting, None), "flow orders: starting");
    }

    #[test]
    fn a_finished_flow_says_what_it_copied() {
        let mut done = flow(5_000, 0, 2_000_000);
        done.done = true;
        assert_eq!(
            progress_line(&done, None),
            "flow orders: done, 5,000 records (2.00 MB) copied"
        );
    }

    #[test]
    fn a_flow_view_gives_its_topics_totals_and_what_is_left() {
        let mut view = FlowView::starting("orders");
        assert_eq!(FlowProgress::from(&view).left, None);
        view.phase = FlowPhase::Running;
        view.to_copy = Some(700);
        view.topics = ["a", "b"]
            .map(|topic| TopicTotals {
                topic: topic.into(),
                records: 150,
                bytes: 20_000,
                ..TopicTotals::default()
            })
            .into();
        assert_eq!(FlowProgress::from(&view), flow(300, 700, 40_000));
        view.phase = FlowPhase::Done;
        assert!(FlowProgress::from(&view).done);
    }

    #[test]
    fn a_check_counts_the_source_offsets_it_read_and_the_bytes_of_both_sides() {
        let mut check = FlowCheckProgress {
            name: "orders".into(),
            offsets_read: 0,
            offsets_total: None,
            bytes_read: 0,
            done: false,
        };
        assert_eq!(
            progress_line(&check.clone().into(), None),
            "flow orders: starting"
        );
        check.offsets_read = 1_234;
        check.offsets_total = Some(5_000);
        check.bytes_read = 45_600_000;
        let rate = Rate {
            records_per_sec: 313.0,
            bytes_per_sec: 12_300_000.0,
        };
        assert_eq!(
            progress_line(&check.clone().into(), Some(rate)),
            "flow orders: 1,234 of 5,000 offsets (24.7%), 45.60 MB read, 12.30 MB/s, ETA 13s"
        );
        check.offsets_read = 5_000;
        check.done = true;
        assert_eq!(
            progress_line(&check.into(), None),
            "flow orders: done, 5,000 offsets (45.60 MB) read"
        );
    }

    #[test]
    fn time_left_reads_as_a_countdown() {
        assert_eq!(short_duration(Duration::from_millis(400)), "1s");
        assert_eq!(short_duration(Duration::from_secs(59)), "59s");
        assert_eq!(short_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(short_duration(Duration::from_secs(7_620)), "2h07m");
    }

    #[test]
    fn the_rate_follows_the_last_ten_seconds() {
        let start = Instant::now();
        let at = |seconds| start + Duration::from_secs(seconds);
        let mut throughput = Throughput::default();
        assert_eq!(throughput.observe(at(0), 0, 0), None);
        // 100 records and 1 MB a second for 20 s...
        for second in 1..=20 {
            throughput.observe(at(second), second * 100, second * 1_000_000);
        }
        // ...then nothing for 5 s: half the window copied at that rate.
        let rate = throughput.observe(at(25), 2_000, 20_000_000).unwrap();
        assert_eq!(rate.records_per_sec, 50.0);
        assert_eq!(rate.bytes_per_sec, 500_000.0);
        // After a whole window of nothing, nothing.
        let rate = throughput.observe(at(35), 2_000, 20_000_000).unwrap();
        assert_eq!(rate.records_per_sec, 0.0);
    }
}
