//! Client of a pool's Mining protocol endpoint as a Job Declaration Client: Noise NX with the
//! pool's authority key, `SetupConnection` requiring work selection and version rolling, and
//! the one extended channel that carries the work of all our devices.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jdc_shared::bitcoin::{secp256k1::XOnlyPublicKey, Target};
use jdc_shared::sv2::{Message, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::{B0255Owned, B032Owned, Str0255Owned, U256Owned};
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::mining_sv2::{
    OpenExtendedMiningChannelOwned, SetCustomMiningJobOwned, SubmitSharesExtendedOwned,
    UpdateChannelOwned,
};
use stratum_core::parsers_sv2::MiningOwned;

use super::{open_session, UpstreamError};

/// Mining `SetupConnection` flag: the client selects its own work (custom jobs).
pub const REQUIRES_WORK_SELECTION: u32 = 0b10;
/// Mining `SetupConnection` flag: the client rolls version bits.
pub const REQUIRES_VERSION_ROLLING: u32 = 0b100;

/// Where and how to reach the pool.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    /// `host:port`.
    pub address: String,
    /// The pool's authority public key.
    pub authority: XOnlyPublicKey,
    /// Our account at the pool (`OpenExtendedMiningChannel.user_identity`).
    pub user_identity: String,
    /// Summed nominal hashrate of our devices, hashes per second.
    pub nominal_hash_rate: f32,
    /// Extranonce bytes we need below the pool's prefix (our channel index + the devices' part).
    pub min_extranonce_size: u16,
    /// Limit for the handshake and for each answer the client waits for.
    pub timeout: Duration,
}

/// The pool channel as opened.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolChannel {
    /// Channel id at the pool.
    pub channel_id: u32,
    /// Current target for shares.
    pub target: Target,
    /// The pool's part of the extranonce.
    pub extranonce_prefix: Vec<u8>,
    /// Extranonce bytes after the prefix that are ours.
    pub extranonce_size: u16,
}

/// What the pool said, for the caller to act on.
#[derive(Debug, Clone, PartialEq)]
pub enum PoolEvent {
    /// New share target for the channel.
    Target(Target),
    /// New extranonce prefix (jobs must be rebuilt).
    ExtranoncePrefix(Vec<u8>),
    /// The pool closed the channel (a fallback trigger).
    Closed {
        /// Its reason code.
        reason: String,
    },
    /// Shares acknowledged.
    SharesAccepted {
        /// How many since the last acknowledgement.
        count: u32,
    },
    /// A share refused.
    ShareRejected {
        /// Its sequence number.
        sequence_number: u32,
        /// The pool's error code.
        code: String,
    },
    /// `SetCustomMiningJob` accepted: shares for it go with `job_id`.
    CustomJobAccepted {
        /// Our request id.
        request_id: u32,
        /// The pool's job id.
        job_id: u32,
    },
    /// `SetCustomMiningJob` refused (a fallback trigger unless the code is `stale-chain-tip`).
    CustomJobRejected {
        /// Our request id.
        request_id: u32,
        /// The pool's error code.
        code: String,
    },
    /// A message a JDC ignores (the pool's own jobs: we build ours).
    Ignored(String),
}

/// A share for the pool channel: the header fields a device found and the extranonce bytes
/// under the pool's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamShare {
    /// The pool's job id (from `SetCustomMiningJob.Success`).
    pub job_id: u32,
    /// Header nonce.
    pub nonce: u32,
    /// Header time.
    pub ntime: u32,
    /// Header version.
    pub version: u32,
    /// Extranonce after the pool's prefix (exactly the channel's `extranonce_size` bytes).
    pub extranonce: Vec<u8>,
}

/// A connected pool with our channel open.
pub struct PoolClient {
    name: String,
    reader: Sv2Reader,
    writer: Sv2Writer,
    channel: PoolChannel,
    /// Sequence number of the last share sent.
    share_seq: u32,
    /// How long the pool has to answer.
    timeout: Duration,
    /// `SetCustomMiningJob` requests not answered yet, by request id: when each was sent.
    custom_jobs: HashMap<u32, Instant>,
}

impl PoolClient {
    /// Connects, runs the handshake (verifying the authority key) and `SetupConnection`, and
    /// opens the extended channel.
    pub async fn connect(settings: &PoolSettings) -> Result<PoolClient, UpstreamError> {
        let name = format!("pool {}", settings.address);
        let (mut reader, mut writer) = open_session(
            &name,
            &settings.address,
            settings.authority,
            Protocol::MiningProtocol,
            REQUIRES_WORK_SELECTION | REQUIRES_VERSION_ROLLING,
            settings.timeout,
        )
        .await?;
        let protocol = |detail: String| UpstreamError::Protocol {
            upstream: name.clone(),
            detail,
        };
        let open = OpenExtendedMiningChannelOwned {
            request_id: 1,
            user_identity: Str0255Owned::try_from(settings.user_identity.as_str()).map_err(
                |e| {
                    protocol(format!(
                        "user identity `{}` does not fit: {e:?}",
                        settings.user_identity
                    ))
                },
            )?,
            nominal_hash_rate: settings.nominal_hash_rate,
            max_target: U256Owned::from([0xff; 32]),
            min_extranonce_size: settings.min_extranonce_size,
        };
        writer
            .send(Message::Mining(MiningOwned::OpenExtendedMiningChannel(
                open,
            )))
            .await
            .map_err(|e| protocol(format!("cannot send OpenExtendedMiningChannel: {e}")))?;
        let answer = tokio::time::timeout(settings.timeout, reader.recv())
            .await
            .map_err(|_| UpstreamError::Timeout {
                upstream: name.clone(),
                waiting_for: "OpenExtendedMiningChannel",
                timeout: settings.timeout,
            })?
            .map_err(|e| UpstreamError::from_read(&name, &e, settings.timeout))?;
        let channel = match answer {
            Message::Mining(MiningOwned::OpenExtendedMiningChannelSuccess(ok)) => PoolChannel {
                channel_id: ok.channel_id,
                target: Target::from_le_bytes(ok.target.to_array()),
                extranonce_prefix: ok.extranonce_prefix.as_bytes().to_vec(),
                extranonce_size: ok.extranonce_size,
            },
            Message::Mining(MiningOwned::OpenMiningChannelError(e)) => {
                return Err(UpstreamError::ChannelRefused {
                    upstream: name.clone(),
                    code: String::from_utf8_lossy(e.error_code.as_bytes()).into_owned(),
                })
            }
            other => {
                return Err(protocol(format!(
                    "answered OpenExtendedMiningChannel with {}",
                    crate::downstream::message_name(&other)
                )))
            }
        };
        if channel.extranonce_size < settings.min_extranonce_size {
            return Err(UpstreamError::ExtranonceTooSmall {
                upstream: name.clone(),
                got: channel.extranonce_size,
                need: settings.min_extranonce_size,
            });
        }
        tracing::debug!(
            upstream = %name,
            channel_id = channel.channel_id,
            extranonce_prefix = %hex::encode(&channel.extranonce_prefix),
            extranonce_size = channel.extranonce_size,
            "pool channel open"
        );
        Ok(PoolClient {
            name,
            reader,
            writer,
            channel,
            share_seq: 0,
            timeout: settings.timeout,
            custom_jobs: HashMap::new(),
        })
    }

    /// The upstream's name for logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The channel as it stands (target and prefix follow the pool's updates).
    pub fn channel(&self) -> &PoolChannel {
        &self.channel
    }

    /// Tells the pool our devices' summed nominal hashrate.
    pub async fn update_hashrate(&mut self, nominal_hash_rate: f32) -> Result<(), UpstreamError> {
        let msg = UpdateChannelOwned {
            channel_id: self.channel.channel_id,
            nominal_hash_rate,
            maximum_target: U256Owned::from([0xff; 32]),
        };
        self.writer
            .send(Message::Mining(MiningOwned::UpdateChannel(msg)))
            .await
            .map_err(|e| self.protocol(format!("cannot send UpdateChannel: {e}")))
    }

    /// Sends `SetCustomMiningJob` on our channel with `token` (the declared job's token in
    /// Full-Template mode, the allocation token in Coinbase-only mode). The answer comes as
    /// [`PoolEvent::CustomJobAccepted`] or [`PoolEvent::CustomJobRejected`].
    pub async fn set_custom_job(
        &mut self,
        mut job: SetCustomMiningJobOwned,
        token: &[u8],
    ) -> Result<(), UpstreamError> {
        job.channel_id = self.channel.channel_id;
        job.token = B0255Owned::new(token.to_vec())
            .map_err(|e| self.protocol(format!("token does not fit B0_255: {e:?}")))?;
        self.custom_jobs.insert(job.request_id, Instant::now());
        self.writer
            .send(Message::Mining(MiningOwned::SetCustomMiningJob(job)))
            .await
            .map_err(|e| self.protocol(format!("cannot send SetCustomMiningJob: {e}")))
    }

    /// Sends a share; returns its sequence number.
    pub async fn submit_share(&mut self, share: UpstreamShare) -> Result<u32, UpstreamError> {
        if share.extranonce.len() != usize::from(self.channel.extranonce_size) {
            return Err(self.protocol(format!(
                "internal: share with {} extranonce bytes on a channel of {}",
                share.extranonce.len(),
                self.channel.extranonce_size
            )));
        }
        self.share_seq = self.share_seq.wrapping_add(1);
        let msg = SubmitSharesExtendedOwned {
            channel_id: self.channel.channel_id,
            sequence_number: self.share_seq,
            job_id: share.job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
            extranonce: B032Owned::new(share.extranonce)
                .map_err(|e| self.protocol(format!("extranonce does not fit B0_32: {e:?}")))?,
        };
        self.writer
            .send(Message::Mining(MiningOwned::SubmitSharesExtended(msg)))
            .await
            .map_err(|e| self.protocol(format!("cannot send SubmitSharesExtended: {e}")))?;
        Ok(self.share_seq)
    }

    /// When the oldest unanswered `SetCustomMiningJob` is overdue (sent more than the
    /// timeout ago), if one is pending: a pool that stops answering is a fallback trigger.
    pub fn deadline(&self) -> Option<Instant> {
        self.custom_jobs
            .values()
            .min()
            .map(|sent| *sent + self.timeout)
    }

    /// The error for a missed [`PoolClient::deadline`].
    pub fn overdue(&self) -> UpstreamError {
        UpstreamError::Timeout {
            upstream: self.name.clone(),
            waiting_for: "SetCustomMiningJob",
            timeout: self.timeout,
        }
    }

    /// Reads the next message from the pool and applies what concerns the channel.
    pub async fn recv(&mut self) -> Result<PoolEvent, UpstreamError> {
        let msg = self
            .reader
            .recv()
            .await
            .map_err(|e| UpstreamError::from_read(&self.name, &e, self.timeout))?;
        let ours = |id: u32| id == self.channel.channel_id;
        let event = match msg {
            Message::Mining(MiningOwned::SetTarget(t)) if ours(t.channel_id) => {
                self.channel.target = Target::from_le_bytes(t.maximum_target.to_array());
                PoolEvent::Target(self.channel.target)
            }
            Message::Mining(MiningOwned::SetExtranoncePrefix(p)) if ours(p.channel_id) => {
                let prefix = p.extranonce_prefix.as_bytes().to_vec();
                self.channel.extranonce_prefix = prefix.clone();
                PoolEvent::ExtranoncePrefix(prefix)
            }
            Message::Mining(MiningOwned::CloseChannel(c)) if ours(c.channel_id) => {
                PoolEvent::Closed {
                    reason: String::from_utf8_lossy(c.reason_code.as_bytes()).into_owned(),
                }
            }
            Message::Mining(MiningOwned::SubmitSharesSuccess(s)) if ours(s.channel_id) => {
                PoolEvent::SharesAccepted {
                    count: s.new_submits_accepted_count,
                }
            }
            Message::Mining(MiningOwned::SubmitSharesError(e)) if ours(e.channel_id) => {
                PoolEvent::ShareRejected {
                    sequence_number: e.sequence_number,
                    code: String::from_utf8_lossy(e.error_code.as_bytes()).into_owned(),
                }
            }
            Message::Mining(MiningOwned::SetCustomMiningJobSuccess(s)) if ours(s.channel_id) => {
                self.custom_jobs.remove(&s.request_id);
                PoolEvent::CustomJobAccepted {
                    request_id: s.request_id,
                    job_id: s.job_id,
                }
            }
            Message::Mining(MiningOwned::SetCustomMiningJobError(e)) if ours(e.channel_id) => {
                self.custom_jobs.remove(&e.request_id);
                PoolEvent::CustomJobRejected {
                    request_id: e.request_id,
                    code: String::from_utf8_lossy(e.error_code.as_bytes()).into_owned(),
                }
            }
            Message::Mining(
                m @ (MiningOwned::NewExtendedMiningJob(_)
                | MiningOwned::NewMiningJob(_)
                | MiningOwned::SetNewPrevHash(_)
                | MiningOwned::SetGroupChannel(_)),
            ) => PoolEvent::Ignored(crate::downstream::message_name(&Message::Mining(m))),
            other => {
                return Err(self.protocol(format!(
                    "sent {}, which does not fit our channel {}",
                    crate::downstream::message_name(&other),
                    self.channel.channel_id
                )))
            }
        };
        Ok(event)
    }

    fn protocol(&self, detail: String) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            detail,
        }
    }
}
