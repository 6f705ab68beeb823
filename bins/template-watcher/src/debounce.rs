//! Debouncing of mempool-driven template refreshes (pure; time is passed in).
//!
//! Rules: a refresh is due only while something changed since the last `getblocktemplate`
//! started; at most one starts per `min_interval` (measured between starts); none starts while
//! another is in flight. Any template request, including the one made for a new tip, counts as
//! a start, so a tip resets the interval. Changes seen while a request is in flight stay
//! pending (the request may have been answered before them) and are refreshed next.

use std::time::{Duration, Instant};

/// What the refresh loop should do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// Nothing changed (or a request is in flight): wait for news.
    Idle,
    /// Start a refresh now.
    Now,
    /// Something changed; start a refresh at this instant.
    At(Instant),
}

/// The debouncer's state.
#[derive(Debug, Clone)]
pub struct Debounce {
    min_interval: Duration,
    last_start: Option<Instant>,
    changed: bool,
    in_flight: u32,
    not_before: Option<Instant>,
}

impl Debounce {
    /// A debouncer allowing one refresh per `min_interval`.
    pub fn new(min_interval: Duration) -> Self {
        Self {
            min_interval,
            last_start: None,
            changed: false,
            in_flight: 0,
            not_before: None,
        }
    }

    /// The mempool changed.
    pub fn changed(&mut self) {
        self.changed = true;
    }

    /// Whether a change is waiting for a refresh.
    pub fn is_pending(&self) -> bool {
        self.changed
    }

    /// A `getblocktemplate` (mempool or tip) started at `now`: it covers every change so far.
    pub fn started(&mut self, now: Instant) {
        self.changed = false;
        self.not_before = None;
        self.in_flight += 1;
        self.last_start = Some(now);
    }

    /// A request finished (successfully or not).
    pub fn finished(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// A request failed: what it should have covered is still to be refreshed.
    pub fn failed(&mut self) {
        self.finished();
        self.changed = true;
    }

    /// Changes are still to be refreshed, but not before `at` (e.g. bitcoind answered from
    /// its template cache, which it keeps for a few seconds).
    pub fn retry_at(&mut self, at: Instant) {
        self.changed = true;
        self.not_before = Some(self.not_before.map_or(at, |t| t.max(at)));
    }

    /// What to do at `now`.
    pub fn due(&self, now: Instant) -> Due {
        if !self.changed || self.in_flight > 0 {
            return Due::Idle;
        }
        let earliest = [
            self.last_start.map(|l| l + self.min_interval),
            self.not_before,
        ]
        .into_iter()
        .flatten()
        .max();
        match earliest {
            Some(at) if now < at => Due::At(at),
            _ => Due::Now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const I: Duration = Duration::from_millis(1000);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn idle_until_something_changes() {
        let t0 = Instant::now();
        let d = Debounce::new(I);
        assert_eq!(d.due(t0), Due::Idle);
        assert_eq!(d.due(t0 + ms(5000)), Due::Idle);
    }

    #[test]
    fn first_change_refreshes_at_once_then_waits_the_interval() {
        let t0 = Instant::now();
        let mut d = Debounce::new(I);
        d.changed();
        assert_eq!(d.due(t0), Due::Now);
        d.started(t0);
        d.finished();
        assert_eq!(d.due(t0 + ms(10)), Due::Idle, "nothing new since the start");
        d.changed();
        assert_eq!(d.due(t0 + ms(10)), Due::At(t0 + I));
        assert_eq!(d.due(t0 + I), Due::Now);
    }

    #[test]
    fn a_burst_of_100_changes_gives_two_refreshes() {
        let t0 = Instant::now();
        let mut d = Debounce::new(I);
        let mut starts = 0;
        // 100 changes, one every 5 ms (0.5 s in all), with the loop checking after each.
        for i in 0..100u64 {
            let now = t0 + ms(5 * i);
            d.changed();
            if d.due(now) == Due::Now {
                d.started(now);
                starts += 1;
                d.finished();
            }
        }
        // Then time passes until nothing is due.
        let mut now = t0 + ms(500);
        while let Due::At(at) = d.due(now) {
            now = at;
            assert_eq!(d.due(now), Due::Now);
            d.started(now);
            starts += 1;
            d.finished();
        }
        assert_eq!(starts, 2);
    }

    #[test]
    fn nothing_starts_while_in_flight_and_changes_during_it_are_kept() {
        let t0 = Instant::now();
        let mut d = Debounce::new(I);
        d.changed();
        d.started(t0);
        d.changed(); // arrives while the request runs
        assert_eq!(d.due(t0 + ms(5000)), Due::Idle, "in flight");
        d.finished();
        assert_eq!(d.due(t0 + ms(5000)), Due::Now);
    }

    #[test]
    fn a_tip_request_resets_the_interval() {
        let t0 = Instant::now();
        let mut d = Debounce::new(I);
        d.changed();
        d.started(t0);
        d.finished();
        // A tip request at t0 + 900 ms covers everything so far ...
        d.changed();
        d.started(t0 + ms(900));
        d.finished();
        assert_eq!(d.due(t0 + ms(1000)), Due::Idle);
        // ... and the next mempool refresh waits a full interval after it.
        d.changed();
        assert_eq!(d.due(t0 + ms(1000)), Due::At(t0 + ms(1900)));
    }

    #[test]
    fn retry_at_delays_beyond_the_interval_and_a_start_clears_it() {
        let t0 = Instant::now();
        let mut d = Debounce::new(I);
        d.started(t0);
        d.finished();
        d.retry_at(t0 + ms(6000));
        assert_eq!(d.due(t0 + ms(1000)), Due::At(t0 + ms(6000)));
        d.changed();
        assert_eq!(
            d.due(t0 + ms(1000)),
            Due::At(t0 + ms(6000)),
            "kept by new changes"
        );
        assert_eq!(d.due(t0 + ms(6000)), Due::Now);
        d.started(t0 + ms(6000)); // e.g. a tip request
        d.finished();
        d.changed();
        assert_eq!(d.due(t0 + ms(6500)), Due::At(t0 + ms(7000)));
    }

    #[test]
    fn a_failed_request_is_retried_after_the_interval() {
        let t0 = Instant::now();
        let mut d = Debounce::new(I);
        d.started(t0);
        d.failed();
        assert!(d.is_pending());
        assert_eq!(d.due(t0 + ms(1)), Due::At(t0 + I));
    }
}
