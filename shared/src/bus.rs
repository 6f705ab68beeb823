//! The message bus between jdc processes.
//!
//! Every process publishes on one ZeroMQ PUB socket (its *stream*); consumers SUB to the streams
//! and topics they need. Each message is two frames: the topic name, then an [`Envelope`]
//! encoded as a MessagePack map with named fields:
//!
//! | field | type | meaning |
//! |---|---|---|
//! | `version` | uint | bus protocol major version ([`BUS_PROTOCOL_VERSION`]) |
//! | `source` | str | publisher name (`watcher`, `selector`, `declarator`, ...) |
//! | `instance` | uint | publisher start time (unix µs): changes when the publisher restarts |
//! | `seq` | uint | per-topic sequence number of this publisher instance, from 1 |
//! | `sent_at_us` | uint | send time (unix µs) |
//! | `body` | map | the topic's payload (see [`crate::messages`]) |
//!
//! State-carrying topics ([`Topic::is_state`]) are re-sent at a steady interval, the same
//! envelope byte for byte, under the topic frame `resend:<topic>`; the heartbeat announces the
//! latest `seq` of each state topic. A subscriber takes the re-sends only while it lacks the
//! current state (at start, after a publisher restart, or when a heartbeat announces a `seq` it
//! has not seen), so a 2 MB template is not pushed to every consumer every second; consumers
//! drop duplicates by id. Gaps in `seq` are counted and logged. Unknown fields are ignored; an
//! envelope of another major version is refused and counted as malformed.

use bytes::Bytes;
use serde::{de::DeserializeOwned, Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketOptions, SocketRecv, SocketSend, ZmqMessage};

use crate::messages::Heartbeat;
use crate::time::now_micros;

/// Major version of the bus protocol. Consumers refuse envelopes of another major version.
pub const BUS_PROTOCOL_VERSION: u16 = 1;

/// Every topic of the bus, in one place.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Topic {
    /// [`crate::messages::Tip`] (watcher).
    Tip,
    /// [`crate::messages::Template`] (watcher).
    Template,
    /// [`crate::messages::TemplateSummary`] (watcher): a few bytes per template, for monitors.
    Summary,
    /// [`crate::messages::Selection`] (selector).
    Selection,
    /// [`crate::messages::JobSent`] (declarator).
    Job,
    /// [`crate::messages::ShareResult`] (declarator).
    Share,
    /// [`crate::messages::BlockEvent`] (declarator).
    Block,
    /// [`crate::messages::Heartbeat`] (every process).
    Heartbeat,
    /// [`crate::messages::Event`] (every process).
    Event,
    /// [`crate::messages::UpstreamState`] (declarator): which pool we mine for, or solo.
    Upstream,
    /// [`crate::messages::Declaration`] (declarator): a job declared to the pool, and its fate.
    Declaration,
    /// [`crate::messages::Devices`] (declarator): the device channels open now.
    Devices,
}

impl Topic {
    /// All topics.
    pub const ALL: [Topic; 12] = [
        Topic::Tip,
        Topic::Template,
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

    /// The topic frame as sent on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Topic::Tip => "tip",
            Topic::Template => "template",
            Topic::Summary => "summary",
            Topic::Selection => "selection",
            Topic::Job => "job",
            Topic::Share => "share",
            Topic::Block => "block",
            Topic::Heartbeat => "heartbeat",
            Topic::Event => "event",
            Topic::Upstream => "upstream",
            Topic::Declaration => "declaration",
            Topic::Devices => "devices",
        }
    }

    /// The topic frame of re-sent state (`resend:<topic>`): consumers that already hold the
    /// current state leave it unsubscribed, so the publisher sends them nothing.
    pub fn resend_str(self) -> &'static str {
        match self {
            Topic::Tip => "resend:tip",
            Topic::Template => "resend:template",
            Topic::Summary => "resend:summary",
            Topic::Selection => "resend:selection",
            Topic::Job => "resend:job",
            Topic::Share => "resend:share",
            Topic::Block => "resend:block",
            Topic::Heartbeat => "resend:heartbeat",
            Topic::Event => "resend:event",
            Topic::Upstream => "resend:upstream",
            Topic::Declaration => "resend:declaration",
            Topic::Devices => "resend:devices",
        }
    }

    /// Parses a topic frame.
    pub fn from_wire(bytes: &[u8]) -> Option<Topic> {
        Topic::ALL
            .into_iter()
            .find(|t| t.as_str().as_bytes() == bytes)
    }

    /// Parses a topic frame, live or re-sent: `(topic, resent)`.
    pub fn from_wire_any(bytes: &[u8]) -> Option<(Topic, bool)> {
        Topic::from_wire(bytes).map(|t| (t, false)).or_else(|| {
            Topic::ALL
                .into_iter()
                .find(|t| t.resend_str().as_bytes() == bytes)
                .map(|t| (t, true))
        })
    }

    /// Topics whose latest message is the current state, re-sent periodically.
    pub fn is_state(self) -> bool {
        matches!(
            self,
            Topic::Tip
                | Topic::Template
                | Topic::Summary
                | Topic::Selection
                | Topic::Upstream
                | Topic::Devices
        )
    }
}

/// Errors of the bus.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// Binding the PUB socket failed.
    #[error("cannot bind bus endpoint {endpoint}: {source}")]
    Bind {
        /// The endpoint.
        endpoint: String,
        /// Cause.
        #[source]
        source: zeromq::ZmqError,
    },
    /// A payload could not be encoded.
    #[error("cannot encode {topic} message: {source}")]
    Encode {
        /// The topic.
        topic: &'static str,
        /// Cause.
        #[source]
        source: rmp_serde::encode::Error,
    },
    /// A message could not be decoded.
    #[error("malformed bus message: {0}")]
    Malformed(String),
    /// The envelope has a major version we do not speak.
    #[error(
        "bus protocol version {got} is not supported (this build speaks {BUS_PROTOCOL_VERSION})"
    )]
    Version {
        /// Version received.
        got: u16,
    },
    /// The publisher task has stopped.
    #[error("the bus publisher has stopped")]
    Closed,
}

/// The envelope around every bus message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope<T> {
    /// Bus protocol major version.
    pub version: u16,
    /// Publisher name.
    pub source: String,
    /// Publisher instance (its start time, unix µs).
    pub instance: u64,
    /// Per-topic sequence number, from 1.
    pub seq: u64,
    /// Send time, unix µs.
    pub sent_at_us: u64,
    /// Payload.
    pub body: T,
}

/// Encodes an envelope around an already MessagePack-encoded body (a named-field map).
fn encode_envelope(source: &str, instance: u64, seq: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len() + 96);
    // Writing into a Vec cannot fail.
    let _ = rmp::encode::write_map_len(&mut out, 6);
    let _ = rmp::encode::write_str(&mut out, "version");
    let _ = rmp::encode::write_uint(&mut out, u64::from(BUS_PROTOCOL_VERSION));
    let _ = rmp::encode::write_str(&mut out, "source");
    let _ = rmp::encode::write_str(&mut out, source);
    let _ = rmp::encode::write_str(&mut out, "instance");
    let _ = rmp::encode::write_uint(&mut out, instance);
    let _ = rmp::encode::write_str(&mut out, "seq");
    let _ = rmp::encode::write_uint(&mut out, seq);
    let _ = rmp::encode::write_str(&mut out, "sent_at_us");
    let _ = rmp::encode::write_uint(&mut out, now_micros());
    let _ = rmp::encode::write_str(&mut out, "body");
    out.extend_from_slice(body);
    out
}

/// An envelope around an encoded body, as a publisher would send it (for benches and tests).
#[doc(hidden)]
pub fn test_support_envelope(body: &[u8]) -> Vec<u8> {
    encode_envelope("test", 1, 1, body)
}

/// Encodes a payload as a MessagePack map with named fields.
pub fn encode_body<T: Serialize>(topic: Topic, body: &T) -> Result<Vec<u8>, BusError> {
    rmp_serde::to_vec_named(body).map_err(|source| BusError::Encode {
        topic: topic.as_str(),
        source,
    })
}

/// Decodes a whole envelope, checking its version.
pub fn decode_envelope<T: DeserializeOwned>(bytes: &[u8]) -> Result<Envelope<T>, BusError> {
    let header: Envelope<serde::de::IgnoredAny> =
        rmp_serde::from_slice(bytes).map_err(|e| BusError::Malformed(e.to_string()))?;
    if header.version != BUS_PROTOCOL_VERSION {
        return Err(BusError::Version {
            got: header.version,
        });
    }
    rmp_serde::from_slice(bytes).map_err(|e| BusError::Malformed(e.to_string()))
}

/// Counters every bus user keeps; shared between its tasks.
#[derive(Debug, Default)]
pub struct BusStats {
    /// Messages received (well-formed or not).
    pub received: AtomicU64,
    /// Messages refused as malformed or of an unknown version.
    pub malformed: AtomicU64,
    /// Messages missed, as counted from sequence gaps.
    pub gaps: AtomicU64,
    /// Publisher restarts seen (instance changes).
    pub restarts: AtomicU64,
}

impl BusStats {
    fn bump(counter: &AtomicU64, by: u64) {
        counter.fetch_add(by, Ordering::Relaxed);
    }
    /// Counts one malformed message.
    pub fn count_malformed(&self) {
        Self::bump(&self.malformed, 1);
    }
    /// Snapshot of (received, malformed, gaps, restarts).
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        (
            self.received.load(Ordering::Relaxed),
            self.malformed.load(Ordering::Relaxed),
            self.gaps.load(Ordering::Relaxed),
            self.restarts.load(Ordering::Relaxed),
        )
    }
}

// === Publisher ===

struct Outgoing {
    topic: Topic,
    body: Bytes,
}

/// Handle to a process's PUB socket. Cheap to clone; publishing never blocks.
#[derive(Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Outgoing>,
    state: Arc<watch::Sender<String>>,
    counters: Arc<watch::Sender<BTreeMap<&'static str, u64>>>,
}

/// Settings of a publisher.
#[derive(Debug, Clone)]
pub struct PublisherOptions {
    /// Publisher name written in every envelope.
    pub source: String,
    /// How often state topics are re-sent and a heartbeat is published.
    pub resend_interval: Duration,
}

impl Publisher {
    /// Binds the PUB socket on `endpoint` (e.g. `tcp://127.0.0.1:28400`) and starts the task
    /// that sends, re-sends state and publishes heartbeats until `shutdown`.
    pub async fn bind(
        endpoint: &str,
        options: PublisherOptions,
        stats: Arc<BusStats>,
        shutdown: CancellationToken,
    ) -> Result<(Publisher, tokio::task::JoinHandle<()>), BusError> {
        let mut socket = zeromq::PubSocket::new();
        socket
            .bind(endpoint)
            .await
            .map_err(|source| BusError::Bind {
                endpoint: endpoint.to_string(),
                source,
            })?;
        tracing::info!(endpoint, source = %options.source, "bus publisher bound");
        let (tx, rx) = mpsc::unbounded_channel();
        let (state_tx, state_rx) = watch::channel("starting".to_string());
        let (counters_tx, counters_rx) = watch::channel(BTreeMap::new());
        let task = tokio::spawn(publisher_task(
            socket,
            rx,
            HeartbeatSources {
                state: state_rx,
                counters: counters_rx,
            },
            options,
            stats,
            shutdown,
        ));
        Ok((
            Publisher {
                tx,
                state: Arc::new(state_tx),
                counters: Arc::new(counters_tx),
            },
            task,
        ))
    }

    /// Publishes one message.
    pub fn publish<T: Serialize>(&self, topic: Topic, body: &T) -> Result<(), BusError> {
        let body = Bytes::from(encode_body(topic, body)?);
        self.publish_encoded(topic, body)
    }

    /// Publishes a body already encoded with [`encode_body`].
    pub fn publish_encoded(&self, topic: Topic, body: Bytes) -> Result<(), BusError> {
        self.tx
            .send(Outgoing { topic, body })
            .map_err(|_| BusError::Closed)
    }

    /// Sets a counter carried by heartbeats (`counters` map, e.g. `zmq_gaps`): monotonic
    /// totals of this process that monitors read.
    pub fn set_counter(&self, name: &'static str, value: u64) {
        self.counters
            .send_if_modified(|c| c.insert(name, value) != Some(value));
    }

    /// Adds `n` to a monotonic total carried by heartbeats (atomically: concurrent callers
    /// never publish a smaller total after a larger one).
    pub fn add_to_counter(&self, name: &'static str, n: u64) {
        self.counters.send_modify(|c| {
            let total = c.entry(name).or_insert(0);
            *total = total.saturating_add(n);
        });
    }

    /// Sets the state string carried by heartbeats (e.g. `ok`, `waiting-for-bitcoind`).
    pub fn set_state(&self, state: &str) {
        self.state.send_if_modified(|s| {
            if s == state {
                false
            } else {
                *s = state.to_string();
                true
            }
        });
    }
}

/// What heartbeats carry besides the bus counters.
struct HeartbeatSources {
    state: watch::Receiver<String>,
    counters: watch::Receiver<BTreeMap<&'static str, u64>>,
}

async fn publisher_task(
    mut socket: zeromq::PubSocket,
    mut rx: mpsc::UnboundedReceiver<Outgoing>,
    sources: HeartbeatSources,
    options: PublisherOptions,
    stats: Arc<BusStats>,
    shutdown: CancellationToken,
) {
    let instance = now_micros();
    let mut seqs: HashMap<Topic, u64> = HashMap::new();
    // Latest envelope of each state topic with its sequence number, re-sent as is.
    let mut latest_state: BTreeMap<Topic, (u64, Bytes)> = BTreeMap::new();
    let mut tick = tokio::time::interval(options.resend_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut envelope = |topic: Topic, body: &[u8]| -> (u64, Bytes) {
        let seq = seqs.entry(topic).or_insert(0);
        *seq += 1;
        (
            *seq,
            Bytes::from(encode_envelope(&options.source, instance, *seq, body)),
        )
    };
    async fn send(socket: &mut zeromq::PubSocket, frame: &'static str, env: Bytes) {
        let Ok(msg) = ZmqMessage::try_from(vec![Bytes::from_static(frame.as_bytes()), env]) else {
            return;
        };
        if let Err(e) = socket.send(msg).await {
            tracing::warn!(error = %e, "bus send failed");
        }
    }
    loop {
        tokio::select! {
            biased;
            msg = rx.recv() => {
                let Some(msg) = msg else { break };
                let (seq, env) = envelope(msg.topic, &msg.body);
                if msg.topic.is_state() {
                    latest_state.insert(msg.topic, (seq, env.clone()));
                }
                send(&mut socket, msg.topic.as_str(), env).await;
            }
            _ = tick.tick() => {
                let (received, malformed, gaps, _) = stats.snapshot();
                let hb = HeartbeatWire {
                    started_at_us: instance,
                    version: env!("CARGO_PKG_VERSION"),
                    state: sources.state.borrow().clone(),
                    counters: sources.counters.borrow().clone(),
                    bus_received: received,
                    bus_malformed: malformed,
                    bus_gaps: gaps,
                    state_seqs: latest_state
                        .iter()
                        .map(|(topic, (seq, _))| (topic.as_str(), *seq))
                        .collect(),
                };
                if let Ok(body) = rmp_serde::to_vec_named(&hb) {
                    let (_, env) = envelope(Topic::Heartbeat, &body);
                    send(&mut socket, Topic::Heartbeat.as_str(), env).await;
                }
                for (topic, (_, env)) in &latest_state {
                    send(&mut socket, topic.resend_str(), env.clone()).await;
                }
            }
            _ = shutdown.cancelled() => break,
        }
    }
    // Flush what is queued so the last events reach their consumers.
    while let Ok(msg) = rx.try_recv() {
        let (_, env) = envelope(msg.topic, &msg.body);
        send(&mut socket, msg.topic.as_str(), env).await;
    }
    let _ = socket.close().await;
}

/// Heartbeat as written by the publisher task (a superset of [`Heartbeat`]).
#[derive(Serialize)]
struct HeartbeatWire {
    started_at_us: u64,
    version: &'static str,
    state: String,
    counters: BTreeMap<&'static str, u64>,
    bus_received: u64,
    bus_malformed: u64,
    bus_gaps: u64,
    /// Sequence number of the latest message of each state topic, so a subscriber can tell
    /// whether it missed one and must take the re-sends.
    state_seqs: BTreeMap<&'static str, u64>,
}

/// The part of a heartbeat the subscriber's state tracking reads.
#[derive(Debug, Default, Deserialize)]
struct HeartbeatStateSeqs {
    #[serde(default)]
    state_seqs: HashMap<String, u64>,
}

/// Decoded heartbeat including the publisher's bus counters.
#[derive(Debug, Clone, Deserialize)]
pub struct HeartbeatWithStats {
    /// Common heartbeat fields.
    #[serde(flatten)]
    pub heartbeat: Heartbeat,
    /// Messages the publisher received from the bus.
    #[serde(default)]
    pub bus_received: u64,
    /// Malformed messages the publisher refused.
    #[serde(default)]
    pub bus_malformed: u64,
    /// Sequence gaps the publisher saw.
    #[serde(default)]
    pub bus_gaps: u64,
}

// === Subscriber ===

/// One message received from the bus, its envelope header already checked.
#[derive(Debug, Clone)]
pub struct Received {
    /// Label of the stream it came from (the configured stream name).
    pub stream: String,
    /// Its topic.
    pub topic: Topic,
    /// Publisher name from the envelope.
    pub source: String,
    /// Send time from the envelope (unix µs).
    pub sent_at_us: u64,
    /// Whether it came as a re-send of the current state (`resend:<topic>`).
    pub resent: bool,
    /// The whole envelope, to decode with [`Received::decode`].
    pub bytes: Bytes,
}

impl Received {
    /// The body's `id` without decoding the body, when the envelope has the layout jdc
    /// publishers write (header fields first, body last) and `id` is the body's first field
    /// (as in `template` and `selection`). Lets a consumer drop re-sent state cheaply.
    pub fn peek_id(&self) -> Option<u64> {
        let mut rd: &[u8] = &self.bytes;
        let len = rmp::decode::read_map_len(&mut rd).ok()?;
        for i in 0..len {
            let mut key_buf = [0u8; 16];
            let key = rmp::decode::read_str(&mut rd, &mut key_buf).ok()?;
            match key {
                "body" if i + 1 == len => {
                    rmp::decode::read_map_len(&mut rd).ok()?;
                    let mut k = [0u8; 8];
                    if rmp::decode::read_str(&mut rd, &mut k).ok()? != "id" {
                        return None;
                    }
                    return rmp::decode::read_int::<u64, _>(&mut rd).ok();
                }
                "source" => {
                    let mut buf = [0u8; 255];
                    rmp::decode::read_str(&mut rd, &mut buf).ok()?;
                }
                "version" | "instance" | "seq" | "sent_at_us" => {
                    rmp::decode::read_int::<u64, _>(&mut rd).ok()?;
                }
                _ => return None,
            }
        }
        None
    }

    /// Decodes the body as `T`. On failure the caller should count the message as malformed
    /// ([`BusStats::count_malformed`]) and skip it.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, BusError> {
        rmp_serde::from_slice::<Envelope<T>>(&self.bytes)
            .map(|e| e.body)
            .map_err(|e| {
                BusError::Malformed(format!(
                    "{} message from stream {}: {e}",
                    self.topic.as_str(),
                    self.stream
                ))
            })
    }
}

/// What to subscribe to.
#[derive(Debug, Clone)]
pub struct SubscribeOptions {
    /// `(stream label, endpoint)` pairs, e.g. `("watcher", "tcp://127.0.0.1:28400")`.
    pub streams: Vec<(String, String)>,
    /// Topics wanted (heartbeats are always received for the watchdog, but only passed on if
    /// listed here).
    pub topics: Vec<Topic>,
    /// Reconnect a stream from which nothing (not even a heartbeat) arrived for this long.
    pub silence_timeout: Duration,
}

/// Subscribes to the given streams. Each stream gets its own SUB socket and task, which
/// reconnects when the publisher restarts or goes silent. Messages arrive on the returned
/// receiver in per-stream order.
pub fn subscribe(
    options: SubscribeOptions,
    stats: Arc<BusStats>,
    shutdown: CancellationToken,
) -> (mpsc::Receiver<Received>, Vec<tokio::task::JoinHandle<()>>) {
    let (tx, rx) = mpsc::channel(4096);
    let tasks = options
        .streams
        .iter()
        .map(|(label, endpoint)| {
            tokio::spawn(stream_task(
                label.clone(),
                endpoint.clone(),
                options.topics.clone(),
                options.silence_timeout,
                tx.clone(),
                stats.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    (rx, tasks)
}

/// Sequence tracking per (publisher instance, topic), and which state topics this
/// subscriber still needs re-sent.
#[derive(Default)]
struct SeqTracker {
    instance: u64,
    /// Last live `seq` per topic (gap detection).
    last: HashMap<Topic, u64>,
    /// Newest `seq` held per state topic, live or re-sent.
    held: HashMap<Topic, u64>,
    /// Latest `seq` per state topic announced by the publisher's heartbeat.
    announced: HashMap<Topic, u64>,
}

impl SeqTracker {
    /// Returns (missed messages, publisher restarted).
    fn observe(&mut self, instance: u64, topic: Topic, seq: u64, resent: bool) -> (u64, bool) {
        let mut restarted = false;
        if instance != self.instance {
            restarted = self.instance != 0;
            self.instance = instance;
            self.last.clear();
            self.held.clear();
            self.announced.clear();
        }
        if topic.is_state() {
            let held = self.held.entry(topic).or_insert(seq);
            *held = (*held).max(seq);
        }
        if resent {
            // Re-sends repeat an earlier `seq`; they say nothing about gaps.
            return (0, restarted);
        }
        let missed = match self.last.get(&topic) {
            // The first message seen from an instance tells nothing about gaps.
            None => 0,
            Some(&last) if seq > last + 1 => seq - last - 1,
            Some(_) => 0,
        };
        self.last.insert(topic, seq);
        (missed, restarted)
    }

    /// Records the state `seq`s a heartbeat of the current instance announces.
    fn announce(&mut self, seqs: &HashMap<String, u64>) {
        for (name, seq) in seqs {
            if let Some(topic) = Topic::from_wire(name.as_bytes()) {
                self.announced.insert(topic, *seq);
            }
        }
    }

    /// Whether re-sends of `topic` are needed: nothing held yet, or older than announced.
    fn wants_resend(&self, topic: Topic) -> bool {
        match (self.held.get(&topic), self.announced.get(&topic)) {
            (None, _) => true,
            (Some(held), Some(announced)) => held < announced,
            (Some(_), None) => false,
        }
    }
}

/// Subscribes to or leaves the re-send topics so that exactly the state topics this
/// subscriber lacks are re-sent to it.
async fn sync_resend_subscriptions(
    socket: &mut zeromq::SubSocket,
    label: &str,
    state_topics: &[Topic],
    tracker: &SeqTracker,
    subscribed: &mut Vec<Topic>,
) {
    for &topic in state_topics {
        let want = tracker.wants_resend(topic);
        let has = subscribed.contains(&topic);
        let result = if want && !has {
            subscribed.push(topic);
            socket.subscribe(topic.resend_str()).await
        } else if !want && has {
            subscribed.retain(|t| *t != topic);
            socket.unsubscribe(topic.resend_str()).await
        } else {
            Ok(())
        };
        if let Err(e) = result {
            tracing::warn!(stream = %label, topic = topic.as_str(), error = %e, "bus re-send subscription change failed");
        }
    }
}

async fn stream_task(
    label: String,
    endpoint: String,
    topics: Vec<Topic>,
    silence_timeout: Duration,
    tx: mpsc::Sender<Received>,
    stats: Arc<BusStats>,
    shutdown: CancellationToken,
) {
    let mut tracker = SeqTracker::default();
    let state_topics: Vec<Topic> = topics.iter().copied().filter(|t| t.is_state()).collect();
    let mut connected_once = false;
    let mut warned_down = false;
    while !shutdown.is_cancelled() {
        let mut opts = SocketOptions::default();
        opts.connect_timeout(Duration::from_millis(500));
        let mut socket = zeromq::SubSocket::with_options(opts);
        let mut ok = true;
        for t in topics.iter().copied().chain([Topic::Heartbeat]) {
            if let Err(e) = socket.subscribe(t.as_str()).await {
                tracing::warn!(stream = %label, error = %e, "bus subscribe failed");
                ok = false;
            }
        }
        // After a reconnect anything may have been missed: take the re-sends until a
        // heartbeat shows the state is current.
        tracker.held.clear();
        let mut resend_subscribed = Vec::new();
        sync_resend_subscriptions(
            &mut socket,
            &label,
            &state_topics,
            &tracker,
            &mut resend_subscribed,
        )
        .await;
        let connected = tokio::select! {
            r = socket.connect(&endpoint) => r,
            _ = shutdown.cancelled() => return,
        };
        if let Err(e) = connected {
            if !warned_down {
                tracing::warn!(stream = %label, %endpoint, error = %e, "bus stream not reachable yet; retrying");
                warned_down = true;
            }
            ok = false;
        }
        if !ok {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                _ = shutdown.cancelled() => return,
            }
        }
        if warned_down || connected_once {
            tracing::info!(stream = %label, %endpoint, "bus stream connected");
        } else {
            tracing::debug!(stream = %label, %endpoint, "bus stream connected");
        }
        connected_once = true;
        warned_down = false;
        loop {
            let msg = tokio::select! {
                r = tokio::time::timeout(silence_timeout, socket.recv()) => r,
                _ = shutdown.cancelled() => return,
            };
            let msg = match msg {
                Ok(Ok(m)) => m,
                Ok(Err(e)) => {
                    tracing::warn!(stream = %label, error = %e, "bus receive failed; reconnecting");
                    break;
                }
                Err(_) => {
                    tracing::warn!(stream = %label, silent_for = ?silence_timeout, "bus stream silent; reconnecting");
                    break;
                }
            };
            stats.received.fetch_add(1, Ordering::Relaxed);
            let Some(received) = check_message(&label, msg, &mut tracker, &stats) else {
                continue;
            };
            if received.topic == Topic::Heartbeat {
                if let Ok(hb) = received.decode::<HeartbeatStateSeqs>() {
                    tracker.announce(&hb.state_seqs);
                }
            }
            if received.topic == Topic::Heartbeat || received.topic.is_state() {
                sync_resend_subscriptions(
                    &mut socket,
                    &label,
                    &state_topics,
                    &tracker,
                    &mut resend_subscribed,
                )
                .await;
            }
            if received.topic == Topic::Heartbeat && !topics.contains(&Topic::Heartbeat) {
                continue;
            }
            if tx.send(received).await.is_err() {
                return;
            }
        }
    }
}

/// The envelope fields besides the body.
struct EnvelopeHeader {
    version: u16,
    source: String,
    instance: u64,
    seq: u64,
    sent_at_us: u64,
}

/// Reads the envelope header without walking the body, when the body is the last field (as
/// every jdc publisher writes it) and the header fields are the known ones; `None` otherwise.
/// The body itself is checked when the consumer decodes it.
fn read_header(bytes: &[u8]) -> Option<EnvelopeHeader> {
    let mut rd = bytes;
    let len = rmp::decode::read_map_len(&mut rd).ok()?;
    let (mut version, mut source, mut instance, mut seq, mut sent_at_us) =
        (None, None, None, None, None);
    for i in 0..len {
        let mut key_buf = [0u8; 16];
        let key = rmp::decode::read_str(&mut rd, &mut key_buf).ok()?;
        match key {
            "body" if i + 1 == len => break,
            "version" => version = rmp::decode::read_int::<u16, _>(&mut rd).ok(),
            "instance" => instance = rmp::decode::read_int::<u64, _>(&mut rd).ok(),
            "seq" => seq = rmp::decode::read_int::<u64, _>(&mut rd).ok(),
            "sent_at_us" => sent_at_us = rmp::decode::read_int::<u64, _>(&mut rd).ok(),
            "source" => {
                let mut buf = [0u8; 255];
                source = rmp::decode::read_str(&mut rd, &mut buf)
                    .ok()
                    .map(str::to_string);
            }
            _ => return None,
        }
    }
    Some(EnvelopeHeader {
        version: version?,
        source: source?,
        instance: instance?,
        seq: seq?,
        sent_at_us: sent_at_us?,
    })
}

fn check_message(
    label: &str,
    msg: ZmqMessage,
    tracker: &mut SeqTracker,
    stats: &BusStats,
) -> Option<Received> {
    let frames = msg.into_vec();
    let malformed = |why: String| {
        stats.count_malformed();
        tracing::warn!(stream = %label, "skipping malformed bus message: {why}");
        None
    };
    let [topic, bytes] = <[Bytes; 2]>::try_from(frames).ok().or_else(|| {
        stats.count_malformed();
        tracing::warn!(stream = %label, "skipping malformed bus message: expected 2 frames");
        None
    })?;
    let Some((topic_parsed, resent)) = Topic::from_wire_any(&topic) else {
        return malformed(format!(
            "unknown topic {:?}",
            String::from_utf8_lossy(&topic)
        ));
    };
    let header = match read_header(&bytes) {
        Some(h) => h,
        // Not in the layout our publishers write (body last): decode generically.
        None => match rmp_serde::from_slice::<Envelope<serde::de::IgnoredAny>>(&bytes) {
            Ok(h) => EnvelopeHeader {
                version: h.version,
                source: h.source,
                instance: h.instance,
                seq: h.seq,
                sent_at_us: h.sent_at_us,
            },
            Err(e) => return malformed(format!("{} envelope: {e}", topic_parsed.as_str())),
        },
    };
    if header.version != BUS_PROTOCOL_VERSION {
        return malformed(format!(
            "{} envelope has bus protocol version {} (this build speaks {BUS_PROTOCOL_VERSION})",
            topic_parsed.as_str(),
            header.version
        ));
    }
    let (missed, restarted) = tracker.observe(header.instance, topic_parsed, header.seq, resent);
    if restarted {
        stats.restarts.fetch_add(1, Ordering::Relaxed);
        tracing::info!(stream = %label, source = %header.source, "publisher restarted");
    }
    if missed > 0 {
        stats.gaps.fetch_add(missed, Ordering::Relaxed);
        tracing::warn!(stream = %label, topic = topic_parsed.as_str(), missed, "bus sequence gap");
    }
    Some(Received {
        stream: label.to_string(),
        topic: topic_parsed,
        source: header.source,
        sent_at_us: header.sent_at_us,
        resent,
        bytes,
    })
}

/// Drops re-sent state messages: remembers the last id seen per topic.
#[derive(Debug, Default)]
pub struct Dedup {
    last: HashMap<Topic, u64>,
}

impl Dedup {
    /// True the first time `(topic, id)` is seen after a different id.
    pub fn is_new(&mut self, topic: Topic, id: u64) -> bool {
        self.last.insert(topic, id) != Some(id)
    }
}

#[cfg(test)]
mod tests;
