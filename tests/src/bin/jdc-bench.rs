//! Benchmarks of the whole stack as real processes against a real regtest bitcoind.
//! They print figures; they never assert timings.
//!
//! Build the release binaries first, then run:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/jdc-bench tip-latency --tips 100
//! target/release/jdc-bench template-pipeline --txs 5000
//! ```
//!
//! `tip-latency`: blocks are mined by `generatetoaddress` (to an address no wallet knows, so
//! bitcoind's wallet does not delay the notification); the bench subscribes to bitcoind's
//! ZMQ `hashblock` itself and measures from its receipt to the sim-miner receiving the
//! `SetNewPrevHash` for that block, plus the stages in between from the bus.
//!
//! `template-pipeline`: fills the mempool with `--txs` wallet transactions, then measures from
//! the watcher publishing a template to the declarator writing the full job to the miner, and
//! reports each process's resident memory with that template loaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bitcoincore_rpc::bitcoin::{Address, Network};
use bitcoincore_rpc::RpcApi;
use clap::{Parser, Subcommand};
use jdc_shared::bus::{self, BusStats, Envelope, SubscribeOptions, Topic};
use jdc_shared::messages::{JobKind, JobSent, Template, Tip};
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::stack::Stack;
use zeromq::{Socket, SocketRecv};

/// Benchmarks of the jdc stack (real processes, real regtest bitcoind).
#[derive(Parser)]
#[command(version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// New tip (bitcoind ZMQ hashblock) → SetNewPrevHash at the sim-miner.
    TipLatency {
        /// Number of tips to measure.
        #[arg(long, default_value_t = 100)]
        tips: usize,
        /// Pause between blocks, milliseconds.
        #[arg(long, default_value_t = 150)]
        interval_ms: u64,
    },
    /// A large template from the watcher, through the selector, to a job at the declarator.
    TemplatePipeline {
        /// Mempool transactions to create.
        #[arg(long, default_value_t = 5000)]
        txs: usize,
        /// Templates to measure once the mempool is full.
        #[arg(long, default_value_t = 10)]
        rounds: usize,
    },
}

/// An address no wallet owns (BIP173 test vector, regtest).
const FOREIGN_ADDRESS: &str = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn summary(name: &str, mut v: Vec<u64>) -> String {
    v.sort_unstable();
    format!(
        "| {name} | {} | {:.3} | {:.3} | {:.3} | {:.3} |",
        v.len(),
        percentile(&v, 0.5) as f64 / 1000.0,
        percentile(&v, 0.9) as f64 / 1000.0,
        percentile(&v, 0.99) as f64 / 1000.0,
        v.last().copied().unwrap_or(0) as f64 / 1000.0
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Runtime::new()?;
    match cli.command {
        Command::TipLatency { tips, interval_ms } => rt.block_on(tip_latency(tips, interval_ms)),
        Command::TemplatePipeline { txs, rounds } => rt.block_on(template_pipeline(txs, rounds)),
    }
}

/// Tip prev_hash → (detected at, published at, height).
type TipTimes = HashMap<String, (u64, u64, u32)>;

/// Receipt times of bitcoind's `hashblock` notifications, by block hash (RPC hex).
type HashblockTimes = Arc<Mutex<HashMap<String, u64>>>;

async fn listen_hashblock(endpoint: String) -> anyhow::Result<HashblockTimes> {
    let times: HashblockTimes = Arc::new(Mutex::new(HashMap::new()));
    let mut sub = zeromq::SubSocket::new();
    sub.subscribe("hashblock").await?;
    sub.connect(&endpoint)
        .await
        .context("connecting to bitcoind ZMQ")?;
    let t = times.clone();
    tokio::spawn(async move {
        while let Ok(msg) = sub.recv().await {
            let now = jdc_shared::time::now_micros();
            if let Some(body) = msg.get(1) {
                if let Ok(mut m) = t.lock() {
                    m.insert(hex::encode(body), now);
                }
            }
        }
    });
    Ok(times)
}

async fn tip_latency(tips: usize, interval_ms: u64) -> anyhow::Result<()> {
    let node = Bitcoind::start()?;
    let addr: Address = FOREIGN_ADDRESS
        .parse::<Address<_>>()?
        .require_network(Network::Regtest)?;
    node.generate_to(&addr, 1)?; // leave initial block download
    let mut stack = Stack::new(&node, FOREIGN_ADDRESS, "")?;
    stack.start_services()?;
    // A miner that hashes but finds (almost) no blocks of its own: only our tips count.
    stack.start_miner("miner", &["--max-shares-per-sec", "0.2"])?;
    let hashblock = listen_hashblock(node.zmq_hashblock()).await?;

    let stats = Arc::new(BusStats::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (mut inbox, _tasks) = bus::subscribe(
        SubscribeOptions {
            streams: vec![
                (
                    "watcher".into(),
                    format!("tcp://127.0.0.1:{}", stack.ports.watcher),
                ),
                (
                    "declarator".into(),
                    format!("tcp://127.0.0.1:{}", stack.ports.declarator),
                ),
            ],
            topics: vec![Topic::Tip, Topic::Job],
            silence_timeout: Duration::from_secs(5),
        },
        stats,
        shutdown.clone(),
    );
    // Tip prev_hash -> (detected at, published at, height).
    let tip_times: Arc<Mutex<TipTimes>> = Arc::default();
    // Height of the block being mined -> µs from tip detection to the declarator's write.
    let job_times: Arc<Mutex<HashMap<u32, u64>>> = Arc::default();
    let tt = tip_times.clone();
    let jt = job_times.clone();
    tokio::spawn(async move {
        while let Some(m) = inbox.recv().await {
            if m.topic == Topic::Job {
                if let Ok(env) = bus::decode_envelope::<JobSent>(&m.bytes) {
                    if env.body.new_tip {
                        if let Ok(mut t) = jt.lock() {
                            t.entry(env.body.height).or_insert(env.body.tip_to_job_us);
                        }
                    }
                }
                continue;
            }
            if let Ok(env) = bus::decode_envelope::<Tip>(&m.bytes) {
                let env: Envelope<Tip> = env;
                if let Ok(mut t) = tt.lock() {
                    t.entry(env.body.prev_hash.clone()).or_insert((
                        env.body.detected_at_us,
                        env.sent_at_us,
                        env.body.height,
                    ));
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await; // let the subscriptions settle

    let mut total = Vec::new();
    let mut zmq_to_watcher = Vec::new();
    let mut watcher_to_bus = Vec::new();
    let mut bus_to_miner = Vec::new();
    let mut bus_to_declarator_write = Vec::new();
    let mut declarator_write_to_miner = Vec::new();
    eprintln!("mining {tips} blocks ...");
    for i in 0..tips {
        let hash = node.generate_to(&addr, 1)?[0].to_string();
        let miner = stack.get("miner")?;
        let from = 0;
        let h = hash.clone();
        let (_, event) = tokio::task::block_in_place(|| {
            miner.wait_for_event(from, Duration::from_secs(10), |e| {
                e["event"] == "set-new-prev-hash" && e["prev_hash"] == h.as_str()
            })
        })?;
        let at_miner = event["t_us"].as_u64().context("t_us")?;
        let deadline = Instant::now() + Duration::from_secs(2);
        let zmq_at = loop {
            if let Some(t) = hashblock.lock().ok().and_then(|m| m.get(&hash).copied()) {
                break t;
            }
            if Instant::now() > deadline {
                bail!("bench never saw hashblock for {hash}");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        total.push(at_miner.saturating_sub(zmq_at));
        if let Some((detected, sent, height)) =
            tip_times.lock().ok().and_then(|m| m.get(&hash).copied())
        {
            zmq_to_watcher.push(detected.saturating_sub(zmq_at));
            watcher_to_bus.push(sent.saturating_sub(detected));
            bus_to_miner.push(at_miner.saturating_sub(sent));
            tokio::time::sleep(Duration::from_millis(20)).await; // the job event follows the job
            if let Some(tip_to_job) = job_times.lock().ok().and_then(|m| m.get(&height).copied()) {
                let written = detected + tip_to_job;
                bus_to_declarator_write.push(written.saturating_sub(sent));
                declarator_write_to_miner.push(at_miner.saturating_sub(written));
            }
        }
        if (i + 1) % 25 == 0 {
            eprintln!("  {} / {tips}", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    shutdown.cancel();
    println!("new tip → SetNewPrevHash at the sim-miner (ms), {tips} tips on loopback\n");
    println!("| span | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
    println!(
        "{}",
        summary("bitcoind hashblock → SetNewPrevHash at miner", total)
    );
    println!(
        "{}",
        summary("hashblock → watcher receives it", zmq_to_watcher)
    );
    println!(
        "{}",
        summary(
            "watcher receipt → Tip published (getblockheader)",
            watcher_to_bus
        )
    );
    println!(
        "{}",
        summary("Tip published → SetNewPrevHash at miner", bus_to_miner)
    );
    println!(
        "{}",
        summary(
            "… Tip published → declarator wrote the job",
            bus_to_declarator_write
        )
    );
    println!(
        "{}",
        summary(
            "… declarator wrote → miner received",
            declarator_write_to_miner
        )
    );
    Ok(())
}

async fn template_pipeline(txs: usize, rounds: usize) -> anyhow::Result<()> {
    let node = Bitcoind::start_with(jdc_tests::bitcoind::Options {
        extra_args: vec![
            "-maxmempool=300".into(),
            "-limitancestorcount=1000".into(),
            "-limitdescendantcount=1000".into(),
            "-limitancestorsize=1010".into(),
            "-limitdescendantsize=1010".into(),
        ],
        ..Default::default()
    })?;
    node.create_wallet("bench")?;
    let funding = node.new_address()?;
    node.generate_to(&funding, 101)?;
    // Spread the coins over many outputs so the transactions below are independent.
    let wallet = node.wallet_rpc("bench")?;
    let per_batch = 1000usize;
    eprintln!("preparing {txs} coins ...");
    let mut made = 0;
    while made < txs {
        let n = per_batch.min(txs - made);
        let mut outs = serde_json::Map::new();
        for _ in 0..n {
            outs.insert(node.new_address()?.to_string(), serde_json::json!(0.0003));
        }
        let _: serde_json::Value = wallet.call(
            "sendmany",
            &[serde_json::json!(""), serde_json::Value::Object(outs)],
        )?;
        made += n;
        node.generate_to(&funding, 1)?;
    }
    node.generate_to(&funding, 1)?;

    let mut stack = Stack::new(&node, &funding.to_string(), "")?;
    stack.start_services()?;
    stack.start_miner("miner", &["--max-shares-per-sec", "0"])?;

    eprintln!("creating {txs} mempool transactions ...");
    let dest = node.new_address()?;
    let start = Instant::now();
    let mut sent = 0;
    for i in 0..txs {
        if wallet
            .send_to_address(
                &dest,
                bitcoincore_rpc::bitcoin::Amount::from_sat(10_000),
                None,
                None,
                None,
                None,
                None,
                None,
            )
            .is_ok()
        {
            sent += 1;
        }
        if (i + 1) % 500 == 0 {
            eprintln!(
                "  {} / {txs} ({:.0} s)",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let mempool = node.rpc()?.get_raw_mempool()?.len();
    eprintln!("mempool holds {mempool} transactions ({sent} sent)");

    let stats = Arc::new(BusStats::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let (mut inbox, _tasks) = bus::subscribe(
        SubscribeOptions {
            streams: vec![
                (
                    "watcher".into(),
                    format!("tcp://127.0.0.1:{}", stack.ports.watcher),
                ),
                (
                    "declarator".into(),
                    format!("tcp://127.0.0.1:{}", stack.ports.declarator),
                ),
            ],
            topics: vec![Topic::Template, Topic::Job],
            silence_timeout: Duration::from_secs(5),
        },
        stats,
        shutdown.clone(),
    );
    tokio::time::sleep(Duration::from_secs(3)).await; // past the refresh debounce
    while inbox.try_recv().is_ok() {}

    let mut latencies = Vec::new();
    let mut template_bytes = 0usize;
    let mut template_txs = 0usize;
    let mut seen_templates = std::collections::HashSet::new();
    for _ in 0..rounds {
        // One more transaction changes the mempool: the watcher publishes a new template.
        let _ = wallet.send_to_address(
            &dest,
            bitcoincore_rpc::bitcoin::Amount::from_sat(10_000),
            None,
            None,
            None,
            None,
            None,
            None,
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut published: Option<u64> = None;
        loop {
            let Ok(Some(m)) = tokio::time::timeout_at(deadline.into(), inbox.recv()).await else {
                bail!("no template/job within 10 s");
            };
            match m.topic {
                Topic::Template => {
                    let env: Envelope<Template> = bus::decode_envelope(&m.bytes)?;
                    if env.body.txs.len() + 100 >= mempool && seen_templates.insert(env.body.id) {
                        published = Some(env.sent_at_us);
                        template_bytes = env.body.txs.iter().map(|t| t.data.len()).sum();
                        template_txs = env.body.txs.len();
                    }
                }
                Topic::Job => {
                    let env: Envelope<JobSent> = bus::decode_envelope(&m.bytes)?;
                    if let Some(t0) = published {
                        if env.body.kind == JobKind::Full && env.sent_at_us > t0 {
                            latencies.push(env.sent_at_us - t0);
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        tokio::time::sleep(Duration::from_millis(1200)).await; // next refresh is debounced
    }
    shutdown.cancel();
    println!(
        "template of {template_txs} transactions ({:.2} MB serialized) from the watcher's publish to the declarator's full job at the miner (ms)\n",
        template_bytes as f64 / 1e6
    );
    println!("| span | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
    println!(
        "{}",
        summary("watcher template → declarator full job", latencies)
    );
    println!("\n| process | RSS (MB) |\n|---|---|");
    for p in [
        "template-watcher",
        "tx-selector",
        "declarator",
        "metrics",
        "miner",
    ] {
        if let Some(kib) = stack.get(p).ok().and_then(|p| p.rss_kib()) {
            println!("| {p} | {:.1} |", kib as f64 / 1024.0);
        }
    }
    Ok(())
}
