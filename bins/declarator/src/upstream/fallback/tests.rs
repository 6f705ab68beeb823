use super::*;

const POLICY: FallbackPolicy = FallbackPolicy {
    hold_down: Duration::from_secs(60),
    probe_min: Duration::from_secs(1),
    probe_max: Duration::from_secs(8),
};

fn secs(t0: Instant, s: u64) -> Instant {
    t0 + Duration::from_secs(s)
}

#[test]
fn failed_upstreams_are_down_until_a_probe_or_a_switch_to_them() {
    let t0 = Instant::now();
    let mut f = Fallback::new(2, POLICY, t0);
    assert_eq!(f.active(), Source::Upstream(0));
    assert_eq!(Fallback::new(0, POLICY, t0).active(), Source::Solo);
    f.on_failure(0, &Trigger::Disconnected("reset".into()), t0);
    assert!(!f.is_healthy(0));
    assert!(f.is_healthy(1));
    f.switched(Source::Upstream(1), t0);
    assert!(f.ranks_above_active(0));
    assert!(!f.ranks_above_active(1));
    f.on_probe(0, true, secs(t0, 61));
    assert!(f.is_healthy(0), "a probe that works makes it standby");
    f.on_failure(1, &Trigger::Disconnected("reset".into()), secs(t0, 62));
    f.switched(Source::Solo, secs(t0, 62));
    assert!(f.ranks_above_active(1), "every upstream ranks above solo");
    f.on_failure(0, &Trigger::Disconnected("reset".into()), secs(t0, 63));
    f.switched(Source::Upstream(0), secs(t0, 64));
    assert!(f.is_healthy(0), "switching to an upstream means it works");
}

#[test]
fn the_tip_race_is_not_a_failure() {
    let t0 = Instant::now();
    let mut f = Fallback::new(1, POLICY, t0);
    for t in [
        Trigger::DeclareRejected(STALE_CHAIN_TIP.into()),
        Trigger::CustomJobRejected(STALE_CHAIN_TIP.into()),
    ] {
        assert!(t.is_race());
        f.on_failure(0, &t, t0);
    }
    assert!(f.is_healthy(0));
    assert_eq!(f.next_probe(), None, "not marked down");
}

#[test]
fn failed_upstreams_are_probed_with_backoff() {
    let t0 = Instant::now();
    let policy = FallbackPolicy {
        hold_down: Duration::ZERO,
        ..POLICY
    };
    let mut f = Fallback::new(2, policy, t0);
    f.on_failure(0, &Trigger::Disconnected("reset".into()), t0);
    f.switched(Source::Upstream(1), t0);
    assert_eq!(f.next_probe(), Some((0, secs(t0, 1))), "after probe_min");
    // Failed probes back off 2 s, 4 s, 8 s, 8 s.
    let mut at = secs(t0, 1);
    for expected in [2, 4, 8, 8] {
        f.on_probe(0, false, at);
        at += Duration::from_secs(expected);
        assert_eq!(f.next_probe(), Some((0, at)));
    }
}

#[test]
fn switching_back_waits_for_the_hold_down_but_lower_ranked_probes_do_not() {
    let t0 = Instant::now();
    let mut f = Fallback::new(3, POLICY, t0);
    f.on_failure(0, &Trigger::ChannelClosed("bye".into()), secs(t0, 10));
    f.switched(Source::Upstream(1), secs(t0, 10));
    // Upstream 1 ranks above the one in use: probed once the hold-down has passed.
    assert_eq!(f.next_probe(), Some((0, secs(t0, 70))));
    // Upstream 3 fails while 2 is in use: probed after its backoff alone.
    f.on_failure(2, &Trigger::Disconnected("reset".into()), secs(t0, 20));
    assert_eq!(f.next_probe(), Some((2, secs(t0, 21))));
    f.on_probe(2, true, secs(t0, 21));
    assert_eq!(f.next_probe(), Some((0, secs(t0, 70))));
}

fn limits(window: usize, max_fraction: f64) -> RejectLimits {
    RejectLimits {
        window,
        max_fraction,
    }
}

#[test]
fn reject_rate_triggers_over_a_full_window() {
    let mut r = RejectRate::new(limits(10, 0.3));
    for _ in 0..9 {
        assert_eq!(r.rejected(), None, "window not full yet");
    }
    assert_eq!(
        r.rejected(),
        Some(Trigger::RejectRate {
            rejected: 10,
            of: 10
        })
    );
    // 3 of 10 is not more than 30 %.
    assert_eq!(r.accepted(7), None);
    for _ in 0..3 {
        assert_eq!(r.rejected(), None);
    }
    assert!(r.rejected().is_some(), "4 of the last 10");
}

/// A pool acknowledging shares in batches (`share_batch_size` > 1) sends one
/// `SubmitShares.Success` for many shares: each counts, not the message.
#[test]
fn batched_acknowledgements_count_every_share() {
    let mut r = RejectRate::new(limits(4, 0.5));
    assert_eq!(r.rejected(), None);
    assert_eq!(r.rejected(), None);
    // One message acknowledging 4 shares fills the window with accepted shares; counted as
    // one message, the window would be [rejected, rejected, accepted] and the next rejection
    // would make 3 of 4.
    assert_eq!(r.accepted(4), None);
    assert_eq!(r.rejected(), None, "1 of the last 4 shares was rejected");
    assert_eq!(r.rejected(), None, "2 of 4 is not more than half");
    assert_eq!(
        r.rejected(),
        Some(Trigger::RejectRate { rejected: 3, of: 4 })
    );
    // A batch larger than the window only keeps the window's worth.
    let mut r = RejectRate::new(limits(3, 0.5));
    assert_eq!(r.accepted(u32::MAX), None);
    assert_eq!(r.rejected(), None);
    assert_eq!(r.accepted(0), None);
    assert!(r.rejected().is_some(), "2 of the last 3");
}

#[test]
fn a_fraction_of_one_never_leaves() {
    let mut r = RejectRate::new(limits(5, 1.0));
    for _ in 0..50 {
        assert_eq!(r.rejected(), None);
    }
}

#[test]
fn unknown_job_error_codes_are_refusals_named_as_unknown() {
    assert!(is_known_job_error_code("invalid-job"));
    assert!(is_known_job_error_code("invalid-job-param-value-version"));
    assert!(!is_known_job_error_code("gremlins-ate-it"));
    let t = Trigger::DeclareRejected("gremlins-ate-it".into());
    assert!(!t.is_race());
    assert!(
        t.to_string().contains("an error code we do not know"),
        "{t}"
    );
    let t = Trigger::CustomJobRejected("invalid-job".into());
    assert_eq!(t.to_string(), "SetCustomMiningJob refused (invalid-job)");
}
