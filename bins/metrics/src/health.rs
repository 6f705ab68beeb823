//! Per-process liveness from the bus: a process is *up* while its heartbeats keep arriving
//! (the last one no older than `metrics.down_after_ms`). Pure: times are passed in.

use std::collections::BTreeMap;

use jdc_shared::bus::HeartbeatWithStats;
use serde::Serialize;

/// What is known of one process.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Seen {
    started_at_us: Option<u64>,
    state: Option<String>,
    version: Option<String>,
    last_heartbeat_us: Option<u64>,
    last_message_us: Option<u64>,
}

/// Liveness of every process the metrics listen to.
#[derive(Debug, Clone, Default)]
pub struct Health {
    processes: BTreeMap<String, Seen>,
}

/// One process in a [`HealthReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProcessHealth {
    /// Process (bus stream) name: `watcher`, `selector`, `declarator`.
    pub process: String,
    /// Whether its last heartbeat is recent enough.
    pub up: bool,
    /// When the process started (unix µs, from its heartbeat), if heard from.
    pub since_us: Option<u64>,
    /// Milliseconds since its last bus message of any topic, if any.
    pub last_message_age_ms: Option<u64>,
    /// Milliseconds since its last heartbeat, if any.
    pub last_heartbeat_age_ms: Option<u64>,
    /// The state its heartbeat reports (e.g. `ok`, `waiting-for-template`).
    pub state: Option<String>,
    /// Its crate version.
    pub version: Option<String>,
}

/// The answer of `/healthz`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// `up` when every process is up, else `down`.
    pub status: &'static str,
    /// Each process, by name.
    pub processes: Vec<ProcessHealth>,
}

impl HealthReport {
    /// Whether every process is up.
    pub fn all_up(&self) -> bool {
        self.status == "up"
    }
}

impl Health {
    /// Tracks `processes`, all down until heard from.
    pub fn new(processes: &[&str]) -> Health {
        Health {
            processes: processes
                .iter()
                .map(|p| (p.to_string(), Seen::default()))
                .collect(),
        }
    }

    /// Any message from `process` arrived at `now_us`.
    pub fn message(&mut self, process: &str, now_us: u64) {
        if let Some(seen) = self.processes.get_mut(process) {
            seen.last_message_us = Some(now_us);
        }
    }

    /// A heartbeat from `process` arrived at `now_us`.
    pub fn heartbeat(&mut self, process: &str, hb: &HeartbeatWithStats, now_us: u64) {
        if let Some(seen) = self.processes.get_mut(process) {
            seen.last_heartbeat_us = Some(now_us);
            seen.last_message_us = Some(now_us);
            seen.started_at_us = Some(hb.heartbeat.started_at_us);
            seen.state = Some(hb.heartbeat.state.clone());
            seen.version = Some(hb.heartbeat.version.clone());
        }
    }

    /// The health of every process at `now_us`.
    pub fn report(&self, now_us: u64, down_after_ms: u64) -> HealthReport {
        let age_ms = |t: Option<u64>| t.map(|t| now_us.saturating_sub(t) / 1_000);
        let processes: Vec<ProcessHealth> = self
            .processes
            .iter()
            .map(|(name, seen)| {
                let heartbeat_age = age_ms(seen.last_heartbeat_us);
                ProcessHealth {
                    process: name.clone(),
                    up: heartbeat_age.is_some_and(|a| a <= down_after_ms),
                    since_us: seen.started_at_us,
                    last_message_age_ms: age_ms(seen.last_message_us),
                    last_heartbeat_age_ms: heartbeat_age,
                    state: seen.state.clone(),
                    version: seen.version.clone(),
                }
            })
            .collect();
        let status = if processes.iter().all(|p| p.up) {
            "up"
        } else {
            "down"
        };
        HealthReport { status, processes }
    }
}

#[cfg(test)]
mod tests;
