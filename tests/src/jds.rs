//! A strict test Job Declarator Server on SRI's crates, for the declarator's upstream client.
//!
//! It serves the Job Declaration protocol over Noise NX with its own authority key, checks what
//! a real JDS checks of what it is sent (protocol, version range, vendor, user identity, request
//! ids never reused; of declarations: the token, the coinbase, the pool's outputs, the witness
//! commitment against the declared wtxids, and that provided transactions are the ones declared)
//! and records every violation in [`TestJds::violations`] before dropping the
//! connection, so tests fail loudly. It can be told to misbehave for the client's error paths.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jdc_shared::bitcoin::block::{Header, Version as BlockVersion};
use jdc_shared::bitcoin::consensus::{deserialize, serialize};
use jdc_shared::bitcoin::hashes::Hash;
use jdc_shared::bitcoin::{
    Amount, BlockHash, CompactTarget, ScriptBuf, Target, Transaction, TxMerkleNode, TxOut,
};
use jdc_shared::sv2::transport::accept_at;
use jdc_shared::sv2::{AuthorityKeys, Message, Sv2Error, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::{B0255Owned, B064KOwned, Str0255Owned};
use stratum_core::binary_sv2::{B064KOwned as Details, Seq064KOwned};
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenSuccessOwned, DeclareMiningJobErrorOwned, DeclareMiningJobOwned,
    DeclareMiningJobSuccessOwned, ProvideMissingTransactionsOwned,
    ProvideMissingTransactionsSuccessOwned, PushSolutionOwned,
};
use stratum_core::parsers_sv2::{CommonMessagesOwned, JobDeclarationOwned};
use tokio::net::TcpListener;

/// How the test JDS departs from a correct one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Misbehave {
    /// Behaves.
    No,
    /// Refuses `DECLARE_TX_DATA` (Full-Template mode) in `SetupConnection`.
    RefuseFullTemplate,
    /// Hands out the same token twice.
    RepeatToken,
    /// Answers token requests with bytes that are not SV2 frames.
    Garbage,
    /// Never answers token requests.
    Stall,
    /// Refuses every declaration (`DeclareMiningJob.Error` `invalid-job`).
    RefuseDeclarations,
    /// Presents an expired certificate (issued two hours ago, valid for a minute); a client
    /// that completes the handshake anyway is a violation.
    ExpiredCertificate,
    /// Answers this many token requests on each connection, then nothing at all (neither
    /// tokens nor declarations), keeping the connection open: a JDS that stalls mid-session.
    StallAfterTokens(usize),
    /// Answers declarations with bytes that are not SV2 frames.
    GarbageOnDeclaration,
    /// Refuses every declaration with an error code no specification or implementation uses
    /// ([`crate::pool::UNKNOWN_ERROR_CODE`]).
    UnknownErrorCode,
    /// Refuses the first declaration it gets (over all connections) with `stale-chain-tip`, as
    /// a JDS whose node has not seen our tip yet does; behaves after.
    StaleChainTipOnce,
    /// A pool rotating its payout: every token answer carries another payout script of the
    /// pool (still first, [`rotating_payout_script`]), and every other one a second, fixed
    /// output too ([`ROTATING_EXTRA_SAT`] to [`rotating_extra_script`]). A declaration must pay
    /// the outputs of its own token ([`TestJds::outputs_of`]).
    RotateOutputs,
}

/// The second output of every other token under [`Misbehave::RotateOutputs`], in satoshis.
pub const ROTATING_EXTRA_SAT: u64 = 10_000;

/// A running test JDS.
pub struct TestJds {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its authority key pair (clients verify the public half).
    pub keys: AuthorityKeys,
    /// Tokens handed out, in order.
    pub tokens: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Tokens handed out on Coinbase-only connections (custom jobs use them undeclared).
    pub coinbase_only_tokens: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Rule violations by clients; a test expects none.
    pub violations: Arc<Mutex<Vec<String>>>,
    /// Transactions the JDS knows, by wtxid (internal byte order).
    pub mempool: Arc<Mutex<HashMap<[u8; 32], Vec<u8>>>>,
    /// Declarations accepted, in order.
    pub declared: Arc<Mutex<Vec<AcceptedDeclaration>>>,
    /// `PushSolution`s received: `Ok(block hash)` when one forms a block of an accepted
    /// declaration that meets its target, `Err(why)` otherwise.
    pub solutions: Solutions,
    /// Declarations refused with `stale-chain-tip` ([`Misbehave::StaleChainTipOnce`]).
    pub stale_refusals: Arc<std::sync::atomic::AtomicUsize>,
    /// Every `DeclareMiningJob` received, in order, whatever became of it.
    pub received: Arc<Mutex<Vec<ReceivedDeclaration>>>,
    /// The coinbase outputs handed out with each token (payout first, its value 0).
    pub outputs: TokenOutputs,
    /// Open connections, to drop them all at once.
    crash: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

/// `PushSolution` verdicts: `Ok(block hash)` or `Err(why)`.
pub type Solutions = Arc<Mutex<Vec<Result<[u8; 32], String>>>>;

/// The coinbase outputs handed out with each token, by token.
pub type TokenOutputs = Arc<Mutex<HashMap<Vec<u8>, Vec<TxOut>>>>;

/// A `DeclareMiningJob` as received. A declaration names no previous block hash (the JDS
/// checks it against its own tip), so the tip it is for is told by the height its coinbase
/// commits to (BIP34).
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedDeclaration {
    /// Its request id.
    pub request_id: u32,
    /// The block height in its coinbase's scriptSig, if readable.
    pub height: Option<u32>,
    /// Its block version.
    pub version: u32,
    /// The declared wtxids.
    pub wtxids: Vec<[u8; 32]>,
    /// The error code it was refused with at once, if it was.
    pub refused: Option<String>,
}

/// A declaration the test JDS accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct AcceptedDeclaration {
    /// The token it was declared with.
    pub token: Vec<u8>,
    /// The token handed back for `SetCustomMiningJob`.
    pub new_token: Vec<u8>,
    /// The declared coinbase's outputs, serialized as `SetCustomMiningJob` must repeat them.
    pub outputs: Vec<u8>,
    /// The declared wtxids.
    pub wtxids: Vec<[u8; 32]>,
    /// Positions the JDS had to ask for.
    pub asked_for: Vec<u16>,
    /// The declared coinbase around the extranonce.
    pub coinbase_prefix: Vec<u8>,
    /// The declared coinbase after the extranonce.
    pub coinbase_suffix: Vec<u8>,
    /// The declared block version.
    pub version: u32,
    /// The declared transactions' txids (internal byte order), when the JDS knows them all.
    pub txids: Option<Vec<[u8; 32]>>,
    /// The declared coinbase's scriptSig (with the extranonce zeroed).
    pub coinbase_script_sig: Vec<u8>,
    /// The declared coinbase's version, input sequence and lock time.
    pub coinbase_version: i32,
    /// See `coinbase_version`.
    pub coinbase_sequence: u32,
    /// See `coinbase_version`.
    pub coinbase_locktime: u32,
}

impl Drop for TestJds {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pool's payout script in every token answer (its value is left to the client).
pub fn pool_payout_script() -> ScriptBuf {
    // P2WPKH of a fixed key hash: any standard script will do for a test pool.
    let mut bytes = vec![0x00, 0x14];
    bytes.extend_from_slice(&[0x42; 20]);
    ScriptBuf::from_bytes(bytes)
}

/// The pool's payout script with token number `n` under [`Misbehave::RotateOutputs`]: a
/// P2WPKH whose key hash ends with `n`.
pub fn rotating_payout_script(n: u64) -> ScriptBuf {
    let mut bytes = vec![0x00, 0x14];
    bytes.extend_from_slice(&[0x43; 12]);
    bytes.extend_from_slice(&n.to_le_bytes());
    ScriptBuf::from_bytes(bytes)
}

/// The second output of every other token under [`Misbehave::RotateOutputs`].
pub fn rotating_extra_script() -> ScriptBuf {
    let mut bytes = vec![0x00, 0x14];
    bytes.extend_from_slice(&[0x24; 20]);
    ScriptBuf::from_bytes(bytes)
}

/// The coinbase outputs a token of number `n` carries.
fn token_outputs(misbehave: Misbehave, n: u64) -> Vec<TxOut> {
    if misbehave != Misbehave::RotateOutputs {
        return vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: pool_payout_script(),
        }];
    }
    let mut outputs = vec![TxOut {
        value: Amount::ZERO,
        script_pubkey: rotating_payout_script(n),
    }];
    if n.is_multiple_of(2) {
        outputs.push(TxOut {
            value: Amount::from_sat(ROTATING_EXTRA_SAT),
            script_pubkey: rotating_extra_script(),
        });
    }
    outputs
}

impl TestJds {
    /// Starts listening on 127.0.0.1 (any port).
    pub async fn start(misbehave: Misbehave) -> anyhow::Result<TestJds> {
        Self::start_on(misbehave, 0).await
    }

    /// Starts listening on 127.0.0.1:`port` (0: any port), e.g. a port a client was told about
    /// before the JDS came up (pick it with [`crate::bitcoind::free_port`]).
    pub async fn start_on(misbehave: Misbehave, port: u16) -> anyhow::Result<TestJds> {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let keys = AuthorityKeys::generate();
        let tokens: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let coinbase_only_tokens: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let mempool: Arc<Mutex<HashMap<[u8; 32], Vec<u8>>>> = Arc::default();
        let declared: Arc<Mutex<Vec<AcceptedDeclaration>>> = Arc::default();
        let solutions: Solutions = Arc::default();
        let stale_refusals: Arc<std::sync::atomic::AtomicUsize> = Arc::default();
        let received: Arc<Mutex<Vec<ReceivedDeclaration>>> = Arc::default();
        let outputs: TokenOutputs = Arc::default();
        let state = Shared {
            outputs: outputs.clone(),
            received: received.clone(),
            stale_refusals: stale_refusals.clone(),
            solutions: solutions.clone(),
            keys: keys.clone(),
            misbehave,
            tokens: tokens.clone(),
            coinbase_only_tokens: coinbase_only_tokens.clone(),
            violations: violations.clone(),
            next_token: Arc::new(Mutex::new(0)),
            mempool: mempool.clone(),
            declared: declared.clone(),
        };
        let crash: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let open = crash.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                let connection = tokio::spawn(async move {
                    if let Err(why) = state.serve(stream).await {
                        // A client hanging up while we answer ends the session like a
                        // hang-up between messages: not a violation.
                        if !crate::peer_hung_up(&why) {
                            state.violation(why);
                        }
                    }
                });
                if let Ok(mut open) = open.lock() {
                    open.retain(|c| !c.is_finished());
                    open.push(connection.abort_handle());
                }
            }
        });
        Ok(TestJds {
            addr,
            keys,
            tokens,
            coinbase_only_tokens,
            violations,
            mempool,
            declared,
            solutions,
            stale_refusals,
            received,
            outputs,
            crash,
            task,
        })
    }

    /// Drops every open connection at once, as a crashed JDS would; the listener stays up,
    /// so the JDS is back for new connections.
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

    /// Tokens handed out so far.
    pub fn tokens(&self) -> Vec<Vec<u8>> {
        self.tokens.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// `PushSolution`s so far.
    pub fn solutions(&self) -> Vec<Result<[u8; 32], String>> {
        self.solutions.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Every declaration received so far, in order.
    pub fn received(&self) -> Vec<ReceivedDeclaration> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The coinbase outputs handed out with `token` (payout first, its value 0).
    pub fn outputs_of(&self, token: &[u8]) -> Option<Vec<TxOut>> {
        self.outputs.lock().ok()?.get(token).cloned()
    }

    /// Declarations accepted so far.
    pub fn declared(&self) -> Vec<AcceptedDeclaration> {
        self.declared.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Makes a transaction known to the JDS (as if in its node's mempool).
    pub fn know(&self, raw: &[u8]) -> anyhow::Result<()> {
        let tx: Transaction = deserialize(raw)?;
        if let Ok(mut m) = self.mempool.lock() {
            m.insert(tx.compute_wtxid().to_byte_array(), raw.to_vec());
        }
        Ok(())
    }
}

#[derive(Clone)]
struct Shared {
    keys: AuthorityKeys,
    misbehave: Misbehave,
    tokens: Arc<Mutex<Vec<Vec<u8>>>>,
    coinbase_only_tokens: Arc<Mutex<Vec<Vec<u8>>>>,
    violations: Arc<Mutex<Vec<String>>>,
    next_token: Arc<Mutex<u64>>,
    mempool: Arc<Mutex<HashMap<[u8; 32], Vec<u8>>>>,
    declared: Arc<Mutex<Vec<AcceptedDeclaration>>>,
    solutions: Solutions,
    stale_refusals: Arc<std::sync::atomic::AtomicUsize>,
    received: Arc<Mutex<Vec<ReceivedDeclaration>>>,
    outputs: TokenOutputs,
}

impl Shared {
    /// The outputs handed out with `token`.
    fn outputs_of(&self, token: &[u8]) -> Result<Vec<TxOut>, String> {
        self.outputs
            .lock()
            .map_err(|e| e.to_string())?
            .get(token)
            .cloned()
            .ok_or_else(|| format!("token {token:?} was never handed out"))
    }

    fn violation(&self, why: String) {
        if let Ok(mut v) = self.violations.lock() {
            v.push(why);
        }
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> Result<(), String> {
        let expired = self.misbehave == Misbehave::ExpiredCertificate;
        let Some((mut reader, mut writer, setup)) =
            accept_setup(stream, &self.keys, expired).await?
        else {
            return Ok(());
        };
        if !self.setup(&setup, &mut writer).await? {
            return Ok(());
        }
        let coinbase_only = setup.flags & 1 == 0;
        self.serve_tokens(&mut reader, &mut writer, coinbase_only)
            .await
    }

    /// Checks `SetupConnection` and answers it; false when it was (deliberately) refused.
    async fn setup(
        &self,
        s: &SetupConnectionOwned,
        writer: &mut Sv2Writer,
    ) -> Result<bool, String> {
        if s.protocol != Protocol::JobDeclarationProtocol {
            return Err(format!("SetupConnection for {:?}", s.protocol));
        }
        if !(s.min_version..=s.max_version).contains(&2) {
            return Err(format!(
                "SetupConnection versions {}..={} exclude 2",
                s.min_version, s.max_version
            ));
        }
        if s.vendor.as_bytes().is_empty() || s.firmware.as_bytes().is_empty() {
            return Err("SetupConnection without vendor or firmware".into());
        }
        let declare_tx_data = s.flags & 1 != 0;
        if declare_tx_data && self.misbehave == Misbehave::RefuseFullTemplate {
            let error_code = Str0255Owned::try_from("unsupported-feature-flags")
                .map_err(|e| format!("{e:?}"))?;
            writer
                .send(Message::Common(CommonMessagesOwned::SetupConnectionError(
                    SetupConnectionErrorOwned {
                        flags: 1,
                        error_code,
                    },
                )))
                .await
                .map_err(|e| e.to_string())?;
            return Ok(false);
        }
        writer
            .send(Message::Common(
                CommonMessagesOwned::SetupConnectionSuccess(SetupConnectionSuccessOwned {
                    used_version: 2,
                    flags: s.flags & 1,
                }),
            ))
            .await
            .map_err(|e| e.to_string())?;
        Ok(true)
    }

    fn new_token(&self) -> Result<Vec<u8>, String> {
        let mut n = self.next_token.lock().map_err(|e| e.to_string())?;
        *n += 1;
        let token = n.to_le_bytes().to_vec();
        if let Ok(mut t) = self.tokens.lock() {
            t.push(token.clone());
        }
        if let Ok(mut o) = self.outputs.lock() {
            o.insert(token.clone(), token_outputs(self.misbehave, *n));
        }
        Ok(token)
    }

    async fn serve_tokens(
        &self,
        reader: &mut Sv2Reader,
        writer: &mut Sv2Writer,
        coinbase_only: bool,
    ) -> Result<(), String> {
        let mut user = String::new();
        let mut request_ids = HashSet::new();
        // Tokens of this connection not yet declared with.
        let mut unused: HashSet<Vec<u8>> = HashSet::new();
        let mut awaiting: HashMap<u32, Awaiting> = HashMap::new();
        let mut last_token: Option<Vec<u8>> = None;
        let mut answered = 0usize;
        loop {
            let msg = match reader.recv().await {
                Ok(m) => m,
                // The client hung up: the end of the session, not a violation.
                Err(Sv2Error::Closed | Sv2Error::Io(_)) => return Ok(()),
                Err(e) => return Err(format!("reading from the client: {e}")),
            };
            if matches!(self.misbehave, Misbehave::StallAfterTokens(n) if answered >= n) {
                continue;
            }
            let req = match msg {
                Message::JobDeclaration(JobDeclarationOwned::AllocateMiningJobToken(req)) => req,
                Message::JobDeclaration(JobDeclarationOwned::DeclareMiningJob(d)) => {
                    self.declaration(d, &mut unused, &mut awaiting, writer)
                        .await?;
                    continue;
                }
                Message::JobDeclaration(
                    JobDeclarationOwned::ProvideMissingTransactionsSuccess(p),
                ) => {
                    self.provided(p, &mut awaiting, writer).await?;
                    continue;
                }
                // `PushSolution` is a Full-Template message: in Coinbase-only mode the JDS
                // knows no job of the client's (SRI's job_declaration_sv2 says so too).
                Message::JobDeclaration(JobDeclarationOwned::PushSolution(_)) if coinbase_only => {
                    return Err("PushSolution on a Coinbase-only connection".into());
                }
                Message::JobDeclaration(JobDeclarationOwned::PushSolution(p)) => {
                    let verdict = self.solution(&p);
                    if let Ok(mut v) = self.solutions.lock() {
                        v.push(verdict);
                    }
                    continue;
                }
                other => return Err(format!("unexpected message {other:?}")),
            };
            let who = String::from_utf8_lossy(req.user_identifier.as_bytes()).into_owned();
            if who.is_empty() {
                return Err("AllocateMiningJobToken without a user identifier".into());
            }
            if user.is_empty() {
                user = who.clone();
            } else if user != who {
                return Err(format!("user identifier changed from `{user}` to `{who}`"));
            }
            if !request_ids.insert(req.request_id) {
                return Err(format!("request id {} reused", req.request_id));
            }
            match self.misbehave {
                Misbehave::Stall => continue,
                Misbehave::Garbage => {
                    writer
                        .send_raw_for_tests(b"this is not an SV2 frame at all")
                        .await
                        .map_err(|e| e.to_string())?;
                    continue;
                }
                _ => {}
            }
            let token = match (&last_token, self.misbehave) {
                (Some(t), Misbehave::RepeatToken) => t.clone(),
                _ => self.new_token()?,
            };
            last_token = Some(token.clone());
            answered += 1;
            let outputs = serialize(&self.outputs_of(&token)?);
            unused.insert(token.clone());
            if coinbase_only {
                if let Ok(mut t) = self.coinbase_only_tokens.lock() {
                    t.push(token.clone());
                }
            }
            writer
                .send(Message::JobDeclaration(
                    JobDeclarationOwned::AllocateMiningJobTokenSuccess(
                        AllocateMiningJobTokenSuccessOwned {
                            request_id: req.request_id,
                            mining_job_token: B0255Owned::new(token)
                                .map_err(|e| format!("{e:?}"))?,
                            coinbase_outputs: B064KOwned::new(outputs)
                                .map_err(|e| format!("{e:?}"))?,
                        },
                    ),
                ))
                .await
                .map_err(|e| e.to_string())?;
        }
    }

    /// Checks a declaration as a JDS does; answers Success, Error, or first asks for the
    /// transactions it does not know.
    async fn declaration(
        &self,
        d: DeclareMiningJobOwned,
        unused: &mut HashSet<Vec<u8>>,
        awaiting: &mut HashMap<u32, Awaiting>,
        writer: &mut Sv2Writer,
    ) -> Result<(), String> {
        let request_id = d.request_id;
        let index = self.record_received(&d)?;
        let token = d.mining_job_token.as_bytes().to_vec();
        if !unused.remove(&token) {
            self.record_refusal(index, "invalid-mining-job-token")?;
            return refuse(writer, request_id, "invalid-mining-job-token").await;
        }
        match self.misbehave {
            Misbehave::RefuseDeclarations => {
                return refuse(writer, request_id, "invalid-job").await;
            }
            Misbehave::UnknownErrorCode => {
                return refuse(writer, request_id, crate::pool::UNKNOWN_ERROR_CODE).await;
            }
            Misbehave::GarbageOnDeclaration => {
                return writer
                    .send_raw_for_tests(b"this is not an SV2 frame either")
                    .await
                    .map_err(|e| e.to_string());
            }
            Misbehave::StaleChainTipOnce
                if self
                    .stale_refusals
                    .compare_exchange(
                        0,
                        1,
                        std::sync::atomic::Ordering::SeqCst,
                        std::sync::atomic::Ordering::SeqCst,
                    )
                    .is_ok() =>
            {
                self.record_refusal(index, "stale-chain-tip")?;
                return refuse(writer, request_id, "stale-chain-tip").await;
            }
            _ => {}
        }
        let wtxids: Vec<[u8; 32]> = d.wtxid_list.iter().map(|h| h.to_array()).collect();
        let coinbase = match declared_coinbase(
            d.coinbase_tx_prefix.as_bytes(),
            d.coinbase_tx_suffix.as_bytes(),
        ) {
            Ok(tx) => tx,
            Err(why) => return Err(format!("declared coinbase: {why}")),
        };
        // The outputs of the token declared with, in its order: the pool's payout first (with
        // the reward), then its other outputs as given, then the template's (the commitment).
        let required = self.outputs_of(&token)?;
        if coinbase.output.first().map(|o| &o.script_pubkey)
            != required.first().map(|o| &o.script_pubkey)
        {
            return Err("the first coinbase output is not the pool's payout of the token".into());
        }
        if coinbase.output[0].value == Amount::ZERO {
            return Err("the pool's payout output carries no reward".into());
        }
        if coinbase.output.get(1..required.len()) != required.get(1..) {
            return Err("the coinbase lacks the token's other outputs".into());
        }
        let commitment = jdc_shared::chain::witness_commitment(&wtxids);
        let committed = coinbase.output.iter().any(|o| {
            let b = o.script_pubkey.as_bytes();
            b.len() >= 38
                && b[..6] == [0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]
                && b[6..38] == commitment
        });
        if !committed {
            return refuse(writer, request_id, "invalid-job").await;
        }
        // Transactions this JDS's node does not have.
        let missing: Vec<u16> = {
            let mempool = self.mempool.lock().map_err(|e| e.to_string())?;
            wtxids
                .iter()
                .enumerate()
                .filter(|(_, w)| !mempool.contains_key(*w))
                .map(|(i, _)| i as u16)
                .collect()
        };
        if !missing.is_empty() {
            writer
                .send(Message::JobDeclaration(
                    JobDeclarationOwned::ProvideMissingTransactions(
                        ProvideMissingTransactionsOwned {
                            request_id,
                            unknown_tx_position_list: Seq064KOwned::new(missing.clone())
                                .map_err(|e| format!("{e:?}"))?,
                        },
                    ),
                ))
                .await
                .map_err(|e| e.to_string())?;
            // The client may send other messages before it answers: keep the declaration.
            awaiting.insert(
                request_id,
                Awaiting {
                    declare: d,
                    token,
                    coinbase,
                    wtxids,
                    missing,
                },
            );
            return Ok(());
        }
        self.accept(
            Awaiting {
                declare: d,
                token,
                coinbase,
                wtxids,
                missing,
            },
            writer,
        )
        .await
    }

    /// The answer to `ProvideMissingTransactions`: each transaction must be the declared one.
    async fn provided(
        &self,
        provided: ProvideMissingTransactionsSuccessOwned,
        awaiting: &mut HashMap<u32, Awaiting>,
        writer: &mut Sv2Writer,
    ) -> Result<(), String> {
        let request_id = provided.request_id;
        let Some(job) = awaiting.remove(&request_id) else {
            return Err(format!(
                "transactions provided for request {request_id}, which asked for none"
            ));
        };
        if provided.transaction_list.len() != job.missing.len() {
            return Err(format!(
                "{} transactions provided, {} asked for",
                provided.transaction_list.len(),
                job.missing.len()
            ));
        }
        for (raw, &position) in provided.transaction_list.iter().zip(&job.missing) {
            let tx: Transaction = deserialize(raw.as_bytes())
                .map_err(|e| format!("provided transaction {position} does not parse: {e}"))?;
            if tx.compute_wtxid().to_byte_array() != job.wtxids[usize::from(position)] {
                return Err(format!(
                    "provided transaction {position} is not the one declared there"
                ));
            }
            if let Ok(mut m) = self.mempool.lock() {
                m.insert(job.wtxids[usize::from(position)], raw.as_bytes().to_vec());
            }
        }
        self.accept(job, writer).await
    }

    /// Records a declaration as accepted and answers with a new token.
    async fn accept(&self, job: Awaiting, writer: &mut Sv2Writer) -> Result<(), String> {
        let Awaiting {
            declare: d,
            token,
            coinbase,
            wtxids,
            missing,
        } = job;
        let request_id = d.request_id;
        let new_token = self.new_token()?;
        let txids: Option<Vec<[u8; 32]>> = {
            let mempool = self.mempool.lock().map_err(|e| e.to_string())?;
            wtxids
                .iter()
                .map(|w| {
                    let tx: Transaction = deserialize(mempool.get(w)?).ok()?;
                    Some(tx.compute_txid().to_byte_array())
                })
                .collect()
        };
        let input = coinbase.input.first().ok_or("a coinbase without input")?;
        let (coinbase_script_sig, coinbase_sequence) =
            (input.script_sig.to_bytes(), input.sequence.0);
        if let Ok(mut v) = self.declared.lock() {
            v.push(AcceptedDeclaration {
                txids,
                coinbase_script_sig,
                coinbase_version: coinbase.version.0,
                coinbase_sequence,
                coinbase_locktime: coinbase.lock_time.to_consensus_u32(),
                token,
                new_token: new_token.clone(),
                outputs: serialize(&coinbase.output),
                wtxids,
                asked_for: missing,
                coinbase_prefix: d.coinbase_tx_prefix.as_bytes().to_vec(),
                coinbase_suffix: d.coinbase_tx_suffix.as_bytes().to_vec(),
                version: d.version,
            });
        }
        writer
            .send(Message::JobDeclaration(
                JobDeclarationOwned::DeclareMiningJobSuccess(DeclareMiningJobSuccessOwned {
                    request_id,
                    new_mining_job_token: B0255Owned::new(new_token)
                        .map_err(|e| format!("{e:?}"))?,
                }),
            ))
            .await
            .map_err(|e| e.to_string())
    }
}

impl Shared {
    /// Records a declaration as received; returns its position.
    fn record_received(&self, d: &DeclareMiningJobOwned) -> Result<usize, String> {
        let mut received = self.received.lock().map_err(|e| e.to_string())?;
        received.push(ReceivedDeclaration {
            request_id: d.request_id,
            height: coinbase_height(d.coinbase_tx_prefix.as_bytes()),
            version: d.version,
            wtxids: d.wtxid_list.iter().map(|h| h.to_array()).collect(),
            refused: None,
        });
        Ok(received.len() - 1)
    }

    /// Records the refusal of the declaration received at `index`.
    fn record_refusal(&self, index: usize, code: &str) -> Result<(), String> {
        let mut received = self.received.lock().map_err(|e| e.to_string())?;
        if let Some(r) = received.get_mut(index) {
            r.refused = Some(code.to_string());
        }
        Ok(())
    }

    /// The block a `PushSolution` forms with an accepted declaration, if its hash meets the
    /// target it names.
    fn solution(&self, p: &PushSolutionOwned) -> Result<[u8; 32], String> {
        let declared = self.declared.lock().map_err(|e| e.to_string())?.clone();
        let mempool = self.mempool.lock().map_err(|e| e.to_string())?.clone();
        let target = Target::from_compact(CompactTarget::from_consensus(p.nbits));
        for d in declared.iter().rev() {
            let mut bytes = d.coinbase_prefix.clone();
            bytes.extend_from_slice(p.extranonce.as_bytes());
            bytes.extend_from_slice(&d.coinbase_suffix);
            let Ok(coinbase) = deserialize::<Transaction>(&bytes) else {
                continue;
            };
            let mut leaves = vec![coinbase.compute_txid().to_byte_array()];
            for w in &d.wtxids {
                let raw = mempool.get(w).ok_or("a declared transaction is unknown")?;
                let tx: Transaction = deserialize(raw).map_err(|e| e.to_string())?;
                leaves.push(tx.compute_txid().to_byte_array());
            }
            let header = Header {
                version: BlockVersion::from_consensus(p.version as i32),
                prev_blockhash: BlockHash::from_byte_array(p.prev_hash.to_array()),
                merkle_root: TxMerkleNode::from_byte_array(jdc_shared::chain::merkle_root(&leaves)),
                time: p.ntime,
                bits: CompactTarget::from_consensus(p.nbits),
                nonce: p.nonce,
            };
            let hash = header.block_hash();
            if target.is_met_by(hash) {
                return Ok(hash.to_byte_array());
            }
        }
        Err("PushSolution forms no block of an accepted declaration".into())
    }
}

/// A declaration waiting for the transactions the JDS asked for.
struct Awaiting {
    declare: DeclareMiningJobOwned,
    token: Vec<u8>,
    coinbase: Transaction,
    wtxids: Vec<[u8; 32]>,
    missing: Vec<u16>,
}

/// Validity of the test peers' certificates.
const CERT_VALIDITY: Duration = Duration::from_secs(3600);
/// An expired certificate was issued this long ago...
const EXPIRED_CERT_AGE: Duration = Duration::from_secs(2 * 3600);
/// ...and was valid for this long.
const EXPIRED_CERT_VALIDITY: Duration = Duration::from_secs(60);

/// A test peer's side of a new connection: the Noise handshake under `keys`, then the
/// client's first message, which must be `SetupConnection`.
///
/// With `expired_certificate` the certificate presented was issued [`EXPIRED_CERT_AGE`] ago,
/// valid for [`EXPIRED_CERT_VALIDITY`]: a client that refuses it (the handshake fails) gives
/// `Ok(None)`, one that completes the handshake is a violation.
pub(crate) async fn accept_setup(
    stream: tokio::net::TcpStream,
    keys: &AuthorityKeys,
    expired_certificate: bool,
) -> Result<Option<(Sv2Reader, Sv2Writer, SetupConnectionOwned)>, String> {
    let (validity, issued_at) = if expired_certificate {
        let issued_at =
            jdc_shared::time::now_secs_u32().saturating_sub(EXPIRED_CERT_AGE.as_secs() as u32);
        (EXPIRED_CERT_VALIDITY, Some(issued_at))
    } else {
        (CERT_VALIDITY, None)
    };
    let handshake = accept_at(stream, keys, validity, Duration::from_secs(5), issued_at).await;
    let (mut reader, writer) = match handshake {
        Ok(halves) => halves,
        Err(_) if expired_certificate => return Ok(None),
        Err(e) => return Err(format!("handshake: {e}")),
    };
    if expired_certificate {
        return Err("the client completed the handshake despite an expired certificate".into());
    }
    match reader.recv().await {
        Ok(Message::Common(CommonMessagesOwned::SetupConnection(s))) => {
            Ok(Some((reader, writer, s)))
        }
        Ok(other) => Err(format!("first message is not SetupConnection: {other:?}")),
        Err(e) => Err(format!("reading SetupConnection: {e}")),
    }
}

/// The BIP34 height at the start of a coinbase's scriptSig (from a declared coinbase prefix).
pub fn coinbase_height(prefix: &[u8]) -> Option<u32> {
    // version(4) marker+flag(2) input count(1) prevout(36) scriptSig length(1).
    let script = prefix.get(4 + 2 + 1 + 36 + 1..)?;
    let first = *script.first()?;
    match first {
        0x00 => Some(0),
        0x51..=0x60 => Some(u32::from(first - 0x50)),
        1..=4 => {
            let bytes = script.get(1..1 + usize::from(first))?;
            let mut le = [0u8; 4];
            le[..bytes.len()].copy_from_slice(bytes);
            Some(u32::from_le_bytes(le))
        }
        _ => None,
    }
}

/// `DeclareMiningJob.Error` with `code`.
async fn refuse(writer: &mut Sv2Writer, request_id: u32, code: &str) -> Result<(), String> {
    writer
        .send(Message::JobDeclaration(
            JobDeclarationOwned::DeclareMiningJobError(DeclareMiningJobErrorOwned {
                request_id,
                error_code: Str0255Owned::try_from(code).map_err(|e| format!("{e:?}"))?,
                error_details: Details::new(Vec::new()).map_err(|e| format!("{e:?}"))?,
            }),
        ))
        .await
        .map_err(|e| e.to_string())
}

/// The declared coinbase with an all-zero extranonce: its length is the scriptSig length the
/// prefix announces minus the scriptSig bytes the prefix already holds (as SRI's JDS infers it).
fn declared_coinbase(prefix: &[u8], suffix: &[u8]) -> Result<Transaction, String> {
    // version(4) marker+flag(2) input count(1) prevout(36), then the scriptSig length.
    const BEFORE_SCRIPT_LEN: usize = 4 + 2 + 1 + 36;
    if prefix.len() <= BEFORE_SCRIPT_LEN || prefix[4..6] != [0x00, 0x01] {
        return Err("prefix is not a segwit coinbase start".into());
    }
    let script_len = usize::from(prefix[BEFORE_SCRIPT_LEN]);
    if script_len > 100 {
        return Err(format!("scriptSig of {script_len} bytes (at most 100)"));
    }
    let present = prefix.len() - BEFORE_SCRIPT_LEN - 1;
    let extranonce = script_len
        .checked_sub(present)
        .ok_or("prefix holds more scriptSig than it announces")?;
    let mut bytes = prefix.to_vec();
    bytes.extend(std::iter::repeat_n(0u8, extranonce));
    bytes.extend_from_slice(suffix);
    let tx: Transaction = deserialize(&bytes).map_err(|e| format!("does not parse: {e}"))?;
    if !tx.is_coinbase() {
        return Err("not a coinbase".into());
    }
    if tx.input[0].witness.len() != 1 || tx.input[0].witness.nth(0) != Some(&[0u8; 32][..]) {
        return Err("no 32-byte witness reserved value".into());
    }
    Ok(tx)
}
