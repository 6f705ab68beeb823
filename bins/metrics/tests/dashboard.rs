//! The Grafana dashboard and the Prometheus configuration in `monitoring/` use only metrics
//! that exist, and fit together (datasource, scrape target).

use jdc_shared::metric_names::{MetricKind, ALL};

fn repo_file(path: &str) -> String {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::read_to_string(root.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every sample name the exposition can hold.
fn sample_names() -> Vec<String> {
    ALL.iter()
        .flat_map(|d| match d.kind {
            MetricKind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|s| format!("{}{s}", d.name))
                .collect::<Vec<_>>(),
            _ => vec![d.exposed()],
        })
        .collect()
}

/// The jdc metric names a PromQL expression mentions.
fn metrics_in(expr: &str) -> impl Iterator<Item = &str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("jdc_"))
}

#[test]
fn every_dashboard_query_uses_existing_metrics() {
    let dashboard: serde_json::Value =
        serde_json::from_str(&repo_file("monitoring/grafana/jdc.json")).expect("valid JSON");
    let names = sample_names();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10, "a dashboard worth the name");
    let mut used = std::collections::BTreeSet::new();
    for panel in panels {
        assert_eq!(
            panel["datasource"]["uid"], "prometheus",
            "{}",
            panel["title"]
        );
        let pos = &panel["gridPos"];
        let (x, w) = (pos["x"].as_u64().unwrap(), pos["w"].as_u64().unwrap());
        assert!(x + w <= 24, "{} overflows the grid", panel["title"]);
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            for word in metrics_in(expr) {
                assert!(
                    names.iter().any(|n| n == word),
                    "panel {} queries unknown metric {word}",
                    panel["title"]
                );
                used.insert(word.to_string());
            }
        }
    }
    // The headline metrics are on it.
    for must in [
        "jdc_tip_height",
        "jdc_process_up",
        "jdc_hashrate_estimate_hashes_per_second",
        "jdc_tip_to_job_seconds_bucket",
        "jdc_upstream_state",
        "jdc_selection_dropped_fees_sats",
        "jdc_blocks_total",
    ] {
        assert!(used.contains(must), "the dashboard does not show {must}");
    }
}

#[test]
fn provisioning_and_scrape_config_fit_together() {
    let datasource = repo_file("monitoring/grafana/provisioning/datasources/prometheus.yaml");
    assert!(datasource.contains("uid: prometheus"));
    assert!(datasource.contains("url: http://prometheus:9090"));
    let dashboards = repo_file("monitoring/grafana/provisioning/dashboards/jdc.yaml");
    assert!(dashboards.contains("path: /var/lib/grafana/dashboards"));
    let prometheus = repo_file("monitoring/prometheus.yml");
    let default_port = jdc_shared::config::Config::default()
        .metrics
        .listen
        .rsplit_once(':')
        .map(|(_, p)| p.to_string())
        .expect("host:port");
    assert!(
        prometheus.contains(&format!("\"metrics:{default_port}\"")),
        "prometheus.yml scrapes metrics:{default_port}"
    );
}

#[test]
fn alert_rules_use_existing_metrics_and_are_documented() {
    let rules = repo_file("monitoring/alerts.yml");
    let prometheus = repo_file("monitoring/prometheus.yml");
    assert!(prometheus.contains("- /etc/prometheus/alerts.yml"));
    let compose = repo_file("compose.yaml");
    assert!(compose.contains("./monitoring/alerts.yml:/etc/prometheus/alerts.yml:ro"));
    let operator = repo_file("docs/operator.md");
    let names = sample_names();
    let mut alerts = 0;
    for line in rules.lines() {
        if let Some(alert) = line.trim().strip_prefix("- alert: ") {
            alerts += 1;
            assert!(
                operator.contains(&format!("`{alert}`")),
                "docs/operator.md does not say what to do when {alert} fires"
            );
        }
        for word in metrics_in(line) {
            assert!(
                names.iter().any(|n| n == word),
                "alerts.yml uses unknown metric {word}: {line}"
            );
        }
    }
    assert!(alerts >= 6, "{alerts} alerts");
}
