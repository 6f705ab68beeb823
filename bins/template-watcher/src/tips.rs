//! The tip path: from a new best block hash (ZMQ `hashblock` or the poll backstop) to a
//! published [`Tip`](jdc_shared::messages::Tip), with one fast `getblockheader` and nothing else
//! in between. Never throttled, never waits for `getblocktemplate` (that runs in the template
//! task, on another RPC connection).
//!
//! Candidates are handled one at a time, in arrival order. A hash already announced is
//! dropped (ZMQ and the poll both see every tip), and so is a block that is no longer the
//! active tip by the time its header is read (`confirmations != 1`: a newer block or a reorg
//! followed, and its own notification is on the way).

use crate::gbt::{self, DetectedBy, TipBits};
use crate::health::NodeState;
use crate::node::Node;
use jdc_shared::bitcoin::Network;
use jdc_shared::bus::{encode_body, Publisher, Topic};
use jdc_shared::messages::Tip;
use jdc_shared::time::{now_micros, now_secs_u32};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

/// A hash that may be the new tip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Block hash (RPC hex).
    pub hash: String,
    /// When it was learnt (unix µs): when the ZMQ message was read, or the poll answered.
    pub detected_at_us: u64,
    /// How.
    pub by: DetectedBy,
}

/// A tip handed to the template task once announced.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTip {
    /// Block hash (RPC hex).
    pub hash: String,
    /// When it was detected (unix µs).
    pub detected_at_us: u64,
    /// A tip whose `nbits` must come from the template (retarget boundary): the template task
    /// publishes it, completed, just before the template. `None` when already published.
    pub pending: Option<Tip>,
}

/// The hash of the last announced tip, shared by the tip and template tasks. Publishing under
/// its lock orders the bus: a template built on an older tip is never published after the
/// newer tip's `Tip` message.
#[derive(Debug, Default)]
pub struct Announced {
    hash: Mutex<Option<String>>,
}

impl Announced {
    /// Whether `hash` is the last announced tip.
    pub fn is(&self, hash: &str) -> bool {
        self.lock().as_deref() == Some(hash)
    }

    /// Records `hash` as the tip and runs `publish` under the lock.
    pub fn announce<R>(&self, hash: &str, publish: impl FnOnce() -> R) -> R {
        let mut g = self.lock();
        *g = Some(hash.to_string());
        publish()
    }

    /// Runs `publish` under the lock if `prev_hash` is still the announced tip.
    pub fn publish_if_current<R>(&self, prev_hash: &str, publish: impl FnOnce() -> R) -> Option<R> {
        let g = self.lock();
        (g.as_deref() == Some(prev_hash)).then(publish)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        // Poisoning only means a publisher closure panicked; the hash itself is intact.
        self.hash.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the tip task needs.
pub struct TipTask {
    /// Its own RPC connection (only `getblockheader`).
    pub node: Arc<Node>,
    /// The bus.
    pub publisher: Publisher,
    /// The configured network.
    pub network: Network,
    /// bitcoind's state from the poll task.
    pub state: watch::Receiver<NodeState>,
    /// Version of the last template (for the next block's version).
    pub version: Arc<AtomicU32>,
    /// The announced tip, shared with the template task.
    pub announced: Arc<Announced>,
    /// Poked to make the poll task probe bitcoind at once.
    pub probe_now: Arc<Notify>,
    /// Announced tips, for the template task.
    pub templates: mpsc::Sender<NewTip>,
}

/// Handles tip candidates until `shutdown`.
pub async fn tip_task(
    task: TipTask,
    mut candidates: mpsc::Receiver<Candidate>,
    shutdown: CancellationToken,
) {
    // The last candidate found stale: `sequence` and `hashblock` both announce each block,
    // so a stale block usually comes twice in a row. Poll results are never skipped this way.
    let mut last_stale: Option<String> = None;
    loop {
        let cand = tokio::select! {
            _ = shutdown.cancelled() => return,
            c = candidates.recv() => match c {
                Some(c) => c,
                None => return,
            },
        };
        match *task.state.borrow() {
            NodeState::Ok => {}
            NodeState::Waiting => {
                // A notification while bitcoind seemed down: it is probably back.
                task.probe_now.notify_one();
                continue;
            }
            NodeState::InitialBlockDownload => continue,
        }
        if task.announced.is(&cand.hash)
            || (cand.by == DetectedBy::Zmq && last_stale.as_deref() == Some(&cand.hash))
        {
            continue;
        }
        let hash = cand.hash.clone();
        let new_tip = match announce(&task, cand).await {
            Announce::Published(t) => {
                last_stale = None;
                t
            }
            Announce::Stale => {
                last_stale = Some(hash);
                continue;
            }
            Announce::Failed => {
                last_stale = None;
                continue;
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            r = task.templates.send(new_tip) => if r.is_err() { return },
        }
    }
}

/// What became of a candidate.
enum Announce {
    /// Announced (the `Tip` published, or left to the template task).
    Published(NewTip),
    /// Not the active tip any more.
    Stale,
    /// bitcoind did not answer, or answered nonsense.
    Failed,
}

/// Reads the header and publishes the tip.
async fn announce(task: &TipTask, cand: Candidate) -> Announce {
    let hash = cand.hash.clone();
    let queued_us = now_micros().saturating_sub(cand.detected_at_us);
    let rpc_start = std::time::Instant::now();
    let header = match task.node.run(move |n| n.block_header(&hash)).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(hash = %cand.hash, error = %e, "cannot read the header of a new tip; the poll will retry");
            task.probe_now.notify_one();
            return Announce::Failed;
        }
    };
    if header.confirmations != 1 || header.hash != cand.hash {
        tracing::debug!(hash = %cand.hash, confirmations = header.confirmations, "block is no longer the active tip; skipped");
        return Announce::Stale;
    }
    let header_rpc_us = rpc_start.elapsed().as_micros() as u64;
    let version = task.version.load(Ordering::Relaxed);
    let (tip, bits) = match gbt::tip_from_header(
        &header,
        task.network,
        now_secs_u32(),
        version,
        cand.detected_at_us,
        cand.by,
    ) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(hash = %cand.hash, error = %e, "bad getblockheader answer; tip skipped");
            return Announce::Failed;
        }
    };
    let pending = match bits {
        TipBits::Known => {
            let body = match encode_body(Topic::Tip, &tip) {
                Ok(b) => bytes::Bytes::from(b),
                Err(e) => {
                    tracing::error!(error = %e, "cannot encode a tip");
                    return Announce::Failed;
                }
            };
            let sent = task.announced.announce(&tip.prev_hash, || {
                task.publisher.publish_encoded(Topic::Tip, body)
            });
            let elapsed_us = now_micros().saturating_sub(cand.detected_at_us);
            if sent.is_err() {
                tracing::debug!("bus publisher stopped; tip not sent");
                return Announce::Failed;
            }
            tracing::debug!(
                height = tip.height,
                elapsed_us,
                queued_us,
                header_rpc_us,
                by = cand.by.as_str(),
                "tip published"
            );
            tracing::info!(height = tip.height, prev_hash = %tip.prev_hash, by = cand.by.as_str(), elapsed_us, "new tip");
            None
        }
        TipBits::FromTemplate => {
            // The next block's target may differ from the tip's (retarget boundary or a
            // testnet's 20-minute rule): the template task publishes this tip with the
            // template's `bits`, just before the template.
            task.announced.announce(&tip.prev_hash, || ());
            tracing::info!(height = tip.height, prev_hash = %tip.prev_hash, by = cand.by.as_str(), "new tip whose target may change: its Tip waits for the template");
            Some(tip)
        }
    };
    Announce::Published(NewTip {
        hash: cand.hash,
        detected_at_us: cand.detected_at_us,
        pending,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announced_gate_orders_publication() {
        let a = Announced::default();
        assert!(!a.is("aa"));
        assert_eq!(a.publish_if_current("aa", || 1), None);
        a.announce("aa", || ());
        assert!(a.is("aa"));
        assert_eq!(a.publish_if_current("aa", || 1), Some(1));
        a.announce("bb", || ());
        assert_eq!(
            a.publish_if_current("aa", || 1),
            None,
            "stale template dropped"
        );
    }
}
