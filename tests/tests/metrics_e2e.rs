//! `/metrics` during a real regtest run (bitcoind, the four jdc processes, two sim-miners): the
//! exposition parses, every process is up, the counters move as blocks, jobs and shares happen,
//! the tip height is bitcoind's block count, and the tip-to-job latency observes one job of
//! each kind per tip (not template refreshes, not the same job sent to a second device).

use std::time::Duration;

use anyhow::bail;
use bitcoincore_rpc::RpcApi;
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::exposition::{scrape, sum};
use jdc_tests::stack::Stack;
use jdc_tests::wait_until;

/// Scrapes until `jdc_tip_height` is bitcoind's block count (read before and after the scrape,
/// unchanged) and the tip has its template; returns that scrape and the count.
fn settled(node: &Bitcoind, port: u16, what: &str) -> anyhow::Result<(String, u64)> {
    let rpc = node.rpc()?;
    wait_until(what, Duration::from_secs(30), || {
        let before = rpc.get_block_count()?;
        let text = scrape(port)?;
        let after = rpc.get_block_count()?;
        let settled = before == after
            && sum(&text, "jdc_tip_height", &[]) == before as f64
            && text.contains("\njdc_template_age_seconds ")
            && sum(&text, "jdc_template_missing_seconds", &[]) == 0.0;
        Ok(settled.then_some((text, before)))
    })
}

#[test]
fn counters_move_as_blocks_jobs_and_shares_happen() -> anyhow::Result<()> {
    let (node, funding) = Bitcoind::start_funded()?;
    let mut stack = Stack::new(&node, &funding.to_string(), "")?;
    stack.start_services()?;
    let port = stack.ports.metrics;
    wait_until(
        "every process up in /metrics",
        Duration::from_secs(30),
        || {
            let text = scrape(port)?;
            let up = ["watcher", "selector", "declarator"]
                .iter()
                .all(|p| sum(&text, "jdc_process_up", &[&format!("process=\"{p}\"")]) == 1.0);
            Ok(up.then_some(text))
        },
    )?;
    // The tip height is the chain's, not the height of the block being mined (one more).
    let (first, _) = settled(&node, port, "jdc_tip_height at bitcoind's block count")?;
    jdc_tests::exposition::check(&first).map_err(|e| anyhow::anyhow!("exposition: {e}"))?;

    // Two devices: every job goes to two connections, but only the first of each kind on a
    // tip measures the tip-to-job latency.
    stack.start_miner("miner", &["--max-shares-per-sec", "5"])?;
    stack.start_miner("miner2", &["--max-shares-per-sec", "1"])?;
    let before = |name: &str, labels: &[&str]| sum(&first, name, labels);
    let full = ["kind=\"full\""];
    let moved = wait_until(
        "blocks, jobs and shares counted",
        Duration::from_secs(60),
        || {
            let text = scrape(port)?;
            let grew =
                |name: &str, labels: &[&str]| sum(&text, name, labels) > before(name, labels);
            let all = grew("jdc_blocks_total", &["stage=\"accepted\""])
                && grew("jdc_blocks_total", &["stage=\"found\""])
                && grew("jdc_jobs_sent_total", &["kind=\"empty\""])
                && grew("jdc_shares_total", &["result=\"accepted\""])
                && grew("jdc_tip_height", &[])
                && grew("jdc_tips_total", &[])
                && grew("jdc_tip_to_job_seconds_count", &full)
                && grew("jdc_getblocktemplate_seconds_count", &[])
                // The watcher's ZMQ counters ride on its heartbeats (every second).
                && grew("jdc_bitcoind_zmq_messages_total", &[])
                && sum(&text, "jdc_hashrate_estimate_hashes_per_second", &[]) > 0.0
                // Full jobs the latency does not observe: the second device's copies.
                && sum(&text, "jdc_jobs_sent_total", &full)
                    > sum(&text, "jdc_tip_to_job_seconds_count", &full);
            Ok(all.then_some(text))
        },
    )?;
    jdc_tests::exposition::check(&moved).map_err(|e| anyhow::anyhow!("exposition: {e}"))?;

    // Stop mining and let the chain settle: the tip height is bitcoind's block count again.
    for name in ["miner", "miner2"] {
        if let Some(mut miner) = stack.take(name) {
            miner.terminate(Duration::from_secs(5));
        }
    }
    let (last, count) = settled(&node, port, "jdc_tip_height at the final block count")?;
    jdc_tests::exposition::check(&last).map_err(|e| anyhow::anyhow!("exposition: {e}"))?;
    // Two miners on regtest race: a valid block that lost to another at its height is refused
    // as `inconclusive`. Any other refusal is a failure.
    let refusals: Vec<String> = stack
        .get("declarator")?
        .log_lines()
        .into_iter()
        .filter(|l| l.contains("bitcoind refused the block"))
        .collect();
    if let Some(bad) = refusals.iter().find(|l| !l.contains("inconclusive")) {
        bail!("bitcoind rejected a block: {bad}");
    }
    let rejected = sum(&last, "jdc_blocks_total", &["stage=\"rejected\""]);
    if rejected != refusals.len() as f64 {
        bail!(
            "jdc_blocks_total{{stage=\"rejected\"}} is {rejected}, the declarator logged {} refusals",
            refusals.len()
        );
    }
    // Every found block went to submitblock, which answered: found ≥ submitted ≥ accepted > 0
    // (a block is published `found` and `submitted` before its verdict), none failed.
    let blocks = |stage: &str| sum(&last, "jdc_blocks_total", &[&format!("stage=\"{stage}\"")]);
    let (found, submitted, accepted) = (blocks("found"), blocks("submitted"), blocks("accepted"));
    if !(found >= submitted && submitted >= accepted && accepted > 0.0) {
        bail!("blocks: {found} found, {submitted} submitted, {accepted} accepted");
    }
    if blocks("failed") != 0.0 {
        bail!("submitblock failed for a block");
    }
    // At most one observation of each kind per tip, however many jobs were sent.
    let tips = sum(&last, "jdc_tips_total", &[]);
    for kind in ["kind=\"empty\"", "kind=\"full\""] {
        let observed = sum(&last, "jdc_tip_to_job_seconds_count", &[kind]);
        let sent = sum(&last, "jdc_jobs_sent_total", &[kind]);
        if observed > tips || observed > sent {
            bail!("{kind}: {observed} latencies observed for {tips} tips and {sent} jobs sent");
        }
    }
    let (full_observed, full_sent) = (
        sum(&last, "jdc_tip_to_job_seconds_count", &full),
        sum(&last, "jdc_jobs_sent_total", &full),
    );
    if full_observed >= full_sent {
        bail!("every full job observed ({full_observed} of {full_sent}): refreshes and copies too");
    }
    eprintln!(
        "block count {count}, {tips} tips, full jobs: {full_sent} sent, {full_observed} observed"
    );
    Ok(())
}
