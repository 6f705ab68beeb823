//! `jdc-metrics`: the stack's Prometheus exporter and health endpoint, fed only by the bus.
//!
//! Subscribes to every topic of the `watcher`, `selector` and `declarator` streams and serves
//! `GET /metrics` and `GET /healthz` on `metrics.listen`.
//!
//! - [`registry`]: metric definitions and the pure update logic.
//! - [`health`]: per-process liveness from heartbeats.
//! - [`http`]: the HTTP routes.
//! - [`run`]: the I/O shell (bus subscription, HTTP listener, shutdown).
#![forbid(unsafe_code)]

pub mod health;
pub mod http;
pub mod registry;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use jdc_shared::bus::{self, BusStats};
use jdc_shared::config::{Config, ConfigError};
use jdc_shared::time::now_micros;
use tokio_util::sync::CancellationToken;

use health::HealthReport;
use registry::Metrics;

/// The streams (and so the processes) watched.
pub const STREAMS: [&str; 3] = ["watcher", "selector", "declarator"];

/// Topics read: every one but the full `template` (megabytes; its `summary` says enough).
pub use jdc_shared::monitor::TOPICS;

/// Why the metrics process stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The configuration is unusable (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP address could not be bound.
    #[error("cannot listen on {addr} (metrics.listen): {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The HTTP server failed.
    #[error("HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// State shared by the bus loop and the HTTP handlers.
#[derive(Debug)]
pub struct Shared {
    metrics: Mutex<Metrics>,
    stats: Arc<BusStats>,
    down_after_ms: u64,
}

impl Shared {
    /// Fresh state for the given processes.
    pub fn new(processes: &[&str], stats: Arc<BusStats>, down_after_ms: u64) -> Shared {
        Shared {
            metrics: Mutex::new(Metrics::new(processes)),
            stats,
            down_after_ms,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Metrics> {
        // A panic while holding the lock cannot leave the counters inconsistent in a way
        // that matters more than serving them.
        self.metrics.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Handles one bus message; an undecodable body is counted malformed and skipped.
    pub fn handle(&self, msg: &bus::Received) {
        if let Err(e) = self.lock().handle(msg, now_micros()) {
            self.stats.count_malformed();
            tracing::warn!(stream = %msg.stream, "skipping malformed bus message: {e}");
        }
    }

    /// The `/metrics` body.
    pub fn render_metrics(&self) -> Result<String, std::fmt::Error> {
        self.lock()
            .render(now_micros(), self.down_after_ms, &self.stats)
    }

    /// The `/healthz` answer.
    pub fn health_report(&self) -> HealthReport {
        self.lock()
            .health()
            .report(now_micros(), self.down_after_ms)
    }
}

/// Runs until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    // All of this process is bulk work (serving metrics): the tip path of the other processes
    // runs first when the CPU is short.
    jdc_shared::priority::lower_process(jdc_shared::priority::BULK_NICE);
    let addr: SocketAddr = config.metrics.listen.parse().map_err(|e| {
        ConfigError::new(
            "metrics.listen",
            format!(
                "`{}` is not an IP:PORT address ({e})",
                config.metrics.listen
            ),
        )
    })?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| RunError::Listen { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let stats = Arc::new(BusStats::default());
    let shared = Arc::new(Shared::new(
        &STREAMS,
        stats.clone(),
        config.metrics.down_after_ms,
    ));
    let (mut rx, bus_tasks) = bus::subscribe(
        config.bus.subscribe_options(&STREAMS, &TOPICS),
        stats,
        shutdown.clone(),
    );
    let mut server = tokio::spawn(http::serve(listener, shared.clone(), shutdown.clone()));
    tracing::info!(
        listen = %local,
        watcher = %config.bus.watcher,
        selector = %config.bus.selector,
        declarator = %config.bus.declarator,
        "jdc-metrics listening: serving /metrics and /healthz"
    );
    let mut result = Ok(());
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(msg) => shared.handle(&msg),
                None => break,
            },
            served = &mut server => {
                result = match served {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(RunError::Serve(e)),
                    Err(e) => Err(RunError::Serve(std::io::Error::other(e))),
                };
                break;
            }
            _ = shutdown.cancelled() => break,
        }
    }
    tracing::info!("jdc-metrics stopping");
    shutdown.cancel();
    let mut tasks: Vec<_> = bus_tasks;
    if !server.is_finished() {
        tasks.push(tokio::spawn(async move {
            if let Ok(Err(e)) = server.await {
                tracing::warn!(error = %e, "HTTP server stopped with an error");
            }
        }));
    }
    for task in tasks {
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("a task did not stop within 5 s");
        }
    }
    result
}
