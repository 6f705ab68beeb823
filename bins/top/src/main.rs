//! `jdc-top` binary: argument parsing and process set-up; the work is in the library.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use jdc_shared::config::{CommonArgs, Config};

/// A live dashboard of a running jdc stack, in the terminal.
///
/// jdc-top listens to the bus streams of jdc-template-watcher (`bus.watcher`), jdc-tx-selector
/// (`bus.selector`) and jdc-declarator (`bus.declarator`), the same endpoints the other
/// binaries use, so give it the same configuration file. It only reads: starting or stopping
/// it changes nothing in the stack.
///
/// What it shows:
///
///   Chain       the chain tip and the latest block template (height, transactions, fees,
///               age);
///   Selection   the policy's choice: transactions, fees, and what it dropped, per reason;
///   Upstream    pool or solo mining, every configured pool and JDS with its state and last
///               error, switches, and the jobs declared to the pool (Upstream pane);
///   Devices     per channel: kind, accepted and rejected shares, estimated hashrate (from
///               the accepted shares' difficulty over the last 2 minutes), and the total;
///   Blocks      blocks found, accepted and rejected, with their hashes;
///   Processes   up, down (no heartbeat for `metrics.down_after_ms`) or waiting (never
///               heard from), with the state each one reports; recent events.
///
/// Keys: tab / shift-tab (or the arrows, or 1-4) switch panes (Overview, Devices, Upstream,
/// Events); Esc goes back to the overview; Ctrl-L redraws; q or Ctrl-C quits.
///
/// The overview needs an 80x24 terminal. Logs go nowhere unless --log-file is given.
///
/// Example: jdc-top -c jdc.toml
#[derive(Debug, Parser)]
#[command(name = "jdc-top", version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Write logs to this file (appended; --log-format and RUST_LOG apply). Without it logs
    /// are discarded: the terminal belongs to the dashboard.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,
    /// Redraw the screen every this many milliseconds (and soon after new data).
    #[arg(long, value_name = "MS", default_value_t = 250)]
    refresh_ms: u64,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(path) = &args.log_file {
        jdc_top::log_to_file(path, args.common.log_format)
            .with_context(|| format!("cannot write logs to {}", path.display()))?;
    }
    let config = Config::load_or_exit("jdc-top", &args.common);
    let shutdown = jdc_shared::shutdown::on_signals();
    let options = jdc_top::Options {
        refresh: Duration::from_millis(args.refresh_ms),
    };
    if let Err(e) = jdc_top::run(config, options, shutdown).await {
        eprintln!("jdc-top: {e}");
        std::process::exit(1);
    }
    Ok(())
}
