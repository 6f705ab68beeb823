use super::*;

/// A share whose hash has `work` leading zero bytes (more = more work) and nonce `n`.
fn share(n: u32, work: usize) -> HeldShare {
    let mut hash = [0xffu8; 32];
    // Little-endian number: the most significant bytes are at the end.
    for b in hash.iter_mut().rev().take(work) {
        *b = 0;
    }
    HeldShare {
        nonce: n,
        ntime: 1,
        version: 0x2000_0000,
        extranonce: vec![n as u8; 4],
        hash,
    }
}

#[test]
fn shares_wait_for_their_job_then_go_with_its_pool_id() {
    let mut h = HeldShares::new(10);
    assert_eq!(h.hold(1, share(1, 1)), Held::Kept);
    assert_eq!(h.hold(1, share(2, 1)), Held::Kept);
    assert_eq!(h.hold(2, share(3, 1)), Held::Kept);
    assert_eq!(h.waiting(), 3);
    let released = h.release(1, 77);
    assert_eq!(released.len(), 2);
    assert!(released.iter().all(|s| s.job_id == 77));
    assert_eq!(released[0].nonce, 1);
    assert_eq!(released[1].extranonce, vec![2; 4]);
    assert!(h.release(1, 77).is_empty(), "released once");
    assert_eq!(h.waiting(), 1);
    assert_eq!(h.counts().released, 2);
}

#[test]
fn a_full_queue_keeps_the_most_work() {
    let mut h = HeldShares::new(2);
    h.hold(1, share(1, 1));
    h.hold(1, share(2, 3));
    assert_eq!(
        h.hold(1, share(3, 0)),
        Held::Dropped,
        "less work than all kept"
    );
    assert_eq!(
        h.hold(1, share(4, 5)),
        Held::Replaced,
        "more work than the worst"
    );
    let nonces: Vec<u32> = h.release(1, 9).iter().map(|s| s.nonce).collect();
    assert_eq!(nonces.len(), 2);
    assert!(nonces.contains(&2) && nonces.contains(&4), "{nonces:?}");
    assert_eq!(h.counts().dropped_full, 2);
}

#[test]
fn a_new_tip_or_a_refused_job_drops_and_counts() {
    let mut h = HeldShares::new(10);
    h.hold(1, share(1, 1));
    h.hold(2, share(2, 1));
    h.hold(2, share(3, 1));
    h.refuse(2);
    assert_eq!(h.counts().dropped_refused, 2);
    h.on_new_tip();
    assert_eq!(h.counts().dropped_tip, 1);
    assert_eq!(h.waiting(), 0);
    assert!(h.release(1, 5).is_empty());
}
