//! bitcoind's ZMQ notifications: `hashblock` and `sequence` block-connected events (tip
//! candidates) and `sequence` mempool events (template refreshes), read with
//! `bitcoincore-zmq`'s async API.
//!
//! libzmq reconnects and resubscribes by itself when bitcoind restarts; the socket monitor
//! tells us when, and each link change is logged once. bitcoind numbers the messages of each
//! topic; a gap means messages were lost (e.g. the receive queue overflowed during a burst):
//! it is counted and logged, and makes up for what may be missing (a `hashblock` gap triggers
//! an immediate poll, a `sequence` gap a template refresh). A counter going back means bitcoind
//! restarted.
//!
//! Each block-connected event carries, when the stream proves it, the hash of the new block's
//! parent ([`BlockStream`]): bitcoind sends `C`/`D` in chain order, so when the block event
//! before `C(H)` was `C(P)`, with no `D`, no lost `sequence` message and no reconnection in
//! between, `P` is `H`'s parent. The tip path uses it to publish the tip without RPC.

use crate::gbt::DetectedBy;
use crate::tips::Candidate;
use bitcoincore_zmq::{Message, MonitorMessage, SequenceMessage, SocketEvent, SocketMessage};
use futures::StreamExt;
use jdc_shared::time::now_micros;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;

/// Errors of the ZMQ feed.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The subscription could not be set up (e.g. a malformed endpoint).
    #[error("cannot subscribe to bitcoind ZMQ at {endpoints}: {source}")]
    Subscribe {
        /// The endpoints.
        endpoints: String,
        /// Cause.
        #[source]
        source: bitcoincore_zmq::Error,
    },
}

/// What a sequence number says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqCheck {
    /// The first message of a topic, or the next one.
    InOrder,
    /// `missed` messages were lost before this one.
    Gap {
        /// How many.
        missed: u32,
    },
    /// The counter went back: the publisher restarted.
    Restarted,
}

/// Per-topic sequence tracking (pure).
#[derive(Debug, Default)]
pub struct SeqTracker {
    last: HashMap<&'static str, u32>,
}

impl SeqTracker {
    /// Records message `seq` of `topic`.
    pub fn observe(&mut self, topic: &'static str, seq: u32) -> SeqCheck {
        let check = match self.last.get(topic) {
            None => SeqCheck::InOrder,
            Some(&last) if seq == last.wrapping_add(1) => SeqCheck::InOrder,
            Some(&last) if seq > last => SeqCheck::Gap {
                missed: seq - last - 1,
            },
            Some(_) => SeqCheck::Restarted,
        };
        self.last.insert(topic, seq);
        check
    }
}

/// Continuity of the block events of the `sequence` topic (pure): proves a connected block's
/// parent.
#[derive(Debug, Default)]
pub struct BlockStream {
    /// The last block connected, if nothing was disconnected or lost since.
    last_connected: Option<String>,
}

impl BlockStream {
    /// Block `hash` connected: returns its parent if the stream proves it (the previous block
    /// event was that parent's connection, and nothing was lost since).
    pub fn connected(&mut self, hash: &str) -> Option<String> {
        self.last_connected.replace(hash.to_string())
    }

    /// A block was disconnected: the next connected block's parent is unknown.
    pub fn disconnected(&mut self) {
        self.last_connected = None;
    }

    /// Messages may have been lost (sequence gap, bitcoind restarted, link down): the next
    /// connected block's parent is unknown.
    pub fn lost(&mut self) {
        self.last_connected = None;
    }
}

/// Rate limit for gap warnings: a burst overflowing the receive queue loses messages again
/// and again; one line per [`GapLog::EVERY`] says how many.
#[derive(Debug, Default)]
pub struct GapLog {
    last: Option<std::time::Instant>,
    unlogged: u64,
}

impl GapLog {
    /// Minimum time between two gap warnings.
    pub const EVERY: std::time::Duration = std::time::Duration::from_secs(10);

    /// Records `missed` messages at `now`; returns the number to log now, if it is time.
    pub fn add(&mut self, missed: u64, now: std::time::Instant) -> Option<u64> {
        self.unlogged += missed;
        match self.last {
            Some(last) if now < last + Self::EVERY => None,
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.unlogged))
            }
        }
    }
}

/// Counters of the feed.
#[derive(Debug, Default)]
pub struct FeedStats {
    /// Notifications received.
    pub received: AtomicU64,
    /// Notifications missed, from sequence gaps.
    pub gaps: AtomicU64,
    /// Messages that could not be parsed.
    pub malformed: AtomicU64,
}

impl FeedStats {
    /// Copies the counters into the heartbeat counters of `publisher` (`zmq_received`,
    /// `zmq_gaps`, `zmq_malformed`).
    pub fn publish_to(&self, publisher: &jdc_shared::bus::Publisher) {
        publisher.set_counter("zmq_received", self.received.load(Ordering::Relaxed));
        publisher.set_counter("zmq_gaps", self.gaps.load(Ordering::Relaxed));
        publisher.set_counter("zmq_malformed", self.malformed.load(Ordering::Relaxed));
    }
}

/// What the feed task needs.
pub struct FeedTask {
    /// `zmqpubhashblock` endpoint.
    pub hashblock: String,
    /// `zmqpubsequence` endpoint.
    pub sequence: String,
    /// Tip candidates for the tip task.
    pub candidates: mpsc::Sender<Candidate>,
    /// Poked on mempool changes.
    pub mempool_changed: Arc<Notify>,
    /// Poked when a `hashblock` may have been lost.
    pub probe_now: Arc<Notify>,
    /// Counters.
    pub stats: Arc<FeedStats>,
}

/// Connection state of one endpoint, for logging changes once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Link {
    Connecting,
    Retrying,
    Up,
    Down,
}

/// Subscribes (fails only on a malformed endpoint; an absent publisher is retried by libzmq)
/// and returns the task reading the notifications until `shutdown`.
pub fn start(
    task: FeedTask,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = ()> + Send, FeedError> {
    let mut endpoints = vec![task.hashblock.clone()];
    if task.sequence != task.hashblock {
        endpoints.push(task.sequence.clone());
    }
    let refs: Vec<&str> = endpoints.iter().map(String::as_str).collect();
    let stream =
        bitcoincore_zmq::subscribe_async_monitor(&refs).map_err(|source| FeedError::Subscribe {
            endpoints: endpoints.join(", "),
            source,
        })?;
    tracing::info!(endpoints = %endpoints.join(", "), "subscribing to bitcoind ZMQ (hashblock, sequence)");
    Ok(run(task, stream, endpoints, shutdown))
}

async fn run(
    task: FeedTask,
    mut stream: bitcoincore_zmq::subscribe_async_monitor_stream::MessageStream,
    endpoints: Vec<String>,
    shutdown: CancellationToken,
) {
    let mut seqs = SeqTracker::default();
    let mut gap_log = GapLog::default();
    let mut blocks = BlockStream::default();
    let mut links: HashMap<String, Link> = endpoints
        .into_iter()
        .map(|e| (e, Link::Connecting))
        .collect();
    loop {
        let item = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = stream.next() => item,
        };
        // Taken before anything else: tip latency is measured from here.
        let received_at_us = now_micros();
        let Some(item) = item else {
            tracing::warn!("bitcoind ZMQ stream ended");
            return;
        };
        match item {
            Ok(SocketMessage::Message(msg)) => {
                task.stats.received.fetch_add(1, Ordering::Relaxed);
                on_message(
                    &task,
                    &mut seqs,
                    &mut gap_log,
                    &mut blocks,
                    msg,
                    received_at_us,
                );
            }
            Ok(SocketMessage::Event(ev)) => on_event(&mut links, &mut blocks, ev),
            Err(e) => {
                task.stats.malformed.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(error = %e, "skipping malformed bitcoind ZMQ message");
            }
        }
    }
}

fn on_message(
    task: &FeedTask,
    seqs: &mut SeqTracker,
    gap_log: &mut GapLog,
    blocks: &mut BlockStream,
    msg: Message,
    received_at_us: u64,
) {
    let topic = msg.topic_str();
    tracing::trace!(topic, seq = msg.sequence(), "bitcoind ZMQ message");
    let check = seqs.observe(topic, msg.sequence());
    if check != SeqCheck::InOrder && matches!(msg, Message::Sequence(..)) {
        // A lost message may have been a block event.
        blocks.lost();
    }
    match check {
        SeqCheck::InOrder => {}
        SeqCheck::Gap { missed } => {
            task.stats
                .gaps
                .fetch_add(u64::from(missed), Ordering::Relaxed);
            if let Some(missed) = gap_log.add(u64::from(missed), std::time::Instant::now()) {
                tracing::warn!(
                    topic,
                    missed,
                    total = task.stats.gaps.load(Ordering::Relaxed),
                    "bitcoind ZMQ messages lost (sequence gap)"
                );
            }
            match msg {
                Message::HashBlock(..) => task.probe_now.notify_one(),
                _ => task.mempool_changed.notify_one(),
            }
        }
        SeqCheck::Restarted => {
            tracing::info!(
                topic,
                "bitcoind ZMQ sequence restarted (bitcoind restarted)"
            )
        }
    }
    let (tip, parent) = match msg {
        Message::HashBlock(hash, _) => (hash.to_string(), None),
        // `sequence` announces a connected block before `hashblock` does: bitcoind runs the
        // other block-connected handlers (the wallet's, if one is loaded) in between, which
        // was measured here to delay `hashblock` by 10-40 ms. During a reorg or a catch-up it
        // is sent for every block, not only the final tip.
        Message::Sequence(SequenceMessage::BlockConnect { blockhash }, _) => {
            let hash = blockhash.to_string();
            let parent = blocks.connected(&hash);
            (hash, parent)
        }
        Message::Sequence(SequenceMessage::BlockDisconnect { .. }, _) => {
            // The connected blocks (or `hashblock` of the new tip) follow.
            blocks.disconnected();
            return;
        }
        Message::Sequence(
            SequenceMessage::MempoolAcceptance { .. } | SequenceMessage::MempoolRemoval { .. },
            _,
        ) => {
            task.mempool_changed.notify_one();
            return;
        }
        _ => return,
    };
    let cand = Candidate {
        hash: tip,
        detected_at_us: received_at_us,
        by: DetectedBy::Zmq,
        parent,
    };
    if task.candidates.try_send(cand).is_err() {
        tracing::warn!("tip queue full; block notification dropped (the poll backstop covers it)");
    }
}

fn on_event(links: &mut HashMap<String, Link>, blocks: &mut BlockStream, ev: MonitorMessage) {
    let endpoint = ev.source_url.as_str();
    let link = links
        .entry(ev.source_url.clone())
        .or_insert(Link::Connecting);
    let next = match ev.event {
        SocketEvent::HandshakeSucceeded => Link::Up,
        SocketEvent::Disconnected { .. } => Link::Down,
        SocketEvent::ConnectRetried { .. } if *link == Link::Connecting => Link::Retrying,
        _ => return,
    };
    if next == *link {
        return;
    }
    if next != Link::Up {
        // Messages sent while the link is down are lost.
        blocks.lost();
    }
    match next {
        Link::Up => tracing::info!(endpoint, "bitcoind ZMQ connected"),
        Link::Down => tracing::warn!(
            endpoint,
            "bitcoind ZMQ disconnected; reconnecting (the poll backstop covers tips meanwhile)"
        ),
        Link::Retrying => tracing::warn!(
            endpoint,
            "bitcoind ZMQ not reachable yet; retrying (the poll backstop covers tips meanwhile)"
        ),
        Link::Connecting => {}
    }
    *link = next;
}

#[cfg(test)]
mod tests;
