//! `jdc-template-watcher`: watches bitcoind and publishes, on the `watcher` bus stream, a
//! [`Tip`](jdc_shared::messages::Tip) the moment a new block arrives (before any
//! `getblocktemplate`), then the block [`Template`](jdc_shared::messages::Template) built on it,
//! and refreshed templates when the mempool changes (debounced).
//!
//! Layout (pure cores are unit-tested without I/O):
//! - [`gbt`] (pure): `getblocktemplate` JSON → `Template`, `getblockheader` → `Tip`.
//! - [`chain_model`] (pure): recent blocks' facts; a connected block → the next `Tip`
//!   without RPC.
//! - [`debounce`] (pure): when a mempool refresh is due.
//! - [`health`]: bitcoind state machine (pure) and the poll backstop task.
//! - [`node`]: blocking RPC clients, one per role, run on the blocking pool.
//! - [`http`]: the HTTP transport under them, fast on large answers.
//! - [`zmq_feed`]: ZMQ `hashblock`/`sequence` subscriber (proves a connected block's parent).
//! - [`tips`]: the tip path (from the chain model without RPC, or one `getblockheader`; then
//!   publish, then grow the model).
//! - [`templates`]: the template path (`getblocktemplate`, parse, publish).
//!
//! Tasks and channels:
//! ```text
//! zmq_feed ──hashblock──▶ tips ──Tip──▶ bus        poll (health) ──best hash──▶ tips
//!     └──mempool A/R──▶ templates ◀──new tip── tips      templates ──Template──▶ bus
//! ```
#![forbid(unsafe_code)]

pub mod chain_model;
pub mod debounce;
pub mod gbt;
pub mod health;
pub mod http;
pub mod node;
pub mod tdp;
pub mod templates;
pub mod tips;
pub mod zmq_feed;

use jdc_shared::bus::{BusError, BusStats, Publisher};
use jdc_shared::config::{Config, ConfigError};
use std::sync::atomic::AtomicU32;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long tasks get to stop after shutdown.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the watcher stopped.
#[derive(Debug, thiserror::Error)]
pub enum WatcherError {
    /// The configuration is unusable (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The bus publisher could not start.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// The ZMQ subscription could not be set up.
    #[error(transparent)]
    Feed(#[from] zmq_feed::FeedError),
    /// The Template Distribution server could not start.
    #[error("Template Distribution server: {0}")]
    Tdp(String),
    /// A task stopped before shutdown was requested.
    #[error("the {0} task stopped unexpectedly")]
    TaskStopped(&'static str),
}

/// Runs the watcher until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), WatcherError> {
    let network = config.network()?;
    let target = Arc::new(node::RpcTarget {
        url: config.bitcoind.rpc_url(network),
        auth: config.bitcoind.rpc_auth()?,
        timeout: Duration::from_millis(config.bitcoind.rpc_timeout_ms.max(1)),
    });
    let watcher = &config.template_watcher;
    let poll_interval = Duration::from_millis(watcher.tip_poll_interval_ms.max(10));
    let min_interval = Duration::from_millis(watcher.mempool_refresh_min_interval_ms);
    tracing::info!(
        network = %network,
        rpc = %target.describe(),
        tip_poll_interval_ms = poll_interval.as_millis() as u64,
        mempool_refresh_min_interval_ms = min_interval.as_millis() as u64,
        "starting template-watcher"
    );

    // Everything below stops on `stop`: the caller's shutdown, or a task dying early.
    let stop = shutdown.child_token();
    let bind = config.bus.bind_endpoint("watcher", &config.bus.watcher)?;
    let (publisher, publisher_task) = Publisher::bind(
        &bind,
        config.bus.publisher_options("watcher"),
        Arc::new(BusStats::default()),
        stop.clone(),
    )
    .await?;

    let (cand_tx, cand_rx) = mpsc::channel(256);
    let (tips_tx, tips_rx) = mpsc::channel(64);
    let (state_tx, state_rx) = watch::channel(health::NodeState::Waiting);
    let probe_now = Arc::new(Notify::new());
    let mempool_changed = Arc::new(Notify::new());
    let version = Arc::new(AtomicU32::new(gbt::DEFAULT_VERSION));
    let announced = Arc::new(tips::Announced::default());

    let feed_stats = Arc::new(zmq_feed::FeedStats::default());
    let feed = zmq_feed::start(
        zmq_feed::FeedTask {
            hashblock: config.bitcoind.zmq_hashblock.clone(),
            sequence: config.bitcoind.zmq_sequence.clone(),
            candidates: cand_tx.clone(),
            mempool_changed: mempool_changed.clone(),
            probe_now: probe_now.clone(),
            stats: feed_stats.clone(),
        },
        stop.clone(),
    )?;

    let mut tasks: JoinSet<&'static str> = JoinSet::new();
    // The optional Template Distribution server.
    if let Some(settings) = tdp::TdpSettings::from_config(&config)? {
        let (keys, generated) =
            jdc_shared::sv2::AuthorityKeys::load_or_generate(&config.template_watcher.tdp_key_dir)
                .map_err(|e| WatcherError::Tdp(format!("authority key: {e}")))?;
        if generated {
            tracing::info!(dir = %config.template_watcher.tdp_key_dir.display(), "generated a new TDP authority key");
        }
        let cannot_listen = |e: std::io::Error| {
            WatcherError::Tdp(format!("cannot listen on {}: {e}", settings.listen))
        };
        let listener = std::net::TcpListener::bind(&settings.listen).map_err(cannot_listen)?;
        listener.set_nonblocking(true).map_err(cannot_listen)?;
        tracing::info!(addr = %settings.listen, public_key = %keys.public_key_string(), "Template Distribution server listening");
        let server = tdp::start(
            config.clone(),
            listener,
            settings,
            keys,
            node::Node::new(target.clone()),
            publisher.clone(),
            stop.clone(),
        )
        .map_err(|e| WatcherError::Tdp(format!("cannot start its thread: {e}")))?;
        tasks.spawn(async move {
            if tokio::task::spawn_blocking(move || server.join())
                .await
                .map_or(true, |joined| joined.is_err())
            {
                tracing::error!("the TDP server thread failed");
            }
            "tdp"
        });
    }
    // bitcoind's ZMQ counters ride on our heartbeats (jdc-metrics reads them).
    let (counters, s) = (publisher.clone(), stop.clone());
    tasks.spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                _ = s.cancelled() => return "counters",
                _ = every.tick() => feed_stats.publish_to(&counters),
            }
        }
    });
    tasks.spawn(async move {
        feed.await;
        "zmq"
    });
    let poll = health::PollTask {
        node: node::Node::new(target.clone()),
        network,
        publisher: publisher.clone(),
        interval: poll_interval,
        state_tx,
        candidates: cand_tx,
        probe_now: probe_now.clone(),
        refresh: mempool_changed.clone(),
    };
    let s = stop.clone();
    tasks.spawn(async move {
        health::poll_task(poll, s).await;
        "poll"
    });
    let tip_task = tips::TipTask {
        node: node::Node::new(target.clone()),
        publisher: publisher.clone(),
        network,
        state: state_rx.clone(),
        version: version.clone(),
        announced: announced.clone(),
        probe_now,
        templates: tips_tx,
    };
    let s = stop.clone();
    tasks.spawn(async move {
        tips::tip_task(tip_task, cand_rx, s).await;
        "tip"
    });
    let template_task = templates::TemplateTask {
        tip_node: node::Node::new(target.clone()),
        mempool_node: node::Node::new(target),
        publisher,
        network,
        state: state_rx,
        version,
        announced,
        mempool_changed,
        min_interval,
        template_after_tip_delay: Duration::from_millis(watcher.template_after_tip_delay_ms),
    };
    let s = stop.clone();
    tasks.spawn(async move {
        templates::template_task(template_task, tips_rx, s).await;
        "template"
    });

    let mut result = Ok(());
    tokio::select! {
        _ = stop.cancelled() => {}
        Some(done) = tasks.join_next() => {
            let name = done.unwrap_or("a");
            if !stop.is_cancelled() {
                tracing::error!(task = name, "task stopped unexpectedly; shutting down");
                result = Err(WatcherError::TaskStopped(name));
            }
            stop.cancel();
        }
    }
    let drain = async {
        while tasks.join_next().await.is_some() {}
        let _ = publisher_task.await;
    };
    if tokio::time::timeout(DRAIN_TIMEOUT, drain).await.is_err() {
        tracing::warn!(timeout = ?DRAIN_TIMEOUT, "tasks did not stop in time; abandoning them");
    }
    tracing::info!("template-watcher stopped");
    result
}
