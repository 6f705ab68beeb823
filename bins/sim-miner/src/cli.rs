//! Command line of `jdc-sim-miner` and its validation into a [`MinerConfig`].

use std::path::PathBuf;
use std::time::Duration;

use jdc_shared::sv2::{parse_authority_public_key, KeyError};
use jdc_shared::telemetry::LogFormat;

use crate::events::Events;
use crate::job::ChannelKind;
use crate::session::MinerConfig;
use crate::sv1::Sv1Config;

/// SV2 (or Stratum V1) CPU miner for tests, demos and load tests.
///
/// SV2 (the default): connects to an SV2 mining server (e.g. jdc-declarator) over Noise, opens
/// one extended or standard channel and hashes its jobs on CPU threads, submitting every share
/// that meets the channel target (paced by --max-shares-per-sec).
///
/// SV1 (--protocol sv1): connects to a Stratum V1 pool or proxy port over plain TCP, sends
/// mining.configure (version rolling, unless --no-version-rolling), mining.subscribe and
/// mining.authorize (--user, --password), and submits every share that meets the
/// mining.set_difficulty target.
///
/// Either way it reconnects with backoff when the connection drops.
///
/// Events are printed to stdout as JSON lines (`{"event":"connected"}`, `channel-opened`,
/// `new-job`, `set-new-prev-hash`, `share-submitted`, `share-accepted`, `share-rejected`,
/// `block-candidate`, `disconnected`, ...), one per line; logs go to stderr.
///
/// Example (SV2): jdc-sim-miner --connect 127.0.0.1:34255 --authority-key-file
/// keys/authority_public_key
///
/// Example (SV1): jdc-sim-miner --protocol sv1 --connect 127.0.0.1:3333 --user worker1
#[derive(Debug, Clone, clap::Parser)]
#[command(name = "jdc-sim-miner", version, about, long_about)]
pub struct Args {
    /// Protocol to speak.
    #[arg(long, value_enum, default_value_t = Protocol::Sv2)]
    pub protocol: Protocol,

    /// Mining server to connect to, HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", default_value = "127.0.0.1:34255")]
    pub connect: String,

    /// SV2 only: the server's authority public key (base58check, e.g. 9bXiEd8b...). Without
    /// it and without --authority-key-file the server is NOT authenticated.
    #[arg(long, value_name = "KEY", conflicts_with = "authority_key_file")]
    pub authority_public_key: Option<String>,

    /// SV2 only: file holding the server's authority public key (e.g. the declarator's
    /// <key_dir>/authority_public_key).
    #[arg(long, value_name = "PATH")]
    pub authority_key_file: Option<PathBuf>,

    /// SV2 only: channel type to open.
    #[arg(long, value_enum, default_value_t = ChannelKind::Extended)]
    pub channel: ChannelKind,

    /// User identity: sent when opening the SV2 channel; the SV1 worker name for
    /// mining.authorize and mining.submit.
    #[arg(
        long,
        visible_alias = "user",
        value_name = "NAME",
        default_value = "jdc-sim-miner"
    )]
    pub user_identity: String,

    /// SV1 only: password for mining.authorize. Default: x.
    #[arg(long, value_name = "PASSWORD")]
    pub password: Option<String>,

    /// SV1 only: do not ask for version rolling (BIP310 mining.configure); by default the miner
    /// asks to roll the bits of 1fffe000 and rolls those the server allows.
    #[arg(long)]
    pub no_version_rolling: bool,

    /// SV2 only: nominal hash rate announced to the server, in H/s (it sets the share target
    /// from it).
    #[arg(long, value_name = "H/S", default_value_t = 10e6)]
    pub nominal_hashrate: f32,

    /// Hashing threads.
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub threads: usize,

    /// SV2 only: largest (easiest) share target accepted, big-endian hex of up to 64 digits.
    /// Default: all ones (no limit).
    #[arg(long, value_name = "HEX")]
    pub max_target: Option<String>,

    /// SV2 only: extranonce bytes the miner wants to roll on an extended channel.
    #[arg(long, value_name = "BYTES", default_value_t = 4)]
    pub min_extranonce_size: u16,

    /// Most shares submitted per second, over all threads (0 = unlimited). On regtest nearly
    /// every hash is a block: this paces block production.
    #[arg(long, value_name = "N", default_value_t = 20.0)]
    pub max_shares_per_sec: f64,

    /// Write the JSON-line events to this file (appending) instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub events_file: Option<PathBuf>,

    /// Seconds allowed for connecting, the Noise handshake and each setup reply (SV1: for the
    /// replies to mining.configure, mining.subscribe and mining.authorize).
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    pub handshake_timeout_secs: u64,

    /// Log format (logs go to stderr).
    #[arg(long, value_enum, default_value = "text")]
    pub log_format: LogFormat,
}

/// The protocol spoken to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Protocol {
    /// Stratum V2 over Noise.
    Sv2,
    /// Stratum V1: JSON-RPC lines over plain TCP.
    Sv1,
}

/// A validated command line.
#[derive(Debug, Clone)]
pub enum Config {
    /// `--protocol sv2`.
    Sv2(MinerConfig),
    /// `--protocol sv1`.
    Sv1(Sv1Config),
}

/// A command-line value that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ArgError {
    /// Bad authority key.
    #[error("--authority-public-key: {0}")]
    AuthorityKey(KeyError),
    /// Unreadable or bad authority key file.
    #[error("--authority-key-file {path}: {reason}")]
    AuthorityKeyFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Any other option.
    #[error("--{option}: {reason}")]
    Invalid {
        /// Option name.
        option: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The events file cannot be opened.
    #[error("--events-file {path}: {source}")]
    EventsFile {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
}

impl Args {
    /// Validates the options.
    pub fn to_config(&self) -> Result<Config, ArgError> {
        self.check_common()?;
        match self.protocol {
            Protocol::Sv2 => self.sv2_config().map(Config::Sv2),
            Protocol::Sv1 => self.sv1_config().map(Config::Sv1),
        }
    }

    fn sv1_config(&self) -> Result<Sv1Config, ArgError> {
        let sv2_only = [
            ("authority-public-key", self.authority_public_key.is_some()),
            ("authority-key-file", self.authority_key_file.is_some()),
            ("max-target", self.max_target.is_some()),
        ];
        if let Some((option, _)) = sv2_only.into_iter().find(|(_, given)| *given) {
            return Err(ArgError::Invalid {
                option,
                reason: "only for --protocol sv2 (SV1 has no authentication or channel)".into(),
            });
        }
        Ok(Sv1Config {
            server: self.connect.clone(),
            user: self.user_identity.clone(),
            password: self.password.clone().unwrap_or_else(|| "x".into()),
            version_rolling: !self.no_version_rolling,
            threads: self.threads,
            max_shares_per_sec: self.max_shares_per_sec,
            timeout: Duration::from_secs(self.handshake_timeout_secs),
        })
    }

    fn sv2_config(&self) -> Result<MinerConfig, ArgError> {
        let invalid = |option: &'static str, reason: String| ArgError::Invalid { option, reason };
        if self.password.is_some() {
            return Err(invalid("password", "only for --protocol sv1".into()));
        }
        if self.no_version_rolling {
            return Err(invalid(
                "no-version-rolling",
                "only for --protocol sv1 (SV2 jobs say whether versions roll)".into(),
            ));
        }
        let authority = match (&self.authority_public_key, &self.authority_key_file) {
            (Some(key), _) => {
                Some(parse_authority_public_key(key).map_err(ArgError::AuthorityKey)?)
            }
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| ArgError::AuthorityKeyFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
                Some(
                    parse_authority_public_key(&text).map_err(|e| ArgError::AuthorityKeyFile {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?,
                )
            }
            (None, None) => None,
        };
        if !(self.nominal_hashrate.is_finite() && self.nominal_hashrate > 0.0) {
            return Err(invalid(
                "nominal-hashrate",
                format!("{} is not a positive number", self.nominal_hashrate),
            ));
        }
        if self.min_extranonce_size > 32 {
            return Err(invalid(
                "min-extranonce-size",
                format!("{} is more than 32 bytes", self.min_extranonce_size),
            ));
        }
        let max_target = match &self.max_target {
            None => [0xff; 32],
            Some(hex_str) => parse_target(hex_str).map_err(|r| invalid("max-target", r))?,
        };
        Ok(MinerConfig {
            server: self.connect.clone(),
            authority,
            channel: self.channel,
            user_identity: self.user_identity.clone(),
            nominal_hashrate: self.nominal_hashrate,
            max_target,
            min_extranonce_size: self.min_extranonce_size,
            threads: self.threads,
            max_shares_per_sec: self.max_shares_per_sec,
            timeout: Duration::from_secs(self.handshake_timeout_secs),
        })
    }

    /// Checks the options both protocols use.
    fn check_common(&self) -> Result<(), ArgError> {
        let invalid = |option: &'static str, reason: String| ArgError::Invalid { option, reason };
        if !self.connect.contains(':') {
            return Err(invalid(
                "connect",
                format!("`{}` is not HOST:PORT", self.connect),
            ));
        }
        if self.threads == 0 || self.threads > 1024 {
            return Err(invalid(
                "threads",
                format!("{} is not between 1 and 1024", self.threads),
            ));
        }
        if !(self.max_shares_per_sec >= 0.0 && self.max_shares_per_sec.is_finite()) {
            return Err(invalid(
                "max-shares-per-sec",
                format!("{} is not a number >= 0", self.max_shares_per_sec),
            ));
        }
        if self.user_identity.len() > 255 {
            return Err(invalid("user-identity", "longer than 255 bytes".into()));
        }
        if self.handshake_timeout_secs == 0 {
            return Err(invalid(
                "handshake-timeout-secs",
                "must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Where events go: `--events-file` or stdout.
    pub fn events(&self) -> Result<Events, ArgError> {
        match &self.events_file {
            None => Ok(Events::stdout()),
            Some(path) => Events::file(path).map_err(|source| ArgError::EventsFile {
                path: path.clone(),
                source,
            }),
        }
    }
}

/// Big-endian hex (up to 64 digits, optional 0x) into a LE 32-byte target.
fn parse_target(s: &str) -> Result<[u8; 32], String> {
    let digits = s.trim().trim_start_matches("0x");
    if digits.is_empty() || digits.len() > 64 {
        return Err(format!("`{s}` is not 1 to 64 hex digits"));
    }
    let padded = format!("{digits:0>64}");
    let bytes = hex::decode(&padded).map_err(|e| format!("`{s}` is not hex: {e}"))?;
    let mut le = [0u8; 32];
    for (i, b) in bytes.iter().rev().enumerate() {
        le[i] = *b;
    }
    Ok(le)
}

#[cfg(test)]
mod tests;
