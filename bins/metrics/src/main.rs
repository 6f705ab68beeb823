//! `jdc-metrics` binary: argument parsing and process set-up; the work is in the library.

use clap::Parser;
use jdc_metrics::RunError;
use jdc_shared::config::{CommonArgs, Config};

/// Prometheus metrics and health checks for the jdc stack.
///
/// Listens to every bus stream (`bus.watcher`, `bus.selector`, `bus.declarator`) and serves,
/// on `metrics.listen` (default 127.0.0.1:9100):
///
///   GET /metrics   counters, gauges and histograms in the OpenMetrics text format
///                  (tips, templates, selections, jobs, tip-to-job latency, shares, blocks,
///                  process liveness, bus health);
///
///   GET /healthz   JSON with each process's liveness from its heartbeats; HTTP 200 when all
///                  three are up, 503 otherwise. A process is down once its last heartbeat is
///                  older than `metrics.down_after_ms`.
///
/// Example: jdc-metrics -c jdc.toml --set metrics.listen=0.0.0.0:9100
#[derive(Debug, Parser)]
#[command(name = "jdc-metrics", version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    jdc_shared::telemetry::init(args.common.log_format);
    let config = Config::load_or_exit("jdc-metrics", &args.common);
    let shutdown = jdc_shared::shutdown::on_signals();
    match jdc_metrics::run(config, shutdown).await {
        Err(RunError::Config(e)) => jdc_shared::config::exit_bad_config("jdc-metrics", &e),
        other => Ok(other?),
    }
}
