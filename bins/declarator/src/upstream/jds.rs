//! Client of a pool's Job Declarator Server: Noise NX with the pool's authority key,
//! `SetupConnection` for the Job Declaration protocol in the chosen mode, and a supply of mining
//! job tokens allocated ahead of need, so a new tip never waits for a token round trip.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use jdc_shared::bitcoin::{secp256k1::XOnlyPublicKey, TxOut};
use jdc_shared::sv2::{Message, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::{B016MOwned, B032Owned, Seq064KOwned, Str0255Owned, U256Owned};
use stratum_core::channels_sv2::outputs::deserialize_outputs;
use stratum_core::common_messages_sv2::Protocol;
use stratum_core::job_declaration_sv2::{
    AllocateMiningJobTokenOwned, AllocateMiningJobTokenSuccessOwned, DeclareMiningJobOwned,
    ProvideMissingTransactionsSuccessOwned, PushSolutionOwned,
};
use stratum_core::parsers_sv2::JobDeclarationOwned;

use super::{open_session, UpstreamError};

/// `SetupConnection` flag of the Job Declaration protocol: the JDC declares its transactions
/// (Full-Template mode). Without it: Coinbase-only mode.
pub const DECLARE_TX_DATA: u32 = 0b1;

/// How the pool learns what we mine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Declare the transaction list (`DeclareMiningJob`), answer `ProvideMissingTransactions`.
    FullTemplate,
    /// Custom jobs without declaring transactions.
    CoinbaseOnly,
}

/// Where and how to reach a JDS.
#[derive(Debug, Clone)]
pub struct JdsSettings {
    /// `host:port`.
    pub address: String,
    /// The pool's authority public key; the JDS's certificate must be signed by it.
    pub authority: XOnlyPublicKey,
    /// Our identity at the pool (`AllocateMiningJobToken.user_identifier`).
    pub user_identity: String,
    /// Full-Template or Coinbase-only.
    pub mode: Mode,
    /// Tokens kept allocated ahead of need.
    pub tokens_ahead: usize,
    /// Limit for the handshake and for each answer the client waits for.
    pub timeout: Duration,
}

/// A mining job token and the coinbase outputs the pool requires with it.
#[derive(Debug, Clone, PartialEq)]
pub struct Token {
    /// The token, opaque.
    pub token: Vec<u8>,
    /// The pool's outputs, payout first (its value is ours to fill with the reward).
    pub outputs: Vec<TxOut>,
    /// The same outputs as the JDS sent them (CompactSize-prefixed), to repeat byte for byte.
    pub raw_outputs: Vec<u8>,
}

/// What the JDS said about our declarations.
#[derive(Debug, Clone, PartialEq)]
pub enum JdsEvent {
    /// A token arrived (see [`JdsClient::take_token`]).
    TokenReady,
    /// A declaration was accepted: set the custom job on the pool with `new_token`.
    Declared {
        /// The declaration's request id.
        request_id: u32,
        /// The token for `SetCustomMiningJob`.
        new_token: Vec<u8>,
    },
    /// A declaration was refused (`stale-chain-tip` is a race: redeclare on the current tip).
    DeclareRejected {
        /// The declaration's request id.
        request_id: u32,
        /// The JDS's error code.
        code: String,
    },
    /// The JDS does not know these transactions of a declaration (0-based positions in its
    /// `wtxid_list`): answer with [`JdsClient::provide_transactions`].
    MissingTransactions {
        /// The declaration's request id.
        request_id: u32,
        /// Positions asked for.
        positions: Vec<u16>,
    },
}

/// A block found on a declared job, for `PushSolution`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Solution {
    /// The whole extranonce (the pool's prefix included).
    pub full_extranonce: Vec<u8>,
    /// Previous block hash, internal byte order.
    pub prev_hash: [u8; 32],
    /// Header nonce.
    pub nonce: u32,
    /// Header time.
    pub ntime: u32,
    /// Compact target.
    pub nbits: u32,
    /// Header version.
    pub version: u32,
}

/// A connected JDS.
pub struct JdsClient {
    name: String,
    settings: JdsSettings,
    reader: Sv2Reader,
    writer: Sv2Writer,
    next_request_id: u32,
    /// `AllocateMiningJobToken` requests not answered yet: when each was sent.
    pending: HashMap<u32, Instant>,
    tokens: VecDeque<Token>,
    /// Every token received, to refuse a JDS that hands one out twice.
    seen: HashSet<Vec<u8>>,
    /// Declarations not answered yet: request id → number of transactions declared, and when
    /// the JDS was last waited for on it (sent, or missing transactions provided).
    declaring: HashMap<u32, (usize, Instant)>,
    /// Events read while waiting for something else.
    queued: VecDeque<JdsEvent>,
}

impl JdsClient {
    /// Connects, runs the handshake (verifying the authority key) and `SetupConnection`, and
    /// asks for the first tokens.
    pub async fn connect(settings: JdsSettings) -> Result<JdsClient, UpstreamError> {
        let name = format!("jds {}", settings.address);
        let flags = match settings.mode {
            Mode::FullTemplate => DECLARE_TX_DATA,
            Mode::CoinbaseOnly => 0,
        };
        let (reader, writer) = open_session(
            &name,
            &settings.address,
            settings.authority,
            Protocol::JobDeclarationProtocol,
            flags,
            settings.timeout,
        )
        .await?;
        tracing::debug!(upstream = %name, mode = ?settings.mode, "job declarator connected");
        let mut client = JdsClient {
            name,
            settings,
            reader,
            writer,
            next_request_id: 1,
            pending: HashMap::new(),
            tokens: VecDeque::new(),
            seen: HashSet::new(),
            declaring: HashMap::new(),
            queued: VecDeque::new(),
        };
        client.top_up().await?;
        Ok(client)
    }

    /// The upstream's name for logs and errors.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The pool's coinbase outputs, from the oldest token in hand.
    pub fn pool_outputs(&self) -> Option<&[TxOut]> {
        self.tokens.front().map(|t| t.outputs.as_slice())
    }

    /// The token [`JdsClient::take_token`] gives next, if one is in hand.
    pub fn next_token(&self) -> Option<&Token> {
        self.tokens.front()
    }

    /// Tokens in hand.
    pub fn tokens_ready(&self) -> usize {
        self.tokens.len()
    }

    /// Takes the oldest token (tokens are used once) and asks for its replacement.
    pub async fn take_token(&mut self) -> Result<Option<Token>, UpstreamError> {
        let token = self.tokens.pop_front();
        self.top_up().await?;
        Ok(token)
    }

    /// Asks for tokens until those in hand and in flight reach `tokens_ahead`.
    async fn top_up(&mut self) -> Result<(), UpstreamError> {
        let user = Str0255Owned::try_from(self.settings.user_identity.as_str()).map_err(|e| {
            self.protocol(format!(
                "user identity `{}` does not fit: {e:?}",
                self.settings.user_identity
            ))
        })?;
        let mut requests = Vec::new();
        while self.tokens.len() + self.pending.len() < self.settings.tokens_ahead {
            let request_id = self.next_request_id;
            self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
            self.pending.insert(request_id, Instant::now());
            requests.push(Message::JobDeclaration(
                JobDeclarationOwned::AllocateMiningJobToken(AllocateMiningJobTokenOwned {
                    user_identifier: user.clone(),
                    request_id,
                }),
            ));
        }
        if requests.is_empty() {
            return Ok(());
        }
        self.writer
            .send_all(requests)
            .await
            .map_err(|e| self.protocol(format!("cannot send AllocateMiningJobToken: {e}")))
    }

    /// Sends a declaration (Full-Template mode); the answer comes as a [`JdsEvent`].
    pub async fn declare(&mut self, declare: DeclareMiningJobOwned) -> Result<(), UpstreamError> {
        let request_id = declare.request_id;
        if self.declaring.contains_key(&request_id) {
            return Err(self.protocol(format!(
                "internal: declaration request id {request_id} is still pending"
            )));
        }
        self.declaring
            .insert(request_id, (declare.wtxid_list.len(), Instant::now()));
        self.writer
            .send(Message::JobDeclaration(
                JobDeclarationOwned::DeclareMiningJob(declare),
            ))
            .await
            .map_err(|e| self.protocol(format!("cannot send DeclareMiningJob: {e}")))
    }

    /// Answers `ProvideMissingTransactions` with the raw transactions, in the order asked.
    pub async fn provide_transactions(
        &mut self,
        request_id: u32,
        transactions: Vec<Vec<u8>>,
    ) -> Result<(), UpstreamError> {
        let list = transactions
            .into_iter()
            .map(B016MOwned::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| self.protocol(format!("a transaction does not fit B0_16M: {e:?}")))?;
        let transaction_list = Seq064KOwned::new(list)
            .map_err(|e| self.protocol(format!("too many transactions: {e:?}")))?;
        let msg = ProvideMissingTransactionsSuccessOwned {
            request_id,
            transaction_list,
        };
        // The JDS answered; its deadline for the declaration starts again.
        if let Some((_, since)) = self.declaring.get_mut(&request_id) {
            *since = Instant::now();
        }
        self.writer
            .send(Message::JobDeclaration(
                JobDeclarationOwned::ProvideMissingTransactionsSuccess(msg),
            ))
            .await
            .map_err(|e| {
                self.protocol(format!(
                    "cannot send ProvideMissingTransactions.Success: {e}"
                ))
            })
    }

    /// Tells the JDS about a block found on a job it accepted (`PushSolution`), so it can
    /// propagate it too; our own node gets the block regardless.
    pub async fn push_solution(&mut self, solution: Solution) -> Result<(), UpstreamError> {
        let msg = PushSolutionOwned {
            extranonce: B032Owned::new(solution.full_extranonce)
                .map_err(|e| self.protocol(format!("extranonce does not fit B0_32: {e:?}")))?,
            prev_hash: U256Owned::from(solution.prev_hash),
            nonce: solution.nonce,
            ntime: solution.ntime,
            nbits: solution.nbits,
            version: solution.version,
        };
        self.writer
            .send(Message::JobDeclaration(JobDeclarationOwned::PushSolution(
                msg,
            )))
            .await
            .map_err(|e| self.protocol(format!("cannot send PushSolution: {e}")))
    }

    /// When the oldest unanswered request (`AllocateMiningJobToken` or `DeclareMiningJob`) is
    /// overdue, and which kind it is: a JDS that stops answering is a fallback trigger.
    pub fn deadline(&self) -> Option<(Instant, &'static str)> {
        let tokens = self
            .pending
            .values()
            .min()
            .map(|t| (*t, "AllocateMiningJobToken"));
        let declarations = self
            .declaring
            .values()
            .map(|(_, t)| t)
            .min()
            .map(|t| (*t, "DeclareMiningJob"));
        [tokens, declarations]
            .into_iter()
            .flatten()
            .min_by_key(|(t, _)| *t)
            .map(|(t, what)| (t + self.settings.timeout, what))
    }

    /// The error for a missed [`JdsClient::deadline`] on `waiting_for`.
    pub fn overdue(&self, waiting_for: &'static str) -> UpstreamError {
        UpstreamError::Timeout {
            upstream: self.name.clone(),
            waiting_for,
            timeout: self.settings.timeout,
        }
    }

    /// The next event from the JDS.
    pub async fn next_event(&mut self) -> Result<JdsEvent, UpstreamError> {
        if let Some(e) = self.queued.pop_front() {
            return Ok(e);
        }
        self.recv().await
    }

    /// Reads and handles the next message from the JDS.
    async fn recv(&mut self) -> Result<JdsEvent, UpstreamError> {
        let msg = self
            .reader
            .recv()
            .await
            .map_err(|e| UpstreamError::from_read(&self.name, &e, self.settings.timeout))?;
        match msg {
            Message::JobDeclaration(JobDeclarationOwned::AllocateMiningJobTokenSuccess(ok)) => {
                self.on_token(ok)?;
                Ok(JdsEvent::TokenReady)
            }
            Message::JobDeclaration(JobDeclarationOwned::DeclareMiningJobSuccess(ok)) => {
                self.answered(ok.request_id, "DeclareMiningJob.Success")?;
                Ok(JdsEvent::Declared {
                    request_id: ok.request_id,
                    new_token: ok.new_mining_job_token.as_bytes().to_vec(),
                })
            }
            Message::JobDeclaration(JobDeclarationOwned::DeclareMiningJobError(e)) => {
                self.answered(e.request_id, "DeclareMiningJob.Error")?;
                let code = String::from_utf8_lossy(e.error_code.as_bytes()).into_owned();
                tracing::debug!(
                    upstream = %self.name,
                    request_id = e.request_id,
                    %code,
                    details = %String::from_utf8_lossy(e.error_details.as_bytes()),
                    "declaration refused"
                );
                Ok(JdsEvent::DeclareRejected {
                    request_id: e.request_id,
                    code,
                })
            }
            Message::JobDeclaration(JobDeclarationOwned::ProvideMissingTransactions(m)) => {
                let Some(&(count, _)) = self.declaring.get(&m.request_id) else {
                    return Err(self.protocol(format!(
                        "asked for transactions of declaration {}, which is not pending",
                        m.request_id
                    )));
                };
                let positions: Vec<u16> = m.unknown_tx_position_list.iter().copied().collect();
                if let Some(bad) = positions.iter().find(|&&p| usize::from(p) >= count) {
                    return Err(self.protocol(format!(
                        "asked for transaction {bad} of declaration {}, which has {count}",
                        m.request_id
                    )));
                }
                Ok(JdsEvent::MissingTransactions {
                    request_id: m.request_id,
                    positions,
                })
            }
            other => Err(self.protocol(format!(
                "sent {}, which this client does not expect",
                crate::downstream::message_name(&other)
            ))),
        }
    }

    /// Marks a declaration answered; an answer to no pending declaration breaks the protocol.
    fn answered(&mut self, request_id: u32, what: &str) -> Result<(), UpstreamError> {
        if self.declaring.remove(&request_id).is_none() {
            return Err(self.protocol(format!(
                "sent {what} for request {request_id}, which is not a pending declaration"
            )));
        }
        Ok(())
    }

    /// Waits until at least `n` tokens are in hand (at most the configured timeout); other
    /// events read meanwhile are kept for [`JdsClient::next_event`].
    pub async fn wait_for_tokens(&mut self, n: usize) -> Result<(), UpstreamError> {
        let timeout = self.settings.timeout;
        let upstream = self.name.clone();
        tokio::time::timeout(timeout, async {
            while self.tokens.len() < n {
                match self.recv().await? {
                    JdsEvent::TokenReady => {}
                    other => self.queued.push_back(other),
                }
            }
            Ok(())
        })
        .await
        .map_err(|_| UpstreamError::Timeout {
            upstream,
            waiting_for: "AllocateMiningJobToken",
            timeout,
        })?
    }

    fn on_token(&mut self, ok: AllocateMiningJobTokenSuccessOwned) -> Result<(), UpstreamError> {
        if self.pending.remove(&ok.request_id).is_none() {
            return Err(self.protocol(format!(
                "answered AllocateMiningJobToken request {} that we did not send (or twice)",
                ok.request_id
            )));
        }
        let token = ok.mining_job_token.as_bytes().to_vec();
        if !self.seen.insert(token.clone()) {
            return Err(self.protocol(format!(
                "handed out mining job token {} a second time",
                hex::encode(&token)
            )));
        }
        let raw_outputs = ok.coinbase_outputs.as_bytes().to_vec();
        let outputs = deserialize_outputs(raw_outputs.clone())
            .map_err(|_| self.protocol("sent coinbase outputs that do not parse".into()))?;
        if outputs.is_empty() {
            return Err(self.protocol(
                "sent no coinbase outputs (the first must be the pool's payout)".into(),
            ));
        }
        tracing::debug!(upstream = %self.name, token = %hex::encode(&token), outputs = outputs.len(), "mining job token allocated");
        self.tokens.push_back(Token {
            token,
            outputs,
            raw_outputs,
        });
        Ok(())
    }

    fn protocol(&self, detail: String) -> UpstreamError {
        UpstreamError::Protocol {
            upstream: self.name.clone(),
            detail,
        }
    }
}
