use super::*;
use bytes::Bytes;
use jdc_shared::bus::{Envelope, HeartbeatWithStats, BUS_PROTOCOL_VERSION};
use jdc_shared::messages::{
    BlockEvent, Declaration, Dropped, Event, Heartbeat, JobKind, JobSent, Selection, ShareResult,
    Template, TemplateSummary, TemplateTx, Tip, UpstreamState,
};

const PROCESSES: [&str; 3] = ["watcher", "selector", "declarator"];

/// The value of the sample `series` (name with labels, as written) in an exposition.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

fn render(m: &Metrics, now_us: u64) -> String {
    m.render(now_us, 3_000, &BusStats::default()).unwrap()
}

fn received<T: serde::Serialize>(stream: &str, topic: Topic, body: &T) -> Received {
    let env = Envelope {
        version: BUS_PROTOCOL_VERSION,
        source: stream.to_string(),
        instance: 1,
        seq: 1,
        sent_at_us: 1,
        body,
    };
    Received {
        stream: stream.to_string(),
        topic,
        source: stream.to_string(),
        sent_at_us: 1,
        resent: false,
        bytes: Bytes::from(rmp_serde::to_vec_named(&env).unwrap()),
    }
}

fn tip(prev: &str) -> Tip {
    Tip {
        height: 10,
        prev_hash: prev.repeat(32),
        nbits: 0x207f_ffff,
        time: 1,
        min_time: 1,
        version: 0x2000_0000,
        subsidy: 5_000_000_000,
        detected_at_us: 1,
        detected_by: "zmq".into(),
    }
}

fn template(id: u64, n: usize, fees: u64) -> Template {
    Template {
        id,
        height: 10,
        prev_hash: "00".repeat(32),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: "7f".repeat(32),
        curtime: 1,
        mintime: 1,
        coinbase_value: 5_000_000_000 + fees,
        subsidy: 5_000_000_000,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: (0..n)
            .map(|i| TemplateTx {
                data: vec![1, 2, 3],
                txid: format!("{i:064x}"),
                wtxid: format!("{i:064x}"),
                fee: 1,
                weight: 400,
                sigops: 0,
                depends: vec![],
            })
            .collect(),
        tip_detected_at_us: 0,
    }
}

fn selection(id: u64, template_id: u64, fees: u64, dropped: Vec<Dropped>) -> Selection {
    let t = template(template_id, 2, fees);
    Selection {
        id,
        template_id,
        height: 10,
        prev_hash: t.prev_hash,
        version: t.version,
        bits: t.bits,
        curtime: 1,
        mintime: 1,
        policy: "fee-rate".into(),
        txids: t.txs.into_iter().map(|x| x.txid).collect(),
        fees,
        coinbase_value: 5_000_000_000 + fees,
        weight: 800,
        sigops: 0,
        witness_commitment: "00".repeat(32),
        dropped,
        tip_detected_at_us: 0,
    }
}

fn share(accepted: bool, reason: &str, kind: &str) -> ShareResult {
    ShareResult {
        channel_id: 1,
        channel_kind: kind.into(),
        accepted,
        reason: reason.into(),
        difficulty: 1.0,
    }
}

fn heartbeat(started: u64) -> HeartbeatWithStats {
    HeartbeatWithStats {
        heartbeat: Heartbeat {
            started_at_us: started,
            version: "0.1.0".into(),
            state: "ok".into(),
            counters: Default::default(),
        },
        bus_received: 0,
        bus_malformed: 0,
        bus_gaps: 0,
    }
}

#[test]
fn starts_at_zero_with_every_process_down() {
    let m = Metrics::new(&PROCESSES);
    let text = render(&m, 1);
    assert_eq!(value(&text, "jdc_tips_total"), Some(0.0));
    assert_eq!(value(&text, "jdc_templates_total"), Some(0.0));
    assert_eq!(value(&text, "jdc_bus_malformed_messages_total"), Some(0.0));
    for p in PROCESSES {
        assert_eq!(
            value(&text, &format!("jdc_process_up{{process=\"{p}\"}}")),
            Some(0.0)
        );
    }
    assert_eq!(
        value(
            &text,
            &format!(
                "jdc_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    assert!(
        text.contains("# TYPE jdc_tip_to_job_seconds histogram"),
        "{text}"
    );
    assert_eq!(
        value(&text, "jdc_tip_to_job_seconds_count{kind=\"empty\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "jdc_jobs_sent_total{kind=\"full\"}"),
        Some(0.0)
    );
    assert!(text.ends_with("# EOF\n"));
}

fn summary_of(t: &Template) -> TemplateSummary {
    TemplateSummary {
        id: t.id,
        height: t.height,
        prev_hash: t.prev_hash.clone(),
        tx_count: t.txs.len() as u32,
        fees: t.coinbase_value - t.subsidy,
        weight: t.txs.iter().map(|x| x.weight).sum(),
        coinbase_value: t.coinbase_value,
        gbt_us: 1_000,
    }
}

#[test]
fn re_sent_state_is_counted_once() {
    let mut m = Metrics::new(&PROCESSES);
    let t = |id, n, fees| {
        let t = template(id, n, fees);
        Message::Summary(summary_of(&t))
    };
    m.apply("watcher", &Message::Tip(tip("aa")), 1);
    m.apply("watcher", &Message::Tip(tip("aa")), 2);
    m.apply("watcher", &t(7, 3, 900), 3);
    m.apply("watcher", &t(7, 3, 900), 4);
    let text = render(&m, 5);
    assert_eq!(value(&text, "jdc_tips_total"), Some(1.0));
    assert_eq!(value(&text, "jdc_templates_total"), Some(1.0));
    assert_eq!(value(&text, "jdc_template_transactions"), Some(3.0));
    assert_eq!(value(&text, "jdc_template_fees_sats"), Some(900.0));

    m.apply("watcher", &Message::Tip(tip("bb")), 6);
    m.apply("watcher", &t(8, 5, 1_500), 7);
    let text = render(&m, 8);
    assert_eq!(value(&text, "jdc_tips_total"), Some(2.0));
    assert_eq!(value(&text, "jdc_templates_total"), Some(2.0));
    assert_eq!(value(&text, "jdc_template_transactions"), Some(5.0));
    assert_eq!(value(&text, "jdc_template_fees_sats"), Some(1_500.0));
}

#[test]
fn selections_count_fees_and_drops_once() {
    let mut m = Metrics::new(&PROCESSES);
    let dropped = vec![
        Dropped {
            reason: "below-min-fee-rate".into(),
            count: 3,
            fee: 30,
        },
        Dropped {
            reason: "parent-dropped".into(),
            count: 1,
            fee: 5,
        },
    ];
    let sel = selection(100, 7, 4_000, dropped);
    for _ in 0..3 {
        m.handle(&received("selector", Topic::Selection, &sel), 1)
            .unwrap();
    }
    let text = render(&m, 2);
    assert_eq!(value(&text, "jdc_selections_total"), Some(1.0));
    assert_eq!(value(&text, "jdc_selection_fees_sats"), Some(4_000.0));
    assert_eq!(value(&text, "jdc_selection_transactions"), Some(2.0));
    assert_eq!(
        value(
            &text,
            "jdc_selection_dropped_transactions_total{reason=\"below-min-fee-rate\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        value(
            &text,
            "jdc_selection_dropped_transactions_total{reason=\"parent-dropped\"}"
        ),
        Some(1.0)
    );
    // Every copy is still a bus message of its stream.
    assert_eq!(
        value(&text, "jdc_bus_messages_total{stream=\"selector\"}"),
        Some(3.0)
    );
    let fees = |text: &str, reason: &str| {
        value(
            text,
            &format!("jdc_selection_dropped_fees_sats{{reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(fees(&text, "below-min-fee-rate"), Some(30.0));
    assert_eq!(fees(&text, "parent-dropped"), Some(5.0));
    assert_eq!(fees(&text, "inscription"), Some(0.0));
    // The next selection's costs replace the last one's.
    let next = selection(
        101,
        7,
        4_000,
        vec![Dropped {
            reason: "inscription".into(),
            count: 2,
            fee: 700,
        }],
    );
    m.handle(&received("selector", Topic::Selection, &next), 1)
        .unwrap();
    let text = render(&m, 3);
    assert_eq!(fees(&text, "below-min-fee-rate"), Some(0.0));
    assert_eq!(fees(&text, "parent-dropped"), Some(0.0));
    assert_eq!(fees(&text, "inscription"), Some(700.0));
}

#[test]
fn jobs_and_tip_to_job_latency() {
    let mut m = Metrics::new(&PROCESSES);
    let job = |kind, new_tip, us| {
        Message::Job(JobSent {
            kind,
            height: 10,
            template_id: 1,
            tx_count: 0,
            channels: 1,
            new_tip,
            tip_to_job_us: us,
        })
    };
    m.apply("declarator", &job(JobKind::Empty, true, 1_500), 1);
    m.apply("declarator", &job(JobKind::Full, false, 12_000), 2);
    // A job without a measured latency is counted but not observed.
    m.apply("declarator", &job(JobKind::Full, false, 0), 3);
    let text = render(&m, 4);
    assert_eq!(
        value(&text, "jdc_jobs_sent_total{kind=\"empty\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "jdc_jobs_sent_total{kind=\"full\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "jdc_tip_to_job_seconds_count{kind=\"empty\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "jdc_tip_to_job_seconds_count{kind=\"full\"}"),
        Some(1.0)
    );
    // 1.5 ms falls in the 2.5 ms bucket, not the 1 ms one.
    assert_eq!(
        value(
            &text,
            "jdc_tip_to_job_seconds_bucket{le=\"0.001\",kind=\"empty\"}"
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &text,
            "jdc_tip_to_job_seconds_bucket{le=\"0.0025\",kind=\"empty\"}"
        ),
        Some(1.0)
    );
    let sum = value(&text, "jdc_tip_to_job_seconds_sum{kind=\"full\"}").unwrap();
    assert!((sum - 0.012).abs() < 1e-9, "{sum}");
}

#[test]
fn shares_and_blocks_by_label() {
    let mut m = Metrics::new(&PROCESSES);
    m.apply(
        "declarator",
        &Message::Share(share(true, "", "extended")),
        1,
    );
    m.apply(
        "declarator",
        &Message::Share(share(true, "", "extended")),
        1,
    );
    m.apply(
        "declarator",
        &Message::Share(share(false, "difficulty-too-low", "standard")),
        1,
    );
    for stage in [BlockStage::Found, BlockStage::Accepted, BlockStage::Found] {
        m.apply(
            "declarator",
            &Message::Block(BlockEvent {
                stage,
                height: 10,
                hash: "00".repeat(32),
                tx_count: 1,
                reason: String::new(),
            }),
            1,
        );
    }
    let text = render(&m, 2);
    assert_eq!(
        value(
            &text,
            "jdc_shares_total{result=\"accepted\",reason=\"\",channel_kind=\"extended\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "jdc_shares_total{result=\"rejected\",reason=\"difficulty-too-low\",channel_kind=\"standard\"}"
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "jdc_blocks_total{stage=\"found\"}"), Some(2.0));
    assert_eq!(
        value(&text, "jdc_blocks_total{stage=\"accepted\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "jdc_blocks_total{stage=\"rejected\"}"),
        Some(0.0)
    );
}

#[test]
fn bus_label_values_are_cleaned_and_capped() {
    let mut m = Metrics::new(&PROCESSES);
    m.apply(
        "declarator",
        &Message::Share(share(false, "bad\"}\nevil 1", "standard")),
        1,
    );
    for i in 0..2 * MAX_LABEL_VALUES {
        m.apply(
            "declarator",
            &Message::Share(share(false, &format!("reason-{i}"), "standard")),
            1,
        );
    }
    let text = render(&m, 2);
    assert!(text.contains("reason=\"bad___evil_1\""), "{text}");
    assert!(!text.contains("evil 1"));
    let reasons: HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("jdc_shares_total{"))
        .filter_map(|l| l.split("reason=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(reasons.len(), MAX_LABEL_VALUES + 1, "{reasons:?}");
    assert!(reasons.contains("other"));
    let other = value(
        &text,
        "jdc_shares_total{result=\"rejected\",reason=\"other\",channel_kind=\"standard\"}",
    );
    assert_eq!(other, Some((MAX_LABEL_VALUES + 1) as f64));
}

#[test]
fn heartbeats_drive_process_up_and_last_seen() {
    let mut m = Metrics::new(&PROCESSES);
    m.apply("watcher", &Message::Heartbeat(heartbeat(5)), 10_000_000);
    let text = render(&m, 11_500_000);
    assert_eq!(
        value(&text, "jdc_process_up{process=\"watcher\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "jdc_process_up{process=\"selector\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "jdc_process_last_seen_seconds{process=\"watcher\"}"),
        Some(1.5)
    );
    // Silent for longer than down_after_ms (3 s): down.
    let text = render(&m, 13_100_000);
    assert_eq!(
        value(&text, "jdc_process_up{process=\"watcher\"}"),
        Some(0.0)
    );
}

#[test]
fn undecodable_bodies_are_errors_and_bus_stats_are_mirrored() {
    let mut m = Metrics::new(&PROCESSES);
    // A Tip body on the block topic does not decode as a BlockEvent.
    let bad = received("declarator", Topic::Block, &tip("aa"));
    assert!(m.handle(&bad, 1).is_err());
    let text = render(&m, 2);
    assert_eq!(value(&text, "jdc_blocks_total{stage=\"found\"}"), Some(0.0));
    assert_eq!(
        value(&text, "jdc_bus_messages_total{stream=\"declarator\"}"),
        Some(1.0)
    );

    let stats = BusStats::default();
    stats.count_malformed();
    stats.count_malformed();
    stats
        .gaps
        .fetch_add(5, std::sync::atomic::Ordering::Relaxed);
    let text = m.render(3, 3_000, &stats).unwrap();
    assert_eq!(value(&text, "jdc_bus_malformed_messages_total"), Some(2.0));
    assert_eq!(value(&text, "jdc_bus_sequence_gaps_total"), Some(5.0));
    // Rendering again does not count twice.
    let text = m.render(4, 3_000, &stats).unwrap();
    assert_eq!(value(&text, "jdc_bus_malformed_messages_total"), Some(2.0));
}

#[test]
fn full_messages_decode_into_summaries() {
    let t = template(9, 4, 123);
    let r = received("watcher", Topic::Summary, &summary_of(&t));
    match Message::decode(&r).unwrap() {
        Message::Summary(s) => {
            assert_eq!((s.id, s.tx_count), (9, 4));
            assert_eq!(s.fees, 123);
        }
        other => panic!("{other:?}"),
    }
    // Full templates are not read.
    let r = received("watcher", Topic::Template, &t);
    assert!(matches!(Message::decode(&r).unwrap(), Message::Ignored));
    let r = received("watcher", Topic::Heartbeat, &heartbeat(3).heartbeat);
    assert!(
        matches!(Message::decode(&r).unwrap(), Message::Heartbeat(h) if h.heartbeat.started_at_us == 3)
    );
}

fn upstream_state(
    id: u64,
    mode: &str,
    active: u32,
    switches: u64,
    states: &[&str],
) -> UpstreamState {
    UpstreamState {
        id,
        mode: mode.into(),
        active,
        switches,
        reason: "upstream 1: connection lost".into(),
        since_us: 1,
        upstreams: states
            .iter()
            .enumerate()
            .map(|(i, s)| jdc_shared::messages::UpstreamStatus {
                rank: i as u32 + 1,
                pool: format!("127.0.0.1:{}", 3000 + i),
                jds: format!("127.0.0.1:{}", 4000 + i),
                mode: "full-template".into(),
                state: s.to_string(),
                last_error: String::new(),
            })
            .collect(),
    }
}

#[test]
fn upstream_state_drives_mode_rank_state_and_switches() {
    let mut m = Metrics::new(&PROCESSES);
    let send = |m: &mut Metrics, s: &UpstreamState| {
        m.handle(&received("declarator", Topic::Upstream, s), 1)
            .unwrap()
    };
    send(
        &mut m,
        &upstream_state(1, "pool", 1, 0, &["active", "standby"]),
    );
    let text = render(&m, 1);
    assert_eq!(value(&text, "jdc_mining_mode{mode=\"pool\"}"), Some(1.0));
    assert_eq!(value(&text, "jdc_mining_mode{mode=\"solo\"}"), Some(0.0));
    assert_eq!(value(&text, "jdc_upstream_active"), Some(1.0));
    assert_eq!(
        value(&text, "jdc_upstream_state{upstream=\"1\",state=\"active\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jdc_upstream_state{upstream=\"2\",state=\"standby\"}"
        ),
        Some(1.0)
    );
    assert_eq!(value(&text, "jdc_upstream_switches_total"), Some(0.0));

    // Both fail: solo, two switches; the re-sent copy changes nothing.
    let solo = upstream_state(2, "solo", 0, 2, &["down", "down"]);
    send(&mut m, &solo);
    send(&mut m, &solo);
    let text = render(&m, 1);
    assert_eq!(value(&text, "jdc_mining_mode{mode=\"solo\"}"), Some(1.0));
    assert_eq!(value(&text, "jdc_mining_mode{mode=\"pool\"}"), Some(0.0));
    assert_eq!(value(&text, "jdc_upstream_active"), Some(0.0));
    assert_eq!(
        value(&text, "jdc_upstream_state{upstream=\"1\",state=\"active\"}"),
        Some(0.0)
    );
    assert_eq!(
        value(&text, "jdc_upstream_state{upstream=\"1\",state=\"down\"}"),
        Some(1.0)
    );
    assert_eq!(value(&text, "jdc_upstream_switches_total"), Some(2.0));

    // The declarator restarts (its count starts again), then switches once more.
    send(
        &mut m,
        &upstream_state(1, "pool", 1, 0, &["active", "standby"]),
    );
    send(
        &mut m,
        &upstream_state(2, "pool", 2, 1, &["down", "active"]),
    );
    let text = render(&m, 1);
    assert_eq!(value(&text, "jdc_upstream_switches_total"), Some(3.0));
    assert_eq!(value(&text, "jdc_upstream_active"), Some(2.0));
}

#[test]
fn refused_work_is_counted_by_kind() {
    let mut m = Metrics::new(&PROCESSES);
    let event = |kind: &str| Event {
        level: "warn".into(),
        kind: kind.into(),
        message: "selection 5: witness commitment does not match".into(),
    };
    for kind in [
        "selection-refused",
        "selection-refused",
        "template-refused",
        "fallback",
    ] {
        m.handle(&received("declarator", Topic::Event, &event(kind)), 1)
            .unwrap();
    }
    let text = render(&m, 1);
    assert_eq!(
        value(&text, "jdc_work_refused_total{kind=\"selection\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "jdc_work_refused_total{kind=\"template\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(
            &text,
            "jdc_selection_dropped_transactions_total{reason=\"inscription\"}"
        ),
        Some(0.0)
    );
}

#[test]
fn chain_templates_zmq_declarations_and_hashrate() {
    let mut m = Metrics::new(&PROCESSES);
    let t0 = 1_000_000_000u64;
    m.handle(&received("watcher", Topic::Tip, &tip("ab")), t0)
        .unwrap();
    let t = template(5, 3, 700);
    m.handle(&received("watcher", Topic::Summary, &summary_of(&t)), t0)
        .unwrap();
    // The watcher's ZMQ counters ride on its heartbeats; a restart starts them again.
    let hb = |received: u64, gaps: u64| {
        let mut hb = heartbeat(1);
        hb.heartbeat.counters = [
            ("zmq_received".to_string(), received),
            ("zmq_gaps".to_string(), gaps),
        ]
        .into();
        hb
    };
    for (r, g) in [(10, 1), (15, 1), (3, 0)] {
        m.handle(
            &received("watcher", Topic::Heartbeat, &hb(r, g).heartbeat),
            t0,
        )
        .unwrap();
    }
    let declaration = |stage: &str, reason: &str| Declaration {
        template_id: 9,
        upstream: 1,
        stage: stage.into(),
        reason: reason.into(),
        tx_count: 3,
        since_tip_us: 30_000,
    };
    for (stage, reason) in [
        ("declared", ""),
        ("accepted", ""),
        ("declared", ""),
        ("rejected", "stale-chain-tip"),
    ] {
        m.handle(
            &received(
                "declarator",
                Topic::Declaration,
                &declaration(stage, reason),
            ),
            t0,
        )
        .unwrap();
    }
    // 10 accepted shares of difficulty 1 over 10 s (one rejected, not counted).
    for i in 0..10u64 {
        m.handle(
            &received("declarator", Topic::Share, &share(true, "", "extended")),
            t0 + i * 1_000_000,
        )
        .unwrap();
    }
    m.handle(
        &received(
            "declarator",
            Topic::Share,
            &share(false, "stale-share", "extended"),
        ),
        t0,
    )
    .unwrap();
    let text = render(&m, t0 + 10_000_000);
    assert_eq!(value(&text, "jdc_tip_height"), Some(10.0));
    assert_eq!(
        value(&text, "jdc_getblocktemplate_seconds_count"),
        Some(1.0)
    );
    assert_eq!(value(&text, "jdc_template_age_seconds"), Some(10.0));
    assert_eq!(value(&text, "jdc_bitcoind_zmq_messages_total"), Some(18.0));
    assert_eq!(value(&text, "jdc_bitcoind_zmq_gaps_total"), Some(1.0));
    assert_eq!(
        value(
            &text,
            "jdc_declared_jobs_total{stage=\"declared\",reason=\"\"}"
        ),
        Some(2.0)
    );
    assert_eq!(
        value(
            &text,
            "jdc_declared_jobs_total{stage=\"rejected\",reason=\"stale-chain-tip\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "jdc_tip_to_declared_job_accepted_seconds_count"),
        Some(1.0)
    );
    let difficulty = share(true, "", "extended").difficulty;
    let expected = 10.0 * difficulty * 4_294_967_296.0 / 10.0;
    let got = value(&text, "jdc_hashrate_estimate_hashes_per_second").unwrap();
    assert!(
        (got - expected).abs() < expected * 1e-9,
        "{got} vs {expected}"
    );
    // Five minutes without shares: no hashrate.
    let text = render(&m, t0 + 400_000_000);
    assert_eq!(
        value(&text, "jdc_hashrate_estimate_hashes_per_second"),
        Some(0.0)
    );
}

#[test]
fn the_exposition_holds_exactly_the_named_metrics() {
    // One message of each kind, so that every family has a series.
    let mut m = Metrics::new(&PROCESSES);
    let ev = Event {
        level: "info".into(),
        kind: "x".into(),
        message: "y".into(),
    };
    m.handle(&received("declarator", Topic::Event, &ev), 1)
        .unwrap();
    m.handle(
        &received("declarator", Topic::Share, &share(true, "", "extended")),
        1,
    )
    .unwrap();
    m.handle(
        &received(
            "declarator",
            Topic::Upstream,
            &upstream_state(1, "pool", 1, 0, &["active"]),
        ),
        1,
    )
    .unwrap();
    let d = Declaration {
        template_id: 1,
        upstream: 1,
        stage: "declared".into(),
        reason: String::new(),
        tx_count: 0,
        since_tip_us: 0,
    };
    m.handle(&received("declarator", Topic::Declaration, &d), 1)
        .unwrap();
    let mut hb = heartbeat(1);
    hb.heartbeat.counters = [
        ("sv1_bad_input_flood".to_string(), 1),
        ("tdp_templates_full".to_string(), 1),
        ("tdp_solutions_accepted".to_string(), 1),
        ("tdp_dropped_slow".to_string(), 1),
    ]
    .into();
    m.handle(&received("declarator", Topic::Heartbeat, &hb.heartbeat), 1)
        .unwrap();
    let text = render(&m, 1);
    let exposed: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, h)| (n.to_string(), h.to_string()))
        .collect();
    let named: Vec<(String, String)> = names::ALL
        .iter()
        // The encoder ends help texts with a full stop.
        .map(|d| (d.name.to_string(), format!("{}.", d.help)))
        .collect();
    assert_eq!(exposed, named);
}

#[test]
fn docs_list_every_metric() {
    let docs = include_str!("../../../../docs/metrics.md");
    for def in names::ALL {
        assert!(
            docs.contains(&format!("`{}`", def.exposed())),
            "docs/metrics.md does not list `{}`",
            def.exposed()
        );
    }
}

#[test]
fn v1_bad_input_counters_from_the_declarators_heartbeats() {
    let mut m = Metrics::new(&PROCESSES);
    let hb = |flood: u64, malformed: u64| {
        let mut hb = heartbeat(1);
        hb.heartbeat.counters = [
            ("sv1_bad_input_flood".to_string(), flood),
            ("sv1_bad_input_malformed".to_string(), malformed),
        ]
        .into();
        hb
    };
    // Totals grow, then the declarator restarts and counts from zero again.
    for (f, b) in [(100, 1), (150, 3), (5, 0)] {
        m.handle(
            &received("declarator", Topic::Heartbeat, &hb(f, b).heartbeat),
            1,
        )
        .unwrap();
    }
    let text = render(&m, 1);
    assert_eq!(
        value(&text, "jdc_sv1_bad_input_total{reason=\"flood\"}"),
        Some(155.0)
    );
    assert_eq!(
        value(&text, "jdc_sv1_bad_input_total{reason=\"malformed\"}"),
        Some(3.0)
    );
}

#[test]
fn tdp_counters_and_clients_from_the_watchers_heartbeats() {
    let mut m = Metrics::new(&PROCESSES);
    let hb = |clients: u64, full: u64, accepted: u64, slow: u64| {
        let mut hb = heartbeat(1);
        hb.heartbeat.counters = [
            ("tdp_clients".to_string(), clients),
            ("tdp_templates_full".to_string(), full),
            ("tdp_templates_future".to_string(), 2 * full),
            ("tdp_solutions_accepted".to_string(), accepted),
            ("tdp_dropped_slow".to_string(), slow),
        ]
        .into();
        hb
    };
    for (c, f, a, s) in [(3, 10, 1, 0), (2, 12, 2, 1)] {
        m.handle(
            &received("watcher", Topic::Heartbeat, &hb(c, f, a, s).heartbeat),
            1,
        )
        .unwrap();
    }
    let text = render(&m, 1);
    assert_eq!(
        value(&text, "jdc_tdp_clients"),
        Some(2.0),
        "a gauge: the latest"
    );
    assert_eq!(
        value(&text, "jdc_tdp_templates_sent_total{kind=\"full\"}"),
        Some(12.0)
    );
    assert_eq!(
        value(&text, "jdc_tdp_templates_sent_total{kind=\"future\"}"),
        Some(24.0)
    );
    assert_eq!(
        value(&text, "jdc_tdp_solutions_total{result=\"accepted\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "jdc_tdp_clients_dropped_total{reason=\"slow\"}"),
        Some(1.0)
    );
}
