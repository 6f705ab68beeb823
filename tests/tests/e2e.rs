//! End to end: real bitcoind (regtest), the four jdc processes and a sim-miner, all real
//! processes over real sockets. bitcoind's `submitblock` is the judge.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoincore_rpc::RpcApi;
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::stack::{Proc, Stack};
use jdc_tests::wait_until;
use serde_json::Value;

fn funded_node() -> anyhow::Result<(Bitcoind, bitcoincore_rpc::bitcoin::Address)> {
    Bitcoind::start_funded()
}

fn height(node: &Bitcoind) -> anyhow::Result<u64> {
    Ok(node.rpc()?.get_block_count()?)
}

/// Checks that every `set-new-prev-hash` after the first activates an empty-block job (no
/// merkle path) sent as a future job, and counts the tips after which a full job followed
/// before the next tip.
fn check_empty_before_full(events: &[Value]) -> anyhow::Result<(usize, usize)> {
    let mut jobs: HashMap<u64, &Value> = HashMap::new();
    let mut tips = 0usize;
    let mut full_after_tip = 0usize;
    let mut in_tip = false;
    let mut seen_full_this_tip = false;
    let mut first = true;
    for e in events {
        match e["event"].as_str() {
            Some("new-job") => {
                let id = e["job_id"].as_u64().context("job_id")?;
                jobs.insert(id, e);
                let future = e["future"].as_bool().unwrap_or(false);
                let path = e["merkle_path_len"].as_u64().unwrap_or(0);
                if in_tip && !future && path > 0 && !seen_full_this_tip {
                    seen_full_this_tip = true;
                    full_after_tip += 1;
                }
            }
            Some("set-new-prev-hash") => {
                let id = e["job_id"].as_u64().context("job_id")?;
                let job = jobs
                    .get(&id)
                    .with_context(|| format!("SetNewPrevHash for job {id} never sent: {e}"))?;
                if job["future"].as_bool() != Some(true) {
                    bail!("SetNewPrevHash activated job {id}, which was not sent as a future job");
                }
                if !first {
                    tips += 1;
                    if job["merkle_path_len"].as_u64() != Some(0) {
                        bail!("tip {} began with a job carrying transactions, not an empty-block job: {job}", e["prev_hash"]);
                    }
                }
                first = false;
                in_tip = true;
                seen_full_this_tip = false;
            }
            _ => {}
        }
    }
    Ok((tips, full_after_tip))
}

#[test]
fn mines_regtest_blocks_with_wallet_transactions() -> anyhow::Result<()> {
    let (node, funding) = funded_node()?;
    let payout = node.new_address()?;
    let mut stack = Stack::new(&node, &payout.to_string(), "")?;
    stack.start_services()?;

    let start = height(&node)?;
    let dest = node.new_address()?;
    let mut txids = Vec::new();
    for _ in 0..5 {
        txids.push(node.send_to_address(&dest, 100_000)?);
    }
    let _ = funding;
    stack.start_miner("miner", &["--max-shares-per-sec", "4"])?;

    let rpc = node.rpc()?;
    let wallet = node.wallet_rpc("miner")?;
    wait_until(
        "5 blocks and the wallet transactions mined",
        Duration::from_secs(120),
        || {
            let h = height(&node)?;
            let mut confirmed = 0;
            for t in &txids {
                if wallet.get_transaction(t, None)?.info.confirmations > 0 {
                    confirmed += 1;
                }
            }
            Ok((h >= start + 5 && confirmed == txids.len()).then_some(()))
        },
    )?;

    // Every block since the miner started is ours: its coinbase pays the configured address
    // and carries our tag.
    let end = height(&node)?;
    let payout_script = payout.script_pubkey();
    for h in start + 1..=end {
        let hash = rpc.get_block_hash(h)?;
        let block = rpc.get_block(&hash)?;
        let coinbase = &block.txdata[0];
        assert!(
            coinbase
                .output
                .iter()
                .any(|o| o.script_pubkey == payout_script && o.value.to_sat() > 0),
            "block {h} coinbase does not pay the configured address"
        );
        let script_sig = coinbase.input[0].script_sig.as_bytes();
        assert!(
            script_sig.windows(8).any(|w| w == b"jdc-test"),
            "block {h} coinbase lacks the configured tag"
        );
    }
    for t in &txids {
        let info = wallet.get_transaction(t, None)?.info;
        assert!(info.confirmations > 0, "{t} not mined");
    }

    // A standard-channel device on the same declarator gets jobs and accepted shares too.
    let std_miner = stack.start_miner(
        "std-miner",
        &["--channel", "standard", "--max-shares-per-sec", "2"],
    )?;
    std_miner.wait_for_event(0, Duration::from_secs(30), |e| {
        e["event"] == "share-accepted"
    })?;

    let miner = stack.get("miner")?;
    let events = miner.events();
    let (tips, full) = check_empty_before_full(&events)?;
    eprintln!(
        "blocks {}..={end}: {tips} tips seen by the miner, {full} followed by a full job",
        start + 1
    );
    assert!(tips >= 4, "only {tips} tips seen by the miner");
    assert!(full >= 1, "no full job followed a tip");
    Ok(())
}

fn accepted_shares(p: &Proc) -> usize {
    p.events()
        .iter()
        .filter(|e| e["event"] == "share-accepted")
        .count()
}

#[test]
fn mining_resumes_after_kill_9_of_watcher_then_selector() -> anyhow::Result<()> {
    let (node, funding) = funded_node()?;
    let payout = node.new_address()?;
    let mut stack = Stack::new(&node, &payout.to_string(), "")?;
    stack.start_services()?;
    stack.start_miner("miner", &["--max-shares-per-sec", "4"])?;
    let h0 = height(&node)?;
    wait_until("2 blocks", Duration::from_secs(60), || {
        Ok((height(&node)? >= h0 + 2).then_some(()))
    })?;

    for component in ["template-watcher", "tx-selector"] {
        stack.get_mut(component)?.kill9();
        let before = height(&node)?;
        // Restart it with nothing else restarted.
        stack.start(component, &[], "bus publisher bound")?;
        wait_until(
            &format!("3 blocks after restarting {component}"),
            Duration::from_secs(60),
            || Ok((height(&node)? >= before + 3).then_some(())),
        )?;
        // Full templates flow again: a fresh transaction gets mined.
        let txid = node.send_to_address(&funding, 50_000)?;
        let wallet = node.wallet_rpc("miner")?;
        wait_until(
            &format!("a transaction mined after restarting {component}"),
            Duration::from_secs(60),
            || Ok((wallet.get_transaction(&txid, None)?.info.confirmations > 0).then_some(())),
        )?;
    }
    assert!(accepted_shares(stack.get("miner")?) > 0);
    Ok(())
}
