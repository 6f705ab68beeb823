//! What a key press does. Pure.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};

use crate::view::Pane;

/// The effect of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// Leave, restoring the terminal (`q`, `Q`, Ctrl-C).
    Quit,
    /// Focus the next pane (tab, right arrow).
    Next,
    /// Focus the previous pane (shift-tab, left arrow).
    Prev,
    /// Focus one pane (`1`..`4`; Esc for the overview).
    Show(Pane),
    /// Clear and redraw the whole screen (Ctrl-L).
    Redraw,
    /// Nothing.
    None,
}

/// The action of `key`.
pub fn action(key: KeyEvent) -> Action {
    if key.kind == KeyEventKind::Release {
        return Action::None;
    }
    let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
    match key.code {
        KeyCode::Char('c') if ctrl => Action::Quit,
        KeyCode::Char('l') if ctrl => Action::Redraw,
        KeyCode::Char('q') | KeyCode::Char('Q') => Action::Quit,
        KeyCode::Tab | KeyCode::Right => Action::Next,
        KeyCode::BackTab | KeyCode::Left => Action::Prev,
        KeyCode::Esc => Action::Show(Pane::Overview),
        KeyCode::Char(c @ '1'..='9') => {
            let index = c as usize - '1' as usize;
            Pane::ALL
                .get(index)
                .map(|p| Action::Show(*p))
                .unwrap_or(Action::None)
        }
        _ => Action::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(code: KeyCode, modifiers: KeyModifiers) -> KeyEvent {
        KeyEvent::new(code, modifiers)
    }

    #[test]
    fn keys_map_to_actions() {
        let none = KeyModifiers::NONE;
        assert_eq!(action(key(KeyCode::Char('q'), none)), Action::Quit);
        assert_eq!(
            action(key(KeyCode::Char('c'), KeyModifiers::CONTROL)),
            Action::Quit
        );
        assert_eq!(action(key(KeyCode::Char('c'), none)), Action::None);
        assert_eq!(action(key(KeyCode::Tab, none)), Action::Next);
        assert_eq!(
            action(key(KeyCode::BackTab, KeyModifiers::SHIFT)),
            Action::Prev
        );
        assert_eq!(
            action(key(KeyCode::Char('3'), none)),
            Action::Show(Pane::Upstream)
        );
        assert_eq!(action(key(KeyCode::Char('9'), none)), Action::None);
        assert_eq!(
            action(key(KeyCode::Esc, none)),
            Action::Show(Pane::Overview)
        );
        let mut release = key(KeyCode::Char('q'), none);
        release.kind = KeyEventKind::Release;
        assert_eq!(action(release), Action::None);
    }

    #[test]
    fn tab_cycles_through_every_pane() {
        let mut pane = Pane::Overview;
        let mut seen = vec![pane];
        for _ in 0..Pane::ALL.len() {
            pane = pane.next();
            seen.push(pane);
        }
        assert_eq!(seen.first(), seen.last());
        assert_eq!(&seen[..4], &Pane::ALL);
        assert_eq!(Pane::Overview.prev(), Pane::Events);
    }
}
