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
        version_mask: crate::work::VERSION_ROLLING_MASK,
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
    let (tx, mut rx) = mpsc::channel(16);
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
    let (tx, mut rx) = mpsc::channel(16);
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

/// With no submission limit and nobody draining, hashers stop at the queue bound instead of
/// queueing shares without end, and give up once the queue is gone.
#[test]
fn a_full_share_queue_holds_the_hashers_back() {
    let (tx, rx) = mpsc::channel(4);
    let hashers = Hashers::start(1, 0.0, tx).unwrap();
    hashers.publish(Some(work([0xff; 32], 1, MAINNET_NBITS)));
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rx.len() < 4 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(rx.len(), 4, "queue filled");
    let hashes = hashers.hashes();
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(rx.len(), 4);
    assert_eq!(
        hashers.hashes(),
        hashes,
        "a blocked hasher does not hash on"
    );
    drop(rx);
    hashers.stop();
}
