//! Wiring: bus in (tips, selections), work book, downstream server, block submitter, bus out.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jdc_shared::bitcoin::Network;
use jdc_shared::bus::{self, BusStats, Publisher, Received, Topic};
use jdc_shared::config::{Config, ConfigError};
use jdc_shared::messages::{BlockEvent, BlockStage, Event, Selection, Template, Tip};
use jdc_shared::sv2::AuthorityKeys;
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::block::assemble;
use crate::downstream::{channel::FoundBlock, Server, ServerLinks, ServerSettings};
use crate::node::Node;
use crate::payout::Payout;
use crate::templates::{TemplateStore, TemplateTxs};
use crate::work::{Catalog, PreparedSelection, WorkBook, WorkError, WorkState};

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

/// Found blocks waiting for `submitblock`. Real blocks are minutes apart; this bound only
/// matters on regtest, where a device can make every hash a block.
const BLOCK_QUEUE: usize = 256;

/// Accepted shares waiting for the upstream task.
const UPSTREAM_SHARE_QUEUE: usize = 4096;

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
    let specs = crate::upstream::specs(&config.declarator)?;
    let sv1_settings = crate::sv1::Sv1Settings::from_config(&config.declarator)?;
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
        config.bus.subscribe_options(
            &["watcher", "selector"],
            &[Topic::Tip, Topic::Template, Topic::Selection],
        ),
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
    let sv1_listener = match &sv1_settings {
        Some(settings) => {
            let listener = crate::sv1::bind(settings)
                .await
                .map_err(|source| RunError::Listen {
                    addr: settings.listen.clone(),
                    source,
                })?;
            tracing::info!(addr = %settings.listen, "Stratum V1 server listening");
            Some(listener)
        }
        None => {
            tracing::info!("Stratum V1 server off (declarator.sv1_listen is empty)");
            None
        }
    };

    // Mining for a pool: connect before serving devices, whose extranonces live under the
    // pool's prefix.
    let policy = crate::upstream::fallback::FallbackPolicy {
        hold_down: Duration::from_secs(config.declarator.upstream_hold_down_secs),
        probe_min: Duration::from_secs(config.declarator.upstream_probe_secs.max(1)),
        probe_max: Duration::from_secs(300),
    };
    let (upstream, failures) =
        crate::upstream::connect_first(&specs, &config.declarator.coinbase_tag, None, None).await;
    let rollable = config.declarator.rollable_extranonce_size.clamp(1, 16);
    let allocator = match &upstream {
        Some((up, _)) => {
            let ch = up.pool.channel();
            ExtranonceAllocator::from_upstream_prefix(
                ch.extranonce_prefix.clone(),
                vec![],
                (ch.extranonce_prefix.len() + usize::from(ch.extranonce_size)) as u8,
                CHANNEL_INDEX_CHANNELS,
            )
        }
        None => ExtranonceAllocator::new(vec![], (2 + rollable) as u8, CHANNEL_INDEX_CHANNELS),
    }
    .map_err(|e| {
        ConfigError::new(
            "declarator.rollable_extranonce_size",
            format!("extranonce layout refused: {e:?}"),
        )
    })?;
    let mut book = WorkBook::new(network, payout);
    if let Some((_, outputs)) = &upstream {
        book.set_pool_outputs(Some(outputs.clone()));
    }
    // Extranonce bytes under an upstream's prefix that our devices' layout takes: the first
    // pool's, or (starting solo) what we ask pools for.
    let layout = match &upstream {
        Some((up, _)) => up.pool.channel().extranonce_size,
        None => crate::upstream::CHANNEL_INDEX_BYTES + rollable,
    };
    let (shares_tx, shares_rx) = mpsc::channel(UPSTREAM_SHARE_QUEUE);
    let (switch_tx, switch_rx) = mpsc::unbounded_channel::<crate::upstream::runner::HubSwitch>();
    let (hashrate_tx, hashrate_rx) = watch::channel(0.0f32);

    let (work_tx, work_rx) = watch::channel::<Option<WorkState>>(None);
    let (block_tx, block_rx) = mpsc::channel(BLOCK_QUEUE);
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
        allocator,
        ServerLinks {
            work: work_rx,
            blocks: block_tx,
            bus: publisher.clone(),
            upstream_shares: (!specs.is_empty()).then_some(shares_tx),
            total_hashrate: hashrate_tx,
        },
    );
    publisher.set_state("ok");

    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(server.clone().serve(listener, shutdown.clone()));
    if let (Some(listener), Some(settings)) = (sv1_listener, sv1_settings) {
        tasks.spawn(crate::sv1::serve(
            server.clone(),
            listener,
            Arc::new(settings),
            Arc::new(crate::sv1::BadInput::new(publisher.clone())),
            shutdown.clone(),
        ));
    }
    if !specs.is_empty() {
        tasks.spawn(crate::upstream::runner::run(
            upstream.map(|(up, _)| up),
            layout,
            failures,
            crate::upstream::runner::RunnerLinks {
                work: work_tx.subscribe(),
                catalog: catalog.clone(),
                shares: shares_rx,
                switch: switch_tx,
                server: server.clone(),
                specs: specs.clone(),
                coinbase_tag: config.declarator.coinbase_tag.clone(),
                policy,
                hashrate: hashrate_rx,
                bus: publisher.clone(),
            },
            shutdown.clone(),
        ));
    }
    tasks.spawn(hub(Hub {
        inbox,
        book,
        network,
        work: work_tx,
        catalog: catalog.clone(),
        stats: stats.clone(),
        bus: publisher.clone(),
        switch: switch_rx,
        shutdown: shutdown.clone(),
    }));
    tasks.spawn(submitter(
        block_rx,
        catalog,
        Arc::new(node),
        publisher.clone(),
        shutdown.clone(),
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

/// What the hub works with.
struct Hub {
    /// Tips, templates and selections from the bus.
    inbox: mpsc::Receiver<Received>,
    book: WorkBook,
    network: Network,
    /// The work devices mine.
    work: watch::Sender<Option<WorkState>>,
    catalog: Arc<Mutex<Catalog>>,
    stats: Arc<BusStats>,
    bus: Publisher,
    /// The upstream changed: another pool, or solo.
    switch: mpsc::UnboundedReceiver<crate::upstream::runner::HubSwitch>,
    /// Stops the hub.
    shutdown: CancellationToken,
}

/// Receives tips, templates and selections and publishes the resulting work.
///
/// Tips are handled here at once. Templates (megabytes with a full mempool) are decoded on
/// bulk threads as they arrive, while the selector is still choosing; selections are decoded
/// and checked against their template on bulk threads too and come back prepared, so a tip
/// never waits behind either, whatever the mempool size.
async fn hub(hub: Hub) {
    let Hub {
        mut inbox,
        mut book,
        network,
        work,
        catalog,
        stats,
        bus,
        mut switch,
        shutdown,
    } = hub;
    let (prepared_tx, mut prepared_rx) = mpsc::unbounded_channel::<Prepared>();
    let (template_tx, mut template_rx) =
        mpsc::unbounded_channel::<Result<TemplateTxs, WorkError>>();
    let mut templates = TemplateStore::default();
    let mut last_template_seen: Option<u64> = None;
    let mut selections = Selections {
        network,
        stats: stats.clone(),
        done: prepared_tx,
        preparing: false,
        waiting: None,
        last_seen: None,
    };
    loop {
        let result = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            msg = inbox.recv() => {
                let Some(msg) = msg else { break };
                match msg.topic {
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
                    Topic::Template => {
                        decode_template(msg, &stats, &template_tx, &mut last_template_seen);
                        continue;
                    }
                    Topic::Selection => {
                        selections.offer(Pending::Encoded(msg), &templates);
                        continue;
                    }
                    _ => continue,
                }
            }
            decoded = template_rx.recv() => {
                let Some(decoded) = decoded else { break };
                match decoded {
                    Ok(t) => {
                        templates.insert(Arc::new(t));
                        selections.start_next(&templates);
                        continue;
                    }
                    Err(WorkError::Malformed) => continue,
                    Err(e) => Err(e),
                }
            }
            Some(to) = switch.recv() => {
                // The upstream changed: pay the new pool, or ourselves, from the current job on.
                let rebuild = match to {
                    crate::upstream::runner::HubSwitch::Solo(why) => {
                        tracing::debug!(reason = %why, "mining solo");
                        book.set_pool_outputs(None);
                        true
                    }
                    crate::upstream::runner::HubSwitch::Pool { name, outputs } => {
                        tracing::debug!(upstream = %name, "mining for the next upstream");
                        book.set_pool_outputs(Some(outputs));
                        true
                    }
                    crate::upstream::runner::HubSwitch::Rebuild(why) => {
                        tracing::info!(reason = %why, "new jobs for the current tip");
                        true
                    }
                    // The pool's outputs changed (the next mining job token's): the next job
                    // pays them, or the current one again now if it cannot be declared.
                    crate::upstream::runner::HubSwitch::Outputs { outputs, now } => {
                        book.change_pool_outputs(outputs) && now
                    }
                };
                let body = book.current().filter(|_| rebuild).and_then(|c| {
                    catalog.lock().ok().and_then(|cat| cat.get(c.job.template_id))
                });
                match body {
                    Some(body) => book.rebuild(&body),
                    None => Ok(None),
                }
            }
            prepared = prepared_rx.recv() => {
                let Some(prepared) = prepared else { break };
                selections.preparing = false;
                let result = match prepared {
                    Prepared::NeedsTemplate(sel) => {
                        tracing::debug!(selection = sel.id, template = sel.template_id, "selection waits for its template");
                        selections.park(sel);
                        Ok(None)
                    }
                    Prepared::Done(Err(WorkError::Malformed)) => Ok(None),
                    Prepared::Done(other) => other.and_then(|p| book.apply_selection(p)),
                };
                selections.start_next(&templates);
                result
            }
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
                let kind = match e {
                    WorkError::InvalidTemplate { .. } => "template-refused",
                    _ => "selection-refused",
                };
                tracing::warn!(error = %e, "refused work; devices keep the last valid job");
                let _ = bus.publish(
                    Topic::Event,
                    &Event {
                        level: "warn".into(),
                        kind: kind.into(),
                        message: e.to_string(),
                    },
                );
            }
        }
    }
}

/// Starts decoding a template on a bulk thread (re-sent duplicates are dropped unread).
fn decode_template(
    msg: Received,
    stats: &Arc<BusStats>,
    done: &mpsc::UnboundedSender<Result<TemplateTxs, WorkError>>,
    last_seen: &mut Option<u64>,
) {
    if let Some(id) = msg.peek_id() {
        if *last_seen == Some(id) {
            return;
        }
        *last_seen = Some(id);
    }
    let done = done.clone();
    let stats = stats.clone();
    let spawned = jdc_shared::priority::spawn_bulk("template-decode", move || {
        let decoded = match msg.decode::<Template>() {
            Ok(t) => TemplateTxs::from_template(t),
            Err(e) => {
                stats.count_malformed();
                tracing::warn!(error = %e, "skipping malformed template");
                Err(WorkError::Malformed)
            }
        };
        let _ = done.send(decoded);
    });
    if let Err(e) = spawned {
        tracing::error!(error = %e, "cannot start a thread to decode the template");
    }
}

/// A selection not yet prepared.
enum Pending {
    /// As received from the bus.
    Encoded(Received),
    /// Decoded, waiting for its template.
    Decoded(Selection),
}

/// What a bulk thread makes of a selection.
enum Prepared {
    /// Checked and hashed, or refused.
    Done(Result<PreparedSelection, WorkError>),
    /// Its template has not arrived (yet).
    NeedsTemplate(Selection),
}

/// Selections are prepared one at a time, newest wins: at most one waits behind the one
/// being prepared, and at most one waits for its template.
struct Selections {
    network: Network,
    stats: Arc<BusStats>,
    done: mpsc::UnboundedSender<Prepared>,
    preparing: bool,
    waiting: Option<Pending>,
    last_seen: Option<u64>,
}

impl Selections {
    /// A selection from the bus (re-sent duplicates are dropped unread).
    fn offer(&mut self, pending: Pending, templates: &TemplateStore) {
        if let Pending::Encoded(msg) = &pending {
            if let Some(id) = msg.peek_id() {
                if self.last_seen == Some(id) {
                    return;
                }
                self.last_seen = Some(id);
            }
        }
        self.waiting = Some(pending);
        self.start_next(templates);
    }

    /// Keeps a decoded selection until its template arrives (a newer selection replaces it).
    fn park(&mut self, sel: Selection) {
        if self.waiting.is_none() {
            self.waiting = Some(Pending::Decoded(sel));
        }
    }

    /// Starts preparing the waiting selection if none is being prepared and, for a decoded
    /// one, its template is here.
    fn start_next(&mut self, templates: &TemplateStore) {
        if self.preparing {
            return;
        }
        if let Some(Pending::Decoded(sel)) = &self.waiting {
            if !templates.contains(sel.template_id) {
                return;
            }
        }
        let Some(pending) = self.waiting.take() else {
            return;
        };
        let network = self.network;
        let stats = self.stats.clone();
        let done = self.done.clone();
        let template_of = {
            // The few kept templates, for the thread to look the selection's up.
            let kept: Vec<Arc<TemplateTxs>> = templates.all();
            move |id: u64| kept.iter().find(|t| t.id == id).cloned()
        };
        // Decoding and hashing a large selection is bulk work: a lower-priority thread, so
        // the next tip is handled first.
        let spawned = jdc_shared::priority::spawn_bulk("selection-prep", move || {
            let sel = match pending {
                Pending::Decoded(sel) => sel,
                Pending::Encoded(msg) => match msg.decode::<Selection>() {
                    Ok(sel) => sel,
                    Err(e) => {
                        stats.count_malformed();
                        tracing::warn!(error = %e, "skipping malformed selection");
                        let _ = done.send(Prepared::Done(Err(WorkError::Malformed)));
                        return;
                    }
                },
            };
            let prepared = match template_of(sel.template_id) {
                Some(template) => {
                    Prepared::Done(PreparedSelection::prepare(sel, template, network))
                }
                None => Prepared::NeedsTemplate(sel),
            };
            let _ = done.send(prepared);
        });
        match spawned {
            Ok(_) => self.preparing = true,
            Err(e) => tracing::error!(error = %e, "cannot start a thread to prepare the selection"),
        }
    }
}

/// Assembles and submits found blocks, one at a time, without blocking the runtime. On
/// shutdown, the blocks already found are still submitted, then it stops.
async fn submitter(
    mut blocks: mpsc::Receiver<FoundBlock>,
    catalog: Arc<Mutex<Catalog>>,
    node: Arc<Node>,
    bus: Publisher,
    shutdown: CancellationToken,
) {
    loop {
        let found = tokio::select! {
            found = blocks.recv() => found,
            _ = shutdown.cancelled() => blocks.try_recv().ok(),
        };
        let Some(found) = found else { return };
        let body = catalog.lock().ok().and_then(|c| c.get(found.template_id));
        let Some(body) = body else {
            tracing::error!(
                template_id = found.template_id,
                "block found on a template no longer kept; cannot submit"
            );
            let reason = format!("template {} no longer kept", found.template_id);
            let _ = bus.publish(Topic::Block, &unsubmitted(0, &found, 0, reason));
            continue;
        };
        let block = match assemble(&body, &found.coinbase, found.solution, Some(found.hash)) {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "cannot assemble block");
                let tx_count =
                    u32::try_from(body.txids.len().saturating_add(1)).unwrap_or(u32::MAX);
                let event = unsubmitted(body.height, &found, tx_count, e.to_string());
                let _ = bus.publish(Topic::Block, &event);
                continue;
            }
        };
        let hash = block.hash.to_string();
        let event = |stage, reason: String, failed| BlockEvent {
            stage,
            height: body.height,
            hash: hash.clone(),
            tx_count: block.tx_count,
            reason,
            submitted: true,
            failed,
        };
        // Published as the block is handed to submitblock: `found`, `submitted`.
        let _ = bus.publish(
            Topic::Block,
            &event(BlockStage::Found, String::new(), false),
        );
        let node = node.clone();
        let bytes = block.bytes;
        let answer = tokio::task::spawn_blocking(move || node.submit_block(&bytes)).await;
        match answer {
            Ok(Ok(None)) => {
                tracing::info!(height = body.height, %hash, txs = block.tx_count, "block accepted by bitcoind");
                let _ = bus.publish(
                    Topic::Block,
                    &event(BlockStage::Accepted, String::new(), false),
                );
            }
            Ok(Ok(Some(reason))) => {
                tracing::warn!(height = body.height, %hash, %reason, "bitcoind refused the block");
                let _ = bus.publish(Topic::Block, &event(BlockStage::Rejected, reason, false));
            }
            Ok(Err(e)) => {
                tracing::error!(height = body.height, %hash, error = %e, "submitblock failed");
                let _ = bus.publish(
                    Topic::Block,
                    &event(BlockStage::Rejected, e.to_string(), true),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "submitblock task failed");
                let _ = bus.publish(
                    Topic::Block,
                    &event(BlockStage::Rejected, e.to_string(), true),
                );
            }
        }
    }
}

/// A found block that cannot be handed to `submitblock`, and why (`height` and `tx_count` 0
/// when unknown).
fn unsubmitted(height: u32, found: &FoundBlock, tx_count: u32, reason: String) -> BlockEvent {
    BlockEvent {
        stage: BlockStage::Found,
        height,
        hash: found.hash.to_string(),
        tx_count,
        reason,
        submitted: false,
        failed: false,
    }
}
