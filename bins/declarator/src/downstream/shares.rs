//! Share validation on the hot path.
//!
//! SRI's `channels_sv2` builds our jobs; this module checks the shares against them at the
//! rate a farm sends them. Per job it keeps what does not change between shares: the SHA-256
//! state after the coinbase bytes that come before the device's extranonce, the coinbase
//! suffix and the merkle path (extended channels), or the merkle root (standard channels). A
//! share then costs the coinbase tail, the merkle path and the header, with no allocation and
//! no transaction parsing. The rules are `channels_sv2`'s (a differential test checks every
//! verdict against it); a share that meets the network target is handed back to
//! `channels_sv2`, whose verdict and coinbase the block is built from.

use std::collections::HashSet;
use std::hash::{BuildHasherDefault, Hasher};

use jdc_shared::bitcoin::hashes::{sha256, sha256d, Hash, HashEngine};
use jdc_shared::bitcoin::{CompactTarget, Target};
use stratum_core::channels_sv2::{MAX_FUTURE_BLOCK_TIME, VERSION_ROLLING_MASK};
use stratum_core::mining_sv2::{
    ERROR_CODE_SUBMIT_SHARES_BAD_EXTRANONCE_SIZE, ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW,
    ERROR_CODE_SUBMIT_SHARES_DUPLICATE_SHARE, ERROR_CODE_SUBMIT_SHARES_INVALID_JOB_ID,
    ERROR_CODE_SUBMIT_SHARES_INVALID_NON_ROLLABLE_VERSION_BIT,
    ERROR_CODE_SUBMIT_SHARES_INVALID_SHARE, ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
    ERROR_CODE_VERSION_ROLLING_NOT_ALLOWED,
};

/// Jobs of the current tip kept for validation; a share for an older one is stale.
const JOBS_PER_TIP: usize = 64;

/// Error code when the duplicate-share memory of a channel is full for this tip.
pub const ERROR_TOO_MANY_SHARES: &str = "too-many-shares";

/// How a job's merkle root is obtained for a share.
#[derive(Clone)]
pub enum RootSource {
    /// Standard channel: the job's root is fixed.
    Fixed([u8; 32]),
    /// Extended channel: the device rolls part of the coinbase.
    Rolled {
        /// SHA-256 state after the coinbase prefix and the channel's extranonce prefix
        /// (serialization without witness, as the txid commits to).
        prefix: sha256::HashEngine,
        /// Coinbase bytes after the extranonce (without witness).
        suffix: Vec<u8>,
        /// Merkle path from the coinbase to the root.
        path: Vec<[u8; 32]>,
        /// Bytes of extranonce the device must send.
        extranonce_len: usize,
    },
}

impl std::fmt::Debug for RootSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RootSource::Fixed(root) => write!(f, "Fixed({})", hex::encode(root)),
            RootSource::Rolled {
                suffix,
                path,
                extranonce_len,
                ..
            } => f
                .debug_struct("Rolled")
                .field("suffix_len", &suffix.len())
                .field("path_len", &path.len())
                .field("extranonce_len", extranonce_len)
                .finish_non_exhaustive(),
        }
    }
}

/// What a share of one job is checked against.
#[derive(Debug, Clone)]
pub struct JobCheck {
    /// Job id on the channel.
    pub job_id: u32,
    /// Our template id of the job (0 when unknown).
    pub template_id: u64,
    /// Block version of the job.
    pub version: u32,
    /// Whether the device may roll the BIP320 version bits.
    pub version_rolling_allowed: bool,
    /// Smallest header time accepted.
    pub min_ntime: u32,
    /// The channel's target when the job was made.
    pub target: Target,
    /// Difficulty a share of this job is credited with.
    pub difficulty: f64,
    /// Where the merkle root comes from.
    pub root: RootSource,
}

/// A share's fields, whatever the channel kind.
#[derive(Debug, Clone, Copy)]
pub struct ShareFields<'a> {
    /// Job id.
    pub job_id: u32,
    /// Header version.
    pub version: u32,
    /// Header time.
    pub ntime: u32,
    /// Header nonce.
    pub nonce: u32,
    /// Device extranonce (extended channels; empty for standard).
    pub extranonce: &'a [u8],
}

/// The verdict on a share.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict {
    /// Meets the job target.
    Accepted {
        /// Difficulty credited.
        difficulty: f64,
        /// Our template id of the share's job.
        template_id: u64,
        /// The share's hash (internal byte order).
        hash: [u8; 32],
    },
    /// Meets the network target too: a block.
    Block {
        /// Difficulty credited.
        difficulty: f64,
        /// Our template id of the share's job.
        template_id: u64,
        /// The block's hash (internal byte order).
        hash: [u8; 32],
    },
    /// Refused with this SV2 error code.
    Rejected(&'static str),
}

/// Per-channel share state: the current tip's jobs, duplicates and accounting.
#[derive(Debug)]
pub struct ShareBook {
    prev_hash: [u8; 32],
    nbits: u32,
    network_target: Target,
    jobs: Vec<JobCheck>,
    /// Highest job id ever registered: an unknown id at or below it is a left-behind job.
    highest_job_id: Option<u32>,
    seen: HashSet<u64, BuildHasherDefault<FirstBytes>>,
    seen_budget: usize,
    batch_size: u32,
    batch_accepted: u32,
    batch_work: f64,
    accepted_total: u64,
}

/// Acknowledgement data for `SubmitShares.Success`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ack {
    /// Shares accepted since the previous acknowledgement.
    pub accepted: u32,
    /// Sum of their difficulties.
    pub work: u64,
}

impl ShareBook {
    /// An empty book acknowledging every `batch_size` accepted shares and remembering at most
    /// `seen_budget` accepted shares per tip.
    pub fn new(batch_size: usize, seen_budget: usize) -> Self {
        Self {
            prev_hash: [0; 32],
            nbits: 0,
            network_target: Target::ZERO,
            jobs: Vec::new(),
            highest_job_id: None,
            seen: HashSet::default(),
            seen_budget,
            batch_size: u32::try_from(batch_size.max(1)).unwrap_or(u32::MAX),
            batch_accepted: 0,
            batch_work: 0.0,
            accepted_total: 0,
        }
    }

    /// A new chain tip: every job so far is stale, duplicates are forgotten.
    pub fn on_new_tip(&mut self, prev_hash: [u8; 32], nbits: u32) {
        self.prev_hash = prev_hash;
        self.nbits = nbits;
        self.network_target = Target::from_compact(CompactTarget::from_consensus(nbits));
        self.jobs.clear();
        self.seen.clear();
    }

    /// A new job on the current tip.
    pub fn add_job(&mut self, job: JobCheck) {
        if self.jobs.len() >= JOBS_PER_TIP {
            self.jobs.remove(0);
        }
        self.highest_job_id = Some(
            self.highest_job_id
                .map_or(job.job_id, |h| h.max(job.job_id)),
        );
        self.jobs.push(job);
    }

    /// Accepted shares since the channel opened.
    pub fn accepted_total(&self) -> u64 {
        self.accepted_total
    }

    /// Checks a share. Accepted shares are remembered (duplicates) and counted.
    pub fn check(&mut self, share: &ShareFields<'_>) -> Verdict {
        if self.seen.len() >= self.seen_budget {
            return Verdict::Rejected(ERROR_TOO_MANY_SHARES);
        }
        let Some(job) = self.jobs.iter().rev().find(|j| j.job_id == share.job_id) else {
            return Verdict::Rejected(match self.highest_job_id {
                Some(h) if share.job_id <= h => ERROR_CODE_SUBMIT_SHARES_STALE_SHARE,
                _ => ERROR_CODE_SUBMIT_SHARES_INVALID_JOB_ID,
            });
        };
        let root = match &job.root {
            RootSource::Fixed(root) => *root,
            RootSource::Rolled {
                prefix,
                suffix,
                path,
                extranonce_len,
            } => {
                if share.extranonce.len() != *extranonce_len {
                    return Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_BAD_EXTRANONCE_SIZE);
                }
                let mut engine = prefix.clone();
                engine.input(share.extranonce);
                engine.input(suffix);
                let txid = sha256d::Hash::from_engine(engine).to_byte_array();
                merkle_root(txid, path)
            }
        };
        if share.ntime < job.min_ntime
            || share.ntime > job.min_ntime.saturating_add(MAX_FUTURE_BLOCK_TIME)
        {
            return Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_INVALID_SHARE);
        }
        let mask = if job.version_rolling_allowed {
            VERSION_ROLLING_MASK
        } else {
            0
        };
        if share.version & !mask != job.version & !mask {
            return Verdict::Rejected(if job.version_rolling_allowed {
                ERROR_CODE_SUBMIT_SHARES_INVALID_NON_ROLLABLE_VERSION_BIT
            } else {
                ERROR_CODE_VERSION_ROLLING_NOT_ALLOWED
            });
        }
        let hash = header_hash(
            share.version,
            &self.prev_hash,
            &root,
            share.ntime,
            self.nbits,
            share.nonce,
        );
        let hash_target = Target::from_le_bytes(hash);
        let block = hash_target <= self.network_target;
        if !block && hash_target > job.target {
            return Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_DIFFICULTY_TOO_LOW);
        }
        let difficulty = job.difficulty;
        let template_id = job.template_id;
        // Equal headers give equal hashes; 64 bits of the hash identify a share.
        let mut key = [0u8; 8];
        key.copy_from_slice(&hash[..8]);
        if !self.seen.insert(u64::from_le_bytes(key)) {
            return Verdict::Rejected(ERROR_CODE_SUBMIT_SHARES_DUPLICATE_SHARE);
        }
        self.accepted_total += 1;
        self.batch_accepted += 1;
        self.batch_work += difficulty;
        if block {
            Verdict::Block {
                difficulty,
                template_id,
                hash,
            }
        } else {
            Verdict::Accepted {
                difficulty,
                template_id,
                hash,
            }
        }
    }

    /// The acknowledgement due after an accepted share: every `batch_size` shares, or at once
    /// (`now`) for a block. Resets the batch.
    pub fn take_ack(&mut self, now: bool) -> Option<Ack> {
        if self.batch_accepted == 0 || (!now && self.batch_accepted < self.batch_size) {
            return None;
        }
        let ack = Ack {
            accepted: self.batch_accepted,
            work: self.batch_work as u64,
        };
        self.batch_accepted = 0;
        self.batch_work = 0.0;
        Some(ack)
    }
}

/// The merkle root from the coinbase txid and its path (internal byte order).
pub fn merkle_root(mut node: [u8; 32], path: &[[u8; 32]]) -> [u8; 32] {
    let mut pair = [0u8; 64];
    for sibling in path {
        pair[..32].copy_from_slice(&node);
        pair[32..].copy_from_slice(sibling);
        node = sha256d::Hash::hash(&pair).to_byte_array();
    }
    node
}

/// Double SHA-256 of an 80-byte header (internal byte order, i.e. little-endian as a number).
pub fn header_hash(
    version: u32,
    prev_hash: &[u8; 32],
    merkle_root: &[u8; 32],
    ntime: u32,
    nbits: u32,
    nonce: u32,
) -> [u8; 32] {
    let mut header = [0u8; 80];
    header[..4].copy_from_slice(&version.to_le_bytes());
    header[4..36].copy_from_slice(prev_hash);
    header[36..68].copy_from_slice(merkle_root);
    header[68..72].copy_from_slice(&ntime.to_le_bytes());
    header[72..76].copy_from_slice(&nbits.to_le_bytes());
    header[76..80].copy_from_slice(&nonce.to_le_bytes());
    sha256d::Hash::hash(&header).to_byte_array()
}

/// The SHA-256 state after `parts`, to be continued per share.
pub fn prefix_engine(parts: &[&[u8]]) -> sha256::HashEngine {
    let mut engine = sha256::HashEngine::default();
    for part in parts {
        engine.input(part);
    }
    engine
}

/// Hasher for keys that are already uniformly random (bytes of a SHA-256 output).
#[derive(Debug, Default, Clone, Copy)]
pub struct FirstBytes(u64);

impl Hasher for FirstBytes {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests;
