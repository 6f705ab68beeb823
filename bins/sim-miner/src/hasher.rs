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
        shares: mpsc::Sender<FoundShare>,
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

/// How often a hasher retries a full share queue.
const FULL_QUEUE_RETRY: Duration = Duration::from_millis(5);
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

    /// Queues a found share; while the queue is full, waits (woken by new work or a stop,
    /// which drop the share).
    fn deliver(
        &self,
        shares: &mpsc::Sender<FoundShare>,
        mut share: FoundShare,
        generation: u64,
    ) -> Wait {
        loop {
            match shares.try_send(share) {
                Ok(()) => return Wait::Go,
                Err(mpsc::error::TrySendError::Closed(_)) => return Wait::Stop,
                Err(mpsc::error::TrySendError::Full(s)) => share = s,
            }
            let slot = lock(&self.slot);
            if self.stopped() {
                return Wait::Stop;
            }
            if slot.generation != generation {
                return Wait::NewWork;
            }
            let _ = self.changed.wait_timeout(slot, FULL_QUEUE_RETRY);
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

fn worker(shared: &Shared, shares: &mpsc::Sender<FoundShare>) {
    // A simulated device must not take CPU from the stack it tests (or from its own network
    // thread, whose receive times are what the benchmarks measure).
    jdc_shared::priority::lower_current_thread(jdc_shared::priority::IDLE_NICE);
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
                        // Waits while the connection is behind (the queue is bounded), but
                        // gives up the share for new work or a stop.
                        match shared.deliver(shares, share, generation) {
                            Wait::Go => {}
                            Wait::NewWork => continue 'work,
                            Wait::Stop => return,
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
mod tests;
