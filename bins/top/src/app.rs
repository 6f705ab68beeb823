//! The I/O shell: bus subscription, terminal set-up and restore, keys, redraws.
//!
//! The screen is redrawn at a steady rate (ages keep moving, a silent process turns *down*)
//! and soon after new data, at most every [`DATA_REDRAW_GAP`] however fast messages come.

use std::io::{IsTerminal, Stdout};
use std::sync::Arc;
use std::time::Duration;

use crossterm::event::{Event as TermEvent, EventStream};
use crossterm::{cursor, execute, terminal};
use futures::StreamExt;
use jdc_shared::bus::{self, BusStats, Received};
use jdc_shared::config::Config;
use jdc_shared::time::now_micros;
use ratatui::backend::CrosstermBackend;
use ratatui::Terminal;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::keys::{self, Action};
use crate::state::{BusCounters, Model, Settings, PROCESSES};
use crate::view::{self, Pane};
use crate::TOPICS;

/// Least time between two redraws caused by new data.
pub const DATA_REDRAW_GAP: Duration = Duration::from_millis(50);

/// Messages folded before the screen is redrawn, at most.
const DRAIN_BATCH: usize = 4096;

/// How the dashboard runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Options {
    /// Steady redraw interval.
    pub refresh: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            refresh: Duration::from_millis(250),
        }
    }
}

/// Why the dashboard stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Standard output is not a terminal.
    #[error("jdc-top draws a dashboard on a terminal, but its output is not one (run it in a terminal, not through a pipe)")]
    NotATerminal,
    /// Reading keys or drawing failed.
    #[error("terminal error: {0}")]
    Terminal(#[from] std::io::Error),
}

/// Puts the terminal in raw mode on the alternate screen; puts it back when dropped (also on
/// error paths, and from a panic through the hook installed by [`TerminalGuard::enter`]).
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

fn restore_terminal() {
    let _ = terminal::disable_raw_mode();
    let _ = execute!(
        std::io::stdout(),
        terminal::LeaveAlternateScreen,
        cursor::Show
    );
}

impl TerminalGuard {
    fn enter() -> Result<TerminalGuard, std::io::Error> {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_terminal();
            previous(info);
        }));
        terminal::enable_raw_mode()?;
        if let Err(e) = execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide
        ) {
            restore_terminal();
            return Err(e);
        }
        match Terminal::new(CrosstermBackend::new(std::io::stdout())) {
            Ok(terminal) => Ok(TerminalGuard { terminal }),
            Err(e) => {
                restore_terminal();
                Err(e)
            }
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

/// Runs the dashboard until `q`, Ctrl-C or `shutdown`. The terminal is restored before this
/// returns.
pub async fn run(
    config: Config,
    options: Options,
    shutdown: CancellationToken,
) -> Result<(), RunError> {
    if !std::io::stdout().is_terminal() {
        return Err(RunError::NotATerminal);
    }
    let stats = Arc::new(BusStats::default());
    let (mut rx, bus_tasks) = bus::subscribe(
        config.bus.subscribe_options(&PROCESSES, &TOPICS),
        stats.clone(),
        shutdown.clone(),
    );
    tracing::info!(
        watcher = %config.bus.watcher,
        selector = %config.bus.selector,
        declarator = %config.bus.declarator,
        "jdc-top listening"
    );
    let settings = Settings {
        down_after_us: config.metrics.down_after_ms.saturating_mul(1_000),
        configured_upstreams: config.declarator.upstream.len(),
        ..Settings::default()
    };
    let mut model = Model::new(settings, now_micros());
    let result = match TerminalGuard::enter() {
        Ok(mut guard) => {
            let mut screen = Screen {
                terminal: &mut guard.terminal,
                pane: Pane::default(),
                stats: &stats,
            };
            screen
                .event_loop(&mut model, &mut rx, options, &shutdown)
                .await
        }
        Err(e) => Err(RunError::Terminal(e)),
    };
    shutdown.cancel();
    for task in bus_tasks {
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            tracing::warn!("a bus task did not stop within 2 s");
        }
    }
    tracing::info!("jdc-top stopped");
    result
}

struct Screen<'a> {
    terminal: &'a mut Terminal<CrosstermBackend<Stdout>>,
    pane: Pane,
    stats: &'a BusStats,
}

impl Screen<'_> {
    fn draw(&mut self, model: &mut Model) -> Result<(), std::io::Error> {
        let (received, malformed, gaps, restarts) = self.stats.snapshot();
        model.bus = BusCounters {
            received,
            malformed,
            gaps,
            restarts,
        };
        let pane = self.pane;
        let now = now_micros();
        self.terminal
            .draw(|frame| view::draw(frame, model, pane, now))?;
        Ok(())
    }

    async fn event_loop(
        &mut self,
        model: &mut Model,
        rx: &mut mpsc::Receiver<Received>,
        options: Options,
        shutdown: &CancellationToken,
    ) -> Result<(), RunError> {
        let mut keys_in = EventStream::new();
        let mut tick = tokio::time::interval(options.refresh.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        let mut last_draw = Instant::now();
        let mut data_draw: Option<Instant> = None;
        self.draw(model)?;
        loop {
            let data_due = async {
                match data_draw {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                event = keys_in.next() => match event {
                    None => return Ok(()),
                    Some(Err(e)) => return Err(RunError::Terminal(e)),
                    Some(Ok(TermEvent::Key(key))) => {
                        match keys::action(key) {
                            Action::Quit => return Ok(()),
                            Action::Next => self.pane = self.pane.next(),
                            Action::Prev => self.pane = self.pane.prev(),
                            Action::Show(pane) => self.pane = pane,
                            Action::Redraw => self.terminal.clear()?,
                            Action::None => continue,
                        }
                        self.draw(model)?;
                        last_draw = Instant::now();
                    }
                    Some(Ok(TermEvent::Resize(..))) => {
                        self.draw(model)?;
                        last_draw = Instant::now();
                    }
                    Some(Ok(_)) => {}
                },
                msg = rx.recv() => {
                    let Some(msg) = msg else { return Ok(()) };
                    fold(model, &msg);
                    for _ in 0..DRAIN_BATCH {
                        match rx.try_recv() {
                            Ok(msg) => fold(model, &msg),
                            Err(_) => break,
                        }
                    }
                    if data_draw.is_none() {
                        data_draw = Some((last_draw + DATA_REDRAW_GAP).max(Instant::now()));
                    }
                }
                _ = data_due => {
                    data_draw = None;
                    self.draw(model)?;
                    last_draw = Instant::now();
                }
                _ = tick.tick() => {
                    self.draw(model)?;
                    last_draw = Instant::now();
                }
            }
        }
    }
}

fn fold(model: &mut Model, msg: &Received) {
    if let Err(e) = model.handle(msg, now_micros()) {
        tracing::warn!(stream = %msg.stream, "skipping malformed bus message: {e}");
    }
}
