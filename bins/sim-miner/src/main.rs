use std::sync::Arc;

use clap::Parser;
use jdc_sim_miner::Args;

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
    jdc_sim_miner::run(config, Arc::new(events), shutdown).await?;
    Ok(())
}
