//! The bandwidth throttle: token buckets in front of the Fetches.
//!
//! A Fetch goes out only when its flow's bucket (and the process's, shared
//! by every flow) holds enough tokens, and asks for no more bytes than they
//! hold, which it takes from the buckets while in flight. The answer gives
//! back what it did not use, and a broker that returned more than asked (a
//! first batch larger than the limit is returned whole, KIP-74) leaves a
//! debt that is repaid before the next Fetch. So the rate holds before the
//! data is read, not after: a throttled mirror never has more fetched than
//! its buckets let through, and memory stays within the budget while it
//! waits. Every Fetch of a flow, whatever the fetch windows allow in
//! flight, takes from the same bucket, so more fetchers do not multiply the
//! rate.
//!
//! What is counted is what a user sees copied: the complete batches a Fetch
//! brings (copied, or skipped as control or aborted batches). A batch cut
//! off at the end of an answer is fetched again, and counted then.
//!
//! Pure state over the instants it is given; the engine wakes every tick,
//! so a Fetch waiting for tokens goes at most a tick after they are there.

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::config::ByteRate;
use crate::sync::lock;

/// A bucket of byte tokens filled at a steady rate.
#[derive(Debug, Clone)]
pub(crate) struct TokenBucket {
    rate: ByteRate,
    /// The most tokens it holds: what may go at once after an idle while.
    burst: f64,
    /// Below zero after an answer larger than its grant: a debt.
    tokens: f64,
    last: Instant,
}

/// The process's bucket, shared by the engines of all flows.
pub(crate) type SharedBucket = Arc<Mutex<TokenBucket>>;

impl TokenBucket {
    /// A full bucket of `rate`. Its burst is twice the larger of a tenth of
    /// a second's bytes and `chunk` (one partition's share of a Fetch, or a
    /// second's bytes if less): a Fetch then waits for half a burst, which
    /// comes no faster than a tenth of a second, so the engine's tick finds
    /// it before the bucket overflows; Fetches are large enough that their
    /// fixed costs do not eat into the rate, and at low rates no larger
    /// than a second's worth.
    pub(crate) fn new(rate: ByteRate, chunk: usize, now: Instant) -> Self {
        let per_second = rate.bytes_per_second() as f64;
        let burst = 2.0 * (per_second / 10.0).max((chunk as f64).min(per_second));
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// The process's bucket, when `rate` is set.
    pub(crate) fn shared(
        rate: Option<ByteRate>,
        chunk: usize,
        now: Instant,
    ) -> Option<SharedBucket> {
        rate.map(|rate| Arc::new(Mutex::new(TokenBucket::new(rate, chunk, now))))
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * self.rate.bytes_per_second() as f64).min(self.burst);
    }

    /// How many of `want` bytes may be asked for now: none until the bucket
    /// holds all of them or half its burst, whichever is less.
    fn grantable(&mut self, now: Instant, want: usize) -> usize {
        self.refill(now);
        let want = want as f64;
        if self.tokens < want.min(self.burst / 2.0) {
            return 0;
        }
        // Lossless: at most `want`, a usize.
        want.min(self.tokens.floor()) as usize
    }

    /// Takes `bytes` for a Fetch in flight.
    fn take(&mut self, bytes: usize) {
        self.tokens -= bytes as f64;
    }

    /// A Fetch granted `granted` bytes brought `used`: gives back the rest,
    /// or owes what it brought beyond.
    fn settle(&mut self, now: Instant, granted: usize, used: usize) {
        self.refill(now);
        self.tokens = (self.tokens + granted as f64 - used as f64).min(self.burst);
    }
}

/// One flow's throttle: its own bucket and the process's, either optional.
#[derive(Debug, Clone, Default)]
pub(crate) struct Throttle {
    own: Option<TokenBucket>,
    shared: Option<SharedBucket>,
}

impl Throttle {
    /// A flow's throttle from its `max_bytes_per_sec` and the process's bucket.
    pub(crate) fn new(
        rate: Option<ByteRate>,
        shared: Option<SharedBucket>,
        chunk: usize,
        now: Instant,
    ) -> Self {
        Throttle {
            own: rate.map(|rate| TokenBucket::new(rate, chunk, now)),
            shared,
        }
    }

    /// The rate the flow is held to, if any: the lower of its own and the
    /// process's (which other flows share, so the flow may get less).
    pub(crate) fn rate(&self) -> Option<ByteRate> {
        let shared = self.shared.as_ref().map(|bucket| lock(bucket).rate);
        self.own
            .as_ref()
            .map(|bucket| bucket.rate)
            .into_iter()
            .chain(shared)
            .min()
    }

    /// The bytes a Fetch that wants `want` may ask for now, taken from the
    /// buckets until [`Throttle::settle`]; 0 means wait. All of `want` when
    /// unthrottled.
    pub(crate) fn grant(&mut self, now: Instant, want: usize) -> usize {
        let mut shared = self.shared.as_ref().map(|bucket| lock(bucket));
        let mut granted = want;
        for bucket in self.own.iter_mut().chain(shared.as_deref_mut()) {
            granted = granted.min(bucket.grantable(now, want));
        }
        if granted > 0 {
            for bucket in self.own.iter_mut().chain(shared.as_deref_mut()) {
                bucket.take(granted);
            }
        }
        granted
    }

    /// A Fetch [`Throttle::grant`]ed `granted` bytes is answered with
    /// `used` bytes counted.
    pub(crate) fn settle(&mut self, now: Instant, granted: usize, used: usize) {
        let mut shared = self.shared.as_ref().map(|bucket| lock(bucket));
        for bucket in self.own.iter_mut().chain(shared.as_deref_mut()) {
            bucket.settle(now, granted, used);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MB: usize = 1_000_000;

    fn rate(bytes: u64) -> ByteRate {
        ByteRate::new(bytes).expect("above zero")
    }

    /// Runs a mirror that always has data against `throttle` for `seconds`,
    /// waking every 50 ms like the engine: each wake sends what the
    /// throttle grants of a `want`-byte Fetch, answered `answer(granted)`
    /// bytes and settled at the next wake. Returns the bytes counted.
    fn simulate(
        throttle: &mut Throttle,
        start: Instant,
        seconds: u64,
        want: usize,
        answer: impl Fn(usize) -> usize,
    ) -> usize {
        let mut counted = 0;
        let mut in_flight: Option<(usize, usize)> = None;
        let tick = Duration::from_millis(50);
        let mut now = start;
        while now < start + Duration::from_secs(seconds) {
            now += tick;
            if let Some((granted, used)) = in_flight.take() {
                throttle.settle(now, granted, used);
                counted += used;
            }
            let granted = throttle.grant(now, want);
            if granted > 0 {
                in_flight = Some((granted, answer(granted)));
            }
        }
        counted
    }

    #[test]
    fn holds_a_busy_flow_to_its_rate() {
        let start = Instant::now();
        let mut throttle = Throttle::new(Some(rate(2 * MB as u64)), None, MB, start);
        // The first burst (2 MB) goes at once; after it, the rate. A minute
        // of 1 MB Fetches, so that one more or less is within 1%.
        let counted = simulate(&mut throttle, start, 60, 6 * MB, |granted| granted);
        let expected = 2 * MB + 60 * 2 * MB;
        let off = (counted as f64 - expected as f64).abs() / expected as f64;
        assert!(
            off < 0.02,
            "{counted} bytes in 60 s, expected about {expected}"
        );
        // Measured over a later window, burst spent: the rate itself.
        let later = start + Duration::from_secs(60);
        let counted = simulate(&mut throttle, later, 60, 6 * MB, |granted| granted);
        let off = (counted as f64 - 120e6).abs() / 120e6;
        assert!(off < 0.02, "{counted} bytes in the next 60 s");
    }

    #[test]
    fn a_fetch_waits_for_half_a_burst_and_asks_no_more_than_the_tokens() {
        let now = Instant::now();
        let mut throttle = Throttle::new(Some(rate(10 * MB as u64)), None, MB, now);
        // Burst: 2 MB (a tenth of a second is 1 MB, as is the chunk).
        assert_eq!(throttle.grant(now, 6 * MB), 2 * MB);
        assert_eq!(throttle.grant(now, 6 * MB), 0, "nothing left");
        // 50 ms: half a megabyte, less than half the burst.
        let later = now + Duration::from_millis(50);
        assert_eq!(throttle.grant(later, 6 * MB), 0);
        // 120 ms: over half the burst, all of it granted.
        let later = now + Duration::from_millis(120);
        let granted = throttle.grant(later, 6 * MB);
        assert!((1_199_999..=1_200_000).contains(&granted), "{granted}");
        // A small Fetch goes as soon as its bytes are there.
        let later = now + Duration::from_millis(135);
        assert_eq!(throttle.grant(later, 100_000), 100_000);
    }

    #[test]
    fn unused_grants_come_back_and_oversized_answers_are_owed() {
        let now = Instant::now();
        let mut throttle = Throttle::new(Some(rate(MB as u64)), None, MB, now);
        assert_eq!(throttle.grant(now, 2 * MB), 2 * MB);
        // The answer brought a tenth of it: the rest comes back.
        throttle.settle(now, 2 * MB, 200_000);
        assert_eq!(throttle.grant(now, 6 * MB), 1_800_000);
        // An answer of 3 MB for 1.8 MB granted: 1.2 MB owed, repaid
        // (1.2 s) before the next Fetch, which then waits for half a burst
        // (1 s more).
        throttle.settle(now, 1_800_000, 3 * MB);
        assert_eq!(throttle.grant(now + Duration::from_millis(2100), MB), 0);
        assert_eq!(throttle.grant(now + Duration::from_millis(2300), MB), MB);
    }

    #[test]
    fn a_slow_rate_goes_in_fetches_of_a_second_at_most() {
        let now = Instant::now();
        let mut throttle = Throttle::new(Some(rate(100_000)), None, MB, now);
        assert_eq!(throttle.grant(now, 6 * MB), 200_000);
        let later = now + Duration::from_millis(1010);
        assert_eq!(throttle.grant(later, 6 * MB), 101_000);
    }

    #[test]
    fn an_idle_flow_saves_no_more_than_a_burst() {
        let now = Instant::now();
        let mut throttle = Throttle::new(Some(rate(MB as u64)), None, MB, now);
        let later = now + Duration::from_secs(3600);
        assert_eq!(throttle.grant(later, 100 * MB), 2 * MB);
    }

    #[test]
    fn flows_share_the_process_bucket() {
        let start = Instant::now();
        let shared = TokenBucket::shared(Some(rate(4 * MB as u64)), MB, start);
        let mut a = Throttle::new(Some(rate(3 * MB as u64)), shared.clone(), MB, start);
        let mut b = Throttle::new(None, shared, MB, start);
        assert_eq!(a.rate(), Some(rate(3 * MB as u64)));
        assert_eq!(b.rate(), Some(rate(4 * MB as u64)));
        // Both busy, taking turns each tick: together the process's rate.
        let (mut counted, mut now) = (0, start + Duration::from_secs(1));
        let mut in_flight: Vec<(usize, usize)> = vec![(0, 0), (0, 0)];
        let end = now + Duration::from_secs(20);
        while now < end {
            now += Duration::from_millis(50);
            for (i, throttle) in [&mut a, &mut b].into_iter().enumerate() {
                let (granted, _) = in_flight[i];
                throttle.settle(now, granted, granted);
                counted += granted;
                in_flight[i] = (throttle.grant(now, 6 * MB), 0);
            }
        }
        let rate = counted as f64 / 20.0;
        assert!((rate - 4e6).abs() / 4e6 < 0.05, "{rate} B/s together");
    }

    #[test]
    fn unthrottled_grants_everything() {
        let now = Instant::now();
        let mut throttle = Throttle::default();
        assert_eq!(throttle.rate(), None);
        assert_eq!(throttle.grant(now, 6 * MB), 6 * MB);
        throttle.settle(now, 6 * MB, 7 * MB);
        assert_eq!(throttle.grant(now, 6 * MB), 6 * MB);
    }
}
