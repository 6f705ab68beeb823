//! Scraping `jdc-metrics` in tests: [`scrape`], [`sum`] of samples, and [`check`], a strict
//! checker of the Prometheus/OpenMetrics text format.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{bail, Context};

fn is_metric_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

/// Checks the OpenMetrics text format line by line: HELP/TYPE descriptors, samples of
/// declared families with well-formed labels and numeric values, `# EOF` last.
pub fn check(text: &str) -> Result<(), String> {
    let mut families: HashSet<String> = HashSet::new();
    let lines: Vec<&str> = text.lines().collect();
    if lines.last() != Some(&"# EOF") {
        return Err("does not end with # EOF".into());
    }
    for (n, line) in lines[..lines.len() - 1].iter().enumerate() {
        let bad = |why: &str| format!("line {}: {why}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap_or_default();
            if !is_metric_name(name) {
                return Err(bad("bad HELP name"));
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest
                .split_once(' ')
                .ok_or_else(|| bad("TYPE without type"))?;
            if !is_metric_name(name) {
                return Err(bad("bad TYPE name"));
            }
            if ![
                "counter",
                "gauge",
                "histogram",
                "info",
                "summary",
                "stateset",
                "unknown",
            ]
            .contains(&kind)
            {
                return Err(bad("unknown type"));
            }
            if !families.insert(name.to_string()) {
                return Err(bad("family declared twice"));
            }
        } else if line.starts_with('#') {
            return Err(bad("unknown comment"));
        } else {
            let (series, value) = line.rsplit_once(' ').ok_or_else(|| bad("no value"))?;
            let ok_value = value.parse::<f64>().is_ok() || ["+Inf", "-Inf", "NaN"].contains(&value);
            if !ok_value {
                return Err(bad("value is not a number"));
            }
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (
                    name,
                    Some(
                        rest.strip_suffix('}')
                            .ok_or_else(|| bad("unclosed labels"))?,
                    ),
                ),
                None => (series, None),
            };
            if !is_metric_name(name) {
                return Err(bad("bad sample name"));
            }
            let family_ok = families.iter().any(|f| {
                name == f
                    || ["_total", "_bucket", "_count", "_sum", "_info", "_created"]
                        .iter()
                        .any(|suffix| name.strip_suffix(suffix) == Some(f.as_str()))
            });
            if !family_ok {
                return Err(bad("sample of an undeclared family"));
            }
            if let Some(mut labels) = labels {
                while !labels.is_empty() {
                    let (key, rest) = labels.split_once("=\"").ok_or_else(|| bad("bad label"))?;
                    if !is_metric_name(key) || key.contains(':') {
                        return Err(bad("bad label name"));
                    }
                    let end = rest
                        .find('"')
                        .ok_or_else(|| bad("unterminated label value"))?;
                    if rest[..end].contains(['\\', '\n']) {
                        return Err(bad("unexpected escape in label value"));
                    }
                    labels = &rest[end + 1..];
                    if let Some(more) = labels.strip_prefix(',') {
                        labels = more;
                    } else if !labels.is_empty() {
                        return Err(bad("junk after label value"));
                    }
                }
            }
        }
    }
    Ok(())
}

/// `GET /metrics` from the stack's jdc-metrics.
pub fn scrape(port: u16) -> anyhow::Result<String> {
    let mut tcp = std::net::TcpStream::connect(("127.0.0.1", port))?;
    tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
    tcp.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")?;
    let mut answer = String::new();
    tcp.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").context("an HTTP answer")?;
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("/metrics answered {head}");
    }
    Ok(body.to_string())
}

/// The sum of the samples of `name` whose labels contain every `labels` pair.
pub fn sum(text: &str, name: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let bare = series.split('{').next() == Some(name);
            bare && labels.iter().all(|want| series.contains(want))
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}
