//! The dashboard's model: every decoded bus message folded into what the screen shows. Pure:
//! no sockets, no terminal, no clock (the current time is passed in), so a test can replay
//! recorded messages and read the result.
//!
//! Re-sent state (`tip`, `summary`, `selection`, `upstream`, `devices`, re-sent every second
//! by their publishers) is applied once: a tip by its previous-block hash, the others by their
//! `id`.
//!
//! Devices: the declarator's `devices` state lists the channels open now, so a device shows
//! from the moment it connects (before any share) and goes when it disconnects; share verdicts
//! add counts and the hashrate estimate. From a declarator too old to publish `devices`, the
//! channels are only those seen in shares.
//! Ages count from the envelope's `sent_at_us` (a re-send is the original envelope, so a
//! late start still shows how old the state really is), never later than arrival.
//! Liveness counts from the arrival of heartbeats.

use std::collections::{BTreeMap, VecDeque};

use jdc_shared::bus::{BusError, Dedup, Received, Topic};
use jdc_shared::messages::{
    BlockEvent, BlockStage, Declaration, Device, Devices, Event, Heartbeat, JobKind, JobSent,
    ShareResult, TemplateSummary, Tip, UpstreamState,
};

/// The processes (bus streams) watched, in display order.
pub const PROCESSES: [&str; 3] = ["watcher", "selector", "declarator"];

/// Recent events kept.
pub const MAX_EVENTS: usize = 200;
/// Recent declared jobs kept.
pub const MAX_DECLARATIONS: usize = 32;
/// Recent blocks kept.
pub const MAX_BLOCKS: usize = 16;
/// Channels kept; past this the one whose last share is oldest is forgotten (of a `devices`
/// state, the first this many by channel id are shown).
pub const MAX_CHANNELS: usize = 512;
/// Accepted shares kept per channel for the hashrate window.
const MAX_WINDOW_SHARES: usize = 100_000;

/// Settings of the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// A process whose last heartbeat is older than this is down, microseconds.
    pub down_after_us: u64,
    /// Sliding window of the hashrate estimate, microseconds.
    pub hashrate_window_us: u64,
    /// Upstreams in this dashboard's configuration (`[[declarator.upstream]]`). With none,
    /// the declarator mines solo and publishes no upstream state.
    pub configured_upstreams: usize,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            down_after_us: 3_000_000,
            hashrate_window_us: 120_000_000,
            configured_upstreams: 0,
        }
    }
}

pub use jdc_shared::monitor::{Message, SelectionSummary, ShareWindow, HASHES_PER_DIFFICULTY};

/// A value and when it was sent (unix µs, never later than its arrival).
#[derive(Debug, Clone, PartialEq)]
pub struct Stamped<T> {
    /// The value.
    pub value: T,
    /// When it was sent.
    pub at_us: u64,
}

/// Whether a process is alive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Never heard from since the dashboard started.
    Waiting,
    /// Its last heartbeat is recent.
    Up,
    /// Its last heartbeat is older than [`Settings::down_after_us`].
    Down,
}

impl Liveness {
    /// Display label.
    pub fn as_str(self) -> &'static str {
        match self {
            Liveness::Waiting => "waiting",
            Liveness::Up => "up",
            Liveness::Down => "down",
        }
    }
}

/// What is known of one process.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Process {
    /// Its name (bus stream).
    pub name: String,
    /// Its last heartbeat, if any.
    pub heartbeat: Option<Heartbeat>,
    /// Arrival of its last heartbeat (unix µs).
    pub last_heartbeat_us: Option<u64>,
    /// Arrival of its last message of any topic (unix µs).
    pub last_message_us: Option<u64>,
    /// Restarts seen (its heartbeat's start time changed).
    pub restarts: u64,
    /// Messages received from it.
    pub messages: u64,
}

impl Process {
    /// Liveness at `now_us`.
    pub fn liveness(&self, now_us: u64, down_after_us: u64) -> Liveness {
        match self.last_heartbeat_us {
            None => Liveness::Waiting,
            Some(t) if now_us.saturating_sub(t) <= down_after_us => Liveness::Up,
            Some(_) => Liveness::Down,
        }
    }
}

/// One downstream channel: open (in the declarator's `devices` state) and its share verdicts.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Channel {
    /// `standard`, `extended` or `sv1`.
    pub kind: String,
    /// What the declarator's `devices` state says of it (`None`: known only from shares).
    pub device: Option<Device>,
    /// Accepted shares.
    pub accepted: u64,
    /// Rejected shares.
    pub rejected: u64,
    /// Reason of the last rejected share.
    pub last_reject: String,
    /// Difficulty of the last share.
    pub difficulty: f64,
    /// Arrival of its last share (unix µs).
    pub last_share_us: u64,
    /// Accepted shares of the hashrate window.
    window: ShareWindow,
}

/// A block of ours, at its latest stage.
#[derive(Debug, Clone, PartialEq)]
pub struct BlockRow {
    /// Height.
    pub height: u32,
    /// Hash (RPC hex).
    pub hash: String,
    /// Latest stage.
    pub stage: BlockStage,
    /// Handed to `submitblock` (false: it could not be, `reason` says why).
    pub submitted: bool,
    /// `rejected` because `submitblock` did not answer, not by bitcoind's verdict.
    pub failed: bool,
    /// `submitblock`'s answer when rejected, or why the block was not submitted.
    pub reason: String,
    /// When the latest stage was sent.
    pub at_us: u64,
}

impl BlockRow {
    /// The stage as shown: `submitted` (waiting for bitcoind's verdict), `not submitted`,
    /// `accepted`, `rejected` (by bitcoind) or `failed` (`submitblock` did not answer).
    pub fn label(&self) -> &'static str {
        match (self.stage, self.submitted, self.failed) {
            (BlockStage::Found, true, _) => "submitted",
            (BlockStage::Found, false, _) => "not submitted",
            (BlockStage::Accepted, _, _) => "accepted",
            (BlockStage::Rejected, _, true) => "failed",
            (BlockStage::Rejected, _, false) => "rejected",
        }
    }
}

/// One job declared to a pool, at its latest stage.
#[derive(Debug, Clone, PartialEq)]
pub struct DeclarationRow {
    /// Rank of the upstream.
    pub upstream: u32,
    /// Our template id of the job.
    pub template_id: u64,
    /// `declared`, `accepted` or `rejected`.
    pub stage: String,
    /// Error code when rejected.
    pub reason: String,
    /// Transactions in the job.
    pub tx_count: u32,
    /// From the tip's detection to this stage, µs (0 if unknown).
    pub since_tip_us: u64,
    /// When the latest stage was sent.
    pub at_us: u64,
}

/// One operator event.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRow {
    /// Process that published it.
    pub process: String,
    /// The event.
    pub event: Event,
    /// When it was sent.
    pub at_us: u64,
}

/// Counts per stage.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StageCounts {
    /// Found blocks / declared jobs.
    pub first: u64,
    /// Accepted.
    pub accepted: u64,
    /// Rejected.
    pub rejected: u64,
    /// Blocks only: `submitblock` did not answer (not counted as rejected).
    pub failed: u64,
}

/// Bus counters of this dashboard's own subscriber.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BusCounters {
    /// Messages received.
    pub received: u64,
    /// Messages refused as malformed.
    pub malformed: u64,
    /// Messages missed (sequence gaps).
    pub gaps: u64,
    /// Publisher restarts seen.
    pub restarts: u64,
}

/// Everything the dashboard shows.
#[derive(Debug)]
pub struct Model {
    /// Settings.
    pub settings: Settings,
    /// When the dashboard started (unix µs): the hashrate window never reaches before it.
    pub started_us: u64,
    dedup: Dedup,
    last_tip_hash: Option<String>,
    /// Latest tip.
    pub tip: Option<Stamped<Tip>>,
    /// Distinct tips seen.
    pub tips: u64,
    /// Latest template summary.
    pub template: Option<Stamped<TemplateSummary>>,
    /// Latest selection.
    pub selection: Option<Stamped<SelectionSummary>>,
    /// Latest job sent to the devices.
    pub job: Option<Stamped<JobSent>>,
    /// Jobs sent: (empty, full).
    pub jobs: (u64, u64),
    /// Latest upstream state.
    pub upstream: Option<Stamped<UpstreamState>>,
    /// Recent declared jobs, newest last.
    pub declarations: VecDeque<DeclarationRow>,
    /// Declaration messages by stage (declared, accepted, rejected).
    pub declaration_counts: StageCounts,
    /// Downstream channels by id: the open ones once the declarator's `devices` state is
    /// known, plus any whose shares arrived first.
    pub channels: BTreeMap<u32, Channel>,
    /// Whether a `devices` state arrived (else channels are only those seen in shares).
    pub devices_known: bool,
    /// Block events by stage (found, accepted, rejected).
    pub block_counts: StageCounts,
    /// Recent blocks, newest last.
    pub blocks: VecDeque<BlockRow>,
    /// The processes, in [`PROCESSES`] order.
    pub processes: Vec<Process>,
    /// Recent events, newest last.
    pub events: VecDeque<EventRow>,
    /// Bodies that did not decode (counted here; the bus counts envelopes).
    pub malformed_bodies: u64,
    /// This dashboard's bus counters (copied in by the shell).
    pub bus: BusCounters,
}

impl Model {
    /// An empty model at `started_us`.
    pub fn new(settings: Settings, started_us: u64) -> Model {
        Model {
            settings,
            started_us,
            dedup: Dedup::default(),
            last_tip_hash: None,
            tip: None,
            tips: 0,
            template: None,
            selection: None,
            job: None,
            jobs: (0, 0),
            upstream: None,
            declarations: VecDeque::new(),
            declaration_counts: StageCounts::default(),
            channels: BTreeMap::new(),
            devices_known: false,
            block_counts: StageCounts::default(),
            blocks: VecDeque::new(),
            processes: PROCESSES
                .iter()
                .map(|name| Process {
                    name: name.to_string(),
                    ..Process::default()
                })
                .collect(),
            events: VecDeque::new(),
            malformed_bodies: 0,
            bus: BusCounters::default(),
        }
    }

    /// Decodes and applies one received message that arrived at `now_us`. A body that does
    /// not decode is counted and returned as an error; the model is otherwise unchanged.
    pub fn handle(&mut self, msg: &Received, now_us: u64) -> Result<(), BusError> {
        if let Some(p) = self.process_mut(&msg.stream) {
            p.last_message_us = Some(now_us);
            p.messages += 1;
        }
        match Message::decode(msg) {
            Ok(message) => {
                self.apply(&msg.stream, msg.sent_at_us, message, now_us);
                Ok(())
            }
            Err(e) => {
                self.malformed_bodies += 1;
                Err(e)
            }
        }
    }

    fn process_mut(&mut self, name: &str) -> Option<&mut Process> {
        self.processes.iter_mut().find(|p| p.name == name)
    }

    /// The process named `name`, if watched.
    pub fn process(&self, name: &str) -> Option<&Process> {
        self.processes.iter().find(|p| p.name == name)
    }

    /// Liveness of `name` at `now_us` (waiting if not watched).
    pub fn liveness(&self, name: &str, now_us: u64) -> Liveness {
        self.process(name)
            .map(|p| p.liveness(now_us, self.settings.down_after_us))
            .unwrap_or(Liveness::Waiting)
    }

    /// Applies one decoded message from `stream`, sent at `sent_at_us`, arrived at `now_us`.
    pub fn apply(&mut self, stream: &str, sent_at_us: u64, message: Message, now_us: u64) {
        let at_us = if sent_at_us == 0 {
            now_us
        } else {
            sent_at_us.min(now_us)
        };
        match message {
            Message::Ignored => {}
            Message::Tip(tip) => {
                if self.last_tip_hash.as_deref() != Some(tip.prev_hash.as_str()) {
                    self.last_tip_hash = Some(tip.prev_hash.clone());
                    self.tips += 1;
                    self.tip = Some(Stamped { value: tip, at_us });
                }
            }
            Message::Summary(summary) => {
                if self.dedup.is_new(Topic::Summary, summary.id) {
                    self.template = Some(Stamped {
                        value: summary,
                        at_us,
                    });
                }
            }
            Message::Selection(selection) => {
                if self.dedup.is_new(Topic::Selection, selection.id) {
                    self.selection = Some(Stamped {
                        value: selection,
                        at_us,
                    });
                }
            }
            Message::Upstream(state) => {
                if self.dedup.is_new(Topic::Upstream, state.id) {
                    self.upstream = Some(Stamped {
                        value: state,
                        at_us,
                    });
                }
            }
            Message::Devices(state) => {
                if self.dedup.is_new(Topic::Devices, state.id) {
                    self.devices(state);
                }
            }
            Message::Job(job) => {
                match job.kind {
                    JobKind::Empty => self.jobs.0 += 1,
                    JobKind::Full => self.jobs.1 += 1,
                }
                self.job = Some(Stamped { value: job, at_us });
            }
            Message::Share(share) => self.share(share, now_us),
            Message::Block(block) => self.block(block, at_us),
            Message::Declaration(d) => self.declaration(d, at_us),
            Message::Heartbeat(hb) => {
                let hb = hb.heartbeat;
                if let Some(p) = self.process_mut(stream) {
                    if p.heartbeat
                        .as_ref()
                        .is_some_and(|old| old.started_at_us != hb.started_at_us)
                    {
                        p.restarts += 1;
                    }
                    p.heartbeat = Some(hb);
                    p.last_heartbeat_us = Some(now_us);
                }
            }
            Message::Event(event) => {
                self.events.push_back(EventRow {
                    process: stream.to_string(),
                    event,
                    at_us,
                });
                while self.events.len() > MAX_EVENTS {
                    self.events.pop_front();
                }
            }
        }
    }

    fn share(&mut self, share: ShareResult, now_us: u64) {
        // A share on a channel that does not exist (answered `invalid-channel-id`) is no
        // device: counted by jdc-metrics, not listed here once the open channels are known.
        if self.devices_known
            && !self.channels.contains_key(&share.channel_id)
            && share.channel_kind == "unknown"
        {
            return;
        }
        if !self.channels.contains_key(&share.channel_id) && self.channels.len() >= MAX_CHANNELS {
            let oldest = self
                .channels
                .iter()
                .min_by_key(|(_, c)| c.last_share_us)
                .map(|(id, _)| *id);
            if let Some(id) = oldest {
                self.channels.remove(&id);
            }
        }
        let window_us = self.settings.hashrate_window_us;
        let channel = self.channels.entry(share.channel_id).or_default();
        channel.kind = share.channel_kind;
        channel.difficulty = share.difficulty;
        channel.last_share_us = now_us;
        if share.accepted {
            channel.accepted += 1;
            channel.window.record(now_us, share.difficulty);
        } else {
            channel.rejected += 1;
            channel.last_reject = share.reason;
        }
        channel
            .window
            .forget(now_us.saturating_sub(window_us), MAX_WINDOW_SHARES);
    }

    /// The channels open now: listed ones are kept or added (with what the declarator says of
    /// them), the others have disconnected and go, with their share counts.
    fn devices(&mut self, state: Devices) {
        self.devices_known = true;
        let listed: BTreeMap<u32, Device> = state
            .devices
            .into_iter()
            .take(MAX_CHANNELS)
            .map(|d| (d.channel_id, d))
            .collect();
        self.channels.retain(|id, _| listed.contains_key(id));
        for (id, device) in listed {
            let channel = self.channels.entry(id).or_default();
            channel.kind = device.kind.clone();
            channel.device = Some(device);
        }
    }

    fn block(&mut self, block: BlockEvent, at_us: u64) {
        match block.stage {
            BlockStage::Found => self.block_counts.first += 1,
            BlockStage::Accepted => self.block_counts.accepted += 1,
            BlockStage::Rejected if block.failed => self.block_counts.failed += 1,
            BlockStage::Rejected => self.block_counts.rejected += 1,
        }
        let row = BlockRow {
            height: block.height,
            hash: block.hash,
            stage: block.stage,
            submitted: block.submitted,
            failed: block.failed,
            reason: block.reason,
            at_us,
        };
        if let Some(pos) = self.blocks.iter().position(|b| b.hash == row.hash) {
            self.blocks.remove(pos);
        }
        self.blocks.push_back(row);
        while self.blocks.len() > MAX_BLOCKS {
            self.blocks.pop_front();
        }
    }

    fn declaration(&mut self, d: Declaration, at_us: u64) {
        match d.stage.as_str() {
            "accepted" => self.declaration_counts.accepted += 1,
            "rejected" => self.declaration_counts.rejected += 1,
            _ => self.declaration_counts.first += 1,
        }
        let row = DeclarationRow {
            upstream: d.upstream,
            template_id: d.template_id,
            stage: d.stage,
            reason: d.reason,
            tx_count: d.tx_count,
            since_tip_us: d.since_tip_us,
            at_us,
        };
        if let Some(pos) = self
            .declarations
            .iter()
            .position(|r| r.upstream == row.upstream && r.template_id == row.template_id)
        {
            self.declarations.remove(pos);
        }
        self.declarations.push_back(row);
        while self.declarations.len() > MAX_DECLARATIONS {
            self.declarations.pop_front();
        }
    }

    /// The span the hashrate is averaged over at `now_us`: the window, or the time since the
    /// dashboard started when that is shorter (at least one second).
    fn hashrate_span_us(&self, now_us: u64) -> u64 {
        self.settings
            .hashrate_window_us
            .min(now_us.saturating_sub(self.started_us))
            .max(1_000_000)
    }

    /// Estimated hashrate of `channel` at `now_us`, hashes per second: the accepted shares'
    /// difficulty in the window, each difficulty `d` standing for `d·2³²` hashes.
    pub fn channel_hashrate(&self, channel: &Channel, now_us: u64) -> f64 {
        let span = self.hashrate_span_us(now_us);
        channel.window.hashes(now_us.saturating_sub(span), now_us) / (span as f64 / 1e6)
    }

    /// Estimated hashrate of all channels together at `now_us`, hashes per second.
    pub fn total_hashrate(&self, now_us: u64) -> f64 {
        self.channels
            .values()
            .map(|c| self.channel_hashrate(c, now_us))
            .sum()
    }

    /// Accepted and rejected shares of all channels.
    pub fn share_totals(&self) -> (u64, u64) {
        self.channels
            .values()
            .fold((0, 0), |(a, r), c| (a + c.accepted, r + c.rejected))
    }
}

#[cfg(test)]
mod tests;
