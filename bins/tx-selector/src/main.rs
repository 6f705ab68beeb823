//! `jdc-tx-selector` binary: argument parsing and process set-up; the work is in the library.

use clap::Parser;
use jdc_shared::config::{CommonArgs, Config};
use jdc_tx_selector::RunError;

/// Chooses the transactions of the next block.
///
/// Listens for block templates from jdc-template-watcher on the bus (`bus.watcher`), applies
/// the policy of `[tx_selector]` and publishes the resulting selection on its own bus stream
/// (`bus.selector`) for jdc-declarator.
///
/// Policies: `pass-through` keeps bitcoind's transactions and order (trimmed only to the
/// template's limits minus the coinbase reserve); `fee-rate` (default) drops packages below
/// `tx_selector.min_fee_rate_sat_vb`, caps the block at `tx_selector.max_block_weight` and
/// `max_block_sigops` and fills it by package fee rate, so a high-fee child pays for its parent;
/// `prioritize_txids` and `prioritize_scripts` go first whatever their rate.
///
/// Rules for both policies: `exclude_txids`, `exclude_scripts` (address or hex script),
/// `exclude_outpoints` (txid:vout), `max_op_return_bytes`, `max_op_return_outputs`,
/// `drop_inscriptions`, `max_witness_script_push_bytes`. A transaction left out takes its
/// descendants with it; every selection reports the count and fees left out per reason.
/// See docs/selection.md.
///
/// Example: jdc-tx-selector -c jdc.toml --set tx_selector.min_fee_rate_sat_vb=2
/// --set 'tx_selector.exclude_scripts=["bcrt1q..."]'
#[derive(Debug, Parser)]
#[command(name = "jdc-tx-selector", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    jdc_shared::telemetry::init(args.common.log_format);
    let config = Config::load_or_exit("jdc-tx-selector", &args.common);
    let shutdown = jdc_shared::shutdown::on_signals();
    match jdc_tx_selector::run(config, shutdown).await {
        Err(RunError::Config(e)) => jdc_shared::config::exit_bad_config("jdc-tx-selector", &e),
        other => Ok(other?),
    }
}
