use super::*;
use bytes::Bytes;
use jdc_shared::bus::{Envelope, BUS_PROTOCOL_VERSION};
use jdc_shared::messages::{Dropped, JobKind, UpstreamStatus};
use serde::Serialize;

const T0: u64 = 1_764_028_800_000_000;
const S: u64 = 1_000_000;

fn received<T: Serialize>(stream: &str, topic: Topic, body: &T, sent_at_us: u64) -> Received {
    let bytes = rmp_serde::to_vec_named(&Envelope {
        version: BUS_PROTOCOL_VERSION,
        source: stream.to_string(),
        instance: 1,
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
        resent: false,
        bytes: Bytes::from(bytes),
    }
}

fn resent(mut msg: Received) -> Received {
    msg.resent = true;
    msg
}

fn model() -> Model {
    Model::new(Settings::default(), T0)
}

fn heartbeat(started_at_us: u64, state: &str) -> Heartbeat {
    Heartbeat {
        started_at_us,
        version: "0.1.0".into(),
        state: state.into(),
        counters: Default::default(),
    }
}

fn tip(height: u32) -> Tip {
    Tip {
        height,
        prev_hash: format!("{height:064x}"),
        nbits: 0x207f_ffff,
        time: 1,
        min_time: 1,
        version: 0x2000_0000,
        subsidy: 5_000_000_000,
        detected_at_us: T0,
        detected_by: "zmq".into(),
    }
}

fn summary(id: u64) -> TemplateSummary {
    TemplateSummary {
        id,
        height: 102,
        prev_hash: format!("{:064x}", 102),
        tx_count: 3,
        fees: 3_000,
        weight: 1_200,
        coinbase_value: 5_000_003_000,
        gbt_us: 2_000,
    }
}

fn share(channel_id: u32, accepted: bool, difficulty: f64) -> ShareResult {
    ShareResult {
        channel_id,
        channel_kind: "extended".into(),
        accepted,
        reason: if accepted {
            String::new()
        } else {
            "stale-share".into()
        },
        difficulty,
    }
}

fn upstream(id: u64, switches: u64) -> UpstreamState {
    UpstreamState {
        id,
        mode: "pool".into(),
        active: 1,
        switches,
        reason: String::new(),
        since_us: T0,
        upstreams: vec![UpstreamStatus {
            rank: 1,
            pool: "p:1".into(),
            jds: "j:1".into(),
            mode: "full-template".into(),
            state: "active".into(),
            last_error: String::new(),
        }],
    }
}

#[test]
fn a_selection_is_read_without_its_txids_and_with_what_it_dropped() {
    #[derive(Serialize)]
    struct Body {
        id: u64,
        template_id: u64,
        height: u32,
        policy: &'static str,
        txids: Vec<String>,
        fees: u64,
        weight: u64,
        dropped: Vec<Dropped>,
        a_future_field: bool,
    }
    let mut m = model();
    let body = Body {
        id: 7,
        template_id: 6,
        height: 102,
        policy: "fee-rate",
        txids: vec!["aa".repeat(32), "bb".repeat(32)],
        fees: 2_000,
        weight: 800,
        dropped: vec![Dropped {
            reason: "below-min-fee-rate".into(),
            count: 4,
            fee: 40,
        }],
        a_future_field: true,
    };
    m.handle(
        &received("selector", Topic::Selection, &body, T0 + S),
        T0 + S,
    )
    .unwrap();
    let sel = &m.selection.as_ref().unwrap().value;
    assert_eq!(sel.tx_count, 2);
    assert_eq!(sel.fees, 2_000);
    assert_eq!(sel.policy, "fee-rate");
    assert_eq!(sel.dropped[0].count, 4);
    assert_eq!(sel.dropped[0].fee, 40);
}

#[test]
fn re_sent_state_is_applied_once_and_keeps_its_age() {
    let mut m = model();
    let tip_msg = received("watcher", Topic::Tip, &tip(102), T0 + S);
    let summary_msg = received("watcher", Topic::Summary, &summary(55), T0 + 2 * S);
    let upstream_msg = received("declarator", Topic::Upstream, &upstream(1, 0), T0 + 3 * S);
    m.handle(&tip_msg, T0 + S).unwrap();
    m.handle(&summary_msg, T0 + 2 * S).unwrap();
    m.handle(&upstream_msg, T0 + 3 * S).unwrap();
    // The same envelopes re-sent later: nothing changes, ages still count from the first.
    for later in [10, 20, 30] {
        m.handle(&resent(tip_msg.clone()), T0 + later * S).unwrap();
        m.handle(&resent(summary_msg.clone()), T0 + later * S)
            .unwrap();
        m.handle(&resent(upstream_msg.clone()), T0 + later * S)
            .unwrap();
    }
    assert_eq!(m.tips, 1);
    assert_eq!(m.tip.as_ref().unwrap().at_us, T0 + S);
    assert_eq!(m.template.as_ref().unwrap().at_us, T0 + 2 * S);
    assert_eq!(m.upstream.as_ref().unwrap().at_us, T0 + 3 * S);

    // A late start: the first copy seen is a re-send, its age is that of the original.
    let mut late = model();
    late.handle(&resent(summary_msg.clone()), T0 + 40 * S)
        .unwrap();
    assert_eq!(late.template.as_ref().unwrap().at_us, T0 + 2 * S);

    // New state replaces it; a clock ahead of ours is capped at arrival.
    m.handle(
        &received("watcher", Topic::Tip, &tip(103), T0 + 99 * S),
        T0 + 50 * S,
    )
    .unwrap();
    assert_eq!(m.tips, 2);
    assert_eq!(m.tip.as_ref().unwrap().value.height, 103);
    assert_eq!(m.tip.as_ref().unwrap().at_us, T0 + 50 * S);
    m.handle(
        &received("declarator", Topic::Upstream, &upstream(2, 1), T0 + 51 * S),
        T0 + 51 * S,
    )
    .unwrap();
    assert_eq!(m.upstream.as_ref().unwrap().value.switches, 1);
}

#[test]
fn shares_are_counted_per_channel() {
    let mut m = model();
    let at = |s: u64| T0 + s * S;
    for (t, sh) in [
        (1, share(1, true, 10.0)),
        (2, share(1, true, 10.0)),
        (3, share(1, false, 10.0)),
        (4, share(2, true, 5.0)),
    ] {
        m.handle(&received("declarator", Topic::Share, &sh, at(t)), at(t))
            .unwrap();
    }
    let c1 = &m.channels[&1];
    assert_eq!((c1.accepted, c1.rejected), (2, 1));
    assert_eq!(c1.last_reject, "stale-share");
    assert_eq!(c1.kind, "extended");
    assert_eq!(c1.last_share_us, at(3));
    assert_eq!((m.channels[&2].accepted, m.channels[&2].rejected), (1, 0));
    assert_eq!(m.share_totals(), (3, 1));
}

#[test]
fn hashrate_is_difficulty_times_two_to_the_32_over_the_window() {
    let settings = Settings {
        down_after_us: 3 * S,
        hashrate_window_us: 60 * S,
        ..Settings::default()
    };
    let mut m = Model::new(settings, T0);
    let h = HASHES_PER_DIFFICULTY;
    // Ten accepted shares of difficulty 100 in the first 10 s; rejected ones do not count.
    for i in 1..=10 {
        let t = T0 + i * S;
        m.handle(
            &received("declarator", Topic::Share, &share(1, true, 100.0), t),
            t,
        )
        .unwrap();
        m.handle(
            &received("declarator", Topic::Share, &share(1, false, 1e9), t),
            t,
        )
        .unwrap();
    }
    let c = m.channels[&1].clone();
    // 20 s after start: averaged over the 20 s seen so far.
    let expect = 10.0 * 100.0 * h / 20.0;
    assert!((m.channel_hashrate(&c, T0 + 20 * S) - expect).abs() < 1.0);
    // 60 s after start: over the whole window.
    let expect = 10.0 * 100.0 * h / 60.0;
    assert!((m.channel_hashrate(&c, T0 + 60 * S) - expect).abs() < 1.0);
    // 65 s: the shares of the first 5 s have left the window.
    let expect = 5.0 * 100.0 * h / 60.0;
    assert!((m.channel_hashrate(&c, T0 + 65 * S) - expect).abs() < 1.0);
    // Long after: nothing.
    assert_eq!(m.channel_hashrate(&c, T0 + 600 * S), 0.0);

    // A second channel adds up into the total.
    m.handle(
        &received(
            "declarator",
            Topic::Share,
            &share(2, true, 50.0),
            T0 + 30 * S,
        ),
        T0 + 30 * S,
    )
    .unwrap();
    let expect = (10.0 * 100.0 + 50.0) * h / 60.0;
    assert!((m.total_hashrate(T0 + 60 * S) - expect).abs() < 1.0);
    // Right at start the span is at least one second.
    let fresh = Model::new(settings, T0);
    assert_eq!(fresh.hashrate_span_us(T0), S);
}

#[test]
fn old_shares_leave_the_window_as_new_ones_come() {
    let settings = Settings {
        down_after_us: 3 * S,
        hashrate_window_us: 10 * S,
        ..Settings::default()
    };
    let mut m = Model::new(settings, T0);
    for i in 0..100 {
        let t = T0 + i * S;
        m.handle(
            &received("declarator", Topic::Share, &share(1, true, 1.0), t),
            t,
        )
        .unwrap();
    }
    assert!(m.channels[&1].window.len() <= 10);
    assert_eq!(m.channels[&1].accepted, 100);
}

#[test]
fn processes_are_waiting_then_up_then_down_by_the_clock() {
    let mut m = model();
    let down_after = m.settings.down_after_us;
    assert_eq!(m.liveness("watcher", T0), Liveness::Waiting);
    assert_eq!(m.liveness("selector", T0), Liveness::Waiting);
    let hb = received(
        "watcher",
        Topic::Heartbeat,
        &heartbeat(T0 - S, "ok"),
        T0 + S,
    );
    m.handle(&hb, T0 + S).unwrap();
    assert_eq!(m.liveness("watcher", T0 + S), Liveness::Up);
    assert_eq!(m.liveness("watcher", T0 + S + down_after), Liveness::Up);
    assert_eq!(
        m.liveness("watcher", T0 + S + down_after + 1),
        Liveness::Down
    );
    assert_eq!(m.liveness("selector", T0 + S), Liveness::Waiting);
    let p = m.process("watcher").unwrap();
    assert_eq!(p.heartbeat.as_ref().unwrap().state, "ok");
    assert_eq!(p.restarts, 0);

    // It comes back, restarted (a new start time), in another state.
    m.handle(
        &received(
            "watcher",
            Topic::Heartbeat,
            &heartbeat(T0 + 9 * S, "waiting-for-bitcoind"),
            T0 + 10 * S,
        ),
        T0 + 10 * S,
    )
    .unwrap();
    assert_eq!(m.liveness("watcher", T0 + 10 * S), Liveness::Up);
    let p = m.process("watcher").unwrap();
    assert_eq!(p.restarts, 1);
    assert_eq!(p.heartbeat.as_ref().unwrap().state, "waiting-for-bitcoind");
    assert_eq!(p.messages, 2);

    // Other messages are not heartbeats: they do not keep a process up.
    m.handle(
        &received("watcher", Topic::Tip, &tip(102), T0 + 20 * S),
        T0 + 20 * S,
    )
    .unwrap();
    assert_eq!(m.liveness("watcher", T0 + 20 * S), Liveness::Down);
    assert_eq!(
        m.process("watcher").unwrap().last_message_us,
        Some(T0 + 20 * S)
    );
    // An unknown stream is ignored.
    assert_eq!(m.liveness("nobody", T0), Liveness::Waiting);
}

#[test]
fn blocks_and_declarations_keep_their_latest_stage() {
    let mut m = model();
    let block = |stage, reason: &str| BlockEvent {
        stage,
        height: 102,
        hash: "cd".repeat(32),
        tx_count: 1,
        reason: reason.into(),
        submitted: true,
        failed: false,
    };
    for b in [
        block(BlockStage::Found, ""),
        block(BlockStage::Accepted, ""),
    ] {
        m.handle(&received("declarator", Topic::Block, &b, T0), T0)
            .unwrap();
    }
    assert_eq!(
        m.block_counts,
        StageCounts {
            first: 1,
            accepted: 1,
            rejected: 0,
            failed: 0
        }
    );
    assert_eq!(m.blocks.len(), 1);
    assert_eq!(m.blocks[0].stage, BlockStage::Accepted);
    assert_eq!(m.blocks[0].label(), "accepted");

    // A block whose submitblock got no answer is `failed`, not `rejected`; one that could not
    // be submitted says so.
    let other = |stage, submitted, failed, hash: &str| BlockEvent {
        stage,
        height: 103,
        hash: hash.repeat(32),
        tx_count: 1,
        reason: "why".into(),
        submitted,
        failed,
    };
    for b in [
        other(BlockStage::Found, true, false, "ee"),
        other(BlockStage::Rejected, true, true, "ee"),
        other(BlockStage::Found, false, false, "ff"),
    ] {
        m.handle(&received("declarator", Topic::Block, &b, T0), T0)
            .unwrap();
    }
    assert_eq!(
        m.block_counts,
        StageCounts {
            first: 3,
            accepted: 1,
            rejected: 0,
            failed: 1
        }
    );
    let labels: Vec<&str> = m.blocks.iter().map(|b| b.label()).collect();
    assert_eq!(labels, ["accepted", "failed", "not submitted"]);

    let declaration = |template_id, stage: &str| Declaration {
        template_id,
        upstream: 1,
        stage: stage.into(),
        reason: if stage == "rejected" {
            "invalid".into()
        } else {
            String::new()
        },
        tx_count: 2,
        since_tip_us: 1_000,
    };
    for d in [
        declaration(1, "declared"),
        declaration(2, "declared"),
        declaration(1, "accepted"),
        declaration(2, "rejected"),
    ] {
        m.handle(&received("declarator", Topic::Declaration, &d, T0), T0)
            .unwrap();
    }
    assert_eq!(
        m.declaration_counts,
        StageCounts {
            first: 2,
            accepted: 1,
            rejected: 1,
            failed: 0
        }
    );
    let rows: Vec<(u64, &str)> = m
        .declarations
        .iter()
        .map(|r| (r.template_id, r.stage.as_str()))
        .collect();
    assert_eq!(rows, [(1, "accepted"), (2, "rejected")]);
    assert_eq!(m.declarations[1].reason, "invalid");
}

#[test]
fn jobs_events_and_bounds() {
    let mut m = model();
    for kind in [JobKind::Empty, JobKind::Full, JobKind::Full] {
        let job = JobSent {
            kind,
            height: 102,
            template_id: 1,
            tx_count: 2,
            channels: 3,
            new_tip: false,
            tip_to_job_us: 10,
            first_on_tip: false,
        };
        m.handle(&received("declarator", Topic::Job, &job, T0), T0)
            .unwrap();
    }
    assert_eq!(m.jobs, (1, 2));
    assert_eq!(m.job.as_ref().unwrap().value.kind, JobKind::Full);

    for i in 0..MAX_EVENTS + 5 {
        let ev = Event {
            level: "info".into(),
            kind: "k".into(),
            message: format!("event {i}"),
        };
        m.handle(&received("selector", Topic::Event, &ev, T0), T0)
            .unwrap();
    }
    assert_eq!(m.events.len(), MAX_EVENTS);
    assert_eq!(
        m.events.back().unwrap().event.message,
        format!("event {}", MAX_EVENTS + 4)
    );
    assert_eq!(m.events.back().unwrap().process, "selector");

    for id in 0..(MAX_CHANNELS as u32 + 3) {
        let t = T0 + u64::from(id);
        m.handle(
            &received("declarator", Topic::Share, &share(id, true, 1.0), t),
            t,
        )
        .unwrap();
    }
    assert_eq!(m.channels.len(), MAX_CHANNELS);
    // The channels heard from longest ago were forgotten.
    assert!(!m.channels.contains_key(&0));
    assert!(m.channels.contains_key(&(MAX_CHANNELS as u32 + 2)));
}

#[test]
fn a_malformed_body_is_counted_and_changes_nothing() {
    let mut m = model();
    // A share body on the tip topic.
    let bad = received("watcher", Topic::Tip, &share(1, true, 1.0), T0);
    assert!(m.handle(&bad, T0).is_err());
    assert_eq!(m.malformed_bodies, 1);
    assert!(m.tip.is_none());
    assert_eq!(m.process("watcher").unwrap().messages, 1);
    // The full template is not read at all.
    let ignored = received("watcher", Topic::Template, &summary(1), T0);
    m.handle(&ignored, T0).unwrap();
    assert!(m.template.is_none());
}
