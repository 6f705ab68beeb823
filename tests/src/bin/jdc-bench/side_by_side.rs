//! `side-by-side`: one bitcoind, one template-watcher, the same tips, two paths to a miner:
//! (a) our tx-selector and declarator, (b) SRI's `jd_client_sv2` 0.6.0 in solo mode fed by
//! the template-watcher's Template Distribution server. A sim-miner on each; the clock runs
//! from the bench's own receipt of bitcoind's ZMQ `hashblock` to each miner's receipt of the
//! `SetNewPrevHash` for that block.
//!
//! jd_client_sv2 comes from `scripts/install-sv2-roles` (`JDCTEST_JD_CLIENT`, or its cache).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bitcoincore_rpc::bitcoin::{Address, Network};
use jdc_shared::sv2::AuthorityKeys;
use jdc_tests::bitcoind::{free_port, Bitcoind};
use jdc_tests::stack::{Proc, Stack};
use jdc_tests::wait_until;

use crate::{listen_hashblock, summary, tip_at_miner, FOREIGN_ADDRESS};

fn jd_client() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("JDCTEST_JD_CLIENT") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME").context("HOME")?;
    let p = PathBuf::from(home).join(".cache/jdc-tools/jd_client_sv2-0.6.0-test/bin/jd_client_sv2");
    if p.exists() {
        Ok(p)
    } else {
        anyhow::bail!("jd_client_sv2 not installed: run scripts/install-sv2-roles")
    }
}

pub async fn run(tips: usize, interval_ms: u64) -> anyhow::Result<()> {
    let jd_client = jd_client()?;
    let node = Bitcoind::start()?;
    let addr: Address = FOREIGN_ADDRESS
        .parse::<Address<_>>()?
        .require_network(Network::Regtest)?;
    node.generate_to(&addr, 1)?;
    let mut stack = Stack::new(&node, FOREIGN_ADDRESS, "")?;
    let tdp_port = free_port();
    let key_file = stack.enable_tdp(tdp_port)?;
    stack.start_services()?;
    let tdp_key = std::fs::read_to_string(key_file)?.trim().to_string();

    // (b) jd_client_sv2, solo, on our TDP server.
    let keys = AuthorityKeys::generate();
    let jdc_port = free_port();
    let config = stack.dir.join("jd-client.toml");
    std::fs::write(
        &config,
        format!(
            r#"listening_address = "127.0.0.1:{jdc_port}"
max_supported_version = 2
min_supported_version = 2
authority_public_key = "{public}"
authority_secret_key = "{secret}"
cert_validity_sec = 3600
shares_per_minute = 6.0
share_batch_size = 1
mode = "SOLOMINING"
jdc_signature = "sri-jdc"
coinbase_reward_script = "addr({FOREIGN_ADDRESS})"
upstreams = []

[template_provider_type.Sv2Tp]
address = "127.0.0.1:{tdp_port}"
public_key = "{tdp_key}"
"#,
            public = keys.public_key_string(),
            secret = keys.secret_key_string(),
        ),
    )?;
    let jdc = Proc::spawn(
        "jd-client",
        &jd_client,
        &["-c".into(), config.display().to_string()],
        &[],
        &stack.dir,
    )?;
    let log = stack.dir.join("jd-client.log");
    tokio::task::block_in_place(|| {
        wait_until("jd_client_sv2 ready", Duration::from_secs(30), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            Ok(text.contains("ready to accept connections").then_some(()))
        })
    })?;

    // A sim-miner on each path; they hash but find (almost) no blocks: only our tips count.
    stack.start_miner("miner", &["--max-shares-per-sec", "0.2"])?;
    let program = stack.bin("jdc-sim-miner");
    let args = [
        "--connect".to_string(),
        format!("127.0.0.1:{jdc_port}"),
        "--authority-public-key".into(),
        keys.public_key_string(),
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
