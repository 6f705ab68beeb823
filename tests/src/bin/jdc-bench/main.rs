//! Benchmarks of the whole stack as real processes against a real regtest bitcoind.
//! They print figures; they never assert timings.
//!
//! Build the release binaries first, then run:
//!
//! ```sh
//! cargo build --release --workspace --bins
//! target/release/jdc-bench tip-latency --tips 100
//! target/release/jdc-bench template-pipeline --txs 5000
//! target/release/jdc-bench sv1-shares --secs 10
//! ```
//!
//! `tip-latency`: blocks are mined by `generatetoaddress` (to an address no wallet knows, so
//! bitcoind's wallet does not delay the notification); the bench subscribes to bitcoind's
//! ZMQ `hashblock` itself and measures from its receipt to the sim-miner receiving the
//! `SetNewPrevHash` for that block, plus the stages in between from the bus.
//!
//! `template-pipeline`: fills the mempool with `--txs` transactions (signed by the bench), then measures from
//! the watcher publishing a template to the declarator writing the full job to the miner, and
//! reports each process's resident memory with that template loaded.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bitcoincore_rpc::bitcoin::{Address, Network};
use bitcoincore_rpc::RpcApi;
use clap::{Parser, Subcommand};
use jdc_shared::bus::{self, Envelope, Topic};
use jdc_shared::messages::{JobKind, JobSent, Selection, Template, Tip};
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::stack::Stack;
use zeromq::{Socket, SocketRecv};

mod side_by_side;
mod sv1_shares;
mod tdp_latency;

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
        /// New tips to measure with the mempool full (empty blocks).
        #[arg(long, default_value_t = 50)]
        tips: usize,
    },
    /// Mining for a pool (strict test pool + JDS in this process): new tip → job at the
    /// sim-miner, and new tip → the declared full job accepted by the pool.
    JdLatency {
        /// Mempool transactions to create.
        #[arg(long, default_value_t = 2000)]
        txs: usize,
        /// New tips to measure (empty blocks, so the mempool stays full).
        #[arg(long, default_value_t = 50)]
        tips: usize,
    },
    /// Fallback: the pool in use crashes → the device's first job for the other upstream
    /// (a scripted device, two test pools with their JDSs, crashed in turn), then both go for
    /// good → the first job for solo mining.
    FallbackLatency {
        /// Fall-overs to measure.
        #[arg(long, default_value_t = 30)]
        rounds: usize,
    },
    /// Side by side on one bitcoind: new tip → job at a sim-miner through our declarator, and
    /// through SRI's jd_client_sv2 (solo) fed by the template-watcher's TDP server.
    SideBySide {
        /// Number of tips to measure.
        #[arg(long, default_value_t = 50)]
        tips: usize,
        /// Pause between blocks, milliseconds.
        #[arg(long, default_value_t = 300)]
        interval_ms: u64,
    },
    /// New tip → SetNewPrevHash at a Template Distribution client of the template-watcher.
    TdpLatency {
        /// Number of tips to measure.
        #[arg(long, default_value_t = 100)]
        tips: usize,
        /// Pause between blocks, milliseconds.
        #[arg(long, default_value_t = 150)]
        interval_ms: u64,
    },
    /// Stratum V1 shares accepted per second by the declarator pinned to one core.
    Sv1Shares {
        /// Seconds of load.
        #[arg(long, default_value_t = 10)]
        secs: u64,
        /// V1 connections sending shares.
        #[arg(long, default_value_t = 4)]
        connections: usize,
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
        Command::TemplatePipeline { txs, rounds, tips } => {
            rt.block_on(template_pipeline(txs, rounds, tips))
        }
        Command::JdLatency { txs, tips } => rt.block_on(jd_latency(txs, tips)),
        Command::FallbackLatency { rounds } => rt.block_on(fallback_latency(rounds)),
        Command::Sv1Shares { secs, connections } => rt.block_on(sv1_shares::run(secs, connections)),
        Command::SideBySide { tips, interval_ms } => {
            rt.block_on(side_by_side::run(tips, interval_ms))
        }
        Command::TdpLatency { tips, interval_ms } => {
            rt.block_on(tdp_latency::run(tips, interval_ms))
        }
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

/// Waits for the sim-miner's `SetNewPrevHash` for block `hash` and bitcoind's `hashblock` for
/// it; returns (miner receipt, hashblock receipt) in unix µs.
async fn tip_at_miner(
    miner: &jdc_tests::stack::Proc,
    hashblock: &HashblockTimes,
    hash: &str,
) -> anyhow::Result<(u64, u64)> {
    let (_, event) = tokio::task::block_in_place(|| {
        miner.wait_for_event(0, Duration::from_secs(10), |e| {
            e["event"] == "set-new-prev-hash" && e["prev_hash"] == hash
        })
    })?;
    let at_miner = event["t_us"].as_u64().context("t_us")?;
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        if let Some(t) = hashblock.lock().ok().and_then(|m| m.get(hash).copied()) {
            return Ok((at_miner, t));
        }
        if Instant::now() > deadline {
            bail!("bench never saw hashblock for {hash}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Per-stage timings of new tips, from the bus timestamps of the stack's `Tip` and `Job`
/// messages and the miner's receipt.
#[derive(Default)]
struct TipStages {
    total: Vec<u64>,
    zmq_to_watcher: Vec<u64>,
    watcher_to_bus: Vec<u64>,
    bus_to_miner: Vec<u64>,
    bus_to_declarator_write: Vec<u64>,
    declarator_write_to_miner: Vec<u64>,
    tip_times: Arc<Mutex<TipTimes>>,
    /// Height of the block being mined -> µs from tip detection to the declarator's write.
    job_times: Arc<Mutex<HashMap<u32, u64>>>,
}

impl TipStages {
    /// Starts collecting the stack's `Tip` and new-tip `Job` messages.
    fn collect(stack: &Stack) -> (TipStages, tokio_util::sync::CancellationToken) {
        let (mut inbox, shutdown) = stack.subscribe(vec![Topic::Tip, Topic::Job]);
        let stages = TipStages::default();
        let tt = stages.tip_times.clone();
        let jt = stages.job_times.clone();
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
        (stages, shutdown)
    }

    /// Waits for block `hash` at the miner and records its stages.
    async fn record(
        &mut self,
        stack: &Stack,
        hashblock: &HashblockTimes,
        hash: &str,
    ) -> anyhow::Result<()> {
        let (at_miner, zmq_at) = tip_at_miner(stack.get("miner")?, hashblock, hash).await?;
        self.total.push(at_miner.saturating_sub(zmq_at));
        let Some((detected, sent, height)) = self
            .tip_times
            .lock()
            .ok()
            .and_then(|m| m.get(hash).copied())
        else {
            return Ok(());
        };
        self.zmq_to_watcher.push(detected.saturating_sub(zmq_at));
        self.watcher_to_bus.push(sent.saturating_sub(detected));
        self.bus_to_miner.push(at_miner.saturating_sub(sent));
        tokio::time::sleep(Duration::from_millis(20)).await; // the job event follows the job
        if let Some(tip_to_job) = self
            .job_times
            .lock()
            .ok()
            .and_then(|m| m.get(&height).copied())
        {
            let written = detected + tip_to_job;
            self.bus_to_declarator_write
                .push(written.saturating_sub(sent));
            self.declarator_write_to_miner
                .push(at_miner.saturating_sub(written));
        }
        Ok(())
    }

    fn print(self) {
        println!("| span | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
        for (name, values) in [
            ("bitcoind hashblock → SetNewPrevHash at miner", self.total),
            ("hashblock → watcher receives it", self.zmq_to_watcher),
            ("watcher receipt → Tip published", self.watcher_to_bus),
            ("Tip published → SetNewPrevHash at miner", self.bus_to_miner),
            (
                "… Tip published → declarator wrote the job",
                self.bus_to_declarator_write,
            ),
            (
                "… declarator wrote → miner received",
                self.declarator_write_to_miner,
            ),
        ] {
            println!("{}", summary(name, values));
        }
    }
}

/// A regtest node out of initial block download (one block paying a foreign address) and a
/// stack on it paying that address (returned too, for the blocks the bench mines).
fn foreign_stack() -> anyhow::Result<(Bitcoind, Address, Stack)> {
    let node = Bitcoind::start()?;
    let addr: Address = FOREIGN_ADDRESS
        .parse::<Address<_>>()?
        .require_network(Network::Regtest)?;
    node.generate_to(&addr, 1)?;
    let stack = Stack::new(&node, FOREIGN_ADDRESS, "")?;
    Ok((node, addr, stack))
}

async fn tip_latency(tips: usize, interval_ms: u64) -> anyhow::Result<()> {
    let (node, addr, mut stack) = foreign_stack()?;
    stack.start_services()?;
    // A miner that hashes but finds (almost) no blocks of its own: only our tips count.
    stack.start_miner("miner", &["--max-shares-per-sec", "0.2"])?;
    let hashblock = listen_hashblock(node.zmq_hashblock()).await?;
    let (mut stages, shutdown) = TipStages::collect(&stack);
    tokio::time::sleep(Duration::from_secs(2)).await; // let the subscriptions settle

    eprintln!("mining {tips} blocks ...");
    for i in 0..tips {
        let hash = node.generate_to(&addr, 1)?[0].to_string();
        stages.record(&stack, &hashblock, &hash).await?;
        if (i + 1) % 25 == 0 {
            eprintln!("  {} / {tips}", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    shutdown.cancel();
    println!("new tip → SetNewPrevHash at the sim-miner (ms), {tips} tips on loopback\n");
    stages.print();
    Ok(())
}

async fn template_pipeline(txs: usize, rounds: usize, tip_rounds: usize) -> anyhow::Result<()> {
    // Knots caps templates at 300 kB by default (`blockmaxsize`); allow full blocks.
    let node = Bitcoind::start_with(jdc_tests::bitcoind::Options {
        extra_args: vec![
            "-blockmaxsize=4000000".into(),
            "-blockmaxweight=4000000".into(),
        ],
        ..Default::default()
    })?;
    let mut funds = Funds::new(&node)?;
    eprintln!("preparing {txs} coins ...");
    let mut coins = funds.fan_out(&node, txs + rounds + 1)?;
    let mut spare = coins.split_off(txs).into_iter();

    let mut stack = Stack::new(&node, &funds.address.to_string(), "")?;
    stack.start_services()?;
    // The miner connects so jobs are written, but finds (almost) no blocks.
    stack.start_miner("miner", &["--max-shares-per-sec", "0.0001"])?;

    eprintln!("creating {txs} mempool transactions ...");
    let rpc = node.rpc()?;
    let start = Instant::now();
    for (i, coin) in coins.iter().enumerate() {
        rpc.send_raw_transaction(&funds.spend(coin, 4, 10)?)?;
        if (i + 1) % 1000 == 0 {
            eprintln!(
                "  {} / {txs} ({:.0} s)",
                i + 1,
                start.elapsed().as_secs_f64()
            );
        }
    }
    let mempool = rpc.get_raw_mempool()?.len();
    eprintln!("mempool holds {mempool} transactions");

    let (mut inbox, shutdown) =
        stack.subscribe(vec![Topic::Template, Topic::Selection, Topic::Job]);
    tokio::time::sleep(Duration::from_secs(3)).await; // past the refresh debounce
    while inbox.try_recv().is_ok() {}

    let mut latencies = Vec::new();
    let mut to_selection = Vec::new();
    let mut selection_to_job = Vec::new();
    let mut template_bytes = 0usize;
    let mut template_txs = 0usize;
    let mut seen_templates = std::collections::HashSet::new();
    for _ in 0..rounds {
        // One more transaction, paying more than any other so that it enters the (full)
        // template: the watcher publishes a new template (an unchanged one is not re-published).
        if let Some(coin) = spare.next() {
            rpc.send_raw_transaction(&funds.spend(&coin, 4, 50)?)?;
        }
        // bitcoind serves a cached template for ~5 s after the last one when only the mempool
        // changed, so a refresh can take that long to appear.
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut published: Option<(u64, u64)> = None;
        let mut selected: Option<u64> = None;
        loop {
            let Ok(Some(m)) = tokio::time::timeout_at(deadline.into(), inbox.recv()).await else {
                bail!("no template/job within 15 s");
            };
            match m.topic {
                Topic::Template => {
                    let env: Envelope<Template> = bus::decode_envelope(&m.bytes)?;
                    if env.body.txs.len() + 500 >= mempool.min(4_900)
                        && seen_templates.insert(env.body.id)
                    {
                        published = Some((env.body.id, env.sent_at_us));
                        template_bytes = env.body.txs.iter().map(|t| t.data.len()).sum();
                        template_txs = env.body.txs.len();
                    }
                }
                Topic::Selection => {
                    let env: Envelope<Selection> = bus::decode_envelope(&m.bytes)?;
                    if published.is_some_and(|(id, _)| id == env.body.template_id) {
                        selected = Some(env.sent_at_us);
                    }
                }
                Topic::Job => {
                    let env: Envelope<JobSent> = bus::decode_envelope(&m.bytes)?;
                    if let Some((_, t0)) = published {
                        if env.body.kind == JobKind::Full && env.sent_at_us > t0 {
                            latencies.push(env.sent_at_us - t0);
                            if let Some(t1) = selected {
                                to_selection.push(t1.saturating_sub(t0));
                                selection_to_job.push(env.sent_at_us.saturating_sub(t1));
                            }
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
    println!(
        "{}",
        summary("… template → selection published", to_selection)
    );
    println!(
        "{}",
        summary("… selection published → full job written", selection_to_job)
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

    // New tips while the mempool stays full: empty blocks (`generateblock` with no
    // transactions) leave the 5,000 transactions in place, so every tip is followed by a
    // 4 MB getblocktemplate, selection and full job.
    let hashblock = listen_hashblock(node.zmq_hashblock()).await?;
    let (mut stages, shutdown) = TipStages::collect(&stack);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let addr = funds.address.to_string();
    for _ in 0..tip_rounds {
        let hash = empty_block(&rpc, &addr)?;
        stages.record(&stack, &hashblock, &hash).await?;
        // Let the full template of this tip go through before the next block.
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    shutdown.cancel();
    println!(
        "\nnew tip → SetNewPrevHash at the sim-miner with {mempool} transactions in the mempool (ms)\n"
    );
    stages.print();
    Ok(())
}

async fn jd_latency(txs: usize, tips: usize) -> anyhow::Result<()> {
    use jdc_tests::jds::{Misbehave, TestJds};
    use jdc_tests::pool::{PoolMisbehave, TestPool};
    let jds = TestJds::start(Misbehave::No).await?;
    let pool = TestPool::start_with_jds(PoolMisbehave::No, &jds).await?;
    let node = Bitcoind::start_with(jdc_tests::bitcoind::Options {
        extra_args: vec![
            "-blockmaxsize=4000000".into(),
            "-blockmaxweight=4000000".into(),
        ],
        ..Default::default()
    })?;
    let mut funds = Funds::new(&node)?;
    eprintln!("preparing {txs} coins ...");
    let coins = funds.fan_out(&node, txs)?;
    let upstream = jdc_tests::pool::upstream_entry(&pool.addr.to_string(), &jds, "full-template");
    let mut stack = Stack::new(&node, &funds.address.to_string(), &upstream)?;
    tokio::task::block_in_place(|| stack.start_services())?;
    tokio::task::block_in_place(|| {
        stack.start_miner("miner", &["--max-shares-per-sec", "0.0001"])
    })?;
    eprintln!("creating {txs} mempool transactions ...");
    let rpc = node.rpc()?;
    for coin in &coins {
        let tx = funds.spend(coin, 4, 10)?;
        // The pool's node has the transactions too, as a real JDS's does.
        jds.know(&bitcoin::consensus::serialize(&tx))?;
        rpc.send_raw_transaction(&tx)?;
    }
    let mempool = rpc.get_raw_mempool()?.len();
    eprintln!("mempool holds {mempool} transactions");
    let hashblock = listen_hashblock(node.zmq_hashblock()).await?;
    let (mut stages, shutdown) = TipStages::collect(&stack);
    // getblocktemplate time of each tip's template, from the watcher's summaries.
    let (mut summaries, summaries_stop) = stack.subscribe(vec![Topic::Summary]);
    let gbt: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let g = gbt.clone();
    tokio::spawn(async move {
        while let Some(m) = summaries.recv().await {
            if let Ok(env) = bus::decode_envelope::<jdc_shared::messages::TemplateSummary>(&m.bytes)
            {
                if let Ok(mut g) = g.lock() {
                    g.entry(env.body.prev_hash).or_insert(env.body.gbt_us);
                }
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let addr = funds.address.to_string();
    let mut accepted = Vec::new();
    let mut gbt_times = Vec::new();
    let mut beyond_gbt = Vec::new();
    eprintln!("mining {tips} blocks ...");
    for _ in 0..tips {
        let hash = empty_block(&rpc, &addr)?;
        stages.record(&stack, &hashblock, &hash).await?;
        let zmq_at = hashblock
            .lock()
            .ok()
            .and_then(|m| m.get(&hash).copied())
            .context("hashblock time")?;
        let internal = jdc_shared::chain::hash_from_rpc_hex(&hash)?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let full = pool
                .jobs()
                .into_iter()
                .find(|j| j.prev_hash == internal && j.merkle_path_len > 0);
            if let Some(j) = full {
                accepted.push(j.at_us.saturating_sub(zmq_at));
                break;
            }
            if Instant::now() > deadline {
                bail!("the pool never accepted a full job on {hash}");
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        if let Some(us) = gbt.lock().ok().and_then(|g| g.get(&hash).copied()) {
            gbt_times.push(us);
            if let Some(total) = accepted.last() {
                beyond_gbt.push(total.saturating_sub(us));
            }
        }
        tokio::time::sleep(Duration::from_millis(700)).await;
    }
    shutdown.cancel();
    summaries_stop.cancel();
    println!("mining for a pool, {mempool} transactions in the mempool, {tips} tips (ms)\n");
    stages.print();
    println!(
        "{}",
        summary(
            "bitcoind hashblock → declared full job accepted by the pool",
            accepted
        )
    );
    println!(
        "{}",
        summary("… of which getblocktemplate (watcher)", gbt_times)
    );
    println!(
        "{}",
        summary("… the rest (per tip: total − getblocktemplate)", beyond_gbt)
    );
    if !pool.violations().is_empty() || !jds.violations().is_empty() {
        bail!(
            "test peers saw violations: pool {:?}, jds {:?}",
            pool.violations(),
            jds.violations()
        );
    }
    Ok(())
}

async fn fallback_latency(rounds: usize) -> anyhow::Result<()> {
    use jdc_tests::jds::{Misbehave, TestJds};
    use jdc_tests::pool::{upstream_entry, PoolMisbehave, TestPool};
    use stratum_core::parsers_sv2::MiningOwned;
    let jds1 = TestJds::start(Misbehave::No).await?;
    let pool1 = TestPool::start_with_jds_prefix(PoolMisbehave::No, &jds1, [0x11, 0x11]).await?;
    let jds2 = TestJds::start(Misbehave::No).await?;
    let pool2 = TestPool::start_with_jds_prefix(PoolMisbehave::No, &jds2, [0x22, 0x22]).await?;
    let upstreams = upstream_entry(&pool1.addr.to_string(), &jds1, "full-template")
        + &upstream_entry(&pool2.addr.to_string(), &jds2, "full-template");
    let node = Bitcoind::start()?;
    // Out of initial block download.
    node.generate(1)?;
    let mut stack = Stack::new(&node, FOREIGN_ADDRESS, &upstreams)?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        stack.start(
            "declarator",
            // No return to a recovered higher-ranked pool during the bench: every job change
            // the device sees is a fall-over.
            &["--set", "declarator.upstream_hold_down_secs=3600"],
            "SV2 mining server listening",
        )?;
        stack.start_template_source()
    })?;
    let mut device = stack.connect_device().await?;
    let is_job = |m: &MiningOwned| matches!(m, MiningOwned::NewExtendedMiningJob(_));
    device
        .wait_for(
            "mining for the first pool",
            Duration::from_secs(30),
            |d, m| d.new_work_under(m, &[0x11, 0x11]),
        )
        .await?;
    // Each round crashes the pool in use; the declarator falls over to the other one (which
    // is back by then: its listener stayed up).
    let mut fall_over = Vec::new();
    let (mut active, mut other) = ((&pool1, [0x11, 0x11]), (&pool2, [0x22, 0x22]));
    eprintln!("{rounds} fall-overs ...");
    for _ in 0..rounds {
        let crash = Instant::now();
        active.0.drop_connections();
        device
            .wait_for(
                "a job for the other pool",
                Duration::from_secs(5),
                |d, m| is_job(m) && d.mines_under(&other.1),
            )
            .await?;
        fall_over.push(crash.elapsed().as_micros() as u64);
        std::mem::swap(&mut active, &mut other);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Both pools gone for good (listeners closed): solo.
    let crash = Instant::now();
    for pool in [&pool1, &pool2] {
        pool.drop_connections();
    }
    drop((pool1, pool2));
    device
        .wait_for("a job for solo mining", Duration::from_secs(10), |_, m| {
            is_job(m)
        })
        .await?;
    let to_solo = vec![crash.elapsed().as_micros() as u64];
    println!("\nupstream crash → first job for the new source at the device (ms)\n");
    println!("| path | n | p50 | p90 | p99 | max |\n|---|---|---|---|---|---|");
    println!(
        "{}",
        summary(
            "the pool in use crashes → job for the other pool",
            fall_over
        )
    );
    println!(
        "{}",
        summary("both pools gone → job for solo mining", to_solo)
    );
    Ok(())
}

/// Mines an empty block (`generateblock` with no transactions, so the mempool stays full) to
/// `addr`; returns its hash.
fn empty_block(rpc: &bitcoincore_rpc::Client, addr: &str) -> anyhow::Result<String> {
    let answer: serde_json::Value = rpc.call(
        "generateblock",
        &[serde_json::json!(addr), serde_json::json!([])],
    )?;
    Ok(answer["hash"]
        .as_str()
        .context("generateblock hash")?
        .to_string())
}

/// Coins of a key this bench holds, spent with locally signed P2WPKH transactions (no wallet,
/// so thousands of transactions take seconds, not minutes).
struct Funds {
    secp: secp256k1::Secp256k1<secp256k1::All>,
    key: secp256k1::SecretKey,
    pubkey: bitcoin::CompressedPublicKey,
    address: Address,
    /// Next coinbase height to spend.
    next_coinbase: u64,
}

/// A spendable output.
struct Coin {
    outpoint: bitcoin::OutPoint,
    value: u64,
}

use bitcoincore_rpc::bitcoin::{self, secp256k1};

impl Funds {
    fn new(node: &Bitcoind) -> anyhow::Result<Funds> {
        let secp = secp256k1::Secp256k1::new();
        let key = secp256k1::SecretKey::from_slice(&[0x42; 32])?;
        let pubkey =
            bitcoin::CompressedPublicKey(secp256k1::PublicKey::from_secret_key(&secp, &key));
        let address = Address::p2wpkh(&pubkey, Network::Regtest);
        node.generate_to(&address, 150)?;
        Ok(Funds {
            secp,
            key,
            pubkey,
            address,
            next_coinbase: 1,
        })
    }

    /// Splits mature coinbases into `n` confirmed coins (mines one block to confirm them).
    fn fan_out(&mut self, node: &Bitcoind, n: usize) -> anyhow::Result<Vec<Coin>> {
        let rpc = node.rpc()?;
        let mut coins = Vec::with_capacity(n);
        let per_tx = 2_000usize;
        let mut txids = Vec::new();
        while coins.len() + txids.len() * per_tx < n {
            let hash = rpc.get_block_hash(self.next_coinbase)?;
            self.next_coinbase += 1;
            let block = rpc.get_block(&hash)?;
            let cb = &block.txdata[0];
            let coin = Coin {
                outpoint: bitcoin::OutPoint {
                    txid: cb.compute_txid(),
                    vout: 0,
                },
                value: cb.output[0].value.to_sat(),
            };
            let outs = per_tx.min(n - coins.len() - txids.len() * per_tx);
            let tx = self.spend(&coin, outs, 10)?;
            txids.push((tx.compute_txid(), outs, tx.output[0].value.to_sat()));
            rpc.send_raw_transaction(&tx)?;
        }
        node.generate_to(&self.address, 1)?;
        for (txid, outs, value) in txids {
            for vout in 0..outs {
                coins.push(Coin {
                    outpoint: bitcoin::OutPoint {
                        txid,
                        vout: vout as u32,
                    },
                    value,
                });
            }
        }
        Ok(coins)
    }

    /// A transaction spending `coin` to `outputs` equal outputs of our own address
    /// (about 200 vB with 4 outputs), paying a fee of 10 sat/vB.
    /// A transaction spending `coin` to `outputs` outputs at `fee_rate` sat/vB.
    fn spend(
        &self,
        coin: &Coin,
        outputs: usize,
        fee_rate: u64,
    ) -> anyhow::Result<bitcoin::Transaction> {
        use bitcoin::hashes::Hash;
        use bitcoin::sighash::{EcdsaSighashType, SighashCache};
        let vsize_estimate = 11 + 68 + 31 * outputs as u64;
        let fee = vsize_estimate * fee_rate;
        let each = coin.value.saturating_sub(fee) / outputs as u64;
        if each < 1_000 {
            bail!(
                "coin of {} sats too small for {outputs} outputs",
                coin.value
            );
        }
        let script = self.address.script_pubkey();
        let mut tx = bitcoin::Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![bitcoin::TxIn {
                previous_output: coin.outpoint,
                script_sig: bitcoin::ScriptBuf::new(),
                sequence: bitcoin::Sequence::ENABLE_RBF_NO_LOCKTIME,
                witness: bitcoin::Witness::new(),
            }],
            output: (0..outputs)
                .map(|_| bitcoin::TxOut {
                    value: bitcoin::Amount::from_sat(each),
                    script_pubkey: script.clone(),
                })
                .collect(),
        };
        let sighash = SighashCache::new(&tx).p2wpkh_signature_hash(
            0,
            &script,
            bitcoin::Amount::from_sat(coin.value),
            EcdsaSighashType::All,
        )?;
        let msg = secp256k1::Message::from_digest(sighash.to_byte_array());
        let signature = bitcoin::ecdsa::Signature {
            signature: self.secp.sign_ecdsa(&msg, &self.key),
            sighash_type: EcdsaSighashType::All,
        };
        tx.input[0].witness = bitcoin::Witness::p2wpkh(&signature, &self.pubkey.0);
        Ok(tx)
    }
}
