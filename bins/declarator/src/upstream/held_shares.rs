//! Optimistic mining: devices hash a declared job before the pool has acknowledged it, so their
//! shares for it wait here until `SetCustomMiningJob.Success` gives the pool's job id. Bounded
//! per job (keeping the best proofs of work when full), dropped on a new tip or when the pool
//! refuses the job, and every drop is counted.

use std::collections::HashMap;

use super::pool::UpstreamShare;

/// A share waiting for its job's pool id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldShare {
    /// Header nonce.
    pub nonce: u32,
    /// Header time.
    pub ntime: u32,
    /// Header version.
    pub version: u32,
    /// Extranonce under the pool's prefix.
    pub extranonce: Vec<u8>,
    /// The share's hash (internal byte order, little-endian number): lower is more work.
    pub hash: [u8; 32],
}

impl HeldShare {
    /// The share for the pool once its job id is known.
    pub fn with_job(self, job_id: u32) -> UpstreamShare {
        UpstreamShare {
            job_id,
            nonce: self.nonce,
            ntime: self.ntime,
            version: self.version,
            extranonce: self.extranonce,
        }
    }

    /// The hash as a big-endian number, for comparison.
    fn work_key(&self) -> [u8; 32] {
        let mut k = self.hash;
        k.reverse();
        k
    }
}

/// What happened to a share offered to the holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Held {
    /// Kept until its job is acknowledged.
    Kept,
    /// The job's queue was full: it took the place of a share with less work.
    Replaced,
    /// The job's queue was full of shares with more work: dropped.
    Dropped,
}

/// Counters of the holder, for metrics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HeldCounts {
    /// Shares held.
    pub held: u64,
    /// Shares released to the pool.
    pub released: u64,
    /// Dropped because their job's queue was full.
    pub dropped_full: u64,
    /// Dropped by a new tip before their job was acknowledged.
    pub dropped_tip: u64,
    /// Dropped because the pool refused their job.
    pub dropped_refused: u64,
}

/// Shares per job waiting for the pool's job id.
#[derive(Debug)]
pub struct HeldShares {
    cap_per_job: usize,
    jobs: HashMap<u64, Vec<HeldShare>>,
    counts: HeldCounts,
}

impl HeldShares {
    /// A holder keeping at most `cap_per_job` shares per job.
    pub fn new(cap_per_job: usize) -> Self {
        Self {
            cap_per_job: cap_per_job.max(1),
            jobs: HashMap::new(),
            counts: HeldCounts::default(),
        }
    }

    /// Holds a share of our job `template_id`.
    pub fn hold(&mut self, template_id: u64, share: HeldShare) -> Held {
        let queue = self.jobs.entry(template_id).or_default();
        if queue.len() < self.cap_per_job {
            queue.push(share);
            self.counts.held += 1;
            return Held::Kept;
        }
        // Full: keep the shares with the most work (the lowest hashes).
        let worst = queue
            .iter()
            .enumerate()
            .max_by_key(|(_, s)| s.work_key())
            .map(|(i, s)| (i, s.work_key()));
        match worst {
            Some((i, key)) if share.work_key() < key => {
                queue[i] = share;
                self.counts.held += 1;
                self.counts.dropped_full += 1;
                Held::Replaced
            }
            _ => {
                self.counts.dropped_full += 1;
                Held::Dropped
            }
        }
    }

    /// The pool acknowledged job `template_id` as `job_id`: its shares, to send.
    pub fn release(&mut self, template_id: u64, job_id: u32) -> Vec<UpstreamShare> {
        let shares: Vec<UpstreamShare> = self
            .jobs
            .remove(&template_id)
            .unwrap_or_default()
            .into_iter()
            .map(|s| s.with_job(job_id))
            .collect();
        self.counts.released += shares.len() as u64;
        shares
    }

    /// The pool refused job `template_id`: its shares are dropped.
    pub fn refuse(&mut self, template_id: u64) {
        let n = self.jobs.remove(&template_id).map_or(0, |q| q.len());
        self.counts.dropped_refused += n as u64;
    }

    /// A new tip: shares still waiting are stale.
    pub fn on_new_tip(&mut self) {
        let n: usize = self.jobs.drain().map(|(_, q)| q.len()).sum();
        self.counts.dropped_tip += n as u64;
    }

    /// Shares waiting now.
    pub fn waiting(&self) -> usize {
        self.jobs.values().map(Vec::len).sum()
    }

    /// Counters so far.
    pub fn counts(&self) -> HeldCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests;
