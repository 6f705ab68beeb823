//! `/metrics` during a real regtest run (bitcoind, the four jdc processes, a sim-miner): the
//! exposition parses, every process is up, and the counters move as blocks, jobs and shares
//! happen.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context};
use jdc_tests::bitcoind::Bitcoind;
use jdc_tests::stack::Stack;
use jdc_tests::wait_until;

/// `GET /metrics` from the stack's jdc-metrics.
fn scrape(port: u16) -> anyhow::Result<String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {head}");
    }
    Ok(body.to_string())
}

/// The sum of the samples of `name` whose labels contain every `labels` pair.
fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let bare = series.split('{').next() == Some(name);
            bare && labels.iter().all(|want| series.contains(want))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

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
