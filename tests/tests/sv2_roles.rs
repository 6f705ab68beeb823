//! The reference SV2 software on the template-watcher's Template Distribution server: SRI's
//! `jd_client_sv2` 0.6.0 in solo mode mines regtest blocks that bitcoind accepts with templates
//! from it, and `pool_sv2` 0.7.0 takes its templates and new tips.
//!
//! The roles are built once by `scripts/install-sv2-roles` (run by `scripts/test`, which passes
//! their paths in `JDCTEST_JD_CLIENT` and `JDCTEST_POOL`); without them these tests say so
//! and pass.

use std::time::Duration;

use bitcoincore_rpc::RpcApi;
use jdc_shared::sv2::AuthorityKeys;
use jdc_tests::bitcoind::{free_port, Bitcoind};
use jdc_tests::sri_roles::{self, wait_for_line};
use jdc_tests::stack::{Proc, Stack};
use jdc_tests::wait_until;

/// A stack whose template-watcher serves Template Distribution; returns it with the server's
/// address and key.
fn tdp_stack(node: &Bitcoind) -> anyhow::Result<(Stack, String, String)> {
    let mut stack = Stack::new(node, "51", "")?;
    let port = free_port();
    stack.enable_tdp(port)?;
    stack.start(
        "template-watcher",
        &[],
        "Template Distribution server listening",
    )?;
    let key = stack.tdp_key()?;
    Ok((stack, format!("127.0.0.1:{port}"), key))
}

#[test]
fn jd_client_sv2_solo_mines_blocks_bitcoind_accepts_on_our_templates() -> anyhow::Result<()> {
    let Some(jd_client) = sri_roles::jd_client() else {
        eprintln!("SKIPPED: jd_client_sv2 not installed (scripts/install-sv2-roles; scripts/test runs it)");
        return Ok(());
    };
    let node = Bitcoind::start()?;
    node.generate(1)?;
    let (mut stack, tdp, tdp_key) = tdp_stack(&node)?;
    let jdc = sri_roles::start_solo_jd_client(&jd_client, &stack, &tdp, &tdp_key, "raw(51)", 60.0)?;
    let rpc = node.rpc()?;
    let start = rpc.get_block_count()?;
    let miner = [
        "--connect".to_string(),
        format!("127.0.0.1:{}", jdc.port),
        "--authority-public-key".into(),
        jdc.public_key.clone(),
        "--max-shares-per-sec".into(),
        "5".into(),
    ];
    let program = stack.bin("jdc-sim-miner");
    stack.start_command("sim-miner", &program, &miner, "")?;
    wait_until(
        "3 blocks from jd_client_sv2's solutions",
        Duration::from_secs(60),
        || Ok((rpc.get_block_count()? >= start + 3).then_some(())),
    )?;
    // They came through our TDP server's SubmitSolution and pay jd_client's script.
    let watcher = stack.get("template-watcher")?.log_lines().join("\n");
    assert!(
        watcher.contains("TDP block accepted by bitcoind"),
        "{watcher}"
    );
    let best = rpc.get_block(&rpc.get_best_block_hash()?)?;
    assert_eq!(best.txdata[0].output[0].script_pubkey.as_bytes(), &[0x51]);
    drop(jdc);
    Ok(())
}

#[test]
fn pool_sv2_takes_templates_and_new_tips_from_our_server() -> anyhow::Result<()> {
    let Some(pool) = sri_roles::installed("JDCTEST_POOL", "pool_sv2-0.7.0-test/bin/pool_sv2")
    else {
        eprintln!(
            "SKIPPED: pool_sv2 not installed (scripts/install-sv2-roles; scripts/test runs it)"
        );
        return Ok(());
    };
    let node = Bitcoind::start()?;
    node.generate(1)?;
    let (stack, tdp, tdp_key) = tdp_stack(&node)?;
    let keys = AuthorityKeys::generate();
    let config = stack.dir.join("pool.toml");
    std::fs::write(
        &config,
        format!(
            r#"listen_address = "127.0.0.1:{port}"
authority_public_key = "{public}"
authority_secret_key = "{secret}"
cert_validity_sec = 3600
coinbase_reward_script = "raw(51)"
pool_signature = "sri-pool-on-jdc-tdp"
shares_per_minute = 60.0
share_batch_size = 1

[template_provider_type.Sv2Tp]
address = "{tdp}"
public_key = "{tdp_key}"
"#,
            port = free_port(),
            public = keys.public_key_string(),
            secret = keys.secret_key_string(),
        ),
    )?;
    let pool = Proc::spawn(
        "pool",
        &pool,
        &["-c".into(), config.display().to_string()],
        &[],
        &stack.dir,
    )?;
    let log = stack.dir.join("pool.log");
    wait_for_line(
        &log,
        "ready to accept connections",
        1,
        Duration::from_secs(30),
    )?;
    wait_for_line(&log, "Received: SetNewPrevHash", 1, Duration::from_secs(5))?;
    // New blocks: new tips at the pool, each with its full template.
    for n in 2..=3 {
        node.generate(1)?;
        wait_for_line(&log, "Received: SetNewPrevHash", n, Duration::from_secs(10))?;
        wait_for_line(&log, "future_template: false", n, Duration::from_secs(10))?;
    }
    drop(pool);
    Ok(())
}
