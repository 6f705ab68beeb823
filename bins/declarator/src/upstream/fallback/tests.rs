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
fn failures_move_down_the_list_then_to_solo() {
    let t0 = Instant::now();
    let mut f = Fallback::new(2, POLICY, t0);
    assert_eq!(f.active(), Source::Upstream(0));
    let s = f.on_failure(0, &Trigger::Disconnected, t0).unwrap();
    assert_eq!((s.from, s.to), (Source::Upstream(0), Source::Upstream(1)));
    assert_eq!(s.reason, "upstream 1: connection lost");
    // A failure of an upstream not in use switches nothing.
    assert_eq!(f.on_failure(0, &Trigger::Disconnected, t0), None);
    let s = f
        .on_failure(1, &Trigger::CustomJobRejected("invalid-job".into()), t0)
        .unwrap();
    assert_eq!(s.to, Source::Solo);
    assert!(s
        .reason
        .contains("SetCustomMiningJob refused (invalid-job)"));
    assert_eq!(Fallback::new(0, POLICY, t0).active(), Source::Solo);
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
        assert_eq!(f.on_failure(0, &t, t0), None);
    }
    assert_eq!(f.active(), Source::Upstream(0));
    assert_eq!(f.probe_due(secs(t0, 100)), None, "not marked down");
}

#[test]
fn failed_upstreams_are_probed_with_backoff() {
    let t0 = Instant::now();
    let mut f = Fallback::new(2, POLICY, t0);
    f.on_failure(0, &Trigger::Disconnected, t0);
    assert_eq!(f.probe_due(t0), None, "not before probe_min");
    assert_eq!(f.probe_due(secs(t0, 1)), Some(0));
    // Failed probes back off 2 s, 4 s, 8 s, 8 s.
    let mut at = secs(t0, 1);
    for expected in [2, 4, 8, 8] {
        f.on_probe(0, false, at);
        assert_eq!(f.probe_due(at + Duration::from_secs(expected - 1)), None);
        at += Duration::from_secs(expected);
        assert_eq!(f.probe_due(at), Some(0));
    }
    // Only upstreams ranked above the active source are probed.
    assert_eq!(f.active(), Source::Upstream(1));
    let mut g = Fallback::new(2, POLICY, t0);
    g.on_failure(1, &Trigger::Disconnected, t0);
    assert_eq!(g.probe_due(secs(t0, 100)), None);
}

#[test]
fn switch_back_waits_for_the_hold_down() {
    let t0 = Instant::now();
    let mut f = Fallback::new(2, POLICY, t0);
    f.on_failure(0, &Trigger::ChannelClosed("bye".into()), secs(t0, 10));
    // Healthy again 5 s after the switch: too soon.
    assert_eq!(f.on_probe(0, true, secs(t0, 15)), None);
    assert_eq!(f.active(), Source::Upstream(1));
    assert_eq!(f.switch_back_due(secs(t0, 69)), None);
    let s = f.switch_back_due(secs(t0, 70)).unwrap();
    assert_eq!((s.from, s.to), (Source::Upstream(1), Source::Upstream(0)));
    assert_eq!(s.reason, "upstream 1 is healthy again");
    // From solo too.
    let mut g = Fallback::new(1, POLICY, t0);
    g.on_failure(0, &Trigger::Disconnected, t0);
    assert_eq!(g.active(), Source::Solo);
    assert_eq!(
        g.on_probe(0, true, secs(t0, 61)).map(|s| s.to),
        Some(Source::Upstream(0))
    );
}

#[test]
fn reject_rate_triggers_over_a_full_window() {
    let mut r = RejectRate::new(10, 0.3);
    for _ in 0..9 {
        assert_eq!(r.record(false), None, "window not full yet");
    }
    assert_eq!(
        r.record(false),
        Some(Trigger::RejectRate {
            rejected: 10,
            of: 10
        })
    );
    // 3 of 10 is not more than 30 %.
    for ok in [
        true, true, true, true, true, true, true, false, false, false,
    ] {
        assert_eq!(r.record(ok), None);
    }
    assert!(r.record(false).is_some(), "4 of the last 10");
}
