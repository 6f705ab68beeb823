//! `/metrics` during a real regtest run (bitcoind, the four jdc processes, a sim-miner): the
//! exposition parses, every process is up, and the counters move as blocks, jobs and shares
//! happen.

use std::time::Duration;

use anyhow::bail;
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::exposition::{scrape, sum};
use jdc_tests::stack::Stack;
use jdc_tests::wait_until;

#[test]
fn counters_move_as_blocks_jobs_and_shares_happen() -> anyhow::Result<()> {
    let (node, funding) = Bitcoind::start_funded()?;
    let mut stack = Stack::new(&node, &funding.to_string(), "")?;
    stack.start_services()?;
    let port = stack.ports.metrics;
    let first = wait_until(
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
    jdc_tests::exposition::check(&first).map_err(|e| anyhow::anyhow!("exposition: {e}"))?;
    stack.start_miner("miner", &["--max-shares-per-sec", "5"])?;
    let before = |name: &str, labels: &[&str]| sum(&first, name, labels);
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
                && grew("jdc_tip_to_job_seconds_count", &[])
                && grew("jdc_getblocktemplate_seconds_count", &[])
                // The watcher's ZMQ counters ride on its heartbeats (every second).
                && grew("jdc_bitcoind_zmq_messages_total", &[])
                && sum(&text, "jdc_hashrate_estimate_hashes_per_second", &[]) > 0.0;
            Ok(all.then_some(text))
        },
    )?;
    jdc_tests::exposition::check(&moved).map_err(|e| anyhow::anyhow!("exposition: {e}"))?;
    if sum(&moved, "jdc_blocks_total", &["stage=\"rejected\""]) != 0.0 {
        bail!("bitcoind rejected a block");
    }
    Ok(())
}
