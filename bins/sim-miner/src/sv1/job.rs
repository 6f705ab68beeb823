//! The SV1 jobs of one connection, the work they give the hashers and the submissions their
//! shares make (pure).
//!
//! Each `mining.notify` is kept with the extranonce1 and extranonce2 size in force when it came
//! (`mining.set_extranonce` applies from the next job) under a local `u32` id, the id the
//! hashers carry; the newest job is the one mined. `clean_jobs` voids the older ones, whose
//! shares are then dropped. The share target (`mining.set_difficulty`) and the version mask
//! (`mining.set_version_mask`) apply at once.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;

use crate::hasher::FoundShare;
use crate::sv1::message::{Notify, Request};
use crate::work::{easier_target, network_target, MerkleSource, Work};

/// Jobs kept for late shares (a misbehaving server cannot grow memory without end).
const MAX_JOBS: usize = 16;

/// A job as received, with the extranonce it is mined with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    /// Local id (what [`Work::job_id`] and [`FoundShare::job_id`] carry).
    pub local_id: u32,
    /// The notification.
    pub notify: Notify,
    /// Extranonce1 in force when it came.
    pub extranonce1: Vec<u8>,
    /// Extranonce2 size in force when it came.
    pub extranonce2_size: usize,
}

/// Jobs, extranonce, share target and version mask of one connection.
#[derive(Debug)]
pub struct JobBook {
    session: u64,
    extranonce: Option<(Vec<u8>, usize)>,
    target: [u8; 32],
    version_mask: u32,
    jobs: VecDeque<Job>,
    next_id: u32,
}

impl JobBook {
    /// A book for connection `session`: no extranonce yet, difficulty 1, no version rolling.
    pub fn new(session: u64) -> Self {
        Self {
            session,
            extranonce: None,
            target: difficulty_target(1.0),
            version_mask: 0,
            jobs: VecDeque::new(),
            next_id: 1,
        }
    }

    /// Extranonce1 and extranonce2 size for the jobs to come.
    pub fn set_extranonce(&mut self, extranonce1: Vec<u8>, extranonce2_size: usize) {
        self.extranonce = Some((extranonce1, extranonce2_size));
    }

    /// Extranonce1 and extranonce2 size for the jobs to come, once known.
    pub fn extranonce(&self) -> Option<(&[u8], usize)> {
        self.extranonce.as_ref().map(|(e, s)| (e.as_slice(), *s))
    }

    /// Share target (LE) from now on.
    pub fn set_target(&mut self, target: [u8; 32]) {
        self.target = target;
    }

    /// The share target (LE).
    pub fn target(&self) -> [u8; 32] {
        self.target
    }

    /// Version bits the miner may roll from now on (0 = none).
    pub fn set_version_mask(&mut self, mask: u32) {
        self.version_mask = mask;
    }

    /// Version bits the miner may roll.
    pub fn version_mask(&self) -> u32 {
        self.version_mask
    }

    /// A new job, which becomes the one mined. `None` (and nothing kept) before the first
    /// extranonce: the server must answer `mining.subscribe` before it sends jobs.
    pub fn on_notify(&mut self, notify: Notify) -> Option<&Job> {
        let (extranonce1, extranonce2_size) = self.extranonce.clone()?;
        if notify.clean_jobs {
            self.jobs.clear();
        }
        if self.jobs.len() >= MAX_JOBS {
            self.jobs.pop_front();
        }
        let local_id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        self.jobs.push_back(Job {
            local_id,
            notify,
            extranonce1,
            extranonce2_size,
        });
        self.jobs.back()
    }

    /// The job mined now.
    pub fn current(&self) -> Option<&Job> {
        self.jobs.back()
    }

    /// A job still valid, by local id.
    pub fn job(&self, local_id: u32) -> Option<&Job> {
        self.jobs.iter().find(|j| j.local_id == local_id)
    }

    /// The work to hash now, if there is a job.
    pub fn work(&self) -> Option<Work> {
        let job = self.current()?;
        let n = &job.notify;
        let mut coinbase_head = Vec::with_capacity(n.coinb1.len() + job.extranonce1.len());
        coinbase_head.extend_from_slice(&n.coinb1);
        coinbase_head.extend_from_slice(&job.extranonce1);
        let network_target = network_target(n.nbits);
        Some(Work {
            session: self.session,
            channel_id: 0,
            job_id: job.local_id,
            version: n.version,
            version_mask: self.version_mask,
            prev_hash: n.prev_hash,
            nbits: n.nbits,
            min_ntime: n.ntime,
            target: self.target,
            network_target,
            submit_target: easier_target(self.target, network_target),
            merkle: MerkleSource::Extended {
                coinbase_head,
                coinbase_tail: n.coinb2.clone(),
                merkle_path: n.merkle_branch.clone(),
                extranonce_size: job.extranonce2_size,
            },
            next_unit: AtomicU64::new(0),
        })
    }

    /// The `mining.submit` for a share, or why it is no longer worth sending. `rolling` says
    /// whether version rolling was negotiated (then the version bits are sent, even when the
    /// mask is now empty).
    pub fn submission<'a>(
        &'a self,
        share: &'a FoundShare,
        user: &'a str,
        rolling: bool,
    ) -> Result<Request<'a>, &'static str> {
        if share.session != self.session {
            return Err("found on an earlier connection");
        }
        let job = self
            .job(share.job_id)
            .ok_or("its job was cleaned or dropped")?;
        if share.extranonce.len() != job.extranonce2_size {
            return Err("its extranonce2 size is no longer the job's");
        }
        if (share.version ^ job.notify.version) & !self.version_mask != 0 {
            return Err("its version rolls bits outside the current mask");
        }
        Ok(Request::Submit {
            user,
            job_id: &job.notify.job_id,
            extranonce2: &share.extranonce,
            ntime: share.ntime,
            nonce: share.nonce,
            version_bits: rolling.then_some(share.version & self.version_mask),
        })
    }
}

/// Share target (LE) for an SV1 difficulty: the difficulty-1 target `0xffff * 2^208` divided
/// by `difficulty`, rounded down, capped at `2^256 - 1`. Exact for every `f64`. A difficulty
/// that is not a positive number gives target 0 (no shares, only blocks).
pub fn difficulty_target(difficulty: f64) -> [u8; 32] {
    if !(difficulty > 0.0 && difficulty.is_finite()) {
        return [0; 32];
    }
    // difficulty = m * 2^e exactly, with m < 2^53.
    let bits = difficulty.to_bits();
    let exponent = ((bits >> 52) & 0x7ff) as i32;
    let fraction = bits & ((1 << 52) - 1);
    let (m, e) = if exponent == 0 {
        (fraction, -1074)
    } else {
        (fraction | 1 << 52, exponent - 1075)
    };
    // target = (0xffff << (208 - e)) / m, computed on 512 bits.
    let shift = 208 - e;
    if shift < 0 {
        // 0xffff / (m * 2^-shift) with m >= 2^52.
        return [0; 32];
    }
    if shift > 496 {
        // At least 2^(496 + 16 - 53): more than 256 bits.
        return [0xff; 32];
    }
    let mut limbs = [0u64; 8];
    let (word, bit) = ((shift / 64) as usize, shift % 64);
    let numerator = 0xffffu128 << bit;
    limbs[word] = numerator as u64;
    if let Some(next) = limbs.get_mut(word + 1) {
        *next = (numerator >> 64) as u64;
    }
    let divisor = u128::from(m);
    let mut remainder = 0u128;
    for limb in limbs.iter_mut().rev() {
        let current = (remainder << 64) | u128::from(*limb);
        *limb = (current / divisor) as u64;
        remainder = current % divisor;
    }
    if limbs[4..].iter().any(|&l| l != 0) {
        return [0xff; 32];
    }
    let mut target = [0u8; 32];
    for (chunk, limb) in target.chunks_exact_mut(8).zip(&limbs[..4]) {
        chunk.copy_from_slice(&limb.to_le_bytes());
    }
    target
}

#[cfg(test)]
mod tests;
