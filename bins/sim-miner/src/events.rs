//! Machine-readable events: one JSON object per line, `{"event":"<name>", ...}`.
//!
//! Tests and the demo parse these lines, so they go to stdout (or `--events-file`), one line per
//! event, flushed at once; logs go to stderr. Hashes are in RPC (display) byte order, targets
//! are big-endian hex, `t_us` is microseconds since the Unix epoch at receipt.

use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::Path;
use std::sync::Mutex;
use tokio::sync::mpsc;

/// One coinbase output as seen in a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CoinbaseOutput {
    /// Value in satoshis.
    pub value: u64,
    /// Output script, hex.
    pub script: String,
}

/// Everything the miner reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    /// Noise handshake and `SetupConnection` succeeded (SV1: `mining.subscribe` answered).
    Connected {
        /// `HOST:PORT` connected to.
        server: String,
        /// Whether the server certificate was checked against an authority key (always false
        /// for SV1).
        authenticated: bool,
    },
    /// The connection ended (the miner reconnects with backoff).
    Disconnected {
        /// Why.
        reason: String,
    },
    /// The server refused `SetupConnection`.
    SetupError {
        /// Server's error code.
        error_code: String,
        /// Flags the server does not support.
        flags: u32,
    },
    /// The channel is open.
    ChannelOpened {
        /// Channel id to submit shares on.
        channel_id: u32,
        /// `extended`, `standard` or `sv1` (SV1: authorized; channel ids are 0).
        kind: String,
        /// Group channel the server put the channel in.
        group_channel_id: u32,
        /// Server-assigned extranonce prefix, hex (SV1: extranonce1).
        extranonce_prefix: String,
        /// Bytes of extranonce the miner rolls (0 for standard channels; SV1: extranonce2 size).
        extranonce_size: u16,
        /// Share target, big-endian hex.
        target: String,
    },
    /// The server refused to open the channel.
    ChannelError {
        /// Server's error code.
        error_code: String,
    },
    /// The server closed the channel.
    ChannelClosed {
        /// Channel id.
        channel_id: u32,
        /// Server's reason.
        reason: String,
    },
    /// A job arrived (`NewExtendedMiningJob` or `NewMiningJob`).
    NewJob {
        /// Channel (or group channel) it was addressed to.
        channel_id: u32,
        /// Job id.
        job_id: u32,
        /// True for a future job (no `min_ntime`), activated by a later `SetNewPrevHash`.
        future: bool,
        /// Block version.
        version: u32,
        /// Whether version rolling is allowed (always false for standard jobs).
        version_rolling_allowed: bool,
        /// Number of merkle path entries (0 = empty block); absent for standard jobs.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        merkle_path_len: Option<usize>,
        /// Coinbase outputs (extended jobs whose coinbase parses).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        coinbase_outputs: Option<Vec<CoinbaseOutput>>,
        /// Receipt time, µs since the epoch.
        t_us: u64,
    },
    /// A new chain tip (`SetNewPrevHash`).
    SetNewPrevHash {
        /// Channel (or group channel) it was addressed to.
        channel_id: u32,
        /// The future job it activates.
        job_id: u32,
        /// Previous block hash, RPC hex.
        prev_hash: String,
        /// Minimum ntime.
        min_ntime: u32,
        /// Compact network target.
        nbits: u32,
        /// Whether the miner knew that job (if not, it idles until a job comes).
        known_job: bool,
        /// Receipt time, µs since the epoch.
        t_us: u64,
    },
    /// The share target changed (`SetTarget`).
    SetTarget {
        /// Channel id.
        channel_id: u32,
        /// New share target, big-endian hex.
        target: String,
    },
    /// The extranonce prefix changed (`SetExtranoncePrefix`).
    SetExtranoncePrefix {
        /// Channel id.
        channel_id: u32,
        /// New prefix, hex.
        extranonce_prefix: String,
    },
    /// A share was sent.
    ShareSubmitted {
        /// Channel id.
        channel_id: u32,
        /// Sequence number.
        sequence_number: u32,
        /// Job id.
        job_id: u32,
        /// Header nonce.
        nonce: u32,
        /// Header ntime.
        ntime: u32,
        /// Header version (rolled bits included).
        version: u32,
        /// Miner extranonce, hex (empty for standard channels).
        extranonce: String,
        /// Header hash, RPC hex.
        hash: String,
        /// Send time, µs since the epoch.
        t_us: u64,
    },
    /// `SubmitShares.Success`.
    ShareAccepted {
        /// Channel id.
        channel_id: u32,
        /// Last sequence number acknowledged.
        last_sequence_number: u32,
        /// Shares acknowledged by this message.
        accepted_count: u32,
        /// Sum of their difficulty as the server counts it.
        shares_sum: u64,
    },
    /// `SubmitShares.Error`.
    ShareRejected {
        /// Channel id.
        channel_id: u32,
        /// Sequence number of the rejected share.
        sequence_number: u32,
        /// Server's error code.
        error_code: String,
    },
    /// A submitted share also meets the network target: a block, if the server builds it.
    BlockCandidate {
        /// Block hash, RPC hex.
        hash: String,
        /// Job id.
        job_id: u32,
        /// Sequence number of the share.
        sequence_number: u32,
        /// Send time, µs since the epoch.
        t_us: u64,
    },
}

/// Where events go.
pub struct Events {
    inner: Inner,
}

enum Inner {
    Writer(Mutex<Box<dyn Write + Send>>),
    Channel(mpsc::UnboundedSender<Event>),
}

impl Events {
    /// `share-submitted` for `share`, sent as `sequence` on `channel_id`, and
    /// `block-candidate` when it is a block (logged too), whatever the protocol.
    pub fn share_sent(&self, channel_id: u32, sequence: u32, share: &crate::hasher::FoundShare) {
        let t_us = jdc_shared::time::now_micros();
        let hash = crate::work::rpc_hex(&share.hash);
        self.emit(Event::ShareSubmitted {
            channel_id,
            sequence_number: sequence,
            job_id: share.job_id,
            nonce: share.nonce,
            ntime: share.ntime,
            version: share.version,
            extranonce: hex::encode(&share.extranonce),
            hash: hash.clone(),
            t_us,
        });
        if share.is_block {
            tracing::info!(hash = %hash, job_id = share.job_id, "block candidate submitted");
            self.emit(Event::BlockCandidate {
                hash,
                job_id: share.job_id,
                sequence_number: sequence,
                t_us,
            });
        }
    }

    /// JSON lines on stdout.
    pub fn stdout() -> Self {
        Self::writer(Box::new(std::io::stdout()))
    }

    /// JSON lines appended to `path` (created if absent).
    pub fn file(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        Ok(Self::writer(Box::new(file)))
    }

    /// JSON lines to any writer.
    pub fn writer(w: Box<dyn Write + Send>) -> Self {
        Self {
            inner: Inner::Writer(Mutex::new(w)),
        }
    }

    /// Events as values on a channel (in-process tests).
    pub fn channel() -> (Self, mpsc::UnboundedReceiver<Event>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Self {
                inner: Inner::Channel(tx),
            },
            rx,
        )
    }

    /// Reports one event. Output failures are logged, never fatal.
    pub fn emit(&self, event: Event) {
        match &self.inner {
            Inner::Channel(tx) => {
                let _ = tx.send(event);
            }
            Inner::Writer(w) => {
                let line = match serde_json::to_string(&event) {
                    Ok(mut l) => {
                        l.push('\n');
                        l
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "cannot serialize event");
                        return;
                    }
                };
                let mut w = match w.lock() {
                    Ok(w) => w,
                    Err(poisoned) => poisoned.into_inner(),
                };
                if let Err(e) = w.write_all(line.as_bytes()).and_then(|_| w.flush()) {
                    tracing::warn!(error = %e, "cannot write event");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
