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
