//! Mining for a pool with our own templates, end to end: a real bitcoind (regtest), the four
//! jdc processes and a sim-miner as real processes; the pool and its JDS are the strict test
//! peers on SRI's crates, in this process. Blocks go to bitcoind (the judge) paying the pool,
//! every job is declared and set as a custom job, shares reach the pool, blocks reach the JDS.

use std::time::Duration;

use anyhow::{bail, Context};
use bitcoincore_rpc::RpcApi;
use jdc_shared::sv2::encode_authority_public_key;
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::exposition::{scrape, sum};
use jdc_tests::jds::{pool_payout_script, Misbehave, TestJds};
use jdc_tests::pool::{PoolMisbehave, TestPool};
use jdc_tests::stack::Stack;
use jdc_tests::wait_until;

/// The `[[declarator.upstream]]` entry of a test pool and its JDS.
fn upstream_entry(pool: &TestPool, jds: &TestJds, mode: &str) -> String {
    jdc_tests::pool::upstream_entry(&pool.addr.to_string(), jds, mode)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mines_blocks_for_the_pool_with_declared_jobs() -> anyhow::Result<()> {
    mines_blocks_for_the_pool("full-template").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mines_blocks_for_the_pool_in_coinbase_only_mode() -> anyhow::Result<()> {
    mines_blocks_for_the_pool("coinbase-only").await
}

/// A funded regtest node with three payments in its mempool, its block count, and a stack
/// whose declarator mines for `upstream` (announcing 1 H/s: an easy pool target, so the
/// sim-miner's shares reach it), with the template source running.
fn pool_stack(upstream: &str) -> anyhow::Result<(Bitcoind, u64, Stack)> {
    let (node, funding) = Bitcoind::start_funded()?;
    for _ in 0..3 {
        node.send_to_address(&funding, 100_000)?;
    }
    let start = node.rpc()?.get_block_count()?;
    let mut stack = Stack::new(&node, &funding.to_string(), upstream)?;
    stack.start(
        "declarator",
        &["--set", "declarator.upstream_nominal_hash_rate=1.0"],
        "SV2 mining server listening",
    )?;
    stack
        .get("declarator")?
        .wait_for_log("mining for the pool", Duration::from_secs(5))?;
    stack.start_template_source()?;
    Ok((node, start, stack))
}

async fn mines_blocks_for_the_pool(mode: &str) -> anyhow::Result<()> {
    let jds = TestJds::start(Misbehave::No).await?;
    // One authority key for the pool and its JDS, as a real pool has.
    let pool = TestPool::start_with_jds(PoolMisbehave::No, &jds).await?;
    let upstream = upstream_entry(&pool, &jds, mode);
    let result = tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let (node, start, mut stack) = pool_stack(&upstream)?;
        stack.start("metrics", &[], "listening")?;
        // A tiny device hashrate (announced to the pool) keeps the pool's target easy enough
        // for the sim-miner's shares.
        stack.start_miner(
            "miner",
            &["--max-shares-per-sec", "10", "--nominal-hashrate", "2"],
        )?;
        let rpc = node.rpc()?;
        wait_until(
            "3 blocks mined for the pool",
            Duration::from_secs(60),
            || Ok((rpc.get_block_count()? >= start + 3).then_some(())),
        )?;
        // Shares and solutions travel on their own connections: wait for them too.
        wait_until(
            "a share accepted by the pool",
            Duration::from_secs(30),
            || Ok(pool.shares().iter().any(Result::is_ok).then_some(())),
        )?;
        if mode == "full-template" {
            wait_until("a block pushed to the JDS", Duration::from_secs(30), || {
                Ok(jds.solutions().iter().any(Result::is_ok).then_some(()))
            })?;
        }
        let tip = rpc.get_block_count()?;
        for h in start + 1..=tip {
            let block = rpc.get_block(&rpc.get_block_hash(h)?)?;
            let coinbase = &block.txdata[0];
            let first = coinbase
                .output
                .first()
                .context("coinbase without outputs")?;
            if first.script_pubkey.as_bytes() != pool_payout_script().as_bytes() {
                bail!("block {h}: the first coinbase output is not the pool's payout");
            }
            if first.value.to_sat() == 0 {
                bail!("block {h}: the pool's payout carries no reward");
            }
        }
        // The wallet transactions went into a pool-paying block.
        if !rpc.get_raw_mempool()?.is_empty() {
            bail!("mempool transactions were not mined");
        }
        // Operators see it: pool mode, upstream 1 active, jobs declared and accepted.
        let port = stack.ports.metrics;
        let text = wait_until("pool mode in /metrics", Duration::from_secs(10), || {
            let text = scrape(port)?;
            let ok = sum(&text, "jdc_mining_mode", &["mode=\"pool\""]) == 1.0
                && sum(
                    &text,
                    "jdc_upstream_state",
                    &["upstream=\"1\"", "state=\"active\""],
                ) == 1.0
                && sum(&text, "jdc_declared_jobs_total", &["stage=\"accepted\""]) > 0.0
                && sum(&text, "jdc_tip_to_declared_job_accepted_seconds_count", &[]) > 0.0
                // The pool's acknowledgements of our shares, counted.
                && sum(&text, "jdc_pool_shares_total", &["result=\"accepted\""]) > 0.0;
            Ok(ok.then_some(text))
        })?;
        if sum(&text, "jdc_upstream_switches_total", &[]) != 0.0 {
            bail!("a switch was counted while the pool worked");
        }
        Ok(())
    });
    result?;
    if mode == "full-template" {
        assert!(!jds.declared().is_empty(), "no job was declared");
        assert!(
            jds.declared().iter().any(|d| !d.wtxids.is_empty()),
            "no declaration carried transactions"
        );
    } else {
        assert!(
            jds.declared().is_empty(),
            "coinbase-only mode declared a job"
        );
    }
    // The pool channel was opened with the configured hashrate, then told the device's.
    let rates = pool.hashrates();
    assert_eq!(rates.first(), Some(&1.0));
    assert!(
        rates.iter().skip(1).any(|r| (*r - 2.0).abs() < 0.01),
        "the sim-miner's 2 H/s was not announced: {rates:?}"
    );
    let shares = pool.shares();
    let accepted = shares.iter().filter(|s| s.is_ok()).count();
    assert!(accepted > 0, "the pool accepted no share: {shares:?}");
    // Shares in flight when the tip moves may be stale; nothing else is refused.
    let refused: Vec<_> = shares
        .iter()
        .filter(|s| matches!(s, Err(code) if code != "stale-share"))
        .collect();
    assert!(refused.is_empty(), "the pool refused shares: {refused:?}");
    if mode == "full-template" {
        let solutions = jds.solutions();
        assert!(
            !solutions.is_empty() && solutions.iter().all(Result::is_ok),
            "every block must reach the JDS as a valid PushSolution: {solutions:?}"
        );
    } else {
        // Coinbase-only: the JDS knows no job of ours; blocks go to our node alone.
        assert!(
            jds.solutions().is_empty(),
            "PushSolution sent in coinbase-only mode"
        );
    }
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    Ok(())
}

/// A pool rotating its payout: every mining job token carries another payout script of the
/// pool (and every other one a second output). Devices' jobs follow the token each job is
/// declared with, so every block bitcoind accepts pays the outputs of its declaration's token,
/// the pool accepts the shares (its custom-job outputs are checked against the declaration),
/// every `PushSolution` forms a block of a declaration, and nothing falls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn devices_follow_a_pool_rotating_its_outputs() -> anyhow::Result<()> {
    use jdc_shared::bitcoin::consensus::serialize;
    let jds = TestJds::start(Misbehave::RotateOutputs).await?;
    let pool = TestPool::start_with_jds(PoolMisbehave::No, &jds).await?;
    let upstream = upstream_entry(&pool, &jds, "full-template");
    let declared = jds.declared.clone();
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let (node, start, mut stack) = pool_stack(&upstream)?;
        stack.start_miner(
            "miner",
            &["--max-shares-per-sec", "10", "--nominal-hashrate", "2"],
        )?;
        let rpc = node.rpc()?;
        wait_until("4 blocks mined", Duration::from_secs(60), || {
            Ok((rpc.get_block_count()? >= start + 4).then_some(()))
        })?;
        wait_until(
            "a share accepted by the pool",
            Duration::from_secs(30),
            || Ok(pool.shares().iter().any(Result::is_ok).then_some(())),
        )?;
        wait_until("a block pushed to the JDS", Duration::from_secs(30), || {
            Ok(jds.solutions().iter().any(Result::is_ok).then_some(()))
        })?;
        let tip = rpc.get_block_count()?;
        let declarations = declared.lock().map(|d| d.clone()).unwrap_or_default();
        let mut payouts = std::collections::HashSet::new();
        for h in start + 1..=tip {
            let block = rpc.get_block(&rpc.get_block_hash(h)?)?;
            let coinbase = &block.txdata[0];
            let bytes = serialize(coinbase);
            // The declaration this coinbase is (its prefix and suffix around an extranonce).
            let Some(d) = declarations.iter().find(|d| {
                bytes.len() > d.coinbase_prefix.len() + d.coinbase_suffix.len()
                    && bytes.starts_with(&d.coinbase_prefix)
                    && bytes.ends_with(&d.coinbase_suffix)
            }) else {
                bail!("block {h}: its coinbase is no declared one");
            };
            let required = jds
                .outputs_of(&d.token)
                .context("a declaration with a token never handed out")?;
            let first = coinbase
                .output
                .first()
                .context("coinbase without outputs")?;
            let payout = required.first().context("a token without outputs")?;
            if first.script_pubkey != payout.script_pubkey {
                bail!("block {h}: the first output is not the payout of its token");
            }
            if first.value.to_sat() == 0 {
                bail!("block {h}: the pool's payout carries no reward");
            }
            if coinbase.output.get(1..required.len()) != required.get(1..) {
                bail!("block {h}: the token's other outputs are not paid as given");
            }
            payouts.insert(first.script_pubkey.clone());
        }
        if payouts.len() < 2 {
            bail!(
                "the blocks paid {} payout script(s): the pool's rotation was not followed",
                payouts.len()
            );
        }
        if !rpc.get_raw_mempool()?.is_empty() {
            bail!("mempool transactions were not mined");
        }
        let log = stack.get("declarator")?.log_lines().join("\n");
        if log.contains("upstream switch") {
            bail!("the declarator left the pool");
        }
        // Devices kept their connection throughout.
        let connected = stack
            .get("miner")?
            .events()
            .iter()
            .filter(|e| e["event"] == "connected")
            .count();
        if connected != 1 {
            bail!("the sim-miner connected {connected} times");
        }
        Ok(())
    })?;
    let declarations = jds.declared();
    let scripts: std::collections::HashSet<_> = declarations
        .iter()
        .filter_map(|d| {
            jds.outputs_of(&d.token)?
                .first()
                .map(|o| o.script_pubkey.clone())
        })
        .collect();
    assert!(
        scripts.len() >= 3,
        "declarations used {} payout scripts: tokens did not rotate",
        scripts.len()
    );
    let shares = pool.shares();
    assert!(
        shares.iter().any(Result::is_ok),
        "the pool accepted no share: {shares:?}"
    );
    let refused: Vec<_> = shares
        .iter()
        .filter(|s| matches!(s, Err(code) if code != "stale-share"))
        .collect();
    assert!(refused.is_empty(), "the pool refused shares: {refused:?}");
    let solutions = jds.solutions();
    assert!(
        !solutions.is_empty() && solutions.iter().all(Result::is_ok),
        "every block must reach the JDS as a valid PushSolution: {solutions:?}"
    );
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    Ok(())
}

/// Extra arguments of the declarator and the sim-miner in a fallback test.
struct Load {
    declarator: &'static [&'static str],
    miner: &'static [&'static str],
}

/// The default hashrates (and so pool target), 10 shares a second.
const STEADY: Load = Load {
    declarator: &[],
    miner: &["--max-shares-per-sec", "10"],
};

/// Every share reaches the pool: a hashrate so tiny, announced to the pool and by the device,
/// that the pool's target is the easiest, and 30 shares a second, so that a window of the
/// pool's verdicts fills within seconds. The rejected-share window is configured (20 shares,
/// more than 3/4 rejected).
const SHARES_TO_THE_POOL: Load = Load {
    declarator: &[
        "--set",
        "declarator.upstream_nominal_hash_rate=0.1",
        "--set",
        "declarator.upstream_reject_window=20",
        "--set",
        "declarator.upstream_reject_max_fraction=0.75",
    ],
    miner: &["--max-shares-per-sec", "30", "--nominal-hashrate", "0.1"],
};

/// The pool or its JDS stops taking our work: the declarator leaves it and mines solo to its
/// own payout without the devices reconnecting, and every block still reaches bitcoind. Returns
/// the pool for further checks.
async fn falls_back_to_solo(
    jds_misbehave: Misbehave,
    pool_misbehave: PoolMisbehave,
    reason: &str,
    load: Load,
) -> anyhow::Result<TestPool> {
    let jds = TestJds::start(jds_misbehave).await?;
    let pool = TestPool::start_with_jds(pool_misbehave, &jds).await?;
    let upstream = upstream_entry(&pool, &jds, "full-template");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let (node, funding) = Bitcoind::start_funded()?;
        let start = node.rpc()?.get_block_count()?;
        let mut stack = Stack::new(&node, &funding.to_string(), &upstream)?;
        stack.start("declarator", load.declarator, "SV2 mining server listening")?;
        stack.start_template_source()?;
        stack.start("metrics", &[], "listening")?;
        stack.start_miner("miner", load.miner)?;
        let switch = stack
            .get("declarator")?
            .wait_for_log("upstream switch", Duration::from_secs(20))?;
        if !switch.contains("to=solo") {
            bail!("the declarator did not switch to solo: {switch}");
        }
        let rpc = node.rpc()?;
        let ours = funding.script_pubkey();
        let pays_us = |h: u64| -> anyhow::Result<bool> {
            let block = rpc.get_block(&rpc.get_block_hash(h)?)?;
            Ok(block.txdata[0]
                .output
                .iter()
                .any(|o| o.script_pubkey.as_bytes() == ours.as_bytes() && o.value.to_sat() > 0))
        };
        // A share of a pool job still in the devices' hands may be a block (it pays the pool,
        // and is not lost); after it, blocks pay us.
        let first_solo = wait_until("a block paying our payout", Duration::from_secs(60), || {
            let tip = rpc.get_block_count()?;
            for h in start + 1..=tip {
                if pays_us(h)? {
                    return Ok(Some(h));
                }
            }
            Ok(None)
        })?;
        wait_until("2 more blocks", Duration::from_secs(60), || {
            Ok((rpc.get_block_count()? >= first_solo + 2).then_some(()))
        })?;
        for h in first_solo..=first_solo + 2 {
            if !pays_us(h)? {
                bail!("block {h} does not pay our payout after the fallback");
            }
        }
        let log = stack.get("declarator")?.log_lines().join("\n");
        if !log.contains(reason) {
            bail!("the fallback reason `{reason}` is not logged");
        }
        if pool_misbehave == PoolMisbehave::RejectShares {
            // Operators see why: the pool's rejections, counted by their reason.
            let port = stack.ports.metrics;
            wait_until(
                "the pool's rejections in /metrics",
                Duration::from_secs(15),
                || {
                    let text = scrape(port)?;
                    let rejected = sum(
                        &text,
                        "jdc_pool_shares_total",
                        &["result=\"rejected\"", "reason=\"invalid-share\""],
                    );
                    Ok((rejected >= 20.0).then_some(()))
                },
            )?;
        }
        Ok(())
    })?;
    Ok(pool)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_solo_when_the_pool_closes_the_channel() -> anyhow::Result<()> {
    falls_back_to_solo(
        Misbehave::No,
        PoolMisbehave::CloseChannel,
        "channel closed by the pool (pool-shutting-down)",
        STEADY,
    )
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_solo_when_the_pool_refuses_custom_jobs() -> anyhow::Result<()> {
    falls_back_to_solo(
        Misbehave::No,
        PoolMisbehave::RefuseCustomJobs,
        "SetCustomMiningJob refused (invalid-job)",
        STEADY,
    )
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_solo_when_the_jds_refuses_declarations() -> anyhow::Result<()> {
    falls_back_to_solo(
        Misbehave::RefuseDeclarations,
        PoolMisbehave::No,
        "DeclareMiningJob refused (invalid-job)",
        STEADY,
    )
    .await
    .map(drop)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_solo_when_the_pool_rejects_shares() -> anyhow::Result<()> {
    let pool = falls_back_to_solo(
        Misbehave::No,
        PoolMisbehave::RejectShares,
        "20 of the last 20 shares rejected",
        SHARES_TO_THE_POOL,
    )
    .await?;
    // The verdicts came from the pool: it rejected (at least) a full window of our shares.
    let rejected = pool.shares().iter().filter(|s| s.is_err()).count();
    if rejected < 20 {
        bail!("the pool rejected only {rejected} shares");
    }
    let violations = pool.violations();
    if !violations.is_empty() {
        bail!("pool violations: {violations:?}");
    }
    Ok(())
}

/// No upstream answers: the declarator says so and mines solo from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mines_solo_when_no_upstream_is_reachable() -> anyhow::Result<()> {
    let closed = |_: ()| {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.to_string())
    };
    let (pool, jds) = (closed(())?, closed(())?);
    let key = encode_authority_public_key(&jdc_shared::sv2::AuthorityKeys::generate().public_key());
    let upstream = format!(
        "\n[[declarator.upstream]]\npool = \"{pool}\"\njds = \"{jds}\"\nauthority_public_key = \"{key}\"\nuser_identity = \"x\"\n"
    );
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let node = Bitcoind::start()?;
        let funding = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080";
        let mut stack = Stack::new(&node, funding, &upstream)?;
        stack.start("declarator", &[], "no upstream is usable: mining solo")?;
        let log = stack.get("declarator")?.log_lines().join("\n");
        if !log.contains(&format!("pool {pool}: cannot connect")) {
            bail!("the unreachable pool is not named in the log:\n{log}");
        }
        Ok(())
    })
}

/// The pool presents an expired certificate: the declarator refuses it, says why naming the
/// pool, and mines solo to its own payout from the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mines_solo_when_the_pool_certificate_is_expired() -> anyhow::Result<()> {
    let jds = TestJds::start(Misbehave::No).await?;
    let pool = TestPool::start_with_jds(PoolMisbehave::ExpiredCertificate, &jds).await?;
    let upstream = upstream_entry(&pool, &jds, "full-template");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let (node, funding) = Bitcoind::start_funded()?;
        let start = node.rpc()?.get_block_count()?;
        let mut stack = Stack::new(&node, &funding.to_string(), &upstream)?;
        stack.start("declarator", &[], "no upstream is usable: mining solo")?;
        let log = stack.get("declarator")?.log_lines().join("\n");
        let refused = log.lines().any(|l| {
            l.contains("upstream unusable")
                && l.contains(&format!("pool {}", pool.addr))
                && l.contains("outside its validity window")
        });
        if !refused {
            bail!("the pool's expired certificate is not reported, naming the pool:\n{log}");
        }
        stack.start_template_source()?;
        stack.start_miner("miner", &["--max-shares-per-sec", "10"])?;
        let rpc = node.rpc()?;
        let ours = funding.script_pubkey();
        wait_until("a block paying our payout", Duration::from_secs(60), || {
            let tip = rpc.get_block_count()?;
            if tip <= start {
                return Ok(None);
            }
            let block = rpc.get_block(&rpc.get_block_hash(tip)?)?;
            let pays_us = block.txdata[0]
                .output
                .iter()
                .any(|o| o.script_pubkey == ours && o.value.to_sat() > 0);
            Ok(pays_us.then_some(()))
        })?;
        Ok(())
    })?;
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    Ok(())
}

/// The first pool closes our channel: the declarator moves to the second upstream of the list;
/// devices stay connected, get its extranonce prefix (`SetExtranoncePrefix`) and new jobs, and
/// their shares and blocks go to the second pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_over_to_the_next_upstream_without_reconnecting_devices() -> anyhow::Result<()> {
    let jds1 = TestJds::start(Misbehave::No).await?;
    // The first pool stops after a few shares: our device is mining for it by then.
    let pool1 =
        TestPool::start_with_jds_prefix(PoolMisbehave::CloseAfterShares(3), &jds1, [0x11, 0x11])
            .await?;
    let jds2 = TestJds::start(Misbehave::No).await?;
    let pool2 = TestPool::start_with_jds_prefix(PoolMisbehave::No, &jds2, [0x22, 0x22]).await?;
    let upstreams = upstream_entry(&pool1, &jds1, "full-template")
        + &upstream_entry(&pool2, &jds2, "full-template");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let (node, funding) = Bitcoind::start_funded()?;
        let start = node.rpc()?.get_block_count()?;
        let mut stack = Stack::new(&node, &funding.to_string(), &upstreams)?;
        stack.start(
            "declarator",
            &["--set", "declarator.upstream_nominal_hash_rate=1.0"],
            "SV2 mining server listening",
        )?;
        stack.start_template_source()?;
        stack.start_miner(
            "miner",
            &["--max-shares-per-sec", "10", "--nominal-hashrate", "2"],
        )?;
        let switch = stack
            .get("declarator")?
            .wait_for_log("to=upstream 2", Duration::from_secs(20))?;
        if !switch.contains("upstream switch") {
            bail!("not a transition line: {switch}");
        }
        let rpc = node.rpc()?;
        wait_until("blocks after the switch", Duration::from_secs(60), || {
            Ok((rpc.get_block_count()? >= start + 3 && !pool2.jobs().is_empty()).then_some(()))
        })?;
        wait_until(
            "a share accepted by the second pool",
            Duration::from_secs(30),
            || Ok(pool2.shares().iter().any(Result::is_ok).then_some(())),
        )?;
        let miner = stack.get("miner")?;
        let events = miner.events();
        if events.iter().any(|e| e["event"] == "disconnected") {
            bail!("the device was disconnected by the switch");
        }
        let moved = events.iter().any(|e| {
            e["event"] == "set-extranonce-prefix"
                && e["extranonce_prefix"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("2222"))
        });
        if !moved {
            bail!("the device never got the second pool's extranonce prefix");
        }
        Ok(())
    })?;
    assert!(pool2.violations().is_empty(), "{:?}", pool2.violations());
    assert!(jds2.violations().is_empty(), "{:?}", jds2.violations());
    Ok(())
}

/// The pool gives our channel a new extranonce prefix: devices follow (`SetExtranoncePrefix`,
/// new jobs) and their shares keep being accepted, with no fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follows_a_new_extranonce_prefix_from_the_pool() -> anyhow::Result<()> {
    let jds = TestJds::start(Misbehave::No).await?;
    let pool = TestPool::start_with_jds_prefix(
        PoolMisbehave::ChangePrefixAfterShares(3),
        &jds,
        [0x33, 0x33],
    )
    .await?;
    let upstream = upstream_entry(&pool, &jds, "full-template");
    let accepted = || pool.shares().iter().filter(|s| s.is_ok()).count();
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let (node, funding) = Bitcoind::start_funded()?;
        let mut stack = Stack::new(&node, &funding.to_string(), &upstream)?;
        stack.start(
            "declarator",
            &["--set", "declarator.upstream_nominal_hash_rate=1.0"],
            "SV2 mining server listening",
        )?;
        stack.start_template_source()?;
        stack.start_miner(
            "miner",
            &["--max-shares-per-sec", "10", "--nominal-hashrate", "2"],
        )?;
        let miner = stack.get("miner")?;
        miner.wait_for_event(0, Duration::from_secs(30), |e| {
            e["event"] == "set-extranonce-prefix"
                && e["extranonce_prefix"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("33330001"))
        })?;
        let before = accepted();
        wait_until(
            "shares accepted on the new prefix",
            Duration::from_secs(30),
            || Ok((accepted() > before).then_some(())),
        )?;
        let log = stack.get("declarator")?.log_lines().join("\n");
        if log.contains("upstream switch") {
            bail!("a new prefix made the declarator leave the pool");
        }
        Ok(())
    })?;
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    Ok(())
}

/// The first pool fails, then recovers: the declarator falls over to the second, probes the
/// first with backoff and, after the hold-down, returns to it; devices follow each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn returns_to_a_recovered_higher_ranked_upstream() -> anyhow::Result<()> {
    let jds1 = TestJds::start(Misbehave::No).await?;
    let pool1 = TestPool::start_with_jds_prefix(
        PoolMisbehave::CloseAfterSharesOnce(3),
        &jds1,
        [0x11, 0x11],
    )
    .await?;
    let jds2 = TestJds::start(Misbehave::No).await?;
    let pool2 = TestPool::start_with_jds_prefix(PoolMisbehave::No, &jds2, [0x22, 0x22]).await?;
    let upstreams = upstream_entry(&pool1, &jds1, "full-template")
        + &upstream_entry(&pool2, &jds2, "full-template");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let (node, funding) = Bitcoind::start_funded()?;
        let mut stack = Stack::new(&node, &funding.to_string(), &upstreams)?;
        stack.start(
            "declarator",
            &[
                "--set",
                "declarator.upstream_nominal_hash_rate=1.0",
                "--set",
                "declarator.upstream_hold_down_secs=2",
                "--set",
                "declarator.upstream_probe_secs=1",
            ],
            "SV2 mining server listening",
        )?;
        stack.start_template_source()?;
        stack.start_miner(
            "miner",
            &["--max-shares-per-sec", "10", "--nominal-hashrate", "2"],
        )?;
        let prefix_event = |from: usize, start: &'static str| {
            stack
                .get("miner")?
                .wait_for_event(from, Duration::from_secs(30), |e| {
                    e["event"] == "set-extranonce-prefix"
                        && e["extranonce_prefix"]
                            .as_str()
                            .is_some_and(|p| p.starts_with(start))
                })
        };
        let (at, _) = prefix_event(0, "2222")?;
        prefix_event(at + 1, "1111")?;
        let back = stack
            .get("declarator")?
            .wait_for_log("upstream 1 is healthy again", Duration::from_secs(5))?;
        if !(back.contains("upstream switch") && back.contains("to=upstream 1")) {
            bail!("the return is not one transition line: {back}");
        }
        // The hold-down (2 s) passed between the last switch and the return.
        let log = stack.get("declarator")?.log_lines();
        let switches: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("upstream switch"))
            .collect();
        let at = |l: &str| log_time(l).with_context(|| format!("no timestamp in {l}"));
        match switches.as_slice() {
            [.., before_return, back] if back.contains("to=upstream 1") => {
                let held = at(back)? - at(before_return)?;
                if held < 2.0 {
                    bail!(
                        "returned {held:.3} s after the previous switch, within the 2 s hold-down"
                    );
                }
            }
            other => bail!("no return after a switch: {other:#?}"),
        }
        let before = pool1.shares().iter().filter(|s| s.is_ok()).count();
        wait_until(
            "shares for the first pool again",
            Duration::from_secs(30),
            || Ok((pool1.shares().iter().filter(|s| s.is_ok()).count() > before).then_some(())),
        )?;
        let events = stack.get("miner")?.events();
        if events.iter().any(|e| e["event"] == "disconnected") {
            bail!("the device was disconnected by a switch");
        }
        Ok(())
    })?;
    for (name, v) in [
        ("pool1", pool1.violations()),
        ("pool2", pool2.violations()),
        ("jds1", jds1.violations()),
        ("jds2", jds2.violations()),
    ] {
        assert!(v.is_empty(), "{name}: {v:?}");
    }
    Ok(())
}

/// Seconds since midnight (UTC) of a log line (`2026-11-25T11:57:58.355262Z ...`), plus a day
/// per day of month, enough to compare lines of one test.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line
        .split_whitespace()
        .find(|w| w.len() > 20 && w.ends_with('Z'))?;
    let (date, time) = stamp.trim_end_matches('Z').split_once('T')?;
    let day: f64 = date.rsplit('-').next()?.parse().ok()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(day * 86_400.0 + h * 3600.0 + m * 60.0 + s)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v1_device_mines_for_the_pool_like_an_sv2_device() -> anyhow::Result<()> {
    let jds = TestJds::start(Misbehave::No).await?;
    let pool = TestPool::start_with_jds(PoolMisbehave::No, &jds).await?;
    let upstream = upstream_entry(&pool, &jds, "full-template");
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let node = Bitcoind::start()?;
        node.generate(1)?;
        let start = node.rpc()?.get_block_count()?;
        let mut stack = Stack::new(&node, "51", &upstream)?;
        // Easy targets at the pool and for the V1 device (1 H/s each).
        stack.start(
            "declarator",
            &[
                "--set",
                "declarator.upstream_nominal_hash_rate=1.0",
                "--set",
                "declarator.sv1_initial_hash_rate=1.0",
            ],
            "Stratum V1 server listening",
        )?;
        stack
            .get("declarator")?
            .wait_for_log("mining for the pool", Duration::from_secs(5))?;
        stack.start_template_source()?;
        let args = [
            "--protocol".to_string(),
            "sv1".into(),
            "--connect".into(),
            format!("127.0.0.1:{}", stack.ports.sv1),
            "--max-shares-per-sec".into(),
            "10".into(),
        ];
        let program = stack.bin("jdc-sim-miner");
        stack.start_command("v1-miner", &program, &args, "")?;
        let rpc = node.rpc()?;
        wait_until(
            "3 blocks mined for the pool by the V1 device",
            Duration::from_secs(60),
            || Ok((rpc.get_block_count()? >= start + 3).then_some(())),
        )?;
        wait_until(
            "a V1 share accepted by the pool",
            Duration::from_secs(30),
            || Ok(pool.shares().iter().any(Result::is_ok).then_some(())),
        )?;
        for h in start + 1..=rpc.get_block_count()? {
            let block = rpc.get_block(&rpc.get_block_hash(h)?)?;
            let first = block.txdata[0]
                .output
                .first()
                .context("coinbase without outputs")?;
            if first.script_pubkey.as_bytes() != pool_payout_script().as_bytes() {
                bail!("block {h}: the first coinbase output is not the pool's payout");
            }
        }
        Ok(())
    })?;
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    Ok(())
}
