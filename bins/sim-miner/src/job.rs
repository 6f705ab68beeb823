//! The miner's view of its channel: jobs, chain tip and target (pure, no I/O).
//!
//! Rules (spec chapter 5): a job without `min_ntime` is a *future* job, kept until a
//! `SetNewPrevHash` names it; a job with `min_ntime` is for the current tip and becomes active
//! at once; a `SetNewPrevHash` activates its job and drops every other one.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use crate::work::{easier_target, network_target, MerkleSource, Work, VERSION_ROLLING_MASK};

/// At most this many future jobs are kept (a misbehaving server cannot grow memory unbounded).
const MAX_FUTURE_JOBS: usize = 64;

/// Extended or standard channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ChannelKind {
    /// Extended channel: the miner builds the coinbase (rolls extranonce, merkle path).
    Extended,
    /// Standard channel: header-only mining on a server-given merkle root.
    Standard,
}

impl ChannelKind {
    /// `extended` / `standard`.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Extended => "extended",
            ChannelKind::Standard => "standard",
        }
    }
}

/// The open channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// Channel id.
    pub id: u32,
    /// Group channel id (jobs may be addressed to it).
    pub group_id: u32,
    /// Kind.
    pub kind: ChannelKind,
    /// Server's extranonce prefix.
    pub extranonce_prefix: Vec<u8>,
    /// Miner-rolled extranonce bytes (0 for standard).
    pub extranonce_size: usize,
    /// Share target (LE).
    pub target: [u8; 32],
}

/// What a job carries besides its id and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobBody {
    /// `NewExtendedMiningJob`.
    Extended {
        /// Version rolling allowed.
        version_rolling_allowed: bool,
        /// Merkle path.
        merkle_path: Vec<[u8; 32]>,
        /// Coinbase before the extranonce (without the server's extranonce prefix).
        coinbase_prefix: Vec<u8>,
        /// Coinbase after the extranonce.
        coinbase_suffix: Vec<u8>,
    },
    /// `NewMiningJob`.
    Standard {
        /// Merkle root.
        merkle_root: [u8; 32],
    },
}

/// A job as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Job id.
    pub id: u32,
    /// Block version.
    pub version: u32,
    /// Contents.
    pub body: JobBody,
}

/// The current chain tip as the server announced it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tip {
    /// Previous block hash (internal order).
    pub prev_hash: [u8; 32],
    /// Compact network target.
    pub nbits: u32,
    /// `min_ntime` of the `SetNewPrevHash`.
    pub min_ntime: u32,
}

/// Jobs, tip and target of one channel.
#[derive(Debug)]
pub struct JobBook {
    channel: Channel,
    session: u64,
    future: HashMap<u32, Job>,
    tip: Option<Tip>,
    /// Active job and its min_ntime.
    active: Option<(Job, u32)>,
}

impl JobBook {
    /// A book for a freshly opened channel.
    pub fn new(channel: Channel, session: u64) -> Self {
        Self {
            channel,
            session,
            future: HashMap::new(),
            tip: None,
            active: None,
        }
    }

    /// The channel.
    pub fn channel(&self) -> &Channel {
        &self.channel
    }

    /// The current tip, if any.
    pub fn tip(&self) -> Option<Tip> {
        self.tip
    }

    /// Whether a message addressed to `channel_id` is for us (our channel or its group).
    pub fn addresses_us(&self, channel_id: u32) -> bool {
        channel_id == self.channel.id || channel_id == self.channel.group_id
    }

    /// A new job. Returns whether the active work changed.
    pub fn on_job(&mut self, job: Job, min_ntime: Option<u32>) -> bool {
        match min_ntime {
            None => {
                if self.future.len() >= MAX_FUTURE_JOBS && !self.future.contains_key(&job.id) {
                    if let Some(oldest) = self.future.keys().min().copied() {
                        self.future.remove(&oldest);
                    }
                }
                self.future.insert(job.id, job);
                false
            }
            Some(t) => {
                if self.tip.is_none() {
                    // A job for "the current tip" before any tip: nothing to mine it on yet.
                    return false;
                }
                self.active = Some((job, t));
                true
            }
        }
    }

    /// A new tip activating future job `job_id`. Returns whether that job was known (if not,
    /// mining pauses until a job for this tip arrives). Every other job is dropped.
    pub fn on_prev_hash(&mut self, job_id: u32, tip: Tip) -> bool {
        self.tip = Some(tip);
        let job = self.future.remove(&job_id).or_else(|| {
            self.active
                .take()
                .map(|(j, _)| j)
                .filter(|j| j.id == job_id)
        });
        self.future.clear();
        self.active = job.map(|j| (j, tip.min_ntime));
        self.active.is_some()
    }

    /// New share target.
    pub fn set_target(&mut self, target: [u8; 32]) {
        self.channel.target = target;
    }

    /// New extranonce prefix.
    pub fn set_extranonce_prefix(&mut self, prefix: Vec<u8>) {
        self.channel.extranonce_prefix = prefix;
    }

    /// The work to hash now, if there is an active job on a known tip.
    pub fn work(&self) -> Option<Work> {
        let tip = self.tip?;
        let (job, min_ntime) = self.active.as_ref()?;
        let (merkle, version_mask) = match &job.body {
            JobBody::Extended {
                version_rolling_allowed,
                merkle_path,
                coinbase_prefix,
                coinbase_suffix,
            } => {
                let mut head = Vec::with_capacity(
                    coinbase_prefix.len() + self.channel.extranonce_prefix.len(),
                );
                head.extend_from_slice(coinbase_prefix);
                head.extend_from_slice(&self.channel.extranonce_prefix);
                (
                    MerkleSource::Extended {
                        coinbase_head: head,
                        coinbase_tail: coinbase_suffix.clone(),
                        merkle_path: merkle_path.clone(),
                        extranonce_size: self.channel.extranonce_size,
                    },
                    if *version_rolling_allowed {
                        VERSION_ROLLING_MASK
                    } else {
                        0
                    },
                )
            }
            JobBody::Standard { merkle_root } => (
                MerkleSource::Standard {
                    merkle_root: *merkle_root,
                },
                0,
            ),
        };
        let network_target = network_target(tip.nbits);
        Some(Work {
            session: self.session,
            channel_id: self.channel.id,
            job_id: job.id,
            version: job.version,
            version_mask,
            prev_hash: tip.prev_hash,
            nbits: tip.nbits,
            min_ntime: *min_ntime,
            target: self.channel.target,
            network_target,
            submit_target: easier_target(self.channel.target, network_target),
            merkle,
            next_unit: AtomicU64::new(0),
        })
    }
}

#[cfg(test)]
mod tests;
