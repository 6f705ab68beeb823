//! What the operator sees of the upstreams: the [`UpstreamState`] published on the bus topic
//! `upstream` at start and on every transition (metrics gauges and dashboards read it).

use jdc_shared::bus::{Publisher, Topic};
use jdc_shared::messages::{UpstreamState, UpstreamStatus};
use jdc_shared::time::now_micros;

use super::fallback::{Fallback, Source};
use super::jds::Mode;
use super::UpstreamSpec;

/// `UpstreamState::mode` while mining for a pool.
pub const MODE_POOL: &str = "pool";
/// `UpstreamState::mode` while mining solo.
pub const MODE_SOLO: &str = "solo";

/// The published upstream state and what it is built from besides the [`Fallback`].
pub struct StateBoard {
    bus: Publisher,
    upstreams: Vec<UpstreamStatus>,
    id: u64,
    switches: u64,
    reason: String,
    since_us: u64,
    active: Option<Source>,
}

impl StateBoard {
    /// A board for the configured `specs`; nothing is published yet.
    pub fn new(bus: Publisher, specs: &[UpstreamSpec]) -> Self {
        let upstreams = specs
            .iter()
            .enumerate()
            .map(|(i, s)| UpstreamStatus {
                rank: u32::try_from(i + 1).unwrap_or(u32::MAX),
                pool: s.pool.address.clone(),
                jds: s.jds.address.clone(),
                mode: match s.jds.mode {
                    Mode::FullTemplate => "full-template",
                    Mode::CoinbaseOnly => "coinbase-only",
                }
                .to_string(),
                state: "standby".into(),
                last_error: String::new(),
            })
            .collect();
        Self {
            bus,
            upstreams,
            id: 0,
            switches: 0,
            reason: String::new(),
            since_us: now_micros(),
            active: None,
        }
    }

    /// Upstream `index` failed (or could not be reached) with `error`.
    pub fn failed(&mut self, index: usize, error: impl Into<String>) {
        if let Some(u) = self.upstreams.get_mut(index) {
            u.last_error = error.into();
        }
    }

    /// Publishes the state after a change of `fallback`; `reason` is why, if the source
    /// changed (the first publication is not a transition).
    pub fn publish(&mut self, fallback: &Fallback, reason: &str) {
        let active = fallback.active();
        if self.active.is_some_and(|was| was != active) {
            self.switches += 1;
            self.reason = reason.to_string();
            self.since_us = now_micros();
        }
        self.active = Some(active);
        for (i, u) in self.upstreams.iter_mut().enumerate() {
            u.state = if active == Source::Upstream(i) {
                "active"
            } else if fallback.is_healthy(i) {
                "standby"
            } else {
                "down"
            }
            .to_string();
        }
        self.id += 1;
        let (mode, rank) = match active {
            Source::Upstream(i) => (MODE_POOL, u32::try_from(i + 1).unwrap_or(u32::MAX)),
            Source::Solo => (MODE_SOLO, 0),
        };
        let state = UpstreamState {
            id: self.id,
            mode: mode.into(),
            active: rank,
            switches: self.switches,
            reason: self.reason.clone(),
            since_us: self.since_us,
            upstreams: self.upstreams.clone(),
        };
        if let Err(e) = self.bus.publish(Topic::Upstream, &state) {
            tracing::warn!(error = %e, "cannot publish the upstream state");
        }
    }
}
