//! `side-by-side`: one bitcoind, one template-watcher, the same tips, two paths to a miner:
//! (a) our tx-selector and declarator, (b) SRI's `jd_client_sv2` 0.6.0 in solo mode fed by
//! the template-watcher's Template Distribution server. A sim-miner on each; the clock runs
//! from the bench's own receipt of bitcoind's ZMQ `hashblock` to each miner's receipt of the
//! `SetNewPrevHash` for that block.
//!
//! jd_client_sv2 comes from `scripts/install-sv2-roles` (`JDCTEST_JD_CLIENT`, or its cache).

use std::time::Duration;

use anyhow::Context;
use jdc_tests::bitcoind::free_port;
use jdc_tests::sri_roles;

use crate::{foreign_stack, listen_hashblock, summary, tip_at_miner, FOREIGN_ADDRESS};

pub async fn run(tips: usize, interval_ms: u64) -> anyhow::Result<()> {
    let jd_client = sri_roles::jd_client()
        .context("jd_client_sv2 not installed: run scripts/install-sv2-roles")?;
    let (node, addr, mut stack) = foreign_stack()?;
    let tdp_port = free_port();
    stack.enable_tdp(tdp_port)?;
    stack.start_services()?;
    let tdp_key = stack.tdp_key()?;

    // (b) jd_client_sv2, solo, on our TDP server.
    let jdc = tokio::task::block_in_place(|| {
        sri_roles::start_solo_jd_client(
            &jd_client,
            &stack,
            &format!("127.0.0.1:{tdp_port}"),
            &tdp_key,
            &format!("addr({FOREIGN_ADDRESS})"),
            6.0,
        )
    })?;

    // A sim-miner on each path; they hash but find (almost) no blocks: only our tips count.
    stack.start_miner("miner", &["--max-shares-per-sec", "0.2"])?;
    let program = stack.bin("jdc-sim-miner");
    let args = [
        "--connect".to_string(),
        format!("127.0.0.1:{}", jdc.port),
        "--authority-public-key".into(),
        jdc.public_key.clone(),
        "--max-shares-per-sec".into(),
        "0.2".into(),
    ];
    stack.start_command("sri-miner", &program, &args, "")?;
    let hashblock = listen_hashblock(node.zmq_hashblock()).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;

    eprintln!("mining {tips} blocks ...");
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for i in 0..tips {
        let hash = node.generate_to(&addr, 1)?[0].to_string();
        let (at, zmq) = tip_at_miner(stack.get("miner")?, &hashblock, &hash).await?;
        ours.push(at.saturating_sub(zmq));
        let (at, zmq) = tip_at_miner(stack.get("sri-miner")?, &hashblock, &hash).await?;
        theirs.push(at.saturating_sub(zmq));
        if (i + 1) % 25 == 0 {
            eprintln!("  {} / {tips}", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
    }
    println!(
        "new tip (hashblock) → SetNewPrevHash at the sim-miner (ms), {tips} tips, same bitcoind\n"
    );
    println!("| path | n | p50 | p90 | p99 | max |");
    println!("|---|---|---|---|---|---|");
    println!(
        "{}",
        summary("(a) watcher → tx-selector → jdc-declarator", ours)
    );
    println!(
        "{}",
        summary("(b) watcher TDP → jd_client_sv2 0.6.0 (solo)", theirs)
    );
    drop(jdc);
    Ok(())
}
