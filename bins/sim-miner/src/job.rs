//! The miner's view of its channel: jobs, chain tip and target (pure, no I/O).
//!
//! Rules (spec chapter 5): a job without `min_ntime` is a *future* job, kept until a
//! `SetNewPrevHash` names it; a job with `min_ntime` is for the current tip and becomes active
//! at once; a `SetNewPrevHash` activates its job and drops every other one.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;

use crate::work::{easier_target, network_target, MerkleSource, Work};

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
        let (merkle, version_rolling_allowed) = match &job.body {
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
                    *version_rolling_allowed,
                )
            }
            JobBody::Standard { merkle_root } => (
                MerkleSource::Standard {
                    merkle_root: *merkle_root,
                },
                false,
            ),
        };
        let network_target = network_target(tip.nbits);
        Some(Work {
            session: self.session,
            channel_id: self.channel.id,
            job_id: job.id,
            version: job.version,
            version_rolling_allowed,
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
mod tests {
    use super::*;

    fn channel() -> Channel {
        Channel {
            id: 5,
            group_id: 1,
            kind: ChannelKind::Extended,
            extranonce_prefix: vec![0xaa, 0xbb],
            extranonce_size: 4,
            target: [0xff; 32],
        }
    }

    fn job(id: u32) -> Job {
        Job {
            id,
            version: 0x2000_0000,
            body: JobBody::Extended {
                version_rolling_allowed: true,
                merkle_path: vec![],
                coinbase_prefix: vec![1, 2],
                coinbase_suffix: vec![3],
            },
        }
    }

    fn tip(b: u8) -> Tip {
        Tip {
            prev_hash: [b; 32],
            nbits: 0x207fffff,
            min_ntime: 1000 + b as u32,
        }
    }

    #[test]
    fn future_job_waits_for_its_prev_hash() {
        let mut book = JobBook::new(channel(), 9);
        assert!(!book.on_job(job(1), None));
        assert!(book.work().is_none());
        assert!(book.on_prev_hash(1, tip(1)));
        let w = book.work().unwrap();
        assert_eq!((w.job_id, w.min_ntime, w.prev_hash), (1, 1001, [1; 32]));
        assert_eq!(w.session, 9);
        match &w.merkle {
            MerkleSource::Extended { coinbase_head, .. } => {
                assert_eq!(coinbase_head, &vec![1, 2, 0xaa, 0xbb])
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn non_future_job_replaces_active_work_on_the_same_tip() {
        let mut book = JobBook::new(channel(), 1);
        assert!(!book.on_job(job(1), Some(5)), "no tip yet");
        book.on_job(job(2), None);
        book.on_prev_hash(2, tip(1));
        assert!(book.on_job(job(3), Some(1500)));
        let w = book.work().unwrap();
        assert_eq!((w.job_id, w.min_ntime, w.prev_hash), (3, 1500, [1; 32]));
    }

    #[test]
    fn prev_hash_drops_other_jobs_and_unknown_job_pauses() {
        let mut book = JobBook::new(channel(), 1);
        book.on_job(job(1), None);
        book.on_job(job(2), None);
        assert!(book.on_prev_hash(2, tip(1)));
        // job 1 was dropped: naming it now is unknown.
        assert!(!book.on_prev_hash(1, tip(2)));
        assert!(book.work().is_none());
        assert_eq!(book.tip().unwrap().prev_hash, [2; 32]);
        // A job for the current tip resumes mining.
        assert!(book.on_job(job(4), Some(7)));
        assert_eq!(book.work().unwrap().prev_hash, [2; 32]);
    }

    #[test]
    fn target_and_prefix_updates_reach_the_work() {
        let mut book = JobBook::new(channel(), 1);
        book.on_job(job(1), None);
        book.on_prev_hash(1, tip(1));
        book.set_target([0x0f; 32]);
        book.set_extranonce_prefix(vec![9]);
        let w = book.work().unwrap();
        assert_eq!(w.target, [0x0f; 32]);
        match &w.merkle {
            MerkleSource::Extended { coinbase_head, .. } => {
                assert_eq!(coinbase_head, &vec![1, 2, 9])
            }
            other => panic!("{other:?}"),
        }
        assert!(book.addresses_us(5) && book.addresses_us(1) && !book.addresses_us(2));
    }

    #[test]
    fn future_jobs_are_bounded() {
        let mut book = JobBook::new(channel(), 1);
        for id in 0..(MAX_FUTURE_JOBS as u32 + 10) {
            book.on_job(job(id), None);
        }
        assert_eq!(book.future.len(), MAX_FUTURE_JOBS);
        assert!(book.on_prev_hash(MAX_FUTURE_JOBS as u32 + 9, tip(1)));
    }
}
