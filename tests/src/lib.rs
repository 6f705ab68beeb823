//! `jdc-tests`: support for end-to-end tests that run the jdc binaries as real processes.
//!
//! - [`bitcoind`]: a real regtest `bitcoind` on free ports with ZMQ notifications, killed on drop.
//! - [`device`]: a scripted SV2 mining device (one extended channel, blocks on demand).
//! - [`exposition`]: a strict checker of the Prometheus text format.
//! - [`jds`]: a strict test Job Declarator Server on SRI's crates.
//! - [`pool`]: a strict test pool (Mining protocol, SRI's server channel).
//! - [`sri_roles`]: SRI's reference roles as test peers (where they are, a solo jd_client_sv2).
//! - [`sv1_client`]: a scripted Stratum V1 device and the header arithmetic to solve its jobs.
//! - [`tdp_client`]: a Template Distribution client (for the template-watcher's TDP server).

pub mod bitcoind;
pub mod device;
pub mod exposition;
pub mod jds;
pub mod pool;
pub mod sri_roles;
pub mod sv1_client;
pub mod tdp_client;

/// Running the jdc binaries as processes.
pub mod stack;

/// Polls `f` (blocking, every 50 ms) until it returns `Some` or `timeout` passes; the error
/// names `what` was awaited.
pub fn wait_until<T>(
    what: &str,
    timeout: std::time::Duration,
    mut f: impl FnMut() -> anyhow::Result<Option<T>>,
) -> anyhow::Result<T> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Whether a test peer's session error is the client hanging up (a write to a closed socket).
pub(crate) fn peer_hung_up(error: &str) -> bool {
    [
        "Broken pipe",
        "Connection reset",
        "os error 32",
        "os error 104",
    ]
    .iter()
    .any(|s| error.contains(s))
}
