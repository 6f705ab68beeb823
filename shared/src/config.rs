//! The stack's one configuration.
//!
//! Sources, later ones winning: built-in defaults (a regtest stack on one host), the TOML file
//! (`-c/--config`), environment variables `JDC_<SECTION>__<KEY>` (e.g.
//! `JDC_DECLARATOR__LISTEN=0.0.0.0:34255`, `JDC_NETWORK=signet`), then `--set section.key=value`
//! flags. Unknown keys are errors, so a typo never silently falls back to a default.
//!
//! Any problem is a [`ConfigError`] naming the key; binaries exit with code 2 on it.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use stratum_core::bitcoin::{Network, ScriptBuf};

use figment::{
    providers::{Env, Format, Serialized, Toml},
    Figment,
};

/// Exit code for a bad configuration.
pub const EXIT_BAD_CONFIG: i32 = 2;

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[error("configuration error at `{key}`: {message}")]
pub struct ConfigError {
    /// Dotted key path, e.g. `declarator.payout`.
    pub key: String,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl ConfigError {
    /// A new error for `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// Prints a configuration error as `program: error` and exits with [`EXIT_BAD_CONFIG`].
pub fn exit_bad_config(program: &str, error: &ConfigError) -> ! {
    eprintln!("{program}: {error}");
    std::process::exit(EXIT_BAD_CONFIG)
}

/// Command-line options every binary has.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// TOML configuration file (see docs/configuration.md). Without it, built-in regtest
    /// defaults apply.
    #[arg(short = 'c', long = "config", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Override one configuration key, e.g. `--set declarator.listen=0.0.0.0:34255`
    /// (repeatable; wins over the file and JDC_* environment variables).
    #[arg(short = 's', long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// Log format.
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: crate::telemetry::LogFormat,
}

/// A secret string: never printed by `Debug`.
#[derive(Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

/// The whole stack's configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `regtest`, `signet`, `testnet4`, `testnet` or `bitcoin` (mainnet).
    pub network: String,
    /// How to reach bitcoind.
    pub bitcoind: BitcoindConfig,
    /// Bus endpoints.
    pub bus: BusConfig,
    /// template-watcher settings.
    pub template_watcher: WatcherConfig,
    /// tx-selector settings.
    pub tx_selector: SelectorConfig,
    /// declarator settings.
    pub declarator: DeclaratorConfig,
    /// metrics settings.
    pub metrics: MetricsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            network: "regtest".into(),
            bitcoind: BitcoindConfig::default(),
            bus: BusConfig::default(),
            template_watcher: WatcherConfig::default(),
            tx_selector: SelectorConfig::default(),
            declarator: DeclaratorConfig::default(),
            metrics: MetricsConfig::default(),
        }
    }
}

/// `[bitcoind]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BitcoindConfig {
    /// RPC URL; default `http://127.0.0.1:<network's RPC port>`.
    pub rpc_url: Option<String>,
    /// Cookie file for RPC auth (preferred). Default: none; user/password used if set.
    pub rpc_cookie_file: Option<PathBuf>,
    /// RPC user (with `rpc_password` or `rpc_password_file`).
    pub rpc_user: Option<String>,
    /// RPC password. Prefer `rpc_password_file`.
    pub rpc_password: Option<Secret>,
    /// File holding the RPC password.
    pub rpc_password_file: Option<PathBuf>,
    /// bitcoind's `zmqpubhashblock` endpoint.
    pub zmq_hashblock: String,
    /// bitcoind's `zmqpubsequence` endpoint.
    pub zmq_sequence: String,
    /// RPC timeout in milliseconds.
    pub rpc_timeout_ms: u64,
}

/// How to authenticate to bitcoind's RPC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RpcAuth {
    /// Cookie file.
    Cookie(PathBuf),
    /// User and password.
    UserPass(String, Secret),
}

impl Default for BitcoindConfig {
    fn default() -> Self {
        Self {
            rpc_url: None,
            rpc_cookie_file: None,
            rpc_user: None,
            rpc_password: None,
            rpc_password_file: None,
            zmq_hashblock: "tcp://127.0.0.1:28332".into(),
            zmq_sequence: "tcp://127.0.0.1:28333".into(),
            rpc_timeout_ms: 30_000,
        }
    }
}

impl BitcoindConfig {
    /// The RPC URL, defaulting to the network's port on localhost.
    pub fn rpc_url(&self, network: Network) -> String {
        self.rpc_url.clone().unwrap_or_else(|| {
            let port = match network {
                Network::Bitcoin => 8332,
                Network::Testnet => 18332,
                Network::Signet => 38332,
                Network::Regtest => 18443,
                _ => 48332,
            };
            format!("http://127.0.0.1:{port}")
        })
    }

    /// Resolves the RPC credentials (reading the password file if given).
    pub fn rpc_auth(&self) -> Result<RpcAuth, ConfigError> {
        if let Some(cookie) = &self.rpc_cookie_file {
            return Ok(RpcAuth::Cookie(cookie.clone()));
        }
        let Some(user) = self.rpc_user.clone() else {
            return Err(ConfigError::new(
                "bitcoind.rpc_cookie_file",
                "no RPC credentials: set bitcoind.rpc_cookie_file (bitcoind's .cookie) or bitcoind.rpc_user with bitcoind.rpc_password_file",
            ));
        };
        if let Some(file) = &self.rpc_password_file {
            let pw = std::fs::read_to_string(file).map_err(|e| {
                ConfigError::new(
                    "bitcoind.rpc_password_file",
                    format!("cannot read {}: {e}", file.display()),
                )
            })?;
            return Ok(RpcAuth::UserPass(user, Secret(pw.trim_end().to_string())));
        }
        match &self.rpc_password {
            Some(pw) => Ok(RpcAuth::UserPass(user, pw.clone())),
            None => Err(ConfigError::new(
                "bitcoind.rpc_password_file",
                "bitcoind.rpc_user is set but no password: set bitcoind.rpc_password_file",
            )),
        }
    }
}

/// `[bus]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// Endpoint of the template-watcher's stream.
    pub watcher: String,
    /// Endpoint of the tx-selector's stream.
    pub selector: String,
    /// Endpoint of the declarator's stream.
    pub declarator: String,
    /// Host a publisher binds (its stream's port on this host); `0.0.0.0` in containers.
    pub bind_host: String,
    /// Heartbeat and state re-send interval, milliseconds.
    pub resend_interval_ms: u64,
    /// A stream silent for this long is reconnected, milliseconds.
    pub silence_timeout_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            watcher: "tcp://127.0.0.1:28400".into(),
            selector: "tcp://127.0.0.1:28401".into(),
            declarator: "tcp://127.0.0.1:28402".into(),
            bind_host: "127.0.0.1".into(),
            resend_interval_ms: 1000,
            silence_timeout_ms: 2500,
        }
    }
}

impl BusConfig {
    /// The endpoint a publisher binds for the stream whose consumers use `endpoint`.
    pub fn bind_endpoint(&self, key: &str, endpoint: &str) -> Result<String, ConfigError> {
        let port = endpoint
            .strip_prefix("tcp://")
            .and_then(|rest| rest.rsplit_once(':'))
            .and_then(|(_, port)| port.parse::<u16>().ok())
            .ok_or_else(|| {
                ConfigError::new(
                    format!("bus.{key}"),
                    format!("`{endpoint}` is not a tcp://HOST:PORT endpoint"),
                )
            })?;
        Ok(format!("tcp://{}:{port}", self.bind_host))
    }

    /// Publisher options for `source`.
    pub fn publisher_options(&self, source: &str) -> crate::bus::PublisherOptions {
        crate::bus::PublisherOptions {
            source: source.into(),
            resend_interval: std::time::Duration::from_millis(self.resend_interval_ms.max(10)),
        }
    }

    /// Subscription to the given `(stream label)`s, each looked up in this config.
    pub fn subscribe_options(
        &self,
        streams: &[&str],
        topics: &[crate::bus::Topic],
    ) -> crate::bus::SubscribeOptions {
        let streams = streams
            .iter()
            .map(|s| {
                let ep = match *s {
                    "watcher" => self.watcher.clone(),
                    "selector" => self.selector.clone(),
                    _ => self.declarator.clone(),
                };
                (s.to_string(), ep)
            })
            .collect();
        crate::bus::SubscribeOptions {
            streams,
            topics: topics.to_vec(),
            silence_timeout: std::time::Duration::from_millis(self.silence_timeout_ms.max(100)),
        }
    }
}

/// `[template_watcher]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WatcherConfig {
    /// Minimum interval between template refreshes caused by mempool changes, milliseconds.
    pub mempool_refresh_min_interval_ms: u64,
    /// Backstop poll of `getbestblockhash`, milliseconds.
    pub tip_poll_interval_ms: u64,
    /// Wait after publishing a tip before asking bitcoind for its template, milliseconds:
    /// bitcoind builds a large template on every core (script checks), which would compete
    /// with the empty-block job on its way to the devices. 0 asks at once.
    pub template_after_tip_delay_ms: u64,
    /// SV2 Template Distribution server address (`host:port`); empty (the default) turns it off.
    pub tdp_listen: String,
    /// Folder of the TDP server's Noise authority key; generated on first start if absent.
    pub tdp_key_dir: PathBuf,
    /// Validity of the certificates the TDP server presents, seconds.
    pub tdp_cert_validity_secs: u64,
    /// A template refresh on the same tip goes to TDP clients only when its fees exceed those
    /// of the last one sent by at least this many satoshis.
    pub tdp_fee_delta_sats: u64,
}

impl Default for WatcherConfig {
    fn default() -> Self {
        Self {
            mempool_refresh_min_interval_ms: 1000,
            tip_poll_interval_ms: 1000,
            template_after_tip_delay_ms: 3,
            tdp_listen: String::new(),
            tdp_key_dir: PathBuf::from("tdp-keys"),
            tdp_cert_validity_secs: 3600,
            tdp_fee_delta_sats: 1000,
        }
    }
}

/// `[tx_selector]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SelectorConfig {
    /// `pass-through` (bitcoind's choice) or `fee-rate` (apply the limits below).
    pub policy: String,
    /// Minimum fee rate in sat/vB for a transaction to be included.
    pub min_fee_rate_sat_vb: f64,
    /// Maximum block weight, coinbase included.
    pub max_block_weight: u64,
    /// Weight kept free for the coinbase transaction.
    pub coinbase_reserve_weight: u64,
    /// Sigops kept free for the coinbase transaction.
    pub coinbase_reserve_sigops: u64,
    /// Maximum block sigops cost, coinbase included (`fee-rate` only; the template's own
    /// limit applies too).
    pub max_block_sigops: u64,
    /// Transactions never to mine, by txid (RPC hex); their descendants go with them.
    pub exclude_txids: Vec<String>,
    /// Transactions paying any of these (addresses of the network, or output scripts in
    /// hex) are never mined, nor their descendants.
    pub exclude_scripts: Vec<String>,
    /// Transactions spending any of these outpoints (`txid:vout`) are never mined, nor
    /// their descendants.
    pub exclude_outpoints: Vec<String>,
    /// Transactions to include first with their ancestors, whatever their fee rate, by txid
    /// (`fee-rate` only).
    pub prioritize_txids: Vec<String>,
    /// Transactions paying any of these (addresses or hex scripts) are included first with
    /// their ancestors, whatever their fee rate (`fee-rate` only).
    pub prioritize_scripts: Vec<String>,
    /// Largest `OP_RETURN` output script allowed, in bytes (as Bitcoin Core's
    /// `datacarriersize`); unset: no cap.
    pub max_op_return_bytes: Option<u64>,
    /// Most `OP_RETURN` outputs a transaction may have; unset: no cap.
    pub max_op_return_outputs: Option<u64>,
    /// Drop transactions whose taproot script-path spend carries an inscription-style
    /// envelope (`OP_FALSE OP_IF ... OP_ENDIF`).
    pub drop_inscriptions: bool,
    /// Drop transactions whose tapscripts push more than this many bytes of data in all;
    /// unset: no cap.
    pub max_witness_script_push_bytes: Option<u64>,
}

impl Default for SelectorConfig {
    fn default() -> Self {
        Self {
            policy: "fee-rate".into(),
            min_fee_rate_sat_vb: 1.0,
            max_block_weight: 4_000_000,
            coinbase_reserve_weight: 8_000,
            coinbase_reserve_sigops: 400,
            max_block_sigops: 80_000,
            exclude_txids: Vec::new(),
            exclude_scripts: Vec::new(),
            exclude_outpoints: Vec::new(),
            prioritize_txids: Vec::new(),
            prioritize_scripts: Vec::new(),
            max_op_return_bytes: None,
            max_op_return_outputs: None,
            drop_inscriptions: false,
            max_witness_script_push_bytes: None,
        }
    }
}

/// One payout output of the coinbase.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PayoutConfig {
    /// An address of the configured network, or an output script in hex.
    pub destination: String,
    /// Relative share of the coinbase value (default 1).
    #[serde(default = "one")]
    pub weight: u32,
}

fn one() -> u32 {
    1
}

/// `[declarator]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeclaratorConfig {
    /// SV2 mining server address for the operator's devices.
    pub listen: String,
    /// Text written into the coinbase scriptSig (`Sv2//<tag>/`), at most 32 bytes.
    pub coinbase_tag: String,
    /// Coinbase payout outputs (`[[declarator.payout]]`). Required.
    pub payout: Vec<PayoutConfig>,
    /// Folder of the Noise authority key; generated on first start if absent.
    pub key_dir: PathBuf,
    /// Validity of the certificates handed to devices, seconds.
    pub cert_validity_secs: u64,
    /// Target share rate per channel, shares per minute.
    pub shares_per_minute: f32,
    /// Acknowledge shares in batches of this many.
    pub share_batch_size: usize,
    /// Bytes of extranonce each device may roll.
    pub rollable_extranonce_size: u16,
    /// Seconds a new connection may take to finish the Noise handshake and SetupConnection.
    pub handshake_timeout_secs: u64,
    /// Maximum downstream connections.
    pub max_connections: usize,
    /// Pools to mine for with our own templates (`[[declarator.upstream]]`), in order of
    /// preference; none = solo mining. Solo mining to `payout` is the last resort.
    pub upstream: Vec<UpstreamConfig>,
    /// Nominal hashrate announced to the pool for our devices together, hashes per second.
    pub upstream_nominal_hash_rate: f32,
    /// Seconds an upstream may take to connect and to answer each request (handshake, setup,
    /// channel, tokens, declarations, custom jobs); also the TCP keepalive idle time.
    pub upstream_timeout_secs: u64,
    /// Mining job tokens kept allocated ahead of need.
    pub upstream_tokens_ahead: usize,
    /// Least seconds between two switches back to a recovered higher-ranked upstream.
    pub upstream_hold_down_secs: u64,
    /// Seconds before a failed upstream is first probed again (then doubling, up to 300).
    pub upstream_probe_secs: u64,
    /// Share results (accepted or rejected shares) the rejected-share rate is taken over.
    pub upstream_reject_window: usize,
    /// Leave a pool when more than this fraction of the last `upstream_reject_window` shares
    /// were rejected (`stale-share` excepted); 1 never leaves.
    pub upstream_reject_max_fraction: f64,
    /// Stratum V1 server address for devices that speak only V1; empty turns it off.
    pub sv1_listen: String,
    /// Hashrate a new V1 device is assumed to have until variable difficulty measures it
    /// (or `mining.suggest_difficulty` says otherwise), hashes per second.
    pub sv1_initial_hash_rate: f32,
    /// Header version bits V1 devices may roll (BIP310), hex; `0` forbids version rolling.
    pub sv1_version_rolling_mask: String,
    /// Longest line a V1 device may send, bytes; longer drops the device.
    pub sv1_max_line_bytes: usize,
    /// `mining.submit` a V1 device may send per second (burst: twice that); more are refused.
    pub sv1_max_submits_per_sec: u32,
}

/// One `[[declarator.upstream]]`: a pool and its Job Declarator Server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The pool's Mining protocol endpoint, `host:port`.
    pub pool: String,
    /// The pool's Job Declarator Server, `host:port`.
    pub jds: String,
    /// The pool's authority public key (base58check, as SRI prints it).
    pub authority_public_key: String,
    /// Our account at the pool.
    pub user_identity: String,
    /// `full-template` (declare our transactions) or `coinbase-only`.
    #[serde(default = "default_upstream_mode")]
    pub mode: String,
}

fn default_upstream_mode() -> String {
    "full-template".into()
}

impl Default for DeclaratorConfig {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:34255".into(),
            coinbase_tag: "jdc".into(),
            payout: Vec::new(),
            key_dir: PathBuf::from("keys"),
            cert_validity_secs: 3600,
            shares_per_minute: 6.0,
            share_batch_size: 1,
            rollable_extranonce_size: 8,
            handshake_timeout_secs: 10,
            max_connections: 1024,
            upstream: Vec::new(),
            upstream_nominal_hash_rate: 1.0e12,
            upstream_timeout_secs: 5,
            upstream_tokens_ahead: 2,
            upstream_hold_down_secs: 300,
            upstream_probe_secs: 10,
            upstream_reject_window: 50,
            upstream_reject_max_fraction: 0.5,
            sv1_listen: "0.0.0.0:3333".into(),
            sv1_initial_hash_rate: 1.0e12,
            sv1_version_rolling_mask: "1fffe000".into(),
            sv1_max_line_bytes: 8192,
            sv1_max_submits_per_sec: 200,
        }
    }
}

impl DeclaratorConfig {
    /// Resolves the payout outputs into scripts with weights; errors name the key.
    pub fn payout_scripts(&self, network: Network) -> Result<Vec<(ScriptBuf, u32)>, ConfigError> {
        if self.payout.is_empty() {
            return Err(ConfigError::new(
                "declarator.payout",
                "no payout configured: add [[declarator.payout]] with destination = \"<address or hex script>\"",
            ));
        }
        self.payout
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if p.weight == 0 {
                    return Err(ConfigError::new(
                        format!("declarator.payout[{i}].weight"),
                        "must be at least 1",
                    ));
                }
                crate::chain::parse_destination(&p.destination, network)
                    .map(|s| (s, p.weight))
                    .map_err(|e| {
                        ConfigError::new(
                            format!("declarator.payout[{i}].destination"),
                            e.to_string(),
                        )
                    })
            })
            .collect()
    }
}

/// `[metrics]`
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// HTTP address serving `/metrics` and `/healthz`.
    pub listen: String,
    /// A process whose heartbeat is older than this is reported down, milliseconds.
    pub down_after_ms: u64,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:9100".into(),
            down_after_ms: 3000,
        }
    }
}

impl Config {
    /// Loads defaults, the file, `JDC_*` environment variables and `--set` overrides.
    pub fn load(args: &CommonArgs) -> Result<Config, ConfigError> {
        Self::load_from(
            args.config.as_deref(),
            &args.set,
            Env::prefixed("JDC_").split("__"),
        )
    }

    /// [`Config::load`], or print the error (naming the key) as `program: ...` and exit with
    /// [`EXIT_BAD_CONFIG`].
    pub fn load_or_exit(program: &str, args: &CommonArgs) -> Config {
        match Self::load(args) {
            Ok(c) => c,
            Err(e) => exit_bad_config(program, &e),
        }
    }

    fn load_from(file: Option<&Path>, sets: &[String], env: Env) -> Result<Config, ConfigError> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(path) = file {
            if !path.is_file() {
                return Err(ConfigError::new(
                    "--config",
                    format!("{} does not exist or is not a file", path.display()),
                ));
            }
            fig = fig.merge(Toml::file_exact(path));
        }
        fig = fig.merge(env);
        for set in sets {
            let (key, value) = set
                .split_once('=')
                .ok_or_else(|| ConfigError::new("--set", format!("`{set}` is not KEY=VALUE")))?;
            let value = parse_value(value.trim());
            fig = fig.merge(Serialized::default(key.trim(), value));
        }
        let config: Config = fig.extract().map_err(figment_error)?;
        config.network()?;
        Ok(config)
    }

    /// The configured network.
    pub fn network(&self) -> Result<Network, ConfigError> {
        match self.network.as_str() {
            "regtest" => Ok(Network::Regtest),
            "signet" => Ok(Network::Signet),
            "testnet" | "testnet3" => Ok(Network::Testnet),
            "testnet4" => Ok(Network::Testnet4),
            "bitcoin" | "mainnet" | "main" => Ok(Network::Bitcoin),
            other => Err(ConfigError::new(
                "network",
                format!(
                    "unknown network `{other}`: use regtest, signet, testnet4, testnet or bitcoin"
                ),
            )),
        }
    }
}

fn parse_value(raw: &str) -> toml::Value {
    match toml::from_str::<toml::Table>(&format!("v = {raw}")) {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| toml::Value::String(raw.into())),
        Err(_) => toml::Value::String(raw.into()),
    }
}

/// Appends `field` to a dotted key path unless the path already ends with it.
fn push_key(path: &mut String, segments: &[String], field: &str) {
    if segments.last().map(String::as_str) == Some(field) {
        return;
    }
    if !path.is_empty() {
        path.push('.');
    }
    path.push_str(field);
}

fn figment_error(err: figment::Error) -> ConfigError {
    let first = err.into_iter().next();
    match first {
        Some(e) => {
            let mut path = e.path.join(".");
            let message = match &e.kind {
                figment::error::Kind::MissingField(f) => {
                    push_key(&mut path, &e.path, f);
                    "missing required key".to_string()
                }
                figment::error::Kind::UnknownField(f, _) => {
                    push_key(&mut path, &e.path, f);
                    "unknown key (check its spelling in docs/configuration.md)".to_string()
                }
                kind => kind.to_string(),
            };
            let from = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            ConfigError::new(
                if path.is_empty() {
                    "<root>".into()
                } else {
                    path
                },
                format!("{message}{from}"),
            )
        }
        None => ConfigError::new("<root>", "invalid configuration"),
    }
}

#[cfg(test)]
mod tests;
