//! A strict test pool on SRI's crates: the Mining protocol side a Job Declaration Client talks
//! to. The channel it opens is SRI's own server channel (`channels_sv2`), so targets, extranonce
//! prefixes, custom jobs and shares are checked as a real SRI pool checks them; custom jobs must
//! also carry a token the (linked) test JDS accepted a declaration for, with byte-identical
//! coinbase outputs. Violations of what a pool checks are
//! recorded in [`TestPool::violations`] and drop the connection. It can be told to misbehave.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use jdc_shared::bitcoin::consensus::deserialize;
use jdc_shared::bitcoin::{Target, TxOut};
use jdc_shared::sv2::{AuthorityKeys, Message, Sv2Error, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::{B032Owned, Str0255Owned, U256Owned};
use stratum_core::channels_sv2::extranonce_manager::ExtranonceAllocator;
use stratum_core::channels_sv2::server::extended::ExtendedChannel;
use stratum_core::channels_sv2::server::share_accounting::{
    ShareValidationError, ShareValidationResult,
};
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_core::mining_sv2::{
    CloseChannelOwned, OpenExtendedMiningChannelOwned, OpenExtendedMiningChannelSuccessOwned,
    OpenMiningChannelErrorOwned, SetCustomMiningJobErrorOwned, SetCustomMiningJobOwned,
    SetCustomMiningJobSuccessOwned, SetExtranoncePrefixOwned, SetTargetOwned,
    SubmitSharesErrorOwned, SubmitSharesExtendedOwned, SubmitSharesSuccessOwned,
};

use crate::jds::{accept_setup, AcceptedDeclaration, TestJds, TokenOutputs};
use stratum_core::parsers_sv2::{CommonMessagesOwned, MiningOwned};
use tokio::net::TcpListener;

/// The `[[declarator.upstream]]` entry of a pool at `pool` (`host:port`) and its JDS (one
/// authority key, as a real pool has).
pub fn upstream_entry(pool: &str, jds: &TestJds, mode: &str) -> String {
    format!(
        "\n[[declarator.upstream]]\npool = \"{pool}\"\njds = \"{}\"\nauthority_public_key = \"{}\"\nuser_identity = \"operator.rig\"\nmode = \"{mode}\"\n",
        jds.addr,
        jdc_shared::sv2::encode_authority_public_key(&jds.keys.public_key())
    )
}

/// How the test pool departs from a correct one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolMisbehave {
    /// Behaves.
    No,
    /// Refuses every channel (`OpenMiningChannel.Error`).
    RefuseChannel,
    /// Opens the channel with fewer extranonce bytes than asked for.
    SmallExtranonce,
    /// Closes the channel right after opening it.
    CloseChannel,
    /// Closes the channel once it has received this many shares (devices are mining by then).
    CloseAfterShares(usize),
    /// Gives our channel a new extranonce prefix (same length) after this many shares.
    ChangePrefixAfterShares(usize),
    /// Like `CloseAfterShares` on the first connection only; later ones behave (a pool that
    /// recovers).
    CloseAfterSharesOnce(usize),
    /// Refuses every custom job (`SetCustomMiningJob.Error` `invalid-job`).
    RefuseCustomJobs,
    /// Rejects every share (`SubmitShares.Error` `invalid-share`, recorded in
    /// [`TestPool::shares`]) without looking at it.
    RejectShares,
    /// Presents an expired certificate (see [`crate::jds::Misbehave::ExpiredCertificate`]); a
    /// client that completes the handshake anyway is a violation.
    ExpiredCertificate,
    /// Opens the channel, then never answers anything again, keeping the connection open (a
    /// stalled pool).
    Stall,
    /// Answers the first `SetCustomMiningJob` with bytes that are not an SV2 frame.
    Garbage,
    /// Refuses every custom job with an error code no specification or implementation uses
    /// ([`UNKNOWN_ERROR_CODE`]).
    UnknownErrorCode,
}

/// The error code of [`PoolMisbehave::UnknownErrorCode`] (and of the test JDS's).
pub const UNKNOWN_ERROR_CODE: &str = "gremlins-ate-it";

/// The pool's extranonce prefix length for our channel (as an SRI pool with a 4-byte static
/// prefix would give).
pub const POOL_PREFIX_LEN: usize = 4;

/// A running test pool.
pub struct TestPool {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its authority key pair.
    pub keys: AuthorityKeys,
    /// Nominal hashrates received in `OpenExtendedMiningChannel` and `UpdateChannel`, in order.
    pub hashrates: Arc<Mutex<Vec<f32>>>,
    /// Rule violations by clients; a test expects none.
    pub violations: Arc<Mutex<Vec<String>>>,
    /// Shares accepted and refused (with codes), in order.
    pub shares: Arc<Mutex<Vec<Result<(), String>>>>,
    /// Custom jobs accepted, in order.
    pub jobs: Arc<Mutex<Vec<AcceptedJob>>>,
    /// Extranonce prefix changes sent.
    pub prefix_changes: Arc<Mutex<usize>>,
    /// Open connections, to drop them all at once.
    crash: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

/// A custom job the test pool accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptedJob {
    /// Its previous block hash (internal byte order).
    pub prev_hash: [u8; 32],
    /// Length of its merkle path (0: a coinbase-only block).
    pub merkle_path_len: usize,
    /// When the pool accepted it (unix µs).
    pub at_us: u64,
}

impl Drop for TestPool {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestPool {
    /// Starts listening on 127.0.0.1 (any port), without a JDS: custom jobs are refused.
    pub async fn start(misbehave: PoolMisbehave) -> anyhow::Result<TestPool> {
        Self::start_inner(
            misbehave,
            Arc::default(),
            Arc::default(),
            Arc::default(),
            AuthorityKeys::generate(),
            [0xaa, 0xbb],
            0,
        )
        .await
    }

    /// Starts listening as the pool of `jds`: under its authority key, accepting custom jobs
    /// declared to it.
    pub async fn start_with_jds(
        misbehave: PoolMisbehave,
        jds: &TestJds,
    ) -> anyhow::Result<TestPool> {
        Self::start_with_jds_prefix(misbehave, jds, [0xaa, 0xbb]).await
    }

    /// [`TestPool::start_with_jds`] whose extranonce prefixes start with `tag` (two pools give
    /// different prefixes).
    pub async fn start_with_jds_prefix(
        misbehave: PoolMisbehave,
        jds: &TestJds,
        tag: [u8; 2],
    ) -> anyhow::Result<TestPool> {
        Self::start_with_jds_on(misbehave, jds, tag, 0).await
    }

    /// [`TestPool::start_with_jds_prefix`] listening on 127.0.0.1:`port` (0: any port), e.g. a
    /// port a client was told about before the pool came up (pick it with
    /// [`crate::bitcoind::free_port`]).
    pub async fn start_with_jds_on(
        misbehave: PoolMisbehave,
        jds: &TestJds,
        tag: [u8; 2],
        port: u16,
    ) -> anyhow::Result<TestPool> {
        Self::start_inner(
            misbehave,
            jds.declared.clone(),
            jds.coinbase_only_tokens.clone(),
            jds.outputs.clone(),
            jds.keys.clone(),
            tag,
            port,
        )
        .await
    }

    async fn start_inner(
        misbehave: PoolMisbehave,
        declared: Arc<Mutex<Vec<AcceptedDeclaration>>>,
        allocated: Arc<Mutex<Vec<Vec<u8>>>>,
        token_outputs: TokenOutputs,
        keys: AuthorityKeys,
        tag: [u8; 2],
        port: u16,
    ) -> anyhow::Result<TestPool> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let hashrates: Arc<Mutex<Vec<f32>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let shares: Arc<Mutex<Vec<Result<(), String>>>> = Arc::default();
        let jobs: Arc<Mutex<Vec<AcceptedJob>>> = Arc::default();
        let prefix_changes: Arc<Mutex<usize>> = Arc::default();
        let shared = Shared {
            jobs: jobs.clone(),
            prefix_changes: prefix_changes.clone(),
            keys: keys.clone(),
            misbehave,
            hashrates: hashrates.clone(),
            violations: violations.clone(),
            shares: shares.clone(),
            declared,
            allocated,
            token_outputs,
            tag,
            connections: Arc::default(),
            used_tokens: Arc::default(),
        };
        let open: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let crash = open.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let shared = shared.clone();
                let connection = tokio::spawn(async move {
                    if let Err(why) = shared.serve(stream).await {
                        // A client hanging up while we answer ends the session like a
                        // hang-up between messages: not a violation.
                        if !crate::peer_hung_up(&why) {
                            shared.violation(why);
                        }
                    }
                });
                if let Ok(mut open) = open.lock() {
                    open.retain(|c| !c.is_finished());
                    open.push(connection.abort_handle());
                }
            }
        });
        Ok(TestPool {
            addr,
            keys,
            hashrates,
            violations,
            shares,
            jobs,
            prefix_changes,
            crash,
            task,
        })
    }

    /// Drops every open connection at once, as a crashed pool would; the listener stays up,
    /// so the pool is back for new connections.
    pub fn drop_connections(&self) {
        if let Ok(mut open) = self.crash.lock() {
            for connection in open.drain(..) {
                connection.abort();
            }
        }
    }

    /// Violations recorded so far.
    pub fn violations(&self) -> Vec<String> {
        self.violations
            .lock()
            .map(|v| v.clone())
            .unwrap_or_default()
    }

    /// Nominal hashrates received so far.
    pub fn hashrates(&self) -> Vec<f32> {
        self.hashrates.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Custom jobs accepted so far.
    pub fn jobs(&self) -> Vec<AcceptedJob> {
        self.jobs.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Shares received so far: `Ok` accepted, `Err(code)` refused.
    pub fn shares(&self) -> Vec<Result<(), String>> {
        self.shares.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

#[derive(Clone)]
struct Shared {
    keys: AuthorityKeys,
    misbehave: PoolMisbehave,
    hashrates: Arc<Mutex<Vec<f32>>>,
    violations: Arc<Mutex<Vec<String>>>,
    shares: Arc<Mutex<Vec<Result<(), String>>>>,
    jobs: Arc<Mutex<Vec<AcceptedJob>>>,
    prefix_changes: Arc<Mutex<usize>>,
    declared: Arc<Mutex<Vec<AcceptedDeclaration>>>,
    /// Tokens the JDS allocated on Coinbase-only connections (used directly, undeclared).
    allocated: Arc<Mutex<Vec<Vec<u8>>>>,
    /// The outputs the JDS handed out with each token.
    token_outputs: TokenOutputs,
    /// First bytes of every extranonce prefix this pool gives.
    tag: [u8; 2],
    /// Channels served so far.
    connections: Arc<std::sync::atomic::AtomicUsize>,
    used_tokens: Arc<Mutex<Vec<Vec<u8>>>>,
}

fn sv2_str(s: &str) -> Result<Str0255Owned, String> {
    Str0255Owned::try_from(s).map_err(|e| format!("{e:?}"))
}

impl Shared {
    fn violation(&self, why: String) {
        if let Ok(mut v) = self.violations.lock() {
            v.push(why);
        }
    }

    fn record_hashrate(&self, h: f32) -> Result<(), String> {
        if !h.is_finite() || h < 0.0 {
            return Err(format!(
                "nominal hashrate {h} is not a finite non-negative number"
            ));
        }
        if let Ok(mut v) = self.hashrates.lock() {
            v.push(h);
        }
        Ok(())
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> Result<(), String> {
        let expired = self.misbehave == PoolMisbehave::ExpiredCertificate;
        let Some((mut reader, mut writer, setup)) =
            accept_setup(stream, &self.keys, expired).await?
        else {
            return Ok(());
        };
        self.setup(&setup, &mut writer).await?;
        let open = match reader.recv().await {
            Ok(Message::Mining(MiningOwned::OpenExtendedMiningChannel(o))) => o,
            Ok(other) => return Err(format!("expected OpenExtendedMiningChannel, got {other:?}")),
            Err(e) => return Err(format!("reading OpenExtendedMiningChannel: {e}")),
        };
        let Some((channel, allocator, rollable)) = self.open(&open, &mut writer).await? else {
            return Ok(());
        };
        self.serve_channel(channel, allocator, rollable, &mut reader, &mut writer)
            .await
    }

    async fn setup(&self, s: &SetupConnectionOwned, writer: &mut Sv2Writer) -> Result<(), String> {
        if s.protocol != Protocol::MiningProtocol {
            return Err(format!("SetupConnection for {:?}", s.protocol));
        }
        if !(s.min_version..=s.max_version).contains(&2) {
            return Err("SetupConnection excludes version 2".into());
        }
        if s.vendor.as_bytes().is_empty() || s.firmware.as_bytes().is_empty() {
            return Err("SetupConnection without vendor or firmware".into());
        }
        // A Job Declaration Client selects its work and rolls versions.
        let missing = 0b110 & !s.flags;
        if missing != 0 {
            writer
                .send(Message::Common(CommonMessagesOwned::SetupConnectionError(
                    SetupConnectionErrorOwned {
                        flags: missing,
                        error_code: sv2_str("unsupported-feature-flags")?,
                    },
                )))
                .await
                .map_err(|e| e.to_string())?;
            return Err(format!(
                "a JDC must set REQUIRES_WORK_SELECTION and REQUIRES_VERSION_ROLLING (flags {:#x})",
                s.flags
            ));
        }
        writer
            .send(Message::Common(
                CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccessOwned {
                    used_version: 2,
                    flags: s.flags & 0b110,
                }),
            ))
            .await
            .map_err(|e| e.to_string())
    }

    /// Opens the channel (or refuses it as told); `None` when refused.
    async fn open(
        &self,
        o: &OpenExtendedMiningChannelOwned,
        writer: &mut Sv2Writer,
    ) -> Result<Option<(ExtendedChannel, ExtranonceAllocator, u16)>, String> {
        let user = String::from_utf8_lossy(o.user_identity.as_bytes()).into_owned();
        if user.is_empty() {
            return Err("OpenExtendedMiningChannel without a user identity".into());
        }
        self.record_hashrate(o.nominal_hash_rate)?;
        if self.misbehave == PoolMisbehave::RefuseChannel {
            writer
                .send(Message::Mining(MiningOwned::OpenMiningChannelError(
                    OpenMiningChannelErrorOwned {
                        request_id: o.request_id,
                        error_code: sv2_str("unknown-user")?,
                    },
                )))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(None);
        }
        let rollable = o.min_extranonce_size.max(8);
        let total = POOL_PREFIX_LEN + usize::from(rollable);
        let mut allocator = ExtranonceAllocator::new(self.tag.to_vec(), total as u8, 1024)
            .map_err(|e| format!("allocator: {e:?}"))?;
        let prefix = allocator
            .allocate_extended(usize::from(rollable))
            .map_err(|e| format!("cannot give {rollable} extranonce bytes: {e:?}"))?;
        let prefix_bytes = prefix.as_bytes().to_vec();
        let channel = ExtendedChannel::new_for_pool(
            7,
            user,
            prefix,
            Target::from_le_bytes(o.max_target.to_array()),
            o.nominal_hash_rate,
            true,
            rollable,
            10,
            6.0,
            "test-pool".into(),
            None,
        )
        .map_err(|e| format!("channels_sv2 refused the channel: {e:?}"))?;
        let extranonce_size = if self.misbehave == PoolMisbehave::SmallExtranonce {
            o.min_extranonce_size.saturating_sub(1)
        } else {
            rollable
        };
        writer
            .send(Message::Mining(
                MiningOwned::OpenExtendedMiningChannelSuccess(
                    OpenExtendedMiningChannelSuccessOwned {
                        request_id: o.request_id,
                        channel_id: 7,
                        target: U256Owned::from(channel.get_target().to_le_bytes()),
                        extranonce_size,
                        extranonce_prefix: B032Owned::new(prefix_bytes)
                            .map_err(|e| format!("{e:?}"))?,
                        group_channel_id: 0,
                    },
                ),
            ))
            .await
            .map_err(|e| e.to_string())?;
        if self.misbehave == PoolMisbehave::CloseChannel {
            writer
                .send(Message::Mining(MiningOwned::CloseChannel(
                    CloseChannelOwned {
                        channel_id: 7,
                        reason_code: sv2_str("pool-shutting-down")?,
                    },
                )))
                .await
                .map_err(|e| e.to_string())?;
        }
        Ok(Some((channel, allocator, rollable)))
    }

    async fn serve_channel(
        &self,
        mut channel: ExtendedChannel,
        mut allocator: ExtranonceAllocator,
        rollable: u16,
        reader: &mut Sv2Reader,
        writer: &mut Sv2Writer,
    ) -> Result<(), String> {
        let mut received = 0usize;
        let first_connection = self
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            == 0;
        loop {
            let msg = match reader.recv().await {
                Ok(m) => m,
                Err(Sv2Error::Closed | Sv2Error::Io(_)) => return Ok(()),
                Err(e) => return Err(format!("reading from the client: {e}")),
            };
            if self.misbehave == PoolMisbehave::Stall {
                continue;
            }
            match msg {
                Message::Mining(MiningOwned::SetCustomMiningJob(_))
                    if self.misbehave == PoolMisbehave::Garbage =>
                {
                    writer
                        .send_raw_for_tests(b"this is not an SV2 frame at all")
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Message::Mining(MiningOwned::UpdateChannel(u)) => {
                    if u.channel_id != 7 {
                        return Err(format!("UpdateChannel for channel {}", u.channel_id));
                    }
                    self.record_hashrate(u.nominal_hash_rate)?;
                    channel
                        .update_channel(
                            u.nominal_hash_rate,
                            Some(Target::from_le_bytes(u.maximum_target.to_array())),
                        )
                        .map_err(|e| format!("channels_sv2 refused UpdateChannel: {e:?}"))?;
                    writer
                        .send(Message::Mining(MiningOwned::SetTarget(SetTargetOwned {
                            channel_id: 7,
                            maximum_target: U256Owned::from(channel.get_target().to_le_bytes()),
                        })))
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Message::Mining(MiningOwned::SetCustomMiningJob(m)) => {
                    let answer = self.custom_job(&mut channel, m)?;
                    writer.send(answer).await.map_err(|e| e.to_string())?;
                }
                Message::Mining(MiningOwned::SubmitSharesExtended(sh)) => {
                    let answer = self.share(&mut channel, sh)?;
                    writer.send(answer).await.map_err(|e| e.to_string())?;
                    received += 1;
                    let close_once = first_connection
                        && self.misbehave == PoolMisbehave::CloseAfterSharesOnce(received);
                    if self.misbehave == PoolMisbehave::ChangePrefixAfterShares(received) {
                        let prefix = allocator
                            .allocate_extended(usize::from(rollable))
                            .map_err(|e| format!("new prefix: {e:?}"))?;
                        let bytes = prefix.as_bytes().to_vec();
                        channel
                            .set_extranonce_prefix(prefix)
                            .map_err(|e| format!("channels_sv2 refused the new prefix: {e:?}"))?;
                        writer
                            .send(Message::Mining(MiningOwned::SetExtranoncePrefix(
                                SetExtranoncePrefixOwned {
                                    channel_id: 7,
                                    extranonce_prefix: B032Owned::new(bytes)
                                        .map_err(|e| format!("{e:?}"))?,
                                },
                            )))
                            .await
                            .map_err(|e| e.to_string())?;
                        if let Ok(mut c) = self.prefix_changes.lock() {
                            *c += 1;
                        }
                    }
                    if close_once || self.misbehave == PoolMisbehave::CloseAfterShares(received) {
                        writer
                            .send(Message::Mining(MiningOwned::CloseChannel(
                                CloseChannelOwned {
                                    channel_id: 7,
                                    reason_code: sv2_str("pool-shutting-down")?,
                                },
                            )))
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                other => return Err(format!("unexpected message {other:?}")),
            }
        }
    }

    /// Checks a custom job against the JDS's accepted declarations and SRI's channel.
    fn custom_job(
        &self,
        channel: &mut ExtendedChannel,
        m: SetCustomMiningJobOwned,
    ) -> Result<Message, String> {
        let (channel_id, request_id) = (m.channel_id, m.request_id);
        let error = |code: &str| -> Result<Message, String> {
            Ok(Message::Mining(MiningOwned::SetCustomMiningJobError(
                SetCustomMiningJobErrorOwned {
                    channel_id,
                    request_id,
                    error_code: sv2_str(code)?,
                },
            )))
        };
        if channel_id != 7 {
            return Err(format!("SetCustomMiningJob for channel {channel_id}"));
        }
        if self.misbehave == PoolMisbehave::RefuseCustomJobs {
            return error("invalid-job");
        }
        if self.misbehave == PoolMisbehave::UnknownErrorCode {
            return error(UNKNOWN_ERROR_CODE);
        }
        let token = m.token.as_bytes().to_vec();
        let declared = self
            .declared
            .lock()
            .map_err(|e| e.to_string())?
            .iter()
            .find(|d| d.new_token == token)
            .cloned();
        // Coinbase-only mode: a token the JDS allocated, never declared with.
        let allocated = self
            .allocated
            .lock()
            .map_err(|e| e.to_string())?
            .contains(&token);
        if declared.is_none() && !allocated {
            return error("invalid-mining-job-token");
        }
        {
            let mut used = self.used_tokens.lock().map_err(|e| e.to_string())?;
            if used.contains(&token) {
                return error("invalid-mining-job-token");
            }
            used.push(token);
        }
        match &declared {
            Some(d) if m.coinbase_tx_outputs.as_bytes() != d.outputs.as_slice() => {
                self.violation("custom job outputs differ from the declared ones".into());
                return error("invalid-coinbase-tx-outputs");
            }
            Some(d) => {
                if let Some(why) = differs_from_declaration(&m, d) {
                    self.violation(format!("custom job differs from its declaration: {why}"));
                    return error("invalid-job-param-value");
                }
            }
            None => {
                // Undeclared: the pool still checks that its payout comes first (the one given
                // with the token), with a reward.
                let outputs: Vec<TxOut> = deserialize(m.coinbase_tx_outputs.as_bytes())
                    .map_err(|e| format!("custom job outputs do not parse: {e}"))?;
                let payout = self
                    .token_outputs
                    .lock()
                    .map_err(|e| e.to_string())?
                    .get(m.token.as_bytes())
                    .and_then(|o| o.first())
                    .map_or_else(crate::jds::pool_payout_script, |o| o.script_pubkey.clone());
                let pays_pool = outputs
                    .first()
                    .is_some_and(|o| o.script_pubkey == payout && o.value.to_sat() > 0);
                if !pays_pool {
                    self.violation("custom job does not pay the pool first".into());
                    return error("invalid-coinbase-tx-outputs");
                }
            }
        }
        let accepted = AcceptedJob {
            prev_hash: m.prev_hash.to_array(),
            merkle_path_len: m.merkle_path.len(),
            at_us: jdc_shared::time::now_micros(),
        };
        match channel.on_set_custom_mining_job(m) {
            Ok(job_id) => {
                if let Ok(mut j) = self.jobs.lock() {
                    j.push(accepted);
                }
                Ok(Message::Mining(MiningOwned::SetCustomMiningJobSuccess(
                    SetCustomMiningJobSuccessOwned {
                        channel_id,
                        request_id,
                        job_id,
                    },
                )))
            }
            Err(e) => {
                self.violation(format!("channels_sv2 refused the custom job: {e:?}"));
                error("invalid-job")
            }
        }
    }

    /// Answers a share with SRI's channel's verdict (or a rejection, as told) and records it.
    fn share(
        &self,
        channel: &mut ExtendedChannel,
        sh: SubmitSharesExtendedOwned,
    ) -> Result<Message, String> {
        let (channel_id, seq) = (sh.channel_id, sh.sequence_number);
        let verdict = if self.misbehave == PoolMisbehave::RejectShares {
            Err("invalid-share".to_string())
        } else {
            channel_verdict(channel, sh)
        };
        if let Ok(mut s) = self.shares.lock() {
            s.push(verdict.clone());
        }
        Ok(Message::Mining(match verdict {
            Ok(()) => MiningOwned::SubmitSharesSuccess(SubmitSharesSuccessOwned {
                channel_id,
                last_sequence_number: seq,
                new_submits_accepted_count: 1,
                new_shares_sum: 1,
            }),
            Err(code) => MiningOwned::SubmitSharesError(SubmitSharesErrorOwned {
                channel_id,
                sequence_number: seq,
                error_code: sv2_str(&code)?,
            }),
        }))
    }
}

/// SRI's channel's verdict on a share: `Err(code)` when it is refused.
fn channel_verdict(
    channel: &mut ExtendedChannel,
    sh: SubmitSharesExtendedOwned,
) -> Result<(), String> {
    match channel.validate_share(sh) {
        Ok(ShareValidationResult::Valid(_) | ShareValidationResult::BlockFound(..)) => Ok(()),
        Err(
            ShareValidationError::Invalid(c)
            | ShareValidationError::Stale(c)
            | ShareValidationError::InvalidJobId(c)
            | ShareValidationError::DoesNotMeetTarget(c)
            | ShareValidationError::VersionRollingNotAllowed(c)
            | ShareValidationError::DuplicateShare(c)
            | ShareValidationError::BadExtranonceSize(c),
        ) => Err(c.to_string()),
        Err(other) => Err(format!("{other:?}")),
    }
}

/// What a custom job changes of the job its token was declared with (as a pool checks against
/// its JDS): block and coinbase versions, the coinbase's scriptSig prefix, sequence and lock
/// time, and the merkle path of the declared transactions.
fn differs_from_declaration(
    m: &SetCustomMiningJobOwned,
    d: &crate::jds::AcceptedDeclaration,
) -> Option<String> {
    if m.version != d.version {
        return Some(format!(
            "version {:#x}, declared {:#x}",
            m.version, d.version
        ));
    }
    if i64::from(m.coinbase_tx_version) != i64::from(d.coinbase_version) {
        return Some(format!(
            "coinbase version {}, declared {}",
            m.coinbase_tx_version, d.coinbase_version
        ));
    }
    if !d
        .coinbase_script_sig
        .starts_with(m.coinbase_prefix.as_bytes())
    {
        return Some("coinbase prefix is not the declared scriptSig's".into());
    }
    if m.coinbase_tx_input_n_sequence != d.coinbase_sequence {
        return Some(format!(
            "coinbase sequence {:#x}, declared {:#x}",
            m.coinbase_tx_input_n_sequence, d.coinbase_sequence
        ));
    }
    if m.coinbase_tx_locktime != d.coinbase_locktime {
        return Some(format!(
            "coinbase lock time {}, declared {}",
            m.coinbase_tx_locktime, d.coinbase_locktime
        ));
    }
    if let Some(txids) = &d.txids {
        let path: Vec<[u8; 32]> = m.merkle_path.iter().map(|h| h.to_array()).collect();
        if path != jdc_shared::chain::coinbase_merkle_path(txids) {
            return Some(format!(
                "merkle path of {} hashes is not the declared {} transactions'",
                path.len(),
                txids.len()
            ));
        }
    }
    None
}
