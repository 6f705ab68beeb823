//! What monitors (jdc-metrics, jdc-top) read from the bus: every topic but the full
//! `template` (megabytes; its `summary` says enough), decoded into one [`Message`], with
//! selections summarised (their txids only counted).

use std::collections::VecDeque;

use serde::de::IgnoredAny;
use serde::Deserialize;

use crate::bus::{BusError, HeartbeatWithStats, Received, Topic};
use crate::messages::{
    BlockEvent, Declaration, Devices, Dropped, Event, JobSent, ShareResult, TemplateSummary, Tip,
    UpstreamState,
};

/// Topics monitors subscribe to.
pub const TOPICS: [Topic; 11] = [
    Topic::Tip,
    Topic::Summary,
    Topic::Selection,
    Topic::Job,
    Topic::Share,
    Topic::Block,
    Topic::Heartbeat,
    Topic::Event,
    Topic::Upstream,
    Topic::Declaration,
    Topic::Devices,
];

/// The parts of a `selection` monitors show (the txids are only counted).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SelectionSummary {
    /// Selection id.
    pub id: u64,
    /// Height of the block.
    pub height: u32,
    /// Policy that produced it.
    pub policy: String,
    /// The chosen transactions, only counted.
    #[serde(rename = "txids", deserialize_with = "count_items")]
    pub tx_count: usize,
    /// Sum of their fees, satoshis.
    pub fees: u64,
    /// Sum of their weights.
    pub weight: u64,
    /// What the policy left out, per reason.
    #[serde(default)]
    pub dropped: Vec<Dropped>,
}

fn count_items<'de, D: serde::Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    Vec::<IgnoredAny>::deserialize(d).map(|v| v.len())
}

/// One decoded bus message.
#[derive(Debug, Clone)]
pub enum Message {
    /// A new tip (watcher).
    Tip(Tip),
    /// A template's summary (watcher).
    Summary(TemplateSummary),
    /// A selection (selector).
    Selection(SelectionSummary),
    /// A job sent to the devices (declarator).
    Job(JobSent),
    /// A share verdict (declarator).
    Share(ShareResult),
    /// A block found, accepted or rejected (declarator).
    Block(BlockEvent),
    /// A heartbeat with the publisher's bus counters (every process).
    Heartbeat(HeartbeatWithStats),
    /// An operator event (every process).
    Event(Event),
    /// Which upstream the declarator mines for (declarator).
    Upstream(UpstreamState),
    /// A job declared to the pool, or its fate (declarator).
    Declaration(Declaration),
    /// The device channels open now (declarator).
    Devices(Devices),
    /// A topic monitors do not read (full templates).
    Ignored,
}

impl Message {
    /// Decodes the body of a received message by its topic.
    pub fn decode(msg: &Received) -> Result<Message, BusError> {
        Ok(match msg.topic {
            Topic::Tip => Message::Tip(msg.decode()?),
            Topic::Summary => Message::Summary(msg.decode()?),
            Topic::Template => Message::Ignored,
            Topic::Selection => Message::Selection(msg.decode()?),
            Topic::Job => Message::Job(msg.decode()?),
            Topic::Share => Message::Share(msg.decode()?),
            Topic::Block => Message::Block(msg.decode()?),
            Topic::Heartbeat => Message::Heartbeat(msg.decode()?),
            Topic::Event => Message::Event(msg.decode()?),
            Topic::Upstream => Message::Upstream(msg.decode()?),
            Topic::Declaration => Message::Declaration(msg.decode()?),
            Topic::Devices => Message::Devices(msg.decode()?),
        })
    }
}

/// Hashes a share of difficulty 1 stands for (2³²).
pub const HASHES_PER_DIFFICULTY: f64 = 4_294_967_296.0;

/// Accepted shares (arrival, difficulty) over a sliding window: what hashrate estimates are
/// made of. Each monitor chooses the span it averages over.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ShareWindow {
    shares: VecDeque<(u64, f64)>,
}

impl ShareWindow {
    /// Records an accepted share of `difficulty` arrived at `at_us` (a difficulty that is not
    /// a positive number counts for nothing).
    pub fn record(&mut self, at_us: u64, difficulty: f64) {
        if difficulty.is_finite() && difficulty > 0.0 {
            self.shares.push_back((at_us, difficulty));
        }
    }

    /// Records an accepted share like [`ShareWindow::record`], then forgets the shares older
    /// than `span_us` before `at_us` and the oldest beyond `max`: the window stays bounded
    /// however long nobody reads it.
    pub fn record_bounded(&mut self, at_us: u64, difficulty: f64, span_us: u64, max: usize) {
        self.record(at_us, difficulty);
        self.forget(at_us.saturating_sub(span_us), max);
    }

    /// Forgets the shares arrived at or before `from_us`, and the oldest beyond `max`.
    pub fn forget(&mut self, from_us: u64, max: usize) {
        while self
            .shares
            .front()
            .is_some_and(|(t, _)| *t <= from_us || self.shares.len() > max)
        {
            self.shares.pop_front();
        }
    }

    /// Shares kept.
    pub fn len(&self) -> usize {
        self.shares.len()
    }

    /// Whether no share is kept.
    pub fn is_empty(&self) -> bool {
        self.shares.is_empty()
    }

    /// Arrival of the oldest share kept.
    pub fn first_us(&self) -> Option<u64> {
        self.shares.front().map(|(t, _)| *t)
    }

    /// Hashes the shares arrived after `from_us` and up to `to_us` stand for.
    pub fn hashes(&self, from_us: u64, to_us: u64) -> f64 {
        self.shares
            .iter()
            .filter(|(t, _)| *t > from_us && *t <= to_us)
            .map(|(_, d)| d)
            .sum::<f64>()
            * HASHES_PER_DIFFICULTY
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bounded_window_forgets_old_shares_as_it_records() {
        let mut w = ShareWindow::default();
        // Ten shares a second for ten hours, never read, a 60 s window.
        for i in 0..360_000u64 {
            w.record_bounded(i * 100_000, 1.0, 60_000_000, 1_000_000);
            assert!(w.len() <= 601, "{} shares kept at {i}", w.len());
        }
        let last = 359_999 * 100_000;
        assert_eq!(w.first_us(), Some(last - 59_900_000));
        assert_eq!(w.len(), 600);
        assert_eq!(w.hashes(0, last), 600.0 * HASHES_PER_DIFFICULTY);
    }

    #[test]
    fn a_bounded_window_keeps_at_most_max_shares() {
        let mut w = ShareWindow::default();
        // A flood within the span: the cap holds, the newest are kept.
        for i in 0..10_000u64 {
            w.record_bounded(1_000 + i, 2.0, u64::MAX, 100);
        }
        assert_eq!(w.len(), 100);
        assert_eq!(w.first_us(), Some(1_000 + 9_900));
        // Worthless shares are not kept at all.
        w.record_bounded(20_000, f64::NAN, u64::MAX, 100);
        w.record_bounded(20_000, 0.0, u64::MAX, 100);
        assert_eq!(w.len(), 100);
    }
}
