use std::sync::Arc;

use clap::Parser;
use jdc_sim_miner::{Args, Config};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    jdc_shared::telemetry::init(args.log_format);
    let (config, events) = match args.to_config().and_then(|c| Ok((c, args.events()?))) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("jdc-sim-miner: {e}");
            std::process::exit(jdc_shared::config::EXIT_BAD_CONFIG);
        }
    };
    let shutdown = jdc_shared::shutdown::on_signals();
    let events = Arc::new(events);
    match config {
        Config::Sv2(config) => jdc_sim_miner::run(config, events, shutdown).await?,
        Config::Sv1(config) => jdc_sim_miner::sv1::run(config, events, shutdown).await?,
    }
    Ok(())
}
