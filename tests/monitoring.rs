//! Monitoring (issue 17, part 2): the Prometheus alerting rules of
//! `deploy/prometheus/` pass `promtool check rules` and their unit tests
//! (`promtool test rules`, Prometheus's own evaluator: each alert shown
//! firing and silent), the Grafana dashboard of `deploy/grafana/` is a
//! valid dashboard, and every metric either names is one a real tamis
//! serves on its `/metrics`.
//!
//! The rules' test format is Prometheus's "Unit Testing for Rules"
//! (prometheus.io/docs/prometheus/latest/configuration/unit_testing_rules/);
//! the dashboard's shape is Grafana's dashboard JSON model
//! (grafana.com/docs/grafana/latest/dashboards/build-dashboards/view-dashboard-json-model/).

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use serde_json::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rules_path() -> PathBuf {
    root().join("deploy/prometheus/tamis-rules.yml")
}

fn promtool() -> Command {
    let found = ["/usr/bin/promtool", "/usr/local/bin/promtool"]
        .iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or_else(|| {
            panic!("promtool not found: run deploy/setup.sh (it installs Debian's `prometheus` package, which ships promtool)")
        });
    Command::new(found)
}

fn run(mut command: Command) -> String {
    let out = command.output().expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{command:?} failed:\n{text}");
    text
}

fn yaml(path: &Path) -> serde_yaml::Value {
    let text = std::fs::read_to_string(path).expect("read YAML");
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every alerting rule of the rules file.
fn alerts() -> Vec<serde_yaml::Value> {
    let rules = yaml(&rules_path());
    rules["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules").clone())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn dashboard() -> Value {
    let text = std::fs::read_to_string(root().join("deploy/grafana/tamis.json"))
        .expect("read deploy/grafana/tamis.json");
    serde_json::from_str(&text).expect("deploy/grafana/tamis.json is JSON")
}

/// Every PromQL expression of the dashboard: panel queries and the
/// template variable's query.
fn dashboard_exprs(dashboard: &Value) -> Vec<String> {
    let mut exprs = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            exprs.push(target["expr"].as_str().expect("target expr").to_string());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if let Some(q) = var["query"]["query"].as_str() {
            exprs.push(q.to_string());
        }
    }
    exprs
}

/// The `tamis_…` metric names an expression reads.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let re = regex::Regex::new(r"\btamis_[a-z0-9_]+").unwrap();
    re.find_iter(expr).map(|m| m.as_str().to_string()).collect()
}

#[test]
fn the_alerting_rules_pass_promtool_check() {
    let mut check = promtool();
    check.args(["check", "rules"]).arg(rules_path());
    let out = run(check);
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alerts().len())),
        "{out}"
    );
}

/// `promtool test rules` runs every case of the test file; each alert must
/// have a case where it fires (expected alerts, with labels and the
/// rendered annotations) and one where it must not (no alert expected).
#[test]
fn every_alert_fires_when_it_should_and_not_when_it_should_not() {
    let tests_path = root().join("deploy/prometheus/tamis-rules.test.yml");
    let mut test = promtool();
    test.current_dir(root().join("deploy/prometheus"))
        .args(["test", "rules"])
        .arg(&tests_path);
    let out = run(test);
    assert!(out.contains("SUCCESS"), "{out}");

    let tests = yaml(&tests_path);
    let mut fires: HashMap<String, usize> = HashMap::new();
    let mut silent: HashMap<String, usize> = HashMap::new();
    for case in tests["tests"].as_sequence().expect("tests") {
        for check in case["alert_rule_test"].as_sequence().into_iter().flatten() {
            let name = check["alertname"].as_str().expect("alertname").to_string();
            let expected = check["exp_alerts"].as_sequence().expect("exp_alerts");
            let counts = if expected.is_empty() {
                &mut silent
            } else {
                &mut fires
            };
            *counts.entry(name).or_default() += 1;
        }
    }
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        assert!(fires.contains_key(name), "no unit test shows {name} firing");
        assert!(
            silent.contains_key(name),
            "no unit test shows {name} staying silent"
        );
    }
}

/// GitHub's anchor for a Markdown heading: lower case, spaces to dashes,
/// punctuation other than dashes and underscores dropped.
fn anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_summary_a_description_and_a_runbook_in_the_readme() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let anchors: BTreeSet<String> = readme
        .lines()
        .filter(|l| l.starts_with('#'))
        .map(|l| anchor(l.trim_start_matches('#')))
        .collect();
    assert!(
        anchors.contains("monitoring"),
        "README has no Monitoring section"
    );
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap();
        let notes = &alert["annotations"];
        for key in ["summary", "description"] {
            assert!(
                notes[key].as_str().is_some_and(|s| s.len() > 20),
                "{name} has no {key}"
            );
        }
        let runbook = notes["runbook_url"].as_str().unwrap_or_default();
        let target = runbook.strip_prefix("README.md#").unwrap_or_else(|| {
            panic!("{name}'s runbook_url `{runbook}` does not point into the README")
        });
        assert!(
            anchors.contains(target),
            "{name}'s runbook `{runbook}` names no heading of the README"
        );
        assert!(
            ["critical", "warning"].contains(&alert["labels"]["severity"].as_str().unwrap_or("")),
            "{name} has no severity"
        );
    }
}

#[test]
fn the_dashboard_is_a_valid_grafana_dashboard() {
    let d = dashboard();
    assert_eq!(d["title"], "tamis");
    assert!(d["uid"]
        .as_str()
        .is_some_and(|u| !u.is_empty() && u.len() <= 40));
    assert!(d["schemaVersion"].as_u64().is_some_and(|v| v >= 30));
    // Importable anywhere: the data source is asked for at import.
    let inputs = d["__inputs"].as_array().expect("__inputs");
    assert!(inputs
        .iter()
        .any(|i| i["name"] == "DS_PROMETHEUS" && i["pluginId"] == "prometheus"));
    let panels = d["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    let mut queries = 0;
    for panel in panels {
        let id = panel["id"].as_u64().expect("panel id");
        assert!(ids.insert(id), "panel id {id} twice");
        let grid = &panel["gridPos"];
        let (x, w) = (grid["x"].as_u64().unwrap(), grid["w"].as_u64().unwrap());
        assert!(x + w <= 24 && grid["h"].as_u64().unwrap() > 0, "{panel}");
        if panel["type"] == "row" {
            continue;
        }
        assert!(panel["title"].as_str().is_some_and(|t| !t.is_empty()));
        assert_eq!(
            panel["datasource"]["uid"], "${DS_PROMETHEUS}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{} has no query", panel["title"]);
        for t in targets {
            assert!(!metric_names(t["expr"].as_str().unwrap()).is_empty());
            queries += 1;
        }
    }
    // What the issue asks the dashboard to show, each by its metric.
    let exprs = dashboard_exprs(&d).join("\n");
    for shown in [
        "tamis_hits_received_total",
        "tamis_hits_accepted_total",
        "tamis_hits_dropped_total{instance=~\"$instance\",reason=\"invalid\"}",
        "tamis_hits_overloaded_total",
        "tamis_insert_duration_seconds_bucket",
        "tamis_log_backlog_hits",
        "tamis_log_backlog_age_seconds",
        "tamis_log_bytes",
        "tamis_rows_written_total",
        "tamis_clickhouse_up",
        "tamis_rows_dead_lettered_total",
        "tamis_salt_oldest_day_start_seconds",
    ] {
        assert!(exprs.contains(shown), "the dashboard does not show {shown}");
    }
    assert!(queries >= 20);
}

/// The metric names in `/metrics` text: every sample's name, so a
/// histogram's `_bucket`, `_sum` and `_count` are there as served.
fn served_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or_default().to_string())
        .collect()
}

#[test]
fn every_metric_the_rules_and_the_dashboard_read_is_served_by_tamis() {
    let ch = ClickHouse::shared();
    let db = ch.create_database("monitoring");
    let scratch = Scratch::new();
    let server = Binary::serve(&scratch, &config(ch, &db, None, ""));
    // One hit, so that every counter has moved through its real code.
    let hit = send_hit(
        server.addr,
        "198.51.100.7",
        FIREFOX,
        &pageview("https://example.org/"),
        &[],
    );
    assert_eq!(hit.status, 202, "{}", hit.body);
    let metrics = http(server.admin, "GET", "/metrics", &[], b"");
    assert_eq!(metrics.status, 200);
    let served = served_names(&metrics.body);

    let mut read: Vec<(String, String)> = Vec::new();
    for alert in alerts() {
        let name = alert["alert"].as_str().unwrap().to_string();
        let expr = alert["expr"].as_str().expect("expr");
        let names = metric_names(expr);
        assert!(!names.is_empty(), "{name} reads no tamis metric");
        read.extend(names.into_iter().map(|m| (format!("rule {name}"), m)));
    }
    for expr in dashboard_exprs(&dashboard()) {
        read.extend(
            metric_names(&expr)
                .into_iter()
                .map(|m| ("the dashboard".to_string(), m)),
        );
    }
    let missing: Vec<String> = read
        .iter()
        .filter(|(_, m)| !served.contains(m))
        .map(|(who, m)| format!("{who}: {m}"))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics not served by tamis: {missing:?}\nserved: {served:?}"
    );
    // Label values the dashboard selects exist too.
    assert!(metrics
        .body
        .contains("tamis_hits_dropped_total{reason=\"invalid\"}"));
    // The gauges the rules compare are set from start-up: ClickHouse was
    // reached, no reload was refused, the log's cap is known.
    for (name, value) in [
        ("tamis_clickhouse_up", "1"),
        ("tamis_config_last_reload_successful", "1"),
        ("tamis_log_full", "0"),
    ] {
        assert!(
            metrics.body.lines().any(|l| l == format!("{name} {value}")),
            "{name} is not {value}:\n{}",
            metrics.body
        );
    }
    assert!(!metrics.body.contains("\ntamis_log_max_bytes 0\n"));
}
