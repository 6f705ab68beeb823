//! The operator's selection rules end to end: real bitcoind (regtest) with real wallet
//! transactions in its mempool, the jdc processes and a sim-miner. Blocks accepted by bitcoind
//! hold exactly what the rules allow, and the selections say what each rule cost.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context};
use bitcoincore_rpc::bitcoin::Txid;
use bitcoincore_rpc::RpcApi;
use jdc_shared::bus::Topic;
use jdc_shared::messages::Selection;
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::stack::Stack;
use jdc_tests::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocks_follow_exclusions_priorities_and_data_carrier_caps() -> anyhow::Result<()> {
    let (node, funding) = tokio::task::block_in_place(Bitcoind::start_funded)?;
    let excluded_address = node.new_address()?;
    let normal_address = node.new_address()?;
    let priority_address = node.new_address()?;
    // The mempool before the stack starts: one transaction of each kind.
    let (excluded, normal, prioritized, child_of_excluded, op_return) =
        tokio::task::block_in_place(|| -> anyhow::Result<(Txid, Txid, Txid, Txid, Txid)> {
            // Each from its own confirmed coin, so none spends another's change.
            node.generate_to(&funding, 4)?;
            let coins = wait_until(
                "4 mature coins in the wallet",
                Duration::from_secs(30),
                || {
                    let coins: serde_json::Value =
                        serde_json::from_str(&node.cli(&["listunspent", "1"])?)?;
                    Ok(coins.as_array().filter(|c| c.len() >= 4).cloned())
                },
            )?;
            let pay = |coin: &serde_json::Value, outputs: String| -> anyhow::Result<Txid> {
                let options = format!(
                    "options={{\"inputs\":[{{\"txid\":{},\"vout\":{}}}],\"add_inputs\":false}}",
                    coin["txid"], coin["vout"]
                );
                let sent: serde_json::Value = serde_json::from_str(&node.cli(&[
                    "-named",
                    "send",
                    &format!("outputs={outputs}"),
                    "fee_rate=20",
                    &options,
                ])?)?;
                let txid: Txid = sent["txid"].as_str().context("send txid")?.parse()?;
                if sent["complete"] != true {
                    bail!("send did not complete: {sent}");
                }
                Ok(txid)
            };
            let normal = pay(&coins[0], format!("{{\"{normal_address}\":0.001}}"))?;
            let prioritized = pay(&coins[1], format!("{{\"{priority_address}\":0.001}}"))?;
            // Within Knots' default data-carrier size (42 bytes), above our cap.
            let op_return = pay(&coins[2], format!("{{\"data\":\"{}\"}}", "42".repeat(36)))?;
            let excluded = pay(&coins[3], format!("{{\"{excluded_address}\":2}}"))?;
            // A child of the excluded payment: it goes with its parent.
            let child = spend_child_of(&node, &excluded)?;
            Ok((excluded, normal, prioritized, child, op_return))
        })?;
    let rules = format!(
        "\n[tx_selector]\nmin_fee_rate_sat_vb = 1000.0\nexclude_scripts = [\"{excluded_address}\"]\nprioritize_txids = [\"{prioritized}\"]\nmax_op_return_bytes = 20\n"
    );
    let mut stack = Stack::new(&node, &funding.to_string(), &rules)?;
    let selections: Arc<Mutex<Vec<Selection>>> = Arc::default();
    let (mut inbox, stop) = stack.subscribe(vec![Topic::Selection]);
    let sink = selections.clone();
    tokio::spawn(async move {
        let _stop = stop.drop_guard();
        while let Some(m) = inbox.recv().await {
            if let Ok(s) = m.decode::<Selection>() {
                if let Ok(mut all) = sink.lock() {
                    all.push(s);
                }
            }
        }
    });
    tokio::task::block_in_place(|| -> anyhow::Result<()> {
        let rpc = node.rpc()?;
        let start = rpc.get_block_count()?;
        stack.start_services()?;
        stack.start_miner("miner", &["--max-shares-per-sec", "5"])?;
        // The first block with transactions.
        let block = wait_until("a block with transactions", Duration::from_secs(60), || {
            for h in start + 1..=rpc.get_block_count()? {
                let block = rpc.get_block(&rpc.get_block_hash(h)?)?;
                if block.txdata.len() > 1 {
                    return Ok(Some(block));
                }
            }
            Ok(None)
        })?;
        let mined: Vec<Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
        if !mined.contains(&prioritized) {
            bail!("the prioritized transaction (below the minimum fee rate) is not in the block");
        }
        for (what, txid) in [
            ("paying an excluded address", excluded),
            ("spending an excluded transaction", child_of_excluded),
            ("below the minimum fee rate", normal),
            ("with a too-large OP_RETURN", op_return),
        ] {
            if mined.contains(&txid) {
                bail!("a transaction {what} was mined: {txid}");
            }
        }
        let selection = selections
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .iter()
            .rev()
            .find(|s| s.txids.contains(&prioritized.to_string()))
            .cloned()
            .context("no selection with the prioritized transaction on the bus")?;
        let cost = |reason: &str| {
            selection
                .dropped
                .iter()
                .find(|d| d.reason == reason)
                .map(|d| (d.count, d.fee))
        };
        match cost("excluded-script") {
            Some((2, fee)) if fee > 0 => {}
            other => bail!("excluded-script should count the payment and its child: {other:?}"),
        }
        match cost("op-return-size") {
            Some((1, fee)) if fee > 0 => {}
            other => bail!("op-return-size should count one transaction: {other:?}"),
        }
        if cost("below-min-fee-rate").is_none_or(|(n, _)| n < 1) {
            bail!("below-min-fee-rate should count the normal payment");
        }
        Ok(())
    })
}

/// Spends the outputs of `parent` (and whatever else the wallet picks) in a new transaction.
fn spend_child_of(node: &Bitcoind, parent: &Txid) -> anyhow::Result<Txid> {
    let rpc = node.rpc()?;
    let tx = rpc.get_raw_transaction(parent, None)?;
    let dest = node.new_address()?;
    // The payment output (2 BTC to the excluded address, a wallet address) is spendable
    // unconfirmed by the wallet that owns it; send almost all of it on.
    let vout = tx
        .output
        .iter()
        .position(|o| o.value.to_sat() == 200_000_000)
        .context("the excluded payment output")?;
    let raw = node.cli(&[
        "-named",
        "createrawtransaction",
        &format!("inputs=[{{\"txid\":\"{parent}\",\"vout\":{vout}}}]"),
        &format!("outputs=[{{\"{dest}\":1.999}}]"),
    ])?;
    let signed: serde_json::Value =
        serde_json::from_str(&node.cli(&["signrawtransactionwithwallet", &raw])?)?;
    let hex = signed["hex"].as_str().context("signed hex")?;
    Ok(node.cli(&["sendrawtransaction", hex])?.parse()?)
}
