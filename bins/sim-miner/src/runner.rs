//! What both protocols share around their connections: the hashing threads, one connection
//! at a time with reconnect backoff, the `disconnected` event and the hash-rate log.

use std::fmt::Display;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Interval;
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Events};
use crate::hasher::{FoundShare, Hashers};

/// Found shares waiting for the connection; hashers wait when it is full.
const SHARE_QUEUE: usize = 1024;
/// Reconnect backoff bounds.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Hash-rate log interval.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// Why the miner stopped for good.
#[derive(Debug, thiserror::Error)]
pub enum MinerError {
    /// Hashing threads could not be started.
    #[error("cannot start hashing threads: {0}")]
    Threads(std::io::Error),
}

/// One connection of a protocol, as [`supervise`] repeats it.
pub(crate) trait Connection {
    /// Why a connection ended.
    type Error: Display;

    /// Runs connection number `id` (shares of older ones must be dropped). `Ok` only on
    /// shutdown. Sets `connected` once the server has answered the setup: only then does the
    /// end count as a disconnection (an event, and the backoff starts over).
    async fn run(
        &self,
        id: u64,
        hashers: &Hashers,
        shares: &mut mpsc::Receiver<FoundShare>,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), Self::Error>;
}

/// Mines until `shutdown`: starts the hashing threads and runs `connection` again whenever it
/// ends, with backoff (100 ms doubling to 5 s, reset after a connection that got set up).
pub(crate) async fn supervise(
    connection: &impl Connection,
    threads: usize,
    max_shares_per_sec: f64,
    events: &Events,
    shutdown: &CancellationToken,
) -> Result<(), MinerError> {
    // Bounded: with no submission limit the hashers wait for the connection to catch up
    // (as a device waits for its link) rather than queueing shares in memory without end.
    let (tx, mut shares) = mpsc::channel(SHARE_QUEUE);
    let hashers = Hashers::start(threads, max_shares_per_sec, tx).map_err(MinerError::Threads)?;
    let mut backoff = BACKOFF_MIN;
    let mut session_id = 0u64;
    loop {
        session_id += 1;
        let mut connected = false;
        let result = connection
            .run(session_id, &hashers, &mut shares, shutdown, &mut connected)
            .await;
        hashers.publish(None);
        match result {
            Ok(()) => break,
            Err(e) => {
                if connected {
                    tracing::warn!(error = %e, "disconnected; reconnecting");
                    events.emit(Event::Disconnected {
                        reason: e.to_string(),
                    });
                    backoff = BACKOFF_MIN;
                } else {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "connection attempt failed");
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(backoff) => {}
            _ = shutdown.cancelled() => break,
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
    tracing::info!(hashes = hashers.hashes(), "sim-miner stopping");
    // Hashers waiting on a full queue give up once it is gone.
    drop(shares);
    let _ = tokio::task::spawn_blocking(move || hashers.stop()).await;
    Ok(())
}

/// The periodic `mining` log line of a connection (hash rate and shares sent).
pub(crate) struct Stats {
    interval: Interval,
    last_hashes: u64,
}

impl Stats {
    /// Starts counting from the hashes done so far.
    pub(crate) fn new(hashers: &Hashers) -> Self {
        let start = tokio::time::Instant::now() + STATS_EVERY;
        Self {
            interval: tokio::time::interval_at(start, STATS_EVERY),
            last_hashes: hashers.hashes(),
        }
    }

    /// Waits for the next log time.
    pub(crate) async fn tick(&mut self) {
        self.interval.tick().await;
    }

    /// Logs the hash rate since the last line and `shares` sent on this connection.
    pub(crate) fn log(&mut self, hashers: &Hashers, shares: u32) {
        let now = hashers.hashes();
        let rate = now.saturating_sub(self.last_hashes) as f64 / STATS_EVERY.as_secs_f64();
        self.last_hashes = now;
        tracing::info!(hash_rate = format!("{:.0} H/s", rate), shares, "mining");
    }
}
