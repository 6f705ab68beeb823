//! Mining for a pool with our own templates, with fallback to the next upstream and to solo:
//!
//! - [`jds`]: Job Declarator Server client (tokens ahead, declarations, missing transactions).
//! - [`pool`]: the pool's Mining protocol client (one extended channel, custom jobs, shares).
//! - [`declare`]: a job as `DeclareMiningJob` + `SetCustomMiningJob` with the pool's outputs.
//! - [`held_shares`]: shares of a declared job held until the pool acknowledges it.
//! - [`fallback`]: which upstream to mine for, when to fall back and when to return.
//! - [`runner`]: the task that mines for an upstream and switches between them.
//! - [`state`]: the upstream state published for operators.

pub mod declare;
pub mod fallback;
pub mod held_shares;
pub mod jds;
pub mod pool;
pub mod runner;
pub mod state;

use std::time::Duration;

use jdc_shared::bitcoin::secp256k1::XOnlyPublicKey;
use jdc_shared::sv2::{connect, Message, Sv2Error, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::Str0255Owned;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::parsers_sv2::CommonMessagesOwned;
use tokio::net::TcpStream;

/// What the declarator tells upstreams it is (`SetupConnection.vendor`).
pub const VENDOR: &str = "jdc";

/// Why an upstream connection failed; every variant names the upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// TCP connect failed.
    #[error("{upstream}: cannot connect: {source}")]
    Connect {
        /// Which upstream (`jds 127.0.0.1:34264`).
        upstream: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Noise handshake failed: wrong authority key, expired certificate, not an SV2 server.
    #[error("{upstream}: Noise handshake failed (check its authority public key): {source}")]
    Handshake {
        /// Which upstream.
        upstream: String,
        /// Cause.
        #[source]
        source: Sv2Error,
    },
    /// `SetupConnection` was refused.
    #[error("{upstream}: SetupConnection refused with `{code}` (flags {flags:#x})")]
    SetupRefused {
        /// Which upstream.
        upstream: String,
        /// Its error code.
        code: String,
        /// Flags it does not support.
        flags: u32,
    },
    /// The upstream broke the protocol or the connection.
    #[error("{upstream}: {detail}")]
    Protocol {
        /// Which upstream.
        upstream: String,
        /// What happened.
        detail: String,
    },
    /// The pool refused to open our channel (`OpenMiningChannel.Error`).
    #[error("{upstream}: refused our channel: `{code}`")]
    ChannelRefused {
        /// Which upstream.
        upstream: String,
        /// Its error code.
        code: String,
    },
    /// The pool's channel leaves too few extranonce bytes for our devices.
    #[error("{upstream}: gave us {got} extranonce bytes; we need at least {need}")]
    ExtranonceTooSmall {
        /// Which upstream.
        upstream: String,
        /// Bytes the pool gave under its prefix.
        got: u16,
        /// Bytes we asked for.
        need: u16,
    },
    /// The upstream did not answer in time.
    #[error("{upstream}: no answer to {waiting_for} within {timeout:?}")]
    Timeout {
        /// Which upstream.
        upstream: String,
        /// What was expected.
        waiting_for: &'static str,
        /// How long we waited.
        timeout: Duration,
    },
}

impl UpstreamError {
    /// The fallback trigger this error is (the text names the upstream and the cause).
    pub fn trigger(&self) -> fallback::Trigger {
        use fallback::Trigger;
        let text = self.to_string();
        match self {
            UpstreamError::SetupRefused { .. } => Trigger::SetupRefused(text),
            UpstreamError::ChannelRefused { .. } => Trigger::ChannelRefused(text),
            UpstreamError::ExtranonceTooSmall { .. } => Trigger::ExtranonceTooSmall(text),
            UpstreamError::Timeout { .. } => Trigger::Timeout(text),
            UpstreamError::Connect { .. }
            | UpstreamError::Handshake { .. }
            | UpstreamError::Protocol { .. } => Trigger::Disconnected(text),
        }
    }

    /// A failed read from an upstream: a dead peer found by TCP keepalive (or an unacknowledged
    /// send past `TCP_USER_TIMEOUT`) is a timeout, anything else a protocol or connection error.
    pub(crate) fn from_read(upstream: &str, error: &Sv2Error, timeout: Duration) -> Self {
        match error {
            Sv2Error::Io(e) if e.kind() == std::io::ErrorKind::TimedOut => UpstreamError::Timeout {
                upstream: upstream.to_string(),
                waiting_for: "TCP keepalive probes (the peer is gone)",
                timeout,
            },
            other => UpstreamError::Protocol {
                upstream: upstream.to_string(),
                detail: format!("connection failed: {other}"),
            },
        }
    }
}

/// TCP keepalive of upstream sockets: probes start after `timeout` of silence, every
/// `timeout / 3` (at least 1 s), and the connection is dropped after this many unanswered ones.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Connects TCP to `address` within `timeout`, with TCP keepalive (and, on Linux,
/// `TCP_USER_TIMEOUT`) so that a peer that vanishes without closing (power loss, a cut link)
/// is noticed within about twice `timeout`.
pub async fn connect_tcp(
    upstream: &str,
    address: &str,
    timeout: Duration,
) -> Result<TcpStream, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(address))
        .await
        .map_err(|_| UpstreamError::Timeout {
            upstream: upstream.to_string(),
            waiting_for: "TCP connect",
            timeout,
        })?
        .map_err(|source| UpstreamError::Connect {
            upstream: upstream.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
    if let Err(e) = set_keepalive(&stream, timeout) {
        tracing::warn!(upstream, error = %e, "cannot set TCP keepalive; a silently dead upstream is only noticed by answer deadlines");
    }
    Ok(stream)
}

/// Sets the keepalive of [`connect_tcp`] on `stream`.
pub fn set_keepalive(stream: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    let socket = socket2::SockRef::from(stream);
    let interval = (timeout / 3).max(Duration::from_secs(1));
    let params = socket2::TcpKeepalive::new()
        .with_time(timeout.max(Duration::from_secs(1)))
        .with_interval(interval);
    #[cfg(any(target_os = "linux", target_os = "macos", target_os = "freebsd"))]
    let params = params.with_retries(KEEPALIVE_PROBES);
    socket.set_tcp_keepalive(&params)?;
    #[cfg(target_os = "linux")]
    socket.set_tcp_user_timeout(Some(
        timeout.max(Duration::from_secs(1)) + interval * KEEPALIVE_PROBES,
    ))?;
    Ok(())
}

/// Opens a session with an upstream: TCP to `address`, the Noise NX handshake verifying
/// `authority`, then `SetupConnection` for `protocol` with `flags`. Every error names
/// `upstream`.
pub(crate) async fn open_session(
    upstream: &str,
    address: &str,
    authority: XOnlyPublicKey,
    protocol: Protocol,
    flags: u32,
    timeout: Duration,
) -> Result<(Sv2Reader, Sv2Writer), UpstreamError> {
    let stream = connect_tcp(upstream, address, timeout).await?;
    let (mut reader, mut writer) =
        connect(stream, Some(authority), timeout)
            .await
            .map_err(|source| UpstreamError::Handshake {
                upstream: upstream.to_string(),
                source,
            })?;
    let endpoint = address
        .rsplit_once(':')
        .map(|(h, p)| (h, p.parse::<u16>().unwrap_or(0)))
        .unwrap_or((address, 0));
    let protocol_error = |detail: String| UpstreamError::Protocol {
        upstream: upstream.to_string(),
        detail,
    };
    let s = |v: &str| {
        Str0255Owned::try_from(v).map_err(|e| protocol_error(format!("cannot encode `{v}`: {e:?}")))
    };
    let setup = SetupConnectionOwned {
        protocol,
        min_version: 2,
        max_version: 2,
        flags,
        endpoint_host: s(endpoint.0)?,
        endpoint_port: endpoint.1,
        vendor: s(VENDOR)?,
        hardware_version: s("")?,
        firmware: s(concat!("jdc-declarator/", env!("CARGO_PKG_VERSION")))?,
        device_id: s("")?,
    };
    writer
        .send(Message::Common(CommonMessagesOwned::SetupConnection(setup)))
        .await
        .map_err(|e| protocol_error(format!("cannot send SetupConnection: {e}")))?;
    let answer = tokio::time::timeout(timeout, reader.recv())
        .await
        .map_err(|_| UpstreamError::Timeout {
            upstream: upstream.to_string(),
            waiting_for: "SetupConnection",
            timeout,
        })?
        .map_err(|e| UpstreamError::from_read(upstream, &e, timeout))?;
    match answer {
        Message::Common(CommonMessagesOwned::SetupConnectionSuccess(_)) => Ok((reader, writer)),
        Message::Common(CommonMessagesOwned::SetupConnectionError(e)) => {
            Err(UpstreamError::SetupRefused {
                upstream: upstream.to_string(),
                code: String::from_utf8_lossy(e.error_code.as_bytes()).into_owned(),
                flags: e.flags,
            })
        }
        other => Err(protocol_error(format!(
            "answered SetupConnection with {}",
            crate::downstream::message_name(&other)
        ))),
    }
}

/// One configured upstream, ready to connect.
#[derive(Debug, Clone)]
pub struct UpstreamSpec {
    /// The pool side.
    pub pool: pool::PoolSettings,
    /// The JDS side.
    pub jds: jds::JdsSettings,
    /// When rejected shares make us leave it.
    pub reject: fallback::RejectLimits,
}

/// Extranonce bytes our channel index takes under the pool's prefix (65,536 device channels).
pub const CHANNEL_INDEX_BYTES: u16 = 2;

/// The configured upstreams (`[[declarator.upstream]]`); errors name the key.
pub fn specs(
    config: &jdc_shared::config::DeclaratorConfig,
) -> Result<Vec<UpstreamSpec>, jdc_shared::config::ConfigError> {
    use jdc_shared::config::ConfigError;
    let timeout = Duration::from_secs(config.upstream_timeout_secs.max(1));
    let reject = reject_limits(config)?;
    config
        .upstream
        .iter()
        .enumerate()
        .map(|(i, u)| {
            let key = |k: &str| format!("declarator.upstream[{i}].{k}");
            let authority = jdc_shared::sv2::parse_authority_public_key(&u.authority_public_key)
                .map_err(|e| ConfigError::new(key("authority_public_key"), e.to_string()))?;
            let mode = match u.mode.as_str() {
                "full-template" => jds::Mode::FullTemplate,
                "coinbase-only" => jds::Mode::CoinbaseOnly,
                other => {
                    return Err(ConfigError::new(
                        key("mode"),
                        format!("`{other}` is not `full-template` or `coinbase-only`"),
                    ))
                }
            };
            for (k, v) in [("pool", &u.pool), ("jds", &u.jds)] {
                if v.rsplit_once(':')
                    .and_then(|(_, p)| p.parse::<u16>().ok())
                    .is_none()
                {
                    return Err(ConfigError::new(key(k), format!("`{v}` is not host:port")));
                }
            }
            if u.user_identity.is_empty() || u.user_identity.len() > 255 {
                return Err(ConfigError::new(
                    key("user_identity"),
                    "must be 1 to 255 bytes",
                ));
            }
            Ok(UpstreamSpec {
                pool: pool::PoolSettings {
                    address: u.pool.clone(),
                    authority,
                    user_identity: u.user_identity.clone(),
                    nominal_hash_rate: config.upstream_nominal_hash_rate,
                    min_extranonce_size: CHANNEL_INDEX_BYTES
                        + config.rollable_extranonce_size.clamp(1, 16),
                    timeout,
                },
                jds: jds::JdsSettings {
                    address: u.jds.clone(),
                    authority,
                    user_identity: u.user_identity.clone(),
                    mode,
                    tokens_ahead: config.upstream_tokens_ahead.max(1),
                    timeout,
                },
                reject,
            })
        })
        .collect()
}

/// Largest `declarator.upstream_reject_window`.
pub const MAX_REJECT_WINDOW: usize = 100_000;

/// `declarator.upstream_reject_window` and `declarator.upstream_reject_max_fraction`; errors
/// name the key.
pub fn reject_limits(
    config: &jdc_shared::config::DeclaratorConfig,
) -> Result<fallback::RejectLimits, jdc_shared::config::ConfigError> {
    use jdc_shared::config::ConfigError;
    let window = config.upstream_reject_window;
    if !(1..=MAX_REJECT_WINDOW).contains(&window) {
        return Err(ConfigError::new(
            "declarator.upstream_reject_window",
            format!("{window} is not a number of shares from 1 to {MAX_REJECT_WINDOW}"),
        ));
    }
    let max_fraction = config.upstream_reject_max_fraction;
    if !(max_fraction > 0.0 && max_fraction <= 1.0) {
        return Err(ConfigError::new(
            "declarator.upstream_reject_max_fraction",
            format!("{max_fraction} is not a fraction above 0 and at most 1"),
        ));
    }
    Ok(fallback::RejectLimits {
        window,
        max_fraction,
    })
}

/// Connects to upstream `index` of the list: pool, then JDS, then a first token for the
/// pool's outputs.
pub async fn connect_one(
    index: usize,
    spec: &UpstreamSpec,
    coinbase_tag: &str,
) -> Result<(runner::Upstream, Vec<jdc_shared::bitcoin::TxOut>), UpstreamError> {
    let pool = pool::PoolClient::connect(&spec.pool).await?;
    let mut jds = jds::JdsClient::connect(spec.jds.clone()).await?;
    jds.wait_for_tokens(1).await?;
    let outputs = jds.pool_outputs().map(<[_]>::to_vec).unwrap_or_default();
    let name = format!("upstream {}", index + 1);
    tracing::debug!(upstream = %name, pool = %spec.pool.address, jds = %spec.jds.address, mode = ?spec.jds.mode, "upstream connected");
    let factory = stratum_core::channels_sv2::server::jobs::factory::JobFactory::new(
        true,
        None,
        Some(coinbase_tag.to_string()),
    );
    Ok((
        runner::Upstream {
            index,
            name,
            pool,
            jds,
            mode: spec.jds.mode,
            factory,
        },
        outputs,
    ))
}

/// An upstream that could not be used, and why.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Its position in the configured list.
    pub index: usize,
    /// What went wrong (its text names the upstream and the cause).
    pub trigger: fallback::Trigger,
}

/// What a search of the upstream list found: the first usable upstream with its pool outputs
/// (none when no upstream works), and the failures met on the way, by position.
pub type Search = (
    Option<(runner::Upstream, Vec<jdc_shared::bitcoin::TxOut>)>,
    Vec<Failure>,
);

/// Connects to the first upstream of the list that works (logging each failure with its
/// cause), but `skip` (the one that just failed), and whose extranonce space under its prefix
/// is `layout` bytes when given (devices keep their extranonce sizes across a switch). Returns
/// it with the failures met on the way, by position. Used at start: says so when none works.
pub async fn connect_first(
    specs: &[UpstreamSpec],
    coinbase_tag: &str,
    layout: Option<u16>,
    skip: Option<usize>,
) -> Search {
    let found = try_in_order(specs, coinbase_tag, layout, skip).await;
    if found.0.is_none() && !specs.is_empty() {
        tracing::warn!("no upstream is usable: mining solo to our own payout");
    }
    found
}

/// [`connect_first`] without the final word: the runner looks for the next upstream with it
/// in the background while devices mine solo.
pub async fn try_in_order(
    specs: &[UpstreamSpec],
    coinbase_tag: &str,
    layout: Option<u16>,
    skip: Option<usize>,
) -> Search {
    let mut failures = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if skip == Some(i) {
            continue;
        }
        match connect_one(i, spec, coinbase_tag).await {
            Ok((up, outputs)) => match layout_mismatch(&up, layout) {
                None => return (Some((up, outputs)), failures),
                Some(why) => {
                    let trigger =
                        fallback::Trigger::ExtranonceTooSmall(format!("{}: {why}", up.name));
                    tracing::warn!(upstream = %up.name, reason = %trigger, "upstream unusable; trying the next");
                    failures.push(Failure { index: i, trigger });
                }
            },
            Err(e) => {
                let trigger = e.trigger();
                tracing::warn!(upstream = i + 1, reason = %trigger, "upstream unusable; trying the next");
                failures.push(Failure { index: i, trigger });
            }
        }
    }
    (None, failures)
}

/// Why a connected upstream cannot take our devices' work: its extranonce space under its
/// prefix differs from the `layout` (bytes) our devices were given.
pub fn layout_mismatch(up: &runner::Upstream, layout: Option<u16>) -> Option<String> {
    let size = up.pool.channel().extranonce_size;
    match layout {
        Some(want) if want != size => Some(format!(
            "the pool gives {size} extranonce bytes under its prefix, our devices' layout needs exactly {want} (restart the declarator to adopt this pool's layout)"
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
