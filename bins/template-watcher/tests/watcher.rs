//! End-to-end tests of `jdc-template-watcher` as a real process against a real regtest
//! bitcoind, read through a real bus subscriber.

use jdc_shared::bus::{self, BusStats, HeartbeatWithStats, Received, SubscribeOptions, Topic};
use jdc_shared::messages::{Template, Tip};
use jdc_tests::bitcoind::{free_port, Bitcoind};
use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);
const EXE: &str = env!("CARGO_BIN_EXE_jdc-template-watcher");

/// Runs blocking harness code without stalling the runtime's other tasks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// A watcher process; killed on drop.
struct Watcher {
    child: Option<Child>,
    dir: PathBuf,
    bus: String,
}

impl Watcher {
    /// Starts the watcher on `node` with extra config lines.
    fn start(node: &Bitcoind, extra_toml: &str) -> Watcher {
        Self::start_with_bitcoind_toml(&node.config_toml(), extra_toml)
    }

    /// Starts the watcher with the given `[bitcoind]` section and extra config lines.
    fn start_with_bitcoind_toml(bitcoind_toml: &str, extra_toml: &str) -> Watcher {
        let dir = std::env::temp_dir().join(format!(
            "jdc-watcher-test-{}-{}",
            std::process::id(),
            jdc_shared::time::now_micros()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let bus = format!("tcp://127.0.0.1:{}", free_port());
        let config = format!("{bitcoind_toml}\n[bus]\nwatcher = \"{bus}\"\n\n{extra_toml}\n");
        std::fs::write(dir.join("jdc.toml"), config).unwrap();
        let log = std::fs::File::create(dir.join("watcher.log")).unwrap();
        let child = Command::new(EXE)
            .arg("-c")
            .arg(dir.join("jdc.toml"))
            .env(
                "RUST_LOG",
                "info,jdc_template_watcher=debug,jdc_template_watcher::templates=trace",
            )
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        Watcher {
            child: Some(child),
            dir,
            bus,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("watcher.log")).unwrap_or_default()
    }

    fn subscribe(&self, topics: &[Topic]) -> Sub {
        let token = CancellationToken::new();
        let (rx, _tasks) = bus::subscribe(
            SubscribeOptions {
                streams: vec![("watcher".into(), self.bus.clone())],
                topics: topics.to_vec(),
                silence_timeout: Duration::from_secs(3),
            },
            Arc::new(BusStats::default()),
            token.clone(),
        );
        Sub { rx, token }
    }

    /// Waits (with a deadline) for a line containing `needle` in the watcher's log.
    async fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no `{needle}` in the log:\n{}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then the exit status.
    fn terminate(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let ok = Command::new("kill")
            .arg("-TERM")
            .arg(child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
        child.wait().unwrap()
    }

    /// `(by, path, elapsed µs)` from notification to published tip, as logged.
    fn tip_latencies(&self) -> Vec<(String, String, u64)> {
        self.log()
            .lines()
            .filter(|l| l.contains("tip published"))
            .filter_map(|l| {
                let us = log_field(l, "elapsed_us")?.parse().ok()?;
                Some((log_field(l, "by")?, log_field(l, "path")?, us))
            })
            .collect()
    }

    /// The `path` (`fast` or `rpc`) of the `nth` (from 1) `tip published` line of a tip on
    /// `prev_hash`, waiting (with a deadline) for the line.
    async fn tip_path(&self, prev_hash: &str, nth: usize) -> String {
        let needle = format!("prev_hash={prev_hash}");
        let deadline = Instant::now() + WAIT;
        loop {
            let log = self.log();
            if let Some(path) = log
                .lines()
                .filter(|l| l.contains("tip published") && l.contains(&needle))
                .nth(nth - 1)
                .and_then(|l| log_field(l, "path"))
            {
                return path;
            }
            assert!(
                Instant::now() < deadline,
                "no `tip published` line for {prev_hash}:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The value of ` name=value` in a text log line (quotes trimmed).
fn log_field(line: &str, name: &str) -> Option<String> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    let value = line[at..].split_whitespace().next()?;
    Some(value.trim_matches('"').to_string())
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- watcher log ---\n{}", self.log());
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Sub {
    rx: mpsc::Receiver<Received>,
    token: CancellationToken,
}

impl Drop for Sub {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// A decoded bus message.
#[derive(Debug)]
enum Msg {
    Tip(Tip),
    Template(Template),
    Heartbeat(HeartbeatWithStats),
}

impl Sub {
    async fn next(&mut self, deadline: Instant) -> Option<Msg> {
        let left = deadline.saturating_duration_since(Instant::now());
        let r = tokio::time::timeout(left, self.rx.recv()).await.ok()??;
        Some(match r.topic {
            Topic::Tip => Msg::Tip(r.decode().unwrap()),
            Topic::Template => Msg::Template(r.decode().unwrap()),
            Topic::Heartbeat => Msg::Heartbeat(r.decode().unwrap()),
            other => panic!("unexpected topic {other:?}"),
        })
    }

    /// The first message for which `f` returns `Some`, within [`WAIT`].
    async fn wait_for<T>(&mut self, what: &str, mut f: impl FnMut(Msg) -> Option<T>) -> T {
        let deadline = Instant::now() + WAIT;
        loop {
            match self.next(deadline).await {
                Some(m) => {
                    if let Some(t) = f(m) {
                        return t;
                    }
                }
                None => panic!("timed out waiting for {what}"),
            }
        }
    }

    async fn template_on(&mut self, prev_hash: &str) -> Template {
        self.wait_for(&format!("a template on {prev_hash}"), |m| match m {
            Msg::Template(t) if t.prev_hash == prev_hash => Some(t),
            _ => None,
        })
        .await
    }
}

fn best_hash(node: &Bitcoind) -> String {
    use bitcoincore_rpc::RpcApi;
    node.rpc()
        .unwrap()
        .get_best_block_hash()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tip_then_template_then_debounced_mempool_refreshes_and_late_joiner() {
    let node = blocking(|| {
        let node = Bitcoind::start().unwrap();
        node.create_wallet("miner").unwrap();
        node.generate(101).unwrap();
        node
    });
    let min_interval_ms = 1000u64;
    let mut watcher = Watcher::start(
        &node,
        &format!("[template_watcher]\nmempool_refresh_min_interval_ms = {min_interval_ms}\n"),
    );
    let mut sub = watcher.subscribe(&[Topic::Tip, Topic::Template]);
    // The current tip is announced on start.
    let start_tip = best_hash(&node);
    let t0 = sub.template_on(&start_tip).await;
    assert_eq!(t0.height, 102);

    // A new block: Tip first (right height, prev hash, regtest bits), then its template.
    let mined = blocking(|| node.generate(1).unwrap())[0].to_string();
    let tip = sub
        .wait_for("the new tip", |m| match m {
            Msg::Tip(t) if t.prev_hash == mined => Some(t),
            Msg::Template(t) if t.prev_hash == mined => panic!("template before its tip"),
            _ => None,
        })
        .await;
    assert_eq!(tip.height, 103);
    assert_eq!(tip.nbits, 0x207f_ffff);
    assert_eq!(
        tip.version, t0.version,
        "version learnt from the last template"
    );
    assert_eq!(tip.subsidy, 5_000_000_000);
    assert!(tip.time >= tip.min_time);
    assert!(tip.detected_at_us > 0);
    assert!(["zmq", "poll"].contains(&tip.detected_by.as_str()));
    let t1 = sub.template_on(&mined).await;
    assert_eq!(t1.height, 103);
    assert_eq!(t1.bits, tip.nbits);
    assert_eq!(t1.tip_detected_at_us, tip.detected_at_us);
    assert!(t1.txs.is_empty());

    // A few payments: a refreshed template with them arrives.
    let addr = blocking(|| node.new_address().unwrap());
    let mut txids: HashSet<String> = blocking(|| {
        (0..3)
            .map(|_| node.send_to_address(&addr, 100_000).unwrap().to_string())
            .collect()
    });
    let t2 = sub
        .wait_for("a template with the payments", |m| match m {
            Msg::Template(t)
                if t.prev_hash == mined
                    && txids.iter().all(|id| t.txs.iter().any(|x| &x.txid == id)) =>
            {
                Some(t)
            }
            _ => None,
        })
        .await;
    assert_eq!(t2.tip_detected_at_us, 0, "a mempool refresh");
    assert!(t2.id > t1.id);
    let fees: u64 = t2.txs.iter().map(|x| x.fee).sum();
    assert!(fees > 0);
    assert_eq!(t2.coinbase_value, t2.subsidy + fees);
    for tx in &t2.txs {
        use jdc_shared::bitcoin::{consensus::deserialize, Transaction};
        let parsed: Transaction = deserialize(&tx.data).unwrap();
        assert_eq!(parsed.compute_txid().to_string(), tx.txid);
        assert_eq!(parsed.compute_wtxid().to_string(), tx.wtxid);
        assert_eq!(parsed.weight().to_wu(), tx.weight);
    }

    // A burst of 20 payments: far fewer than 20 templates.
    let burst_start = Instant::now();
    let burst: Vec<String> = blocking(|| {
        (0..20)
            .map(|_| node.send_to_address(&addr, 50_000).unwrap().to_string())
            .collect()
    });
    txids.extend(burst);
    let mut seen = HashSet::new();
    let mut last = None;
    let deadline = Instant::now() + WAIT;
    while last.is_none() {
        match sub.next(deadline).await {
            Some(Msg::Template(t)) if t.prev_hash == mined && t.id > t2.id => {
                seen.insert(t.id);
                if txids.iter().all(|id| t.txs.iter().any(|x| &x.txid == id)) {
                    last = Some(t);
                }
            }
            Some(_) => {}
            None => {
                let in_mempool: HashSet<String> = blocking(|| {
                    use bitcoincore_rpc::RpcApi;
                    let rpc = node.rpc().unwrap();
                    rpc.get_raw_mempool()
                        .unwrap()
                        .iter()
                        .map(|t| t.to_string())
                        .collect()
                });
                let missing: Vec<_> = txids.iter().filter(|t| !in_mempool.contains(*t)).collect();
                panic!(
                    "no template with the 20 payments ({} templates seen); payments not in bitcoind's mempool: {missing:?}",
                    seen.len()
                )
            }
        }
    }
    let elapsed = burst_start.elapsed();
    let allowed = elapsed.as_millis() as u64 / min_interval_ms + 2;
    eprintln!(
        "burst of 20 payments: {} template(s) in {elapsed:?} until all were in one",
        seen.len()
    );
    assert!(
        (seen.len() as u64) <= allowed && seen.len() < 20,
        "{} templates for 20 payments in {elapsed:?}: not debounced",
        seen.len()
    );
    let last = last.unwrap();

    // A late subscriber gets the current template (re-sent) and the heartbeat says ok.
    let joined = Instant::now();
    let mut late = watcher.subscribe(&[Topic::Template, Topic::Heartbeat]);
    let mut ok_seen = false;
    let current = late
        .wait_for("the current template", |m| match m {
            Msg::Template(t) => Some(t),
            Msg::Heartbeat(h) => {
                ok_seen |= h.heartbeat.state == "ok";
                None
            }
            _ => None,
        })
        .await;
    eprintln!(
        "late subscriber got the current template after {:?}",
        joined.elapsed()
    );
    assert!(current.id >= last.id);
    assert_eq!(current.prev_hash, mined);
    if !ok_seen {
        late.wait_for("an ok heartbeat", |m| match m {
            Msg::Heartbeat(h) if h.heartbeat.state == "ok" => Some(()),
            _ => None,
        })
        .await;
    }

    let latencies = watcher.tip_latencies();
    eprintln!("notification -> Tip published (by, µs): {latencies:?}");
    assert!(!latencies.is_empty());
    // The password/cookie content never reaches the log.
    let cookie = std::fs::read_to_string(node.cookie_file()).unwrap();
    let secret = cookie.split(':').nth(1).unwrap().trim();
    assert!(!watcher.log().contains(secret));

    // Graceful stop on SIGTERM.
    let status = watcher.terminate();
    assert!(status.success(), "exit status {status}");
    assert!(watcher.log().contains("template-watcher stopped"));
}

/// What bitcoind says the next block after `hash` must have: `(height, nbits, mediantime of
/// hash + 1)`, and whether `hash` is the active tip.
fn expected_after(node: &Bitcoind, hash: &str) -> (u32, u32, u32, bool) {
    use bitcoincore_rpc::RpcApi;
    let rpc = node.rpc().unwrap();
    let header: serde_json::Value = rpc
        .call("getblockheader", &[hash.into(), true.into()])
        .unwrap();
    let info: serde_json::Value = rpc.call("getblockchaininfo", &[]).unwrap();
    let height = header["height"].as_u64().unwrap() as u32;
    let bits = u32::from_str_radix(header["bits"].as_str().unwrap(), 16).unwrap();
    let mtp = header["mediantime"].as_u64().unwrap() as u32;
    let is_tip = info["bestblockhash"] == hash && info["blocks"] == u64::from(height);
    (height + 1, bits, mtp + 1, is_tip)
}

impl Sub {
    /// Waits for the `nth` (from 1) announcement of the tip on `prev_hash` and checks it
    /// against bitcoind; returns how the watcher learnt of it (`zmq` or `poll`) and its path
    /// (`fast` or `rpc`).
    async fn check_tip(
        &mut self,
        node: &Bitcoind,
        watcher: &Watcher,
        prev_hash: &str,
        nth: usize,
    ) -> (String, String) {
        let tip = self
            .wait_for(&format!("the tip on {prev_hash}"), |m| match m {
                Msg::Tip(t) if t.prev_hash == prev_hash => Some(t),
                _ => None,
            })
            .await;
        let (height, nbits, min_time, is_tip) = blocking(|| expected_after(node, prev_hash));
        assert!(is_tip, "{prev_hash} is not bitcoind's tip any more");
        assert_eq!(tip.height, height, "height of the tip on {prev_hash}");
        assert_eq!(tip.nbits, nbits, "nbits of the tip on {prev_hash}");
        assert!(
            tip.min_time >= min_time,
            "min_time {} of the tip on {prev_hash} is below bitcoind's mediantime + 1 = {min_time}",
            tip.min_time
        );
        assert!(tip.time >= tip.min_time);
        assert_eq!(tip.subsidy, 5_000_000_000 >> (height / 150));
        (tip.detected_by, watcher.tip_path(prev_hash, nth).await)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tips_come_without_rpc_and_match_bitcoind_even_across_a_reorg() {
    let node = blocking(|| {
        let node = Bitcoind::start().unwrap();
        node.create_wallet("miner").unwrap();
        node.generate(101).unwrap();
        node
    });
    let watcher = Watcher::start(&node, "");
    let mut sub = watcher.subscribe(&[Topic::Tip, Topic::Template]);
    let start_tip = best_hash(&node);
    sub.template_on(&start_tip).await;

    // 30 blocks one by one: every tip is right; after the first (whose parent the ZMQ stream
    // cannot prove yet) they come from the chain model, without RPC.
    let addr = blocking(|| node.new_address().unwrap());
    let mut paths = Vec::new();
    for _ in 0..30 {
        let mined = blocking(|| node.generate_to(&addr, 1).unwrap())[0].to_string();
        let (by, path) = sub.check_tip(&node, &watcher, &mined, 1).await;
        if path == "fast" {
            assert_eq!(by, "zmq");
        }
        paths.push(path);
    }
    let fast = paths.iter().filter(|p| *p == "fast").count();
    eprintln!("paths of 30 tips: {paths:?}");
    assert!(
        fast >= 25,
        "only {fast} of 30 tips came by the fast path: {paths:?}"
    );

    // A reorg: the tip is invalidated (bitcoind disconnects it; no `hashblock` follows, the
    // poll finds the parent), then two blocks are mined on the parent. The disconnection sends
    // the next tips to the rpc path; they must be right all the same.
    let (old_tip, parent) = blocking(|| {
        let old = best_hash(&node);
        node.cli(&["invalidateblock", &old]).unwrap();
        (old, best_hash(&node))
    });
    assert_ne!(old_tip, parent);
    // (announced a second time: it was the tip before `old_tip`)
    assert_eq!(sub.check_tip(&node, &watcher, &parent, 2).await.1, "rpc");
    // Another address, so the new block differs from the invalidated one.
    let addr = blocking(|| node.new_address().unwrap());
    let branch = blocking(|| node.generate_to(&addr, 1).unwrap())[0].to_string();
    assert_eq!(
        sub.check_tip(&node, &watcher, &branch, 1).await,
        ("zmq".to_string(), "rpc".to_string()),
        "first block after a disconnection"
    );
    let branch2 = blocking(|| node.generate_to(&addr, 1).unwrap())[0].to_string();
    let (_, path) = sub.check_tip(&node, &watcher, &branch2, 1).await;
    eprintln!("second block of the new branch: {path}");
    // The old tip comes back (reconsiderblock): it has less work than the new branch, so
    // nothing changes; then the new branch keeps growing by the fast path.
    blocking(|| node.cli(&["reconsiderblock", &old_tip]).unwrap());
    let branch3 = blocking(|| node.generate_to(&addr, 1).unwrap())[0].to_string();
    sub.check_tip(&node, &watcher, &branch3, 1).await;

    let log = watcher.log();
    assert!(!log.contains("was wrong"), "a fast-path tip was corrected");
    assert!(!log.contains(" ERROR "), "errors in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poll_backstop_announces_tips_when_zmq_is_unreachable() {
    let node = blocking(|| {
        let node = Bitcoind::start().unwrap();
        node.generate(1).unwrap();
        node
    });
    // Nothing listens on these ports.
    let bitcoind_toml = node
        .config_toml()
        .replace(
            &node.zmq_hashblock(),
            &format!("tcp://127.0.0.1:{}", free_port()),
        )
        .replace(
            &node.zmq_sequence(),
            &format!("tcp://127.0.0.1:{}", free_port()),
        );
    let watcher = Watcher::start_with_bitcoind_toml(
        &bitcoind_toml,
        "[template_watcher]\ntip_poll_interval_ms = 200\n",
    );
    let mut sub = watcher.subscribe(&[Topic::Tip, Topic::Template]);
    let start_tip = best_hash(&node);
    sub.template_on(&start_tip).await;
    watcher.wait_log("bitcoind ZMQ not reachable yet").await;
    let mined = blocking(|| node.generate(1).unwrap())[0].to_string();
    let tip = sub
        .wait_for("the new tip", |m| match m {
            Msg::Tip(t) if t.prev_hash == mined => Some(t),
            _ => None,
        })
        .await;
    assert_eq!(tip.detected_by, "poll");
    assert_eq!(tip.height, 3);
    sub.template_on(&mined).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_out_initial_block_download_then_follows_a_restarted_bitcoind() {
    // A fresh regtest chain (genesis from 2011) is in initial block download until a block
    // is mined.
    let mut node = blocking(|| Bitcoind::start().unwrap());
    let watcher = Watcher::start(&node, "[template_watcher]\ntip_poll_interval_ms = 200\n");
    let mut sub = watcher.subscribe(&[Topic::Tip, Topic::Template, Topic::Heartbeat]);
    sub.wait_for("an initial-block-download heartbeat", |m| match m {
        Msg::Heartbeat(h) if h.heartbeat.state == "initial-block-download" => Some(()),
        Msg::Tip(t) => panic!("tip announced during IBD: {t:?}"),
        Msg::Template(t) => panic!("template published during IBD: {t:?}"),
        _ => None,
    })
    .await;
    watcher.wait_log("initial block download").await;
    let mined = blocking(|| node.generate(1).unwrap())[0].to_string();
    let tip = sub
        .wait_for("the first tip after IBD", |m| match m {
            Msg::Tip(t) if t.prev_hash == mined => Some(t),
            _ => None,
        })
        .await;
    assert_eq!(tip.height, 2);
    sub.template_on(&mined).await;
    sub.wait_for("an ok heartbeat", |m| match m {
        Msg::Heartbeat(h) if h.heartbeat.state == "ok" => Some(()),
        _ => None,
    })
    .await;

    // bitcoind restarts (new cookie, ZMQ reconnect): the watcher follows without a restart.
    blocking(|| node.restart().unwrap());
    watcher.wait_log("bitcoind is back").await;
    let mined = blocking(|| node.generate(1).unwrap())[0].to_string();
    let tip = sub
        .wait_for("a tip after the restart", |m| match m {
            Msg::Tip(t) if t.prev_hash == mined => Some(t),
            _ => None,
        })
        .await;
    assert_eq!(tip.height, 3);
    sub.template_on(&mined).await;
    assert!(watcher.log().contains("lost bitcoind"));
}

#[test]
fn bad_configuration_exits_2_naming_the_key() {
    let out = Command::new(EXE)
        .args(["--set", "template_watcher.tip_pol_interval_ms=5"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("template_watcher.tip_pol_interval_ms"),
        "{err}"
    );
    // No RPC credentials configured.
    let out = Command::new(EXE)
        .args([
            "--set",
            &format!("bus.watcher=\"tcp://127.0.0.1:{}\"", free_port()),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bitcoind.rpc_cookie_file"), "{err}");
}

#[test]
fn help_explains_the_binary() {
    let out = Command::new(EXE).arg("--help").output().unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "getblocktemplate",
        "--config",
        "--set",
        "watcher",
        "initial block download",
    ] {
        assert!(help.contains(needle), "--help lacks `{needle}`:\n{help}");
    }
}
