//! `tdp-latency`: new tip (bitcoind's ZMQ `hashblock`) → `SetNewPrevHash` at a Template
//! Distribution client of the template-watcher, on loopback.
//!
//! Blocks are mined by `generatetoaddress` to an address no wallet knows; the bench subscribes
//! to bitcoind's `hashblock` itself and runs the TDP client (SRI's crates, Noise) in-process.

use std::time::{Duration, Instant};

use jdc_shared::bitcoin::hashes::Hash;
use jdc_tests::bitcoind::free_port;
use jdc_tests::tdp_client::Client;
use stratum_core::parsers_sv2::TemplateDistributionOwned as Tdp;

use crate::{foreign_stack, listen_hashblock, summary};

pub async fn run(tips: usize, interval_ms: u64) -> anyhow::Result<()> {
    let (node, addr, mut stack) = foreign_stack()?;
    let port = free_port();
    stack.enable_tdp(port)?;
    stack.start(
        "template-watcher",
        &[],
        "Template Distribution server listening",
    )?;
    let key = stack.tdp_key()?;
    let (mut client, _, _) = Client::open(&format!("127.0.0.1:{port}"), &key, 100).await?;
    let hashblock = listen_hashblock(node.zmq_hashblock()).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;

    eprintln!("mining {tips} blocks ...");
    let mut latencies = Vec::with_capacity(tips);
    for _ in 0..tips {
        let hash = node.generate_to(&addr, 1)?[0];
        let target = hash.to_byte_array();
        client
            .until("the new tip", Duration::from_secs(10), |m| match m {
                Tdp::SetNewPrevHash(p) if p.prev_hash.to_array() == target => Some(()),
                _ => None,
            })
            .await?;
        let at_client = jdc_shared::time::now_micros();
        let deadline = Instant::now() + Duration::from_secs(5);
        let notified = loop {
            let seen = hashblock
                .lock()
                .ok()
                .and_then(|m| m.get(&hash.to_string()).copied());
            if let Some(t) = seen {
                break t;
            }
            if Instant::now() > deadline {
                anyhow::bail!("no hashblock notification for {hash}");
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        };
        latencies.push(at_client.saturating_sub(notified));
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    println!("new tip → SetNewPrevHash at a TDP client (ms), {tips} tips on loopback\n");
    println!("| span | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        summary("hashblock → SetNewPrevHash at the client", latencies)
    );
    Ok(())
}
