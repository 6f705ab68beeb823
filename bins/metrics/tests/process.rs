//! Runs the real `jdc-metrics` binary against real ZeroMQ publishers bound by the test, and
//! scrapes its HTTP endpoints over real TCP.
//!
//! Phase 1: a raw PUB socket plays the declarator, sends a heartbeat, then garbage (bad
//! envelope, other protocol version, unknown topic, single frame, undecodable body) and a
//! valid marker. Phase 2: the raw socket goes away and real `jdc_shared::bus::Publisher`s play
//! all three processes, publishing one message of every kind.

use jdc_tests::bitcoind::free_port;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jdc_shared::bus::{
    BusStats, Envelope, Publisher, PublisherOptions, Topic, BUS_PROTOCOL_VERSION,
};
use jdc_shared::messages::{
    BlockEvent, BlockStage, Dropped, Heartbeat, JobKind, JobSent, Selection, ShareResult, Template,
    TemplateSummary, TemplateTx, Tip,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketSend, ZmqMessage};

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

// === a minimal HTTP/1.1 client ===

struct HttpResponse {
    status: u16,
    body: String,
}

async fn get(port: u16, path: &str) -> std::io::Result<HttpResponse> {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let text = String::from_utf8(raw).map_err(std::io::Error::other)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| std::io::Error::other(format!("no header end in {text:?}")))?;
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line in {head:?}")))?;
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok(HttpResponse { status, body })
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
    out
}

/// GETs `path` until `pred` holds on the answer, up to the deadline.
async fn poll_until(
    port: u16,
    path: &str,
    what: &str,
    log: &std::path::Path,
    mut pred: impl FnMut(&HttpResponse) -> bool,
) -> HttpResponse {
    let until = Instant::now() + DEADLINE;
    let mut last = None;
    loop {
        if let Ok(r) = get(port, path).await {
            if pred(&r) {
                return r;
            }
            last = Some(format!("{} {}", r.status, r.body));
        }
        if Instant::now() > until {
            panic!(
                "{what}: not reached within {DEADLINE:?}; last answer: {last:?}\nmetrics log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

// === exposition format ===

/// The value of the sample `series` (name with labels, as written).
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?.strip_prefix(' ')?;
        rest.split(' ').next()?.parse().ok()
    })
}

#[test]
fn the_checker_rejects_broken_expositions() {
    assert!(jdc_tests::exposition::check("# TYPE a counter\na_total 1\n# EOF").is_ok());
    assert!(jdc_tests::exposition::check("# TYPE a counter\na_total 1\n").is_err());
    assert!(jdc_tests::exposition::check("# TYPE a counter\nb_total 1\n# EOF").is_err());
    assert!(jdc_tests::exposition::check("# TYPE a counter\na_total{x=\"1} 1\n# EOF").is_err());
    assert!(jdc_tests::exposition::check("# TYPE a counter\na_total one\n# EOF").is_err());
    assert!(jdc_tests::exposition::check("# TYPE a gauge\na{x=\"1\"}} 1\n# EOF").is_err());
}

// === the bus side ===

fn envelope<T: serde::Serialize>(version: u16, seq: u64, body: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(&Envelope {
        version,
        source: "declarator".to_string(),
        instance: 1,
        seq,
        sent_at_us: jdc_shared::time::now_micros(),
        body,
    })
    .unwrap()
}

async fn send_raw(socket: &mut zeromq::PubSocket, frames: Vec<Vec<u8>>) {
    let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
    socket
        .send(ZmqMessage::try_from(frames).unwrap())
        .await
        .unwrap();
}

async fn bind_publisher(
    name: &str,
    port: u16,
    stats: Arc<BusStats>,
    shutdown: CancellationToken,
) -> Publisher {
    let until = Instant::now() + DEADLINE;
    loop {
        match Publisher::bind(
            &format!("tcp://127.0.0.1:{port}"),
            PublisherOptions {
                source: name.to_string(),
                resend_interval: Duration::from_millis(100),
            },
            stats.clone(),
            shutdown.clone(),
        )
        .await
        {
            Ok((publisher, _task)) => return publisher,
            // The raw socket's port may take a moment to be free again.
            Err(e) if Instant::now() < until => {
                eprintln!("retrying bind of {name}: {e}");
                tokio::time::sleep(POLL).await;
            }
            Err(e) => panic!("cannot bind {name} publisher: {e}"),
        }
    }
}

fn tip() -> Tip {
    Tip {
        height: 102,
        prev_hash: "ab".repeat(32),
        nbits: 0x207f_ffff,
        time: 1_700_000_000,
        min_time: 1_699_999_000,
        version: 0x2000_0000,
        subsidy: 5_000_000_000,
        detected_at_us: 1,
        detected_by: "zmq".into(),
    }
}

fn tx(i: usize) -> TemplateTx {
    TemplateTx {
        data: vec![i as u8; 50],
        txid: format!("{i:064x}"),
        wtxid: format!("{i:064x}"),
        fee: 1_000,
        weight: 400,
        sigops: 1,
        depends: vec![],
    }
}

fn block(stage: BlockStage) -> BlockEvent {
    BlockEvent {
        stage,
        height: 102,
        hash: "cd".repeat(32),
        tx_count: 3,
        reason: String::new(),
        submitted: true,
        failed: false,
    }
}

fn share(accepted: bool, reason: &str) -> ShareResult {
    ShareResult {
        channel_id: 1,
        channel_kind: "extended".into(),
        accepted,
        reason: reason.into(),
        difficulty: 1.0,
    }
}

fn health_of<'a>(report: &'a serde_json::Value, process: &str) -> &'a serde_json::Value {
    report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["process"] == process)
        .unwrap_or_else(|| panic!("no {process} in {report}"))
}

/// The bus ports of the three processes and the HTTP port of a `jdc-metrics` under test.
struct Ports {
    watcher: u16,
    selector: u16,
    declarator: u16,
    http: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            watcher: free_port(),
            selector: free_port(),
            declarator: free_port(),
            http: free_port(),
        }
    }
}

/// Starts the real `jdc-metrics` on `ports` (processes down 2 s after their last heartbeat),
/// its log in `log_name` under the test's directory; killed on drop.
fn spawn_metrics(ports: &Ports, log_name: &str) -> (tokio::process::Child, std::path::PathBuf) {
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(log_name);
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jdc-metrics"));
    for set in [
        format!("bus.watcher=\"tcp://127.0.0.1:{}\"", ports.watcher),
        format!("bus.selector=\"tcp://127.0.0.1:{}\"", ports.selector),
        format!("bus.declarator=\"tcp://127.0.0.1:{}\"", ports.declarator),
        "bus.silence_timeout_ms=1000".into(),
        format!("metrics.listen=\"127.0.0.1:{}\"", ports.http),
        "metrics.down_after_ms=2000".into(),
    ] {
        cmd.arg("--set").arg(set);
    }
    let child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    (child, log)
}

#[tokio::test]
async fn serves_metrics_and_health_from_the_bus() {
    let ports = Ports::free();
    let (watcher_port, selector_port, declarator_port, http_port) =
        (ports.watcher, ports.selector, ports.declarator, ports.http);
    let (_child, log) = spawn_metrics(&ports, "metrics-process.log");

    // Nothing has spoken yet: every process is down, 503.
    let r = poll_until(http_port, "/healthz", "health endpoint up", &log, |_| true).await;
    assert_eq!(r.status, 503, "{}", r.body);
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(report["status"], "down");
    assert_eq!(report["processes"].as_array().unwrap().len(), 3);
    assert!(report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["up"] == false));

    // === Phase 1: a raw socket as the declarator ===
    let mut raw = zeromq::PubSocket::new();
    raw.bind(&format!("tcp://127.0.0.1:{declarator_port}"))
        .await
        .unwrap();
    let hb = Heartbeat {
        started_at_us: 1,
        version: "test".into(),
        state: "raw".into(),
        counters: Default::default(),
    };
    let mut seq = 0;
    // Heartbeat until the metrics see it: then the subscription is in place.
    let until = Instant::now() + DEADLINE;
    loop {
        seq += 1;
        send_raw(
            &mut raw,
            vec![
                b"heartbeat".to_vec(),
                envelope(BUS_PROTOCOL_VERSION, seq, &hb),
            ],
        )
        .await;
        let r = get(http_port, "/healthz").await.unwrap();
        let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        if health_of(&report, "declarator")["up"] == true {
            assert_eq!(health_of(&report, "declarator")["since_us"], 1);
            assert_eq!(r.status, 503, "the other two are still down");
            break;
        }
        assert!(Instant::now() < until, "raw heartbeat never seen");
        tokio::time::sleep(POLL).await;
    }
    // Five kinds of garbage, each to be counted and skipped.
    let garbage = 5;
    send_raw(&mut raw, vec![b"block".to_vec(), vec![0xc1, 0x00, 0xff]]).await;
    seq += 1;
    send_raw(
        &mut raw,
        vec![
            b"block".to_vec(),
            envelope(99, seq, &block(BlockStage::Found)),
        ],
    )
    .await;
    seq += 1;
    send_raw(
        &mut raw,
        vec![
            b"tipsy".to_vec(),
            envelope(BUS_PROTOCOL_VERSION, seq, &tip()),
        ],
    )
    .await;
    send_raw(&mut raw, vec![b"share".to_vec()]).await;
    seq += 1;
    send_raw(
        &mut raw,
        vec![
            b"block".to_vec(),
            envelope(BUS_PROTOCOL_VERSION, seq, &tip()),
        ],
    )
    .await;
    // Then a valid message: once it is counted, everything before it has been handled.
    seq += 1;
    send_raw(
        &mut raw,
        vec![
            b"block".to_vec(),
            envelope(BUS_PROTOCOL_VERSION, seq, &block(BlockStage::Rejected)),
        ],
    )
    .await;
    let r = poll_until(http_port, "/metrics", "marker block counted", &log, |r| {
        value(&r.body, "jdc_blocks_total{stage=\"rejected\"}") == Some(1.0)
    })
    .await;
    let malformed = value(&r.body, "jdc_bus_malformed_messages_total").unwrap();
    assert!(malformed >= garbage as f64, "malformed = {malformed}");
    assert_eq!(
        value(&r.body, "jdc_blocks_total{stage=\"found\"}"),
        Some(0.0)
    );
    jdc_tests::exposition::check(&r.body).unwrap();
    let _ = raw.close().await;

    // === Phase 2: real publishers for all three processes ===
    let shutdown = CancellationToken::new();
    let stats = Arc::new(BusStats::default());
    let watcher = bind_publisher("watcher", watcher_port, stats.clone(), shutdown.clone()).await;
    let selector = bind_publisher("selector", selector_port, stats.clone(), shutdown.clone()).await;
    let declarator = bind_publisher(
        "declarator",
        declarator_port,
        stats.clone(),
        shutdown.clone(),
    )
    .await;

    // All three up, the declarator now being the new publisher (not the raw socket).
    let r = poll_until(http_port, "/healthz", "all processes up", &log, |r| {
        let Ok(report) = serde_json::from_str::<serde_json::Value>(&r.body) else {
            return false;
        };
        r.status == 200
            && report["status"] == "up"
            && health_of(&report, "declarator")["since_us"] != 1
    })
    .await;
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    for p in ["watcher", "selector", "declarator"] {
        let h = health_of(&report, p);
        assert_eq!(h["up"], true);
        assert!(h["since_us"].as_u64().unwrap() > 1, "{h}");
        assert!(h["last_message_age_ms"].as_u64().unwrap() <= 2_000, "{h}");
    }

    // The publishers' own bus losses ride on their heartbeats (one BusStats for all three).
    stats
        .gaps
        .fetch_add(3, std::sync::atomic::Ordering::Relaxed);
    stats.count_malformed();

    // One message of every kind. State topics are re-sent by the publishers every 100 ms.
    watcher.publish(Topic::Tip, &tip()).unwrap();
    let template = Template {
        id: 555,
        height: 102,
        prev_hash: "ab".repeat(32),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: "7f".repeat(32),
        curtime: 1_700_000_000,
        mintime: 1_699_999_000,
        coinbase_value: 5_000_003_000,
        subsidy: 5_000_000_000,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs: (0..3).map(tx).collect(),
        tip_detected_at_us: 1,
    };
    // The full template is not read by the metrics; its summary is.
    watcher.publish(Topic::Template, &template).unwrap();
    watcher
        .publish(
            Topic::Summary,
            &TemplateSummary {
                id: template.id,
                height: template.height,
                prev_hash: template.prev_hash.clone(),
                tx_count: 3,
                fees: 3_000,
                weight: 1_200,
                coinbase_value: template.coinbase_value,
                gbt_us: 2_000,
            },
        )
        .unwrap();
    let selection = Selection {
        id: 777,
        template_id: 555,
        height: 102,
        prev_hash: "ab".repeat(32),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        curtime: 1_700_000_000,
        mintime: 1_699_999_000,
        policy: "fee-rate".into(),
        txids: (0..2).map(|i| tx(i).txid).collect(),
        fees: 2_000,
        coinbase_value: 5_000_002_000,
        weight: 800,
        sigops: 2,
        witness_commitment: "00".repeat(32),
        dropped: vec![Dropped {
            reason: "below-min-fee-rate".into(),
            count: 1,
            fee: 1_000,
        }],
        tip_detected_at_us: 1,
    };
    selector.publish(Topic::Selection, &selection).unwrap();
    for (kind, new_tip, us) in [(JobKind::Empty, true, 1_500), (JobKind::Full, false, 9_000)] {
        declarator
            .publish(
                Topic::Job,
                &JobSent {
                    kind,
                    height: 102,
                    template_id: 555,
                    tx_count: 2,
                    channels: 1,
                    new_tip,
                    tip_to_job_us: us,
                    first_on_tip: true,
                },
            )
            .unwrap();
    }
    declarator.publish(Topic::Share, &share(true, "")).unwrap();
    declarator
        .publish(Topic::Share, &share(false, "difficulty-too-low"))
        .unwrap();
    declarator
        .publish(Topic::Block, &block(BlockStage::Found))
        .unwrap();
    declarator
        .publish(Topic::Block, &block(BlockStage::Accepted))
        .unwrap();

    let expected: &[(&str, f64)] = &[
        ("jdc_tips_total", 1.0),
        ("jdc_templates_total", 1.0),
        ("jdc_template_transactions", 3.0),
        ("jdc_template_fees_sats", 3_000.0),
        ("jdc_selections_total", 1.0),
        ("jdc_selection_fees_sats", 2_000.0),
        (
            "jdc_selection_dropped_transactions_total{reason=\"below-min-fee-rate\"}",
            1.0,
        ),
        ("jdc_jobs_sent_total{kind=\"empty\"}", 1.0),
        ("jdc_jobs_sent_total{kind=\"full\"}", 1.0),
        ("jdc_tip_to_job_seconds_count{kind=\"empty\"}", 1.0),
        ("jdc_tip_to_job_seconds_count{kind=\"full\"}", 1.0),
        (
            "jdc_shares_total{result=\"accepted\",reason=\"\",channel_kind=\"extended\"}",
            1.0,
        ),
        (
            "jdc_shares_total{result=\"rejected\",reason=\"difficulty-too-low\",channel_kind=\"extended\"}",
            1.0,
        ),
        ("jdc_blocks_total{stage=\"found\"}", 1.0),
        ("jdc_blocks_total{stage=\"accepted\"}", 1.0),
        ("jdc_blocks_total{stage=\"rejected\"}", 1.0),
        ("jdc_process_up{process=\"watcher\"}", 1.0),
        ("jdc_process_up{process=\"selector\"}", 1.0),
        ("jdc_process_up{process=\"declarator\"}", 1.0),
        (
            "jdc_process_bus_sequence_gaps_total{process=\"selector\"}",
            3.0,
        ),
        (
            "jdc_process_bus_malformed_messages_total{process=\"declarator\"}",
            1.0,
        ),
    ];
    // Wait until every count is reached and the state topics have been re-sent a few times
    // (at least 10 watcher messages), so dedup is exercised.
    let r = poll_until(http_port, "/metrics", "every counter moved", &log, |r| {
        expected
            .iter()
            .all(|(series, v)| value(&r.body, series) == Some(*v))
            && value(&r.body, "jdc_bus_messages_total{stream=\"watcher\"}")
                .is_some_and(|n| n >= 10.0)
    })
    .await;
    let text = &r.body;
    jdc_tests::exposition::check(text).unwrap();
    // The re-sent tip, template and selection were counted once (checked above), and the
    // garbage is still on the books.
    assert!(value(text, "jdc_bus_malformed_messages_total").unwrap() >= garbage as f64);
    assert!(value(text, "jdc_bus_messages_total{stream=\"declarator\"}").unwrap() >= 8.0);
    assert_eq!(
        value(
            text,
            "jdc_tip_to_job_seconds_bucket{le=\"0.0025\",kind=\"empty\"}"
        ),
        Some(1.0)
    );
    assert!(value(text, "jdc_process_last_seen_seconds{process=\"watcher\"}").unwrap() < 2.0);
    assert_eq!(
        value(
            text,
            &format!(
                "jdc_build_info{{version=\"{}\"}}",
                env!("CARGO_PKG_VERSION")
            )
        ),
        Some(1.0)
    );
    let log_text = std::fs::read_to_string(&log).unwrap();
    assert!(log_text.contains("unknown topic"), "{log_text}");
    assert!(log_text.contains("bus protocol version 99"), "{log_text}");
    shutdown.cancel();
}

#[tokio::test]
async fn a_bad_listen_address_exits_2_naming_the_key() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_jdc-metrics"))
        .args(["--set", "metrics.listen=\"localhost-ish\""])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("metrics.listen"), "{stderr}");
}

#[tokio::test]
async fn a_process_that_stops_publishing_is_down_and_its_silence_grows() {
    let ports = Ports::free();
    let (_child, log) = spawn_metrics(&ports, "metrics-process-silent.log");
    let http = ports.http;
    let stats = Arc::new(BusStats::default());
    // Each publisher with its own shutdown, so one can stop while the others go on.
    let others = CancellationToken::new();
    let declarator_stop = CancellationToken::new();
    let _watcher = bind_publisher("watcher", ports.watcher, stats.clone(), others.clone()).await;
    let _selector = bind_publisher("selector", ports.selector, stats.clone(), others.clone()).await;
    let declarator = bind_publisher(
        "declarator",
        ports.declarator,
        stats.clone(),
        declarator_stop.clone(),
    )
    .await;
    poll_until(http, "/healthz", "all processes up", &log, |r| {
        r.status == 200
    })
    .await;
    let r = poll_until(http, "/metrics", "the declarator up", &log, |r| {
        value(&r.body, "jdc_process_up{process=\"declarator\"}") == Some(1.0)
    })
    .await;
    assert_eq!(
        value(&r.body, "jdc_process_up{process=\"watcher\"}"),
        Some(1.0)
    );

    // The declarator stops publishing (its heartbeat task ends; nothing else is sent).
    declarator_stop.cancel();
    drop(declarator);

    // /healthz: 503, the declarator down, the others still up.
    let r = poll_until(
        http,
        "/healthz",
        "the declarator down in /healthz",
        &log,
        |r| {
            serde_json::from_str::<serde_json::Value>(&r.body)
                .is_ok_and(|report| health_of(&report, "declarator")["up"] == false)
        },
    )
    .await;
    assert_eq!(r.status, 503, "{}", r.body);
    let report: serde_json::Value = serde_json::from_str(&r.body).unwrap();
    assert_eq!(report["status"], "down");
    assert_eq!(health_of(&report, "watcher")["up"], true, "{report}");
    assert_eq!(health_of(&report, "selector")["up"], true, "{report}");
    let silent_ms = health_of(&report, "declarator")["last_heartbeat_age_ms"]
        .as_u64()
        .unwrap();
    assert!(
        silent_ms > 2_000,
        "down only after metrics.down_after_ms: {report}"
    );

    // /metrics: up 0 for the declarator alone, and its last-seen age keeps growing.
    let r = poll_until(
        http,
        "/metrics",
        "the declarator down in /metrics",
        &log,
        |r| value(&r.body, "jdc_process_up{process=\"declarator\"}") == Some(0.0),
    )
    .await;
    assert_eq!(
        value(&r.body, "jdc_process_up{process=\"watcher\"}"),
        Some(1.0)
    );
    assert_eq!(
        value(&r.body, "jdc_process_up{process=\"selector\"}"),
        Some(1.0)
    );
    let last_seen = |body: &str| {
        value(
            body,
            "jdc_process_last_seen_seconds{process=\"declarator\"}",
        )
        .unwrap()
    };
    let first = last_seen(&r.body);
    assert!(first > 2.0, "{first}");
    poll_until(
        http,
        "/metrics",
        "the declarator's silence growing",
        &log,
        |r| {
            last_seen(&r.body) > first
                && value(&r.body, "jdc_process_up{process=\"declarator\"}") == Some(0.0)
        },
    )
    .await;
    // The processes still publishing are seen all along.
    let r = get(http, "/metrics").await.unwrap();
    let watcher_seen = value(
        &r.body,
        "jdc_process_last_seen_seconds{process=\"watcher\"}",
    )
    .unwrap();
    assert!(watcher_seen <= 2.0, "{watcher_seen}");
    others.cancel();
}

#[test]
fn the_default_listen_address_is_loopback_only() {
    let config = jdc_shared::config::Config::default();
    let addr: std::net::SocketAddr = config.metrics.listen.parse().unwrap();
    assert_eq!(
        addr.ip(),
        std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
        "metrics.listen defaults to {addr}: /metrics and /healthz must not be reachable \
         from the network unless the operator says so"
    );
    assert_eq!(addr.port(), 9100);
}

#[tokio::test]
async fn without_a_listen_address_the_binary_binds_loopback() {
    // No metrics.listen anywhere (nor in the environment): the binary says where it listens,
    // or, should the port be taken, where it could not.
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jdc-metrics"));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("JDC_") {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stderr));
    let mut seen = String::new();
    let line = tokio::time::timeout(DEADLINE, async {
        while let Some(line) = lines.next_line().await.unwrap() {
            seen.push_str(&line);
            seen.push('\n');
            if line.contains("listening") || line.contains("cannot listen on") {
                return line;
            }
        }
        panic!("jdc-metrics exited without saying where it listens:\n{seen}");
    })
    .await
    .expect("jdc-metrics says where it listens");
    let _ = child.kill().await;
    assert!(
        line.contains("127.0.0.1:9100") && !line.contains("0.0.0.0"),
        "{line}"
    );
}
