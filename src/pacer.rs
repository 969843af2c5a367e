//! The write-rate limit of a re-encryption run (of Secrets and of database rows): a token
//! bucket that starts empty and holds at most one second's worth of writes.
//!
//! It owns the arithmetic of when the next write may go (the generic cell rate
//! algorithm: one theoretical arrival time, advanced by one interval per write) and
//! nothing else; it never talks to a cluster. Starting empty matters: the first `n`
//! writes of a run take at least `n / rate` seconds, so the run's own counters
//! (writes ÷ elapsed) never show more than the rate, and a burst — at most `rate`
//! writes at once — is only ever earned by having been idle.

use std::time::Duration;

use tokio::time::Instant;

/// Paces writes to at most `rate` per second over any stretch of time, with bursts of at
/// most `rate` writes after an idle second.
#[derive(Debug)]
pub struct Pacer {
    /// Time between two writes at the steady rate, rounded up so the rate is never
    /// exceeded by rounding.
    interval: Duration,
    /// How far ahead of the steady schedule a burst may run: `rate - 1` intervals.
    tolerance: Duration,
    /// When the next write would go if writes had always arrived at the steady rate.
    theoretical: Instant,
}

impl Pacer {
    /// A pacer for `per_second` writes per second (at least 1), empty at `now`.
    pub fn new(per_second: u32, now: Instant) -> Self {
        let per_second = u64::from(per_second.max(1));
        let interval = Duration::from_nanos(1_000_000_000_u64.div_ceil(per_second));
        let tolerance = interval.saturating_mul(u32::try_from(per_second - 1).unwrap_or(u32::MAX));
        Self {
            interval,
            tolerance,
            // Empty: as if `per_second` writes had just gone, so the first waits one interval.
            theoretical: now + interval + tolerance,
        }
    }

    /// Books the next write for a caller ready at `now`; returns when it may be sent.
    pub fn book(&mut self, now: Instant) -> Instant {
        let earliest = self
            .theoretical
            .checked_sub(self.tolerance)
            .unwrap_or(self.theoretical);
        let at = now.max(earliest);
        self.theoretical = self.theoretical.max(at) + self.interval;
        at
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A caller that writes as soon as it is allowed, after `pauses` of idleness; the
    /// instants its writes go, relative to the pacer's creation.
    fn greedy(rate: u32, pauses: &[(usize, Duration)], writes: usize) -> Vec<Duration> {
        let start = Instant::now();
        let mut pacer = Pacer::new(rate, start);
        let mut now = start;
        let mut sent = Vec::with_capacity(writes);
        for index in 0..writes {
            for (at, pause) in pauses {
                if *at == index {
                    now += *pause;
                }
            }
            now = pacer.book(now);
            sent.push(now - start);
        }
        sent
    }

    /// The most writes inside any window of length `window`.
    fn busiest(sent: &[Duration], window: Duration) -> usize {
        (0..sent.len())
            .map(|first| {
                sent[first..]
                    .iter()
                    .take_while(|at| **at < sent[first] + window)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn a_fresh_pacer_starts_empty_at_the_steady_rate() {
        let sent = greedy(20, &[], 60);
        assert_eq!(sent[0], Duration::from_millis(50));
        assert_eq!(sent[59], Duration::from_secs(3));
        for (index, at) in sent.iter().enumerate() {
            let writes = u32::try_from(index + 1).expect("small");
            assert!(
                *at >= Duration::from_millis(50) * writes,
                "write {writes} at {at:?}"
            );
        }
    }

    #[test]
    fn an_idle_second_earns_a_burst_of_one_seconds_worth_and_no_more() {
        let sent = greedy(10, &[(5, Duration::from_secs(10))], 30);
        let burst_start = sent[5];
        let burst = sent[5..]
            .iter()
            .take_while(|at| **at == burst_start)
            .count();
        assert_eq!(burst, 10, "{sent:?}");
        assert_eq!(sent[15] - burst_start, Duration::from_millis(100));
    }

    #[test]
    fn the_interval_rounds_up_so_rounding_never_raises_the_rate() {
        let sent = greedy(3, &[], 3);
        assert!(sent[2] >= Duration::from_secs(1), "{sent:?}");
        let zero = greedy(0, &[], 2);
        assert_eq!(
            zero[1] - zero[0],
            Duration::from_secs(1),
            "0 means 1 per second"
        );
    }

    proptest! {
        #[test]
        fn no_window_holds_more_than_its_share_plus_one_seconds_burst(
            rate in 1u32..200,
            pauses in proptest::collection::vec((0usize..300, 0u64..3_000), 0..6),
            window_ms in 1u64..5_000,
        ) {
            let pauses: Vec<(usize, Duration)> = pauses
                .into_iter()
                .map(|(at, ms)| (at, Duration::from_millis(ms)))
                .collect();
            let sent = greedy(rate, &pauses, 300);
            let window = Duration::from_millis(window_ms);
            let share = window.as_secs_f64() * f64::from(rate);
            let most = busiest(&sent, window);
            prop_assert!(
                most as f64 <= share.ceil() + f64::from(rate),
                "{most} writes in {window:?} at {rate}/s"
            );
            // From the start, the empty bucket allows no burst at all.
            for (index, at) in sent.iter().enumerate() {
                prop_assert!((index + 1) as f64 <= at.as_secs_f64() * f64::from(rate) + 1e-9);
            }
        }
    }
}
