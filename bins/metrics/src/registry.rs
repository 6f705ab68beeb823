//! Metric definitions and the pure update logic: a decoded bus [`Message`] in, counters,
//! gauges and histograms updated. No sockets, no clock (times are passed in).
//!
//! Every metric of the stack is named once, in [`jdc_shared::metric_names`] (names, kinds,
//! labels, help), and listed in `docs/metrics.md`. State topics are re-sent by their
//! publishers every second; counters count *distinct* tips (by previous-block hash), templates
//! and selections (by id).
//!
//! Label values that come from the bus are cleaned (only `[A-Za-z0-9_.:/-]`, at most 64
//! characters) and capped (at most [`MAX_LABEL_VALUES`] distinct values per label, then
//! `other`), so a misbehaving publisher cannot break the exposition format or blow up the
//! number of series.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use jdc_shared::bus::{BusError, BusStats, Dedup, Received, Topic};
use jdc_shared::messages::{BlockEvent, BlockStage, Devices, UpstreamState};
use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::info::Info;
use prometheus_client::metrics::MetricType;

use crate::health::Health;
use jdc_shared::metric_names as names;

/// Buckets of `jdc_tip_to_job_seconds`: 100 µs to 1 s.
pub const TIP_TO_JOB_BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// Buckets of `jdc_getblocktemplate_seconds`: 1 ms to 10 s.
pub const GBT_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0,
];

/// Buckets of `jdc_tip_to_declared_job_accepted_seconds`: 5 ms to 10 s.
pub const DECLARED_BUCKETS: [f64; 10] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// Window of accepted shares the hashrate estimate is computed over.
pub const HASHRATE_WINDOW_US: u64 = 300_000_000;

/// Accepted shares kept in the hashrate window at most (beyond, the oldest are forgotten and
/// the estimate spans the shares kept): bounds the memory a share flood can take.
pub const MAX_WINDOW_SHARES: usize = 100_000;

/// Distinct values kept per free-form label before further ones are reported as `other`.
pub const MAX_LABEL_VALUES: usize = 32;

/// The longest label value kept from the bus.
const MAX_LABEL_LEN: usize = 64;

pub use jdc_shared::monitor::{Message, SelectionSummary, ShareWindow};

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ShareLabels {
    result: String,
    reason: String,
    channel_kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabel {
    stage: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeclarationLabels {
    stage: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PoolShareLabels {
    result: String,
    reason: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModeLabel {
    mode: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    upstream: String,
    state: String,
}

/// `jdc_upstream_info`: what each configured upstream is.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamInfoLabels {
    upstream: String,
    pool: String,
    jds: String,
    mode: String,
}

/// Values of `jdc_upstream_state`'s `state` label.
const UPSTREAM_STATES: [&str; 3] = ["active", "standby", "down"];

/// Values of `jdc_mining_mode`'s `mode` label.
const MINING_MODES: [&str; 2] = ["pool", "solo"];

/// Values of `jdc_blocks_total`'s `stage` label.
const BLOCK_STAGES: [&str; 5] = ["found", "submitted", "accepted", "rejected", "failed"];

/// Values of `jdc_devices_connected`'s `kind` label, always exposed (0 when none).
const DEVICE_KINDS: [&str; 3] = ["standard", "extended", "sv1"];

/// The `jdc_blocks_total` stages a block message counts under: `found` (and `submitted` when
/// it went to `submitblock`), then `accepted`, `rejected` (bitcoind's refusal) or `failed`
/// (`submitblock` did not answer).
fn block_stages(block: &BlockEvent) -> &'static [&'static str] {
    match (block.stage, block.submitted, block.failed) {
        (BlockStage::Found, true, _) => &["found", "submitted"],
        (BlockStage::Found, false, _) => &["found"],
        (BlockStage::Accepted, _, _) => &["accepted"],
        (BlockStage::Rejected, _, true) => &["failed"],
        (BlockStage::Rejected, _, false) => &["rejected"],
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProcessLabel {
    process: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabel {
    stream: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EventLabels {
    process: String,
    level: String,
}

/// Cleans and caps the values of one free-form label.
#[derive(Debug, Default)]
struct LabelValues {
    seen: HashSet<String>,
}

impl LabelValues {
    fn get(&mut self, raw: &str) -> String {
        let clean: String = raw
            .chars()
            .take(MAX_LABEL_LEN)
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.:/-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if self.seen.contains(&clean) {
            return clean;
        }
        if self.seen.len() >= MAX_LABEL_VALUES {
            return "other".to_string();
        }
        self.seen.insert(clean.clone());
        clean
    }
}

type SecondsGauge = Gauge<f64, AtomicU64>;

/// A gauge absent from the exposition until first set: a value that does not exist yet (the
/// age of a template before the first) is not reported as 0.
#[derive(Debug, Clone, Default)]
struct LateGauge {
    gauge: SecondsGauge,
    set: Arc<AtomicBool>,
}

impl LateGauge {
    fn set(&self, v: f64) {
        self.gauge.set(v);
        self.set.store(true, Ordering::Relaxed);
    }
}

impl EncodeMetric for LateGauge {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.gauge.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Gauge
    }

    fn is_empty(&self) -> bool {
        !self.set.load(Ordering::Relaxed)
    }
}

/// Every metric of the stack, the dedup state, and the per-process health.
pub struct Metrics {
    registry: prometheus_client::registry::Registry,
    tips: Counter,
    templates: Counter,
    template_transactions: Gauge,
    template_fees: Gauge,
    selections: Counter,
    selection_transactions: Gauge,
    selection_fees: Gauge,
    dropped: Family<ReasonLabel, Counter>,
    dropped_fees: Family<ReasonLabel, Gauge>,
    /// Reasons the latest selection named (reset to 0 by the next one).
    dropped_fee_reasons: Vec<ReasonLabel>,
    jobs: Family<KindLabel, Counter>,
    tip_to_job: Family<KindLabel, Histogram>,
    shares: Family<ShareLabels, Counter>,
    blocks: Family<StageLabel, Counter>,
    events: Family<EventLabels, Counter>,
    tip_height: Gauge,
    gbt: Histogram,
    template_received_us: Option<u64>,
    template_age: LateGauge,
    /// `prev_hash` of the latest template.
    template_prev: Option<String>,
    /// Since when the stack has had no template for the latest tip (before any template:
    /// since the watcher was first heard from); `None` while it has one.
    template_missing_since_us: Option<u64>,
    watcher_heard: bool,
    template_missing: SecondsGauge,
    zmq_messages: Counter,
    zmq_gaps: Counter,
    zmq_malformed: Counter,
    sv1_bad_input: Family<ReasonLabel, Counter>,
    tdp_clients: Gauge,
    tdp_templates: Family<KindLabel, Counter>,
    tdp_solutions: Family<ResultLabel, Counter>,
    tdp_dropped: Family<ReasonLabel, Counter>,
    /// Last counter values from heartbeats (restart-aware mirroring), by counter name.
    zmq_last: HashMap<&'static str, u64>,
    declarations: Family<DeclarationLabels, Counter>,
    tip_to_declared: Histogram,
    hashrate: SecondsGauge,
    /// Accepted shares of the hashrate window.
    share_window: std::cell::RefCell<ShareWindow>,
    work_refused: Family<KindLabel, Counter>,
    devices_connected: Family<KindLabel, Gauge>,
    /// Open channels by kind in the declarator's latest `devices` state (exposed while the
    /// declarator is up, 0 while it is down).
    devices_by_kind: HashMap<String, i64>,
    mining_mode: Family<ModeLabel, Gauge>,
    upstream_active: Gauge,
    upstream_state: Family<UpstreamLabels, Gauge>,
    upstream_info: Family<UpstreamInfoLabels, Gauge>,
    upstream_switches: Counter,
    last_switches: u64,
    pool_shares: Family<PoolShareLabels, Counter>,
    held_shares: Family<OutcomeLabel, Counter>,
    process_up: Family<ProcessLabel, Gauge>,
    process_last_seen: Family<ProcessLabel, SecondsGauge>,
    bus_messages: Family<StreamLabel, Counter>,
    bus_malformed: Counter,
    bus_gaps: Counter,
    process_bus_malformed: Family<ProcessLabel, Counter>,
    process_bus_gaps: Family<ProcessLabel, Counter>,
    /// Last bus totals from each process's heartbeats (restart-aware mirroring).
    process_bus_last: HashMap<(String, &'static str), u64>,
    dedup: Dedup,
    last_tip: Option<String>,
    labels: HashMap<&'static str, LabelValues>,
    health: Health,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn tip_to_job_histogram() -> Histogram {
    Histogram::new(TIP_TO_JOB_BUCKETS)
}

impl Metrics {
    /// All metrics at zero, with a `process` series for each of `processes` (the bus streams
    /// listened to).
    pub fn new(processes: &[&str]) -> Metrics {
        let mut registry = prometheus_client::registry::Registry::default();
        let m = Metrics {
            tips: Counter::default(),
            templates: Counter::default(),
            template_transactions: Gauge::default(),
            template_fees: Gauge::default(),
            selections: Counter::default(),
            selection_transactions: Gauge::default(),
            selection_fees: Gauge::default(),
            dropped: Family::default(),
            dropped_fees: Family::default(),
            dropped_fee_reasons: Vec::new(),
            jobs: Family::default(),
            tip_to_job: Family::new_with_constructor(tip_to_job_histogram),
            shares: Family::default(),
            blocks: Family::default(),
            events: Family::default(),
            tip_height: Gauge::default(),
            gbt: Histogram::new(GBT_BUCKETS),
            template_received_us: None,
            template_age: LateGauge::default(),
            template_prev: None,
            template_missing_since_us: None,
            watcher_heard: false,
            template_missing: SecondsGauge::default(),
            zmq_messages: Counter::default(),
            zmq_gaps: Counter::default(),
            zmq_malformed: Counter::default(),
            sv1_bad_input: Family::default(),
            tdp_clients: Gauge::default(),
            tdp_templates: Family::default(),
            tdp_solutions: Family::default(),
            tdp_dropped: Family::default(),
            zmq_last: HashMap::new(),
            declarations: Family::default(),
            tip_to_declared: Histogram::new(DECLARED_BUCKETS),
            hashrate: SecondsGauge::default(),
            share_window: std::cell::RefCell::new(ShareWindow::default()),
            work_refused: Family::default(),
            devices_connected: Family::default(),
            devices_by_kind: HashMap::new(),
            mining_mode: Family::default(),
            upstream_active: Gauge::default(),
            upstream_state: Family::default(),
            upstream_info: Family::default(),
            upstream_switches: Counter::default(),
            last_switches: 0,
            pool_shares: Family::default(),
            held_shares: Family::default(),
            process_up: Family::default(),
            process_last_seen: Family::default(),
            bus_messages: Family::default(),
            bus_malformed: Counter::default(),
            bus_gaps: Counter::default(),
            process_bus_malformed: Family::default(),
            process_bus_gaps: Family::default(),
            process_bus_last: HashMap::new(),
            dedup: Dedup::default(),
            last_tip: None,
            labels: HashMap::new(),
            health: Health::new(processes),
            registry: prometheus_client::registry::Registry::default(),
        };
        register(
            &mut registry,
            &names::BUILD,
            Info::new(vec![("version", env!("CARGO_PKG_VERSION"))]),
        );
        register(&mut registry, &names::TIPS, m.tips.clone());
        register(&mut registry, &names::TEMPLATES, m.templates.clone());
        register(
            &mut registry,
            &names::TEMPLATE_TRANSACTIONS,
            m.template_transactions.clone(),
        );
        register(
            &mut registry,
            &names::TEMPLATE_FEES_SATS,
            m.template_fees.clone(),
        );
        register(&mut registry, &names::SELECTIONS, m.selections.clone());
        register(
            &mut registry,
            &names::SELECTION_TRANSACTIONS,
            m.selection_transactions.clone(),
        );
        register(
            &mut registry,
            &names::SELECTION_FEES_SATS,
            m.selection_fees.clone(),
        );
        register(
            &mut registry,
            &names::SELECTION_DROPPED_TRANSACTIONS,
            m.dropped.clone(),
        );
        register(
            &mut registry,
            &names::SELECTION_DROPPED_FEES_SATS,
            m.dropped_fees.clone(),
        );
        register(&mut registry, &names::JOBS_SENT, m.jobs.clone());
        register(
            &mut registry,
            &names::TIP_TO_JOB_SECONDS,
            m.tip_to_job.clone(),
        );
        register(&mut registry, &names::SHARES, m.shares.clone());
        register(&mut registry, &names::BLOCKS, m.blocks.clone());
        register(&mut registry, &names::EVENTS, m.events.clone());
        register(&mut registry, &names::TIP_HEIGHT, m.tip_height.clone());
        register(
            &mut registry,
            &names::GETBLOCKTEMPLATE_SECONDS,
            m.gbt.clone(),
        );
        register(
            &mut registry,
            &names::TEMPLATE_AGE_SECONDS,
            m.template_age.clone(),
        );
        register(
            &mut registry,
            &names::TEMPLATE_MISSING_SECONDS,
            m.template_missing.clone(),
        );
        register(
            &mut registry,
            &names::BITCOIND_ZMQ_MESSAGES,
            m.zmq_messages.clone(),
        );
        register(&mut registry, &names::BITCOIND_ZMQ_GAPS, m.zmq_gaps.clone());
        register(
            &mut registry,
            &names::BITCOIND_ZMQ_MALFORMED,
            m.zmq_malformed.clone(),
        );
        register(
            &mut registry,
            &names::SV1_BAD_INPUT,
            m.sv1_bad_input.clone(),
        );
        register(&mut registry, &names::TDP_CLIENTS, m.tdp_clients.clone());
        register(
            &mut registry,
            &names::TDP_TEMPLATES_SENT,
            m.tdp_templates.clone(),
        );
        register(
            &mut registry,
            &names::TDP_SOLUTIONS,
            m.tdp_solutions.clone(),
        );
        register(
            &mut registry,
            &names::TDP_CLIENTS_DROPPED,
            m.tdp_dropped.clone(),
        );
        register(&mut registry, &names::DECLARED_JOBS, m.declarations.clone());
        register(
            &mut registry,
            &names::TIP_TO_DECLARED_JOB_ACCEPTED_SECONDS,
            m.tip_to_declared.clone(),
        );
        register(
            &mut registry,
            &names::HASHRATE_ESTIMATE_HASHES_PER_SECOND,
            m.hashrate.clone(),
        );
        register(&mut registry, &names::WORK_REFUSED, m.work_refused.clone());
        register(
            &mut registry,
            &names::DEVICES_CONNECTED,
            m.devices_connected.clone(),
        );
        register(&mut registry, &names::MINING_MODE, m.mining_mode.clone());
        register(
            &mut registry,
            &names::UPSTREAM_ACTIVE,
            m.upstream_active.clone(),
        );
        register(
            &mut registry,
            &names::UPSTREAM_STATE,
            m.upstream_state.clone(),
        );
        register(
            &mut registry,
            &names::UPSTREAM_INFO,
            m.upstream_info.clone(),
        );
        register(
            &mut registry,
            &names::UPSTREAM_SWITCHES,
            m.upstream_switches.clone(),
        );
        register(&mut registry, &names::POOL_SHARES, m.pool_shares.clone());
        register(&mut registry, &names::HELD_SHARES, m.held_shares.clone());
        register(&mut registry, &names::PROCESS_UP, m.process_up.clone());
        register(
            &mut registry,
            &names::PROCESS_LAST_SEEN_SECONDS,
            m.process_last_seen.clone(),
        );
        register(&mut registry, &names::BUS_MESSAGES, m.bus_messages.clone());
        register(
            &mut registry,
            &names::BUS_MALFORMED_MESSAGES,
            m.bus_malformed.clone(),
        );
        register(&mut registry, &names::BUS_SEQUENCE_GAPS, m.bus_gaps.clone());
        register(
            &mut registry,
            &names::PROCESS_BUS_MALFORMED_MESSAGES,
            m.process_bus_malformed.clone(),
        );
        register(
            &mut registry,
            &names::PROCESS_BUS_SEQUENCE_GAPS,
            m.process_bus_gaps.clone(),
        );
        for p in processes {
            let label = ProcessLabel {
                process: p.to_string(),
            };
            m.process_bus_malformed.get_or_create(&label).inc_by(0);
            m.process_bus_gaps.get_or_create(&label).inc_by(0);
            m.process_up
                .get_or_create(&ProcessLabel {
                    process: p.to_string(),
                })
                .set(0);
            m.bus_messages
                .get_or_create(&StreamLabel {
                    stream: p.to_string(),
                })
                .inc_by(0);
        }
        // Known label values start at 0, so rates work from the first event.
        for kind in ["empty", "full"] {
            let kind = KindLabel {
                kind: kind.to_string(),
            };
            m.jobs.get_or_create(&kind).inc_by(0);
            drop(m.tip_to_job.get_or_create(&kind));
        }
        for kind in ["selection", "template"] {
            m.work_refused
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .inc_by(0);
        }
        for &(_, result, reason) in names::POOL_SHARE_COUNTERS {
            m.pool_shares
                .get_or_create(&pool_share_labels(result, reason))
                .inc_by(0);
        }
        for &(_, outcome) in names::HELD_SHARE_COUNTERS {
            m.held_shares
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.to_string(),
                })
                .inc_by(0);
        }
        for kind in DEVICE_KINDS {
            m.devices_connected
                .get_or_create(&KindLabel {
                    kind: kind.to_string(),
                })
                .set(0);
        }
        for stage in BLOCK_STAGES {
            m.blocks
                .get_or_create(&StageLabel {
                    stage: stage.to_string(),
                })
                .inc_by(0);
        }
        for reason in [
            "below-min-fee-rate",
            "block-full",
            "parent-dropped",
            "excluded-txid",
            "excluded-script",
            "excluded-outpoint",
            "op-return-size",
            "op-return-count",
            "inscription",
            "witness-data",
            "unreadable",
        ] {
            let reason = ReasonLabel {
                reason: reason.to_string(),
            };
            m.dropped.get_or_create(&reason).inc_by(0);
            m.dropped_fees.get_or_create(&reason).set(0);
        }
        Metrics { registry, ..m }
    }

    /// The per-process health.
    pub fn health(&self) -> &Health {
        &self.health
    }

    fn label(&mut self, name: &'static str, raw: &str) -> String {
        self.labels.entry(name).or_default().get(raw)
    }

    /// Handles one received message: counts it for its stream, decodes and applies it. A
    /// body that does not decode is returned as an error (the caller counts it malformed).
    pub fn handle(&mut self, msg: &Received, now_us: u64) -> Result<(), BusError> {
        let stream = self.label("stream", &msg.stream);
        self.bus_messages
            .get_or_create(&StreamLabel {
                stream: stream.clone(),
            })
            .inc();
        self.health.message(&stream, now_us);
        let message = Message::decode(msg)?;
        self.apply(&stream, &message, now_us);
        Ok(())
    }

    /// Applies one decoded message from `stream`.
    pub fn apply(&mut self, stream: &str, message: &Message, now_us: u64) {
        if stream == "watcher" && !self.watcher_heard {
            // The watcher is running: from now on, no template is a missing template.
            self.watcher_heard = true;
            if self.template_prev.is_none() {
                self.template_missing_since_us.get_or_insert(now_us);
            }
        }
        match message {
            Message::Ignored => {}
            Message::Tip(tip) => {
                if self.last_tip.as_deref() != Some(tip.prev_hash.as_str()) {
                    self.last_tip = Some(tip.prev_hash.clone());
                    self.tips.inc();
                    // A new tip makes the template on the old one useless (an earlier wait
                    // goes on).
                    if self.template_prev.as_deref() != Some(tip.prev_hash.as_str()) {
                        self.template_missing_since_us.get_or_insert(now_us);
                    }
                }
                // `Tip.height` is the height of the block to be mined next: the tip is one below.
                self.tip_height.set(i64::from(tip.height.saturating_sub(1)));
            }
            Message::Summary(t) => {
                if self.dedup.is_new(Topic::Summary, t.id) {
                    self.templates.inc();
                    self.gbt.observe(t.gbt_us as f64 / 1e6);
                    self.template_received_us = Some(now_us);
                    // A template on the latest tip (or, before any tip is known, any
                    // template) is what the stack needs.
                    if self.last_tip.as_ref().is_none_or(|tip| *tip == t.prev_hash) {
                        self.template_missing_since_us = None;
                    }
                    self.template_prev = Some(t.prev_hash.clone());
                    self.template_transactions.set(gauge_value(t.tx_count));
                    self.template_fees.set(gauge_value(t.fees));
                }
            }
            Message::Selection(s) => {
                if self.dedup.is_new(Topic::Selection, s.id) {
                    self.selections.inc();
                    self.selection_transactions.set(gauge_value(s.tx_count));
                    self.selection_fees.set(gauge_value(s.fees));
                    // The latest selection's cost per reason: reasons it does not name cost 0.
                    for reason in std::mem::take(&mut self.dropped_fee_reasons) {
                        self.dropped_fees.get_or_create(&reason).set(0);
                    }
                    for d in &s.dropped {
                        let reason = ReasonLabel {
                            reason: self.label("dropped_reason", &d.reason),
                        };
                        self.dropped
                            .get_or_create(&reason)
                            .inc_by(u64::from(d.count));
                        self.dropped_fees
                            .get_or_create(&reason)
                            .set(gauge_value(d.fee));
                        self.dropped_fee_reasons.push(reason);
                    }
                }
            }
            Message::Job(job) => {
                let kind = KindLabel {
                    kind: job.kind.as_str().to_string(),
                };
                self.jobs.get_or_create(&kind).inc();
                // Only the first job of each kind on a tip measures the tip-to-job latency:
                // template refreshes come seconds or minutes after the tip, and further
                // connections get the same job.
                if job.first_on_tip && job.tip_to_job_us > 0 {
                    self.tip_to_job
                        .get_or_create(&kind)
                        .observe(job.tip_to_job_us as f64 / 1e6);
                }
            }
            Message::Share(share) => {
                let labels = ShareLabels {
                    result: if share.accepted {
                        "accepted"
                    } else {
                        "rejected"
                    }
                    .to_string(),
                    reason: self.label("share_reason", &share.reason),
                    channel_kind: self.label("channel_kind", &share.channel_kind),
                };
                self.shares.get_or_create(&labels).inc();
                if share.accepted {
                    // Pruned as shares arrive, not only when scraped: nobody may scrape.
                    self.share_window.borrow_mut().record_bounded(
                        now_us,
                        share.difficulty,
                        HASHRATE_WINDOW_US,
                        MAX_WINDOW_SHARES,
                    );
                }
            }
            Message::Block(block) => {
                for stage in block_stages(block) {
                    self.blocks
                        .get_or_create(&StageLabel {
                            stage: stage.to_string(),
                        })
                        .inc();
                }
            }
            Message::Heartbeat(hb) => {
                self.health.heartbeat(stream, hb, now_us);
                // What the process itself lost or refused on the bus it reads.
                let process = ProcessLabel {
                    process: stream.to_string(),
                };
                for (name, total, family) in [
                    (
                        "bus_malformed",
                        hb.bus_malformed,
                        &self.process_bus_malformed,
                    ),
                    ("bus_gaps", hb.bus_gaps, &self.process_bus_gaps),
                ] {
                    let last = self
                        .process_bus_last
                        .insert((process.process.clone(), name), total);
                    mirror(&family.get_or_create(&process), last, total);
                }
                for (name, counter) in [
                    ("zmq_received", &self.zmq_messages),
                    ("zmq_gaps", &self.zmq_gaps),
                    ("zmq_malformed", &self.zmq_malformed),
                ] {
                    if let Some(&total) = hb.heartbeat.counters.get(name) {
                        mirror(counter, self.zmq_last.insert(name, total), total);
                    }
                }
                let counters = &hb.heartbeat.counters;
                let last = &mut self.zmq_last;
                for &(name, reason) in names::SV1_BAD_INPUT_COUNTERS {
                    mirror_labelled(counters, last, name, || {
                        self.sv1_bad_input
                            .get_or_create(&ReasonLabel {
                                reason: reason.to_string(),
                            })
                            .clone()
                    });
                }
                for &(name, kind) in names::TDP_TEMPLATE_COUNTERS {
                    mirror_labelled(counters, last, name, || {
                        self.tdp_templates
                            .get_or_create(&KindLabel {
                                kind: kind.to_string(),
                            })
                            .clone()
                    });
                }
                for &(name, result) in names::TDP_SOLUTION_COUNTERS {
                    mirror_labelled(counters, last, name, || {
                        self.tdp_solutions
                            .get_or_create(&ResultLabel {
                                result: result.to_string(),
                            })
                            .clone()
                    });
                }
                for &(name, reason) in names::TDP_DROPPED_COUNTERS {
                    mirror_labelled(counters, last, name, || {
                        self.tdp_dropped
                            .get_or_create(&ReasonLabel {
                                reason: reason.to_string(),
                            })
                            .clone()
                    });
                }
                // The pool's answers to our shares, and the shares held for optimistic mining
                // (the declarator's totals; bounded label values, named once).
                for &(name, result, reason) in names::POOL_SHARE_COUNTERS {
                    mirror_labelled(counters, last, name, || {
                        self.pool_shares
                            .get_or_create(&pool_share_labels(result, reason))
                            .clone()
                    });
                }
                for &(name, outcome) in names::HELD_SHARE_COUNTERS {
                    mirror_labelled(counters, last, name, || {
                        self.held_shares
                            .get_or_create(&OutcomeLabel {
                                outcome: outcome.to_string(),
                            })
                            .clone()
                    });
                }
                if let Some(&n) = counters.get(names::counters::TDP_CLIENTS) {
                    self.tdp_clients.set(i64::try_from(n).unwrap_or(i64::MAX));
                }
            }
            Message::Event(ev) => {
                let labels = EventLabels {
                    process: stream.to_string(),
                    level: self.label("event_level", &ev.level),
                };
                self.events.get_or_create(&labels).inc();
                let refused = match ev.kind.as_str() {
                    "selection-refused" => Some("selection"),
                    "template-refused" => Some("template"),
                    _ => None,
                };
                if let Some(kind) = refused {
                    self.work_refused
                        .get_or_create(&KindLabel {
                            kind: kind.to_string(),
                        })
                        .inc();
                }
            }
            Message::Upstream(state) => self.apply_upstream(state),
            Message::Devices(state) => self.apply_devices(state),
            Message::Declaration(d) => {
                let labels = DeclarationLabels {
                    stage: self.label("declaration_stage", &d.stage),
                    reason: self.label("declaration_reason", &d.reason),
                };
                self.declarations.get_or_create(&labels).inc();
                if d.stage == "accepted" && d.since_tip_us > 0 {
                    self.tip_to_declared.observe(d.since_tip_us as f64 / 1e6);
                }
            }
        }
    }

    /// Counts the open channels of the declarator's `devices` state by kind (re-sends and
    /// repeats are harmless: the state replaces the last one).
    fn apply_devices(&mut self, state: &Devices) {
        let mut counts: HashMap<String, i64> =
            DEVICE_KINDS.iter().map(|k| (k.to_string(), 0)).collect();
        for d in &state.devices {
            let kind = self.label("channel_kind", &d.kind);
            *counts.entry(kind).or_insert(0) += 1;
        }
        self.devices_by_kind = counts;
    }

    /// Sets the upstream gauges from the declarator's state (re-sends are harmless) and counts
    /// new switches (a declarator restart starts its count again).
    fn apply_upstream(&mut self, state: &UpstreamState) {
        for mode in MINING_MODES {
            self.mining_mode
                .get_or_create(&ModeLabel {
                    mode: mode.to_string(),
                })
                .set(i64::from(state.mode == mode));
        }
        self.upstream_active.set(i64::from(state.active));
        // The upstreams of the declarator's configuration now (a restart may change them).
        self.upstream_info.clear();
        for u in &state.upstreams {
            let info = UpstreamInfoLabels {
                upstream: self.label("upstream", &u.rank.to_string()),
                pool: self.label("upstream_pool", &u.pool),
                jds: self.label("upstream_jds", &u.jds),
                mode: self.label("upstream_mode", &u.mode),
            };
            self.upstream_info.get_or_create(&info).set(1);
        }
        for u in &state.upstreams {
            let upstream = self.label("upstream", &u.rank.to_string());
            for s in UPSTREAM_STATES {
                self.upstream_state
                    .get_or_create(&UpstreamLabels {
                        upstream: upstream.clone(),
                        state: s.to_string(),
                    })
                    .set(i64::from(u.state == s));
            }
        }
        if state.switches > self.last_switches {
            self.upstream_switches
                .inc_by(state.switches - self.last_switches);
        }
        self.last_switches = state.switches;
    }

    /// Brings the time- and stats-derived metrics up to date and encodes everything in the
    /// OpenMetrics text format.
    pub fn render(
        &self,
        now_us: u64,
        down_after_ms: u64,
        stats: &BusStats,
    ) -> Result<String, std::fmt::Error> {
        let (_, malformed, gaps, _) = stats.snapshot();
        catch_up(&self.bus_malformed, malformed);
        catch_up(&self.bus_gaps, gaps);
        let mut declarator_up = false;
        for p in self.health.report(now_us, down_after_ms).processes {
            if p.process == "declarator" {
                declarator_up = p.up;
            }
            let label = ProcessLabel {
                process: p.process.clone(),
            };
            self.process_up.get_or_create(&label).set(i64::from(p.up));
            if let Some(age_ms) = p.last_message_age_ms {
                self.process_last_seen
                    .get_or_create(&label)
                    .set(age_ms as f64 / 1e3);
            }
        }
        if let Some(at) = self.template_received_us {
            self.template_age
                .set(now_us.saturating_sub(at) as f64 / 1e6);
        }
        self.template_missing.set(
            self.template_missing_since_us
                .map_or(0.0, |at| now_us.saturating_sub(at) as f64 / 1e6),
        );
        self.hashrate.set(self.estimate_hashrate(now_us));
        // Devices of a declarator that stopped publishing are not connected to anything.
        for (kind, n) in &self.devices_by_kind {
            self.devices_connected
                .get_or_create(&KindLabel { kind: kind.clone() })
                .set(if declarator_up { *n } else { 0 });
        }
        let mut out = String::with_capacity(8 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl Metrics {
    /// Hashes per second our devices did, from the shares accepted over the last
    /// [`HASHRATE_WINDOW_US`] (a share of difficulty d stands for d × 2³² hashes), over the
    /// time since the first of them or the whole window, whichever is shorter.
    fn estimate_hashrate(&self, now_us: u64) -> f64 {
        let mut window = self.share_window.borrow_mut();
        let from = now_us.saturating_sub(HASHRATE_WINDOW_US);
        window.forget(from, MAX_WINDOW_SHARES);
        let Some(first) = window.first_us() else {
            return 0.0;
        };
        let span_us = now_us.saturating_sub(first).max(1_000_000);
        window.hashes(from, now_us) / (span_us as f64 / 1e6)
    }
}

fn pool_share_labels(result: &str, reason: &str) -> PoolShareLabels {
    PoolShareLabels {
        result: result.to_string(),
        reason: reason.to_string(),
    }
}

/// Registers `metric` under its definition's name and help.
fn register(
    registry: &mut prometheus_client::registry::Registry,
    def: &names::MetricDef,
    metric: impl prometheus_client::registry::Metric,
) {
    registry.register(def.name, def.help, metric);
}

/// Advances `counter` by what a publisher's monotonic `total` grew since `last` (a total
/// below `last` means the publisher restarted: all of it is new).
fn mirror(counter: &Counter, last: Option<u64>, total: u64) {
    let grown = match last {
        Some(last) if total >= last => total - last,
        _ => total,
    };
    counter.inc_by(grown);
}

/// Mirrors the heartbeat counter `name`, when the heartbeat has it, into the labelled counter
/// `counter` gives.
fn mirror_labelled(
    counters: &std::collections::BTreeMap<String, u64>,
    last: &mut HashMap<&'static str, u64>,
    name: &'static str,
    counter: impl FnOnce() -> Counter,
) {
    if let Some(&total) = counters.get(name) {
        mirror(&counter(), last.insert(name, total), total);
    }
}

/// Raises a counter mirroring a monotonic total to that total.
fn catch_up(counter: &Counter, total: u64) {
    let current = counter.get();
    if total > current {
        counter.inc_by(total - current);
    }
}

fn gauge_value(v: impl TryInto<i64>) -> i64 {
    v.try_into().unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests;
