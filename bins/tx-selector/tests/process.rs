//! Runs the real `jdc-tx-selector` binary against real ZeroMQ sockets: the test plays the
//! template-watcher (a raw PUB socket, so it can also send garbage) and listens to the
//! selector's stream like the declarator does.

use jdc_tests::bitcoind::free_port;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use jdc_shared::bus::{
    self, BusStats, Envelope, HeartbeatWithStats, Received, Topic, BUS_PROTOCOL_VERSION,
};
use jdc_shared::messages::{Event, Selection, Template, TemplateTx, Tip};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use zeromq::{Socket, SocketSend, ZmqMessage};

const DEADLINE: Duration = Duration::from_secs(30);

fn tx(i: usize, vbytes: u64, fee: u64, depends: &[u32]) -> TemplateTx {
    let mut wtxid = [0u8; 32];
    wtxid[0] = i as u8 + 1;
    TemplateTx {
        data: vec![i as u8; 10],
        txid: format!("{:064x}", i + 1),
        wtxid: hex::encode(wtxid),
        fee,
        weight: vbytes * 4,
        sigops: 1,
        depends: depends.to_vec(),
    }
}

fn template(id: u64, txs: Vec<TemplateTx>) -> Template {
    Template {
        id,
        height: 101,
        prev_hash: "22".repeat(32),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: "7f".repeat(32),
        curtime: 1_700_000_000,
        mintime: 1_699_999_000,
        coinbase_value: 5_000_000_000,
        subsidy: 5_000_000_000,
        weight_limit: 4_000_000,
        sigop_limit: 80_000,
        txs,
        tip_detected_at_us: 99,
    }
}

/// A raw PUB socket standing in for the watcher.
struct FakeWatcher {
    socket: zeromq::PubSocket,
    seq: u64,
}

impl FakeWatcher {
    async fn send_frames(&mut self, frames: Vec<Vec<u8>>) {
        let frames: Vec<Bytes> = frames.into_iter().map(Bytes::from).collect();
        let msg = ZmqMessage::try_from(frames).unwrap();
        self.socket.send(msg).await.unwrap();
    }

    async fn send<T: serde::Serialize>(&mut self, topic: Topic, version: u16, body: &T) {
        self.seq += 1;
        let env = Envelope {
            version,
            source: "watcher".to_string(),
            instance: 7,
            seq: self.seq,
            sent_at_us: jdc_shared::time::now_micros(),
            body,
        };
        let bytes = rmp_serde::to_vec_named(&env).unwrap();
        self.send_frames(vec![topic.as_str().as_bytes().to_vec(), bytes])
            .await;
    }
}

/// Kills the child when the test ends, passed or not.
struct Child(tokio::process::Child, std::path::PathBuf);

impl Child {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.1).unwrap_or_default()
    }
}

fn spawn_selector(name: &str, sets: &[String]) -> Child {
    let log = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.log"));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_jdc-tx-selector"));
    for s in sets {
        cmd.arg("--set").arg(s);
    }
    cmd.env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    Child(cmd.spawn().unwrap(), log)
}

/// Waits for the next message on `rx` satisfying `pred`, up to the deadline.
async fn wait_for(
    rx: &mut mpsc::Receiver<Received>,
    until: Instant,
    mut pred: impl FnMut(&Received) -> bool,
) -> Option<Received> {
    loop {
        let left = until.checked_duration_since(Instant::now())?;
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some(m)) if pred(&m) => return Some(m),
            Ok(Some(_)) => {}
            _ => return None,
        }
    }
}

#[tokio::test]
async fn selects_from_templates_and_survives_garbage() {
    let watcher_port = free_port();
    let selector_port = free_port();
    let mut watcher = FakeWatcher {
        socket: zeromq::PubSocket::new(),
        seq: 0,
    };
    watcher
        .socket
        .bind(&format!("tcp://127.0.0.1:{watcher_port}"))
        .await
        .unwrap();
    let child = spawn_selector(
        "selector-garbage",
        &[
            format!("bus.watcher=\"tcp://127.0.0.1:{watcher_port}\""),
            format!("bus.selector=\"tcp://127.0.0.1:{selector_port}\""),
            "bus.resend_interval_ms=100".into(),
            "tx_selector.policy=\"fee-rate\"".into(),
            "tx_selector.min_fee_rate_sat_vb=5.0".into(),
        ],
    );

    // Listen to the selector like the declarator does.
    let shutdown = CancellationToken::new();
    let stats = Arc::new(BusStats::default());
    let (mut rx, _tasks) = bus::subscribe(
        bus::SubscribeOptions {
            streams: vec![(
                "selector".into(),
                format!("tcp://127.0.0.1:{selector_port}"),
            )],
            topics: vec![Topic::Selection, Topic::Heartbeat, Topic::Event],
            silence_timeout: Duration::from_secs(5),
        },
        stats,
        shutdown.clone(),
    );

    // A CPFP pair (parent 1 sat/vB, child 50 sat/vB), a 10 sat/vB loner and a 1 sat/vB loner.
    let first = template(
        1_000,
        vec![
            tx(0, 200, 200, &[]),
            tx(1, 200, 10_000, &[1]),
            tx(2, 200, 2_000, &[]),
            tx(3, 200, 200, &[]),
        ],
    );
    // Send until the selector has connected and answered (PUB/SUB drops messages sent before
    // the subscription is in place).
    let until = Instant::now() + DEADLINE;
    let selection: Selection = loop {
        watcher
            .send(Topic::Template, BUS_PROTOCOL_VERSION, &first)
            .await;
        let got = wait_for(&mut rx, Instant::now() + Duration::from_millis(200), |m| {
            m.topic == Topic::Selection
        })
        .await;
        if let Some(m) = got {
            break m.decode().unwrap();
        }
        assert!(
            Instant::now() < until,
            "no selection within {DEADLINE:?}; selector log:\n{}",
            child.log()
        );
    };
    assert_eq!(selection.template_id, 1_000);
    assert_eq!(selection.policy, "fee-rate");
    let txids: Vec<&str> = selection.txids.iter().map(|t| &t[62..]).collect();
    assert_eq!(
        txids,
        ["01", "02", "03"],
        "CPFP package first, then the loner"
    );
    assert_eq!(selection.fees, 12_200);
    assert_eq!(selection.coinbase_value, 5_000_012_200);
    assert_eq!(selection.tip_detected_at_us, 99);
    assert_eq!(selection.dropped.len(), 1);
    assert_eq!(selection.dropped[0].reason, "below-min-fee-rate");
    assert_ne!(selection.id, selection.template_id);

    // Garbage, each of which must be counted and skipped:
    // 1. not MessagePack at all,
    watcher
        .send_frames(vec![b"template".to_vec(), vec![0xc1, 0xff, 0x00]])
        .await;
    // 2. an envelope of another protocol version,
    watcher.send(Topic::Template, 99, &first).await;
    // 3. a well-formed envelope whose body is not a template,
    let tip = Tip {
        height: 1,
        prev_hash: "00".repeat(32),
        nbits: 0,
        time: 0,
        min_time: 0,
        version: 0,
        subsidy: 0,
        detected_at_us: 0,
        detected_by: "zmq".into(),
    };
    watcher
        .send(Topic::Template, BUS_PROTOCOL_VERSION, &tip)
        .await;
    // 4. a template whose child names a later parent.
    let bad = template(2_000, vec![tx(0, 200, 200, &[2]), tx(1, 200, 200, &[])]);
    watcher
        .send(Topic::Template, BUS_PROTOCOL_VERSION, &bad)
        .await;
    // Then a good template: it must still be selected from.
    let second = template(3_000, vec![tx(0, 200, 20_000, &[])]);
    watcher
        .send(Topic::Template, BUS_PROTOCOL_VERSION, &second)
        .await;

    let until = Instant::now() + DEADLINE;
    let mut refused = None;
    let mut second_selection = None;
    let mut malformed = 0;
    while refused.is_none() || second_selection.is_none() || malformed < 4 {
        let Some(m) = wait_for(&mut rx, until, |_| true).await else {
            panic!(
                "refused={refused:?} second={second_selection:?} malformed={malformed}; selector log:\n{}",
                child.log()
            );
        };
        match m.topic {
            Topic::Event => {
                let ev: Event = m.decode().unwrap();
                if ev.kind == "template-refused" {
                    refused = Some(ev);
                }
            }
            Topic::Selection => {
                let s: Selection = m.decode().unwrap();
                if s.template_id == 3_000 {
                    second_selection = Some(s);
                }
            }
            Topic::Heartbeat => {
                let hb: HeartbeatWithStats = m.decode().unwrap();
                malformed = hb.bus_malformed;
            }
            _ => {}
        }
    }
    let refused = refused.unwrap();
    assert!(
        refused.message.contains("depends on 2"),
        "{}",
        refused.message
    );
    let second_selection = second_selection.unwrap();
    assert_eq!(second_selection.fees, 20_000);
    assert!(second_selection.id > selection.id);
    assert_eq!(malformed, 4, "exactly the four bad messages are counted");
    let log = child.log();
    assert!(log.contains("bus protocol version 99"), "{log}");
    shutdown.cancel();
}

#[tokio::test]
async fn bad_policy_exits_2_naming_the_key() {
    let child = spawn_selector(
        "selector-bad-policy",
        &[
            "tx_selector.policy=\"best\"".into(),
            format!("bus.selector=\"tcp://127.0.0.1:{}\"", free_port()),
        ],
    );
    let Child(mut process, log) = child;
    let status = tokio::time::timeout(DEADLINE, process.wait())
        .await
        .expect("the selector should exit at once")
        .unwrap();
    assert_eq!(status.code(), Some(2));
    let log = std::fs::read_to_string(log).unwrap();
    assert!(log.contains("tx_selector.policy"), "{log}");
}

#[tokio::test]
async fn pass_through_warns_about_the_keys_it_ignores() {
    let child = spawn_selector(
        "selector-pass-through-warning",
        &[
            "tx_selector.policy=\"pass-through\"".into(),
            "tx_selector.min_fee_rate_sat_vb=3.0".into(),
            "tx_selector.prioritize_scripts=[\"6a\"]".into(),
            format!("bus.selector=\"tcp://127.0.0.1:{}\"", free_port()),
            format!("bus.watcher=\"tcp://127.0.0.1:{}\"", free_port()),
        ],
    );
    let until = Instant::now() + DEADLINE;
    let mut log = child.log();
    while !log.contains("tx-selector started") && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        log = child.log();
    }
    let line = log
        .lines()
        .find(|l| l.contains("policy pass-through ignores these keys"))
        .unwrap_or_else(|| panic!("no warning in {log}"));
    assert!(line.contains("WARN"), "{line}");
    assert!(
        line.contains("tx_selector.min_fee_rate_sat_vb, tx_selector.prioritize_scripts"),
        "{line}"
    );
    assert!(!line.contains("max_block_weight"), "{line}");
}
