//! Mining for a pool with our own templates (issue 4, in progress; not yet wired into the
//! service, which still mines solo):
//!
//! - [`jds`]: Job Declarator Server client (tokens ahead, declarations, missing transactions).
//! - [`pool`]: the pool's Mining protocol client (one extended channel, custom jobs, shares).
//! - [`declare`]: a job as `DeclareMiningJob` + `SetCustomMiningJob` with the pool's outputs.
//! - [`held_shares`]: shares of a declared job held until the pool acknowledges it.
//! - [`fallback`]: which upstream to mine for, when to fall back and when to return.

pub mod declare;
pub mod fallback;
pub mod held_shares;
pub mod jds;
pub mod pool;

use std::time::Duration;

use jdc_shared::sv2::{Message, Sv2Error, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::Str0255Owned;
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::parsers_sv2::CommonMessagesOwned;

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

/// Sends `SetupConnection` for `protocol` with `flags` and waits for the answer; returns the
/// flags of `SetupConnection.Success`.
pub(crate) async fn setup_connection(
    upstream: &str,
    endpoint: (&str, u16),
    protocol: Protocol,
    flags: u32,
    reader: &mut Sv2Reader,
    writer: &mut Sv2Writer,
    timeout: Duration,
) -> Result<u32, UpstreamError> {
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
        Message::Common(CommonMessagesOwned::SetupConnectionSuccess(ok)) => Ok(ok.flags),
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
