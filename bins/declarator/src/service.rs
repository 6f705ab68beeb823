//! Wiring: bus in (tips, selections), work book, downstream server, block submitter, bus out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jdc_shared::bus::{self, BusStats, Publisher, Received, Topic};
use jdc_shared::config::{Config, ConfigError};
use jdc_shared::messages::{BlockEvent, BlockStage, Event, Selection, Tip};
use jdc_shared::sv2::AuthorityKeys;
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::block::assemble;
use crate::downstream::{channel::FoundBlock, Server, ServerSettings};
use crate::node::Node;
use crate::payout::Payout;
use crate::work::{Catalog, WorkBook, WorkState};

/// Why the declarator stopped.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad configuration (exit code 2).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The authority key could not be loaded or created.
    #[error("authority key: {0}")]
    Keys(String),
    /// The bus could not be set up.
    #[error(transparent)]
    Bus(#[from] bus::BusError),
    /// The SV2 port could not be bound.
    #[error("cannot listen for devices on {addr}: {source}")]
    Listen {
        /// Address.
        addr: String,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// The RPC client could not be created.
    #[error(transparent)]
    Node(#[from] crate::node::NodeError),
}

/// Bytes of extranonce that identify a channel (65,536 concurrent channels).
const CHANNEL_INDEX_CHANNELS: u32 = 65_536;

/// Loads (or creates) the authority key of the SV2 server.
pub fn load_keys(config: &Config) -> Result<AuthorityKeys, RunError> {
    let (keys, generated) = AuthorityKeys::load_or_generate(&config.declarator.key_dir)
        .map_err(|e| RunError::Keys(e.to_string()))?;
    if generated {
        tracing::info!(
            dir = %config.declarator.key_dir.display(),
            public_key = %keys.public_key_string(),
            "generated a new authority key; give devices this public key"
        );
    }
    Ok(keys)
}

/// Runs the declarator until `shutdown`.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), RunError> {
    let network = config.network()?;
    let payout = Payout::new(config.declarator.payout_scripts(network)?).ok_or_else(|| {
        ConfigError::new("declarator.payout", "payout weights must not all be zero")
    })?;
    if config.declarator.coinbase_tag.len() > 32 {
        return Err(ConfigError::new("declarator.coinbase_tag", "at most 32 bytes").into());
    }
    let node = Node::new(&config)??;
    let keys = load_keys(&config)?;
    tracing::info!(public_key = %keys.public_key_string(), "authority public key");

    let stats = Arc::new(BusStats::default());
    let bind = config
        .bus
        .bind_endpoint("declarator", &config.bus.declarator)?;
    let (publisher, publisher_task) = Publisher::bind(
        &bind,
        config.bus.publisher_options("declarator"),
        stats.clone(),
        shutdown.clone(),
    )
    .await?;
    let (inbox, sub_tasks) = bus::subscribe(
        config
            .bus
            .subscribe_options(&["watcher", "selector"], &[Topic::Tip, Topic::Selection]),
        stats.clone(),
        shutdown.clone(),
    );

    let listener = TcpListener::bind(&config.declarator.listen)
        .await
        .map_err(|source| RunError::Listen {
            addr: config.declarator.listen.clone(),
            source,
        })?;
    tracing::info!(addr = %config.declarator.listen, "SV2 mining server listening");

    let rollable = config.declarator.rollable_extranonce_size.clamp(1, 16);
    let allocator = ExtranonceAllocator::new(vec![], (2 + rollable) as u8, CHANNEL_INDEX_CHANNELS)
        .map_err(|e| {
            ConfigError::new(
                "declarator.rollable_extranonce_size",
                format!("extranonce layout refused: {e:?}"),
            )
        })?;

    let (work_tx, work_rx) = watch::channel::<Option<WorkState>>(None);
    let (block_tx, block_rx) = mpsc::unbounded_channel();
    let catalog = Arc::new(Mutex::new(Catalog::default()));

    let server = Server::new(
        ServerSettings {
            cert_validity: Duration::from_secs(config.declarator.cert_validity_secs.max(60)),
            handshake_timeout: Duration::from_secs(config.declarator.handshake_timeout_secs.max(1)),
            shares_per_minute: config.declarator.shares_per_minute,
            share_batch_size: config.declarator.share_batch_size.max(1),
            coinbase_tag: config.declarator.coinbase_tag.clone(),
            max_connections: config.declarator.max_connections,
        },
        keys,
        work_rx,
        allocator,
        block_tx,
        publisher.clone(),
    );
    publisher.set_state("ok");

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server.serve(listener, shutdown.clone()));
    tasks.spawn(hub(
        inbox,
        WorkBook::new(network, payout),
        work_tx,
        catalog.clone(),
        stats.clone(),
        publisher.clone(),
    ));
    tasks.spawn(submitter(
        block_rx,
        catalog,
        Arc::new(node),
        publisher.clone(),
    ));

    shutdown.cancelled().await;
    tracing::info!("declarator stopping");
    let drain = async { while tasks.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(5), drain)
        .await
        .is_err()
    {
        tracing::warn!("tasks did not stop within 5 s; aborting them");
    }
    for t in sub_tasks {
        t.abort();
    }
    let _ = tokio::time::timeout(Duration::from_secs(2), publisher_task).await;
    Ok(())
}

/// Receives tips and selections and publishes the resulting work.
async fn hub(
    mut inbox: mpsc::Receiver<Received>,
    mut book: WorkBook,
    work: watch::Sender<Option<WorkState>>,
    catalog: Arc<Mutex<Catalog>>,
    stats: Arc<BusStats>,
    bus: Publisher,
) {
    while let Some(msg) = inbox.recv().await {
        let result = match msg.topic {
            Topic::Tip => match msg.decode::<Tip>() {
                Ok(tip) => {
                    let now = jdc_shared::time::now_micros();
                    tracing::debug!(
                        height = tip.height,
                        since_detected_us = now.saturating_sub(tip.detected_at_us),
                        since_sent_us = now.saturating_sub(msg.sent_at_us),
                        "tip received"
                    );
                    book.on_tip(&tip)
                }
                Err(e) => {
                    stats.count_malformed();
                    tracing::warn!(error = %e, "skipping malformed tip");
                    continue;
                }
            },
            Topic::Selection => match msg.decode::<Selection>() {
                Ok(sel) => book.on_selection(sel),
                Err(e) => {
                    stats.count_malformed();
                    tracing::warn!(error = %e, "skipping malformed selection");
                    continue;
                }
            },
            _ => continue,
        };
        match result {
            Ok(Some((state, body))) => {
                if let Ok(mut c) = catalog.lock() {
                    c.insert(Arc::new(body));
                }
                tracing::debug!(
                    height = state.tip.height,
                    kind = state.job.kind.as_str(),
                    txs = state.job.tx_count,
                    "new work"
                );
                work.send_replace(Some(state));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "refused work; devices keep the last valid job");
                let _ = bus.publish(
                    Topic::Event,
                    &Event {
                        level: "warn".into(),
                        kind: "selection-refused".into(),
                        message: e.to_string(),
                    },
                );
            }
        }
    }
}

/// Assembles and submits found blocks, one at a time, without blocking the runtime.
async fn submitter(
    mut blocks: mpsc::UnboundedReceiver<FoundBlock>,
    catalog: Arc<Mutex<Catalog>>,
    node: Arc<Node>,
    bus: Publisher,
) {
    while let Some(found) = blocks.recv().await {
        let body = catalog.lock().ok().and_then(|c| c.get(found.template_id));
        let Some(body) = body else {
            tracing::error!(
                template_id = found.template_id,
                "block found on a template no longer kept; cannot submit"
            );
            continue;
        };
        let block = match assemble(&body, &found.coinbase, found.solution, Some(found.hash)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot assemble block");
                continue;
            }
        };
        let hash = block.hash.to_string();
        let event = |stage, reason: String| BlockEvent {
            stage,
            height: body.height,
            hash: hash.clone(),
            tx_count: block.tx_count,
            reason,
        };
        let _ = bus.publish(Topic::Block, &event(BlockStage::Found, String::new()));
        let node = node.clone();
        let bytes = block.bytes;
        let answer = tokio::task::spawn_blocking(move || node.submit_block(&bytes)).await;
        match answer {
            Ok(Ok(None)) => {
                tracing::info!(height = body.height, %hash, txs = block.tx_count, "block accepted by bitcoind");
                let _ = bus.publish(Topic::Block, &event(BlockStage::Accepted, String::new()));
            }
            Ok(Ok(Some(reason))) => {
                tracing::warn!(height = body.height, %hash, %reason, "bitcoind refused the block");
                let _ = bus.publish(Topic::Block, &event(BlockStage::Rejected, reason));
            }
            Ok(Err(e)) => {
                tracing::error!(height = body.height, %hash, error = %e, "submitblock failed");
                let _ = bus.publish(Topic::Block, &event(BlockStage::Rejected, e.to_string()));
            }
            Err(e) => tracing::error!(error = %e, "submitblock task failed"),
        }
    }
}
