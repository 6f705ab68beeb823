use super::*;
use jdc_shared::messages::Heartbeat;

fn hb(started: u64) -> HeartbeatWithStats {
    HeartbeatWithStats {
        heartbeat: Heartbeat {
            started_at_us: started,
            version: "0.1.0".into(),
            state: "ok".into(),
            counters: Default::default(),
        },
        bus_received: 0,
        bus_malformed: 0,
        bus_gaps: 0,
    }
}

#[test]
fn down_until_a_heartbeat_then_down_again_when_silent() {
    let mut h = Health::new(&["selector", "watcher"]);
    let r = h.report(10_000_000, 3_000);
    assert!(!r.all_up());
    assert!(r.processes.iter().all(|p| !p.up && p.since_us.is_none()));

    // A message that is not a heartbeat does not make a process up.
    h.message("watcher", 10_000_000);
    let r = h.report(10_000_000, 3_000);
    assert_eq!(r.processes[1].last_message_age_ms, Some(0));
    assert!(!r.processes[1].up);

    h.heartbeat("watcher", &hb(5), 10_000_000);
    h.heartbeat("selector", &hb(6), 10_500_000);
    let r = h.report(12_000_000, 3_000);
    assert!(r.all_up());
    assert_eq!(r.status, "up");
    assert_eq!(r.processes[0].process, "selector");
    assert_eq!(r.processes[0].since_us, Some(6));
    assert_eq!(r.processes[1].last_heartbeat_age_ms, Some(2_000));

    // 3.5 s after its heartbeat the watcher is down; the selector (3.0 s) is still up.
    let r = h.report(13_500_000, 3_000);
    assert!(!r.all_up());
    assert!(r.processes[0].up);
    assert!(!r.processes[1].up);
}

#[test]
fn unknown_processes_are_ignored() {
    let mut h = Health::new(&["watcher"]);
    h.heartbeat("intruder", &hb(1), 1);
    assert_eq!(h.report(1, 1_000).processes.len(), 1);
}
