//! The I/O shell of one SV1 connection: connect, send `mining.configure` (when version
//! rolling is on), `mining.subscribe` and `mining.authorize` at once, follow the server's
//! notifications, submit shares and count the replies.
//!
//! Any line the miner cannot use (longer than [`MAX_LINE`], not JSON, an unknown method, a
//! reply to no pending request, bad parameters) ends the connection with an error naming it;
//! the runner then reconnects.

use std::collections::BTreeMap;

use futures::StreamExt;
use jdc_shared::time::now_micros;
use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::events::{Event, Events};
use crate::hasher::{FoundShare, Hashers};
use crate::runner::{Connection, Stats};
use crate::session::coinbase_outputs_of;
use crate::sv1::job::{difficulty_target, JobBook};
use crate::sv1::message::{
    self, configure_result, subscribe_result, MessageError, Notification, Request, ServerMessage,
    REQUESTED_VERSION_MASK,
};
use crate::sv1::Sv1Config;
use crate::work::{rpc_hex, target_hex};

/// Longest line accepted from the server, newline excluded.
pub const MAX_LINE: usize = 64 * 1024;
/// Most requests left unanswered before the connection is given up.
const MAX_PENDING: usize = 4096;

/// Why one SV1 connection ended.
#[derive(Debug, thiserror::Error)]
pub enum Sv1Error {
    /// TCP connect failed.
    #[error("cannot connect to {server}: {source}")]
    Connect {
        /// Server.
        server: String,
        /// OS error.
        source: std::io::Error,
    },
    /// TCP connect took longer than the timeout.
    #[error("timed out connecting to {0}")]
    ConnectTimeout(String),
    /// A setup request got no reply in time.
    #[error("no reply to {0} in time")]
    NoReply(&'static str),
    /// The server closed the connection.
    #[error("the server closed the connection")]
    Closed,
    /// Reading failed (including a line that is not UTF-8).
    #[error("cannot read from the server: {0}")]
    Read(std::io::Error),
    /// Writing failed.
    #[error("cannot write to the server: {0}")]
    Write(std::io::Error),
    /// A line over [`MAX_LINE`] bytes.
    #[error("the server sent a line longer than {MAX_LINE} bytes")]
    LineTooLong,
    /// A line that is not a usable SV1 message.
    #[error("bad message from the server: {0}")]
    Message(#[from] MessageError),
    /// `mining.subscribe` or `mining.authorize` refused.
    #[error("the server refused {method}: {reason}")]
    Refused {
        /// Method.
        method: &'static str,
        /// The server's error, or the result it gave instead of `true`.
        reason: String,
    },
    /// The server broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

/// The SV1 protocol for the runner.
pub(crate) struct Sv1<'a> {
    config: &'a Sv1Config,
    events: &'a Events,
}

impl<'a> Sv1<'a> {
    pub(crate) fn new(config: &'a Sv1Config, events: &'a Events) -> Self {
        Self { config, events }
    }
}

impl Connection for Sv1<'_> {
    type Error = Sv1Error;

    async fn run(
        &self,
        id: u64,
        hashers: &Hashers,
        shares: &mut mpsc::Receiver<FoundShare>,
        shutdown: &CancellationToken,
        connected: &mut bool,
    ) -> Result<(), Sv1Error> {
        let cfg = self.config;
        let connect = async {
            tokio::time::timeout(cfg.timeout, TcpStream::connect(&cfg.server))
                .await
                .map_err(|_| Sv1Error::ConnectTimeout(cfg.server.clone()))?
                .map_err(|source| Sv1Error::Connect {
                    server: cfg.server.clone(),
                    source,
                })
        };
        let stream = tokio::select! {
            s = connect => s?,
            _ = shutdown.cancelled() => return Ok(()),
        };
        let _ = stream.set_nodelay(true);
        let (read, writer) = stream.into_split();
        let mut lines = FramedRead::new(read, LinesCodec::new_with_max_length(MAX_LINE));
        let mut session = Session {
            config: cfg,
            events: self.events,
            hashers,
            book: JobBook::new(id),
            writer,
            pending: BTreeMap::new(),
            next_id: 1,
            sequence: 0,
            rolling: false,
            subscribed: false,
            ready: false,
        };
        let user_agent = format!("jdc-sim-miner/{}", env!("CARGO_PKG_VERSION"));
        if cfg.version_rolling {
            session
                .send(&Request::Configure, Pending::Configure)
                .await?;
        }
        session
            .send(
                &Request::Subscribe {
                    user_agent: &user_agent,
                },
                Pending::Subscribe,
            )
            .await?;
        let authorize = Request::Authorize {
            user: &cfg.user,
            password: &cfg.password,
        };
        session.send(&authorize, Pending::Authorize).await?;
        let setup_deadline = tokio::time::Instant::now() + cfg.timeout;
        let mut stats = Stats::new(hashers);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => {
                    let _ = session.writer.shutdown().await;
                    return Ok(());
                }
                _ = tokio::time::sleep_until(setup_deadline), if !session.ready => {
                    let method = session.awaiting().unwrap_or("the setup");
                    return Err(Sv1Error::NoReply(method));
                }
                line = lines.next() => {
                    let t_us = now_micros();
                    let line = match line {
                        Some(Ok(line)) => line,
                        Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                            return Err(Sv1Error::LineTooLong)
                        }
                        Some(Err(LinesCodecError::Io(e))) => return Err(Sv1Error::Read(e)),
                        None => return Err(Sv1Error::Closed),
                    };
                    if !line.trim().is_empty() {
                        session.on_message(message::parse(&line)?, t_us, connected)?;
                    }
                }
                Some(share) = shares.recv() => session.submit(share).await?,
                _ = stats.tick() => stats.log(hashers, session.sequence),
            }
        }
    }
}

/// What a request id stands for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Configure,
    Subscribe,
    Authorize,
    Submit { sequence: u32 },
}

impl Pending {
    fn method(self) -> &'static str {
        match self {
            Pending::Configure => "mining.configure",
            Pending::Subscribe => "mining.subscribe",
            Pending::Authorize => "mining.authorize",
            Pending::Submit { .. } => "mining.submit",
        }
    }
}

struct Session<'a> {
    config: &'a Sv1Config,
    events: &'a Events,
    hashers: &'a Hashers,
    book: JobBook,
    writer: OwnedWriteHalf,
    /// Requests sent and not answered yet, by id.
    pending: BTreeMap<u64, Pending>,
    next_id: u64,
    /// Shares submitted on this connection.
    sequence: u32,
    /// Whether version rolling was negotiated.
    rolling: bool,
    subscribed: bool,
    /// Subscribed, authorized and configured: mining.
    ready: bool,
}

impl Session<'_> {
    /// The first setup request still unanswered.
    fn awaiting(&self) -> Option<&'static str> {
        self.pending
            .values()
            .find(|p| !matches!(p, Pending::Submit { .. }))
            .map(|p| p.method())
    }

    async fn send(&mut self, request: &Request<'_>, pending: Pending) -> Result<(), Sv1Error> {
        let id = self.next_id;
        self.write(&request.to_line(id), id, pending).await
    }

    async fn write(&mut self, line: &str, id: u64, pending: Pending) -> Result<(), Sv1Error> {
        if self.pending.len() >= MAX_PENDING {
            return Err(Sv1Error::Protocol(format!(
                "the server left {MAX_PENDING} requests unanswered"
            )));
        }
        self.next_id += 1;
        self.pending.insert(id, pending);
        tracing::trace!(line = line.trim_end(), "sending");
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(Sv1Error::Write)
    }

    /// Gives the hashers the current work, once mining.
    fn publish(&self) {
        if self.ready {
            self.hashers.publish(self.book.work());
        }
    }

    fn on_message(
        &mut self,
        msg: ServerMessage,
        t_us: u64,
        connected: &mut bool,
    ) -> Result<(), Sv1Error> {
        let (id, outcome) = match msg {
            ServerMessage::Notification(n) => return self.on_notification(n, t_us),
            ServerMessage::Response { id, outcome } => (id, outcome),
        };
        let pending = self.pending.remove(&id).ok_or_else(|| {
            Sv1Error::Protocol(format!("a reply to request {id}, which is not pending"))
        })?;
        match pending {
            Pending::Configure => self.on_configure(outcome)?,
            Pending::Subscribe => {
                self.on_subscribe(outcome)?;
                *connected = true;
            }
            Pending::Authorize => self.on_authorize(outcome)?,
            Pending::Submit { sequence } => self.on_submit_reply(sequence, outcome),
        }
        if !self.ready && self.subscribed && self.awaiting().is_none() {
            self.on_ready();
        }
        Ok(())
    }

    fn on_configure(&mut self, outcome: Result<Value, String>) -> Result<(), Sv1Error> {
        let mask = match outcome {
            Ok(result) => configure_result(&result)?,
            Err(error) => {
                tracing::warn!(%error, "mining.configure failed");
                0
            }
        };
        if mask == 0 {
            tracing::warn!("the server does not allow version rolling: mining without it");
        } else {
            tracing::info!(mask = format!("{mask:08x}"), "version rolling negotiated");
        }
        self.rolling = mask != 0;
        self.book.set_version_mask(mask);
        Ok(())
    }

    fn on_subscribe(&mut self, outcome: Result<Value, String>) -> Result<(), Sv1Error> {
        let result = outcome.map_err(|reason| Sv1Error::Refused {
            method: "mining.subscribe",
            reason,
        })?;
        let (extranonce1, extranonce2_size) = subscribe_result(result)?;
        tracing::info!(
            extranonce1 = %hex::encode(&extranonce1),
            extranonce2_size,
            "subscribed"
        );
        self.book.set_extranonce(extranonce1, extranonce2_size);
        self.subscribed = true;
        self.events.emit(Event::Connected {
            server: self.config.server.clone(),
            authenticated: false,
        });
        Ok(())
    }

    fn on_authorize(&mut self, outcome: Result<Value, String>) -> Result<(), Sv1Error> {
        let reason = match outcome {
            Ok(Value::Bool(true)) => return Ok(()),
            Ok(other) => format!("result {other}"),
            Err(error) => error,
        };
        self.events.emit(Event::ChannelError {
            error_code: reason.clone(),
        });
        Err(Sv1Error::Refused {
            method: "mining.authorize",
            reason,
        })
    }

    fn on_ready(&mut self) {
        self.ready = true;
        let (extranonce1, extranonce2_size) = self.book.extranonce().unwrap_or((&[], 0));
        let target = target_hex(&self.book.target());
        tracing::info!(
            user = %self.config.user,
            extranonce1 = %hex::encode(extranonce1),
            extranonce2_size,
            version_mask = format!("{:08x}", self.book.version_mask()),
            target = %target,
            "authorized: mining"
        );
        self.events.emit(Event::ChannelOpened {
            channel_id: 0,
            kind: "sv1".into(),
            group_channel_id: 0,
            extranonce_prefix: hex::encode(extranonce1),
            extranonce_size: extranonce2_size as u16,
            target,
        });
        self.publish();
    }

    fn on_submit_reply(&self, sequence: u32, outcome: Result<Value, String>) {
        let error_code = match outcome {
            Ok(Value::Bool(true)) => {
                self.events.emit(Event::ShareAccepted {
                    channel_id: 0,
                    last_sequence_number: sequence,
                    accepted_count: 1,
                    shares_sum: 1,
                });
                return;
            }
            Ok(other) => format!("result {other}"),
            Err(error) => error,
        };
        tracing::info!(sequence, code = %error_code, "share rejected");
        self.events.emit(Event::ShareRejected {
            channel_id: 0,
            sequence_number: sequence,
            error_code,
        });
    }

    fn on_notification(&mut self, n: Notification, t_us: u64) -> Result<(), Sv1Error> {
        match n {
            Notification::SetDifficulty(difficulty) => {
                let target = difficulty_target(difficulty);
                self.book.set_target(target);
                tracing::info!(difficulty, target = %target_hex(&target), "new difficulty");
                self.events.emit(Event::SetTarget {
                    channel_id: 0,
                    target: target_hex(&target),
                });
                self.publish();
            }
            Notification::Notify(notify) => {
                let new_tip =
                    self.book.current().map(|j| j.notify.prev_hash) != Some(notify.prev_hash);
                let version_rolling_allowed = self.book.version_mask() != 0;
                let job = self.book.on_notify(notify).ok_or_else(|| {
                    Sv1Error::Protocol("mining.notify before the mining.subscribe result".into())
                })?;
                let n = &job.notify;
                tracing::debug!(
                    job_id = %n.job_id,
                    local_id = job.local_id,
                    clean_jobs = n.clean_jobs,
                    "new job"
                );
                let new_job = Event::NewJob {
                    channel_id: 0,
                    job_id: job.local_id,
                    future: false,
                    version: n.version,
                    version_rolling_allowed,
                    merkle_path_len: Some(n.merkle_branch.len()),
                    coinbase_outputs: coinbase_outputs_of(
                        &n.coinb1,
                        &job.extranonce1,
                        job.extranonce2_size,
                        &n.coinb2,
                    ),
                    t_us,
                };
                let prev_hash = new_tip.then(|| Event::SetNewPrevHash {
                    channel_id: 0,
                    job_id: job.local_id,
                    prev_hash: rpc_hex(&n.prev_hash),
                    min_ntime: n.ntime,
                    nbits: n.nbits,
                    known_job: true,
                    t_us,
                });
                self.publish();
                self.events.emit(new_job);
                if let Some(event) = prev_hash {
                    self.events.emit(event);
                }
            }
            Notification::SetVersionMask(mask) => {
                if self.rolling {
                    let mask = mask & REQUESTED_VERSION_MASK;
                    tracing::info!(mask = format!("{mask:08x}"), "new version mask");
                    self.book.set_version_mask(mask);
                    self.publish();
                } else {
                    tracing::warn!(
                        mask = format!("{mask:08x}"),
                        "mining.set_version_mask without negotiated version rolling: ignored"
                    );
                }
            }
            Notification::SetExtranonce {
                extranonce1,
                extranonce2_size,
            } => {
                tracing::info!(
                    extranonce1 = %hex::encode(&extranonce1),
                    extranonce2_size,
                    "new extranonce (from the next job)"
                );
                self.events.emit(Event::SetExtranoncePrefix {
                    channel_id: 0,
                    extranonce_prefix: hex::encode(&extranonce1),
                });
                self.book.set_extranonce(extranonce1, extranonce2_size);
            }
            Notification::Reconnect(params) => {
                tracing::info!(%params, "ignoring client.reconnect");
            }
            Notification::ShowMessage(message) => {
                tracing::info!(%message, "message from the server");
            }
        }
        Ok(())
    }

    async fn submit(&mut self, share: FoundShare) -> Result<(), Sv1Error> {
        let id = self.next_id;
        let line = match self
            .book
            .submission(&share, &self.config.user, self.rolling)
        {
            Ok(request) => request.to_line(id),
            Err(why) => {
                tracing::debug!(job_id = share.job_id, why, "dropping a share");
                return Ok(());
            }
        };
        self.sequence = self.sequence.wrapping_add(1);
        let sequence = self.sequence;
        self.write(&line, id, Pending::Submit { sequence }).await?;
        self.events.share_sent(0, sequence, &share);
        Ok(())
    }
}
