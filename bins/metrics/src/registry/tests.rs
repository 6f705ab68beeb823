use super::*;
use bytes::Bytes;
use jdc_shared::bus::{Envelope, HeartbeatWithStats, BUS_PROTOCOL_VERSION};
use jdc_shared::messages::{
    BlockEvent, BlockStage, Declaration, Dropped, Event, Heartbeat, JobKind, JobSent, Selection,
    ShareResult, Template, TemplateSummary, TemplateTx, Tip, UpstreamState,
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

/// A `job` message at height 10, `us` after its tip.
fn job(kind: JobKind, new_tip: bool, us: u64, first_on_tip: bool) -> Message {
    Message::Job(JobSent {
        kind,
        height: 10,
        template_id: 1,
        tx_count: 0,
        channels: 1,
        new_tip,
        tip_to_job_us: us,
        first_on_tip,
    })
}

#[test]
fn jobs_and_tip_to_job_latency() {
    let mut m = Metrics::new(&PROCESSES);
    m.apply("declarator", &job(JobKind::Empty, true, 1_500, true), 1);
    m.apply("declarator", &job(JobKind::Full, false, 12_000, true), 2);
    // A job without a measured latency is counted but not observed.
    m.apply("declarator", &job(JobKind::Full, false, 0, true), 3);
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
fn only_the_first_job_of_each_kind_on_a_tip_is_observed() {
    let mut m = Metrics::new(&PROCESSES);
    // The tip's first empty and full jobs (2 ms, 40 ms), the same jobs written to a second
    // device connection, then template refreshes 30 s and 10 min after the tip.
    m.apply("declarator", &job(JobKind::Empty, true, 2_000, true), 1);
    m.apply("declarator", &job(JobKind::Empty, true, 2_100, false), 1);
    m.apply("declarator", &job(JobKind::Full, false, 40_000, true), 2);
    m.apply("declarator", &job(JobKind::Full, false, 40_100, false), 2);
    m.apply(
        "declarator",
        &job(JobKind::Full, false, 30_000_000, false),
        3,
    );
    m.apply(
        "declarator",
        &job(JobKind::Full, false, 600_000_000, false),
        4,
    );
    let text = render(&m, 5);
    // Every job is counted...
    assert_eq!(
        value(&text, "jdc_jobs_sent_total{kind=\"empty\"}"),
        Some(2.0)
    );
    assert_eq!(
        value(&text, "jdc_jobs_sent_total{kind=\"full\"}"),
        Some(4.0)
    );
    // ...but the latency is the first jobs' alone: nothing in the +Inf bucket beyond 1 s.
    assert_eq!(
        value(&text, "jdc_tip_to_job_seconds_count{kind=\"empty\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&text, "jdc_tip_to_job_seconds_count{kind=\"full\"}"),
        Some(1.0)
    );
    let sum = value(&text, "jdc_tip_to_job_seconds_sum{kind=\"full\"}").unwrap();
    assert!((sum - 0.04).abs() < 1e-9, "{sum}");
    assert_eq!(
        value(
            &text,
            "jdc_tip_to_job_seconds_bucket{le=\"0.05\",kind=\"full\"}"
        ),
        Some(1.0)
    );
    // A declarator older than `first_on_tip` (field absent) is counted, not observed.
    let old = received(
        "declarator",
        Topic::Job,
        &serde_json::json!({
            "kind": "full",
            "height": 11,
            "template_id": 2,
            "tx_count": 0,
            "channels": 1,
            "new_tip": true,
            "tip_to_job_us": 5_000,
        }),
    );
    m.handle(&old, 6).unwrap();
    let text = render(&m, 7);
    assert_eq!(
        value(&text, "jdc_jobs_sent_total{kind=\"full\"}"),
        Some(5.0)
    );
    assert_eq!(
        value(&text, "jdc_tip_to_job_seconds_count{kind=\"full\"}"),
        Some(1.0)
    );
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
                submitted: true,
                failed: false,
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
fn blocks_are_found_submitted_then_accepted_rejected_or_failed() {
    let mut m = Metrics::new(&PROCESSES);
    let text = render(&m, 1);
    for stage in BLOCK_STAGES {
        let series = format!("jdc_blocks_total{{stage=\"{stage}\"}}");
        assert_eq!(value(&text, &series), Some(0.0), "{series} from the start");
    }
    let block = |stage, submitted, failed, reason: &str| BlockEvent {
        stage,
        height: 10,
        hash: "00".repeat(32),
        tx_count: 1,
        reason: reason.to_string(),
        submitted,
        failed,
    };
    for event in [
        // Three blocks handed to submitblock: accepted, refused, no answer.
        block(BlockStage::Found, true, false, ""),
        block(BlockStage::Accepted, true, false, ""),
        block(BlockStage::Found, true, false, ""),
        block(BlockStage::Rejected, true, false, "bad-txnmrklroot"),
        block(BlockStage::Found, true, false, ""),
        block(BlockStage::Rejected, true, true, "connection refused"),
        // One that could not be submitted at all.
        block(BlockStage::Found, false, false, "template 7 no longer kept"),
    ] {
        m.handle(&received("declarator", Topic::Block, &event), 1)
            .unwrap();
    }
    // A declarator older than `submitted` and `failed`: its found blocks were all submitted,
    // and its transport errors were rejections.
    #[derive(serde::Serialize)]
    struct OldBlock {
        stage: BlockStage,
        height: u32,
        hash: String,
        tx_count: u32,
        reason: String,
    }
    for stage in [BlockStage::Found, BlockStage::Rejected] {
        let old = OldBlock {
            stage,
            height: 11,
            hash: "11".repeat(32),
            tx_count: 1,
            reason: String::new(),
        };
        m.handle(&received("declarator", Topic::Block, &old), 1)
            .unwrap();
    }
    let text = render(&m, 2);
    let blocks = |stage: &str| value(&text, &format!("jdc_blocks_total{{stage=\"{stage}\"}}"));
    assert_eq!(blocks("found"), Some(5.0));
    assert_eq!(blocks("submitted"), Some(4.0));
    assert_eq!(blocks("accepted"), Some(1.0));
    assert_eq!(blocks("rejected"), Some(2.0));
    assert_eq!(blocks("failed"), Some(1.0));
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
fn upstream_info_names_each_upstreams_pool_jds_and_mode() {
    let mut m = Metrics::new(&PROCESSES);
    let send = |m: &mut Metrics, s: &UpstreamState| {
        m.handle(&received("declarator", Topic::Upstream, s), 1)
            .unwrap()
    };
    let info = |upstream: u32, pool: &str, jds: &str, mode: &str| {
        format!("jdc_upstream_info{{upstream=\"{upstream}\",pool=\"{pool}\",jds=\"{jds}\",mode=\"{mode}\"}}")
    };
    send(
        &mut m,
        &upstream_state(1, "pool", 1, 0, &["active", "standby"]),
    );
    let text = render(&m, 1);
    let first = info(1, "127.0.0.1:3000", "127.0.0.1:4000", "full-template");
    let second = info(2, "127.0.0.1:3001", "127.0.0.1:4001", "full-template");
    assert_eq!(value(&text, &first), Some(1.0));
    assert_eq!(value(&text, &second), Some(1.0));
    assert_eq!(text.matches("\njdc_upstream_info{").count(), 2);

    // The declarator restarts with one upstream, now coinbase-only: only it is left.
    let mut state = upstream_state(1, "pool", 1, 0, &["active"]);
    state.upstreams[0].mode = "coinbase-only".into();
    send(&mut m, &state);
    let text = render(&m, 1);
    let only = info(1, "127.0.0.1:3000", "127.0.0.1:4000", "coinbase-only");
    assert_eq!(value(&text, &only), Some(1.0));
    assert_eq!(text.matches("\njdc_upstream_info{").count(), 1, "{text}");
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
    // `Tip.height` (10) is the next block's: the chain tip is block 9.
    assert_eq!(value(&text, "jdc_tip_height"), Some(9.0));
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
    let text = one_of_each();
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

/// The label names of a sample line (`name{a="x",b="y\"z"} 1`), in order.
fn sample_labels(line: &str) -> Vec<String> {
    let Some((_, rest)) = line.split_once('{') else {
        return vec![];
    };
    let mut labels = vec![];
    let mut chars = rest.chars();
    loop {
        let key: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if key.is_empty() {
            return labels;
        }
        labels.push(key.trim_start_matches(',').to_string());
        assert_eq!(chars.next(), Some('"'), "{line}");
        let mut escaped = false;
        for c in chars.by_ref() {
            match (escaped, c) {
                (false, '\\') => escaped = true,
                (false, '"') => break,
                _ => escaped = false,
            }
        }
        match chars.next() {
            Some(',') => continue,
            Some('}') => return labels,
            other => panic!("{line}: {other:?} after a label value"),
        }
    }
}

#[test]
fn the_exposition_types_and_labels_are_the_named_ones() {
    let text = one_of_each();
    let types: Vec<(String, String)> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_once(' '))
        .map(|(n, t)| (n.to_string(), t.to_string()))
        .collect();
    let named: Vec<(String, String)> = names::ALL
        .iter()
        .map(|d| {
            let kind = match d.kind {
                names::MetricKind::Counter => "counter",
                names::MetricKind::Gauge => "gauge",
                names::MetricKind::Histogram => "histogram",
                names::MetricKind::Info => "info",
            };
            (d.name.to_string(), kind.to_string())
        })
        .collect();
    assert_eq!(types, named);
    for def in names::ALL {
        // Histogram samples carry `le` on their buckets besides the metric's labels.
        let samples: Vec<&str> = text
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter(|l| {
                let name = l.split(['{', ' ']).next().unwrap_or_default();
                match def.kind {
                    names::MetricKind::Histogram => [
                        format!("{}_bucket", def.name),
                        format!("{}_sum", def.name),
                        format!("{}_count", def.name),
                    ]
                    .contains(&name.to_string()),
                    _ => name == def.exposed(),
                }
            })
            .collect();
        assert!(!samples.is_empty(), "no sample of {}", def.name);
        for line in samples {
            let labels: Vec<String> = sample_labels(line)
                .into_iter()
                .filter(|l| !(def.kind == names::MetricKind::Histogram && l == "le"))
                .collect();
            assert_eq!(labels, def.labels, "labels of {line}");
        }
    }
}

/// The exposition after one message of each kind, so that every family has a series.
fn one_of_each() -> String {
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
        ("pool_shares_accepted".to_string(), 1),
        ("pool_shares_rejected_stale_share".to_string(), 1),
        ("held_shares_forwarded".to_string(), 1),
    ]
    .into();
    m.handle(&received("declarator", Topic::Heartbeat, &hb.heartbeat), 1)
        .unwrap();
    m.handle(
        &received("watcher", Topic::Summary, &summary_of(&template(1, 1, 1))),
        1,
    )
    .unwrap();
    render(&m, 1)
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
fn pool_share_answers_and_held_shares_from_the_declarators_heartbeats() {
    let mut m = Metrics::new(&PROCESSES);
    let hb = |accepted: u64, invalid: u64, unknown: u64, forwarded: u64, tip: u64| {
        let mut hb = heartbeat(1);
        hb.heartbeat.counters = [
            ("pool_shares_accepted".to_string(), accepted),
            ("pool_shares_rejected_invalid_share".to_string(), invalid),
            ("pool_shares_rejected_other".to_string(), unknown),
            ("held_shares_held".to_string(), forwarded + tip),
            ("held_shares_forwarded".to_string(), forwarded),
            ("held_shares_dropped_new_tip".to_string(), tip),
        ]
        .into();
        hb
    };
    // Totals grow, then the declarator restarts and counts from zero again.
    for (a, i, u, f, t) in [(10, 1, 0, 4, 0), (25, 3, 1, 6, 2), (2, 0, 0, 1, 0)] {
        m.handle(
            &received("declarator", Topic::Heartbeat, &hb(a, i, u, f, t).heartbeat),
            1,
        )
        .unwrap();
    }
    let text = render(&m, 1);
    let pool = |result: &str, reason: &str| {
        value(
            &text,
            &format!("jdc_pool_shares_total{{result=\"{result}\",reason=\"{reason}\"}}"),
        )
    };
    assert_eq!(pool("accepted", ""), Some(27.0));
    assert_eq!(pool("rejected", "invalid-share"), Some(3.0));
    assert_eq!(pool("rejected", "other"), Some(1.0));
    // Every known reason is there from the start, at 0.
    assert_eq!(pool("rejected", "stale-share"), Some(0.0));
    assert_eq!(pool("rejected", "difficulty-too-low"), Some(0.0));
    let held = |outcome: &str| {
        value(
            &text,
            &format!("jdc_held_shares_total{{outcome=\"{outcome}\"}}"),
        )
    };
    assert_eq!(held("held"), Some(9.0));
    assert_eq!(held("forwarded"), Some(7.0));
    assert_eq!(held("dropped_new_tip"), Some(2.0));
    assert_eq!(held("dropped_overflow"), Some(0.0));
    assert_eq!(held("dropped_upstream_left"), Some(0.0));
    // Bounded: the families hold the named values only.
    let series = text
        .lines()
        .filter(|l| l.starts_with("jdc_pool_shares_total{"))
        .count();
    assert_eq!(series, names::POOL_SHARE_COUNTERS.len());
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

#[test]
fn the_hashrate_window_stays_bounded_without_scrapes() {
    let mut m = Metrics::new(&PROCESSES);
    let t0 = 1_000_000_000u64;
    // 20 shares a second for 2 hours, nobody scraping: only the last 5 minutes are kept.
    let per_second = 20u64;
    let seconds = 2 * 3_600u64;
    for i in 0..seconds * per_second {
        m.apply(
            "declarator",
            &Message::Share(share(true, "", "extended")),
            t0 + i * 1_000_000 / per_second,
        );
        assert!(
            m.share_window.borrow().len() as u64 <= HASHRATE_WINDOW_US / 1_000_000 * per_second + 1,
            "{} shares kept after {i}",
            m.share_window.borrow().len()
        );
    }
    let now = t0 + seconds * 1_000_000;
    let oldest = m.share_window.borrow().first_us().unwrap();
    assert!(oldest > now - HASHRATE_WINDOW_US - 1_000_000, "{oldest}");
    // The estimate is still right: 20 shares of difficulty 1 a second.
    let text = render(&m, now);
    let got = value(&text, "jdc_hashrate_estimate_hashes_per_second").unwrap();
    let expected = per_second as f64 * 4_294_967_296.0;
    assert!(
        (got - expected).abs() < expected * 0.01,
        "{got} vs {expected}"
    );

    // A flood within the window: the cap holds.
    let mut m = Metrics::new(&PROCESSES);
    for i in 0..(MAX_WINDOW_SHARES as u64 + 5_000) {
        m.apply(
            "declarator",
            &Message::Share(share(true, "", "extended")),
            t0 + i,
        );
    }
    assert_eq!(m.share_window.borrow().len(), MAX_WINDOW_SHARES);
}

#[test]
fn template_age_and_the_missing_template() {
    const SEC: u64 = 1_000_000;
    let summary = |id: u64, prev: &str| {
        let mut t = summary_of(&template(id, 3, 900));
        t.prev_hash = prev.repeat(32);
        Message::Summary(t)
    };
    let age = |text: &str| value(text, "jdc_template_age_seconds");
    let missing = |text: &str| value(text, "jdc_template_missing_seconds");
    let mut m = Metrics::new(&PROCESSES);
    // Nothing heard yet: no template age at all (a 0 would claim a fresh template).
    let text = render(&m, 1);
    assert!(!text.contains("jdc_template_age_seconds"), "{text}");
    assert_eq!(missing(&text), Some(0.0));
    jdc_tests::exposition::check(&text).unwrap();

    // The watcher runs, a tip comes, but bitcoind never delivers a template: the wait grows
    // from when the watcher was first heard.
    let t0 = 1_000 * SEC;
    m.apply("watcher", &Message::Heartbeat(heartbeat(1)), t0);
    m.apply("watcher", &Message::Tip(tip("aa")), t0 + 5 * SEC);
    let text = render(&m, t0 + 200 * SEC);
    assert!(!text.contains("jdc_template_age_seconds"), "{text}");
    assert_eq!(missing(&text), Some(200.0));

    // The tip's template arrives: nothing missing, the age counts from it.
    m.apply("watcher", &summary(1, "aa"), t0 + 200 * SEC);
    let text = render(&m, t0 + 210 * SEC);
    assert_eq!(age(&text), Some(10.0));
    assert_eq!(missing(&text), Some(0.0));

    // A quiet chain: an hour without a new template or tip (unchanged templates are not
    // re-published). The template grows old, but the stack has what it needs.
    let t1 = t0 + 3_800 * SEC;
    let text = render(&m, t1);
    assert_eq!(age(&text), Some(3_600.0));
    assert_eq!(missing(&text), Some(0.0));

    // A new tip: missing from its arrival; re-sends of the tip do not restart the wait, and
    // a refresh of the old tip's template (racing the tip) does not end it.
    m.apply("watcher", &Message::Tip(tip("bb")), t1);
    m.apply("watcher", &Message::Tip(tip("bb")), t1 + 20 * SEC);
    m.apply("watcher", &summary(2, "aa"), t1 + 25 * SEC);
    let text = render(&m, t1 + 30 * SEC);
    assert_eq!(missing(&text), Some(30.0));
    assert_eq!(age(&text), Some(5.0));
    // A second tip before any template: the wait goes on from the first.
    m.apply("watcher", &Message::Tip(tip("cc")), t1 + 40 * SEC);
    m.apply("watcher", &summary(3, "cc"), t1 + 45 * SEC);
    let text = render(&m, t1 + 46 * SEC);
    assert_eq!(missing(&text), Some(0.0));
    assert_eq!(age(&text), Some(1.0));
    m.apply("watcher", &Message::Tip(tip("dd")), t1 + 50 * SEC);
    m.apply("watcher", &Message::Tip(tip("ee")), t1 + 60 * SEC);
    let text = render(&m, t1 + 70 * SEC);
    assert_eq!(missing(&text), Some(20.0));

    // jdc-metrics (re)starting while the stack runs: the re-sent template before the re-sent
    // tip is a template on that tip.
    let mut m = Metrics::new(&PROCESSES);
    m.apply("watcher", &summary(9, "ff"), t0);
    m.apply("watcher", &Message::Tip(tip("ff")), t0 + SEC);
    let text = render(&m, t0 + 100 * SEC);
    assert_eq!(missing(&text), Some(0.0));
    assert_eq!(age(&text), Some(100.0));
}

#[test]
fn each_processs_own_bus_losses_from_its_heartbeats() {
    let mut m = Metrics::new(&PROCESSES);
    let text = render(&m, 1);
    for p in PROCESSES {
        for name in [
            "jdc_process_bus_malformed_messages_total",
            "jdc_process_bus_sequence_gaps_total",
        ] {
            assert_eq!(
                value(&text, &format!("{name}{{process=\"{p}\"}}")),
                Some(0.0),
                "{name} {p}"
            );
        }
    }
    let hb = |malformed: u64, gaps: u64| {
        let mut hb = heartbeat(1);
        hb.bus_malformed = malformed;
        hb.bus_gaps = gaps;
        hb
    };
    // The declarator's totals grow, then it restarts and counts from 0 again; the selector
    // has its own.
    for (malformed, gaps) in [(1, 4), (2, 10), (0, 3)] {
        m.apply("declarator", &Message::Heartbeat(hb(malformed, gaps)), 1);
    }
    m.apply("selector", &Message::Heartbeat(hb(7, 0)), 1);
    m.apply("selector", &Message::Heartbeat(hb(7, 0)), 2);
    let text = render(&m, 3);
    let get = |name: &str, p: &str| value(&text, &format!("{name}{{process=\"{p}\"}}"));
    assert_eq!(
        get("jdc_process_bus_malformed_messages_total", "declarator"),
        Some(2.0)
    );
    assert_eq!(
        get("jdc_process_bus_sequence_gaps_total", "declarator"),
        Some(13.0)
    );
    assert_eq!(
        get("jdc_process_bus_malformed_messages_total", "selector"),
        Some(7.0)
    );
    assert_eq!(
        get("jdc_process_bus_sequence_gaps_total", "watcher"),
        Some(0.0)
    );
    // jdc-metrics's own losses are apart.
    assert_eq!(value(&text, "jdc_bus_sequence_gaps_total"), Some(0.0));
}

fn devices(id: u64, kinds: &[&str]) -> jdc_shared::messages::Devices {
    jdc_shared::messages::Devices {
        id,
        devices: kinds
            .iter()
            .enumerate()
            .map(|(i, k)| jdc_shared::messages::Device {
                channel_id: i as u32 + 1,
                kind: k.to_string(),
                user_identity: format!("rig-{i}"),
                nominal_hashrate: 1e12,
                peer: "127.0.0.1:5000".into(),
                since_us: 1,
            })
            .collect(),
    }
}

#[test]
fn devices_state_drives_connected_gauge_and_a_down_declarator_has_none() {
    let mut m = Metrics::new(&PROCESSES);
    let gauge =
        |text: &str, kind: &str| value(text, &format!("jdc_devices_connected{{kind=\"{kind}\"}}"));
    // Every kind is exposed from the start, at 0.
    let text = render(&m, 1);
    for kind in ["standard", "extended", "sv1"] {
        assert_eq!(gauge(&text, kind), Some(0.0), "{kind}");
    }
    m.apply("declarator", &Message::Heartbeat(heartbeat(5)), 10_000_000);
    let state = devices(1, &["extended", "sv1", "sv1"]);
    m.handle(&received("declarator", Topic::Devices, &state), 10_000_000)
        .unwrap();
    // A re-send is the same state: nothing doubles.
    m.handle(&received("declarator", Topic::Devices, &state), 10_000_000)
        .unwrap();
    let text = render(&m, 10_500_000);
    assert_eq!(gauge(&text, "extended"), Some(1.0));
    assert_eq!(gauge(&text, "sv1"), Some(2.0));
    assert_eq!(gauge(&text, "standard"), Some(0.0));

    // A V1 device disconnects.
    m.handle(
        &received(
            "declarator",
            Topic::Devices,
            &devices(2, &["extended", "sv1"]),
        ),
        10_600_000,
    )
    .unwrap();
    let text = render(&m, 10_700_000);
    assert_eq!(gauge(&text, "sv1"), Some(1.0));

    // The declarator goes silent: its devices are not connected to anything.
    let text = render(&m, 14_000_000);
    assert_eq!(gauge(&text, "extended"), Some(0.0));
    assert_eq!(gauge(&text, "sv1"), Some(0.0));
    // It comes back (same state, re-sent): the gauge follows again.
    m.apply("declarator", &Message::Heartbeat(heartbeat(5)), 15_000_000);
    let text = render(&m, 15_100_000);
    assert_eq!(gauge(&text, "extended"), Some(1.0));
}
