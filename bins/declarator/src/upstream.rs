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
    let stream = TcpStream::connect(address)
        .await
        .map_err(|source| UpstreamError::Connect {
            upstream: upstream.to_string(),
            source,
        })?;
    let _ = stream.set_nodelay(true);
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
        .map_err(|e| protocol_error(format!("connection failed during setup: {e}")))?;
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
}

/// Extranonce bytes our channel index takes under the pool's prefix (65,536 device channels).
pub const CHANNEL_INDEX_BYTES: u16 = 2;

/// The configured upstreams (`[[declarator.upstream]]`); errors name the key.
pub fn specs(
    config: &jdc_shared::config::DeclaratorConfig,
) -> Result<Vec<UpstreamSpec>, jdc_shared::config::ConfigError> {
    use jdc_shared::config::ConfigError;
    let timeout = Duration::from_secs(config.upstream_timeout_secs.max(1));
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
            })
        })
        .collect()
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
    tracing::info!(upstream = %name, pool = %spec.pool.address, jds = %spec.jds.address, mode = ?spec.jds.mode, "mining for the pool with our own templates");
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

/// Connects to the first upstream of the list that works (logging each failure with its
/// cause), but `skip` (the one that just failed), and whose extranonce space under its prefix
/// is `layout` bytes when given (devices keep their extranonce sizes across a switch). Returns
/// it with the failures met on the way, by position.
pub async fn connect_first(
    specs: &[UpstreamSpec],
    coinbase_tag: &str,
    layout: Option<u16>,
    skip: Option<usize>,
) -> (
    Option<(runner::Upstream, Vec<jdc_shared::bitcoin::TxOut>)>,
    Vec<(usize, String)>,
) {
    let mut failures = Vec::new();
    for (i, spec) in specs.iter().enumerate() {
        if skip == Some(i) {
            continue;
        }
        match connect_one(i, spec, coinbase_tag).await {
            Ok((up, outputs)) => match layout_mismatch(&up, layout) {
                None => return (Some((up, outputs)), failures),
                Some(why) => {
                    tracing::warn!(upstream = %up.name, reason = %why, "upstream unusable; trying the next");
                    failures.push((i, why));
                }
            },
            Err(e) => {
                tracing::warn!(upstream = i + 1, error = %e, "upstream unusable; trying the next");
                failures.push((i, e.to_string()));
            }
        }
    }
    if !specs.is_empty() {
        tracing::warn!("no upstream is usable: mining solo to our own payout");
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
