//! Interop with the reference software: SRI's translator proxy (`translator_sv2` 0.6.0)
//! between a Stratum V1 miner (our sim-miner in V1 mode) and the declarator's SV2 port, as an
//! extended-channel client, mines regtest blocks that bitcoind accepts.
//!
//! The translator is built once by `scripts/install-translator` (run by `scripts/test`, which
//! passes its path in `JDCTEST_TRANSLATOR`); without it this test says so and passes.

use std::time::Duration;

use bitcoincore_rpc::RpcApi;
use jdc_tests::bitcoind::{free_port, Bitcoind};
use jdc_tests::stack::{Proc, Stack};
use jdc_tests::wait_until;

#[test]
fn v1_miner_through_the_reference_translator_mines_blocks_bitcoind_accepts() -> anyhow::Result<()> {
    let Some(translator) = jdc_tests::sri_roles::installed(
        "JDCTEST_TRANSLATOR",
        "translator_sv2-0.6.0-test/bin/translator_sv2",
    ) else {
        eprintln!(
            "SKIPPED: translator_sv2 not installed (scripts/install-translator; scripts/test runs it)"
        );
        return Ok(());
    };
    let bitcoind = Bitcoind::start()?;
    bitcoind.generate(1)?;
    let mut s = Stack::new(&bitcoind, "51", "")?;
    s.start_services()?;
    let rpc = bitcoind.rpc()?;
    let start_height = rpc.get_block_count()?;

    // The translator: one extended channel per V1 miner on our SV2 port, our authority key,
    // a difficulty every hash meets (our declarator gives the channel the same target from
    // the same hashrate and share rate).
    let v1_port = free_port();
    let config = s.dir.join("tproxy.toml");
    std::fs::write(
        &config,
        format!(
            r#"downstream_address = "127.0.0.1"
downstream_port = {v1_port}
max_supported_version = 2
min_supported_version = 2
downstream_extranonce2_size = 4
aggregate_channels = false

[downstream_difficulty_config]
min_individual_miner_hashrate = 1.0
shares_per_minute = 6.0
enable_vardiff = false
job_keepalive_interval_secs = 0

[[upstreams]]
address = "127.0.0.1"
port = {sv2}
authority_pubkey = "{key}"
user_identity = "jdc-interop"
"#,
            sv2 = s.ports.sv2,
            key = s.authority_key()?,
        ),
    )?;
    let proxy = Proc::spawn(
        "translator",
        &translator,
        &["-c".into(), config.display().to_string()],
        &[],
        &s.dir,
    )?;
    // It logs to stdout; its V1 port opens once its SV2 connection to us is set up.
    wait_until("the translator's V1 port", Duration::from_secs(30), || {
        Ok(std::net::TcpStream::connect(("127.0.0.1", v1_port))
            .ok()
            .map(drop))
    })?;

    let args = [
        "--protocol".to_string(),
        "sv1".into(),
        "--connect".into(),
        format!("127.0.0.1:{v1_port}"),
        "--user".into(),
        "rig-behind-tproxy".into(),
        "--max-shares-per-sec".into(),
        "5".into(),
    ];
    let program = s.bin("jdc-sim-miner");
    s.start_command("sim-miner", &program, &args, "")?;
    wait_until(
        "3 blocks mined through the translator",
        Duration::from_secs(90),
        || Ok((rpc.get_block_count()? >= start_height + 3).then_some(())),
    )?;
    // They came through an extended channel of ours, opened by the translator.
    let log = s.get("declarator")?.log_lines().join("\n");
    assert!(log.contains("channel opened"), "{log}");
    assert!(
        log.contains("kind=\"extended\"") || log.contains("kind=extended"),
        "{log}"
    );
    assert!(log.contains("block accepted by bitcoind"), "{log}");
    let best = rpc.get_block(&rpc.get_best_block_hash()?)?;
    let coinbase = &best.txdata[0];
    assert_eq!(
        coinbase.output[0].script_pubkey.as_bytes(),
        &[0x51],
        "the block pays the stack's payout"
    );
    drop(proxy);
    Ok(())
}
