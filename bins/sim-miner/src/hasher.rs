//! Hashing threads.
//!
//! The session publishes the current [`Work`] into a [`Hashers`] slot; every publication bumps a
//! generation counter that the threads check every [`CHECK_EVERY`] nonces (and while waiting),
//! so new work is picked up within milliseconds. A share found is sent to the session over a
//! channel (every hash meeting the channel target, or the network target: a block is never
//! dropped, and SRI servers check the block target first). Submissions are paced by a limiter (`--max-shares-per-sec`): when the budget is
//! spent a thread sleeps (woken early by new work) instead of spinning, which keeps regtest,
//! where nearly every hash is a block, at a controlled pace.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

use crate::work::{meets_target, HeaderHasher, Work, UNIT_NONCES};

/// Nonces hashed between two checks for new work.
pub const CHECK_EVERY: u32 = 1 << 14;

/// Longest a waiting thread sleeps before re-checking for shutdown.
const MAX_WAIT: Duration = Duration::from_millis(100);

/// A share that meets the channel target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FoundShare {
    /// Session of the work it was found on.
    pub session: u64,
    /// Channel id.
    pub channel_id: u32,
    /// Job id.
    pub job_id: u32,
    /// Previous block hash of the work (internal order).
    pub prev_hash: [u8; 32],
    /// Header nonce.
    pub nonce: u32,
    /// Header time.
    pub ntime: u32,
    /// Header version.
    pub version: u32,
    /// Miner extranonce.
    pub extranonce: Vec<u8>,
    /// Header hash (internal order).
    pub hash: [u8; 32],
    /// Whether it also meets the network target.
    pub is_block: bool,
}

struct Slot {
    work: Option<Arc<Work>>,
    generation: u64,
}

struct Shared {
    slot: Mutex<Slot>,
    changed: Condvar,
    generation: AtomicU64,
    stop: AtomicBool,
    hashes: AtomicU64,
    pacer: Mutex<Pacer>,
}

/// Evenly spaced submission slots: at most one per `pace`, no bursts.
#[derive(Debug)]
pub struct Pacer {
    pace: Option<Duration>,
    next: Option<Instant>,
}

impl Pacer {
    /// At most `per_sec` slots per second (0, negative or not finite = unlimited).
    pub fn new(per_sec: f64) -> Self {
        let pace =
            (per_sec > 0.0 && per_sec.is_finite()).then(|| Duration::from_secs_f64(1.0 / per_sec));
        Self { pace, next: None }
    }

    /// Takes a slot at `now` (`None`), or says how long until the next one (`Some(wait)`).
    pub fn try_take(&mut self, now: Instant) -> Option<Duration> {
        let pace = self.pace?;
        match self.next {
            Some(next) if now < next => Some(next - now),
            _ => {
                self.next = Some(now + pace);
                None
            }
        }
    }
}

/// The hashing threads and their work slot.
pub struct Hashers {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

impl Hashers {
    /// Starts `threads` hashing threads (at least one) sending shares to `shares`, at most
    /// `max_shares_per_sec` submissions per second in total (0 = unlimited).
    pub fn start(
        threads: usize,
        max_shares_per_sec: f64,
        shares: mpsc::UnboundedSender<FoundShare>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            slot: Mutex::new(Slot {
                work: None,
                generation: 0,
            }),
            changed: Condvar::new(),
            generation: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            hashes: AtomicU64::new(0),
            pacer: Mutex::new(Pacer::new(max_shares_per_sec)),
        });
        let mut handles = Vec::new();
        for i in 0..threads.max(1) {
            let shared = shared.clone();
            let shares = shares.clone();
            let handle = std::thread::Builder::new()
                .name(format!("hasher-{i}"))
                .spawn(move || worker(&shared, &shares))?;
            handles.push(handle);
        }
        Ok(Self {
            shared,
            threads: handles,
        })
    }

    /// Replaces the work (None = idle). Threads switch within [`CHECK_EVERY`] nonces.
    pub fn publish(&self, work: Option<Work>) {
        let mut slot = lock(&self.shared.slot);
        slot.work = work.map(Arc::new);
        slot.generation += 1;
        self.shared
            .generation
            .store(slot.generation, Ordering::Release);
        drop(slot);
        self.shared.changed.notify_all();
    }

    /// Total hashes computed so far.
    pub fn hashes(&self) -> u64 {
        self.shared.hashes.load(Ordering::Relaxed)
    }

    /// Stops and joins the threads.
    pub fn stop(self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.changed.notify_all();
        for t in self.threads {
            if t.join().is_err() {
                tracing::error!("a hasher thread panicked");
            }
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(poisoned) => poisoned.into_inner(),
    }
}

enum Wait {
    Go,
    NewWork,
    Stop,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::Acquire)
    }

    /// Blocks until there is work (or stop). Returns the work and its generation.
    fn wait_for_work(&self) -> Option<(Arc<Work>, u64)> {
        let mut slot = lock(&self.slot);
        loop {
            if self.stopped() {
                return None;
            }
            if let Some(work) = &slot.work {
                return Some((work.clone(), slot.generation));
            }
            slot = match self.changed.wait_timeout(slot, MAX_WAIT) {
                Ok((g, _)) => g,
                Err(poisoned) => poisoned.into_inner().0,
            };
        }
    }

    /// Takes one submission slot from the limiter, sleeping (woken by new work) if needed.
    fn wait_for_token(&self, generation: u64) -> Wait {
        loop {
            let Some(wait) = lock(&self.pacer).try_take(Instant::now()) else {
                return Wait::Go;
            };
            let slot = lock(&self.slot);
            if self.stopped() {
                return Wait::Stop;
            }
            if slot.generation != generation {
                return Wait::NewWork;
            }
            let _ = self.changed.wait_timeout(slot, wait.min(MAX_WAIT));
        }
    }
}

fn worker(shared: &Shared, shares: &mpsc::UnboundedSender<FoundShare>) {
    'work: while let Some((work, generation)) = shared.wait_for_work() {
        loop {
            let u = work.next_unit.fetch_add(1, Ordering::Relaxed);
            let unit = work.unit(u);
            let mut header =
                HeaderHasher::new(unit.version, &work.prev_hash, &unit.merkle_root, work.nbits);
            let mut done: u64 = 0;
            let mut nonce = unit.nonce_start;
            'unit: while done < UNIT_NONCES {
                if shared.generation.load(Ordering::Acquire) != generation || shared.stopped() {
                    continue 'work;
                }
                let ntime = work.min_ntime.max(jdc_shared::time::now_secs_u32());
                header.set_ntime(ntime);
                let mut hashed = 0u64;
                for _ in 0..CHECK_EVERY {
                    let hash = header.hash(nonce);
                    hashed += 1;
                    if meets_target(&hash, &work.submit_target) {
                        shared.hashes.fetch_add(hashed, Ordering::Relaxed);
                        match shared.wait_for_token(generation) {
                            Wait::Go => {}
                            Wait::NewWork => continue 'work,
                            Wait::Stop => return,
                        }
                        let share = FoundShare {
                            session: work.session,
                            channel_id: work.channel_id,
                            job_id: work.job_id,
                            prev_hash: work.prev_hash,
                            nonce,
                            ntime,
                            version: unit.version,
                            extranonce: unit.extranonce.clone(),
                            hash,
                            is_block: meets_target(&hash, &work.network_target),
                        };
                        if shares.send(share).is_err() {
                            return;
                        }
                        // Next unit: spreads shares over extranonces and rolled versions.
                        break 'unit;
                    }
                    nonce = nonce.wrapping_add(1);
                }
                shared.hashes.fetch_add(hashed, Ordering::Relaxed);
                done += hashed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::work::{easier_target, network_target, MerkleSource};

    const MAINNET_NBITS: u32 = 0x1d00ffff;

    fn work(target: [u8; 32], job_id: u32, nbits: u32) -> Work {
        let network_target = network_target(nbits);
        Work {
            session: 3,
            channel_id: 1,
            job_id,
            version: 0x2000_0000,
            version_rolling_allowed: true,
            prev_hash: [1; 32],
            nbits,
            min_ntime: 10,
            target,
            network_target,
            submit_target: easier_target(target, network_target),
            merkle: MerkleSource::Standard {
                merkle_root: [2; 32],
            },
            next_unit: AtomicU64::new(0),
        }
    }

    #[tokio::test]
    async fn shares_meet_the_target_and_switch_with_new_work() {
        tokio::time::timeout(Duration::from_secs(120), shares_and_switch())
            .await
            .expect("hashers stalled");
    }

    async fn shares_and_switch() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hashers = Hashers::start(2, 0.0, tx).unwrap();
        // Target: top byte below 0x20 → about 1 hash in 8 is a share; mainnet difficulty, so
        // nothing else is submitted.
        let mut target = [0xff; 32];
        target[31] = 0x1f;
        hashers.publish(Some(work(target, 1, MAINNET_NBITS)));
        for _ in 0..5 {
            let s = rx.recv().await.unwrap();
            assert!(meets_target(&s.hash, &target));
            assert!(!s.is_block);
            let mut h = HeaderHasher::new(s.version, &[1; 32], &[2; 32], MAINNET_NBITS);
            h.set_ntime(s.ntime);
            assert_eq!(h.hash(s.nonce), s.hash);
            assert!(s.ntime >= 10);
        }
        hashers.publish(Some(work(target, 2, MAINNET_NBITS)));
        // After the switch only job 2 shares arrive (drain what was already queued).
        let mut saw_new = 0;
        while saw_new < 5 {
            let s = rx.recv().await.unwrap();
            if s.job_id == 2 {
                saw_new += 1;
            }
        }
        hashers.publish(None);
        assert!(hashers.hashes() > 0);
        tokio::task::spawn_blocking(move || hashers.stop())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn blocks_are_submitted_even_above_a_hard_share_target() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let hashers = Hashers::start(1, 0.0, tx).unwrap();
        // A share target no hash meets: only regtest blocks (hash <= ~2^255) come out.
        hashers.publish(Some(work([0; 32], 1, 0x207fffff)));
        let s = tokio::time::timeout(Duration::from_secs(120), rx.recv())
            .await
            .expect("no block submitted")
            .unwrap();
        assert!(s.is_block);
        assert!(meets_target(&s.hash, &network_target(0x207fffff)));
        tokio::task::spawn_blocking(move || hashers.stop())
            .await
            .unwrap();
    }

    #[test]
    fn pacer_spaces_slots_evenly_without_bursts() {
        let t0 = Instant::now();
        let mut p = Pacer::new(20.0);
        assert_eq!(p.try_take(t0), None);
        assert_eq!(p.try_take(t0), Some(Duration::from_millis(50)));
        assert_eq!(
            p.try_take(t0 + Duration::from_millis(30)),
            Some(Duration::from_millis(20))
        );
        assert_eq!(p.try_take(t0 + Duration::from_millis(50)), None);
        // A long idle period does not bank slots.
        let later = t0 + Duration::from_secs(10);
        assert_eq!(p.try_take(later), None);
        assert!(p.try_take(later).is_some());
        let mut unlimited = Pacer::new(0.0);
        assert_eq!(unlimited.try_take(t0), None);
        assert_eq!(unlimited.try_take(t0), None);
    }
}
