//! Is bitcoind usable? The poll backstop and its state machine.
//!
//! [`Health`] is pure: it turns probe results into state changes (each reported once) and the
//! delay before the next probe (the poll interval when healthy, exponential backoff when
//! bitcoind is unreachable). [`poll_task`] is the shell: while bitcoind is healthy it polls
//! `getbestblockhash` every `tip_poll_interval_ms` and hands the hash to the tip task (which
//! drops hashes it already announced), so a tip is never missed even if ZMQ is silent or
//! disconnected; otherwise it probes `getblockchaininfo` until bitcoind answers and has left
//! initial block download.

use crate::gbt::DetectedBy;
use crate::node::{ChainInfo, Node};
use crate::tips::Candidate;
use jdc_shared::bitcoin::Network;
use jdc_shared::bus::Publisher;
use jdc_shared::time::now_micros;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// Longest wait between probes of an unreachable bitcoind.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Whether the watcher may work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// bitcoind does not answer (not started, restarting, wrong credentials).
    Waiting,
    /// bitcoind is in initial block download: templates would be useless.
    InitialBlockDownload,
    /// Synced and answering.
    Ok,
}

impl NodeState {
    /// The heartbeat state string.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Waiting => "waiting-for-bitcoind",
            NodeState::InitialBlockDownload => "initial-block-download",
            NodeState::Ok => "ok",
        }
    }
}

/// The result of one probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The RPC failed.
    Unreachable(String),
    /// bitcoind answered and is in initial block download.
    Ibd {
        /// Active tip height.
        blocks: u64,
        /// Best header height.
        headers: u64,
    },
    /// bitcoind answered and is synced.
    Synced,
}

/// A state change worth one log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// bitcoind did not answer yet (first failure after start).
    NotReachable(String),
    /// bitcoind stopped answering after having answered.
    Lost(String),
    /// bitcoind entered (or is found in) initial block download.
    EnteredIbd {
        /// Active tip height.
        blocks: u64,
        /// Best header height.
        headers: u64,
    },
    /// bitcoind became usable; `again` when it was usable before.
    Ready {
        /// Whether this is a recovery rather than the first connection.
        again: bool,
    },
}

/// The pure health state machine.
#[derive(Debug, Clone)]
pub struct Health {
    state: NodeState,
    /// Whether any probe has been made (the first failure is "not reachable yet", later
    /// ones "lost").
    probed: bool,
    ever_ready: bool,
    failures: u32,
    interval: Duration,
}

impl Health {
    /// Starts in [`NodeState::Waiting`], polling every `interval` when healthy.
    pub fn new(interval: Duration) -> Self {
        Self {
            state: NodeState::Waiting,
            probed: false,
            ever_ready: false,
            failures: 0,
            interval,
        }
    }

    /// The current state.
    pub fn state(&self) -> NodeState {
        self.state
    }

    /// Feeds one probe; returns the change to log, if the state changed.
    pub fn observe(&mut self, probe: &Probe) -> Option<Change> {
        let before = self.state;
        let first = !self.probed;
        self.probed = true;
        match probe {
            Probe::Unreachable(why) => {
                self.failures = self.failures.saturating_add(1);
                self.state = NodeState::Waiting;
                if before == NodeState::Waiting && !first {
                    None
                } else if self.ever_ready || before != NodeState::Waiting {
                    Some(Change::Lost(why.clone()))
                } else {
                    Some(Change::NotReachable(why.clone()))
                }
            }
            Probe::Ibd { blocks, headers } => {
                self.failures = 0;
                self.state = NodeState::InitialBlockDownload;
                (before != NodeState::InitialBlockDownload).then_some(Change::EnteredIbd {
                    blocks: *blocks,
                    headers: *headers,
                })
            }
            Probe::Synced => {
                self.failures = 0;
                self.state = NodeState::Ok;
                let again = self.ever_ready;
                self.ever_ready = true;
                (before != NodeState::Ok).then_some(Change::Ready { again })
            }
        }
    }

    /// How long to wait before the next probe.
    pub fn next_delay(&self) -> Duration {
        match self.state {
            NodeState::Waiting if self.failures > 1 => {
                let factor = 1u32 << (self.failures - 1).min(16);
                self.interval
                    .saturating_mul(factor)
                    .min(MAX_BACKOFF.max(self.interval))
            }
            _ => self.interval,
        }
    }
}

/// bitcoind's name (`getblockchaininfo.chain`) for `network`.
pub fn chain_name(network: Network) -> &'static str {
    match network {
        Network::Bitcoin => "main",
        Network::Testnet => "test",
        Network::Testnet4 => "testnet4",
        Network::Signet => "signet",
        _ => "regtest",
    }
}

/// Classifies a `getblockchaininfo` answer; a node on another chain than the configured
/// network is unusable (subsidy, addresses and ports would all be wrong).
pub fn probe_of(info: &ChainInfo, network: Network) -> Probe {
    let expected = chain_name(network);
    if info.chain != expected {
        return Probe::Unreachable(format!(
            "bitcoind is on chain `{}` but the configured network is `{expected}` (check `network` and `bitcoind.rpc_url`)",
            info.chain
        ));
    }
    if info.initialblockdownload {
        Probe::Ibd {
            blocks: info.blocks,
            headers: info.headers,
        }
    } else {
        Probe::Synced
    }
}

fn log_change(change: &Change, rpc: &str, info: Option<&ChainInfo>) {
    match change {
        Change::NotReachable(why) => {
            tracing::warn!(rpc, error = %why, "bitcoind not reachable yet; retrying with backoff")
        }
        Change::Lost(why) => {
            tracing::warn!(rpc, error = %why, "lost bitcoind; retrying with backoff")
        }
        Change::EnteredIbd { blocks, headers } => tracing::warn!(
            blocks,
            headers,
            "bitcoind is in initial block download: no templates until it is synced"
        ),
        Change::Ready { again } => {
            let (chain, blocks) = info
                .map(|i| (i.chain.as_str(), i.blocks))
                .unwrap_or(("?", 0));
            if *again {
                tracing::info!(rpc, chain, blocks, "bitcoind is back");
            } else {
                tracing::info!(rpc, chain, blocks, "connected to bitcoind");
            }
        }
    }
}

/// What the poll task needs.
pub struct PollTask {
    /// Its own RPC connection.
    pub node: Arc<Node>,
    /// The configured network.
    pub network: Network,
    /// For the heartbeat state.
    pub publisher: Publisher,
    /// Poll interval when healthy.
    pub interval: Duration,
    /// Publishes the state to the other tasks.
    pub state_tx: watch::Sender<NodeState>,
    /// Tip candidates for the tip task.
    pub candidates: mpsc::Sender<Candidate>,
    /// Poked by others to probe at once (e.g. a ZMQ message while bitcoind seemed down).
    pub probe_now: Arc<Notify>,
    /// Poked on recovery so the template task refreshes (bitcoind may have a new mempool).
    pub refresh: Arc<Notify>,
}

/// Polls bitcoind until `shutdown`.
pub async fn poll_task(task: PollTask, shutdown: CancellationToken) {
    let mut health = Health::new(task.interval);
    let rpc = task.node.describe();
    task.publisher.set_state(health.state().as_str());
    let mut delay = Duration::ZERO;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(delay) => {}
            _ = task.probe_now.notified() => {}
        }
        let change = if health.state() == NodeState::Ok {
            match task.node.run(|n| n.best_block_hash()).await {
                Ok(hash) => {
                    let cand = Candidate {
                        hash,
                        detected_at_us: now_micros(),
                        by: DetectedBy::Poll,
                        parent: None,
                    };
                    if task.candidates.try_send(cand).is_err() {
                        tracing::debug!(
                            "tip queue full; poll result dropped (the next poll retries)"
                        );
                    }
                    None
                }
                Err(e) => health
                    .observe(&Probe::Unreachable(e.to_string()))
                    .map(|c| (c, None)),
            }
        } else {
            match task.node.run(|n| n.chain_info()).await {
                Ok(info) => {
                    let change = health.observe(&probe_of(&info, task.network));
                    if health.state() == NodeState::Ok {
                        let cand = Candidate {
                            hash: info.bestblockhash.clone(),
                            detected_at_us: now_micros(),
                            by: DetectedBy::Poll,
                            parent: None,
                        };
                        // Publish the state before the candidate so the tip task accepts it.
                        task.state_tx.send_replace(NodeState::Ok);
                        let _ = task.candidates.try_send(cand);
                        task.refresh.notify_one();
                    }
                    change.map(|c| (c, Some(info)))
                }
                Err(e) => health
                    .observe(&Probe::Unreachable(e.to_string()))
                    .map(|c| (c, None)),
            }
        };
        if let Some((change, info)) = change {
            log_change(&change, &rpc, info.as_ref());
        }
        task.state_tx.send_if_modified(|s| {
            let changed = *s != health.state();
            *s = health.state();
            changed
        });
        task.publisher.set_state(health.state().as_str());
        delay = health.next_delay();
    }
}

#[cfg(test)]
mod tests;
