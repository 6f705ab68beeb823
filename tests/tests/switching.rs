//! Changes of upstream seen from outside: the upstream state on the bus (what metrics and
//! dashboards show), a pool that comes up after the declarator started, and a block found on
//! one pool's job but submitted after the declarator moved to another.

use std::sync::Mutex;
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoincore_rpc::RpcApi;
use jdc_shared::messages::UpstreamState;
use jdc_tests::bitcoind::{free_port, Bitcoind};
use jdc_tests::device::{Solution, TestDevice};
use jdc_tests::jds::{pool_payout_script, Misbehave, TestJds};
use jdc_tests::pool::{PoolMisbehave, TestPool};
use jdc_tests::stack::Stack;
use jdc_tests::wait_until;
use stratum_core::parsers_sv2::MiningOwned;

/// The `[[declarator.upstream]]` entry of a pool at `pool` and its JDS.
fn upstream_at(pool: &str, jds: &TestJds) -> String {
    jdc_tests::pool::upstream_entry(pool, jds, "full-template")
}

fn latest(states: &Mutex<Vec<UpstreamState>>) -> Option<UpstreamState> {
    states
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .last()
        .cloned()
}

/// No pool answers when the declarator starts: it mines solo and says why on the bus; when
/// the pool comes up, a probe finds it and the devices move to it without reconnecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starts_solo_and_takes_the_pool_when_it_comes_up() -> anyhow::Result<()> {
    let jds = TestJds::start(Misbehave::No).await?;
    let pool_port = free_port();
    let upstream = upstream_at(&format!("127.0.0.1:{pool_port}"), &jds);
    let (node, funding) = tokio::task::block_in_place(Bitcoind::start_funded)?;
    let mut stack = Stack::new(&node, &funding.to_string(), &upstream)?;
    let states = stack.record_upstream_states();
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        stack.start(
            "declarator",
            &[
                "--set",
                "declarator.upstream_nominal_hash_rate=1.0",
                "--set",
                "declarator.upstream_hold_down_secs=1",
                "--set",
                "declarator.upstream_probe_secs=1",
            ],
            "no upstream is usable",
        )?;
        stack.start_template_source()?;
        stack.start_miner(
            "miner",
            &["--max-shares-per-sec", "5", "--nominal-hashrate", "2"],
        )?;
        let solo = wait_until("the solo state on the bus", Duration::from_secs(10), || {
            Ok(latest(&states).filter(|s| s.mode == "solo"))
        })?;
        let first = solo.upstreams.first().cloned();
        match first {
            Some(u) if u.state == "down" && u.last_error.contains("cannot connect") => {}
            other => bail!("upstream 1 should be down with its error: {other:?}"),
        }
        Ok(())
    })?;
    let pool =
        TestPool::start_with_jds_on(PoolMisbehave::No, &jds, [0x44, 0x44], pool_port).await?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let state = wait_until("the pool state on the bus", Duration::from_secs(30), || {
            Ok(latest(&states).filter(|s| s.mode == "pool"))
        })?;
        if state.active != 1 || state.switches != 1 || state.upstreams[0].state != "active" {
            bail!("unexpected state after taking the pool: {state:?}");
        }
        let miner = stack.get("miner")?;
        miner.wait_for_event(0, Duration::from_secs(30), |e| {
            e["event"] == "set-extranonce-prefix"
                && e["extranonce_prefix"]
                    .as_str()
                    .is_some_and(|p| p.starts_with("4444"))
        })?;
        wait_until(
            "a share accepted by the pool",
            Duration::from_secs(30),
            || Ok(pool.shares().iter().any(Result::is_ok).then_some(())),
        )?;
        if miner.events().iter().any(|e| e["event"] == "disconnected") {
            bail!("the device was disconnected when the declarator took the pool");
        }
        let rpc = node.rpc()?;
        let start = rpc.get_block_count()?;
        wait_until("a block for the pool", Duration::from_secs(60), || {
            Ok((rpc.get_block_count()? > start && !pool.jobs().is_empty()).then_some(()))
        })?;
        Ok(())
    })?;
    assert!(pool.violations().is_empty(), "{:?}", pool.violations());
    assert!(jds.violations().is_empty(), "{:?}", jds.violations());
    Ok(())
}

/// Submits `share` and waits for the declarator's verdict.
async fn submit(device: &mut TestDevice, solution: Solution) -> anyhow::Result<()> {
    device.submit(solution.share).await?;
    let verdict = device
        .wait_for("the share's verdict", Duration::from_secs(10), |_, m| {
            matches!(
                m,
                MiningOwned::SubmitSharesSuccess(_) | MiningOwned::SubmitSharesError(_)
            )
        })
        .await?;
    match verdict {
        MiningOwned::SubmitSharesSuccess(_) => Ok(()),
        other => bail!("the declarator refused the block share: {other:?}"),
    }
}

/// A device finds a block on the first pool's job; before it submits it, the first pool
/// crashes and the declarator moves the device to the second pool. The block, submitted late
/// on the old job, still reaches bitcoind (paying the first pool, whose job it is), and the
/// device's next block is mined for the second pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_found_during_a_switch_is_not_lost() -> anyhow::Result<()> {
    let jds1 = TestJds::start(Misbehave::No).await?;
    let pool1 = TestPool::start_with_jds_prefix(PoolMisbehave::No, &jds1, [0x11, 0x11]).await?;
    let jds2 = TestJds::start(Misbehave::No).await?;
    let pool2 = TestPool::start_with_jds_prefix(PoolMisbehave::No, &jds2, [0x22, 0x22]).await?;
    let upstreams =
        upstream_at(&pool1.addr.to_string(), &jds1) + &upstream_at(&pool2.addr.to_string(), &jds2);
    let (node, funding) = tokio::task::block_in_place(Bitcoind::start_funded)?;
    let mut stack = Stack::new(&node, &funding.to_string(), &upstreams)?;
    // Only the scripted device mines: the tip moves when it submits a block, not before.
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        stack.start("declarator", &[], "SV2 mining server listening")?;
        stack.start_template_source()
    })?;
    let mut device = stack.connect_device().await?;
    device
        .wait_for(
            "a job for the first pool",
            Duration::from_secs(30),
            |d, m| d.new_work_under(m, &[0x11, 0x11]),
        )
        .await?;
    let job = device.active_job.unwrap_or_default();
    let late_block = device.solve(job)?;

    pool1.drop_connections();
    device
        .wait_for(
            "a job for the second pool after the switch",
            Duration::from_secs(10),
            |d, m| d.new_work_under(m, &[0x22, 0x22]),
        )
        .await?;
    let rpc = node.rpc()?;
    let before = rpc.get_block_count()?;
    submit(&mut device, late_block.clone()).await?;
    tokio::task::block_in_place(|| {
        wait_until(
            "bitcoind to take the block found before the switch",
            Duration::from_secs(10),
            || Ok((rpc.get_best_block_hash()? == late_block.block_hash).then_some(())),
        )
    })?;
    let block = rpc.get_block(&late_block.block_hash)?;
    if block.txdata[0].output[0].script_pubkey != pool_payout_script() {
        bail!("the late block does not pay the first pool's payout first");
    }
    if rpc.get_block_count()? != before + 1 {
        bail!("the late block is not on top of the tip it was found on");
    }

    // Mining goes on for the second pool: the next block pays it and its share reaches it.
    device
        .wait_for(
            "a job for the second pool on the new tip",
            Duration::from_secs(30),
            |d, m| {
                matches!(m, MiningOwned::SetNewPrevHash(_)) && d.new_work_under(m, &[0x22, 0x22])
            },
        )
        .await?;
    let next = device.solve(device.active_job.unwrap_or_default())?;
    submit(&mut device, next.clone()).await?;
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        wait_until(
            "bitcoind to take the block mined for the second pool",
            Duration::from_secs(10),
            || Ok((rpc.get_best_block_hash()? == next.block_hash).then_some(())),
        )?;
        wait_until(
            "the share at the second pool",
            Duration::from_secs(10),
            || Ok(pool2.shares().iter().any(Result::is_ok).then_some(())),
        )
        .with_context(|| format!("shares at the second pool: {:?}", pool2.shares()))
    })?;
    for (name, v) in [("pool2", pool2.violations()), ("jds2", jds2.violations())] {
        assert!(v.is_empty(), "{name}: {v:?}");
    }
    Ok(())
}
