//! The SV2 I/O shell: connect, set up, open the channel, feed the hashers, submit shares (the
//! runner reconnects with backoff).

use std::sync::Arc;
use std::time::Duration;

use jdc_shared::sv2::{self, Message, Sv2Error, Sv2Reader, Sv2Writer};
use jdc_shared::time::now_micros;
use stratum_core::binary_sv2::{B032Owned, Str0255Owned, U256Owned};
use stratum_core::bitcoin::secp256k1::XOnlyPublicKey;
use stratum_core::bitcoin::{consensus, Transaction};
use stratum_core::common_messages_sv2::{Protocol, SetupConnectionOwned};
use stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, OpenStandardMiningChannelOwned, SubmitSharesExtendedOwned,
    SubmitSharesStandard,
};
use stratum_core::parsers_sv2::{self, CommonMessagesOwned, IsSv2Message, MiningOwned};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::events::{CoinbaseOutput, Event, Events};
use crate::hasher::{FoundShare, Hashers};
use crate::job::{Channel, ChannelKind, Job, JobBody, JobBook, Tip};
use crate::runner::{supervise, Connection, MinerError, Stats};
use crate::work::{rpc_hex, target_hex};

/// `SetupConnection` flag bit 0 for the Mining protocol.
const REQUIRES_STANDARD_JOBS: u32 = 0b1;
/// Request id of the channel-open request.
const OPEN_REQUEST_ID: u32 = 1;
/// Largest message accepted from the server (jobs carry up to 2 x 64 KiB of coinbase).
const MAX_SERVER_PAYLOAD: usize = 256 * 1024;

/// Validated SV2 miner settings.
#[derive(Debug, Clone)]
pub struct MinerConfig {
    /// `HOST:PORT` of the server.
    pub server: String,
    /// Authority key the server certificate must be signed by (None = unauthenticated).
    pub authority: Option<XOnlyPublicKey>,
    /// Channel type.
    pub channel: ChannelKind,
    /// User identity.
    pub user_identity: String,
    /// Announced hash rate, H/s.
    pub nominal_hashrate: f32,
    /// Maximum target (LE).
    pub max_target: [u8; 32],
    /// Extranonce bytes requested on extended channels.
    pub min_extranonce_size: u16,
    /// Hashing threads.
    pub threads: usize,
    /// Submission cap (0 = unlimited).
    pub max_shares_per_sec: f64,
    /// Timeout for connecting, the handshake and each setup reply.
    pub timeout: Duration,
}

/// Why one connection ended.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// TCP connect failed.
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// Server.
        server: String,
        /// OS error.
        source: std::io::Error,
    },
    /// A step took longer than the timeout.
    #[error("timed out waiting for {0}")]
    Timeout(&'static str),
    /// Transport failure.
    #[error(transparent)]
    Transport(#[from] Sv2Error),
    /// `SetupConnection.Error`.
    #[error("server refused SetupConnection: {code} (unsupported flags 0x{flags:x})")]
    SetupRefused {
        /// Error code.
        code: String,
        /// Flags.
        flags: u32,
    },
    /// `OpenMiningChannel.Error`.
    #[error("server refused to open the channel: {0}")]
    ChannelRefused(String),
    /// `CloseChannel`.
    #[error("server closed the channel: {0}")]
    ChannelClosed(String),
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// Mines until `shutdown`, reconnecting with backoff (100 ms doubling to 5 s) whenever the
/// connection ends.
pub async fn run(
    config: MinerConfig,
    events: Arc<Events>,
    shutdown: CancellationToken,
) -> Result<(), MinerError> {
    if config.authority.is_none() {
        tracing::warn!(
            server = %config.server,
            "NO AUTHORITY KEY: the server's identity is NOT verified (encrypted but unauthenticated); \
             pass --authority-public-key or --authority-key-file"
        );
    }
    tracing::info!(
        server = %config.server,
        channel = config.channel.as_str(),
        threads = config.threads,
        max_shares_per_sec = config.max_shares_per_sec,
        "sim-miner starting"
    );
    let sv2 = Sv2 {
        config: &config,
        events: &events,
    };
    supervise(
        &sv2,
        config.threads,
        config.max_shares_per_sec,
        &events,
        &shutdown,
    )
    .await
}

/// The SV2 protocol for [`supervise`].
struct Sv2<'a> {
    config: &'a MinerConfig,
    events: &'a Events,
}

impl Connection for Sv2<'_> {
    type Error = SessionError;

    async fn run(
        &self,
        id: u64,
        hashers: &Hashers,
        shares: &mut mpsc::Receiver<FoundShare>,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), SessionError> {
        Session {
            config: self.config,
            id,
            hashers,
            events: self.events,
        }
        .run(shares, shutdown, connected)
        .await
    }
}

struct Session<'a> {
    config: &'a MinerConfig,
    id: u64,
    hashers: &'a Hashers,
    events: &'a Events,
}

impl Session<'_> {
    /// One connection. `Ok` only on shutdown.
    async fn run(
        &self,
        shares: &mut mpsc::Receiver<FoundShare>,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), SessionError> {
        let cfg = self.config;
        let setup = async {
            let stream = tokio::time::timeout(cfg.timeout, TcpStream::connect(&cfg.server))
                .await
                .map_err(|_| SessionError::Timeout("the TCP connection"))?
                .map_err(|source| SessionError::Connect {
                    server: cfg.server.clone(),
                    source,
                })?;
            let (mut reader, mut writer) = sv2::connect(stream, cfg.authority, cfg.timeout).await?;
            reader.set_max_payload(MAX_SERVER_PAYLOAD);
            self.setup_connection(&mut reader, &mut writer).await?;
            Ok::<_, SessionError>((reader, writer))
        };
        let (mut reader, mut writer) = tokio::select! {
            r = setup => r?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        *connected = true;
        self.events.emit(Event::Connected {
            server: cfg.server.clone(),
            authenticated: cfg.authority.is_some(),
        });
        let channel = tokio::select! {
            c = self.open_channel(&mut reader, &mut writer) => c?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        self.events.emit(Event::ChannelOpened {
            channel_id: channel.id,
            kind: channel.kind.as_str().into(),
            group_channel_id: channel.group_id,
            extranonce_prefix: hex::encode(&channel.extranonce_prefix),
            extranonce_size: channel.extranonce_size as u16,
            target: target_hex(&channel.target),
        });
        tracing::info!(
            channel_id = channel.id,
            extranonce_size = channel.extranonce_size,
            target = %target_hex(&channel.target),
            "channel opened"
        );
        let mut book = JobBook::new(channel, self.id);
        let mut sequence = 0u32;
        let mut stats = Stats::new(self.hashers);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = writer.shutdown().await;
                    return Ok(());
                }
                msg = reader.recv() => {
                    let t_us = now_micros();
                    match msg {
                        Ok(msg) => self.on_message(msg, &mut book, t_us)?,
                        Err(e) if !e.is_fatal() => {
                            tracing::warn!(error = %e, "ignoring a message from the server");
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
                Some(share) = shares.recv() => {
                    self.submit(share, &book, &mut sequence, &mut writer).await?;
                }
                _ = stats.tick() => stats.log(self.hashers, sequence),
            }
        }
    }

    async fn recv_setup_reply(
        &self,
        reader: &mut Sv2Reader,
        what: &'static str,
    ) -> Result<Message, SessionError> {
        tokio::time::timeout(self.config.timeout, reader.recv())
            .await
            .map_err(|_| SessionError::Timeout(what))?
            .map_err(SessionError::from)
    }

    async fn setup_connection(
        &self,
        reader: &mut Sv2Reader,
        writer: &mut Sv2Writer,
    ) -> Result<(), SessionError> {
        let cfg = self.config;
        let (host, port) = cfg
            .server
            .rsplit_once(':')
            .map(|(h, p)| (h, p.parse::<u16>().unwrap_or(0)))
            .unwrap_or((cfg.server.as_str(), 0));
        let s = |v: &str| {
            Str0255Owned::try_from(v)
                .map_err(|e| SessionError::Protocol(format!("cannot encode `{v}`: {e:?}")))
        };
        let setup = SetupConnectionOwned {
            protocol: Protocol::MiningProtocol,
            min_version: 2,
            max_version: 2,
            flags: match cfg.channel {
                ChannelKind::Extended => 0,
                ChannelKind::Standard => REQUIRES_STANDARD_JOBS,
            },
            endpoint_host: s(host)?,
            endpoint_port: port,
            vendor: s("jdc-sim-miner")?,
            hardware_version: s("cpu")?,
            firmware: s(env!("CARGO_PKG_VERSION"))?,
            device_id: s("")?,
        };
        writer
            .send(Message::Common(CommonMessagesOwned::SetupConnection(setup)))
            .await?;
        match self
            .recv_setup_reply(reader, "SetupConnection.Success")
            .await?
        {
            Message::Common(CommonMessagesOwned::SetupConnectionSuccess(ok)) => {
                tracing::debug!(
                    used_version = ok.used_version,
                    flags = ok.flags,
                    "setup done"
                );
                Ok(())
            }
            Message::Common(CommonMessagesOwned::SetupConnectionError(e)) => {
                let code = lossy(e.error_code.as_bytes());
                self.events.emit(Event::SetupError {
                    error_code: code.clone(),
                    flags: e.flags,
                });
                Err(SessionError::SetupRefused {
                    code,
                    flags: e.flags,
                })
            }
            other => Err(SessionError::Protocol(format!(
                "expected SetupConnection.Success, got {}",
                name(&other)
            ))),
        }
    }

    async fn open_channel(
        &self,
        reader: &mut Sv2Reader,
        writer: &mut Sv2Writer,
    ) -> Result<Channel, SessionError> {
        let cfg = self.config;
        let user = Str0255Owned::try_from(cfg.user_identity.as_str())
            .map_err(|e| SessionError::Protocol(format!("cannot encode user identity: {e:?}")))?;
        let max_target = U256Owned::from(cfg.max_target);
        let open = match cfg.channel {
            ChannelKind::Extended => {
                MiningOwned::OpenExtendedMiningChannel(OpenExtendedMiningChannelOwned {
                    request_id: OPEN_REQUEST_ID,
                    user_identity: user,
                    nominal_hash_rate: cfg.nominal_hashrate,
                    max_target,
                    min_extranonce_size: cfg.min_extranonce_size,
                })
            }
            ChannelKind::Standard => {
                MiningOwned::OpenStandardMiningChannel(OpenStandardMiningChannelOwned {
                    request_id: OPEN_REQUEST_ID,
                    user_identity: user,
                    nominal_hash_rate: cfg.nominal_hashrate,
                    max_target,
                })
            }
        };
        writer.send(Message::Mining(open)).await?;
        loop {
            let msg = self.recv_setup_reply(reader, "the channel to open").await?;
            let channel = match msg {
                Message::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(ok))
                    if ok.request_id == OPEN_REQUEST_ID =>
                {
                    Channel {
                        id: ok.channel_id,
                        group_id: ok.group_channel_id,
                        kind: ChannelKind::Extended,
                        extranonce_prefix: ok.extranonce_prefix.as_bytes().to_vec(),
                        extranonce_size: ok.extranonce_size as usize,
                        target: ok.target.to_array(),
                    }
                }
                Message::Mining(MiningOwned::OpenStandardMiningChannelSuccess(ok))
                    if ok.request_id == OPEN_REQUEST_ID =>
                {
                    Channel {
                        id: ok.channel_id,
                        group_id: ok.group_channel_id,
                        kind: ChannelKind::Standard,
                        extranonce_prefix: ok.extranonce_prefix.as_bytes().to_vec(),
                        extranonce_size: 0,
                        target: ok.target.to_array(),
                    }
                }
                Message::Mining(MiningOwned::OpenMiningChannelError(e)) => {
                    let code = lossy(e.error_code.as_bytes());
                    self.events.emit(Event::ChannelError {
                        error_code: code.clone(),
                    });
                    return Err(SessionError::ChannelRefused(code));
                }
                other => {
                    tracing::debug!(message = %name(&other), "ignored while opening the channel");
                    continue;
                }
            };
            if channel.kind != cfg.channel {
                return Err(SessionError::Protocol(format!(
                    "asked for a {} channel, got a {} one",
                    cfg.channel.as_str(),
                    channel.kind.as_str()
                )));
            }
            if channel.extranonce_prefix.len() + channel.extranonce_size > 32 {
                return Err(SessionError::Protocol(format!(
                    "extranonce prefix ({} bytes) + extranonce size ({}) exceed 32 bytes",
                    channel.extranonce_prefix.len(),
                    channel.extranonce_size
                )));
            }
            return Ok(channel);
        }
    }

    fn on_message(&self, msg: Message, book: &mut JobBook, t_us: u64) -> Result<(), SessionError> {
        let Message::Mining(msg) = msg else {
            tracing::debug!(message = %name(&msg), "ignoring non-mining message");
            return Ok(());
        };
        match msg {
            MiningOwned::NewExtendedMiningJob(j) if book.addresses_us(j.channel_id) => {
                let min_ntime = j.min_ntime.clone().into_inner();
                let body = JobBody::Extended {
                    version_rolling_allowed: j.version_rolling_allowed,
                    merkle_path: j.merkle_path.iter().map(|h| h.to_array()).collect(),
                    coinbase_prefix: j.coinbase_tx_prefix.as_bytes().to_vec(),
                    coinbase_suffix: j.coinbase_tx_suffix.as_bytes().to_vec(),
                };
                let outputs = coinbase_outputs(book.channel(), &body);
                let merkle_path_len = j.merkle_path.len();
                let job = Job {
                    id: j.job_id,
                    version: j.version,
                    body,
                };
                if book.on_job(job, min_ntime) {
                    self.hashers.publish(book.work());
                }
                self.events.emit(Event::NewJob {
                    channel_id: j.channel_id,
                    job_id: j.job_id,
                    future: min_ntime.is_none(),
                    version: j.version,
                    version_rolling_allowed: j.version_rolling_allowed,
                    merkle_path_len: Some(merkle_path_len),
                    coinbase_outputs: outputs,
                    t_us,
                });
            }
            MiningOwned::NewMiningJob(j) if book.addresses_us(j.channel_id) => {
                let min_ntime = j.min_ntime.clone().into_inner();
                let job = Job {
                    id: j.job_id,
                    version: j.version,
                    body: JobBody::Standard {
                        merkle_root: j.merkle_root.to_array(),
                    },
                };
                if book.on_job(job, min_ntime) {
                    self.hashers.publish(book.work());
                }
                self.events.emit(Event::NewJob {
                    channel_id: j.channel_id,
                    job_id: j.job_id,
                    future: min_ntime.is_none(),
                    version: j.version,
                    version_rolling_allowed: false,
                    merkle_path_len: None,
                    coinbase_outputs: None,
                    t_us,
                });
            }
            MiningOwned::SetNewPrevHash(p) if book.addresses_us(p.channel_id) => {
                let prev_hash = p.prev_hash.to_array();
                let known = book.on_prev_hash(
                    p.job_id,
                    Tip {
                        prev_hash,
                        nbits: p.nbits,
                        min_ntime: p.min_ntime,
                    },
                );
                self.hashers.publish(book.work());
                if !known {
                    tracing::warn!(
                        job_id = p.job_id,
                        "SetNewPrevHash for an unknown job: idle until the next job"
                    );
                }
                self.events.emit(Event::SetNewPrevHash {
                    channel_id: p.channel_id,
                    job_id: p.job_id,
                    prev_hash: rpc_hex(&prev_hash),
                    min_ntime: p.min_ntime,
                    nbits: p.nbits,
                    known_job: known,
                    t_us,
                });
            }
            MiningOwned::SetTarget(t) if book.addresses_us(t.channel_id) => {
                let target = t.maximum_target.to_array();
                book.set_target(target);
                self.hashers.publish(book.work());
                self.events.emit(Event::SetTarget {
                    channel_id: t.channel_id,
                    target: target_hex(&target),
                });
            }
            MiningOwned::SetExtranoncePrefix(p) if book.addresses_us(p.channel_id) => {
                let prefix = p.extranonce_prefix.as_bytes().to_vec();
                if prefix.len() + book.channel().extranonce_size > 32 {
                    return Err(SessionError::Protocol(format!(
                        "SetExtranoncePrefix of {} bytes leaves no room for {} extranonce bytes",
                        prefix.len(),
                        book.channel().extranonce_size
                    )));
                }
                book.set_extranonce_prefix(prefix.clone());
                self.hashers.publish(book.work());
                self.events.emit(Event::SetExtranoncePrefix {
                    channel_id: p.channel_id,
                    extranonce_prefix: hex::encode(prefix),
                });
            }
            MiningOwned::SubmitSharesSuccess(ok) => {
                self.events.emit(Event::ShareAccepted {
                    channel_id: ok.channel_id,
                    last_sequence_number: ok.last_sequence_number,
                    accepted_count: ok.new_submits_accepted_count,
                    shares_sum: ok.new_shares_sum,
                });
            }
            MiningOwned::SubmitSharesError(e) => {
                let code = lossy(e.error_code.as_bytes());
                tracing::info!(sequence = e.sequence_number, code = %code, "share rejected");
                self.events.emit(Event::ShareRejected {
                    channel_id: e.channel_id,
                    sequence_number: e.sequence_number,
                    error_code: code,
                });
            }
            MiningOwned::CloseChannel(c) if book.addresses_us(c.channel_id) => {
                let reason = lossy(c.reason_code.as_bytes());
                self.events.emit(Event::ChannelClosed {
                    channel_id: c.channel_id,
                    reason: reason.clone(),
                });
                return Err(SessionError::ChannelClosed(reason));
            }
            other => {
                tracing::debug!(message = %name(&Message::Mining(other)), "ignoring message");
            }
        }
        Ok(())
    }

    async fn submit(
        &self,
        share: FoundShare,
        book: &JobBook,
        sequence: &mut u32,
        writer: &mut Sv2Writer,
    ) -> Result<(), SessionError> {
        if share.session != self.id || share.channel_id != book.channel().id {
            return Ok(());
        }
        if book.tip().map(|t| t.prev_hash) != Some(share.prev_hash) {
            tracing::debug!(
                job_id = share.job_id,
                "dropping a share found on the previous tip"
            );
            return Ok(());
        }
        *sequence = sequence.wrapping_add(1);
        let msg = match book.channel().kind {
            ChannelKind::Extended => {
                let extranonce = B032Owned::new(share.extranonce.clone()).map_err(|e| {
                    SessionError::Protocol(format!("extranonce does not fit B0_32: {e:?}"))
                })?;
                MiningOwned::SubmitSharesExtended(SubmitSharesExtendedOwned {
                    channel_id: share.channel_id,
                    sequence_number: *sequence,
                    job_id: share.job_id,
                    nonce: share.nonce,
                    ntime: share.ntime,
                    version: share.version,
                    extranonce,
                })
            }
            ChannelKind::Standard => MiningOwned::SubmitSharesStandard(SubmitSharesStandard {
                channel_id: share.channel_id,
                sequence_number: *sequence,
                job_id: share.job_id,
                nonce: share.nonce,
                ntime: share.ntime,
                version: share.version,
            }),
        };
        writer.send(Message::Mining(msg)).await?;
        self.events.share_sent(share.channel_id, *sequence, &share);
        Ok(())
    }
}

/// Outputs of an extended job's coinbase (with a zero extranonce), if it parses.
fn coinbase_outputs(channel: &Channel, body: &JobBody) -> Option<Vec<CoinbaseOutput>> {
    let JobBody::Extended {
        coinbase_prefix,
        coinbase_suffix,
        ..
    } = body
    else {
        return None;
    };
    coinbase_outputs_of(
        coinbase_prefix,
        &channel.extranonce_prefix,
        channel.extranonce_size,
        coinbase_suffix,
    )
}

/// Outputs of the coinbase `head || extranonce_prefix || extranonce_size zeros || tail`, if it
/// parses as a transaction.
pub(crate) fn coinbase_outputs_of(
    head: &[u8],
    extranonce_prefix: &[u8],
    extranonce_size: usize,
    tail: &[u8],
) -> Option<Vec<CoinbaseOutput>> {
    let mut raw = head.to_vec();
    raw.extend_from_slice(extranonce_prefix);
    raw.extend(std::iter::repeat_n(0u8, extranonce_size));
    raw.extend_from_slice(tail);
    let tx: Transaction = consensus::deserialize(&raw).ok()?;
    Some(
        tx.output
            .iter()
            .map(|o| CoinbaseOutput {
                value: o.value.to_sat(),
                script: hex::encode(o.script_pubkey.as_bytes()),
            })
            .collect(),
    )
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Name of a message for logs, e.g. `SetTarget`.
fn name(msg: &Message) -> &'static str {
    parsers_sv2::message_type_to_name(msg.message_type())
}
