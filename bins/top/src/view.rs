//! Draws the [`Model`] into a ratatui [`Frame`]. Pure: the same model, pane and time draw the
//! same screen (the snapshot tests rely on it).
//!
//! Layout: a header line with the panes (the focused one highlighted), then the focused pane.
//! The overview needs 80x24; the single panes need 40x8; below that one "terminal too small"
//! message is drawn instead. Text longer than its box is cut at the box's edge.
//!
//! Every box fed by one process says so in its title, and when that process is down (no
//! heartbeat for [`crate::state::Settings::down_after_us`]) or was never heard from, the title
//! says that too; a box with nothing to show says "no data from <process>".

use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Paragraph, Wrap};
use ratatui::Frame;

use crate::format::{age, clean, duration_us, hashrate, millis, sats, short_hash, truncate};
use crate::state::{Liveness, Model, PROCESSES};

/// Smallest terminal the overview is drawn in.
pub const MIN_OVERVIEW: (u16, u16) = (80, 24);
/// Smallest terminal a single pane is drawn in.
pub const MIN_PANE: (u16, u16) = (40, 8);

/// The panes, switched with tab.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Pane {
    /// Everything at a glance.
    #[default]
    Overview,
    /// Channels, hashrate, jobs and blocks.
    Devices,
    /// Pool or solo, every upstream, declared jobs.
    Upstream,
    /// Processes in detail and recent events.
    Events,
}

impl Pane {
    /// Every pane, in tab order.
    pub const ALL: [Pane; 4] = [Pane::Overview, Pane::Devices, Pane::Upstream, Pane::Events];

    /// Its name in the header.
    pub fn title(self) -> &'static str {
        match self {
            Pane::Overview => "Overview",
            Pane::Devices => "Devices",
            Pane::Upstream => "Upstream",
            Pane::Events => "Events",
        }
    }

    fn index(self) -> usize {
        Pane::ALL.iter().position(|p| *p == self).unwrap_or(0)
    }

    /// The next pane (tab).
    pub fn next(self) -> Pane {
        Pane::ALL[(self.index() + 1) % Pane::ALL.len()]
    }

    /// The previous pane (shift-tab).
    pub fn prev(self) -> Pane {
        Pane::ALL[(self.index() + Pane::ALL.len() - 1) % Pane::ALL.len()]
    }
}

const DIM: Style = Style::new().fg(Color::DarkGray);
const BOLD: Style = Style::new().add_modifier(Modifier::BOLD);

fn liveness_style(l: Liveness) -> Style {
    match l {
        Liveness::Up => Style::new().fg(Color::Green),
        Liveness::Down => Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
        Liveness::Waiting => Style::new().fg(Color::Yellow),
    }
}

fn level_style(level: &str) -> Style {
    match level {
        "error" => Style::new().fg(Color::Red),
        "warn" => Style::new().fg(Color::Yellow),
        _ => Style::new(),
    }
}

/// Draws the whole screen at `now_us` with `pane` focused.
pub fn draw(frame: &mut Frame, model: &Model, pane: Pane, now_us: u64) {
    let area = frame.area();
    let (min_w, min_h) = if pane == Pane::Overview {
        MIN_OVERVIEW
    } else {
        MIN_PANE
    };
    if area.width < min_w || area.height < min_h {
        let text = format!(
            "terminal too small ({}x{}): the {} pane needs {min_w}x{min_h}. Enlarge it, tab to \
             a single pane (they need {}x{}), or press q to quit.",
            area.width,
            area.height,
            pane.title().to_lowercase(),
            MIN_PANE.0,
            MIN_PANE.1,
        );
        frame.render_widget(Paragraph::new(text).wrap(Wrap { trim: true }), area);
        return;
    }
    let [header, body] = Layout::vertical([Constraint::Length(1), Constraint::Fill(1)]).areas(area);
    draw_header(frame, header, pane);
    match pane {
        Pane::Overview => overview(frame, body, model, now_us),
        Pane::Devices => devices_pane(frame, body, model, now_us),
        Pane::Upstream => upstream_pane(frame, body, model, now_us),
        Pane::Events => events_pane(frame, body, model, now_us),
    }
}

fn draw_header(frame: &mut Frame, area: Rect, focused: Pane) {
    let mut spans = vec![Span::styled(" jdc-top ", BOLD)];
    for pane in Pane::ALL {
        let style = if pane == focused {
            Style::new().add_modifier(Modifier::REVERSED | Modifier::BOLD)
        } else {
            Style::new()
        };
        spans.push(Span::styled(format!(" {} ", pane.title()), style));
    }
    spans.push(Span::styled("  tab: next pane  q: quit", DIM));
    frame.render_widget(Paragraph::new(Line::from(spans)), area);
}

/// A bordered box titled `title`, fed by `process` (if one), whose liveness is in the title.
fn pane_block(title: &str, process: Option<&str>, model: &Model, now_us: u64) -> Block<'static> {
    let mut block = Block::bordered().title(Line::from(Span::styled(format!(" {title} "), BOLD)));
    if let Some(name) = process {
        let (text, style) = source_note(model, name, now_us);
        block = block.title(Line::from(Span::styled(text, style)).right_aligned());
        if model.liveness(name, now_us) == Liveness::Down {
            block = block.border_style(Style::new().fg(Color::Red));
        }
    }
    block
}

/// The title note of a box fed by `name`: ` watcher `, ` watcher DOWN 12s ` (silent for
/// 12 s), ` watcher: waiting ` (never heard from).
fn source_note(model: &Model, name: &str, now_us: u64) -> (String, Style) {
    let liveness = model.liveness(name, now_us);
    let text = match liveness {
        Liveness::Up => format!(" {name} "),
        Liveness::Waiting => format!(" {name}: waiting "),
        Liveness::Down => format!(" {name} DOWN {} ", last_heartbeat_age(model, name, now_us)),
    };
    (text, liveness_style(liveness))
}

fn last_heartbeat_age(model: &Model, name: &str, now_us: u64) -> String {
    model
        .process(name)
        .and_then(|p| p.last_heartbeat_us)
        .map(|t| age(t, now_us))
        .unwrap_or_else(|| "-".into())
}

/// What a box shows when it has nothing from `name`; `what` is the thing awaited.
fn no_data(model: &Model, name: &str, what: &str, now_us: u64) -> Vec<Line<'static>> {
    match model.liveness(name, now_us) {
        Liveness::Waiting => vec![
            Line::styled(
                format!("no data from {name}"),
                liveness_style(Liveness::Waiting),
            ),
            Line::styled(format!("(no heartbeat yet on bus.{name})"), DIM),
        ],
        Liveness::Down => vec![
            Line::styled(
                format!("no data from {name}"),
                liveness_style(Liveness::Down),
            ),
            Line::styled(
                format!(
                    "(down: last heartbeat {} ago)",
                    last_heartbeat_age(model, name, now_us)
                ),
                DIM,
            ),
        ],
        Liveness::Up => vec![Line::styled(format!("waiting for the first {what}"), DIM)],
    }
}

fn render_lines(frame: &mut Frame, area: Rect, block: Block<'static>, lines: Vec<Line<'static>>) {
    frame.render_widget(Paragraph::new(lines).block(block), area);
}

// === Overview ===

fn overview(frame: &mut Frame, area: Rect, model: &Model, now_us: u64) {
    let [row1, row2, row3, events] = Layout::vertical([
        Constraint::Length(7),
        Constraint::Length(7),
        Constraint::Length(5),
        Constraint::Min(3),
    ])
    .areas(area);
    let halves = Layout::horizontal([Constraint::Percentage(50), Constraint::Percentage(50)]);
    let [chain, selection] = halves.areas(row1);
    let [upstream, devices] = halves.areas(row2);
    let [processes, blocks] = halves.areas(row3);

    render_lines(
        frame,
        chain,
        pane_block("Chain", Some("watcher"), model, now_us),
        chain_lines(model, now_us),
    );
    render_lines(
        frame,
        selection,
        pane_block("Selection", Some("selector"), model, now_us),
        selection_lines(model, now_us, inner_height(selection)),
    );
    render_lines(
        frame,
        upstream,
        pane_block("Upstream", Some("declarator"), model, now_us),
        upstream_summary(model, now_us, inner_height(upstream)),
    );
    render_lines(
        frame,
        devices,
        pane_block("Devices", Some("declarator"), model, now_us),
        device_summary(model, now_us, inner_height(devices)),
    );
    render_lines(
        frame,
        processes,
        pane_block("Processes", None, model, now_us),
        process_summary(model, now_us),
    );
    render_lines(
        frame,
        blocks,
        pane_block("Blocks", Some("declarator"), model, now_us),
        block_summary(model, now_us, inner_height(blocks)),
    );
    render_lines(
        frame,
        events,
        pane_block("Events", None, model, now_us),
        event_lines(model, now_us, inner_height(events)),
    );
}

fn inner_height(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(2))
}

fn chain_lines(model: &Model, now_us: u64) -> Vec<Line<'static>> {
    if model.tip.is_none() && model.template.is_none() {
        return no_data(model, "watcher", "tip", now_us);
    }
    let mut lines = Vec::new();
    match &model.tip {
        Some(tip) => {
            lines.push(Line::from(vec![
                Span::styled("tip       ", DIM),
                Span::styled(format!("#{}", tip.value.height.saturating_sub(1)), BOLD),
                Span::raw(format!(
                    "  {} ago  via {}",
                    age(tip.at_us, now_us),
                    truncate(&tip.value.detected_by, 8)
                )),
            ]));
            lines.push(Line::from(vec![
                Span::styled("          ", DIM),
                Span::raw(short_hash(&tip.value.prev_hash)),
            ]));
        }
        None => lines.push(Line::styled("tip       none yet", DIM)),
    }
    match &model.template {
        Some(t) => {
            let t_at = t.at_us;
            let t = &t.value;
            lines.push(Line::from(vec![
                Span::styled("template  ", DIM),
                Span::styled(format!("#{}", t.height), BOLD),
                Span::raw(format!("  {} txs  {} ago", t.tx_count, age(t_at, now_us))),
            ]));
            lines.push(Line::from(vec![
                Span::styled("  fees    ", DIM),
                Span::raw(sats(t.fees)),
            ]));
            lines.push(Line::from(vec![
                Span::styled("  gbt     ", DIM),
                Span::raw(format!(
                    "{}  weight {}",
                    millis(t.gbt_us),
                    crate::format::thousands(t.weight)
                )),
            ]));
        }
        None => lines.push(Line::styled("template  none yet", DIM)),
    }
    lines
}

fn selection_lines(model: &Model, now_us: u64, rows: usize) -> Vec<Line<'static>> {
    let Some(sel) = &model.selection else {
        return no_data(model, "selector", "selection", now_us);
    };
    let at = sel.at_us;
    let sel = &sel.value;
    let mut lines = vec![
        Line::from(vec![
            Span::styled("policy    ", DIM),
            Span::styled(truncate(&sel.policy, 14), BOLD),
            Span::raw(format!("  #{}  {} ago", sel.height, age(at, now_us))),
        ]),
        Line::from(vec![
            Span::styled("chosen    ", DIM),
            Span::raw(format!("{} txs  {}", sel.tx_count, sats(sel.fees))),
        ]),
    ];
    let (count, fee) = sel.dropped.iter().fold((0u64, 0u64), |(c, f), d| {
        (c + u64::from(d.count), f.saturating_add(d.fee))
    });
    if sel.dropped.is_empty() {
        lines.push(Line::from(vec![
            Span::styled("dropped   ", DIM),
            Span::raw("nothing"),
        ]));
        return lines;
    }
    lines.push(Line::from(vec![
        Span::styled("dropped   ", DIM),
        Span::raw(format!("{count} txs  {}", sats(fee))),
    ]));
    let room = rows.saturating_sub(lines.len());
    let shown = if sel.dropped.len() > room {
        room.saturating_sub(1)
    } else {
        sel.dropped.len()
    };
    for d in sel.dropped.iter().take(shown) {
        lines.push(Line::raw(format!(
            "{:<18} {:>4} {}",
            truncate(&d.reason, 18),
            d.count,
            sats(d.fee)
        )));
    }
    if shown < sel.dropped.len() && room > 0 {
        lines.push(Line::styled(
            format!("  +{} more reasons", sel.dropped.len() - shown),
            DIM,
        ));
    }
    lines
}

fn mode_line(model: &Model, now_us: u64) -> Option<Line<'static>> {
    let up = model.upstream.as_ref()?;
    let state = &up.value;
    let mut spans = vec![
        Span::styled("mode      ", DIM),
        Span::styled(truncate(&state.mode, 6), BOLD),
    ];
    if state.mode == "pool" {
        spans.push(Span::raw(format!("  upstream #{}", state.active)));
    } else if state.upstreams.is_empty() {
        spans.push(Span::raw("  (no upstream configured)"));
    } else {
        // Short, so that how long it has been solo still fits the overview's box.
        spans.push(Span::raw("  (none usable)"));
    }
    if state.since_us > 0 {
        spans.push(Span::raw(format!(
            "  for {}",
            age(state.since_us.min(now_us), now_us)
        )));
    }
    Some(Line::from(spans))
}

fn switches_line(model: &Model, width: usize) -> Option<Line<'static>> {
    let state = &model.upstream.as_ref()?.value;
    let mut text = format!("{}", state.switches);
    if !state.reason.is_empty() {
        text.push_str("  last: ");
        text.push_str(&clean(&state.reason));
    }
    Some(Line::from(vec![
        Span::styled("switches  ", DIM),
        Span::raw(truncate(&text, width.saturating_sub(10))),
    ]))
}

fn declarations_line(model: &Model) -> Line<'static> {
    let c = model.declaration_counts;
    Line::from(vec![
        Span::styled("declared  ", DIM),
        Span::raw(format!(
            "{}  accepted {}  rejected {}",
            c.first, c.accepted, c.rejected
        )),
    ])
}

fn upstream_state_style(state: &str) -> Style {
    match state {
        "active" => Style::new().fg(Color::Green),
        "down" => Style::new().fg(Color::Red),
        _ => Style::new(),
    }
}

/// What the upstream boxes say before any upstream state: with no upstream configured the
/// declarator mines solo and publishes none.
fn no_upstream_state(model: &Model, now_us: u64) -> Vec<Line<'static>> {
    if model.settings.configured_upstreams == 0
        && model.liveness("declarator", now_us) == Liveness::Up
    {
        return vec![
            Line::from(vec![
                Span::styled("mode      ", DIM),
                Span::styled("solo", BOLD),
            ]),
            Line::styled("no upstream configured: mining to", DIM),
            Line::styled("the declarator's own payout", DIM),
        ];
    }
    no_data(model, "declarator", "upstream state", now_us)
}

fn upstream_summary(model: &Model, now_us: u64, rows: usize) -> Vec<Line<'static>> {
    let Some(up) = &model.upstream else {
        return no_upstream_state(model, now_us);
    };
    let state = &up.value;
    let mut lines: Vec<Line<'static>> = mode_line(model, now_us).into_iter().collect();
    if state.upstreams.is_empty() {
        return lines;
    }
    lines.extend(switches_line(model, 38));
    lines.push(declarations_line(model));
    let room = rows.saturating_sub(lines.len());
    let shown = if state.upstreams.len() > room {
        room.saturating_sub(1)
    } else {
        state.upstreams.len()
    };
    for u in state.upstreams.iter().take(shown) {
        let detail = if u.state == "down" && !u.last_error.is_empty() {
            &u.last_error
        } else {
            &u.pool
        };
        // The box is 38 columns wide: rank, state and the space before the detail take 13.
        let detail = truncate(detail, 38 - 13);
        lines.push(Line::from(vec![
            Span::raw(format!("#{:<2} ", u.rank)),
            Span::styled(
                format!("{:<8}", truncate(&u.state, 8)),
                upstream_state_style(&u.state),
            ),
            Span::raw(format!(" {detail}")),
        ]));
    }
    if shown < state.upstreams.len() && room > 0 {
        lines.push(Line::styled(
            format!("+{} more (tab: upstream)", state.upstreams.len() - shown),
            DIM,
        ));
    }
    lines
}

fn device_header() -> Line<'static> {
    Line::styled(
        format!(
            "{:>4} {:<9} {:>5} {:>5}  {}",
            "chan", "kind", "acc", "rej", "hashrate"
        ),
        DIM,
    )
}

/// The hashrate shown for a channel: estimated from its accepted shares, or, before it has
/// any, the nominal hashrate the device declared (or the declarator estimates), marked `~`.
fn channel_rate(model: &Model, c: &crate::state::Channel, now_us: u64) -> String {
    match &c.device {
        Some(d) if c.accepted == 0 => format!("~{}", hashrate(d.nominal_hashrate)),
        _ => hashrate(model.channel_hashrate(c, now_us)),
    }
}

/// What a devices box shows when no channel is listed.
fn no_devices(model: &Model, now_us: u64) -> Vec<Line<'static>> {
    if model.devices_known && model.liveness("declarator", now_us) == Liveness::Up {
        vec![Line::styled("no device connected", DIM)]
    } else {
        no_data(model, "declarator", "device", now_us)
    }
}

fn device_summary(model: &Model, now_us: u64, rows: usize) -> Vec<Line<'static>> {
    if model.channels.is_empty() {
        return no_devices(model, now_us);
    }
    let mut lines = vec![device_header()];
    let room = rows.saturating_sub(2);
    let shown = if model.channels.len() > room {
        room.saturating_sub(1)
    } else {
        model.channels.len()
    };
    for (id, c) in model.channels.iter().take(shown) {
        lines.push(Line::raw(format!(
            "{:>4} {:<9} {:>5} {:>5}  {}",
            id,
            truncate(&c.kind, 9),
            c.accepted,
            c.rejected,
            channel_rate(model, c, now_us)
        )));
    }
    if shown < model.channels.len() {
        lines.push(Line::styled(
            format!("  +{} more (tab: devices)", model.channels.len() - shown),
            DIM,
        ));
    }
    let (acc, rej) = model.share_totals();
    lines.push(Line::styled(
        format!(
            "{:<14} {:>5} {:>5}  {}",
            format!("total {} ch", model.channels.len()),
            acc,
            rej,
            hashrate(model.total_hashrate(now_us))
        ),
        BOLD,
    ));
    lines
}

fn process_summary(model: &Model, now_us: u64) -> Vec<Line<'static>> {
    PROCESSES
        .iter()
        .map(|name| {
            let liveness = model.liveness(name, now_us);
            let p = model.process(name);
            let state = p
                .and_then(|p| p.heartbeat.as_ref())
                .map(|h| truncate(&h.state, 12))
                .unwrap_or_else(|| "-".into());
            // Time since its last heartbeat.
            let heard = p
                .and_then(|p| p.last_heartbeat_us)
                .map(|t| age(t, now_us))
                .unwrap_or_default();
            Line::from(vec![
                Span::raw(format!("{name:<11}")),
                Span::styled(
                    format!("{:<8}", liveness.as_str()),
                    liveness_style(liveness),
                ),
                Span::raw(format!("{state:<13}")),
                Span::styled(format!("{heard:>6}"), DIM),
            ])
        })
        .collect()
}

fn stage_style(stage: &str) -> Style {
    match stage {
        "accepted" => Style::new().fg(Color::Green),
        "rejected" | "failed" | "not submitted" => Style::new().fg(Color::Red),
        _ => Style::new().fg(Color::Yellow),
    }
}

fn block_counts_line(model: &Model) -> Line<'static> {
    let c = model.block_counts;
    let mut line = format!(
        "found {}  accepted {}  rejected {}",
        c.first, c.accepted, c.rejected
    );
    // Rare (bitcoind did not answer submitblock): shown only when it happened.
    if c.failed > 0 {
        line.push_str(&format!("  failed {}", c.failed));
    }
    Line::raw(line)
}

fn block_summary(model: &Model, now_us: u64, rows: usize) -> Vec<Line<'static>> {
    if model.blocks.is_empty()
        && model.liveness("declarator", now_us) != Liveness::Up
        && model.job.is_none()
    {
        return no_data(model, "declarator", "block", now_us);
    }
    let mut lines = vec![block_counts_line(model)];
    if model.blocks.is_empty() {
        lines.push(Line::styled("no block found yet", DIM));
    }
    for b in model.blocks.iter().rev().take(rows.saturating_sub(1)) {
        let stage = b.label();
        lines.push(Line::from(vec![
            Span::raw(format!("#{} {} ", b.height, short_hash(&b.hash))),
            Span::styled(stage, stage_style(stage)),
        ]));
    }
    lines
}

fn event_line(row: &crate::state::EventRow, now_us: u64) -> Line<'static> {
    Line::from(vec![
        Span::styled(format!("{:>6} ", age(row.at_us, now_us)), DIM),
        Span::styled(
            format!("{:<5} ", truncate(&row.event.level, 5)),
            level_style(&row.event.level),
        ),
        Span::raw(format!("{:<10} ", truncate(&row.process, 10))),
        Span::styled(format!("{} ", clean(&row.event.kind)), BOLD),
        Span::raw(clean(&row.event.message)),
    ])
}

fn event_lines(model: &Model, now_us: u64, rows: usize) -> Vec<Line<'static>> {
    if model.events.is_empty() {
        return vec![Line::styled("no event yet", DIM)];
    }
    model
        .events
        .iter()
        .rev()
        .take(rows)
        .map(|e| event_line(e, now_us))
        .collect()
}

// === Devices ===

fn devices_pane(frame: &mut Frame, area: Rect, model: &Model, now_us: u64) {
    let blocks_height = (2 * model.blocks.len().max(1) + 4).min(14) as u16;
    let [devices, blocks] =
        Layout::vertical([Constraint::Min(4), Constraint::Length(blocks_height)]).areas(area);
    let rows = inner_height(devices);
    let lines = if model.channels.is_empty() {
        no_devices(model, now_us)
    } else {
        // What is left of the width after the fixed columns goes to the worker and the last
        // rejection, half each.
        let free = usize::from(devices.width.saturating_sub(2)).saturating_sub(55);
        let worker_width = free / 2;
        let reason_width = free - worker_width;
        let mut lines = vec![Line::styled(
            format!(
                "{:>4} {:<8} {:>10} {:>6} {:>5} {:>8} {:>5}  {:<worker_width$} {}",
                "chan", "kind", "hashrate", "acc", "rej", "diff", "idle", "worker", "last reject"
            ),
            DIM,
        )];
        let room = rows.saturating_sub(2);
        let shown = if model.channels.len() > room {
            room.saturating_sub(1)
        } else {
            model.channels.len()
        };
        for (id, c) in model.channels.iter().take(shown) {
            let idle = if c.last_share_us == 0 {
                "-".to_string()
            } else {
                age(c.last_share_us, now_us)
            };
            let worker = c.device.as_ref().map_or("", |d| d.user_identity.as_str());
            lines.push(Line::raw(format!(
                "{:>4} {:<8} {:>10} {:>6} {:>5} {:>8} {:>5}  {:<worker_width$} {}",
                id,
                truncate(&c.kind, 8),
                channel_rate(model, c, now_us),
                c.accepted,
                c.rejected,
                difficulty(c.difficulty),
                idle,
                truncate(worker, worker_width),
                truncate(&c.last_reject, reason_width)
            )));
        }
        if shown < model.channels.len() {
            lines.push(Line::styled(
                format!("  +{} more channels", model.channels.len() - shown),
                DIM,
            ));
        }
        let (acc, rej) = model.share_totals();
        lines.push(Line::styled(
            format!(
                "{:<13} {:>10} {:>6} {:>5}",
                format!("total {} ch", model.channels.len()),
                hashrate(model.total_hashrate(now_us)),
                acc,
                rej,
            ),
            BOLD,
        ));
        lines
    };
    render_lines(
        frame,
        devices,
        pane_block("Devices", Some("declarator"), model, now_us),
        lines,
    );

    let mut lines = vec![block_counts_line(model)];
    match &model.job {
        Some(job) => {
            let j = &job.value;
            lines.push(Line::raw(format!(
                "last job {} #{}  {} txs  to {} ch  {} ago  (jobs: {} empty, {} full)",
                j.kind.as_str(),
                j.height,
                j.tx_count,
                j.channels,
                age(job.at_us, now_us),
                model.jobs.0,
                model.jobs.1
            )));
        }
        None => lines.push(Line::styled("no job sent yet", DIM)),
    }
    if model.blocks.is_empty() {
        lines.push(Line::styled("no block found yet", DIM));
    }
    for b in model.blocks.iter().rev() {
        let stage = b.label();
        let mut spans = vec![
            Span::styled(format!("{:>6} ", age(b.at_us, now_us)), DIM),
            Span::raw(format!("#{} ", b.height)),
            Span::styled(stage, stage_style(stage)),
        ];
        if !b.reason.is_empty() {
            spans.push(Span::raw(format!(" {}", clean(&b.reason))));
        }
        lines.push(Line::from(spans));
        lines.push(Line::raw(format!("       {}", clean(&b.hash))));
    }
    render_lines(
        frame,
        blocks,
        pane_block("Jobs and blocks", Some("declarator"), model, now_us),
        lines,
    );
}

fn difficulty(d: f64) -> String {
    if !d.is_finite() || d <= 0.0 {
        "-".into()
    } else if d >= 1e6 {
        format!("{d:.3e}")
    } else if d >= 100.0 {
        format!("{d:.0}")
    } else {
        format!("{d:.3}")
    }
}

// === Upstream ===

fn upstream_pane(frame: &mut Frame, area: Rect, model: &Model, now_us: u64) {
    let upstream_rows = model
        .upstream
        .as_ref()
        .map(|u| 2 * u.value.upstreams.len() + 3)
        .unwrap_or(3)
        .min(14) as u16;
    let [upstream, declared] =
        Layout::vertical([Constraint::Length(upstream_rows + 2), Constraint::Min(3)]).areas(area);
    let width = usize::from(upstream.width.saturating_sub(2));
    let lines = match &model.upstream {
        None => no_upstream_state(model, now_us),
        Some(up) => {
            let state = &up.value;
            let mut lines: Vec<Line<'static>> = mode_line(model, now_us).into_iter().collect();
            lines.extend(switches_line(model, width));
            lines.push(Line::styled(
                format!("state sent {} ago", age(up.at_us, now_us)),
                DIM,
            ));
            for u in &state.upstreams {
                lines.push(Line::from(vec![
                    Span::raw(format!("#{:<2} ", u.rank)),
                    Span::styled(
                        format!("{:<8}", truncate(&u.state, 8)),
                        upstream_state_style(&u.state),
                    ),
                    Span::raw(format!(
                        " {:<13} pool {}  jds {}",
                        truncate(&u.mode, 13),
                        clean(&u.pool),
                        clean(&u.jds)
                    )),
                ]));
                lines.push(Line::styled(
                    if u.last_error.is_empty() {
                        "    no error".to_string()
                    } else {
                        format!("    last error: {}", clean(&u.last_error))
                    },
                    DIM,
                ));
            }
            lines
        }
    };
    render_lines(
        frame,
        upstream,
        pane_block("Upstream", Some("declarator"), model, now_us),
        lines,
    );

    let rows = inner_height(declared);
    let reason_width = usize::from(declared.width.saturating_sub(2)).saturating_sub(54);
    let lines = if model.declarations.is_empty() {
        if model.liveness("declarator", now_us) == Liveness::Up {
            vec![Line::styled(
                "no job declared yet (only while mining for a pool)",
                DIM,
            )]
        } else {
            no_data(model, "declarator", "declared job", now_us)
        }
    } else {
        let mut lines = vec![
            declarations_line(model),
            Line::styled(
                format!(
                    "{:>6}  {:<3} {:>16}  {:<8} {:>5} {:>8}  {}",
                    "age", "up", "template", "stage", "txs", "from tip", "reason"
                ),
                DIM,
            ),
        ];
        for d in model.declarations.iter().rev().take(rows.saturating_sub(2)) {
            lines.push(Line::from(vec![
                Span::styled(format!("{:>6}  ", age(d.at_us, now_us)), DIM),
                Span::raw(format!("#{:<2} {:>16}  ", d.upstream, d.template_id)),
                Span::styled(
                    format!("{:<8}", truncate(&d.stage, 8)),
                    stage_style(&d.stage),
                ),
                Span::raw(format!(
                    " {:>5} {:>8}  {}",
                    d.tx_count,
                    if d.since_tip_us > 0 {
                        millis(d.since_tip_us)
                    } else {
                        "-".into()
                    },
                    truncate(&d.reason, reason_width)
                )),
            ]));
        }
        lines
    };
    render_lines(
        frame,
        declared,
        pane_block("Declared jobs", Some("declarator"), model, now_us),
        lines,
    );
}

// === Events ===

fn events_pane(frame: &mut Frame, area: Rect, model: &Model, now_us: u64) {
    let [processes, events] = Layout::vertical([
        Constraint::Length(PROCESSES.len() as u16 + 3),
        Constraint::Min(3),
    ])
    .areas(area);
    let mut lines: Vec<Line<'static>> = PROCESSES
        .iter()
        .map(|name| {
            let liveness = model.liveness(name, now_us);
            let p = model.process(name);
            let hb = p.and_then(|p| p.heartbeat.as_ref());
            let state = hb.map(|h| clean(&h.state)).unwrap_or_else(|| "-".into());
            let mut spans = vec![
                Span::raw(format!("{name:<11}")),
                Span::styled(
                    format!("{:<8}", liveness.as_str()),
                    liveness_style(liveness),
                ),
                Span::raw(format!("{:<19}", truncate(&state, 18))),
            ];
            if let (Some(p), Some(hb)) = (p, hb) {
                spans.push(Span::styled(
                    format!(
                        "v{:<7} up {:<6} hb {:<5} restarts {}",
                        truncate(&hb.version, 7),
                        duration_us(now_us.saturating_sub(hb.started_at_us.min(now_us))),
                        p.last_heartbeat_us
                            .map(|t| age(t, now_us))
                            .unwrap_or_default(),
                        p.restarts
                    ),
                    DIM,
                ));
            }
            Line::from(spans)
        })
        .collect();
    let bus = model.bus;
    lines.push(Line::styled(
        format!(
            "bus: {} received  {} malformed  {} missed  {} publisher restarts",
            bus.received,
            bus.malformed + model.malformed_bodies,
            bus.gaps,
            bus.restarts
        ),
        DIM,
    ));
    render_lines(
        frame,
        processes,
        pane_block("Processes", None, model, now_us),
        lines,
    );
    render_lines(
        frame,
        events,
        pane_block("Events", None, model, now_us),
        event_lines(model, now_us, inner_height(events)),
    );
}
