//! `jdc-template-watcher` binary: CLI, logging and configuration, then [`jdc_template_watcher::run`].

use anyhow::Context;
use clap::Parser;
use jdc_shared::config::{CommonArgs, Config};
use jdc_template_watcher::WatcherError;
use std::time::Duration;

/// How long blocking work may linger once `run` has returned.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Watches bitcoind and publishes new tips and block templates on the jdc bus.
///
/// Subscribes to bitcoind's ZMQ `hashblock` and `sequence` notifications and talks RPC
/// (cookie file or user + password file). On a new block it publishes a `tip` message at once
/// (enough for an empty-block job; usually without any RPC, from recent blocks it already
/// knows), then the `template` from `getblocktemplate`. Mempool
/// changes refresh the template at most once per `template_watcher.mempool_refresh_min_interval_ms`
/// (and no faster than bitcoind renews its own template cache, about every 6 s).
/// A `getbestblockhash` poll every `template_watcher.tip_poll_interval_ms` backs ZMQ up.
/// Nothing is published while bitcoind is in initial block download; if bitcoind goes away the
/// watcher retries with backoff and carries on when it is back.
///
/// Publishes on the `watcher` stream (`bus.watcher`, bound on `bus.bind_host`): topics `tip`,
/// `template`, `heartbeat` (state `ok`, `waiting-for-bitcoind` or `initial-block-download`).
///
/// Keys used: `network`, `bitcoind.*` (rpc_url, rpc_cookie_file or rpc_user +
/// rpc_password_file, zmq_hashblock, zmq_sequence, rpc_timeout_ms), `bus.*`,
/// `template_watcher.*`. Example:
///   jdc-template-watcher -c jdc.toml --set bitcoind.rpc_cookie_file=/data/regtest/.cookie
///
/// Exit codes: 0 after SIGINT/SIGTERM, 1 on a runtime failure, 2 on a configuration error.
/// Logging: RUST_LOG (default `info`; `jdc_template_watcher=debug` shows per-tip latency).
#[derive(Debug, Parser)]
#[command(name = "jdc-template-watcher", version, verbatim_doc_comment)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    jdc_shared::telemetry::init(args.common.log_format);
    let config = Config::load_or_exit("jdc-template-watcher", &args.common);
    // One thread: the tip path never hops between threads; bulk work has its own threads.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let result = runtime.block_on(async {
        let shutdown = jdc_shared::shutdown::on_signals();
        jdc_template_watcher::run(config, shutdown).await
    });
    // An RPC call still running on the blocking pool (bitcoind hung) is abandoned rather
    // than waited for up to the RPC timeout.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(()) => Ok(()),
        Err(WatcherError::Config(e)) => {
            jdc_shared::config::exit_bad_config("jdc-template-watcher", &e)
        }
        Err(e) => Err(anyhow::Error::new(e).context("jdc-template-watcher failed")),
    }
}
