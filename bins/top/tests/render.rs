//! Screens drawn on ratatui's `TestBackend` from a model folded from recorded bus messages,
//! compared with the plain-text snapshots in `tests/snapshots/` (one line per terminal row,
//! trailing spaces trimmed; colours are not compared).
//!
//! To accept changed screens, run with `TOP_UPDATE_SNAPSHOTS=1` and review the diff.

mod common;

use common::{received, recording, upstream_state, Declarator, S, T0};
use jdc_shared::bus::Topic;
use jdc_top::state::{Model, Settings};
use jdc_top::view::{self, Pane};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::style::Modifier;
use ratatui::Terminal;

/// The screens are drawn at this time: two minutes into the recording.
const NOW: u64 = T0 + 120 * S;

fn model(declarator: Declarator, until: u64) -> Model {
    let mut model = Model::new(Settings::default(), T0);
    for (arrival, msg) in recording(declarator) {
        if arrival <= until {
            model.handle(&msg, arrival).unwrap();
        }
    }
    model
}

fn draw(model: &Model, pane: Pane, width: u16, height: u16, now: u64) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal
        .draw(|frame| view::draw(frame, model, pane, now))
        .unwrap();
    terminal.backend().buffer().clone()
}

fn text(buffer: &Buffer) -> String {
    let area = buffer.area;
    let mut out = String::new();
    for y in 0..area.height {
        let mut line = String::new();
        for x in 0..area.width {
            line.push_str(buffer[(x, y)].symbol());
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

fn check_snapshot(name: &str, screen: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.txt"));
    let update = std::env::var_os("TOP_UPDATE_SNAPSHOTS").is_some();
    match std::fs::read_to_string(&path) {
        Ok(expected) if !update => {
            assert!(
                expected == screen,
                "screen {name} differs from {}:\n--- expected\n{expected}\n--- drawn\n{screen}\n\
                 (run with TOP_UPDATE_SNAPSHOTS=1 to accept it)",
                path.display()
            );
        }
        Ok(_) => std::fs::write(&path, screen).unwrap(),
        Err(_) if update => std::fs::write(&path, screen).unwrap(),
        Err(e) => panic!(
            "no snapshot {} ({e}); drawn:\n{screen}\n(run with TOP_UPDATE_SNAPSHOTS=1 to write it)",
            path.display()
        ),
    }
}

#[test]
fn overview_of_a_healthy_stack() {
    let model = model(Declarator::Up, NOW);
    let screen = text(&draw(&model, Pane::Overview, 80, 24, NOW));
    check_snapshot("overview", &screen);
    // What the screen must say, whatever the snapshot holds.
    for needle in [
        "#870001",                 // chain tip height (the second tip's parent)
        "#870002  3215 txs",       // latest template
        "12,345,678 sat",          // its fees
        "fee-rate",                // policy
        "below-min-fee-rate  100", // dropped, per reason
        "upstream #1",             // pool mode
        "1.07 TH/s",               // channel 1: 30 × 1000 × 2³² / 120 s
        "179 GH/s",                // channel 2: 10 × 500 × 2³² / 120 s
        "1.25 TH/s",               // total
        "found 1  accepted 1",     // blocks
        "declarator up",           // liveness
        "declaration-rejected",    // latest event
    ] {
        assert!(screen.contains(needle), "{needle:?} missing from\n{screen}");
    }
}

#[test]
fn overview_with_the_declarator_down() {
    // The declarator spoke for 100 s, then fell silent: its boxes keep the last data, marked
    // down with how long it has been silent.
    let model = model(Declarator::SilentAfter100s, NOW);
    let screen = text(&draw(&model, Pane::Overview, 80, 24, NOW));
    check_snapshot("overview_declarator_down", &screen);
    assert!(screen.contains("declarator DOWN 20s"), "{screen}");
    assert!(screen.contains("declarator down"), "{screen}");
    assert!(screen.contains("watcher    up"), "{screen}");
}

#[test]
fn overview_with_the_declarator_never_heard_from() {
    let model = model(Declarator::Never, NOW);
    let screen = text(&draw(&model, Pane::Overview, 80, 24, NOW));
    check_snapshot("overview_declarator_never_heard", &screen);
    assert!(screen.contains("no data from declarator"), "{screen}");
    assert!(screen.contains("declarator waiting"), "{screen}");
}

#[test]
fn nothing_heard_yet() {
    let model = Model::new(Settings::default(), T0);
    let screen = text(&draw(&model, Pane::Overview, 80, 24, T0 + S));
    check_snapshot("overview_empty", &screen);
    for process in ["watcher", "selector", "declarator"] {
        assert!(
            screen.contains(&format!("no data from {process}")),
            "{screen}"
        );
    }
}

#[test]
fn single_panes() {
    let model = model(Declarator::Up, NOW);
    for (pane, name) in [
        (Pane::Devices, "devices"),
        (Pane::Upstream, "upstream"),
        (Pane::Events, "events"),
    ] {
        let buffer = draw(&model, pane, 80, 24, NOW);
        check_snapshot(name, &text(&buffer));
        // The focused pane is highlighted in the header.
        let header = text(&buffer).lines().next().unwrap().to_string();
        let x = header.find(pane.title()).unwrap() as u16;
        assert!(
            buffer[(x, 0)].modifier.contains(Modifier::REVERSED),
            "{name} tab not highlighted"
        );
        let overview = header.find("Overview").unwrap() as u16;
        assert!(!buffer[(overview, 0)].modifier.contains(Modifier::REVERSED));
    }
}

#[test]
fn a_small_terminal_gets_a_message() {
    let model = model(Declarator::Up, NOW);
    let screen = text(&draw(&model, Pane::Overview, 60, 20, NOW));
    check_snapshot("too_small", &screen);
    assert!(screen.starts_with("terminal too small (60x20)"), "{screen}");
    // A single pane still fits.
    let screen = text(&draw(&model, Pane::Devices, 60, 20, NOW));
    assert!(screen.contains("1.07 TH/s"), "{screen}");
}

#[test]
fn any_size_draws_without_panicking() {
    let models = [
        model(Declarator::Up, NOW),
        model(Declarator::SilentAfter100s, NOW),
        Model::new(Settings::default(), T0),
    ];
    for model in &models {
        for pane in Pane::ALL {
            for (w, h) in (0..=130u16)
                .step_by(7)
                .flat_map(|w| (0..=45u16).step_by(4).map(move |h| (w, h)))
                .chain([(80, 24), (79, 24), (80, 23), (40, 8), (39, 8), (1, 1)])
            {
                let buffer = draw(model, pane, w, h, NOW);
                assert_eq!(buffer.area.width, w);
                assert_eq!(buffer.area.height, h);
            }
        }
    }
}

#[test]
fn solo_mining_without_upstreams() {
    // No upstream configured: the declarator publishes no upstream state and declares nothing.
    let mut model = Model::new(Settings::default(), T0);
    for (arrival, msg) in recording(Declarator::Up) {
        if !matches!(msg.topic, Topic::Upstream | Topic::Declaration) {
            model.handle(&msg, arrival).unwrap();
        }
    }
    let screen = text(&draw(&model, Pane::Overview, 80, 24, NOW));
    assert!(screen.contains("mode      solo"), "{screen}");
    assert!(screen.contains("no upstream configured"), "{screen}");
    let screen = text(&draw(&model, Pane::Upstream, 80, 24, NOW));
    assert!(screen.contains("no upstream configured"), "{screen}");
    assert!(screen.contains("no job declared yet"), "{screen}");

    // Upstreams configured but no state yet: it waits for the declarator's.
    let mut model = Model::new(
        Settings {
            configured_upstreams: 2,
            ..Settings::default()
        },
        T0,
    );
    for (arrival, msg) in recording(Declarator::Up) {
        if msg.topic != Topic::Upstream {
            model.handle(&msg, arrival).unwrap();
        }
    }
    let screen = text(&draw(&model, Pane::Overview, 80, 24, NOW));
    assert!(
        screen.contains("waiting for the first upstream state"),
        "{screen}"
    );
}

#[test]
fn solo_fallback_when_no_upstream_is_usable() {
    // Two upstreams configured, both failed: the declarator fell back to solo 30 s ago.
    let mut model = Model::new(
        Settings {
            configured_upstreams: 2,
            ..Settings::default()
        },
        T0,
    );
    for (arrival, msg) in recording(Declarator::Up) {
        if msg.topic != Topic::Upstream {
            model.handle(&msg, arrival).unwrap();
        }
    }
    let mut solo = upstream_state(7);
    solo.mode = "solo".into();
    solo.active = 0;
    solo.switches = 3;
    solo.reason = "upstream #1 failed: channel closed by the pool".into();
    solo.since_us = NOW - 30 * S;
    for u in &mut solo.upstreams {
        u.state = "down".into();
    }
    solo.upstreams[0].last_error = "channel closed by the pool".into();
    let sent = NOW - 30 * S;
    model
        .handle(
            &received("declarator", Topic::Upstream, &solo, sent, false),
            sent + 1_000,
        )
        .unwrap();

    let screen = text(&draw(&model, Pane::Overview, 80, 24, NOW));
    check_snapshot("overview_solo_fallback", &screen);
    for needle in [
        "mode      solo  (none usable)  for 30s",
        "switches  3  last: upstream #1 failed…",
        "#1  down     channel closed by the po…",
        "#2  down     connection refused",
    ] {
        assert!(screen.contains(needle), "{needle:?} missing from\n{screen}");
    }
    assert!(!screen.contains("active"), "{screen}");

    let screen = text(&draw(&model, Pane::Upstream, 80, 24, NOW));
    check_snapshot("upstream_solo_fallback", &screen);
    for needle in [
        "mode      solo  (none usable)  for 30s",
        "last: upstream #1 failed: channel closed by the pool",
        "last error: channel closed by the pool",
        "last error: connection refused",
    ] {
        assert!(screen.contains(needle), "{needle:?} missing from\n{screen}");
    }
}

/// The declarator's `devices` states of the recording: four channels open at 20 s (channel 4,
/// a Stratum V1 device, never submits a share), channel 3 gone at 100 s.
fn device_states() -> (jdc_shared::messages::Devices, jdc_shared::messages::Devices) {
    let rig1 = (1, "extended", "farm.rig1", 1.2e12);
    let rig2 = (2, "standard", "farm.rig2", 2.0e11);
    let rig3 = (3, "standard", "farm.rig3", 2.0e11);
    let s9 = (4, "sv1", "alice.s9", 1.4e13);
    (
        common::devices(T0 + 20 * S, &[rig1, rig2, rig3, s9]),
        common::devices(T0 + 100 * S, &[rig1, rig2, s9]),
    )
}

#[test]
fn devices_listed_by_the_declarator() {
    let (four, three) = device_states();
    let mut msgs = recording(Declarator::Up);
    msgs.push((
        T0 + 20 * S + 1_000,
        received("declarator", Topic::Devices, &four, T0 + 20 * S, false),
    ));
    msgs.push((
        T0 + 100 * S + 1_000,
        received("declarator", Topic::Devices, &three, T0 + 100 * S, false),
    ));
    // Re-sends of the current state change nothing.
    msgs.push((
        T0 + 110 * S,
        received("declarator", Topic::Devices, &three, T0 + 100 * S, true),
    ));
    msgs.sort_by_key(|(arrival, _)| *arrival);
    let mut model = Model::new(Settings::default(), T0);
    for (arrival, msg) in msgs {
        model.handle(&msg, arrival).unwrap();
    }
    let screen = text(&draw(&model, Pane::Devices, 80, 24, NOW));
    check_snapshot("devices_connected", &screen);
    let row = |id: &str| {
        screen
            .lines()
            .find(|l| l.trim_start_matches('│').trim_start().starts_with(id))
            .map(str::to_string)
    };
    // Connected without a share: listed, with its nominal hashrate and worker name.
    let s9 = row("4 sv1").unwrap_or_else(|| panic!("channel 4 missing from\n{screen}"));
    assert!(s9.contains("~14.0 TH/s"), "{s9}");
    assert!(s9.contains("alice.s9"), "{s9}");
    // Connected with shares: their counts and estimate.
    let rig1 = row("1 extended").unwrap_or_else(|| panic!("channel 1 missing from\n{screen}"));
    assert!(rig1.contains("1.07 TH/s"), "{rig1}");
    assert!(rig1.contains("farm.rig1"), "{rig1}");
    // Disconnected: gone, with its shares.
    assert!(
        row("3 standard").is_none(),
        "channel 3 still listed:\n{screen}"
    );
    assert!(screen.contains("total 3 ch"), "{screen}");

    // The overview lists the same channels.
    let screen = text(&draw(&model, Pane::Overview, 80, 24, NOW));
    assert!(screen.contains("~14.0 TH/s"), "{screen}");
    assert!(screen.contains("total 3 ch"), "{screen}");
}

#[test]
fn a_late_start_sees_the_devices_already_connected() {
    // jdc-top starts at 115 s: of the devices it hears only the re-sent state (and heartbeats).
    let (_, three) = device_states();
    let start = T0 + 115 * S;
    let mut model = Model::new(Settings::default(), start);
    model
        .handle(
            &received(
                "declarator",
                Topic::Heartbeat,
                &common::heartbeat("ok"),
                start,
                false,
            ),
            start,
        )
        .unwrap();
    model
        .handle(
            &received("declarator", Topic::Devices, &three, T0 + 100 * S, true),
            start + 1_000,
        )
        .unwrap();
    let screen = text(&draw(&model, Pane::Devices, 80, 24, start + S));
    for needle in ["farm.rig1", "farm.rig2", "alice.s9", "total 3 ch"] {
        assert!(screen.contains(needle), "{needle:?} missing from\n{screen}");
    }
    assert!(!screen.contains("farm.rig3"), "{screen}");

    // Every device disconnects: the declarator says so.
    let none = common::devices(start + 2 * S, &[]);
    model
        .handle(
            &received("declarator", Topic::Devices, &none, start + 2 * S, false),
            start + 2 * S,
        )
        .unwrap();
    let screen = text(&draw(&model, Pane::Devices, 80, 24, start + 2 * S));
    assert!(screen.contains("no device connected"), "{screen}");
}
