//! Shutdown signalling: SIGINT and SIGTERM cancel one token that every task watches.

use tokio_util::sync::CancellationToken;

/// Returns a token cancelled on the first SIGINT or SIGTERM. A second signal exits at once
/// with 128 + signal number.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let first = wait_for_signal().await;
        tracing::info!(
            signal = first,
            "shutdown requested; draining (send again to force)"
        );
        t.cancel();
        let second = wait_for_signal().await;
        tracing::warn!(signal = second, "second signal: exiting now");
        std::process::exit(128 + second);
    });
    token
}

#[cfg(unix)]
async fn wait_for_signal() -> i32 {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, "cannot install SIGTERM handler; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
            return 2;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => 2,
        _ = term.recv() => 15,
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() -> i32 {
    let _ = tokio::signal::ctrl_c().await;
    2
}
