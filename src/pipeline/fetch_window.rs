//! How many Fetches a source broker gets at once: its fetch window.
//!
//! A broker answers one request of a connection at a time, and a Fetch's
//! offsets depend on the answer before it, so one connection carries one
//! Fetch per round trip. Across a WAN that idles the link for a round trip
//! per answer and caps the broker at about
//! `fetch_max_bytes / (RTT + fetch_max_bytes / bandwidth)`: 28 MB/s for
//! 6 MiB over 100 ms and 50 MB/s. More Fetches at once, each on a connection
//! of its own for its own share of the partitions, fill that idle time.
//!
//! The window starts at the link's size: once the broker's round trip is
//! known (the connection's first request measures it, before any Fetch), it
//! opens to enough Fetches to keep the link's bandwidth-delay product on the
//! way plus one arriving, [`link_fetchers`] (a round trip under
//! [`LINK_MIN_ROUND_TRIP`] opens nothing). The bandwidth is the throttle's
//! rate when `max_bytes_per_sec` is set, otherwise [`ASSUMED_LINK_RATE`]:
//! about what one mirror process moves, so the window holds about as many
//! Fetches as the mirror can use. (Starting at one Fetch and adding one a
//! round lost the first seconds of a run on a long link: half the rate of a
//! LAN at 100 ms for a 400 MB backlog.) It does not probe below where it
//! opened: a link slower than assumed costs a few Fetches' worth of budget
//! it does not need, not throughput.
//!
//! From there it probes for the count that fills the link, as TCP probes for
//! its congestion window: while a broker's answers come back full (the
//! mirror is behind) and the round trip is a real share of a Fetch's time,
//! it adds a Fetch after each round of measurement that raised the broker's
//! rate by [`GAIN`], up to [`MAX_FETCHERS`]. A round that did not goes back
//! one and settles there; [`PROBE_AGAIN_AFTER`] later it probes again from
//! there, in case the link got faster or its other traffic went away. A
//! Fetch the memory budget (or the throttle) cut to under half voids the
//! round: the target, the budget or `max_bytes_per_sec` is the bound then,
//! not the round trip. Once no answer has come back full for
//! [`CAUGHT_UP_AFTER`] (caught up), it returns to one, and opens to the
//! link's size again at the next full answer. On a LAN the round trip is no
//! real share of a Fetch's time, so it stays at one.
//!
//! Each Fetch in the window also lets a partition bring one more
//! `partition_fetch_bytes` per Fetch ([`FetchWindow::partition_bytes`]): a
//! partition has one Fetch in flight at a time, so it moves at most that
//! much per round trip, and at 100 ms 1 MiB is 10 MB/s a partition.
//!
//! Pure state: the fetch stage reports the round trip and each answer and
//! reads [`FetchWindow::fetchers`].

use std::time::{Duration, Instant};

/// The most Fetches at once per source broker the window grows to.
pub(crate) const MAX_FETCHERS: usize = 8;
/// The link's rate, bytes per second, assumed until measured: about what
/// one mirror process moves on a LAN (119 MB/s in the bench's sweep), so a
/// window sized for it is about the most the mirror can use.
const ASSUMED_LINK_RATE: f64 = 125e6;
/// Below this, a round trip is no sign of a long link: one small request's
/// time on a LAN is mostly the broker's, several ms on a busy one. The
/// window opens only past it, and probes from one below it.
const LINK_MIN_ROUND_TRIP: Duration = Duration::from_millis(10);
/// A round must raise the rate by this factor for the window to grow again.
const GAIN: f64 = 1.1;
/// The round trip must be at least this share of a Fetch's time for more
/// Fetches to help, and at least [`MIN_ROUND_TRIP`]: below that the network
/// is a LAN, where a Fetch's time is the brokers' and the mirror's work.
const LATENCY_SHARE: f64 = 0.1;
const MIN_ROUND_TRIP: Duration = Duration::from_millis(1);
/// A round lasts at least this long, and at least [`ROUND_FETCHES`] mean
/// Fetch times, so that it averages over several answers per fetcher.
const ROUND_MIN: Duration = Duration::from_millis(500);
const ROUND_FETCHES: u32 = 3;
/// A settled window probes again after this long. Each probe holds one more
/// Fetch's worth of memory for a round or two.
const PROBE_AGAIN_AFTER: Duration = Duration::from_secs(30);
/// No full answer for this long means the mirror has caught up. (One short
/// answer does not: a few partitions at their end make one.)
const CAUGHT_UP_AFTER: Duration = Duration::from_secs(2);

/// One Fetch answer, as the window sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FetchAnswer {
    /// Record bytes in the answer.
    pub(crate) bytes: usize,
    /// The most the answer could have held: the Fetch's byte limit, or the
    /// sum of its partitions' limits if that is smaller.
    pub(crate) capacity: usize,
    /// The Fetch asked for less than half a full one because the memory
    /// budget was nearly spent (or the throttle's tokens): the mirror is
    /// bound by the target, by memory or by its rate limit, and more
    /// Fetches cannot help.
    pub(crate) short_of_budget: bool,
    /// From sending the Fetch to its answer.
    pub(crate) elapsed: Duration,
    /// The connection's round trip with no data and no waiting, if known.
    pub(crate) round_trip: Option<Duration>,
}

impl FetchAnswer {
    /// Whether the broker stopped for lack of room rather than of data.
    fn is_full(&self) -> bool {
        self.capacity > 0 && self.bytes * 2 >= self.capacity
    }
}

/// The fetch window of one source broker.
#[derive(Debug, Clone)]
pub(crate) struct FetchWindow {
    /// Set by `replication.fetchers_per_broker`: no probing.
    fixed: Option<usize>,
    fetchers: usize,
    /// The count the link calls for ([`link_fetchers`]), once its round
    /// trip is known: where the window starts while the mirror is behind.
    link: Option<usize>,
    /// The rate before the last step up, bytes per second.
    best_rate: Option<f64>,
    /// When a step up gained too little: stay until [`PROBE_AGAIN_AFTER`]
    /// has passed, or the mirror caught up.
    settled: Option<Instant>,
    round: Option<Round>,
    /// When the last full answer came.
    last_full: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Round {
    started: Instant,
    bytes: usize,
    fetches: u32,
    elapsed: Duration,
}

impl FetchWindow {
    /// A window at one Fetch until [`FetchWindow::link_measured`], or a fixed one.
    pub(crate) fn new(fixed: Option<usize>) -> Self {
        FetchWindow {
            fixed,
            fetchers: fixed.unwrap_or(1),
            link: None,
            best_rate: None,
            settled: None,
            round: None,
            last_full: None,
        }
    }

    /// Fetches the broker gets at once now.
    pub(crate) fn fetchers(&self) -> usize {
        self.fetchers
    }

    /// Fetches added by probing (none when fixed): each brings its own room
    /// in the memory budget.
    pub(crate) fn added(&self) -> usize {
        match self.fixed {
            Some(_) => 0,
            None => self.fetchers - 1,
        }
    }

    /// Fetches that bring their own room in the memory budget. Across a
    /// link that opened the window, every one: each keeps up to
    /// `fetch_max_bytes` on the way for a whole round trip while what came
    /// before waits for the target. On a LAN, where an answer is back at
    /// once, the ones probing added; none for a fixed window.
    pub(crate) fn budgeted_fetches(&self) -> usize {
        match (self.added(), self.link) {
            (0, _) => 0,
            (added, Some(link)) if link > 1 => added + 1,
            (added, _) => added,
        }
    }

    /// Whether the window has yet to hear a round trip: only then is it worth
    /// asking for one before a Fetch (the answers bring it afterwards).
    pub(crate) fn wants_round_trip(&self) -> bool {
        self.fixed.is_none() && self.link.is_none()
    }

    /// The broker's round trip is known, and the link's rate if the throttle
    /// sets one (bytes per second): the first time, the window opens to the
    /// link's size. A later, shorter round trip (a first handshake that met
    /// a busy broker) lowers the size it reopens to when behind again.
    pub(crate) fn link_measured(
        &mut self,
        now: Instant,
        round_trip: Duration,
        rate: Option<f64>,
        fetch_bytes: usize,
    ) {
        if self.fixed.is_some() {
            return;
        }
        let link = link_fetchers(round_trip, rate, fetch_bytes);
        match self.link {
            Some(known) => self.link = Some(known.min(link)),
            None => {
                self.link = Some(link);
                self.open_to_link(now);
            }
        }
    }

    /// The most one partition may bring in one Fetch: `partition_fetch_bytes`,
    /// and as much again for each Fetch the window added, up to
    /// `fetch_bytes`. A partition has one Fetch in flight, so this is what it
    /// moves per round trip; the window grows with the round trip and so does
    /// this. (A fixed window adds none, as it adds nothing to the budget.)
    pub(crate) fn partition_bytes(
        &self,
        partition_fetch_bytes: usize,
        fetch_bytes: usize,
    ) -> usize {
        (partition_fetch_bytes * (1 + self.added())).min(fetch_bytes.max(partition_fetch_bytes))
    }

    /// At one Fetch with nothing measured (new, or back from caught up),
    /// jumps to the link's size. Opened, it waits [`CAUGHT_UP_AFTER`] for a
    /// full answer before it calls the mirror caught up: the first answers
    /// of a backlog may well be short ones, from partitions at their end.
    fn open_to_link(&mut self, now: Instant) {
        if let Some(link) = self.link {
            if self.best_rate.is_none() && self.settled.is_none() && self.fetchers < link {
                self.fetchers = link;
                self.round = None;
                self.last_full = Some(now);
            }
        }
    }

    /// Takes in one answer of the broker's; may change [`FetchWindow::fetchers`].
    pub(crate) fn answered(&mut self, now: Instant, answer: FetchAnswer) {
        if self.fixed.is_some() {
            return;
        }
        if answer.is_full() {
            self.last_full = Some(now);
            self.open_to_link(now);
        } else if self
            .last_full
            .is_none_or(|last| now.duration_since(last) >= CAUGHT_UP_AFTER)
        {
            *self = FetchWindow {
                link: self.link,
                ..FetchWindow::new(None)
            };
            return;
        }
        if answer.short_of_budget {
            self.round = None;
            return;
        }
        if let Some(since) = self.settled {
            if now.duration_since(since) < PROBE_AGAIN_AFTER {
                return;
            }
            // The next round measures the rate at this count, the one after
            // it with one more Fetch.
            self.settled = None;
            self.best_rate = None;
        }
        let Some(round_trip) = answer.round_trip else {
            return;
        };
        let Some(round) = &mut self.round else {
            // The first answer starts a round; its bytes came before it.
            self.round = Some(Round {
                started: now,
                bytes: 0,
                fetches: 0,
                elapsed: Duration::ZERO,
            });
            return;
        };
        round.bytes += answer.bytes;
        round.fetches += 1;
        round.elapsed += answer.elapsed;
        let mean_fetch = round.elapsed / round.fetches;
        let length = now.duration_since(round.started);
        if length < ROUND_MIN.max(mean_fetch * ROUND_FETCHES)
            || (round.fetches as usize) < 2 * self.fetchers
        {
            return;
        }
        let rate = round.bytes as f64 / length.as_secs_f64();
        self.round = None;
        if round_trip < MIN_ROUND_TRIP
            || round_trip.as_secs_f64() < LATENCY_SHARE * mean_fetch.as_secs_f64()
        {
            return;
        }
        match self.best_rate {
            Some(best) if rate < best * GAIN => {
                self.fetchers = self.fetchers.saturating_sub(1).max(1);
                self.settled = Some(now);
            }
            _ if self.fetchers >= MAX_FETCHERS => self.settled = Some(now),
            _ => {
                self.best_rate = Some(rate);
                self.fetchers += 1;
            }
        }
    }
}

/// The Fetches a broker's window opens with once its round trip is known:
/// the connections start-up opens before the first Fetch.
pub(crate) fn opening_fetchers(
    fixed: Option<usize>,
    round_trip: Duration,
    rate: Option<f64>,
    fetch_bytes: usize,
) -> usize {
    let mut window = FetchWindow::new(fixed);
    window.link_measured(Instant::now(), round_trip, rate, fetch_bytes);
    window.fetchers()
}

/// Fetches of `fetch_bytes` that fill a link of `round_trip` and `rate`
/// bytes per second ([`ASSUMED_LINK_RATE`] if not known): its
/// bandwidth-delay product's worth on the way, plus one arriving. One on a
/// LAN (under [`LINK_MIN_ROUND_TRIP`]); at most [`MAX_FETCHERS`].
fn link_fetchers(round_trip: Duration, rate: Option<f64>, fetch_bytes: usize) -> usize {
    if round_trip < LINK_MIN_ROUND_TRIP || fetch_bytes == 0 {
        return 1;
    }
    let on_the_way =
        rate.unwrap_or(ASSUMED_LINK_RATE) * round_trip.as_secs_f64() / fetch_bytes as f64;
    // Saturating: a huge rate or round trip gives the most.
    (on_the_way.round() as usize)
        .saturating_add(1)
        .min(MAX_FETCHERS)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: usize = 1 << 20;

    /// A full answer of `bytes` that took `elapsed`.
    fn full(bytes: usize, elapsed: Duration, round_trip: Option<Duration>) -> FetchAnswer {
        FetchAnswer {
            bytes,
            capacity: bytes,
            short_of_budget: false,
            elapsed,
            round_trip,
        }
    }

    /// An answer of 1000 bytes to a 6 MiB Fetch over 200 ms: a few
    /// partitions at their end.
    fn short_answer() -> FetchAnswer {
        FetchAnswer {
            bytes: 1000,
            ..full(
                6 * MIB,
                Duration::from_millis(700),
                Some(Duration::from_millis(200)),
            )
        }
    }

    /// Feeds `window` answers of a simulated link until `seconds` pass: each
    /// of the broker's `fetchers()` Fetches of `fetch` bytes takes the round
    /// trip plus its share of the link's time (`link` bytes per second shared
    /// by all Fetches, as on a real WAN).
    fn simulate(window: &mut FetchWindow, round_trip: Duration, link: f64, seconds: f64) {
        simulate_from(Instant::now(), window, round_trip, link, seconds);
    }

    /// [`simulate`] from `start`; returns when it ended.
    fn simulate_from(
        start: Instant,
        window: &mut FetchWindow,
        round_trip: Duration,
        link: f64,
        seconds: f64,
    ) -> Instant {
        let mut now = start;
        let fetch = 6 * MIB;
        while now.duration_since(start).as_secs_f64() < seconds {
            let n = window.fetchers() as u32;
            // n Fetches share one link: each comes back after a cycle, the
            // transfer of all n answers or a round trip plus one, whichever
            // is longer; their answers are spread over the cycle.
            let transfer = Duration::from_secs_f64(fetch as f64 / link);
            let cycle = (transfer * n).max(round_trip + transfer);
            for _ in 0..n {
                now += cycle / n;
                window.answered(now, full(fetch, cycle, Some(round_trip)));
            }
        }
        now
    }

    #[test]
    fn opens_to_the_links_size_before_the_first_answer() {
        let opened = |round_trip: Duration, rate: Option<f64>| {
            let mut window = FetchWindow::new(None);
            window.link_measured(Instant::now(), round_trip, rate, 6 * MIB);
            window.fetchers()
        };
        // 125 MB/s assumed: 12.5 MB on the way over 100 ms is two Fetches of
        // 6 MiB, plus one arriving; 200 ms, four plus one.
        assert_eq!(opened(Duration::from_millis(100), None), 3);
        assert_eq!(opened(Duration::from_millis(200), None), 5);
        assert_eq!(opened(Duration::from_millis(50), None), 2);
        // A LAN, or a short link a Fetch's transfer hides, keeps one.
        assert_eq!(opened(Duration::from_micros(300), None), 1);
        assert_eq!(opened(Duration::from_millis(10), None), 1);
        // Even with small Fetches: a few ms may be a busy broker's own time.
        let mut small = FetchWindow::new(None);
        small.link_measured(Instant::now(), Duration::from_millis(8), None, 128 << 10);
        assert_eq!(small.fetchers(), 1);
        small = FetchWindow::new(None);
        small.link_measured(Instant::now(), Duration::from_millis(20), None, 128 << 10);
        assert_eq!(small.fetchers(), MAX_FETCHERS);
        // A throttled link needs only its rate's worth: 50 MB/s over 200 ms.
        assert_eq!(opened(Duration::from_millis(200), Some(50e6)), 3);
        assert_eq!(opened(Duration::from_millis(200), Some(1e6)), 1);
        // Never past the most.
        assert_eq!(opened(Duration::from_secs(2), None), MAX_FETCHERS);
        assert_eq!(opened(Duration::from_millis(100), Some(1e30)), MAX_FETCHERS);
        // Fixed stays fixed.
        let mut fixed = FetchWindow::new(Some(1));
        fixed.link_measured(Instant::now(), Duration::from_millis(200), None, 6 * MIB);
        assert_eq!(fixed.fetchers(), 1);
        // The shortest round trip seen counts.
        let mut window = FetchWindow::new(None);
        window.link_measured(Instant::now(), Duration::from_millis(100), None, 6 * MIB);
        window.link_measured(Instant::now(), Duration::from_millis(200), None, 6 * MIB);
        assert_eq!(window.fetchers(), 3);
        window.link_measured(Instant::now(), Duration::from_millis(50), None, 6 * MIB);
        assert_eq!(window.link, Some(2));
    }

    #[test]
    fn from_the_links_size_it_probes_and_settles() {
        // 200 ms and 50 MB/s: three fill it; the assumed 125 MB/s opens
        // five, a sixth gains nothing and is given back. (Below where it
        // opened, the window does not probe: two more Fetches' memory, within
        // the budget, for a slower link than assumed.)
        let mut window = FetchWindow::new(None);
        window.link_measured(Instant::now(), Duration::from_millis(200), None, 6 * MIB);
        simulate(&mut window, Duration::from_millis(200), 50e6, 30.0);
        assert_eq!(window.fetchers(), 5);
        // A faster link than assumed: it grows on from there.
        let mut window = FetchWindow::new(None);
        window.link_measured(Instant::now(), Duration::from_millis(100), None, 6 * MIB);
        simulate(&mut window, Duration::from_millis(100), 300e6, 30.0);
        assert_eq!(window.fetchers(), 6);
    }

    #[test]
    fn reopens_to_the_links_size_when_behind_again() {
        let start = Instant::now();
        let mut window = FetchWindow::new(None);
        window.link_measured(start, Duration::from_millis(200), None, 6 * MIB);
        let short = short_answer();
        // Short answers first: maybe partitions at their end among others
        // behind, so it waits for a full one a while.
        window.answered(start + Duration::from_millis(700), short);
        assert_eq!(window.fetchers(), 5);
        // None came: caught up, back to one, and the round trip each answer
        // brings does not open it again.
        window.answered(start + CAUGHT_UP_AFTER, short);
        assert_eq!(window.fetchers(), 1);
        window.link_measured(
            start + CAUGHT_UP_AFTER,
            Duration::from_millis(200),
            None,
            6 * MIB,
        );
        window.answered(start + CAUGHT_UP_AFTER, short);
        assert_eq!(window.fetchers(), 1);
        // Behind again: the first full answer opens it at once.
        let later = start + CAUGHT_UP_AFTER + Duration::from_millis(700);
        window.answered(
            later,
            full(
                6 * MIB,
                Duration::from_millis(700),
                Some(Duration::from_millis(200)),
            ),
        );
        assert_eq!(window.fetchers(), 5);
    }

    #[test]
    fn a_partitions_share_of_a_fetch_grows_with_the_window() {
        let mut window = FetchWindow::new(None);
        assert_eq!(window.partition_bytes(MIB, 6 * MIB), MIB);
        window.link_measured(Instant::now(), Duration::from_millis(100), None, 6 * MIB);
        assert_eq!(window.partition_bytes(MIB, 6 * MIB), 3 * MIB);
        let mut far = FetchWindow::new(None);
        far.link_measured(Instant::now(), Duration::from_secs(1), None, 6 * MIB);
        assert_eq!(
            far.partition_bytes(MIB, 6 * MIB),
            6 * MIB,
            "at most a whole Fetch"
        );
        assert_eq!(FetchWindow::new(Some(3)).partition_bytes(MIB, 6 * MIB), MIB);
    }

    #[test]
    fn stays_at_one_fetch_on_a_lan() {
        let mut window = FetchWindow::new(None);
        simulate(&mut window, Duration::from_micros(200), 300e6, 30.0);
        assert_eq!(window.fetchers(), 1);
        // Even where the round trip is a large share of a quick Fetch.
        simulate(&mut window, Duration::from_micros(500), 10e9, 30.0);
        assert_eq!(window.fetchers(), 1);
    }

    #[test]
    fn grows_until_the_link_is_full_then_settles() {
        // 100 ms and 50 MB/s: one Fetch of 6 MiB gets 28 MB/s, two fill the
        // link, a third gains nothing and is given back.
        let mut window = FetchWindow::new(None);
        simulate(&mut window, Duration::from_millis(100), 50e6, 30.0);
        assert_eq!(window.fetchers(), 2);
        // 200 ms: two leave it a third idle, three fill it.
        let mut window = FetchWindow::new(None);
        simulate(&mut window, Duration::from_millis(200), 50e6, 30.0);
        assert_eq!(window.fetchers(), 3);
    }

    #[test]
    fn a_settled_window_probes_again_and_finds_a_faster_link() {
        // 100 ms and 25 MB/s: two Fetches fill it.
        let mut window = FetchWindow::new(None);
        let later = simulate_from(
            Instant::now(),
            &mut window,
            Duration::from_millis(100),
            25e6,
            20.0,
        );
        assert_eq!(window.fetchers(), 2);
        // The link gets four times faster: three fill it, found at the next probe.
        let later = simulate_from(later, &mut window, Duration::from_millis(100), 100e6, 5.0);
        assert_eq!(window.fetchers(), 2, "settled: no probe yet");
        simulate_from(later, &mut window, Duration::from_millis(100), 100e6, 60.0);
        assert_eq!(window.fetchers(), 3);
    }

    #[test]
    fn never_passes_the_most_fetchers() {
        // A fast link a long way off would take more than the window allows.
        let mut window = FetchWindow::new(None);
        simulate(&mut window, Duration::from_millis(300), 10e9, 60.0);
        assert_eq!(window.fetchers(), MAX_FETCHERS);
    }

    #[test]
    fn returns_to_one_fetch_once_caught_up() {
        let mut window = FetchWindow::new(None);
        simulate(&mut window, Duration::from_millis(200), 50e6, 30.0);
        assert_eq!(window.fetchers(), 3);
        let short = short_answer();
        // A few partitions at their end: short answers among full ones.
        let last_full = window.last_full.expect("full answers came");
        window.answered(last_full + Duration::from_millis(100), short);
        window.answered(last_full + Duration::from_millis(200), short);
        assert_eq!(window.fetchers(), 3);
        // Nothing but short answers for a while: caught up.
        window.answered(last_full + CAUGHT_UP_AFTER, short);
        assert_eq!(window.fetchers(), 1);
        // Behind again, it probes again.
        simulate(&mut window, Duration::from_millis(200), 50e6, 30.0);
        assert_eq!(window.fetchers(), 3);
    }

    #[test]
    fn fetches_cut_short_by_the_budget_never_add_one() {
        // A far source and a target (or budget) that cannot keep up: more
        // Fetches would only hold more memory. The rate still grows (the
        // target warming up), which alone would pass for a gain.
        let mut window = FetchWindow::new(None);
        let start = Instant::now();
        for k in 1..60i32 {
            let bytes = (MIB as f64 * 1.05f64.powi(k)) as usize;
            window.answered(
                start + Duration::from_millis(150 * k as u64),
                FetchAnswer {
                    short_of_budget: true,
                    ..full(
                        bytes,
                        Duration::from_millis(150),
                        Some(Duration::from_millis(100)),
                    )
                },
            );
        }
        assert_eq!(window.fetchers(), 1);
    }

    #[test]
    fn a_fixed_count_never_changes() {
        let mut window = FetchWindow::new(Some(2));
        simulate(&mut window, Duration::from_millis(200), 50e6, 30.0);
        assert_eq!(window.fetchers(), 2);
        let mut window = FetchWindow::new(Some(1));
        simulate(&mut window, Duration::from_millis(200), 50e6, 30.0);
        assert_eq!(window.fetchers(), 1);
    }

    #[test]
    fn an_unknown_round_trip_keeps_one_fetch() {
        let mut window = FetchWindow::new(None);
        let now = Instant::now();
        for k in 1..100u32 {
            window.answered(
                now + Duration::from_millis(u64::from(k) * 300),
                full(6 * MIB, Duration::from_millis(300), None),
            );
        }
        assert_eq!(window.fetchers(), 1);
    }
}
