//! A strict test Job Declarator Server on SRI's crates, for the declarator's upstream client.
//!
//! It serves the Job Declaration protocol over Noise NX with its own authority key, checks what
//! a real JDS checks of what it is sent (protocol, version range, vendor, user identity, request
//! ids never reused) and records every violation in [`TestJds::violations`] before dropping the
//! connection, so tests fail loudly. It can be told to misbehave for the client's error paths.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jdc_shared::bitcoin::{consensus::serialize, Amount, ScriptBuf, TxOut};
use jdc_shared::sv2::{accept, AuthorityKeys, Message, Sv2Error, Sv2Reader, Sv2Writer};
use stratum_core::binary_sv2::{B0255Owned, B064KOwned, Str0255Owned};
use stratum_core::common_messages_sv2::{
    Protocol, SetupConnectionErrorOwned, SetupConnectionOwned, SetupConnectionSuccessOwned,
};
use stratum_core::job_declaration_sv2::AllocateMiningJobTokenSuccessOwned;
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
}

/// A running test JDS.
pub struct TestJds {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its authority key pair (clients verify the public half).
    pub keys: AuthorityKeys,
    /// Tokens handed out, in order.
    pub tokens: Arc<Mutex<Vec<Vec<u8>>>>,
    /// Rule violations by clients; a test expects none.
    pub violations: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
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

impl TestJds {
    /// Starts listening on 127.0.0.1 (any port).
    pub async fn start(misbehave: Misbehave) -> anyhow::Result<TestJds> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let keys = AuthorityKeys::generate();
        let tokens: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
        let violations: Arc<Mutex<Vec<String>>> = Arc::default();
        let state = Shared {
            keys: keys.clone(),
            misbehave,
            tokens: tokens.clone(),
            violations: violations.clone(),
            next_token: Arc::new(Mutex::new(0)),
        };
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let state = state.clone();
                tokio::spawn(async move {
                    if let Err(why) = state.serve(stream).await {
                        state.violation(why);
                    }
                });
            }
        });
        Ok(TestJds {
            addr,
            keys,
            tokens,
            violations,
            task,
        })
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
}

#[derive(Clone)]
struct Shared {
    keys: AuthorityKeys,
    misbehave: Misbehave,
    tokens: Arc<Mutex<Vec<Vec<u8>>>>,
    violations: Arc<Mutex<Vec<String>>>,
    next_token: Arc<Mutex<u64>>,
}

impl Shared {
    fn violation(&self, why: String) {
        if let Ok(mut v) = self.violations.lock() {
            v.push(why);
        }
    }

    async fn serve(&self, stream: tokio::net::TcpStream) -> Result<(), String> {
        let (mut reader, mut writer) = accept(
            stream,
            &self.keys,
            Duration::from_secs(3600),
            Duration::from_secs(5),
        )
        .await
        .map_err(|e| format!("handshake: {e}"))?;
        let setup = match reader.recv().await {
            Ok(Message::Common(CommonMessagesOwned::SetupConnection(s))) => s,
            Ok(other) => return Err(format!("first message is not SetupConnection: {other:?}")),
            Err(e) => return Err(format!("reading SetupConnection: {e}")),
        };
        if !self.setup(&setup, &mut writer).await? {
            return Ok(());
        }
        let user = String::new();
        self.serve_tokens(&mut reader, &mut writer, user).await
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

    async fn serve_tokens(
        &self,
        reader: &mut Sv2Reader,
        writer: &mut Sv2Writer,
        mut user: String,
    ) -> Result<(), String> {
        let mut request_ids = HashSet::new();
        let outputs = serialize(&vec![TxOut {
            value: Amount::ZERO,
            script_pubkey: pool_payout_script(),
        }]);
        let mut last_token: Option<Vec<u8>> = None;
        loop {
            let msg = match reader.recv().await {
                Ok(m) => m,
                // The client hung up: the end of the session, not a violation.
                Err(Sv2Error::Closed) => return Ok(()),
                Err(e) => return Err(format!("reading from the client: {e}")),
            };
            let Message::JobDeclaration(JobDeclarationOwned::AllocateMiningJobToken(req)) = msg
            else {
                return Err(format!("unexpected message {msg:?}"));
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
                _ => {
                    let mut n = self.next_token.lock().map_err(|e| e.to_string())?;
                    *n += 1;
                    n.to_le_bytes().to_vec()
                }
            };
            last_token = Some(token.clone());
            if let Ok(mut t) = self.tokens.lock() {
                t.push(token.clone());
            }
            writer
                .send(Message::JobDeclaration(
                    JobDeclarationOwned::AllocateMiningJobTokenSuccess(
                        AllocateMiningJobTokenSuccessOwned {
                            request_id: req.request_id,
                            mining_job_token: B0255Owned::new(token)
                                .map_err(|e| format!("{e:?}"))?,
                            coinbase_outputs: B064KOwned::new(outputs.clone())
                                .map_err(|e| format!("{e:?}"))?,
                        },
                    ),
                ))
                .await
                .map_err(|e| e.to_string())?;
        }
    }
}
