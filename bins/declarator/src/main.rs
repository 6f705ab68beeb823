//! jdc-declarator: serves SV2 mining jobs built from our own templates to the operator's
//! devices and submits the blocks they find.

use clap::{Parser, Subcommand};
use jdc_declarator::RunError;
use jdc_shared::config::{CommonArgs, Config};

/// The SV2 side of jdc: builds the coinbase paying your address(es), serves the SV2 Mining
/// protocol (Noise-encrypted) to your devices on `declarator.listen` (default 0.0.0.0:34255),
/// and submits found blocks to bitcoind. Templates come from jdc-template-watcher and
/// jdc-tx-selector over the bus.
///
/// Mines solo to `[[declarator.payout]]`, or for a pool with your own templates when
/// `[[declarator.upstream]]` entries are configured (pool, jds, authority_public_key,
/// user_identity, mode = full-template | coinbase-only): jobs are declared to the pool's JDS and
/// set as custom jobs; on a pool failure (also: no answer within
/// `declarator.upstream_timeout_secs`, or more than `declarator.upstream_reject_max_fraction`
/// of the last `declarator.upstream_reject_window` shares rejected) devices mine solo at once
/// and move to the next upstream that works.
///
/// Devices need the authority public key: print it with `jdc-declarator authority-key`
/// (the key is created in `declarator.key_dir` on first start).
///
/// Required: at least one payout, e.g. in the TOML file
///   [[declarator.payout]]
///   destination = "bc1q..."   # an address of `network`, or a hex output script
/// Keys used: `network`, `bitcoind.*` (RPC for submitblock), `bus.*`, `declarator.*`
/// (see docs/configuration.md). Example:
///   jdc-declarator -c jdc.toml --set declarator.listen=0.0.0.0:34255
///
/// Exit codes: 0 after SIGINT/SIGTERM, 1 on a runtime failure, 2 on a configuration error.
#[derive(Parser)]
#[command(
    name = "jdc-declarator",
    version,
    about,
    long_about,
    verbatim_doc_comment
)]
struct Cli {
    #[command(flatten)]
    common: CommonArgs,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the declarator (the default).
    Run,
    /// Print the authority public key devices must trust (creates the key if absent).
    AuthorityKey,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let cli = Cli::parse();
    jdc_shared::telemetry::init(cli.common.log_format);
    let config = Config::load_or_exit("jdc-declarator", &cli.common);
    let result = match cli.command.unwrap_or(Command::Run) {
        Command::AuthorityKey => jdc_declarator::service::load_keys(&config).map(|k| {
            println!("{}", k.public_key_string());
        }),
        Command::Run => jdc_declarator::run(config, jdc_shared::shutdown::on_signals()).await,
    };
    match result {
        Ok(()) => {}
        Err(RunError::Config(e)) => jdc_shared::config::exit_bad_config("jdc-declarator", &e),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
