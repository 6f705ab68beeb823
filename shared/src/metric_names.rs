//! Every metric of the stack, named once: `jdc-metrics` registers them from here, and
//! `docs/metrics.md` and the Grafana dashboard are checked against this list by tests.
//!
//! Conventions: the `jdc_` prefix, base units in the name (`_seconds`, `_sats`), counters
//! exposed with `_total` (added by the encoder, not part of [`MetricDef::name`]), bounded
//! label values.

/// What kind of metric, as the exposition format says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricKind {
    /// Monotonic; exposed as `<name>_total`.
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Buckets, `_sum` and `_count`.
    Histogram,
    /// Constant labels; exposed as `<name>_info`.
    Info,
}

/// One metric: name (without the `_total`/`_info` suffix), kind, labels and help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Name as registered.
    pub name: &'static str,
    /// Kind.
    pub kind: MetricKind,
    /// Label names.
    pub labels: &'static [&'static str],
    /// Help text, as exposed.
    pub help: &'static str,
}

impl MetricDef {
    /// The sample name as it appears in the exposition (`_total` for counters, `_info` for
    /// info, `_count` and friends for histograms: this returns the bare name for those).
    pub fn exposed(&self) -> String {
        match self.kind {
            MetricKind::Counter => format!("{}_total", self.name),
            MetricKind::Info => format!("{}_info", self.name),
            MetricKind::Gauge | MetricKind::Histogram => self.name.to_string(),
        }
    }
}

/// `jdc_build`
pub const BUILD: MetricDef = MetricDef {
    name: "jdc_build",
    kind: MetricKind::Info,
    labels: &["version"],
    help: "Build of jdc-metrics (always 1)",
};

/// `jdc_tips`
pub const TIPS: MetricDef = MetricDef {
    name: "jdc_tips",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Distinct chain tips announced by the template-watcher",
};

/// `jdc_templates`
pub const TEMPLATES: MetricDef = MetricDef {
    name: "jdc_templates",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Distinct block templates published by the template-watcher",
};

/// `jdc_template_transactions`
pub const TEMPLATE_TRANSACTIONS: MetricDef = MetricDef {
    name: "jdc_template_transactions",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Transactions in the latest template",
};

/// `jdc_template_fees_sats`
pub const TEMPLATE_FEES_SATS: MetricDef = MetricDef {
    name: "jdc_template_fees_sats",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Fees of the latest template (coinbase value minus subsidy), in satoshis",
};

/// `jdc_selections`
pub const SELECTIONS: MetricDef = MetricDef {
    name: "jdc_selections",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Distinct selections published by the tx-selector",
};

/// `jdc_selection_transactions`
pub const SELECTION_TRANSACTIONS: MetricDef = MetricDef {
    name: "jdc_selection_transactions",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Transactions in the latest selection",
};

/// `jdc_selection_fees_sats`
pub const SELECTION_FEES_SATS: MetricDef = MetricDef {
    name: "jdc_selection_fees_sats",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Fees of the latest selection, in satoshis",
};

/// `jdc_selection_dropped_transactions`
pub const SELECTION_DROPPED_TRANSACTIONS: MetricDef = MetricDef {
    name: "jdc_selection_dropped_transactions",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "Transactions the selection policy left out, by reason (summed over selections)",
};

/// `jdc_selection_dropped_fees_sats`
pub const SELECTION_DROPPED_FEES_SATS: MetricDef = MetricDef {
    name: "jdc_selection_dropped_fees_sats",
    kind: MetricKind::Gauge,
    labels: &["reason"],
    help: "Fees the latest selection gave up, by reason (what each rule of the policy costs), in satoshis",
};

/// `jdc_jobs_sent`
pub const JOBS_SENT: MetricDef = MetricDef {
    name: "jdc_jobs_sent",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Mining jobs written to device connections by the declarator, by kind (empty or full; a job sent to two connections counts twice)",
};

/// `jdc_tip_to_job_seconds`
pub const TIP_TO_JOB_SECONDS: MetricDef = MetricDef {
    name: "jdc_tip_to_job_seconds",
    kind: MetricKind::Histogram,
    labels: &["kind"],
    help: "Time from tip detection by the watcher to the first job of that kind on the tip being written to a device, by job kind (refreshes are not observed)",
};

/// `jdc_shares`
pub const SHARES: MetricDef = MetricDef {
    name: "jdc_shares",
    kind: MetricKind::Counter,
    labels: &["result", "reason", "channel_kind"],
    help: "Shares judged by the declarator, by result, reason and channel kind",
};

/// `jdc_blocks`
pub const BLOCKS: MetricDef = MetricDef {
    name: "jdc_blocks",
    kind: MetricKind::Counter,
    labels: &["stage"],
    help: "Blocks found by our devices (found), handed to submitblock (submitted), and bitcoind's verdict (accepted, rejected) or no answer (failed), by stage",
};

/// `jdc_events`
pub const EVENTS: MetricDef = MetricDef {
    name: "jdc_events",
    kind: MetricKind::Counter,
    labels: &["process", "level"],
    help: "Operator events published on the bus, by process and level",
};

/// `jdc_tip_height`
pub const TIP_HEIGHT: MetricDef = MetricDef {
    name: "jdc_tip_height",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Height of the chain tip the watcher announced last (bitcoind's block count)",
};

/// `jdc_getblocktemplate_seconds`
pub const GETBLOCKTEMPLATE_SECONDS: MetricDef = MetricDef {
    name: "jdc_getblocktemplate_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Time getblocktemplate took (call and parsing), per template",
};

/// `jdc_template_age_seconds`
pub const TEMPLATE_AGE_SECONDS: MetricDef = MetricDef {
    name: "jdc_template_age_seconds",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Seconds since the latest template arrived (absent until the first one)",
};

/// `jdc_template_missing_seconds`
pub const TEMPLATE_MISSING_SECONDS: MetricDef = MetricDef {
    name: "jdc_template_missing_seconds",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Seconds the stack has been without a template for the latest chain tip (before any template: since the watcher was first heard from); 0 while it has one",
};

/// `jdc_bitcoind_zmq_messages`
pub const BITCOIND_ZMQ_MESSAGES: MetricDef = MetricDef {
    name: "jdc_bitcoind_zmq_messages",
    kind: MetricKind::Counter,
    labels: &[],
    help: "bitcoind ZMQ notifications the watcher received",
};

/// `jdc_bitcoind_zmq_gaps`
pub const BITCOIND_ZMQ_GAPS: MetricDef = MetricDef {
    name: "jdc_bitcoind_zmq_gaps",
    kind: MetricKind::Counter,
    labels: &[],
    help: "bitcoind ZMQ notifications the watcher missed, from sequence gaps",
};

/// `jdc_bitcoind_zmq_malformed`
pub const BITCOIND_ZMQ_MALFORMED: MetricDef = MetricDef {
    name: "jdc_bitcoind_zmq_malformed",
    kind: MetricKind::Counter,
    labels: &[],
    help: "bitcoind ZMQ notifications the watcher could not parse",
};

/// `jdc_sv1_bad_input`
pub const SV1_BAD_INPUT: MetricDef = MetricDef {
    name: "jdc_sv1_bad_input",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "Bad input from Stratum V1 devices (malformed, oversized, unknown_method, flood): answered with an error or the device dropped",
};

/// `jdc_tdp_clients`
pub const TDP_CLIENTS: MetricDef = MetricDef {
    name: "jdc_tdp_clients",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Template Distribution clients connected to the template-watcher's TDP server",
};

/// `jdc_tdp_templates_sent`
pub const TDP_TEMPLATES_SENT: MetricDef = MetricDef {
    name: "jdc_tdp_templates_sent",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "NewTemplate messages the TDP server sent its clients: future (empty block on a new tip) or full",
};

/// `jdc_tdp_solutions`
pub const TDP_SOLUTIONS: MetricDef = MetricDef {
    name: "jdc_tdp_solutions",
    kind: MetricKind::Counter,
    labels: &["result"],
    help: "SubmitSolution from TDP clients: accepted or rejected by bitcoind, invalid (no block could be made), failed (submitblock did not answer)",
};

/// `jdc_tdp_clients_dropped`
pub const TDP_CLIENTS_DROPPED: MetricDef = MetricDef {
    name: "jdc_tdp_clients_dropped",
    kind: MetricKind::Counter,
    labels: &["reason"],
    help: "TDP clients the server dropped: bad_input (handshake, framing, protocol), slow (stopped reading), full (too many clients)",
};

/// `jdc_declared_jobs`
pub const DECLARED_JOBS: MetricDef = MetricDef {
    name: "jdc_declared_jobs",
    kind: MetricKind::Counter,
    labels: &["stage", "reason"],
    help: "Jobs declared to the pool (stage declared), acknowledged (accepted) or refused (rejected, with the error code as reason)",
};

/// `jdc_tip_to_declared_job_accepted_seconds`
pub const TIP_TO_DECLARED_JOB_ACCEPTED_SECONDS: MetricDef = MetricDef {
    name: "jdc_tip_to_declared_job_accepted_seconds",
    kind: MetricKind::Histogram,
    labels: &[],
    help: "Time from tip detection to the pool acknowledging a declared job of that tip",
};

/// `jdc_hashrate_estimate_hashes_per_second`
pub const HASHRATE_ESTIMATE_HASHES_PER_SECOND: MetricDef = MetricDef {
    name: "jdc_hashrate_estimate_hashes_per_second",
    kind: MetricKind::Gauge,
    labels: &[],
    help: "Hashrate of our devices estimated from their accepted shares over the last 5 minutes",
};

/// `jdc_devices_connected`
pub const DEVICES_CONNECTED: MetricDef = MetricDef {
    name: "jdc_devices_connected",
    kind: MetricKind::Gauge,
    labels: &["kind"],
    help: "Device channels open on the declarator, by kind (standard, extended, sv1); 0 while the declarator is down",
};

/// `jdc_work_refused`
pub const WORK_REFUSED: MetricDef = MetricDef {
    name: "jdc_work_refused",
    kind: MetricKind::Counter,
    labels: &["kind"],
    help: "Selections and templates the declarator refused (devices kept the last valid work), by kind",
};

/// `jdc_mining_mode`
pub const MINING_MODE: MetricDef = MetricDef {
    name: "jdc_mining_mode",
    kind: MetricKind::Gauge,
    labels: &["mode"],
    help: "1 for the declarator's current mode: pool (mining for an upstream) or solo (own payout)",
};

/// `jdc_upstream_active`
pub const UPSTREAM_ACTIVE: MetricDef = MetricDef {
    name: "jdc_upstream_active",
    kind: MetricKind::Gauge,
    labels: &[],
    help:
        "Rank (1-based, configuration order) of the upstream the declarator mines for; 0 when solo",
};

/// `jdc_upstream_state`
pub const UPSTREAM_STATE: MetricDef = MetricDef {
    name: "jdc_upstream_state",
    kind: MetricKind::Gauge,
    labels: &["upstream", "state"],
    help: "1 for each configured upstream's state: active, standby (not known down) or down (probed with backoff)",
};

/// `jdc_upstream_info`
pub const UPSTREAM_INFO: MetricDef = MetricDef {
    name: "jdc_upstream_info",
    kind: MetricKind::Gauge,
    labels: &["upstream", "pool", "jds", "mode"],
    help: "1 for each configured upstream (by rank), naming its pool and JDS addresses and its mode (full-template or coinbase-only)",
};

/// `jdc_upstream_switches`
pub const UPSTREAM_SWITCHES: MetricDef = MetricDef {
    name: "jdc_upstream_switches",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Changes of upstream by the declarator (fall-overs, falls to solo, returns)",
};

/// `jdc_pool_shares`
pub const POOL_SHARES: MetricDef = MetricDef {
    name: "jdc_pool_shares",
    kind: MetricKind::Counter,
    labels: &["result", "reason"],
    help: "The pool's answers to the shares the declarator forwarded: accepted (SubmitShares.Success counts) or rejected (SubmitShares.Error, by error code)",
};

/// `jdc_held_shares`
pub const HELD_SHARES: MetricDef = MetricDef {
    name: "jdc_held_shares",
    kind: MetricKind::Counter,
    labels: &["outcome"],
    help: "Shares of declared jobs held until the pool acknowledged the job (optimistic mining), by outcome: held, forwarded, or dropped (new tip, overflow, job refused, upstream left)",
};

/// The declarator's heartbeat counters behind `jdc_pool_shares_total`: counter name, `result`,
/// `reason` (the pool's `SubmitShares.Error` code; codes not listed count as `other`).
pub const POOL_SHARE_COUNTERS: &[(&str, &str, &str)] = &[
    ("pool_shares_accepted", "accepted", ""),
    (
        "pool_shares_rejected_invalid_share",
        "rejected",
        "invalid-share",
    ),
    (
        "pool_shares_rejected_stale_share",
        "rejected",
        "stale-share",
    ),
    (
        "pool_shares_rejected_invalid_job_id",
        "rejected",
        "invalid-job-id",
    ),
    (
        "pool_shares_rejected_difficulty_too_low",
        "rejected",
        "difficulty-too-low",
    ),
    (
        "pool_shares_rejected_duplicate_share",
        "rejected",
        "duplicate-share",
    ),
    (
        "pool_shares_rejected_bad_extranonce_size",
        "rejected",
        "bad-extranonce-size",
    ),
    (
        "pool_shares_rejected_version_rolling_not_allowed",
        "rejected",
        "version-rolling-not-allowed",
    ),
    (
        "pool_shares_rejected_invalid_channel_id",
        "rejected",
        "invalid-channel-id",
    ),
    ("pool_shares_rejected_other", "rejected", "other"),
];

/// The declarator's heartbeat counters behind `jdc_held_shares_total`: counter name, `outcome`.
pub const HELD_SHARE_COUNTERS: &[(&str, &str)] = &[
    ("held_shares_held", "held"),
    ("held_shares_forwarded", "forwarded"),
    ("held_shares_dropped_new_tip", "dropped_new_tip"),
    ("held_shares_dropped_overflow", "dropped_overflow"),
    ("held_shares_dropped_refused", "dropped_refused"),
    ("held_shares_dropped_upstream_left", "dropped_upstream_left"),
];

/// Names of heartbeat counters (monotonic totals, except `TDP_CLIENTS`) that producers set and
/// jdc-metrics reads; the tables below map them to label values.
pub mod counters {
    /// Declarator: V1 lines that are not JSON-RPC or have bad parameters.
    pub const SV1_MALFORMED: &str = "sv1_bad_input_malformed";
    /// Declarator: V1 lines over `sv1_max_line_bytes`.
    pub const SV1_OVERSIZED: &str = "sv1_bad_input_oversized";
    /// Declarator: V1 methods devices do not send.
    pub const SV1_UNKNOWN_METHOD: &str = "sv1_bad_input_unknown_method";
    /// Declarator: V1 submits over the device's rate.
    pub const SV1_FLOOD: &str = "sv1_bad_input_flood";
    /// Watcher: TDP clients connected now (a gauge, not a total).
    pub const TDP_CLIENTS: &str = "tdp_clients";
    /// Watcher: future (empty-block) templates sent to TDP clients.
    pub const TDP_TEMPLATES_FUTURE: &str = "tdp_templates_future";
    /// Watcher: full templates sent to TDP clients.
    pub const TDP_TEMPLATES_FULL: &str = "tdp_templates_full";
    /// Watcher: TDP solutions bitcoind accepted.
    pub const TDP_SOLUTIONS_ACCEPTED: &str = "tdp_solutions_accepted";
    /// Watcher: TDP solutions bitcoind rejected.
    pub const TDP_SOLUTIONS_REJECTED: &str = "tdp_solutions_rejected";
    /// Watcher: TDP solutions that made no block.
    pub const TDP_SOLUTIONS_INVALID: &str = "tdp_solutions_invalid";
    /// Watcher: TDP solutions whose submitblock did not answer.
    pub const TDP_SOLUTIONS_FAILED: &str = "tdp_solutions_failed";
    /// Watcher: TDP clients dropped for bad input.
    pub const TDP_DROPPED_BAD_INPUT: &str = "tdp_dropped_bad_input";
    /// Watcher: TDP clients dropped for not reading.
    pub const TDP_DROPPED_SLOW: &str = "tdp_dropped_slow";
    /// Watcher: TDP clients refused, the server being full.
    pub const TDP_DROPPED_FULL: &str = "tdp_dropped_full";
}

/// The declarator's heartbeat counters behind `jdc_sv1_bad_input_total`: counter, `reason`.
pub const SV1_BAD_INPUT_COUNTERS: &[(&str, &str)] = &[
    (counters::SV1_MALFORMED, "malformed"),
    (counters::SV1_OVERSIZED, "oversized"),
    (counters::SV1_UNKNOWN_METHOD, "unknown_method"),
    (counters::SV1_FLOOD, "flood"),
];

/// The watcher's heartbeat counters behind `jdc_tdp_templates_sent_total`: counter, `kind`.
pub const TDP_TEMPLATE_COUNTERS: &[(&str, &str)] = &[
    (counters::TDP_TEMPLATES_FUTURE, "future"),
    (counters::TDP_TEMPLATES_FULL, "full"),
];

/// The watcher's heartbeat counters behind `jdc_tdp_solutions_total`: counter, `result`.
pub const TDP_SOLUTION_COUNTERS: &[(&str, &str)] = &[
    (counters::TDP_SOLUTIONS_ACCEPTED, "accepted"),
    (counters::TDP_SOLUTIONS_REJECTED, "rejected"),
    (counters::TDP_SOLUTIONS_INVALID, "invalid"),
    (counters::TDP_SOLUTIONS_FAILED, "failed"),
];

/// The watcher's heartbeat counters behind `jdc_tdp_clients_dropped_total`: counter, `reason`.
pub const TDP_DROPPED_COUNTERS: &[(&str, &str)] = &[
    (counters::TDP_DROPPED_BAD_INPUT, "bad_input"),
    (counters::TDP_DROPPED_SLOW, "slow"),
    (counters::TDP_DROPPED_FULL, "full"),
];

/// `jdc_process_up`
pub const PROCESS_UP: MetricDef = MetricDef {
    name: "jdc_process_up",
    kind: MetricKind::Gauge,
    labels: &["process"],
    help: "1 while the process's heartbeats arrive (metrics.down_after_ms), else 0",
};

/// `jdc_process_last_seen_seconds`
pub const PROCESS_LAST_SEEN_SECONDS: MetricDef = MetricDef {
    name: "jdc_process_last_seen_seconds",
    kind: MetricKind::Gauge,
    labels: &["process"],
    help: "Seconds since the last bus message from the process (any topic)",
};

/// `jdc_bus_messages`
pub const BUS_MESSAGES: MetricDef = MetricDef {
    name: "jdc_bus_messages",
    kind: MetricKind::Counter,
    labels: &["stream"],
    help: "Well-formed bus messages received by jdc-metrics, by stream",
};

/// `jdc_bus_malformed_messages`
pub const BUS_MALFORMED_MESSAGES: MetricDef = MetricDef {
    name: "jdc_bus_malformed_messages",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Bus messages jdc-metrics refused (bad envelope, unknown topic, other version, undecodable body)",
};

/// `jdc_bus_sequence_gaps`
pub const BUS_SEQUENCE_GAPS: MetricDef = MetricDef {
    name: "jdc_bus_sequence_gaps",
    kind: MetricKind::Counter,
    labels: &[],
    help: "Bus messages jdc-metrics missed, counted from sequence gaps",
};

/// `jdc_process_bus_malformed_messages`
pub const PROCESS_BUS_MALFORMED_MESSAGES: MetricDef = MetricDef {
    name: "jdc_process_bus_malformed_messages",
    kind: MetricKind::Counter,
    labels: &["process"],
    help: "Bus messages each process refused as malformed on the streams it reads, from its heartbeats",
};

/// `jdc_process_bus_sequence_gaps`
pub const PROCESS_BUS_SEQUENCE_GAPS: MetricDef = MetricDef {
    name: "jdc_process_bus_sequence_gaps",
    kind: MetricKind::Counter,
    labels: &["process"],
    help: "Bus messages each process missed on the streams it reads (sequence gaps), from its heartbeats",
};

/// Every metric, in exposition order.
pub const ALL: &[&MetricDef] = &[
    &BUILD,
    &TIPS,
    &TEMPLATES,
    &TEMPLATE_TRANSACTIONS,
    &TEMPLATE_FEES_SATS,
    &SELECTIONS,
    &SELECTION_TRANSACTIONS,
    &SELECTION_FEES_SATS,
    &SELECTION_DROPPED_TRANSACTIONS,
    &SELECTION_DROPPED_FEES_SATS,
    &JOBS_SENT,
    &TIP_TO_JOB_SECONDS,
    &SHARES,
    &BLOCKS,
    &EVENTS,
    &TIP_HEIGHT,
    &GETBLOCKTEMPLATE_SECONDS,
    &TEMPLATE_AGE_SECONDS,
    &TEMPLATE_MISSING_SECONDS,
    &BITCOIND_ZMQ_MESSAGES,
    &BITCOIND_ZMQ_GAPS,
    &BITCOIND_ZMQ_MALFORMED,
    &SV1_BAD_INPUT,
    &TDP_CLIENTS,
    &TDP_TEMPLATES_SENT,
    &TDP_SOLUTIONS,
    &TDP_CLIENTS_DROPPED,
    &DECLARED_JOBS,
    &TIP_TO_DECLARED_JOB_ACCEPTED_SECONDS,
    &HASHRATE_ESTIMATE_HASHES_PER_SECOND,
    &WORK_REFUSED,
    &DEVICES_CONNECTED,
    &MINING_MODE,
    &UPSTREAM_ACTIVE,
    &UPSTREAM_STATE,
    &UPSTREAM_INFO,
    &UPSTREAM_SWITCHES,
    &POOL_SHARES,
    &HELD_SHARES,
    &PROCESS_UP,
    &PROCESS_LAST_SEEN_SECONDS,
    &BUS_MESSAGES,
    &BUS_MALFORMED_MESSAGES,
    &BUS_SEQUENCE_GAPS,
    &PROCESS_BUS_MALFORMED_MESSAGES,
    &PROCESS_BUS_SEQUENCE_GAPS,
];

#[cfg(test)]
mod naming_tests {
    use super::*;
    use std::collections::HashSet;

    /// Name segments that are not base units (`_seconds`, `_sats`, `_bytes` are).
    const NON_BASE_UNITS: &[&str] = &[
        "ms",
        "msec",
        "millis",
        "milliseconds",
        "us",
        "micros",
        "microseconds",
        "ns",
        "nanoseconds",
        "sec",
        "secs",
        "minutes",
        "hours",
        "days",
        "kb",
        "mb",
        "gb",
        "kib",
        "mib",
        "kilobytes",
        "megabytes",
        "btc",
        "percent",
    ];

    fn snake_case(s: &str) -> bool {
        s.starts_with(|c: char| c.is_ascii_lowercase())
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !s.ends_with('_')
            && !s.contains("__")
    }

    #[test]
    fn every_metric_follows_the_naming_conventions() {
        for def in ALL {
            let name = def.name;
            assert!(name.starts_with("jdc_"), "{name}: no jdc_ prefix");
            assert!(snake_case(name), "{name}: not snake_case");
            // The encoder adds `_total` to counters and `_info` to info metrics; gauges and
            // histograms are no totals.
            assert!(!name.ends_with("_total"), "{name}: ends in _total");
            // A gauge may be an info-style gauge (`jdc_upstream_info`, 1 per label set).
            if def.kind != MetricKind::Gauge {
                assert!(!name.ends_with("_info"), "{name}: ends in _info");
            }
            for suffix in ["_count", "_sum", "_bucket", "_created"] {
                assert!(!name.ends_with(suffix), "{name}: ends in {suffix}");
            }
            for segment in name.split('_') {
                assert!(
                    !NON_BASE_UNITS.contains(&segment),
                    "{name}: `{segment}` is not a base unit (_seconds, _sats, _bytes)"
                );
            }
            let mut labels = HashSet::new();
            for label in def.labels {
                assert!(snake_case(label), "{name}: label {label} not snake_case");
                assert!(
                    !["le", "quantile"].contains(label),
                    "{name}: label {label} is reserved"
                );
                assert!(labels.insert(label), "{name}: label {label} twice");
            }
            assert!(!def.help.is_empty(), "{name}: no help");
            // The encoder ends help texts with a full stop.
            assert!(!def.help.ends_with('.'), "{name}: help ends in a full stop");
        }
    }

    #[test]
    fn names_are_unique_and_every_definition_is_listed() {
        let mut names = HashSet::new();
        for def in ALL {
            assert!(names.insert(def.name), "{} twice", def.name);
        }
        let mut samples = HashSet::new();
        for def in ALL {
            assert!(samples.insert(def.exposed()), "{} twice", def.exposed());
        }
        // Every `MetricDef` of this file is in `ALL` (so registered, documented, linted).
        let defined = include_str!("metric_names.rs")
            .lines()
            .filter(|l| l.starts_with("pub const ") && l.ends_with(": MetricDef = MetricDef {"))
            .count();
        assert_eq!(defined, ALL.len(), "a MetricDef is missing from ALL");
    }
}
