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
mod tests;
