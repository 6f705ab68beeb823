use super::*;
use std::time::Duration;

#[test]
fn rolled_version_bits_replace_only_the_masked_bits() {
    let job = 0x2000_0000;
    let mask = 0x1fff_e000;
    assert_eq!(share_version(job, Some(mask), None), Ok(job));
    assert_eq!(
        share_version(job, Some(mask), Some(0x0000_6000)),
        Ok(0x2000_6000)
    );
    assert_eq!(
        share_version(job | 0x0000_2000, Some(mask), Some(0x1fff_e000)),
        Ok(0x3fff_e000)
    );
    assert!(share_version(job, Some(mask), Some(0x0000_0001)).is_err());
    assert!(share_version(job, None, Some(0x0000_2000)).is_err());
    assert_eq!(share_version(job, None, None), Ok(job));
}

#[test]
fn sv2_rejections_map_to_v1_error_codes() {
    assert_eq!(submit_error("stale-share").0, 21);
    assert_eq!(submit_error("invalid-job-id").0, 21);
    assert_eq!(submit_error("duplicate-share").0, 22);
    assert_eq!(submit_error("difficulty-too-low").0, 23);
    let (code, text) = submit_error("invalid-extranonce");
    assert_eq!(code, 20);
    assert!(text.contains("invalid-extranonce"));
}

#[test]
fn submit_budget_allows_bursts_then_the_rate() {
    let t0 = Instant::now();
    let mut b = SubmitBudget::new(10, t0);
    // A burst of twice the rate, then nothing until time passes.
    assert!((0..20).all(|_| b.take(t0)));
    assert!(!b.take(t0));
    // 10 a second afterwards.
    let t1 = t0 + Duration::from_millis(500);
    assert!((0..5).all(|_| b.take(t1)));
    assert!(!b.take(t1));
    // Never more than the burst, however long the pause.
    let t2 = t1 + Duration::from_secs(3600);
    assert_eq!((0..100).filter(|_| b.take(t2)).count(), 20);
}

#[test]
fn a_suggested_difficulty_is_a_hashrate_at_the_share_rate() {
    // Difficulty 1 is 2^32 hashes a share; 6 shares a minute is one every 10 s.
    let h = hashrate_for_difficulty(1.0, 6.0);
    assert!((h - 429_496_730.0).abs() < 1.0, "{h}");
    let h = hashrate_for_difficulty(65_536.0, 6.0);
    assert!((f64::from(h) - 65_536.0 * 429_496_729.6).abs() / f64::from(h) < 1e-6);
}
