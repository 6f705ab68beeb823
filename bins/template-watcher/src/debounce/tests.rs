use super::*;

const I: Duration = Duration::from_millis(1000);

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[test]
fn idle_until_something_changes() {
    let t0 = Instant::now();
    let d = Debounce::new(I);
    assert_eq!(d.due(t0), Due::Idle);
    assert_eq!(d.due(t0 + ms(5000)), Due::Idle);
}

#[test]
fn first_change_refreshes_at_once_then_waits_the_interval() {
    let t0 = Instant::now();
    let mut d = Debounce::new(I);
    d.changed();
    assert_eq!(d.due(t0), Due::Now);
    d.started(t0);
    d.finished();
    assert_eq!(d.due(t0 + ms(10)), Due::Idle, "nothing new since the start");
    d.changed();
    assert_eq!(d.due(t0 + ms(10)), Due::At(t0 + I));
    assert_eq!(d.due(t0 + I), Due::Now);
}

#[test]
fn a_burst_of_100_changes_gives_two_refreshes() {
    let t0 = Instant::now();
    let mut d = Debounce::new(I);
    let mut starts = 0;
    // 100 changes, one every 5 ms (0.5 s in all), with the loop checking after each.
    for i in 0..100u64 {
        let now = t0 + ms(5 * i);
        d.changed();
        if d.due(now) == Due::Now {
            d.started(now);
            starts += 1;
            d.finished();
        }
    }
    // Then time passes until nothing is due.
    let mut now = t0 + ms(500);
    while let Due::At(at) = d.due(now) {
        now = at;
        assert_eq!(d.due(now), Due::Now);
        d.started(now);
        starts += 1;
        d.finished();
    }
    assert_eq!(starts, 2);
}

#[test]
fn nothing_starts_while_in_flight_and_changes_during_it_are_kept() {
    let t0 = Instant::now();
    let mut d = Debounce::new(I);
    d.changed();
    d.started(t0);
    d.changed(); // arrives while the request runs
    assert_eq!(d.due(t0 + ms(5000)), Due::Idle, "in flight");
    d.finished();
    assert_eq!(d.due(t0 + ms(5000)), Due::Now);
}

#[test]
fn a_tip_request_resets_the_interval() {
    let t0 = Instant::now();
    let mut d = Debounce::new(I);
    d.changed();
    d.started(t0);
    d.finished();
    // A tip request at t0 + 900 ms covers everything so far ...
    d.changed();
    d.started(t0 + ms(900));
    d.finished();
    assert_eq!(d.due(t0 + ms(1000)), Due::Idle);
    // ... and the next mempool refresh waits a full interval after it.
    d.changed();
    assert_eq!(d.due(t0 + ms(1000)), Due::At(t0 + ms(1900)));
}

#[test]
fn retry_at_delays_beyond_the_interval_and_a_start_clears_it() {
    let t0 = Instant::now();
    let mut d = Debounce::new(I);
    d.started(t0);
    d.finished();
    d.retry_at(t0 + ms(6000));
    assert_eq!(d.due(t0 + ms(1000)), Due::At(t0 + ms(6000)));
    d.changed();
    assert_eq!(
        d.due(t0 + ms(1000)),
        Due::At(t0 + ms(6000)),
        "kept by new changes"
    );
    assert_eq!(d.due(t0 + ms(6000)), Due::Now);
    d.started(t0 + ms(6000)); // e.g. a tip request
    d.finished();
    d.changed();
    assert_eq!(d.due(t0 + ms(6500)), Due::At(t0 + ms(7000)));
}

#[test]
fn a_failed_request_is_retried_after_the_interval() {
    let t0 = Instant::now();
    let mut d = Debounce::new(I);
    d.started(t0);
    d.failed();
    assert!(d.is_pending());
    assert_eq!(d.due(t0 + ms(1)), Due::At(t0 + I));
}
