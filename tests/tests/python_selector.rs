//! The replaceable-process contract: `examples/python-selector/selector.py`, written from
//! docs/bus-protocol.md alone, runs in place of jdc-tx-selector next to the real watcher,
//! declarator and metrics, with a real bitcoind and a sim-miner. bitcoind is the judge.
//!
//! The Python interpreter must have pyzmq and msgpack: `JDCTEST_PYTHON` (scripts/test sets it
//! to the virtual environment it makes in `.cache/python`), else that environment if present,
//! else `python3`.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoincore_rpc::bitcoin::address::NetworkUnchecked;
use bitcoincore_rpc::bitcoin::{Address, Network, Txid};
use bitcoincore_rpc::RpcApi;
use jdc_shared::bus::Topic;
use jdc_shared::messages::{Event, JobKind, JobSent, Selection, Template, TemplateTx};
use jdc_tests::bitcoind::{free_port, workspace_root, Bitcoind};
use jdc_tests::exposition::{scrape, sum};
use jdc_tests::stack::{Proc, Stack};
use jdc_tests::wait_until;

/// An address outside the test wallet: of what the tests send, the wallet keeps only the
/// change.
const ELSEWHERE: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

/// The Python interpreter to run the example with, checked to have its dependencies.
fn python() -> anyhow::Result<PathBuf> {
    let venv = workspace_root().join(".cache/python/bin/python3");
    let python = std::env::var_os("JDCTEST_PYTHON")
        .map(PathBuf::from)
        .or_else(|| venv.exists().then_some(venv))
        .unwrap_or_else(|| PathBuf::from("python3"));
    let out = Command::new(&python)
        .args(["-c", "import zmq, msgpack"])
        .output()
        .with_context(|| format!("running {}", python.display()))?;
    if !out.status.success() {
        bail!(
            "{} cannot import pyzmq and msgpack ({}): run scripts/test, which installs them \
             into .cache/python, or point JDCTEST_PYTHON at an interpreter that has them",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(python)
}

/// Starts the Python selector in place of jdc-tx-selector: it reads the stack's watcher
/// stream and binds the stack's selector stream, with the stack's bus intervals.
fn start_python_selector(stack: &mut Stack, extra: &[&str]) -> anyhow::Result<()> {
    let script = workspace_root().join("examples/python-selector/selector.py");
    let mut args = vec![
        "-u".to_string(),
        script.display().to_string(),
        "--watcher".into(),
        format!("tcp://127.0.0.1:{}", stack.ports.watcher),
        "--bind".into(),
        format!("tcp://127.0.0.1:{}", stack.ports.selector),
        "--interval-ms".into(),
        "500".into(),
        "--silence-timeout-ms".into(),
        "1500".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    stack.start_command(
        "python-selector",
        &python()?,
        &args,
        "python selector started",
    )?;
    Ok(())
}

/// Starts the declarator, the Python selector, the watcher and the metrics.
fn start_stack(stack: &mut Stack, selector_args: &[&str]) -> anyhow::Result<()> {
    stack.start("declarator", &[], "SV2 mining server listening")?;
    start_python_selector(stack, selector_args)?;
    stack.start("template-watcher", &[], "bus publisher bound")?;
    stack.start("metrics", &[], "listening")?;
    Ok(())
}

/// Selections, events and jobs seen on the bus, with the stream they came from.
#[derive(Default)]
struct Seen {
    selections: Vec<Selection>,
    events: Vec<(String, Event)>,
    jobs: Vec<JobSent>,
    /// Messages whose body jdc could not decode.
    undecodable: Vec<String>,
}

impl Seen {
    fn declarator_events(&self, kind: &str) -> Vec<Event> {
        self.events
            .iter()
            .filter(|(stream, e)| stream == "declarator" && e.kind == kind)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// Records the bus from now on (re-sent duplicates dropped by id).
fn record_bus(stack: &Stack) -> Arc<Mutex<Seen>> {
    let seen: Arc<Mutex<Seen>> = Arc::default();
    let (mut inbox, stop) = stack.subscribe(vec![Topic::Selection, Topic::Event, Topic::Job]);
    let sink = seen.clone();
    tokio::spawn(async move {
        let _stop = stop.drop_guard();
        while let Some(msg) = inbox.recv().await {
            let mut seen = sink.lock().unwrap_or_else(|p| p.into_inner());
            match msg.topic {
                Topic::Selection => match msg.decode::<Selection>() {
                    Ok(sel) => {
                        if !seen.selections.iter().any(|s| s.id == sel.id) {
                            seen.selections.push(sel);
                        }
                    }
                    Err(e) => seen.undecodable.push(e.to_string()),
                },
                Topic::Event => match msg.decode::<Event>() {
                    Ok(e) => seen.events.push((msg.stream.clone(), e)),
                    Err(e) => seen.undecodable.push(e.to_string()),
                },
                Topic::Job => {
                    if let Ok(j) = msg.decode::<JobSent>() {
                        seen.jobs.push(j);
                    }
                }
                _ => {}
            }
        }
    });
    seen
}

fn lock(seen: &Mutex<Seen>) -> std::sync::MutexGuard<'_, Seen> {
    seen.lock().unwrap_or_else(|p| p.into_inner())
}

fn elsewhere() -> anyhow::Result<Address> {
    Ok(ELSEWHERE
        .parse::<Address<NetworkUnchecked>>()?
        .require_network(Network::Regtest)?)
}

/// Sends from the test wallet paying `sat_vb` sat/vB.
fn send_at_fee_rate(node: &Bitcoind, to: &Address, sat_vb: u32) -> anyhow::Result<Txid> {
    let txid = node.cli(&[
        "-rpcwallet=miner",
        "-named",
        "sendtoaddress",
        &format!("address={to}"),
        "amount=0.001",
        &format!("fee_rate={sat_vb}"),
    ])?;
    Ok(txid.parse()?)
}

/// The transactions (coinbase excluded) of the block at `height`, by txid in RPC hex.
fn block_txids(node: &Bitcoind, height: u64) -> anyhow::Result<Vec<String>> {
    let rpc = node.rpc()?;
    let block = rpc.get_block(&rpc.get_block_hash(height)?)?;
    Ok(block.txdata[1..]
        .iter()
        .map(|tx| tx.compute_txid().to_string())
        .collect())
}

/// `GET /healthz` of the stack's jdc-metrics, as JSON.
fn healthz(stack: &Stack) -> anyhow::Result<serde_json::Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", stack.ports.metrics))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /healthz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut text = String::new();
    s.read_to_string(&mut text)?;
    let (_, body) = text.split_once("\r\n\r\n").context("no HTTP body")?;
    Ok(serde_json::from_str(body)?)
}

/// Waits until every one of `txids` is confirmed and the chain is at least `min_height`
/// high; returns the height.
fn wait_mined(node: &Bitcoind, txids: &[Txid], min_height: u64) -> anyhow::Result<u64> {
    let rpc = node.rpc()?;
    let wallet = node.wallet_rpc("miner")?;
    wait_until(
        &format!("{} transaction(s) mined, height {min_height}", txids.len()),
        Duration::from_secs(120),
        || {
            for t in txids {
                if wallet.get_transaction(t, None)?.info.confirmations == 0 {
                    return Ok(None);
                }
            }
            let h = rpc.get_block_count()?;
            Ok((h >= min_height).then_some(h))
        },
    )
}

/// Mempool transactions paying enough are mined in blocks bitcoind accepts, from selections
/// of policy `python-example`, also after the watcher restarts; one paying less than
/// `--min-fee-rate`, and its child, are not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_selector_replaces_jdc_tx_selector_end_to_end() -> anyhow::Result<()> {
    let (node, _funding) = tokio::task::block_in_place(Bitcoind::start_funded)?;
    let payout = node.new_address()?;
    let mut stack = Stack::new(&node, &payout.to_string(), "")?;
    let seen = record_bus(&stack);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        start_stack(&mut stack, &["--min-fee-rate", "5"])?;
        let rpc = node.rpc()?;
        let start = rpc.get_block_count()?;

        // 1. Three transactions at the wallet's 20 sat/vB.
        let to = elsewhere()?;
        let mut paying = Vec::new();
        for _ in 0..3 {
            paying.push(node.send_to_address(&to, 100_000)?);
        }
        stack.start_miner("miner", &["--max-shares-per-sec", "4"])?;
        let h = wait_mined(&node, &paying, start + 2)?;

        // 2. The watcher is killed and restarted: the selector follows its new instance.
        let from = stack.get("python-selector")?.log_len();
        stack.get_mut("template-watcher")?.kill9();
        stack.start("template-watcher", &[], "bus publisher bound")?;
        let after_restart = node.send_to_address(&to, 100_000)?;
        paying.push(after_restart);
        wait_mined(&node, &[after_restart], h + 1)?;
        stack.get("python-selector")?.wait_for_log_after(
            from,
            "the watcher restarted",
            Duration::from_secs(5),
        )?;

        // 3. One transaction at 2 sat/vB (below the selector's 5), then one at 20 that spends
        //    its change: neither is mined, and the selections say why.
        let cheap = send_at_fee_rate(&node, &to, 2)?;
        let child = spend_change_of(&node, &cheap, &to)?;
        let depends = rpc.get_mempool_entry(&child)?.depends;
        assert_eq!(
            depends,
            vec![cheap],
            "the child spends the cheap transaction"
        );
        let reported = |seen: &Seen, reason: &str, fee: u64| {
            seen.selections.iter().any(|s| {
                s.dropped
                    .iter()
                    .any(|d| d.reason == reason && d.count == 1 && d.fee == fee)
            })
        };
        let cheap_fee = wallet_fee(&node, &cheap)?;
        let child_fee = wallet_fee(&node, &child)?;
        let h = rpc.get_block_count()?;
        let end = wait_until(
            "both drops reported, then 2 more blocks",
            Duration::from_secs(120),
            || {
                let seen = lock(&seen);
                let both = reported(&seen, "below-min-fee-rate", cheap_fee)
                    && reported(&seen, "parent-dropped", child_fee);
                let now = rpc.get_block_count()?;
                Ok((both && now >= h + 2).then_some(now))
            },
        )?;

        // The blocks are made of the Python selector's choices: each one holding a paying
        // transaction lists exactly the txids of a `python-example` selection for its
        // height; the cheap transaction and its child are in none.
        let paying: HashSet<String> = paying.iter().map(|t| t.to_string()).collect();
        let (cheap, child) = (cheap.to_string(), child.to_string());
        let seen = lock(&seen);
        let mut matched = HashSet::new();
        for h in start + 1..=end {
            let txids = block_txids(&node, h)?;
            assert!(
                !txids.contains(&cheap) && !txids.contains(&child),
                "block {h} holds the cheap transaction or its child: {txids:?}"
            );
            if txids.iter().any(|t| paying.contains(t)) {
                let from = seen
                    .selections
                    .iter()
                    .find(|s| u64::from(s.height) == h && s.txids == txids)
                    .with_context(|| {
                        format!("block {h} ({txids:?}) matches no selection seen on the bus")
                    })?;
                assert_eq!(from.policy, "python-example");
                matched.extend(txids);
            }
        }
        assert!(
            paying.is_subset(&matched),
            "paying transactions not found in selected blocks"
        );
        for s in &seen.selections {
            assert_eq!(
                s.policy, "python-example",
                "selection {} of another policy",
                s.id
            );
        }
        assert!(
            seen.jobs
                .iter()
                .any(|j| j.kind == JobKind::Full && j.tx_count > 0),
            "the declarator sent no full job"
        );
        let refused = seen.declarator_events("selection-refused");
        assert!(refused.is_empty(), "selections refused: {refused:?}");
        assert!(seen.undecodable.is_empty(), "{:?}", seen.undecodable);
        drop(seen);

        // jdc-metrics reads the Python selector's heartbeats like ours.
        wait_until(
            "the selector up in /healthz",
            Duration::from_secs(10),
            || {
                let health = healthz(&stack)?;
                let up = health["processes"].as_array().is_some_and(|ps| {
                    ps.iter().any(|p| {
                        p["process"] == "selector" && p["up"] == true && p["state"] == "ok"
                    })
                });
                Ok(up.then_some(()))
            },
        )?;
        Ok(())
    })
}

/// Sends 0.001 BTC to `to` at 20 sat/vB spending only the change output of `parent`.
fn spend_change_of(node: &Bitcoind, parent: &Txid, to: &Address) -> anyhow::Result<Txid> {
    let tx = node.rpc()?.get_raw_transaction(parent, None)?;
    let vout = tx
        .output
        .iter()
        .position(|o| o.script_pubkey != to.script_pubkey())
        .context("no change output")?;
    let options = serde_json::json!({
        "inputs": [{"txid": parent.to_string(), "vout": vout}],
        "add_inputs": false,
    });
    let out = node.cli(&[
        "-rpcwallet=miner",
        "-named",
        "send",
        &format!("outputs={}", serde_json::json!({ to.to_string(): 0.001 })),
        "fee_rate=20",
        &format!("options={options}"),
    ])?;
    let sent: serde_json::Value = serde_json::from_str(&out)?;
    Ok(sent["txid"]
        .as_str()
        .context("no txid from send")?
        .parse()?)
}

/// The fee the test wallet paid for `txid`, in satoshis.
fn wallet_fee(node: &Bitcoind, txid: &Txid) -> anyhow::Result<u64> {
    let info = node.wallet_rpc("miner")?.get_transaction(txid, None)?;
    let fee = info.fee.context("no fee for a sent transaction")?;
    Ok(fee.to_sat().unsigned_abs())
}

/// A selector that gets the witness commitment wrong: the declarator refuses every selection,
/// saying why in its log and on the bus, and the devices keep mining empty blocks, which
/// bitcoind accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_selector_wrong_witness_commitment_is_refused() -> anyhow::Result<()> {
    let (node, _funding) = tokio::task::block_in_place(Bitcoind::start_funded)?;
    let payout = node.new_address()?;
    let mut stack = Stack::new(&node, &payout.to_string(), "")?;
    let seen = record_bus(&stack);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        start_stack(&mut stack, &["--corrupt-commitment"])?;
        let to = elsewhere()?;
        let mut txids = Vec::new();
        for _ in 0..2 {
            txids.push(node.send_to_address(&to, 100_000)?);
        }
        let rpc = node.rpc()?;
        let start = rpc.get_block_count()?;
        stack.start_miner("miner", &["--max-shares-per-sec", "4"])?;
        let end = wait_until(
            "3 blocks and 2 refused selections",
            Duration::from_secs(120),
            || {
                let refused = lock(&seen).declarator_events("selection-refused").len();
                let h = rpc.get_block_count()?;
                Ok((h >= start + 3 && refused >= 2).then_some(h))
            },
        )?;

        let line = stack
            .get("declarator")?
            .wait_for_log("does not match the transactions", Duration::from_secs(5))?;
        assert!(
            line.contains("witness commitment") && line.contains("refused"),
            "{line}"
        );
        let seen = lock(&seen);
        for e in seen.declarator_events("selection-refused") {
            assert!(
                e.message.contains("witness commitment"),
                "refused for another reason: {}",
                e.message
            );
        }
        assert!(seen.selections.iter().all(|s| s.policy == "python-example"));
        assert!(seen.undecodable.is_empty(), "{:?}", seen.undecodable);
        let full: Vec<&JobSent> = seen
            .jobs
            .iter()
            .filter(|j| j.kind != JobKind::Empty)
            .collect();
        assert!(full.is_empty(), "full jobs sent: {full:?}");
        assert!(!seen.jobs.is_empty(), "no job seen on the bus");
        drop(seen);
        for h in start + 1..=end {
            let block = block_txids(&node, h)?;
            assert!(block.is_empty(), "block {h} holds transactions: {block:?}");
        }
        let mempool = rpc.get_raw_mempool()?;
        for t in &txids {
            assert!(mempool.contains(t), "{t} left the mempool");
        }
        // jdc-metrics counts the refusals.
        let refused = wait_for_refusals_in_metrics(&stack, 2.0)?;
        assert!(
            refused >= 2.0,
            "jdc_work_refused_total{{kind=\"selection\"}} = {refused}"
        );
        Ok(())
    })
}

/// Waits until jdc-metrics reports at least `at_least` refused selections; returns the
/// value of `jdc_work_refused_total{kind="selection"}`.
fn wait_for_refusals_in_metrics(stack: &Stack, at_least: f64) -> anyhow::Result<f64> {
    let port = stack.ports.metrics;
    let text = wait_until(
        "jdc_work_refused_total{kind=\"selection\"} in /metrics",
        Duration::from_secs(20),
        || {
            let text = scrape(port)?;
            let refused = sum(&text, "jdc_work_refused_total", &["kind=\"selection\""]);
            Ok((refused >= at_least).then_some(text))
        },
    )?;
    jdc_tests::exposition::check(&text).map_err(|e| anyhow::anyhow!("exposition: {e}"))?;
    // Templates were fine: only selections are refused.
    assert_eq!(
        sum(&text, "jdc_work_refused_total", &["kind=\"template\""]),
        0.0
    );
    Ok(sum(
        &text,
        "jdc_work_refused_total",
        &["kind=\"selection\""],
    ))
}

/// A selector that publishes one good selection and then only wrong witness commitments
/// (`--corrupt-after 1`): the declarator refuses the later ones and keeps the devices on the
/// last valid full job, so the first block holds exactly that selection's transactions (and
/// not a transaction only a refused selection named); later tips get only refused
/// selections, so their blocks are empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_selector_keeps_the_last_valid_selection() -> anyhow::Result<()> {
    let (node, _funding) = tokio::task::block_in_place(Bitcoind::start_funded)?;
    let payout = node.new_address()?;
    let mut stack = Stack::new(&node, &payout.to_string(), "")?;
    let seen = record_bus(&stack);
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let rpc = node.rpc()?;
        let to = elsewhere()?;
        // In the mempool before the stack starts: the first template, and so the one good
        // selection, holds them.
        let mut valid_txs = HashSet::new();
        for _ in 0..2 {
            valid_txs.insert(node.send_to_address(&to, 100_000)?.to_string());
        }
        let start = rpc.get_block_count()?;
        start_stack(&mut stack, &["--corrupt-after", "1"])?;
        let good = wait_until(
            "the good selection on the bus",
            Duration::from_secs(30),
            || Ok(lock(&seen).selections.first().cloned()),
        )?;
        let named: HashSet<String> = good.txids.iter().cloned().collect();
        assert_eq!(named, valid_txs, "the first selection holds the mempool");
        // Give the declarator time to apply it. (Had it not, the first block below would be
        // empty and the test would fail: it cannot pass wrongly.)
        std::thread::sleep(Duration::from_secs(1));

        // A new transaction: a new template on the same tip, whose selection is corrupt.
        let late = node.send_to_address(&to, 100_000)?.to_string();
        wait_until(
            "a selection naming the new transaction, refused",
            Duration::from_secs(60),
            || {
                let seen = lock(&seen);
                let named = seen.selections.iter().any(|s| s.txids.contains(&late));
                let refused = !seen.declarator_events("selection-refused").is_empty();
                Ok((named && refused).then_some(()))
            },
        )?;
        stack
            .get("python-selector")?
            .wait_for_log("selection published (CORRUPT)", Duration::from_secs(5))?;

        // Only now do the devices connect: the job they get is the last valid one.
        stack.start_miner("miner", &["--max-shares-per-sec", "4"])?;
        let end = wait_until("2 blocks", Duration::from_secs(120), || {
            let h = rpc.get_block_count()?;
            Ok((h >= start + 2).then_some(h))
        })?;
        let first = block_txids(&node, start + 1)?;
        assert_eq!(
            first,
            good.txids,
            "block {} is not the last valid selection",
            start + 1
        );
        for h in start + 2..=end {
            let block = block_txids(&node, h)?;
            assert!(block.is_empty(), "block {h} holds transactions: {block:?}");
        }
        assert!(
            rpc.get_raw_mempool()?.iter().any(|t| t.to_string() == late),
            "{late} left the mempool"
        );

        let seen = lock(&seen);
        let refused = seen.declarator_events("selection-refused");
        for e in &refused {
            assert!(
                e.message.contains("witness commitment"),
                "refused for another reason: {}",
                e.message
            );
        }
        // The device got the good selection's job when it connected (no `job` event for
        // that: events follow work changes); any full job after is the same selection's, on
        // the first tip, and later tips got empty-block jobs.
        assert!(
            seen.jobs
                .iter()
                .any(|j| j.kind == JobKind::Empty && u64::from(j.height) > start + 1),
            "no empty-block job on a later tip: {:?}",
            seen.jobs
        );
        for j in seen.jobs.iter().filter(|j| j.kind == JobKind::Full) {
            assert_eq!(
                (u64::from(j.height), j.tx_count),
                (start + 1, 2),
                "a full job other than the good selection's: {j:?}"
            );
        }
        assert!(seen.undecodable.is_empty(), "{:?}", seen.undecodable);
        let refusals = refused.len() as f64;
        drop(seen);
        wait_for_refusals_in_metrics(&stack, refusals)?;
        Ok(())
    })
}

/// What the scripted watcher publishes: a template as `(instance, seq)`, plus garbage while
/// `garbage` is set.
#[derive(Clone)]
struct Script {
    instance: u64,
    seq: u64,
    template: Template,
    garbage: bool,
}

/// A transaction of a scripted template (only the fields a selector reads matter).
fn tx(n: u8, wtxid: &str, fee: u64, weight: u64, sigops: u64, depends: &[u32]) -> TemplateTx {
    TemplateTx {
        data: vec![n; 10],
        txid: hex::encode([n; 32]),
        wtxid: wtxid.to_string(),
        fee,
        weight,
        sigops,
        depends: depends.to_vec(),
    }
}

fn scripted_template(id: u64, txs: Vec<TemplateTx>) -> Template {
    Template {
        id,
        height: 205,
        prev_hash: hex::encode([7u8; 32]),
        version: 0x2000_0000,
        bits: 0x207f_ffff,
        target: format!("7fffff{}", "0".repeat(58)),
        curtime: 1_764_028_800,
        mintime: 1_764_028_001,
        coinbase_value: 0,
        subsidy: 2_500_000_000,
        // The selector's default reserves (8,000 WU, 400 sigops) leave 2,000 WU, 100 sigops.
        weight_limit: 10_000,
        sigop_limit: 500,
        txs,
        tip_detected_at_us: 42,
    }
}

/// A watcher stream on `port` that publishes what `script` says every 100 ms, the way the
/// bus protocol describes it: the live `template` once per `(instance, seq)`, then a
/// heartbeat announcing its `seq` and a `resend:template` on every tick.
async fn scripted_watcher(port: u16, script: Arc<Mutex<Script>>) -> anyhow::Result<()> {
    use zeromq::{Socket, SocketSend};
    let mut socket = zeromq::PubSocket::new();
    socket.bind(&format!("tcp://127.0.0.1:{port}")).await?;
    // Envelopes as jdc's publishers write them: around a template, and around any other
    // body (given as JSON).
    let template_envelope = |s: &Script| {
        rmp_serde::to_vec_named(&jdc_shared::bus::Envelope {
            version: 1,
            source: "watcher".to_string(),
            instance: s.instance,
            seq: s.seq,
            sent_at_us: jdc_shared::time::now_micros(),
            body: s.template.clone(),
        })
    };
    let envelope = |instance: u64, seq: u64, body: serde_json::Value| {
        rmp_serde::to_vec_named(&jdc_shared::bus::Envelope {
            version: 1,
            source: "watcher".to_string(),
            instance,
            seq,
            sent_at_us: jdc_shared::time::now_micros(),
            body,
        })
    };
    let mut sent: Option<(u64, u64)> = None;
    let mut heartbeats = 0u64;
    loop {
        let s = script.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut frames: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        if sent.map(|(i, _)| i) != Some(s.instance) {
            heartbeats = 0;
        }
        let template = template_envelope(&s)?;
        if sent != Some((s.instance, s.seq)) {
            frames.push((b"template".to_vec(), template.clone()));
            sent = Some((s.instance, s.seq));
        }
        if s.garbage {
            let v99 = rmp_serde::to_vec_named(&serde_json::json!({
                "version": 99, "source": "x", "instance": 1, "seq": 1, "sent_at_us": 1, "body": {}
            }))?;
            frames.push((b"template".to_vec(), b"\xc1\xc1 not msgpack".to_vec()));
            frames.push((b"templates-v2".to_vec(), template.clone()));
            frames.push((b"template".to_vec(), v99));
            frames.push((b"heartbeat".to_vec(), Vec::new())); // sent as one frame below
        }
        heartbeats += 1;
        let hb = serde_json::json!({
            "started_at_us": s.instance, "version": "scripted", "state": "ok",
            "state_seqs": {"template": s.seq, "tip": 3},
        });
        frames.push((b"heartbeat".to_vec(), envelope(s.instance, heartbeats, hb)?));
        frames.push((b"resend:template".to_vec(), template));
        for (topic, body) in frames {
            let parts = if body.is_empty() {
                vec![bytes::Bytes::from(topic)]
            } else {
                vec![bytes::Bytes::from(topic), bytes::Bytes::from(body)]
            };
            if let Ok(msg) = zeromq::ZmqMessage::try_from(parts) {
                socket.send(msg).await?;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The next message from `inbox` for which `pred` holds.
async fn next(
    inbox: &mut tokio::sync::mpsc::Receiver<jdc_shared::bus::Received>,
    what: &str,
    pred: impl Fn(&jdc_shared::bus::Received) -> bool,
) -> anyhow::Result<jdc_shared::bus::Received> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        match tokio::time::timeout_at(deadline, inbox.recv()).await {
            Ok(Some(m)) if pred(&m) => return Ok(m),
            Ok(Some(_)) => continue,
            _ => bail!("no {what} from the Python selector"),
        }
    }
}

/// The Python selector against a scripted watcher stream, its output read with jdc's own bus
/// code: every field of its selection (drop reasons, totals, the witness commitment of the
/// documented example), heartbeats that jdc-metrics decodes, malformed messages and a bad
/// template skipped with a log line, a watcher restart followed, and its latest selection
/// re-sent to a consumer that joins late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_selector_follows_the_contract_on_a_scripted_bus() -> anyhow::Result<()> {
    use jdc_shared::bus::{subscribe, BusStats, HeartbeatWithStats, SubscribeOptions};
    let python = python()?;
    let (w1, w2) = (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f",
    );
    let first = scripted_template(
        1_000,
        vec![
            tx(1, w1, 1_000, 800, 4, &[]),                       // 5 sat/vB: chosen
            tx(2, w2, 1_000, 800, 4, &[1]),                      // chosen after its parent
            tx(3, &hex::encode([3u8; 32]), 100, 400, 1, &[]),    // 1 sat/vB < 2
            tx(4, &hex::encode([4u8; 32]), 5_000, 400, 1, &[3]), // its parent is left out
            tx(5, &hex::encode([5u8; 32]), 10_000, 1_000, 1, &[]), // 2,600 WU > 2,000
            tx(6, &hex::encode([6u8; 32]), 3_000, 100, 1, &[5]), // its parent is left out
            tx(7, &hex::encode([7u8; 32]), 1_000, 300, 200, &[]), // 208 sigops > 100
        ],
    );
    let (watcher_port, selector_port) = (free_port(), free_port());
    let script = Arc::new(Mutex::new(Script {
        instance: 111,
        seq: 1,
        template: first.clone(),
        garbage: true,
    }));
    let publisher = tokio::spawn(scripted_watcher(watcher_port, script.clone()));
    let dir = std::env::temp_dir().join(format!("jdc-python-selector-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let script_path = workspace_root().join("examples/python-selector/selector.py");
    let args: Vec<String> = [
        "-u",
        &script_path.display().to_string(),
        "--watcher",
        &format!("tcp://127.0.0.1:{watcher_port}"),
        "--bind",
        &format!("tcp://127.0.0.1:{selector_port}"),
        "--min-fee-rate",
        "2",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let selector = Proc::spawn("python-selector", &python, &args, &[], &dir)?;
    tokio::task::block_in_place(|| {
        selector.wait_for_log("python selector started", Duration::from_secs(30))
    })?;

    let shutdown = tokio_util::sync::CancellationToken::new();
    let _stop = shutdown.clone().drop_guard();
    let options = SubscribeOptions {
        streams: vec![(
            "selector".to_string(),
            format!("tcp://127.0.0.1:{selector_port}"),
        )],
        topics: vec![Topic::Selection, Topic::Heartbeat, Topic::Event],
        silence_timeout: Duration::from_secs(5),
    };
    let stats = Arc::new(BusStats::default());
    let (mut inbox, _tasks) = subscribe(options.clone(), stats.clone(), shutdown.clone());
    let selection_of = |id: u64| {
        move |m: &jdc_shared::bus::Received| {
            m.topic == Topic::Selection
                && m.decode::<Selection>().is_ok_and(|s| s.template_id == id)
        }
    };

    // 1. The selection of the first template, field by field.
    let sel: Selection = next(&mut inbox, "selection", selection_of(1_000))
        .await?
        .decode()?;
    assert_eq!(sel.policy, "python-example");
    assert_eq!(
        (sel.height, sel.prev_hash.as_str(), sel.version, sel.bits),
        (205, first.prev_hash.as_str(), 0x2000_0000, 0x207f_ffff)
    );
    assert_eq!(
        (sel.curtime, sel.mintime, sel.tip_detected_at_us),
        (1_764_028_800, 1_764_028_001, 42)
    );
    assert_eq!(
        sel.txids,
        vec![first.txs[0].txid.clone(), first.txs[1].txid.clone()]
    );
    assert_eq!((sel.fees, sel.weight, sel.sigops), (2_000, 1_600, 8));
    assert_eq!(sel.coinbase_value, 2_500_002_000);
    // The documented two-wtxid example, and what jdc computes.
    assert_eq!(
        sel.witness_commitment,
        "506ca0080602b994dbb34c4ff4b870ce1449cca529e0e58de825f777ad4cdd95"
    );
    let reasons: Vec<(&str, u32, u64)> = sel
        .dropped
        .iter()
        .map(|d| (d.reason.as_str(), d.count, d.fee))
        .collect();
    assert_eq!(
        reasons,
        vec![
            ("below-min-fee-rate", 1, 100),
            ("block-full", 2, 11_000),
            ("parent-dropped", 2, 8_000)
        ]
    );

    // 2. Heartbeats as jdc-metrics reads them; the garbage counted and logged.
    let hb = next(&mut inbox, "heartbeat counting 4 malformed messages", |m| {
        m.topic == Topic::Heartbeat
            && m.decode::<HeartbeatWithStats>()
                .is_ok_and(|h| h.bus_malformed >= 4 && h.heartbeat.state == "ok")
    })
    .await?;
    let seqs: serde_json::Value = hb.decode()?;
    assert!(
        seqs["state_seqs"]["selection"].as_u64() >= Some(1),
        "{seqs}"
    );
    script.lock().unwrap_or_else(|p| p.into_inner()).garbage = false;
    let log = selector.log_lines().join("\n");
    for why in [
        "expected 2 frames",
        "not a MessagePack envelope",
        "bus protocol version 99",
        "unknown topic 'templates-v2'",
    ] {
        assert!(log.contains(why), "no log line for {why}:\n{log}");
    }

    // 3. A template the policy cannot use (a transaction depending on a later one): skipped
    //    with a log line and a `template-refused` event; the heartbeat announced it (seq 2).
    let mut bad = scripted_template(
        2_000,
        vec![tx(1, w1, 1_000, 800, 4, &[2]), tx(2, w2, 1, 1, 1, &[])],
    );
    bad.height = 206;
    {
        let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
        s.seq = 2;
        s.template = bad;
    }
    let event: Event = next(&mut inbox, "template-refused event", |m| {
        m.topic == Topic::Event
    })
    .await?
    .decode()?;
    assert_eq!(event.kind, "template-refused");
    assert!(event.message.contains("transaction 1"), "{}", event.message);

    // 4. The watcher restarts (new instance, seq from 1): its template is selected from.
    let second = scripted_template(3_000, vec![tx(1, w1, 1_000, 800, 4, &[])]);
    {
        let mut s = script.lock().unwrap_or_else(|p| p.into_inner());
        s.instance = 222;
        s.seq = 1;
        s.template = second;
    }
    let sel: Selection = next(
        &mut inbox,
        "selection after the restart",
        selection_of(3_000),
    )
    .await?
    .decode()?;
    let w1_internal = jdc_shared::chain::hash_from_rpc_hex(w1)?;
    assert_eq!(
        sel.witness_commitment,
        hex::encode(jdc_shared::chain::witness_commitment(&[w1_internal]))
    );
    assert!(selector
        .log_lines()
        .iter()
        .any(|l| l.contains("the watcher restarted")));

    // 5. A consumer joining now gets the latest selection from the re-sends.
    let (mut late, _late_tasks) =
        subscribe(options, Arc::new(BusStats::default()), shutdown.clone());
    let resent = next(&mut late, "selection for a late consumer", |m| {
        m.topic == Topic::Selection
    })
    .await?;
    assert!(resent.resent, "a late consumer gets the state re-sent");
    assert_eq!(resent.decode::<Selection>()?.id, sel.id);
    assert_eq!(
        stats.snapshot().1,
        0,
        "jdc found malformed messages from the Python selector"
    );
    publisher.abort();
    drop(selector);
    if std::env::var_os("JDCTEST_KEEP_LOGS").is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        eprintln!("logs kept in {}", dir.display());
    }
    Ok(())
}
