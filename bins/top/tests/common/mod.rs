//! Recorded bus traffic of a small stack, made of the shared message types, for the render
//! and terminal tests.
#![allow(dead_code)]

use bytes::Bytes;
use jdc_shared::bus::{Envelope, Received, Topic, BUS_PROTOCOL_VERSION};
use jdc_shared::messages::{
    BlockEvent, BlockStage, Declaration, Device, Devices, Dropped, Event, Heartbeat, JobKind,
    JobSent, Selection, ShareResult, TemplateSummary, Tip, UpstreamState, UpstreamStatus,
};
use serde::Serialize;

/// The recorded session starts here (unix µs).
pub const T0: u64 = 1_764_028_800_000_000;
/// One second in µs.
pub const S: u64 = 1_000_000;

/// A message as the subscriber hands it over: the real envelope around `body`.
pub fn received<T: Serialize>(
    stream: &str,
    topic: Topic,
    body: &T,
    sent_at_us: u64,
    resent: bool,
) -> Received {
    let bytes = rmp_serde::to_vec_named(&Envelope {
        version: BUS_PROTOCOL_VERSION,
        source: stream.to_string(),
        instance: T0,
        seq: 1,
        sent_at_us,
        body,
    })
    .unwrap();
    Received {
        stream: stream.to_string(),
        topic,
        source: stream.to_string(),
        sent_at_us,
        resent,
        bytes: Bytes::from(bytes),
    }
}

pub fn heartbeat(state: &str) -> Heartbeat {
    Heartbeat {
        started_at_us: T0 - 3_600 * S,
        version: "0.1.0".into(),
        state: state.into(),
        counters: Default::default(),
    }
}

pub fn tip(height: u32) -> Tip {
    Tip {
        height,
        prev_hash: format!("00000000000000000001{:044x}", height),
        nbits: 0x1702_7e93,
        time: 1_764_028_800,
        min_time: 1_764_027_000,
        version: 0x2000_0000,
        subsidy: 312_500_000,
        detected_at_us: T0,
        detected_by: "zmq".into(),
    }
}

pub fn summary(id: u64, height: u32) -> TemplateSummary {
    TemplateSummary {
        id,
        height,
        prev_hash: tip(height).prev_hash,
        tx_count: 3_215,
        fees: 12_345_678,
        weight: 3_991_234,
        coinbase_value: 312_500_000 + 12_345_678,
        gbt_us: 182_000,
    }
}

pub fn selection(id: u64, template_id: u64, height: u32) -> Selection {
    Selection {
        id,
        template_id,
        height,
        prev_hash: tip(height).prev_hash,
        version: 0x2000_0000,
        bits: 0x1702_7e93,
        curtime: 1_764_028_800,
        mintime: 1_764_027_000,
        policy: "fee-rate".into(),
        txids: (0..3_100).map(|i| format!("{i:064x}")).collect(),
        fees: 12_000_000,
        coinbase_value: 312_500_000 + 12_000_000,
        weight: 3_950_000,
        sigops: 12_000,
        witness_commitment: "00".repeat(32),
        dropped: vec![
            Dropped {
                reason: "below-min-fee-rate".into(),
                count: 100,
                fee: 300_000,
            },
            Dropped {
                reason: "excluded-script".into(),
                count: 15,
                fee: 45_678,
            },
        ],
        tip_detected_at_us: T0,
    }
}

pub fn upstream_state(id: u64) -> UpstreamState {
    UpstreamState {
        id,
        mode: "pool".into(),
        active: 1,
        switches: 2,
        reason: "upstream #2 failed: connection refused".into(),
        since_us: T0 + 5 * S,
        upstreams: vec![
            UpstreamStatus {
                rank: 1,
                pool: "pool.example:34254".into(),
                jds: "pool.example:34264".into(),
                mode: "full-template".into(),
                state: "active".into(),
                last_error: String::new(),
            },
            UpstreamStatus {
                rank: 2,
                pool: "backup.example:34254".into(),
                jds: "backup.example:34264".into(),
                mode: "coinbase-only".into(),
                state: "down".into(),
                last_error: "connection refused".into(),
            },
        ],
    }
}

pub fn declaration(template_id: u64, stage: &str, reason: &str) -> Declaration {
    Declaration {
        template_id,
        upstream: 1,
        stage: stage.into(),
        reason: reason.into(),
        tx_count: 3_100,
        since_tip_us: 84_000,
    }
}

/// The declarator's `devices` state: `(channel id, kind, user identity, nominal hashrate)`.
pub fn devices(id: u64, channels: &[(u32, &str, &str, f64)]) -> Devices {
    Devices {
        id,
        devices: channels
            .iter()
            .map(|&(channel_id, kind, user, hashrate)| Device {
                channel_id,
                kind: kind.into(),
                user_identity: user.into(),
                nominal_hashrate: hashrate,
                peer: format!("192.0.2.{channel_id}:4000"),
                since_us: T0 + 20 * S,
            })
            .collect(),
    }
}

pub fn share(channel_id: u32, kind: &str, accepted: bool, difficulty: f64) -> ShareResult {
    ShareResult {
        channel_id,
        channel_kind: kind.into(),
        accepted,
        reason: if accepted {
            String::new()
        } else {
            "difficulty-too-low".into()
        },
        difficulty,
    }
}

pub fn block(stage: BlockStage, height: u32, reason: &str) -> BlockEvent {
    BlockEvent {
        stage,
        height,
        hash: format!("0000000000000000000{:045x}", u64::from(height) * 7919),
        tx_count: 3_101,
        reason: reason.into(),
        submitted: true,
        failed: false,
    }
}

pub fn event(level: &str, kind: &str, message: &str) -> Event {
    Event {
        level: level.into(),
        kind: kind.into(),
        message: message.into(),
    }
}

pub fn job(kind: JobKind, height: u32, template_id: u64, tx_count: u32) -> JobSent {
    JobSent {
        kind,
        height,
        template_id,
        tx_count,
        channels: 2,
        new_tip: kind == JobKind::Empty,
        tip_to_job_us: 900,
        first_on_tip: true,
    }
}

/// Which processes speak in a recording.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Declarator {
    /// Heartbeats until the end.
    Up,
    /// Heartbeats and data until 100 s, then silence.
    SilentAfter100s,
    /// Never heard from.
    Never,
}

/// Collects recorded messages with their arrival times.
#[derive(Default)]
struct Recorder {
    out: Vec<(u64, Received)>,
}

impl Recorder {
    /// `body` sent at `T0 + sent` on `stream`, arriving 1 ms later.
    fn live(&mut self, stream: &str, topic: Topic, sent: u64, body: &dyn erased::Body) {
        self.out.push((
            T0 + sent + 1_000,
            body.received(stream, topic, T0 + sent, false),
        ));
    }

    /// A re-send, arriving at `T0 + arrival`, of `body` first sent at `T0 + sent`.
    fn resent(
        &mut self,
        arrival: u64,
        stream: &str,
        topic: Topic,
        sent: u64,
        body: &dyn erased::Body,
    ) {
        self.out
            .push((T0 + arrival, body.received(stream, topic, T0 + sent, true)));
    }
}

/// A recording of two minutes of a small stack mining for a pool: every message with its
/// arrival time, in order of arrival. State topics are re-sent every 10 s.
pub fn recording(declarator: Declarator) -> Vec<(u64, Received)> {
    let mut r = Recorder::default();
    let declarator_until = match declarator {
        Declarator::Up => 120 * S,
        Declarator::SilentAfter100s => 100 * S,
        Declarator::Never => 0,
    };
    for second in 0..120u64 {
        let t = second * S + 500_000;
        r.live("watcher", Topic::Heartbeat, t, &heartbeat("ok"));
        r.live("selector", Topic::Heartbeat, t, &heartbeat("ok"));
    }

    // The watcher and the selector: two tips, their templates and selections.
    r.live(
        "watcher",
        Topic::Event,
        2 * S,
        &event(
            "info",
            "bitcoind-connected",
            "bitcoind reachable at 127.0.0.1:8332",
        ),
    );
    for (at, height, template, sel) in [(10 * S, 870_001, 11, 21), (90 * S, 870_002, 12, 22)] {
        r.live("watcher", Topic::Tip, at, &tip(height));
        r.live(
            "watcher",
            Topic::Summary,
            at + 200_000,
            &summary(template, height),
        );
        r.live(
            "selector",
            Topic::Selection,
            at + 400_000,
            &selection(sel, template, height),
        );
    }
    // Re-sends of the latest state every 10 s: the same envelopes, never counted twice.
    for arrival in (20..=110).step_by(10).map(|s| s * S + 700_000) {
        let (sent, height, template, sel) = if arrival < 90 * S {
            (10 * S, 870_001, 11, 21)
        } else {
            (90 * S, 870_002, 12, 22)
        };
        r.resent(arrival, "watcher", Topic::Tip, sent, &tip(height));
        r.resent(
            arrival,
            "watcher",
            Topic::Summary,
            sent + 200_000,
            &summary(template, height),
        );
        r.resent(
            arrival,
            "selector",
            Topic::Selection,
            sent + 400_000,
            &selection(sel, template, height),
        );
    }

    if declarator != Declarator::Never {
        let mut d = Recorder::default();
        for second in 0..120u64 {
            d.live(
                "declarator",
                Topic::Heartbeat,
                second * S + 500_000,
                &heartbeat("serving-devices"),
            );
        }
        d.live("declarator", Topic::Upstream, 3 * S, &upstream_state(1));
        d.live(
            "declarator",
            Topic::Event,
            3 * S,
            &event(
                "warn",
                "upstream-down",
                "upstream #2 backup.example:34254 failed: connection refused",
            ),
        );
        d.live("declarator", Topic::Upstream, 5 * S, &upstream_state(2));
        for s in [15, 45, 75] {
            d.resent(
                s * S,
                "declarator",
                Topic::Upstream,
                5 * S,
                &upstream_state(2),
            );
        }
        for (at, height, template, stage, reason) in [
            (10 * S, 870_001, 11, "accepted", ""),
            (90 * S, 870_002, 12, "rejected", "invalid-job-param-value"),
        ] {
            d.live(
                "declarator",
                Topic::Job,
                at + 100_000,
                &job(JobKind::Empty, height, template - 10, 0),
            );
            d.live(
                "declarator",
                Topic::Job,
                at + 500_000,
                &job(JobKind::Full, height, template, 3_100),
            );
            d.live(
                "declarator",
                Topic::Declaration,
                at + 510_000,
                &declaration(template, "declared", ""),
            );
            d.live(
                "declarator",
                Topic::Declaration,
                at + 600_000,
                &declaration(template, stage, reason),
            );
        }
        d.live(
            "declarator",
            Topic::Event,
            90 * S + 600_000,
            &event(
                "warn",
                "declaration-rejected",
                "job 12 refused by upstream #1: invalid-job-param-value",
            ),
        );
        d.live(
            "declarator",
            Topic::Block,
            60 * S,
            &block(BlockStage::Found, 870_001, ""),
        );
        d.live(
            "declarator",
            Topic::Block,
            60 * S + 300_000,
            &block(BlockStage::Accepted, 870_001, ""),
        );
        d.live(
            "declarator",
            Topic::Event,
            60 * S + 300_000,
            &event(
                "info",
                "block-accepted",
                "block 870001 accepted by bitcoind",
            ),
        );
        // Channel 1 (extended): 30 accepted shares of difficulty 1000 and one rejected;
        // channel 2 (standard): 10 accepted of difficulty 500; channel 3: one rejected.
        for i in 0..30u64 {
            d.live(
                "declarator",
                Topic::Share,
                30 * S + i * 2 * S,
                &share(1, "extended", true, 1_000.0),
            );
        }
        d.live(
            "declarator",
            Topic::Share,
            33 * S + 1_000,
            &share(1, "extended", false, 1_000.0),
        );
        for i in 0..10u64 {
            d.live(
                "declarator",
                Topic::Share,
                40 * S + i * 5 * S,
                &share(2, "standard", true, 500.0),
            );
        }
        d.live(
            "declarator",
            Topic::Share,
            70 * S,
            &share(3, "standard", false, 500.0),
        );
        r.out.extend(
            d.out
                .into_iter()
                .filter(|(arrival, _)| *arrival < T0 + declarator_until),
        );
    }
    // Stable: messages arriving together keep their recorded order.
    r.out.sort_by_key(|(arrival, _)| *arrival);
    r.out
}

/// Type-erased serializable bodies, so one helper sends any message type.
pub mod erased {
    use super::*;

    pub trait Body {
        fn received(&self, stream: &str, topic: Topic, sent_at_us: u64, resent: bool) -> Received;
    }

    impl<T: Serialize> Body for T {
        fn received(&self, stream: &str, topic: Topic, sent_at_us: u64, resent: bool) -> Received {
            super::received(stream, topic, self, sent_at_us, resent)
        }
    }
}
