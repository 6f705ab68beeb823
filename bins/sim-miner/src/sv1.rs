//! Stratum V1 mode (`--protocol sv1`): JSON-RPC lines over plain TCP to an SV1 pool or proxy
//! port, hashed on the same threads and reported with the same events as SV2.
//!
//! - [`message`]: the lines sent and the typed reading of the lines received.
//! - [`job`]: the connection's jobs, the work they give and the submissions (pure).
//! - [`session`]: the I/O shell of one connection.
//!
//! Events map as follows: `connected` (`authenticated: false`) once `mining.subscribe` is
//! answered; `channel-opened` (`channel_id` 0, kind `sv1`, `extranonce_prefix` = extranonce1,
//! `extranonce_size` = extranonce2 size) once authorized; `new-job` per `mining.notify` (job ids
//! are local numbers, the server's ids are in the debug log) and `set-new-prev-hash` when its
//! prevhash is new; `set-target` per `mining.set_difficulty`; `set-extranonce-prefix` per
//! `mining.set_extranonce`; `share-submitted` / `share-accepted` / `share-rejected` (with the
//! server's error message) / `block-candidate` per `mining.submit`; `channel-error` when
//! `mining.authorize` is refused.

use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::events::Events;
use crate::runner::{supervise, MinerError};

pub mod job;
pub mod message;
pub mod session;

/// Validated SV1 miner settings.
#[derive(Debug, Clone)]
pub struct Sv1Config {
    /// `HOST:PORT` of the server.
    pub server: String,
    /// Worker name for `mining.authorize` and `mining.submit`.
    pub user: String,
    /// Password for `mining.authorize`.
    pub password: String,
    /// Whether to ask for version rolling with `mining.configure`.
    pub version_rolling: bool,
    /// Hashing threads.
    pub threads: usize,
    /// Submission cap (0 = unlimited).
    pub max_shares_per_sec: f64,
    /// Timeout for connecting and for the replies to configure, subscribe and authorize.
    pub timeout: Duration,
}

/// Mines on an SV1 server until `shutdown`, reconnecting with backoff (100 ms doubling to 5 s)
/// whenever the connection ends.
pub async fn run(
    config: Sv1Config,
    events: Arc<Events>,
    shutdown: CancellationToken,
) -> Result<(), MinerError> {
    tracing::info!(
        server = %config.server,
        protocol = "sv1",
        user = %config.user,
        version_rolling = config.version_rolling,
        threads = config.threads,
        max_shares_per_sec = config.max_shares_per_sec,
        "sim-miner starting"
    );
    let sv1 = session::Sv1::new(&config, &events);
    supervise(
        &sv1,
        config.threads,
        config.max_shares_per_sec,
        &events,
        &shutdown,
    )
    .await
}
