//! Number, time and text formatting for the screen. Pure.

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Satoshis: `1,234 sat`.
pub fn sats(n: u64) -> String {
    format!("{} sat", thousands(n))
}

/// Hashes per second with an SI prefix: `1.23 TH/s`.
pub fn hashrate(hps: f64) -> String {
    if !hps.is_finite() || hps <= 0.0 {
        return "0 H/s".into();
    }
    const UNITS: [&str; 7] = ["H/s", "kH/s", "MH/s", "GH/s", "TH/s", "PH/s", "EH/s"];
    let mut value = hps;
    let mut unit = 0;
    while value >= 1000.0 && unit + 1 < UNITS.len() {
        value /= 1000.0;
        unit += 1;
    }
    if value >= 100.0 {
        format!("{value:.0} {}", UNITS[unit])
    } else if value >= 10.0 {
        format!("{value:.1} {}", UNITS[unit])
    } else {
        format!("{value:.2} {}", UNITS[unit])
    }
}

/// A duration in microseconds, short: `850ms`, `5s`, `2m05s`, `3h04m`, `2d03h`.
pub fn duration_us(us: u64) -> String {
    let s = us / 1_000_000;
    if s == 0 && us > 0 {
        return format!("{}ms", us / 1_000);
    }
    if s < 60 {
        format!("{s}s")
    } else if s < 3_600 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s < 86_400 {
        format!("{}h{:02}m", s / 3_600, (s % 3_600) / 60)
    } else {
        format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3_600)
    }
}

/// Age of something sent at `at_us`, seen at `now_us`: `5s`, `2m05s`, ...
pub fn age(at_us: u64, now_us: u64) -> String {
    let s = now_us.saturating_sub(at_us) / 1_000_000;
    duration_us(s * 1_000_000)
}

/// Milliseconds from microseconds, one decimal below 10 ms: `1.5ms`, `42ms`.
pub fn millis(us: u64) -> String {
    if us < 10_000 {
        format!("{:.1}ms", us as f64 / 1_000.0)
    } else {
        format!("{}ms", us / 1_000)
    }
}

/// A long hash shortened to its ends: `abcdef01…89abcdef`.
pub fn short_hash(hash: &str) -> String {
    let hash = clean(hash);
    let chars: Vec<char> = hash.chars().collect();
    if chars.len() <= 20 {
        return hash;
    }
    let head: String = chars[..8].iter().collect();
    let tail: String = chars[chars.len() - 8..].iter().collect();
    format!("{head}…{tail}")
}

/// Text from the bus made safe for one screen line: control characters (newlines, tabs,
/// escapes) become spaces.
pub fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// `text` cut to at most `max` characters, with `…` when cut.
pub fn truncate(text: &str, max: usize) -> String {
    let text = clean(text);
    if text.chars().count() <= max {
        return text;
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(sats(3_000), "3,000 sat");
        assert_eq!(hashrate(0.0), "0 H/s");
        assert_eq!(hashrate(f64::NAN), "0 H/s");
        assert_eq!(hashrate(1.5e12), "1.50 TH/s");
        assert_eq!(hashrate(25.0e9), "25.0 GH/s");
        assert_eq!(hashrate(358.0e6), "358 MH/s");
        assert_eq!(hashrate(1.0e24), "1000000 EH/s");
        assert_eq!(millis(1_500), "1.5ms");
        assert_eq!(millis(42_000), "42ms");
    }

    #[test]
    fn durations() {
        assert_eq!(duration_us(0), "0s");
        assert_eq!(duration_us(850_000), "850ms");
        assert_eq!(duration_us(5_000_000), "5s");
        assert_eq!(duration_us(125_000_000), "2m05s");
        assert_eq!(duration_us(3_840_000_000), "1h04m");
        assert_eq!(duration_us(183_600_000_000), "2d03h");
        assert_eq!(age(10_000_000, 15_500_000), "5s");
        assert_eq!(age(20, 10), "0s");
    }

    #[test]
    fn text() {
        assert_eq!(short_hash(&"ab".repeat(32)), "abababab…abababab");
        assert_eq!(short_hash("short"), "short");
        assert_eq!(clean("a\nb\tc\u{1b}[2J"), "a b c [2J");
        assert_eq!(truncate("hello world", 5), "hell…");
        assert_eq!(truncate("hello", 5), "hello");
        assert_eq!(truncate("hello", 0), "");
    }
}
