//! The optional SV2 Template Distribution server (`template_watcher.tdp_listen`): any SV2
//! software (a pool, a JDC) takes templates from plain bitcoind through it.
//!
//! It follows the watcher's own bus stream (tips first, then templates), so it sees exactly
//! what the bus carries, as soon as it is published. Tips go to clients as they come;
//! templates are decoded and prepared once for all clients ([`prepared`]), off the watcher's
//! thread, and not at all while no client is connected. Each client is a task with its own
//! [`session::Session`] behind a Noise NX responder with the TDP server's authority key; a
//! client that falls behind skips to the latest tip and template, and a broken one is dropped
//! alone. `SubmitSolution` becomes a full block for `submitblock`. What the server does is
//! counted in the watcher's heartbeat counters (`tdp_*`, exported by jdc-metrics).

pub mod prepared;
pub mod session;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jdc_shared::bus::{self, BusStats, Publisher, Received, Topic};
use jdc_shared::config::{Config, ConfigError};
use jdc_shared::messages::Template;
use jdc_shared::metric_names::counters;
use jdc_shared::sv2::{self, AuthorityKeys, Sv2Error, Sv2Writer};
use stratum_core::binary_sv2::Str0255Owned;
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionSuccessOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, TemplateDistributionOwned};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::node::Node;
use prepared::PreparedTemplate;
use session::{Feed, Session};

/// Time a client has for the handshake and `SetupConnection`.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// A client that does not take our writes within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message a client may send (a `SubmitSolution` carries a coinbase: < 64 KiB).
const MAX_CLIENT_PAYLOAD: usize = 70_000;
/// Most clients at once.
const MAX_CLIENTS: usize = 256;

/// The TDP server's settings.
#[derive(Debug, Clone)]
pub struct TdpSettings {
    /// Listening address.
    pub listen: String,
    /// Certificate validity.
    pub cert_validity: Duration,
    /// Fee increase that makes a refresh worth sending, satoshis.
    pub fee_delta: u64,
}

impl TdpSettings {
    /// The settings, `None` when `tdp_listen` is empty; errors name the key.
    pub fn from_config(c: &Config) -> Result<Option<Self>, ConfigError> {
        let w = &c.template_watcher;
        if w.tdp_listen.trim().is_empty() {
            return Ok(None);
        }
        if w.tdp_listen.parse::<SocketAddr>().is_err() {
            return Err(ConfigError::new(
                "template_watcher.tdp_listen",
                format!("{:?} is not host:port (e.g. 127.0.0.1:8442)", w.tdp_listen),
            ));
        }
        Ok(Some(Self {
            listen: w.tdp_listen.clone(),
            cert_validity: Duration::from_secs(w.tdp_cert_validity_secs.max(60)),
            fee_delta: w.tdp_fee_delta_sats,
        }))
    }
}

/// Why a TDP client was dropped.
#[derive(Debug, thiserror::Error)]
pub enum TdpClientError {
    /// Transport, handshake or framing.
    #[error(transparent)]
    Transport(#[from] Sv2Error),
    /// The client broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The client stopped reading.
    #[error("client stopped reading: a write did not complete within {0:?}")]
    WriteTimeout(Duration),
}

/// What the server does, kept in the watcher's heartbeat counters: `tdp_clients` (connected
/// now) and monotonic totals of templates sent, solutions and dropped clients.
pub struct TdpStats {
    bus: Publisher,
    clients: AtomicU64,
    /// Woken when a client connects (templates are prepared only for someone).
    joined: Notify,
}

impl TdpStats {
    /// Stats published through `bus`'s heartbeats, starting at zero clients.
    pub fn new(bus: Publisher) -> Self {
        bus.set_counter(counters::TDP_CLIENTS, 0);
        Self {
            bus,
            clients: AtomicU64::new(0),
            joined: Notify::new(),
        }
    }

    fn connected(&self) -> u64 {
        self.clients.load(Ordering::Relaxed)
    }

    fn client_joined(&self) {
        let n = self.clients.fetch_add(1, Ordering::Relaxed) + 1;
        self.bus.set_counter(counters::TDP_CLIENTS, n);
        self.joined.notify_one();
    }

    fn client_left(&self) {
        let n = self
            .clients
            .fetch_sub(1, Ordering::Relaxed)
            .saturating_sub(1);
        self.bus.set_counter(counters::TDP_CLIENTS, n);
    }

    fn count(&self, name: &'static str) {
        self.bus.add_to_counter(name, 1);
    }

    /// Counts the templates among messages sent to a client.
    fn sent(&self, msgs: &[AnyMessageOwned]) {
        for m in msgs {
            if let AnyMessageOwned::TemplateDistribution(TemplateDistributionOwned::NewTemplate(
                t,
            )) = m
            {
                self.count(if t.future_template {
                    counters::TDP_TEMPLATES_FUTURE
                } else {
                    counters::TDP_TEMPLATES_FULL
                });
            }
        }
    }
}

/// A connected client, counted while it lives.
struct ClientSlot(Arc<TdpStats>);

impl ClientSlot {
    fn new(stats: Arc<TdpStats>) -> Self {
        stats.client_joined();
        Self(stats)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        self.0.client_left();
    }
}

/// Starts the server on a thread of its own (its own single-threaded runtime), so that no
/// amount of client work (handshakes, megabytes of transaction data to encrypt) can delay
/// the watcher's tip path; it runs until `shutdown`. `listener` must be non-blocking.
pub fn start(
    config: Config,
    listener: std::net::TcpListener,
    settings: TdpSettings,
    keys: AuthorityKeys,
    node: Arc<Node>,
    bus: Publisher,
    shutdown: CancellationToken,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("tdp".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => {
                        serve(config, listener, settings, keys, node, bus, shutdown).await
                    }
                    Err(e) => tracing::error!(error = %e, "TDP: cannot use the listening socket"),
                }
            })
        })
}

/// Runs the server until `shutdown`: follows the bus stream at `bus_endpoint` and serves
/// clients on `listener`; `bus` carries its counters.
pub async fn serve(
    config: Config,
    listener: TcpListener,
    settings: TdpSettings,
    keys: AuthorityKeys,
    node: Arc<Node>,
    bus: Publisher,
    shutdown: CancellationToken,
) {
    let stats = Arc::new(TdpStats::new(bus));
    let (feed_tx, feed_rx) = watch::channel(Feed::default());
    let feed_tx = Arc::new(feed_tx);
    let (raw_tx, raw_rx) = watch::channel(None);
    let follow = follow_bus(config, feed_tx.clone(), raw_tx, shutdown.clone());
    let prepare = prepare_templates(raw_rx, feed_tx, stats.clone(), shutdown.clone());
    let keys = Arc::new(keys);
    let settings = Arc::new(settings);
    let stop = shutdown.clone();
    let accept =
        jdc_shared::net::accept_loop(listener, "TDP", shutdown, move |stream, peer, open| {
            if open >= MAX_CLIENTS {
                tracing::warn!(%peer, max = MAX_CLIENTS, "TDP client refused: too many clients");
                stats.count(counters::TDP_DROPPED_FULL);
                return None;
            }
            let (keys, settings, node, feed, stats, shutdown) = (
                keys.clone(),
                settings.clone(),
                node.clone(),
                feed_rx.clone(),
                stats.clone(),
                stop.clone(),
            );
            Some(async move {
                let client = Client {
                    peer,
                    keys: &keys,
                    settings: &settings,
                    node,
                    stats: stats.clone(),
                };
                match client.run(stream, feed, shutdown).await {
                    Ok(()) | Err(TdpClientError::Transport(Sv2Error::Closed)) => {
                        tracing::info!(%peer, "TDP client disconnected")
                    }
                    Err(e) => {
                        stats.count(match e {
                            TdpClientError::WriteTimeout(_) => counters::TDP_DROPPED_SLOW,
                            _ => counters::TDP_DROPPED_BAD_INPUT,
                        });
                        tracing::warn!(%peer, error = %e, "TDP client dropped")
                    }
                }
            })
        });
    tokio::join!(follow, prepare, accept);
}

/// Keeps `feed` at the latest tip of the watcher's bus stream, and `raw` at its latest
/// template (still encoded: [`prepare_templates`] decodes it when someone needs it).
async fn follow_bus(
    config: Config,
    feed: Arc<watch::Sender<Feed>>,
    raw: watch::Sender<Option<Received>>,
    shutdown: CancellationToken,
) {
    let (mut inbox, _tasks) = bus::subscribe(
        config
            .bus
            .subscribe_options(&["watcher"], &[Topic::Tip, Topic::Template]),
        Arc::new(BusStats::default()),
        shutdown.clone(),
    );
    loop {
        let msg = tokio::select! {
            m = inbox.recv() => match m { Some(m) => m, None => return },
            _ = shutdown.cancelled() => return,
        };
        match msg.topic {
            Topic::Tip => match msg.decode() {
                Ok(tip) => feed.send_modify(|f| f.tip = Some(Arc::new(tip))),
                Err(e) => tracing::warn!(error = %e, "TDP: undecodable tip on the bus"),
            },
            Topic::Template => {
                // A re-send of the template already taken changes nothing.
                let same = raw
                    .borrow()
                    .as_ref()
                    .and_then(Received::peek_id)
                    .is_some_and(|id| msg.peek_id() == Some(id));
                if !same {
                    raw.send_replace(Some(msg));
                }
            }
            _ => {}
        }
    }
}

/// Decodes and prepares the latest template for the clients (on a blocking thread: a
/// template can be megabytes), only while at least one is connected.
async fn prepare_templates(
    mut raw: watch::Receiver<Option<Received>>,
    feed: Arc<watch::Sender<Feed>>,
    stats: Arc<TdpStats>,
    shutdown: CancellationToken,
) {
    loop {
        tokio::select! {
            changed = raw.changed() => if changed.is_err() { return },
            _ = shutdown.cancelled() => return,
        }
        while stats.connected() == 0 {
            tokio::select! {
                _ = stats.joined.notified() => {}
                _ = shutdown.cancelled() => return,
            }
        }
        let Some(msg) = raw.borrow_and_update().clone() else {
            continue;
        };
        let prepared = tokio::task::spawn_blocking(move || {
            let template: Template = msg.decode().map_err(|e| e.to_string())?;
            PreparedTemplate::new(template).map_err(|e| format!("template: {e}"))
        })
        .await;
        match prepared {
            Ok(Ok(p)) => feed.send_modify(|f| f.template = Some(Arc::new(p))),
            Ok(Err(e)) => tracing::warn!(error = %e, "TDP: template from the bus not usable"),
            Err(e) => tracing::error!(error = %e, "TDP: preparing a template failed"),
        }
    }
}

async fn send_all(
    writer: &mut Sv2Writer,
    msgs: Vec<AnyMessageOwned>,
) -> Result<(), TdpClientError> {
    tokio::time::timeout(WRITE_TIMEOUT, writer.send_all(msgs))
        .await
        .map_err(|_| TdpClientError::WriteTimeout(WRITE_TIMEOUT))?
        .map_err(TdpClientError::from)
}

fn setup_error(code: &str) -> Vec<AnyMessageOwned> {
    Str0255Owned::new(code.as_bytes().to_vec())
        .map(|error_code| {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnectionError(
                SetupConnectionErrorOwned {
                    flags: 0,
                    error_code,
                },
            ))
        })
        .into_iter()
        .collect()
}

/// One client connection and what it needs from the server.
struct Client<'a> {
    peer: SocketAddr,
    keys: &'a AuthorityKeys,
    settings: &'a TdpSettings,
    node: Arc<Node>,
    stats: Arc<TdpStats>,
}

impl Client<'_> {
    async fn run(
        self,
        stream: TcpStream,
        mut feed: watch::Receiver<Feed>,
        shutdown: CancellationToken,
    ) -> Result<(), TdpClientError> {
        let Self {
            peer,
            keys,
            settings,
            node,
            stats,
        } = self;
        let (mut reader, mut writer) =
            sv2::accept(stream, keys, settings.cert_validity, SETUP_TIMEOUT).await?;
        reader.set_max_payload(MAX_CLIENT_PAYLOAD);
        let setup = tokio::time::timeout(SETUP_TIMEOUT, reader.recv())
            .await
            .map_err(|_| {
                TdpClientError::Protocol(format!("no SetupConnection within {SETUP_TIMEOUT:?}"))
            })??;
        let AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(setup)) = setup else {
            return Err(TdpClientError::Protocol(
                "the first message must be SetupConnection".into(),
            ));
        };
        if setup.protocol != Protocol::TemplateDistributionProtocol {
            send_all(&mut writer, setup_error("unsupported-protocol")).await?;
            return Err(TdpClientError::Protocol(format!(
                "SetupConnection for {:?}, not Template Distribution",
                setup.protocol
            )));
        }
        if setup.min_version > 2 || setup.max_version < 2 {
            send_all(&mut writer, setup_error("protocol-version-mismatch")).await?;
            return Err(TdpClientError::Protocol(format!(
                "protocol versions {}..{} exclude 2",
                setup.min_version, setup.max_version
            )));
        }
        send_all(
            &mut writer,
            vec![AnyMessageOwned::Common(
                CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccessOwned {
                    used_version: 2,
                    flags: 0,
                }),
            )],
        )
        .await?;
        tracing::info!(
            %peer,
            vendor = %String::from_utf8_lossy(setup.vendor.as_ref()),
            "TDP client connected"
        );
        let _slot = ClientSlot::new(stats.clone());
        let mut session = Session::new(settings.fee_delta);
        // Templates start once the client said how much coinbase room it needs (or right away
        // when it sends something else first).
        let mut started = false;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Ok(()),
                changed = feed.changed(), if started => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let current = feed.borrow_and_update().clone();
                    let out = session.on_feed(&current).map_err(TdpClientError::Protocol)?;
                    if !out.is_empty() {
                        stats.sent(&out);
                        send_all(&mut writer, out).await?;
                    }
                }
                msg = reader.recv() => {
                    let AnyMessageOwned::TemplateDistribution(msg) = msg? else {
                        return Err(TdpClientError::Protocol("only Template Distribution messages after setup".into()));
                    };
                    match msg {
                        TemplateDistributionOwned::CoinbaseOutputConstraints(c) => {
                            session.set_constraints(c.coinbase_output_max_additional_size);
                            tracing::debug!(%peer, bytes = c.coinbase_output_max_additional_size, "TDP coinbase output constraints");
                        }
                        TemplateDistributionOwned::RequestTransactionData(r) => {
                            let answer = session.transaction_data(r.template_id);
                            send_all(&mut writer, answer.into_iter().collect()).await?;
                        }
                        TemplateDistributionOwned::SubmitSolution(s) => {
                            submit(&session, &s, peer, node.clone(), stats.clone());
                        }
                        other => {
                            return Err(TdpClientError::Protocol(format!(
                                "a client may not send {}",
                                format!("{other:?}").split(['(', ' ', '{']).next().unwrap_or("that")
                            )));
                        }
                    }
                    if !started {
                        started = true;
                        feed.mark_changed();
                    }
                }
            }
        }
    }
}

/// Turns a solution into a block and hands it to bitcoind (off the client's task).
fn submit(
    session: &Session,
    s: &stratum_core::template_distribution_sv2::SubmitSolutionOwned,
    peer: SocketAddr,
    node: Arc<Node>,
    stats: Arc<TdpStats>,
) {
    let block = match session.solution(s) {
        Ok(b) => b,
        Err(e) => {
            stats.count(counters::TDP_SOLUTIONS_INVALID);
            tracing::warn!(%peer, error = %e, "TDP solution refused");
            return;
        }
    };
    let (hash, txs) = (block.hash, block.tx_count);
    tracing::info!(%peer, %hash, txs, "TDP solution: submitting the block");
    let hex = hex::encode(block.bytes);
    tokio::spawn(async move {
        match node.run(move |n| n.submit_block(hex)).await {
            Ok(None) => {
                stats.count(counters::TDP_SOLUTIONS_ACCEPTED);
                tracing::info!(%hash, txs, "TDP block accepted by bitcoind")
            }
            Ok(Some(reason)) => {
                stats.count(counters::TDP_SOLUTIONS_REJECTED);
                tracing::warn!(%hash, %reason, "TDP block rejected by bitcoind")
            }
            Err(e) => {
                stats.count(counters::TDP_SOLUTIONS_FAILED);
                tracing::error!(%hash, error = %e, "TDP block: submitblock failed")
            }
        }
    });
}
