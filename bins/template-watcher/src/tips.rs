//! The tip path: from a new block (ZMQ `sequence` block-connected event, `hashblock`, or the
//! poll backstop) to a published [`Tip`](jdc_shared::messages::Tip). Never throttled, never
//! waits for `getblocktemplate` (that runs in the template task, on another RPC connection).
//!
//! Two ways to the `Tip`:
//! - **fast** (no RPC): a block-connected event whose parent the ZMQ stream proves, and whose
//!   parent's recent chain the [`ChainModel`] knows, gives the next block's height, `nBits`
//!   and a valid `min_time` at once (see [`crate::chain_model`]). The block's header is read
//!   *after* publishing, to grow the model and check the prediction: a wrong one (never seen)
//!   is logged as an error and a corrected `Tip` for the same `prev_hash` follows.
//! - **rpc**: one `getblockheader`, then publish. Used for everything else: the first block
//!   after start, disconnections (reorgs), lost ZMQ messages, `hashblock` alone, the poll,
//!   retarget boundaries, testnets. Afterwards the model is completed by RPC (the last 10
//!   headers at most, usually none or one), again off the tip path.
//!
//! Candidates are handled one at a time, in arrival order. A hash already announced is
//! dropped (ZMQ and the poll both see every tip). On the rpc path, so is a block that is no
//! longer the active tip by the time its header is read (`confirmations != 1`: a newer block
//! or a reorg followed, and its own notification is on the way); the fast path cannot know
//! and publishes every connected block, the newer ones following at once.

use crate::chain_model::{BlockFacts, ChainModel, Fallback, Prediction, KNOWN_SPAN};
use crate::gbt::{self, DetectedBy, HeaderInfo, TipBits};
use crate::health::NodeState;
use crate::node::{Node, NodeError};
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
    /// The block's parent, when the ZMQ `sequence` stream proves it (see
    /// [`crate::zmq_feed::BlockStream`]); `None` for `hashblock` and the poll.
    pub parent: Option<String>,
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

/// How long the RPCs that grow the chain model wait after a tip, unless another candidate
/// arrives (then they run at once).
pub const LEARN_DELAY: std::time::Duration = std::time::Duration::from_millis(10);

/// How a `Tip` was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TipPath {
    /// From the chain model, without RPC.
    Fast,
    /// From `getblockheader`.
    Rpc,
}

impl TipPath {
    /// The `path` field of the log lines.
    pub fn as_str(self) -> &'static str {
        match self {
            TipPath::Fast => "fast",
            TipPath::Rpc => "rpc",
        }
    }
}

/// Handles tip candidates until `shutdown`.
pub async fn tip_task(
    task: TipTask,
    mut candidates: mpsc::Receiver<Candidate>,
    shutdown: CancellationToken,
) {
    let mut model = ChainModel::default();
    // The last candidate found stale: `sequence` and `hashblock` both announce each block,
    // so a stale block usually comes twice in a row. Poll results are never skipped this way.
    let mut last_stale: Option<String> = None;
    // A candidate that arrived while the previous one's learning was deferred.
    let mut next: Option<Candidate> = None;
    loop {
        let cand = match next.take() {
            Some(c) => c,
            None => tokio::select! {
                _ = shutdown.cancelled() => return,
                c = candidates.recv() => match c {
                    Some(c) => c,
                    None => return,
                },
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
        let outcome = match fast_tip(&task, &model, &cand) {
            Ok((prediction, tip)) => announce_fast(&task, &cand, prediction, tip),
            Err(why) => {
                if cand.by == DetectedBy::Zmq && cand.parent.is_some() {
                    tracing::debug!(hash = %cand.hash, reason = why.as_str(), detail = %why, "tip takes the rpc path");
                }
                announce_rpc(&task, &cand).await
            }
        };
        let then = match outcome {
            Announce::Published(done) => {
                let Done {
                    published,
                    new_tip,
                    then,
                } = *done;
                last_stale = None;
                // Let the bus publisher task (woken by the `Tip`, next in this worker's queue)
                // send it before logging, the template task and the RPCs below take the CPU.
                tokio::task::yield_now().await;
                if let Some(p) = published {
                    p.log();
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = task.templates.send(new_tip) => if r.is_err() { return },
                }
                then
            }
            Announce::Stale(header) => {
                last_stale = Some(cand.hash.clone());
                Then::Learn {
                    header,
                    // A connected block: the next one may build on it.
                    backfill: cand.by == DetectedBy::Zmq,
                }
            }
            Announce::Failed => {
                last_stale = None;
                continue;
            }
        };
        // Off the tip path: what the next tip needs. Deferred a little, so the RPCs do not
        // compete for the CPU with the processes turning this tip into jobs (measured: they
        // did), unless a new candidate arrives first: then at once, before handling it.
        let waited = tokio::select! {
            _ = shutdown.cancelled() => return,
            w = wait_for_news(&task.announced, &mut candidates, LEARN_DELAY) => w,
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = learn(&task, &mut model, then, &cand) => {}
        }
        match waited {
            Waited::Elapsed => {}
            Waited::New(c) => next = Some(c),
            Waited::Closed => return,
        }
    }
}

/// How [`wait_for_news`] ended.
enum Waited {
    /// Nothing new within the delay.
    Elapsed,
    /// A candidate that is not the announced tip.
    New(Candidate),
    /// The candidate channel closed.
    Closed,
}

/// Waits up to `delay` for a candidate other than the announced tip (`hashblock` of the tip
/// just announced follows its `sequence` event; it is dropped here as it would be anyway).
async fn wait_for_news(
    announced: &Announced,
    candidates: &mut mpsc::Receiver<Candidate>,
    delay: std::time::Duration,
) -> Waited {
    let until = tokio::time::Instant::now() + delay;
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => return Waited::Elapsed,
            c = candidates.recv() => match c {
                Some(c) if announced.is(&c.hash) => continue,
                Some(c) => return Waited::New(c),
                None => return Waited::Closed,
            },
        }
    }
}

/// What became of a candidate.
enum Announce {
    /// Announced (the `Tip` published, or left to the template task).
    Published(Box<Done>),
    /// Not the active tip any more (its header, to learn from).
    Stale(Box<HeaderInfo>),
    /// bitcoind did not answer, or answered nonsense.
    Failed,
}

/// An announced tip.
struct Done {
    /// The published `Tip`, to log (`None` when left to the template task).
    published: Option<Published>,
    /// For the template task.
    new_tip: NewTip,
    /// What to learn afterwards.
    then: Then,
}

/// What to do once a tip is announced, off the tip path.
enum Then {
    /// Read the header of a tip published by the fast path, learn it and check the prediction.
    Verify(Prediction),
    /// Learn a header read by the rpc path, and complete the model for its child if `backfill`.
    Learn {
        /// The header.
        header: Box<HeaderInfo>,
        /// Whether to fetch the blocks the model lacks for this block's child.
        backfill: bool,
    },
}

/// The `Tip` from the model, if the candidate allows it.
fn fast_tip(
    task: &TipTask,
    model: &ChainModel,
    cand: &Candidate,
) -> Result<(Prediction, Tip), Fallback> {
    let parent = match (&cand.parent, cand.by) {
        (Some(p), DetectedBy::Zmq) => p,
        _ => return Err(Fallback::ParentUnproven),
    };
    let prediction = model.predict(&cand.hash, parent, task.network)?;
    let tip = prediction.tip(
        task.network,
        now_secs_u32(),
        task.version.load(Ordering::Relaxed),
        cand.detected_at_us,
    );
    Ok((prediction, tip))
}

fn announce_fast(task: &TipTask, cand: &Candidate, prediction: Prediction, tip: Tip) -> Announce {
    let queued_us = now_micros().saturating_sub(cand.detected_at_us);
    let Some(published) = publish(task, &tip, cand, TipPath::Fast, queued_us, 0) else {
        return Announce::Failed;
    };
    Announce::Published(Box::new(Done {
        published: Some(published),
        new_tip: NewTip {
            hash: cand.hash.clone(),
            detected_at_us: cand.detected_at_us,
            pending: None,
        },
        then: Then::Verify(prediction),
    }))
}

/// Reads the header and publishes the tip.
async fn announce_rpc(task: &TipTask, cand: &Candidate) -> Announce {
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
    if header.hash != cand.hash {
        tracing::warn!(hash = %cand.hash, answer = %header.hash, "getblockheader answered for another block; tip skipped");
        return Announce::Failed;
    }
    if header.confirmations != 1 {
        tracing::debug!(hash = %cand.hash, confirmations = header.confirmations, "block is no longer the active tip; skipped");
        return Announce::Stale(Box::new(header));
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
    let (pending, published) = match bits {
        TipBits::Known => {
            let Some(published) = publish(task, &tip, cand, TipPath::Rpc, queued_us, header_rpc_us)
            else {
                return Announce::Failed;
            };
            (None, Some(published))
        }
        TipBits::FromTemplate => {
            // The next block's target may differ from the tip's (retarget boundary or a
            // testnet's 20-minute rule): the template task publishes this tip with the
            // template's `bits`, just before the template.
            task.announced.announce(&tip.prev_hash, || ());
            tracing::info!(height = tip.height, prev_hash = %tip.prev_hash, by = cand.by.as_str(), "new tip whose target may change: its Tip waits for the template");
            (Some(tip), None)
        }
    };
    Announce::Published(Box::new(Done {
        published,
        new_tip: NewTip {
            hash: cand.hash.clone(),
            detected_at_us: cand.detected_at_us,
            pending,
        },
        then: Then::Learn {
            header: Box::new(header),
            backfill: true,
        },
    }))
}

/// A `Tip` just published, for its log lines (written once the bus has it).
struct Published {
    height: u32,
    prev_hash: String,
    path: TipPath,
    by: DetectedBy,
    /// Detection → handed to the bus publisher.
    elapsed_us: u64,
    /// Detection → the tip task took the candidate.
    queued_us: u64,
    /// The `getblockheader` call (0 on the fast path).
    header_rpc_us: u64,
}

impl Published {
    fn log(&self) {
        tracing::debug!(
            height = self.height,
            prev_hash = %self.prev_hash,
            path = self.path.as_str(),
            elapsed_us = self.elapsed_us,
            queued_us = self.queued_us,
            header_rpc_us = self.header_rpc_us,
            by = self.by.as_str(),
            "tip published"
        );
        tracing::info!(
            height = self.height,
            prev_hash = %self.prev_hash,
            by = self.by.as_str(),
            path = self.path.as_str(),
            elapsed_us = self.elapsed_us,
            "new tip"
        );
    }
}

/// Announces and publishes `tip`; `None` if it could not be sent.
fn publish(
    task: &TipTask,
    tip: &Tip,
    cand: &Candidate,
    path: TipPath,
    queued_us: u64,
    header_rpc_us: u64,
) -> Option<Published> {
    let body = match encode_body(Topic::Tip, tip) {
        Ok(b) => bytes::Bytes::from(b),
        Err(e) => {
            tracing::error!(error = %e, "cannot encode a tip");
            return None;
        }
    };
    let sent = task.announced.announce(&tip.prev_hash, || {
        task.publisher.publish_encoded(Topic::Tip, body)
    });
    let elapsed_us = now_micros().saturating_sub(cand.detected_at_us);
    if sent.is_err() {
        tracing::debug!("bus publisher stopped; tip not sent");
        return None;
    }
    Some(Published {
        height: tip.height,
        prev_hash: tip.prev_hash.clone(),
        path,
        by: cand.by,
        elapsed_us,
        queued_us,
        header_rpc_us,
    })
}

/// Reads one header (blocking RPC on the blocking pool).
async fn header_of(task: &TipTask, hash: &str) -> Result<HeaderInfo, String> {
    let h = hash.to_string();
    let header = task
        .node
        .run(move |n| n.block_header(&h))
        .await
        .map_err(|e: NodeError| e.to_string())?;
    if header.hash != hash {
        return Err(format!(
            "getblockheader {hash} answered for {}",
            header.hash
        ));
    }
    Ok(header)
}

/// Off the tip path: grows the model (and checks a fast-path prediction).
async fn learn(task: &TipTask, model: &mut ChainModel, then: Then, cand: &Candidate) {
    let (hash, backfill) = match then {
        Then::Verify(prediction) => {
            let header = match header_of(task, &prediction.block_hash).await {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(hash = %prediction.block_hash, error = %e, "cannot read the header of a tip published without RPC; the next tip takes the rpc path");
                    return;
                }
            };
            let facts = match BlockFacts::from_header(&header) {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(hash = %prediction.block_hash, error = %e, "bad getblockheader answer");
                    return;
                }
            };
            let check = prediction.check(&facts, header.mediantime);
            model.learn(facts);
            if let Err(mismatch) = check {
                tracing::error!(
                    hash = %prediction.block_hash,
                    parent = %prediction.parent_hash,
                    field = mismatch.field,
                    published = %mismatch.predicted,
                    actual = %mismatch.actual,
                    "a tip published without RPC was wrong; publishing the corrected tip"
                );
                correct(task, &header, cand).await;
            }
            (prediction.block_hash, true)
        }
        Then::Learn { header, backfill } => {
            match BlockFacts::from_header(&header) {
                Ok(f) => model.learn(f),
                Err(e) => {
                    tracing::warn!(hash = %header.hash, error = %e, "bad getblockheader answer");
                    return;
                }
            }
            (header.hash, backfill)
        }
    };
    if backfill {
        complete(task, model, &hash).await;
    }
}

/// Fetches the blocks the model lacks to predict the tip after `hash`'s child.
async fn complete(task: &TipTask, model: &mut ChainModel, hash: &str) {
    let started = std::time::Instant::now();
    let mut fetched = 0u32;
    for _ in 0..KNOWN_SPAN {
        let Some(missing) = model.next_missing(hash) else {
            break;
        };
        let facts = match header_of(task, &missing).await {
            Ok(h) => BlockFacts::from_header(&h).map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match facts {
            Ok(f) => {
                model.learn(f);
                fetched += 1;
            }
            Err(e) => {
                tracing::warn!(hash = %missing, error = %e, "cannot read a header for the chain model; the next tip takes the rpc path");
                return;
            }
        }
    }
    if fetched > 0 {
        tracing::debug!(
            tip = %hash,
            fetched,
            known = model.len(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "chain model completed by RPC"
        );
    }
}

/// Publishes the right tip after a wrong fast-path one, if it is still the announced tip.
async fn correct(task: &TipTask, header: &HeaderInfo, cand: &Candidate) {
    let (tip, bits) = match gbt::tip_from_header(
        header,
        task.network,
        now_secs_u32(),
        task.version.load(Ordering::Relaxed),
        cand.detected_at_us,
        cand.by,
    ) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!(hash = %header.hash, error = %e, "bad getblockheader answer; no corrected tip");
            return;
        }
    };
    match bits {
        TipBits::Known => {
            let sent = task
                .announced
                .publish_if_current(&tip.prev_hash, || task.publisher.publish(Topic::Tip, &tip));
            match sent {
                Some(Ok(())) => {
                    tracing::info!(height = tip.height, prev_hash = %tip.prev_hash, "corrected tip published")
                }
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "bus publisher stopped; corrected tip not sent")
                }
                None => {
                    tracing::info!(prev_hash = %tip.prev_hash, "a newer tip was announced meanwhile; no correction needed")
                }
            }
        }
        TipBits::FromTemplate => {
            if task.announced.is(&tip.prev_hash) {
                // The template task publishes it with the template's bits.
                let new_tip = NewTip {
                    hash: tip.prev_hash.clone(),
                    detected_at_us: cand.detected_at_us,
                    pending: Some(tip),
                };
                if task.templates.send(new_tip).await.is_err() {
                    tracing::debug!("template task stopped; corrected tip not sent");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
