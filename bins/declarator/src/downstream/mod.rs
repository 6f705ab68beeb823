//! The SV2 mining server for the operator's devices: Noise NX over TCP, `SetupConnection`,
//! standard and extended channels, jobs out, shares in.
//!
//! Each connection runs in its own task; a slow or broken device only ever affects itself.
//! New work arrives through a `watch` channel, so a device that falls behind skips straight to
//! the latest work.

pub mod channel;
mod devices;
pub mod shares;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jdc_shared::bitcoin::Target;
use jdc_shared::bus::{Publisher, Topic};
use jdc_shared::messages::{JobKind, JobSent, ShareResult};
use jdc_shared::sv2::{self, AuthorityKeys, Sv2Error, Sv2Writer};
use jdc_shared::time::now_micros;
use stratum_core::binary_sv2::{B032Owned, U256Owned};
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_core::channels_sv2::server::{extended::ExtendedChannel, standard::StandardChannel};
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned, OpenStandardMiningChannelOwned,
    OpenStandardMiningChannelSuccessOwned, SetTargetOwned, UpdateChannelErrorOwned,
    UpdateChannelOwned,
};
use stratum_core::parsers_sv2::{AnyMessageOwned, CommonMessagesOwned, MiningOwned};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::work::WorkState;
use channel::{Channel, FoundBlock};
use devices::DeviceTable;

/// SV2 protocol version we speak.
const SV2_VERSION: u16 = 2;
/// `SetupConnection` flag: the device wants to choose its own work (not served here).
const FLAG_REQUIRES_WORK_SELECTION: u32 = 1 << 1;
/// `SetupConnection` flag: the device wants standard jobs only.
const FLAG_REQUIRES_STANDARD_JOBS: u32 = 1;
/// A device that does not take our writes within this long is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest message we accept from a device (a share is < 100 bytes).
const MAX_DEVICE_PAYLOAD: usize = 16 * 1024;
/// After publishing the `devices` state, changes are gathered this long before the next one.
const DEVICES_COALESCE: Duration = Duration::from_millis(100);

/// Settings of the downstream server.
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Certificate validity.
    pub cert_validity: Duration,
    /// Time allowed for the handshake and `SetupConnection`.
    pub handshake_timeout: Duration,
    /// Share rate each channel is tuned for.
    pub shares_per_minute: f32,
    /// Shares per acknowledgement.
    pub share_batch_size: usize,
    /// Text in the coinbase scriptSig.
    pub coinbase_tag: String,
    /// Maximum concurrent connections.
    pub max_connections: usize,
}

/// State shared by all connections.
pub struct Server {
    settings: ServerSettings,
    keys: AuthorityKeys,
    work: watch::Receiver<Option<WorkState>>,
    allocator: Mutex<ExtranonceAllocator>,
    next_channel_id: AtomicU32,
    connections: AtomicUsize,
    blocks: mpsc::Sender<FoundBlock>,
    bus: Publisher,
    /// Accepted shares go here too when mining for a pool.
    upstream_shares: Option<mpsc::Sender<channel::AcceptedShare>>,
    /// The open device channels (the `devices` state), and their summed nominal hashrate for
    /// the pool channel.
    devices: Mutex<DeviceTable>,
    devices_changed: Notify,
    total_hashrate: watch::Sender<f32>,
    /// The pool's part of every extranonce, and how often it changed (connections move their
    /// channels to it before their next job).
    upstream_prefix: Mutex<(u64, Vec<u8>)>,
    /// Which `JobSent` is the first of its kind on its tip, over all connections.
    first_jobs: FirstJobs,
}

/// The newest tip (by `WorkState` tip sequence) each job kind was written on, over all
/// connections: the first connection to write an empty or a full job on a newer tip marks its
/// `JobSent` `first_on_tip` (what `jdc_tip_to_job_seconds` observes); template refreshes and
/// the same job written to further connections are not first.
#[derive(Debug, Default)]
struct FirstJobs {
    empty: AtomicU64,
    full: AtomicU64,
}

impl FirstJobs {
    /// Whether a `kind` job written on tip `tip_seq` is the first of its kind on that tip.
    fn is_first(&self, kind: JobKind, tip_seq: u64) -> bool {
        let newest = match kind {
            JobKind::Empty => &self.empty,
            JobKind::Full => &self.full,
        };
        newest.fetch_max(tip_seq, Ordering::Relaxed) < tip_seq
    }
}

/// A job written to a device connection (SV2, or a Stratum V1 `mining.notify`), for its
/// `JobSent` on the bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrittenJob {
    kind: JobKind,
    height: u32,
    template_id: u64,
    tx_count: u32,
    tip_seq: u64,
    tip_detected_at_us: u64,
    new_tip: bool,
    channels: u32,
}

impl WrittenJob {
    /// The job of `state`, written to `channels` channels of one connection (with a
    /// `SetNewPrevHash`, or a clean V1 job, when `new_tip`).
    pub fn new(state: &WorkState, new_tip: bool, channels: u32) -> Self {
        Self {
            kind: state.job.kind,
            height: state.tip.height,
            template_id: state.job.template_id,
            tx_count: state.job.tx_count,
            tip_seq: state.tip.seq,
            tip_detected_at_us: state.tip.detected_at_us,
            new_tip,
            channels,
        }
    }
}

/// A connection counted against `max_connections` until dropped.
pub(crate) struct Admitted(Arc<Server>);

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A new extended channel and what the device must be told about it.
pub(crate) struct OpenedChannel {
    /// The channel.
    pub channel: Channel,
    /// Its extranonce prefix (the pool's part, if any, and ours).
    pub extranonce_prefix: Vec<u8>,
    /// Bytes of extranonce the device rolls after the prefix.
    pub rollable: u16,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// Transport, handshake or framing problem.
    #[error(transparent)]
    Transport(#[from] Sv2Error),
    /// The device broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// The device stopped reading: a write did not complete in time.
    #[error("device stopped reading: a write did not complete within {0:?}")]
    WriteTimeout(Duration),
    /// The device took too long to set up.
    #[error("no SetupConnection within {0:?}")]
    SetupTimeout(Duration),
}

/// How the server is connected to the rest of the declarator.
pub struct ServerLinks {
    /// The work to hand out.
    pub work: watch::Receiver<Option<WorkState>>,
    /// Found blocks, for submission.
    pub blocks: mpsc::Sender<FoundBlock>,
    /// The bus, for events.
    pub bus: Publisher,
    /// Accepted shares, when mining for a pool.
    pub upstream_shares: Option<mpsc::Sender<channel::AcceptedShare>>,
    /// The devices' summed nominal hashrate.
    pub total_hashrate: watch::Sender<f32>,
}

impl Server {
    /// A server handing out work and sending found blocks and shares where `links` say.
    pub fn new(
        settings: ServerSettings,
        keys: AuthorityKeys,
        allocator: ExtranonceAllocator,
        links: ServerLinks,
    ) -> Arc<Self> {
        let ServerLinks {
            work,
            blocks,
            bus,
            upstream_shares,
            total_hashrate,
        } = links;
        Arc::new(Self {
            settings,
            keys,
            work,
            allocator: Mutex::new(allocator),
            next_channel_id: AtomicU32::new(1),
            connections: AtomicUsize::new(0),
            blocks,
            bus,
            upstream_shares,
            devices: Mutex::new(DeviceTable::default()),
            devices_changed: Notify::new(),
            total_hashrate,
            upstream_prefix: Mutex::new((0, Vec::new())),
            first_jobs: FirstJobs::default(),
        })
    }

    /// Moves every extranonce to a new pool's prefix: new channels at once, open channels
    /// before their next job (with `SetExtranoncePrefix`).
    pub fn set_upstream_prefix(&self, prefix: &[u8]) -> Result<(), String> {
        self.allocator
            .lock()
            .map_err(|_| "allocator lock poisoned".to_string())?
            .set_upstream_prefix(prefix.to_vec())
            .map_err(|e| format!("{e:?}"))?;
        let mut current = self
            .upstream_prefix
            .lock()
            .map_err(|_| "prefix lock poisoned".to_string())?;
        current.0 += 1;
        current.1 = prefix.to_vec();
        Ok(())
    }

    /// The pool's prefix generation and bytes.
    pub(crate) fn upstream_prefix(&self) -> (u64, Vec<u8>) {
        self.upstream_prefix
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default()
    }

    /// Publishes the `JobSent` of a job just written to a device connection, SV2 or V1: the
    /// first job of its kind on its tip over all connections is `first_on_tip` (what the
    /// tip-to-job latency observes).
    pub(crate) fn job_written(&self, peer: SocketAddr, job: WrittenJob) -> JobSent {
        let event = JobSent {
            kind: job.kind,
            height: job.height,
            template_id: job.template_id,
            tx_count: job.tx_count,
            channels: job.channels,
            new_tip: job.new_tip,
            tip_to_job_us: now_micros().saturating_sub(job.tip_detected_at_us),
            first_on_tip: self.first_jobs.is_first(job.kind, job.tip_seq),
        };
        if job.new_tip || job.kind == JobKind::Full {
            tracing::debug!(
                %peer,
                kind = job.kind.as_str(),
                height = job.height,
                latency_us = event.tip_to_job_us,
                "job sent"
            );
        }
        let _ = self.bus.publish(Topic::Job, &event);
        event
    }

    /// Records a device channel that just opened (`kind`: `standard`, `extended` or `sv1`),
    /// for the `devices` state and the summed hashrate.
    pub(crate) fn channel_opened(
        &self,
        channel_id: u32,
        kind: &'static str,
        user_identity: String,
        hashrate: f32,
        peer: SocketAddr,
    ) {
        self.update_devices(|t| {
            t.opened(
                channel_id,
                kind,
                user_identity,
                hashrate,
                peer,
                now_micros(),
            );
            true
        });
    }

    /// Records a channel's nominal hashrate (`None`: the channel closed) and publishes the sum.
    pub(crate) fn set_hashrate(&self, channel_id: u32, hashrate: Option<f32>) {
        self.update_devices(|t| match hashrate {
            Some(h) => t.set_hashrate(channel_id, h),
            None => t.closed(channel_id),
        });
    }

    /// Records the worker name a V1 device authorized with.
    pub(crate) fn set_device_user(&self, channel_id: u32, user_identity: &str) {
        self.update_devices(|t| t.set_user(channel_id, user_identity));
    }

    /// Applies `change` to the device table; when it changed something, updates the summed
    /// hashrate and wakes the `devices` publisher.
    fn update_devices(&self, change: impl FnOnce(&mut DeviceTable) -> bool) {
        let total = {
            let Ok(mut table) = self.devices.lock() else {
                tracing::error!("device table lock poisoned; device change not recorded");
                return;
            };
            if !change(&mut table) {
                return;
            }
            table.total_hashrate()
        };
        self.total_hashrate.send_replace(total);
        self.devices_changed.notify_one();
    }

    /// Publishes the `devices` state now (the bus re-sends it every interval).
    fn publish_devices_now(&self) {
        let state = match self.devices.lock() {
            Ok(mut table) => table.state(now_micros()),
            Err(_) => {
                tracing::error!("device table lock poisoned; devices state not published");
                return;
            }
        };
        if let Err(e) = self.bus.publish(Topic::Devices, &state) {
            tracing::warn!(error = %e, "cannot publish the devices state");
        }
    }

    /// Publishes the `devices` state at start (empty) and after every change until
    /// `shutdown`; changes within [`DEVICES_COALESCE`] of a publication wait for the next.
    pub(crate) async fn publish_devices(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            self.publish_devices_now();
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(DEVICES_COALESCE) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.devices_changed.notified() => {}
            }
        }
    }

    /// A new extended channel for a device (SV2, or a Stratum V1 connection behind one):
    /// an extranonce prefix from the one allocator, so no two channels ever share one.
    pub(crate) fn new_extended_channel(
        &self,
        peer: SocketAddr,
        user_identity: String,
        max_target: Target,
        nominal_hash_rate: f32,
        min_extranonce_size: usize,
    ) -> Result<OpenedChannel, &'static str> {
        let (prefix, rollable) = match self.allocator.lock() {
            Ok(mut a) => {
                let rollable = a.rollable_extranonce_size();
                let prefix = a.allocate_extended(min_extranonce_size).map_err(|e| {
                    tracing::warn!(%peer, error = ?e, min = min_extranonce_size, "extended channel refused");
                    "min-extranonce-size-too-large"
                })?;
                (prefix, rollable)
            }
            Err(_) => return Err("internal-error"),
        };
        let s = &self.settings;
        let channel_id = self.next_channel_id.fetch_add(1, Ordering::Relaxed);
        let extranonce_prefix = prefix.as_bytes().to_vec();
        let channel = ExtendedChannel::new_for_job_declaration_client(
            channel_id,
            user_identity,
            prefix,
            max_target,
            nominal_hash_rate,
            true,
            u16::from(rollable),
            s.share_batch_size,
            s.shares_per_minute,
            None,
            s.coinbase_tag.clone(),
            None,
        )
        .map_err(|e| {
            tracing::warn!(%peer, error = ?e, "extended channel refused");
            open_error_code(&format!("{e:?}"))
        })?;
        Ok(OpenedChannel {
            channel: Channel::extended(channel, s.share_batch_size)
                .with_forwarding(self.upstream_shares.is_some()),
            extranonce_prefix,
            rollable: u16::from(rollable),
        })
    }

    /// What happens to every judged share, whatever the device speaks: published on the bus,
    /// handed to the pool when accepted and mining for one, and submitted when it is a block.
    pub(crate) fn settle_share(
        &self,
        peer: SocketAddr,
        channel_id: u32,
        kind: &str,
        outcome: &mut channel::ShareOutcome,
    ) {
        let _ = self.bus.publish(
            Topic::Share,
            &ShareResult {
                channel_id,
                channel_kind: kind.to_string(),
                accepted: outcome.rejected.is_none(),
                reason: outcome.rejected.unwrap_or_default().to_string(),
                difficulty: outcome.difficulty,
            },
        );
        if let Some(code) = outcome.rejected {
            tracing::debug!(%peer, channel_id, code, "share rejected");
        }
        if let (Some(tx), Some(accepted)) = (&self.upstream_shares, outcome.accepted.take()) {
            match tx.try_send(accepted) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!("share queue to the pool is full; share not forwarded")
                }
                // The upstream task has ended: we mine solo, nothing to forward.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        if let Some(block) = outcome.block.take() {
            tracing::info!(%peer, channel_id, hash = %block.hash, "share meets the network target: block found");
            match self.blocks.try_send(block) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(block)) => tracing::error!(
                    hash = %block.hash,
                    "block submission queue full (a flood of blocks: regtest?); block dropped"
                ),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    tracing::error!("block submitter has stopped; block lost")
                }
            }
        }
    }

    /// The work devices mine, as it changes.
    pub(crate) fn work(&self) -> watch::Receiver<Option<WorkState>> {
        self.work.clone()
    }

    /// Counts a connection against `max_connections`; `None` when the server is full.
    pub(crate) fn admit(self: &Arc<Self>) -> Option<Admitted> {
        let n = self.connections.fetch_add(1, Ordering::Relaxed);
        if n >= self.settings.max_connections {
            self.connections.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(Admitted(self.clone()))
    }

    /// Accepts devices until `shutdown`.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        tokio::join!(
            self.clone().publish_devices(shutdown.clone()),
            self.accept(listener, shutdown.clone())
        );
    }

    /// Accepts devices until `shutdown`.
    async fn accept(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let server = self.clone();
        let stop = shutdown.clone();
        jdc_shared::net::accept_loop(listener, "SV2", shutdown, move |stream, peer, _| {
            let Some(admitted) = server.admit() else {
                tracing::warn!(%peer, max = server.settings.max_connections, "connection refused: too many devices");
                return None;
            };
            let (server, shutdown) = (server.clone(), stop.clone());
            Some(async move {
                let _admitted = admitted;
                match server.connection(stream, peer, shutdown).await {
                    Ok(()) | Err(ConnectionError::Transport(Sv2Error::Closed)) => {
                        tracing::info!(%peer, "device disconnected")
                    }
                    Err(e) => tracing::warn!(%peer, error = %e, "device dropped"),
                }
            })
        })
        .await;
    }

    async fn connection(
        self: Arc<Self>,
        stream: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectionError> {
        let (mut reader, mut writer) = sv2::accept(
            stream,
            &self.keys,
            self.settings.cert_validity,
            self.settings.handshake_timeout,
        )
        .await?;
        reader.set_max_payload(MAX_DEVICE_PAYLOAD);
        let setup = tokio::time::timeout(self.settings.handshake_timeout, reader.recv())
            .await
            .map_err(|_| ConnectionError::SetupTimeout(self.settings.handshake_timeout))??;
        let setup = match setup {
            AnyMessageOwned::Common(CommonMessagesOwned::SetupConnection(s)) => s,
            other => {
                return Err(ConnectionError::Protocol(format!(
                    "expected SetupConnection, got {}",
                    message_name(&other)
                )))
            }
        };
        let standard_only = match check_setup(&setup) {
            Ok(standard_only) => standard_only,
            Err((flags, code)) => {
                if let Some(reply) = setup_error(flags, code) {
                    writer.send(reply).await?;
                }
                return Err(ConnectionError::Protocol(format!(
                    "SetupConnection refused: {code}"
                )));
            }
        };
        writer
            .send(AnyMessageOwned::Common(
                CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccessOwned {
                    used_version: SV2_VERSION,
                    flags: 0,
                }),
            ))
            .await?;
        tracing::info!(
            %peer,
            vendor = %String::from_utf8_lossy(setup.vendor.as_bytes()),
            firmware = %String::from_utf8_lossy(setup.firmware.as_bytes()),
            "device connected"
        );
        let mut conn = Connection {
            server: self.clone(),
            peer,
            standard_only,
            channels: HashMap::new(),
            tip_seq: 0,
            template_id: 0,
            prefix_generation: self.upstream_prefix().0,
        };
        let mut work = self.work.clone();
        work.mark_changed();
        loop {
            tokio::select! {
                biased;
                changed = work.changed() => {
                    if changed.is_err() {
                        return Ok(());
                    }
                    let state = work.borrow_and_update().clone();
                    if let Some(state) = state {
                        conn.on_work(&state, &mut writer).await?;
                    }
                }
                msg = reader.recv() => {
                    let msg = msg?;
                    let replies = conn.on_message(msg, &work)?;
                    if !replies.is_empty() {
                        send_all(&mut writer, replies).await?;
                    }
                }
                _ = shutdown.cancelled() => return Ok(()),
            }
        }
    }
}

/// Writes messages, dropping a device that stopped reading.
async fn send_all(
    writer: &mut Sv2Writer,
    msgs: Vec<AnyMessageOwned>,
) -> Result<(), ConnectionError> {
    tokio::time::timeout(WRITE_TIMEOUT, writer.send_all(msgs))
        .await
        .map_err(|_| ConnectionError::WriteTimeout(WRITE_TIMEOUT))?
        .map_err(ConnectionError::from)
}

/// Checks a device's `SetupConnection`; returns whether it wants standard jobs only, or the
/// flags and error code to refuse it with.
fn check_setup(setup: &SetupConnectionOwned) -> Result<bool, (u32, &'static str)> {
    if setup.protocol != Protocol::MiningProtocol {
        return Err((0, "unsupported-protocol"));
    }
    if setup.min_version > SV2_VERSION || setup.max_version < SV2_VERSION {
        return Err((0, "protocol-version-mismatch"));
    }
    if setup.flags & FLAG_REQUIRES_WORK_SELECTION != 0 {
        return Err((FLAG_REQUIRES_WORK_SELECTION, "unsupported-feature-flags"));
    }
    Ok(setup.flags & FLAG_REQUIRES_STANDARD_JOBS != 0)
}

fn setup_error(flags: u32, code: &str) -> Option<AnyMessageOwned> {
    let error_code = channel::sv2_str(code)?;
    Some(AnyMessageOwned::Common(
        CommonMessagesOwned::SetupConnectionError(SetupConnectionErrorOwned { flags, error_code }),
    ))
}

pub(crate) fn message_name(msg: &AnyMessageOwned) -> String {
    let s = format!("{msg:?}");
    s.split(['(', ' ', '{'])
        .take(2)
        .collect::<Vec<_>>()
        .join("::")
}

struct Connection {
    server: Arc<Server>,
    peer: SocketAddr,
    standard_only: bool,
    channels: HashMap<u32, Channel>,
    tip_seq: u64,
    template_id: u64,
    /// Generation of the pool prefix this connection's channels use.
    prefix_generation: u64,
}

impl Drop for Connection {
    /// A device that goes away takes its hashrate with it.
    fn drop(&mut self) {
        for id in self.channels.keys() {
            self.server.set_hashrate(*id, None);
        }
    }
}

impl Connection {
    /// Sends the latest work to every channel of this connection.
    async fn on_work(
        &mut self,
        state: &WorkState,
        writer: &mut Sv2Writer,
    ) -> Result<(), ConnectionError> {
        if self.channels.is_empty() {
            self.tip_seq = state.tip.seq;
            self.template_id = state.job.template_id;
            return Ok(());
        }
        let new_tip = state.tip.seq != self.tip_seq;
        if !new_tip && state.job.template_id == self.template_id {
            return Ok(());
        }
        let mut out = Vec::with_capacity(self.channels.len() * 2);
        // A new pool: channels move to its extranonce prefix before the job.
        let (generation, prefix) = self.server.upstream_prefix();
        if generation != self.prefix_generation {
            self.prefix_generation = generation;
            for ch in self.channels.values_mut() {
                match ch.set_upstream_prefix(&prefix) {
                    Ok(msg) => out.push(msg),
                    Err(e) => {
                        tracing::error!(peer = %self.peer, channel = ch.id(), error = %e, "cannot move channel to the pool's extranonce prefix")
                    }
                }
            }
        }
        for ch in self.channels.values_mut() {
            let msgs = if new_tip {
                ch.on_new_tip(state)
            } else {
                ch.on_new_job(state).map(|m| vec![m])
            };
            match msgs {
                Ok(m) => out.extend(m),
                Err(e) => {
                    tracing::error!(peer = %self.peer, channel = ch.id(), error = %e, "cannot build job for channel")
                }
            }
        }
        self.tip_seq = state.tip.seq;
        self.template_id = state.job.template_id;
        send_all(writer, out).await?;
        let channels = u32::try_from(self.channels.len()).unwrap_or(u32::MAX);
        self.server
            .job_written(self.peer, WrittenJob::new(state, new_tip, channels));
        Ok(())
    }

    /// Handles one message from the device; returns the replies.
    fn on_message(
        &mut self,
        msg: AnyMessageOwned,
        work: &watch::Receiver<Option<WorkState>>,
    ) -> Result<Vec<AnyMessageOwned>, ConnectionError> {
        let AnyMessageOwned::Mining(msg) = msg else {
            return Err(ConnectionError::Protocol(format!(
                "unexpected {} after setup",
                message_name(&msg)
            )));
        };
        match msg {
            MiningOwned::OpenStandardMiningChannel(m) => {
                let opened = self.open_standard(&m);
                let user = String::from_utf8_lossy(m.user_identity.as_bytes()).into_owned();
                Ok(self.open(m.request_id, user, opened, work))
            }
            MiningOwned::OpenExtendedMiningChannel(m) => {
                let opened = self.open_extended(&m);
                let user = String::from_utf8_lossy(m.user_identity.as_bytes()).into_owned();
                Ok(self.open(m.request_id, user, opened, work))
            }
            MiningOwned::SubmitSharesStandard(s) => {
                let channel_id = s.channel_id;
                let seq = s.sequence_number;
                Ok(self.share(channel_id, seq, |ch| ch.on_standard_share(s)))
            }
            MiningOwned::SubmitSharesExtended(s) => {
                let channel_id = s.channel_id;
                let seq = s.sequence_number;
                Ok(self.share(channel_id, seq, |ch| ch.on_extended_share(s)))
            }
            MiningOwned::UpdateChannel(u) => Ok(self.update_channel(u)),
            MiningOwned::CloseChannel(c) => {
                tracing::info!(peer = %self.peer, channel = c.channel_id, "device closed channel");
                if self.channels.remove(&c.channel_id).is_some() {
                    self.server.set_hashrate(c.channel_id, None);
                }
                Ok(vec![])
            }
            other => Err(ConnectionError::Protocol(format!(
                "a device may not send {}",
                message_name(&AnyMessageOwned::Mining(other))
            ))),
        }
    }

    fn next_channel_id(&self) -> u32 {
        self.server.next_channel_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Opens a channel (or answers `OpenMiningChannel.Error`) and gives it the current work.
    fn open(
        &mut self,
        request_id: u32,
        user: String,
        opened: Result<(Channel, AnyMessageOwned), &'static str>,
        work: &watch::Receiver<Option<WorkState>>,
    ) -> Vec<AnyMessageOwned> {
        match opened {
            Ok((channel, success)) => {
                tracing::info!(peer = %self.peer, channel_id = channel.id(), kind = channel.kind(), "channel opened");
                self.add_channel(channel, success, user, work)
            }
            Err(code) => open_error(request_id, code).into_iter().collect(),
        }
    }

    fn open_standard(
        &mut self,
        m: &OpenStandardMiningChannelOwned,
    ) -> Result<(Channel, AnyMessageOwned), &'static str> {
        let prefix = match self.server.allocator.lock() {
            Ok(mut a) => a.allocate_standard().map_err(|_| "no-more-channels")?,
            Err(_) => return Err("internal-error"),
        };
        let s = &self.server.settings;
        let channel_id = self.next_channel_id();
        let extranonce_prefix = B032Owned::new(prefix.as_bytes().to_vec())
            .map_err(|_| "extranonce-prefix-too-large")?;
        let channel = StandardChannel::new_for_job_declaration_client(
            channel_id,
            String::from_utf8_lossy(m.user_identity.as_bytes()).into_owned(),
            prefix,
            Target::from_le_bytes(m.max_target.to_array()),
            m.nominal_hash_rate,
            s.share_batch_size,
            s.shares_per_minute,
            None,
            s.coinbase_tag.clone(),
            None,
        )
        .map_err(|e| {
            tracing::warn!(peer = %self.peer, error = ?e, "standard channel refused");
            open_error_code(&format!("{e:?}"))
        })?;
        let success = OpenStandardMiningChannelSuccessOwned {
            request_id: m.request_id,
            channel_id,
            target: U256Owned::from(channel.get_target().to_le_bytes()),
            extranonce_prefix,
            group_channel_id: 0,
        };
        Ok((
            Channel::standard(channel, s.share_batch_size)
                .with_forwarding(self.server.upstream_shares.is_some()),
            AnyMessageOwned::Mining(MiningOwned::OpenStandardMiningChannelSuccess(success)),
        ))
    }

    fn open_extended(
        &mut self,
        m: &OpenExtendedMiningChannelOwned,
    ) -> Result<(Channel, AnyMessageOwned), &'static str> {
        if self.standard_only {
            return Err("standard-jobs-only-connection");
        }
        let opened = self.server.new_extended_channel(
            self.peer,
            String::from_utf8_lossy(m.user_identity.as_bytes()).into_owned(),
            Target::from_le_bytes(m.max_target.to_array()),
            m.nominal_hash_rate,
            usize::from(m.min_extranonce_size),
        )?;
        let extranonce_prefix =
            B032Owned::new(opened.extranonce_prefix).map_err(|_| "extranonce-prefix-too-large")?;
        let success = OpenExtendedMiningChannelSuccessOwned {
            request_id: m.request_id,
            channel_id: opened.channel.id(),
            target: U256Owned::from(opened.channel.target().to_le_bytes()),
            extranonce_size: opened.rollable,
            extranonce_prefix,
            group_channel_id: 0,
        };
        Ok((
            opened.channel,
            AnyMessageOwned::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(success)),
        ))
    }

    /// Registers a channel and gives it the current work: a future job, then the
    /// `SetNewPrevHash` activating it.
    fn add_channel(
        &mut self,
        mut channel: Channel,
        success: AnyMessageOwned,
        user: String,
        work: &watch::Receiver<Option<WorkState>>,
    ) -> Vec<AnyMessageOwned> {
        let mut out = vec![success];
        let state = work.borrow().clone();
        if let Some(state) = state {
            match channel.on_new_tip(&state) {
                Ok(msgs) => out.extend(msgs),
                Err(e) => tracing::error!(peer = %self.peer, error = %e, "cannot build first job"),
            }
            if self.channels.is_empty() {
                self.tip_seq = state.tip.seq;
                self.template_id = state.job.template_id;
            }
        }
        self.server.channel_opened(
            channel.id(),
            channel.kind(),
            user,
            channel.nominal_hashrate(),
            self.peer,
        );
        self.channels.insert(channel.id(), channel);
        out
    }

    fn share(
        &mut self,
        channel_id: u32,
        seq: u32,
        validate: impl FnOnce(&mut Channel) -> channel::ShareOutcome,
    ) -> Vec<AnyMessageOwned> {
        let (mut outcome, kind) = match self.channels.get_mut(&channel_id) {
            Some(ch) => {
                let kind = ch.kind();
                (validate(ch), kind)
            }
            None => (
                channel::reject(channel_id, seq, channel::ERROR_INVALID_CHANNEL_ID),
                "unknown",
            ),
        };
        self.server
            .settle_share(self.peer, channel_id, kind, &mut outcome);
        if outcome.close {
            tracing::warn!(peer = %self.peer, channel_id, "closing channel: share budget exhausted");
            self.channels.remove(&channel_id);
            self.server.set_hashrate(channel_id, None);
        }
        outcome.reply.into_iter().collect()
    }

    fn update_channel(&mut self, u: UpdateChannelOwned) -> Vec<AnyMessageOwned> {
        let channel_id = u.channel_id;
        let Some(ch) = self.channels.get_mut(&channel_id) else {
            return update_error(channel_id, "invalid-channel-id")
                .into_iter()
                .collect();
        };
        let max_target = Target::from_le_bytes(u.maximum_target.to_array());
        let result = ch.update(u.nominal_hash_rate, max_target);
        if result.is_ok() {
            self.server
                .set_hashrate(channel_id, Some(u.nominal_hash_rate));
        }
        match result {
            Ok(target) => vec![AnyMessageOwned::Mining(MiningOwned::SetTarget(
                SetTargetOwned {
                    channel_id,
                    maximum_target: U256Owned::from(target.to_le_bytes()),
                },
            ))],
            Err(e) => {
                tracing::warn!(peer = %self.peer, channel_id, error = %e, "UpdateChannel refused");
                update_error(channel_id, open_error_code(&e))
                    .into_iter()
                    .collect()
            }
        }
    }
}

fn open_error_code(debug: &str) -> &'static str {
    if debug.contains("Hashrate") {
        "invalid-nominal-hashrate"
    } else if debug.contains("Target") {
        "max-target-out-of-range"
    } else {
        "unknown"
    }
}

fn open_error(request_id: u32, code: &str) -> Option<AnyMessageOwned> {
    Some(AnyMessageOwned::Mining(
        MiningOwned::OpenMiningChannelError(OpenMiningChannelErrorOwned {
            request_id,
            error_code: channel::sv2_str(code)?,
        }),
    ))
}

fn update_error(channel_id: u32, code: &str) -> Option<AnyMessageOwned> {
    Some(AnyMessageOwned::Mining(MiningOwned::UpdateChannelError(
        UpdateChannelErrorOwned {
            channel_id,
            error_code: channel::sv2_str(code)?,
        },
    )))
}

#[cfg(test)]
mod first_jobs_tests {
    use super::{FirstJobs, JobKind};

    #[test]
    fn only_the_first_job_of_each_kind_on_a_tip_is_first() {
        let first = FirstJobs::default();
        // Tip 1: the empty job, then the full one; a second connection and a template refresh
        // are not first.
        assert!(first.is_first(JobKind::Empty, 1));
        assert!(!first.is_first(JobKind::Empty, 1));
        assert!(first.is_first(JobKind::Full, 1));
        assert!(!first.is_first(JobKind::Full, 1));
        assert!(!first.is_first(JobKind::Full, 1));
        // Tip 2 went straight to a full job (the selection came before the connection wrote).
        assert!(first.is_first(JobKind::Full, 2));
        assert!(!first.is_first(JobKind::Full, 2));
        // A connection late on an older tip is never first again.
        assert!(!first.is_first(JobKind::Empty, 1));
        assert!(first.is_first(JobKind::Empty, 3));
    }
}
