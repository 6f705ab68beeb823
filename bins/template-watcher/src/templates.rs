//! The template path: `getblocktemplate` for every announced tip (at once) and for mempool
//! changes (debounced, see [`crate::debounce`]), published as
//! [`Template`](jdc_shared::messages::Template).
//!
//! Requests run on the blocking pool, each kind on its own RPC connection, so a tip's request
//! never queues behind a mempool refresh's HTTP exchange. The answer is parsed, hex-decoded
//! and encoded for the bus on the blocking pool too; the async task only decides whether to
//! publish. A result is published only if no newer request has been published already and it
//! builds on the announced tip (checked under [`Announced`]'s lock, so it cannot follow a newer
//! tip on the bus).

use crate::debounce::{Debounce, Due};
use crate::gbt::{self, GbtError, TemplateHead};
use crate::health::NodeState;
use crate::node::{Node, NodeError};
use crate::tips::{Announced, NewTip};
use bytes::Bytes;
use jdc_shared::bitcoin::Network;
use jdc_shared::bus::{encode_body, BusError, Publisher, Topic};
use jdc_shared::messages::{TemplateSummary, Tip};
use jdc_shared::time::now_micros;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// bitcoind answers `getblocktemplate` from a cache while its tip is unchanged and its last
/// build is at most 5 whole seconds old (`GetTime() - time_start > 5`, seconds), whatever the
/// mempool did. A refresh started this long after the last build is sure to be fresh.
pub const GBT_CACHE_WINDOW: Duration = Duration::from_millis(6_200);

/// Why a template could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    /// The RPC failed.
    #[error(transparent)]
    Node(#[from] NodeError),
    /// bitcoind's answer was inconsistent.
    #[error(transparent)]
    Gbt(#[from] GbtError),
    /// Encoding for the bus failed.
    #[error(transparent)]
    Encode(#[from] BusError),
}

/// What the template task needs.
pub struct TemplateTask {
    /// RPC connection for tip templates.
    pub tip_node: Arc<Node>,
    /// RPC connection for mempool refreshes.
    pub mempool_node: Arc<Node>,
    /// The bus.
    pub publisher: Publisher,
    /// The configured network.
    pub network: Network,
    /// bitcoind's state from the poll task.
    pub state: watch::Receiver<NodeState>,
    /// Version of the last template, read by the tip task.
    pub version: Arc<AtomicU32>,
    /// The announced tip, shared with the tip task.
    pub announced: Arc<Announced>,
    /// Poked by the ZMQ feed on mempool changes.
    pub mempool_changed: Arc<Notify>,
    /// Minimum interval between mempool refreshes.
    pub min_interval: Duration,
    /// Wait after a tip before asking for its template (the tip path goes first).
    pub template_after_tip_delay: Duration,
}

/// Which request produced a template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Tip,
    Mempool,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Tip => "tip",
            Kind::Mempool => "mempool",
        }
    }
}

/// A finished request.
struct Outcome {
    generation: u64,
    kind: Kind,
    started_at: std::time::Instant,
    elapsed: Duration,
    result: Result<(TemplateHead, Bytes), TemplateError>,
}

/// The tip templates are currently built on.
struct Current {
    hash: String,
    detected_at_us: u64,
    /// A tip still to be published with the template's bits.
    pending: Option<Tip>,
    /// Whether a template for this tip was published (later ones are refreshes).
    template_published: bool,
}

/// Unique, increasing template ids from the microsecond clock.
#[derive(Debug, Default)]
pub struct IdClock {
    last: AtomicU64,
}

impl IdClock {
    /// `now_micros()`, or one more than the previous id if the clock has not moved on.
    pub fn next(&self) -> u64 {
        let now = now_micros();
        let mut prev = self.last.load(Ordering::Relaxed);
        loop {
            let id = now.max(prev + 1);
            match self
                .last
                .compare_exchange_weak(prev, id, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return id,
                Err(p) => prev = p,
            }
        }
    }
}

struct Loop {
    task: TemplateTask,
    debounce: Debounce,
    running: JoinSet<Result<Outcome, tokio::sync::oneshot::error::RecvError>>,
    generation: u64,
    /// Generation of the last tip request: older mempool results are dropped.
    tip_generation: u64,
    /// Generation of the last published template.
    published_generation: u64,
    current: Option<Current>,
    ids: Arc<IdClock>,
    failing: bool,
    /// Start of the last request that made bitcoind build a new template (its content
    /// changed), for bitcoind's template cache.
    last_build: Option<std::time::Instant>,
    /// Whether bitcoind was seen answering from its cache (unchanged content right after a
    /// build, although the mempool changed): mempool refreshes then wait for the cache to
    /// expire instead of asking in vain.
    cache_seen: bool,
    /// Whether a mempool change was notified since the last unchanged answer was retried:
    /// an answer that comes back unchanged after a change is asked for once more when
    /// bitcoind's cache has surely expired (bounded: one retry per notified change).
    retry_unchanged: bool,
    /// `(prev_hash, content digest)` of the last answer and of the last published template.
    last_answer: Option<(String, u64)>,
    last_published: Option<(String, u64)>,
}

/// Builds and publishes templates until `shutdown`.
pub async fn template_task(
    task: TemplateTask,
    mut tips: mpsc::Receiver<NewTip>,
    shutdown: CancellationToken,
) {
    let mut state = task.state.clone();
    let mempool_changed = task.mempool_changed.clone();
    let mut l = Loop {
        debounce: Debounce::new(task.min_interval),
        task,
        running: JoinSet::new(),
        generation: 0,
        tip_generation: 0,
        published_generation: 0,
        current: None,
        ids: Arc::new(IdClock::default()),
        failing: false,
        last_build: None,
        cache_seen: false,
        retry_unchanged: false,
        last_answer: None,
        last_published: None,
    };
    let mut state_open = true;
    loop {
        let ready = l.current.is_some() && *state.borrow() == NodeState::Ok;
        let wake = match (ready, l.debounce.due(Instant::now().into_std())) {
            (true, Due::Now) => Some(Instant::now()),
            (true, Due::At(at)) => Some(Instant::from_std(at)),
            _ => None,
        };
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            tip = tips.recv() => match tip {
                Some(tip) => l.on_tip(tip),
                None => break,
            },
            Some(joined) = l.running.join_next(), if !l.running.is_empty() => match joined {
                Ok(Ok(outcome)) => l.on_outcome(outcome),
                Ok(Err(_)) => {
                    tracing::error!("template request thread ended without a result");
                    l.debounce.failed();
                }
                Err(e) => {
                    tracing::error!(error = %e, "template request task failed");
                    l.debounce.failed();
                }
            },
            _ = mempool_changed.notified() => {
                l.debounce.changed();
                l.retry_unchanged = true;
            }
            r = state.changed(), if state_open => if r.is_err() { state_open = false },
            _ = sleep_until(wake), if wake.is_some() => l.start(Kind::Mempool),
        }
    }
    // Requests in flight finish on their threads (bounded by the RPC timeout); their results
    // are not wanted any more.
    l.running.detach_all();
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Loop {
    fn on_tip(&mut self, tip: NewTip) {
        self.current = Some(Current {
            hash: tip.hash,
            detected_at_us: tip.detected_at_us,
            pending: tip.pending,
            template_published: false,
        });
        self.start(Kind::Tip);
    }

    fn start(&mut self, kind: Kind) {
        let Some(current) = self.current.as_ref() else {
            return;
        };
        let now = std::time::Instant::now();
        if kind == Kind::Mempool && self.cache_seen {
            if let Some(cache_expires) = self.last_build.map(|b| b + GBT_CACHE_WINDOW) {
                if now < cache_expires {
                    tracing::trace!("bitcoind's template cache is still valid; refresh postponed");
                    self.debounce.retry_at(cache_expires);
                    return;
                }
            }
        }
        self.generation += 1;
        if kind == Kind::Tip {
            self.tip_generation = self.generation;
        }
        self.debounce.started(Instant::now().into_std());
        let tip_detected_at_us = if current.template_published {
            0
        } else {
            current.detected_at_us
        };
        let node = match kind {
            Kind::Tip => self.task.tip_node.clone(),
            Kind::Mempool => self.task.mempool_node.clone(),
        };
        let network = self.task.network;
        let ids = self.ids.clone();
        let generation = self.generation;
        let delay = match kind {
            Kind::Tip => self.task.template_after_tip_delay,
            Kind::Mempool => Duration::ZERO,
        };
        // Parsing and encoding a large template is bulk work: a lower-priority thread, so a
        // new tip arriving meanwhile is handled first.
        let built = jdc_shared::priority::spawn_bulk("template-build", move || {
            if !delay.is_zero() {
                std::thread::sleep(delay);
            }
            let started = std::time::Instant::now();
            let result = build(&node, network, &ids, tip_detected_at_us);
            Outcome {
                generation,
                kind,
                started_at: now,
                elapsed: started.elapsed(),
                result,
            }
        });
        match built {
            Ok(rx) => {
                self.running.spawn(rx);
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a thread for getblocktemplate");
                self.debounce.failed();
            }
        }
    }

    fn on_outcome(&mut self, outcome: Outcome) {
        let superseded = outcome.generation <= self.published_generation
            || (outcome.kind == Kind::Mempool && outcome.generation < self.tip_generation);
        let (head, body) = match outcome.result {
            Ok(built) => {
                self.debounce.finished();
                if self.failing {
                    tracing::info!("getblocktemplate works again");
                    self.failing = false;
                }
                built
            }
            Err(e) => {
                if superseded {
                    self.debounce.finished();
                } else {
                    // Retried after the debounce interval.
                    self.debounce.failed();
                    if !self.failing {
                        tracing::warn!(kind = outcome.kind.as_str(), error = %e, "getblocktemplate failed; retrying");
                        self.failing = true;
                    } else {
                        tracing::debug!(kind = outcome.kind.as_str(), error = %e, "getblocktemplate failed again");
                    }
                }
                return;
            }
        };
        if superseded {
            tracing::debug!(
                kind = outcome.kind.as_str(),
                "template superseded by a newer request; dropped"
            );
            return;
        }
        let key = (head.prev_hash.clone(), head.content_digest);
        let unchanged = self.last_answer.as_ref() == Some(&key);
        self.last_answer = Some(key.clone());
        match self.last_build {
            Some(build) if unchanged && outcome.started_at < build + GBT_CACHE_WINDOW => {
                if outcome.kind == Kind::Mempool {
                    // The mempool changed but the answer did not: probably bitcoind's cache.
                    // Ask again once it has expired.
                    if !self.cache_seen {
                        tracing::debug!("bitcoind answers getblocktemplate from its cache for a few seconds; mempool refreshes follow its pace");
                    }
                    self.cache_seen = true;
                    self.debounce.retry_at(build + GBT_CACHE_WINDOW);
                }
            }
            _ => {
                if unchanged && outcome.kind == Kind::Mempool && self.retry_unchanged {
                    // The mempool changed but the template did not. Usually the change does
                    // not matter to the template; but the change may have raced the build (or
                    // been answered from a cache we did not see): one more look, later.
                    self.retry_unchanged = false;
                    self.debounce
                        .retry_at(outcome.started_at + GBT_CACHE_WINDOW);
                }
                self.last_build = Some(outcome.started_at);
            }
        }
        let Some(current) = self.current.as_mut() else {
            return;
        };
        if head.prev_hash != current.hash {
            tracing::debug!(prev_hash = %head.prev_hash, tip = %current.hash, "template built on another tip; dropped");
            return;
        }
        if current.template_published && self.last_published.as_ref() == Some(&key) {
            tracing::trace!("template unchanged; not republished");
            return;
        }
        let pending = current
            .pending
            .take()
            .map(|tip| gbt::complete_tip(tip, &head));
        let publisher = &self.task.publisher;
        let sent = self.task.announced.publish_if_current(&head.prev_hash, || {
            if let Some(tip) = &pending {
                publisher.publish(Topic::Tip, tip)?;
            }
            publisher.publish_encoded(Topic::Template, body)?;
            publisher.publish(
                Topic::Summary,
                &TemplateSummary {
                    id: head.id,
                    height: head.height,
                    prev_hash: head.prev_hash.clone(),
                    tx_count: u32::try_from(head.tx_count).unwrap_or(u32::MAX),
                    fees: head.fees,
                    weight: head.weight,
                    coinbase_value: head.coinbase_value,
                    gbt_us: u64::try_from(outcome.elapsed.as_micros()).unwrap_or(u64::MAX),
                },
            )
        });
        match sent {
            None => {
                tracing::debug!(prev_hash = %head.prev_hash, "a newer tip was announced meanwhile; template dropped");
                return;
            }
            Some(Err(e)) => {
                tracing::debug!(error = %e, "bus publisher stopped; template not sent");
                return;
            }
            Some(Ok(())) => {}
        }
        if let Some(tip) = &pending {
            tracing::info!(height = tip.height, prev_hash = %tip.prev_hash, nbits = format_args!("{:08x}", tip.nbits), "new tip (bits from the template)");
        }
        self.published_generation = outcome.generation;
        self.last_published = Some(key);
        current.template_published = true;
        self.task.version.store(head.version, Ordering::Relaxed);
        let gbt_ms = outcome.elapsed.as_secs_f64() * 1000.0;
        if outcome.kind == Kind::Tip {
            tracing::info!(
                id = head.id,
                height = head.height,
                txs = head.tx_count,
                fees = head.fees,
                weight = head.weight,
                gbt_ms,
                "template for new tip"
            );
        } else {
            tracing::debug!(
                id = head.id,
                height = head.height,
                txs = head.tx_count,
                fees = head.fees,
                weight = head.weight,
                gbt_ms,
                "template refreshed"
            );
        }
    }
}

/// One request, on the blocking pool: RPC, parse, hex-decode, encode for the bus.
fn build(
    node: &Node,
    network: Network,
    ids: &IdClock,
    tip_detected_at_us: u64,
) -> Result<(TemplateHead, Bytes), TemplateError> {
    let answer = node.block_template()?;
    let template = gbt::template_from_gbt(answer, ids.next(), network, tip_detected_at_us)?;
    let head = TemplateHead::of(&template);
    let body = encode_body(Topic::Template, &template)?;
    Ok((head, Bytes::from(body)))
}

#[cfg(test)]
mod tests;
