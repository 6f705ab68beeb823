//! Runs the real `jdc-top` binary in a real terminal: a detached 80x24 tmux session (its own
//! tmux server, on a socket of its own), against real bus publishers bound by the test. Reads
//! the screen with `tmux capture-pane`, presses tab and `q`, and checks that the process exits
//! with status 0 and leaves the alternate screen.
//!
//! Skipped, with a message, when tmux is not installed (`scripts/test` installs it).

mod common;

use jdc_tests::bitcoind::free_port;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{block, declaration, event, selection, share, summary, tip, upstream_state};
use jdc_shared::bus::{BusStats, Publisher, PublisherOptions, Topic};
use jdc_shared::messages::BlockStage;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(100);

fn tmux_installed() -> bool {
    Command::new("tmux")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A tmux server of this test's own (its socket in the test's directory); killed on drop.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .args(args)
            .output()
            .unwrap()
    }

    fn screen(&self) -> String {
        let out = self.run(&["capture-pane", "-p", "-t", "top"]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &str) {
        let out = self.run(&["send-keys", "-t", "top", keys]);
        assert!(out.status.success(), "send-keys {keys}: {out:?}");
    }

    /// Reads the screen until `pred` holds on it, up to the deadline.
    async fn wait_for(&self, what: &str, log: &Path, pred: impl Fn(&str) -> bool) -> String {
        let until = Instant::now() + DEADLINE;
        loop {
            let screen = self.screen();
            if pred(&screen) {
                return screen;
            }
            if Instant::now() > until {
                panic!(
                    "{what}: not on screen within {DEADLINE:?}; screen:\n{screen}\njdc-top log:\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

async fn publisher(
    name: &str,
    port: u16,
    stats: Arc<BusStats>,
    shutdown: CancellationToken,
) -> Publisher {
    let (publisher, _task) = Publisher::bind(
        &format!("tcp://127.0.0.1:{port}"),
        PublisherOptions {
            source: name.to_string(),
            resend_interval: Duration::from_millis(100),
        },
        stats,
        shutdown,
    )
    .await
    .unwrap();
    publisher
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

#[tokio::test(flavor = "multi_thread")]
async fn runs_in_a_real_terminal_and_quits_on_q() {
    if !tmux_installed() {
        eprintln!(
            "SKIPPED runs_in_a_real_terminal_and_quits_on_q: tmux is not installed \
             (scripts/test installs it; Debian: apt-get install tmux)"
        );
        return;
    }
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("jdc-top-terminal-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("jdc-top.log");

    let shutdown = CancellationToken::new();
    let stats = Arc::new(BusStats::default());
    let (wp, sp, dp) = (free_port(), free_port(), free_port());
    let watcher = publisher("watcher", wp, stats.clone(), shutdown.clone()).await;
    let selector = publisher("selector", sp, stats.clone(), shutdown.clone()).await;
    let declarator = publisher("declarator", dp, stats.clone(), shutdown.clone()).await;
    watcher.set_state("ok");
    selector.set_state("ok");
    declarator.set_state("serving-devices");

    let mut command = vec![shell_quote(env!("CARGO_BIN_EXE_jdc-top"))];
    for set in [
        format!("bus.watcher=tcp://127.0.0.1:{wp}"),
        format!("bus.selector=tcp://127.0.0.1:{sp}"),
        format!("bus.declarator=tcp://127.0.0.1:{dp}"),
        "bus.silence_timeout_ms=2000".to_string(),
    ] {
        command.push("--set".into());
        command.push(shell_quote(&set));
    }
    command.push("--log-file".into());
    command.push(shell_quote(&log.display().to_string()));
    // After jdc-top, the shell prints its exit status on the restored screen and waits there.
    let command = format!(
        "{}; echo \"jdc-top exited with status $?\"; sleep 120",
        command.join(" ")
    );
    let tmux = Tmux {
        socket: dir.join("tmux.sock"),
    };
    let out = tmux.run(&[
        "-f",
        "/dev/null",
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "80",
        "-y",
        "24",
        &command,
    ]);
    assert!(out.status.success(), "tmux new-session: {out:?}");

    // Every process up: the subscriptions are in place, so nothing published now is lost.
    let screen = tmux
        .wait_for("all three processes up", &log, |s| {
            s.contains("watcher    up")
                && s.contains("selector   up")
                && s.contains("declarator up")
        })
        .await;
    // tmux's pane is 80x24 whatever is drawn, so line and column counts prove nothing: check
    // that jdc-top laid its overview out for exactly that size. The header is on the first
    // row, the boxes' right borders are on the 80th column, and the bottom border of the last
    // box is on the 24th row (a smaller layout, or "terminal too small", would not be).
    let rows: Vec<&str> = screen.lines().collect();
    assert!(rows.len() >= 24, "{screen}");
    assert!(rows[0].starts_with(" jdc-top  Overview"), "{screen}");
    let bottom = rows[23].trim_end();
    assert!(
        bottom.starts_with('└') && bottom.ends_with('┘') && bottom.chars().count() == 80,
        "the last box does not end on row 24, column 80:\n{screen}"
    );
    assert!(
        rows[1..23].iter().all(|r| {
            let r = r.trim_end();
            r.chars().count() == 80 && "┐│┘".contains(r.chars().last().unwrap_or(' '))
        }),
        "a row does not reach column 80 with a box border:\n{screen}"
    );

    watcher.publish(Topic::Tip, &tip(870_002)).unwrap();
    watcher
        .publish(Topic::Summary, &summary(12, 870_002))
        .unwrap();
    selector
        .publish(Topic::Selection, &selection(22, 12, 870_002))
        .unwrap();
    declarator
        .publish(Topic::Upstream, &upstream_state(1))
        .unwrap();
    declarator
        .publish(Topic::Declaration, &declaration(12, "declared", ""))
        .unwrap();
    for _ in 0..3 {
        declarator
            .publish(Topic::Share, &share(7, "extended", true, 1_000.0))
            .unwrap();
    }
    declarator
        .publish(Topic::Share, &share(7, "extended", false, 1_000.0))
        .unwrap();
    declarator
        .publish(Topic::Block, &block(BlockStage::Found, 870_002, ""))
        .unwrap();
    declarator
        .publish(
            Topic::Event,
            &event("warn", "terminal-test", "published by the terminal test"),
        )
        .unwrap();

    let expected = [
        "#870001",                    // the chain tip
        "3215 txs",                   // the template
        "fee-rate",                   // the selection's policy
        "below-min-fee-rate",         // what it dropped
        "upstream #1",                // pool mode
        "pool.example:34254",         // the active upstream
        "   7 extended      3     1", // the device's shares
        "found 1",                    // the block
        "terminal-test",              // the event
    ];
    tmux.wait_for("the published messages", &log, |s| {
        expected.iter().all(|e| s.contains(e))
    })
    .await;

    // Tab focuses the devices pane, full screen.
    tmux.keys("Tab");
    tmux.wait_for("the devices pane", &log, |s| {
        s.contains("last reject") && s.contains("Jobs and blocks") && !s.contains("Selection")
    })
    .await;

    // q quits with status 0, back on the normal screen.
    tmux.keys("q");
    let screen = tmux
        .wait_for("jdc-top's exit", &log, |s| {
            s.contains("jdc-top exited with status")
        })
        .await;
    assert!(
        screen.contains("jdc-top exited with status 0"),
        "{screen}\nlog:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !screen.contains("Jobs and blocks"),
        "the dashboard is still on screen after exit:\n{screen}"
    );
    shutdown.cancel();
}
