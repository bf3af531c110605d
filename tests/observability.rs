//! What SREs look at: the Grafana dashboard and the Prometheus alerts.
//!
//! - `promtool check rules` and `promtool test rules` on `config/prometheus/` (the `prometheus`
//!   Debian package ships `promtool`; with `CI=true` a missing one fails, otherwise the test
//!   says it is skipped).
//! - Every metric name and label in every dashboard and alert expression exists in what a
//!   running controller's `/metrics` serves, after being fed releases the way the reconcile
//!   feeds it.
//! - The PrometheusRule manifest carries exactly the rules file; the dashboard has the panels
//!   it promises, laid out without overlaps.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use serde_json::Value as Json;
use serde_yaml::Value;
use waymark::api::{
    AnalysisStatus, HistoryEntry, Outcome, Phase, ReleaseStatus, RoleAnalysis, Verdict,
    WindowResult,
};
use waymark::controller::http::{Shared, router};
use waymark::controller::{Health, Metrics};

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn read(relative: &str) -> String {
    std::fs::read_to_string(path(relative))
        .unwrap_or_else(|error| panic!("cannot read {relative}: {error}"))
}

const RULES: &str = "config/prometheus/waymark-rules.yaml";
const RULES_TEST: &str = "config/prometheus/waymark-rules.test.yaml";
const DASHBOARD: &str = "config/grafana/waymark.json";

// ----- promtool -----

/// `promtool` from `WAYMARK_PROMTOOL` or `PATH`; `None` (after saying so) when missing outside CI.
fn promtool() -> Option<PathBuf> {
    let found = std::env::var_os("WAYMARK_PROMTOOL")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("PATH").and_then(|paths| {
                std::env::split_paths(&paths)
                    .map(|directory| directory.join("promtool"))
                    .find(|candidate| candidate.is_file())
            })
        });
    if found.is_none() {
        let reason = "promtool not found (install Debian's `prometheus` package)";
        if std::env::var("CI").is_ok_and(|ci| ci == "true") {
            panic!("{reason}; CI=true needs it");
        }
        println!("SKIPPED {reason}");
    }
    found
}

fn run(promtool: &Path, args: &[&str]) {
    let output = Command::new(promtool)
        .args(args)
        .current_dir(path("config/prometheus"))
        .output()
        .unwrap_or_else(|error| panic!("cannot run {}: {error}", promtool.display()));
    assert!(
        output.status.success(),
        "promtool {}: {}\n{}",
        args.join(" "),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let Some(promtool) = promtool() else {
        return;
    };
    run(&promtool, &["check", "rules", "waymark-rules.yaml"]);
    // Input series with the alerts expected (and not expected) at given times.
    run(&promtool, &["test", "rules", "waymark-rules.test.yaml"]);
}

#[test]
fn the_rule_unit_tests_cover_every_alert_including_a_case_where_it_stays_silent() {
    let rules: Value = serde_yaml::from_str(&read(RULES)).unwrap();
    let alerts: BTreeSet<String> = alert_rules(&rules)
        .map(|rule| rule["alert"].as_str().unwrap().to_string())
        .collect();
    let tests: Value = serde_yaml::from_str(&read(RULES_TEST)).unwrap();
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_sequence().unwrap() {
        for case in test["alert_rule_test"].as_sequence().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_string();
            let expected = case["exp_alerts"].as_sequence().unwrap();
            if expected.is_empty() {
                silent.insert(name);
            } else {
                firing.insert(name);
            }
        }
    }
    assert_eq!(firing, alerts, "every alert is seen firing");
    assert_eq!(silent, alerts, "every alert is seen not firing");
}

#[test]
fn the_prometheus_rule_manifest_carries_exactly_the_rules_file() {
    let rules: Value = serde_yaml::from_str(&read(RULES)).unwrap();
    let manifest: Value =
        serde_yaml::from_str(&read("config/prometheus/prometheusrule.yaml")).unwrap();
    assert_eq!(manifest["kind"], "PrometheusRule");
    assert_eq!(manifest["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        manifest["spec"], rules,
        "prometheusrule.yaml is waymark-rules.yaml indented under spec"
    );
}

fn alert_rules(rules: &Value) -> impl Iterator<Item = &Value> {
    rules["groups"]
        .as_sequence()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_sequence().unwrap().iter())
}

// ----- the dashboard -----

fn dashboard() -> Json {
    serde_json::from_str(&read(DASHBOARD)).expect("the dashboard is JSON")
}

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Json) -> Vec<&Json> {
    let mut all = Vec::new();
    for panel in dashboard["panels"].as_array().unwrap() {
        all.push(panel);
        all.extend(panel["panels"].as_array().into_iter().flatten());
    }
    all
}

#[test]
fn the_dashboard_has_the_promised_panels_each_querying_the_chosen_prometheus() {
    let dashboard = dashboard();
    assert_eq!(dashboard["uid"], "waymark");
    let titles: BTreeSet<&str> = panels(&dashboard)
        .iter()
        .filter_map(|panel| panel["title"].as_str())
        .collect();
    for promised in [
        "Releases by phase",
        "Canary weight",
        "Canary burn rate against its limit",
        "Burn rate as a share of its limit",
        "Deployment frequency",
        "Change failure rate",
        "Time to restore (mean)",
        "Per roadmap item",
        "Deliveries per horizon",
        "Deliveries per kind",
        "Reconcile errors by kind",
    ] {
        assert!(
            titles.contains(promised),
            "no panel {promised:?}: {titles:?}"
        );
    }
    let mut ids = BTreeSet::new();
    for panel in panels(&dashboard) {
        assert!(
            ids.insert(panel["id"].as_i64().unwrap()),
            "panel ids are unique"
        );
        if panel["type"] == "row" {
            continue;
        }
        assert_eq!(
            panel["datasource"]["uid"], "${datasource}",
            "{}",
            panel["title"]
        );
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{} queries something", panel["title"]);
        for target in targets {
            assert!(!target["expr"].as_str().unwrap().is_empty());
            assert_eq!(target["datasource"]["uid"], "${datasource}");
        }
    }
    let variables: Vec<&str> = dashboard["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|variable| variable["name"].as_str().unwrap())
        .collect();
    assert_eq!(variables, ["datasource", "namespace", "release"]);
}

#[test]
fn dashboard_panels_fit_the_grid_without_overlapping() {
    let dashboard = dashboard();
    let mut cells = BTreeMap::new();
    for panel in panels(&dashboard) {
        let grid = &panel["gridPos"];
        let [x, y, w, h] = ["x", "y", "w", "h"].map(|key| grid[key].as_u64().unwrap());
        assert!(x + w <= 24, "{} is wider than the grid", panel["title"]);
        for column in x..x + w {
            for row in y..y + h {
                if let Some(other) = cells.insert((column, row), panel["title"].clone()) {
                    panic!("{} overlaps {other}", panel["title"]);
                }
            }
        }
    }
}

#[test]
fn the_grafana_kustomization_labels_the_dashboard_for_the_sidecar() {
    let kustomization: Value =
        serde_yaml::from_str(&read("config/grafana/kustomization.yaml")).unwrap();
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["files"][0], "waymark.json");
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(generator["options"]["disableNameSuffixHash"], true);
}

// ----- every name in every expression exists in a scrape -----

/// Metric names and the label names each carries, from the Prometheus text format.
#[derive(Debug, Default)]
struct Scrape {
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut scrape = Scrape::default();
        for line in text.lines() {
            if line.starts_with('#') || line.trim().is_empty() {
                continue;
            }
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let name = line[..name_end].to_string();
            let labels = scrape.labels.entry(name).or_default();
            if line[name_end..].starts_with('{') {
                labels.extend(label_names(&line[name_end + 1..]));
            }
        }
        scrape
    }
}

/// The label names of `a="x",b="y\"z"}...`.
fn label_names(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        let name: String = chars.by_ref().take_while(|c| *c != '=').collect();
        if name.is_empty() {
            break;
        }
        names.push(name.trim_start_matches(',').trim().to_string());
        assert_eq!(chars.next(), Some('"'), "a quoted label value");
        while let Some(c) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '"' => break,
                _ => {}
            }
        }
        if chars.peek() == Some(&'}') {
            break;
        }
    }
    names
}

/// What one PromQL expression refers to.
#[derive(Debug, Default)]
struct References {
    /// Metric names with the label names of their matchers.
    selectors: Vec<(String, Vec<String>)>,
    /// Labels in `by`, `without`, `on`, `ignoring`, `group_left` and `group_right` lists.
    grouping: BTreeSet<String>,
}

const KEYWORDS: [&str; 8] = [
    "and", "or", "unless", "bool", "offset", "inf", "nan", "atan2",
];
const GROUPING: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

#[derive(Debug, PartialEq)]
enum Token {
    Identifier(String),
    Text,
    Punctuation(char),
    Other,
}

/// Tokens of a PromQL expression: identifiers, string literals, punctuation; numbers, durations
/// and operators as `Other`.
fn tokens(expression: &str) -> Vec<Token> {
    let chars: Vec<char> = expression.chars().collect();
    let mut tokens = Vec::new();
    let mut index = 0;
    while index < chars.len() {
        let c = chars[index];
        if c.is_whitespace() {
            index += 1;
        } else if c == '"' || c == '\'' || c == '`' {
            index += 1;
            while index < chars.len() && chars[index] != c {
                index += if chars[index] == '\\' { 2 } else { 1 };
            }
            index += 1;
            tokens.push(Token::Text);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = index;
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric()
                    || chars[index] == '_'
                    || chars[index] == ':')
            {
                index += 1;
            }
            tokens.push(Token::Identifier(chars[start..index].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            // Numbers and durations (5m, 1h30m, 0.9).
            while index < chars.len()
                && (chars[index].is_ascii_alphanumeric() || chars[index] == '.')
            {
                index += 1;
            }
            tokens.push(Token::Other);
        } else if "{}()[],".contains(c) {
            tokens.push(Token::Punctuation(c));
            index += 1;
        } else {
            tokens.push(Token::Other);
            index += 1;
        }
    }
    tokens
}

/// Metric names, their matchers' labels, and grouping labels of a PromQL expression. Rough, but
/// it never skips a name: an identifier is a function (before `(`), a keyword, a grouping list,
/// or a metric name.
fn references(expression: &str) -> Result<References, String> {
    let tokens = tokens(expression);
    let mut references = References::default();
    let mut index = 0;
    let punctuation = |index: usize, c: char| tokens.get(index) == Some(&Token::Punctuation(c));
    while index < tokens.len() {
        match &tokens[index] {
            Token::Identifier(word) if GROUPING.contains(&word.as_str()) => {
                index += 1;
                if !punctuation(index, '(') {
                    continue; // group_left without a list
                }
                index += 1;
                while !punctuation(index, ')') {
                    match tokens.get(index) {
                        Some(Token::Identifier(label)) => {
                            references.grouping.insert(label.clone());
                        }
                        Some(Token::Punctuation(',')) => {}
                        other => return Err(format!("unexpected {other:?} in a label list")),
                    }
                    index += 1;
                }
                index += 1;
            }
            Token::Identifier(word) if KEYWORDS.contains(&word.as_str()) => index += 1,
            // A function or aggregation: `rate(`, `sum(`, or `sum by (...) (`.
            Token::Identifier(_)
                if punctuation(index + 1, '(')
                    || matches!(tokens.get(index + 1), Some(Token::Identifier(next)) if next == "by" || next == "without") =>
            {
                index += 1
            }
            Token::Identifier(name) => {
                let mut labels = Vec::new();
                index += 1;
                if punctuation(index, '{') {
                    index += 1;
                    while !punctuation(index, '}') {
                        match tokens.get(index) {
                            Some(Token::Identifier(label)) => labels.push(label.clone()),
                            Some(Token::Other | Token::Text | Token::Punctuation(',')) => {}
                            other => return Err(format!("unexpected {other:?} in a selector")),
                        }
                        index += 1;
                    }
                    index += 1;
                }
                references.selectors.push((name.clone(), labels));
            }
            Token::Punctuation('{') => {
                return Err(format!("a selector without a metric name in {expression}"));
            }
            Token::Punctuation('[') => {
                while !punctuation(index, ']') && index < tokens.len() {
                    index += 1;
                }
                index += 1;
            }
            _ => index += 1,
        }
    }
    Ok(references)
}

/// Everything `expression` refers to that `scrape` lacks, one line per problem. `shown` are
/// labels read from the result (legend `{{label}}`, alert `$labels.label`): each must be a
/// grouping label or, without grouping, a label of a metric in the expression.
fn problems(expression: &str, shown: &[String], scrape: &Scrape) -> Vec<String> {
    let references = match references(expression) {
        Ok(references) => references,
        Err(error) => return vec![error],
    };
    let mut problems = Vec::new();
    if references.selectors.is_empty() {
        problems.push(format!("no metric in {expression}"));
    }
    for (name, labels) in &references.selectors {
        let Some(exported) = scrape.labels.get(name) else {
            problems.push(format!("{name} is not exported (in {expression})"));
            continue;
        };
        for label in labels {
            if !exported.contains(label) {
                problems.push(format!("{name} has no label {label} (in {expression})"));
            }
        }
        for label in &references.grouping {
            if !exported.contains(label) {
                problems.push(format!(
                    "{name} has no label {label} to group by (in {expression})"
                ));
            }
        }
    }
    let available: BTreeSet<&String> = if references.grouping.is_empty() {
        references
            .selectors
            .iter()
            .filter_map(|(name, _)| scrape.labels.get(name))
            .flatten()
            .collect()
    } else {
        references.grouping.iter().collect()
    };
    for label in shown {
        if !available.contains(label) {
            problems.push(format!(
                "{label} is shown but not in the result of {expression}"
            ));
        }
    }
    problems
}

/// Names between `{{` and `}}` in a legend, or after `$labels.` in an alert annotation.
fn shown_labels(text: &str, marker: &str) -> Vec<String> {
    text.split(marker)
        .skip(1)
        .map(|rest| {
            rest.trim_start()
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect::<String>()
        })
        .filter(|label| !label.is_empty())
        .collect()
}

/// Grafana's interval variables as PromQL durations.
fn without_grafana_intervals(expression: &str) -> String {
    expression
        .replace("$__rate_interval", "5m")
        .replace("$__range", "1d")
        .replace("$__interval", "1m")
}

/// (where, expression, labels shown) for every dashboard query and variable.
fn dashboard_expressions() -> Vec<(String, String, Vec<String>)> {
    let dashboard = dashboard();
    let mut expressions = Vec::new();
    for panel in panels(&dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            expressions.push((
                format!("panel {} {}", panel["title"], target["refId"]),
                without_grafana_intervals(target["expr"].as_str().unwrap()),
                shown_labels(legend, "{{"),
            ));
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {} is not label_values(...)", variable["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        expressions.push((
            format!("variable {}", variable["name"]),
            selector.to_string(),
            vec![label.trim().to_string()],
        ));
    }
    expressions
}

/// (where, expression, labels shown) for every alert.
fn alert_expressions() -> Vec<(String, String, Vec<String>)> {
    let rules: Value = serde_yaml::from_str(&read(RULES)).unwrap();
    alert_rules(&rules)
        .map(|rule| {
            let annotations: String = rule["annotations"]
                .as_mapping()
                .unwrap()
                .values()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            (
                format!("alert {}", rule["alert"].as_str().unwrap()),
                rule["expr"].as_str().unwrap().to_string(),
                shown_labels(&annotations, "$labels."),
            )
        })
        .collect()
}

fn time(text: &str) -> Time {
    Time(text.parse().unwrap())
}

fn window(name: &str, burn_rate: f64) -> WindowResult {
    WindowResult {
        window: name.into(),
        error_ratio: Some(0.0001 * burn_rate),
        requests: Some(2140.0),
        burn_rate: Some(burn_rate),
        max: 14.4,
        note: None,
        error_query: String::new(),
        total_query: String::new(),
    }
}

/// A canary under analysis with two consecutive errors, whose previous revision was rolled back
/// after failing analysis.
fn checkout() -> ReleaseStatus {
    ReleaseStatus {
        phase: Some(Phase::Progressing),
        reason: Some("AnalysisError".into()),
        roadmap_item: Some("PAY-142".into()),
        stable_revision: Some("5d8b9c".into()),
        canary_revision: Some("6f9c7d".into()),
        canary_weight: Some(10),
        analysis: Some(AnalysisStatus {
            verdict: Verdict::Error,
            last_run_at: Some(time("2026-11-21T12:30:00Z")),
            revision: Some("6f9c7d".into()),
            summary: None,
            burn: None,
            canary: Some(RoleAnalysis {
                verdict: Verdict::Passing,
                service: "checkout-canary".into(),
                windows: vec![window("5m", 0.8), window("1m", 1.2)],
            }),
            stable: Some(RoleAnalysis {
                verdict: Verdict::Passing,
                service: "checkout-stable".into(),
                windows: vec![window("5m", 0.3), window("1m", 0.4)],
            }),
            comparison: vec![],
            checks: vec![],
            consecutive_failures: 0,
            consecutive_inconclusive: 0,
            consecutive_errors: 2,
            failing_since: None,
            error_budget_remaining: Some(0.73),
        }),
        history: vec![HistoryEntry {
            revision: "4a1b2c".into(),
            roadmap_item: "PAY-139".into(),
            outcome: Outcome::RolledBack,
            started_at: Some(time("2026-11-21T11:00:00Z")),
            finished_at: time("2026-11-21T11:20:00Z"),
            failure_detected_at: Some(time("2026-11-21T11:18:00Z")),
            reason: "AnalysisFailing".into(),
            message: None,
            horizon: None,
            kind: None,
            timeline: Vec::new(),
        }],
        ..ReleaseStatus::default()
    }
}

/// A settled release whose last revision was promoted.
fn cart() -> ReleaseStatus {
    ReleaseStatus {
        phase: Some(Phase::Healthy),
        roadmap_item: Some("PAY-150".into()),
        stable_revision: Some("9e8d7c".into()),
        canary_weight: Some(0),
        history: vec![HistoryEntry {
            revision: "9e8d7c".into(),
            roadmap_item: "PAY-150".into(),
            outcome: Outcome::Promoted,
            started_at: Some(time("2026-11-21T10:00:00Z")),
            finished_at: time("2026-11-21T10:40:00Z"),
            failure_detected_at: None,
            reason: "Promoted".into(),
            message: None,
            horizon: None,
            kind: None,
            timeline: Vec::new(),
        }],
        ..ReleaseStatus::default()
    }
}

/// `/metrics` of a running metrics server whose `Metrics` were fed as the reconcile feeds
/// them: a status written per Release, a failed reconcile, a reconcile's duration.
async fn scrape_a_running_controller() -> String {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::default());
    let before = cart();
    let mut paused = cart();
    paused.phase = Some(Phase::Paused);
    metrics.observe_release("shop", "checkout", None, &checkout());
    metrics.observe_release("shop", "cart", None, &before);
    metrics.observe_release("shop", "cart", Some(&before), &paused);
    metrics.count_error("kube");
    metrics.observe_reconcile(Duration::from_millis(20));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(Shared {
        metrics,
        health: Arc::new(Health::new(false)),
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let response = reqwest::get(format!("http://{address}/metrics"))
        .await
        .expect("GET /metrics");
    assert!(response.status().is_success(), "{}", response.status());
    let body = response.text().await.unwrap();
    server.abort();
    body
}

#[tokio::test]
async fn every_metric_and_label_in_the_dashboard_and_alerts_is_in_a_scrape() {
    let scrape = Scrape::parse(&scrape_a_running_controller().await);
    let dashboard = dashboard_expressions();
    let alerts = alert_expressions();
    assert!(
        dashboard.len() >= 20,
        "found {} dashboard queries",
        dashboard.len()
    );
    assert_eq!(alerts.len(), 5);
    let mut all_problems = Vec::new();
    for (place, expression, shown) in dashboard.iter().chain(&alerts) {
        for problem in problems(expression, shown, &scrape) {
            all_problems.push(format!("{place}: {problem}"));
        }
    }
    assert!(
        all_problems.is_empty(),
        "{}\nexported: {:#?}",
        all_problems.join("\n"),
        scrape.labels
    );
}

#[tokio::test]
async fn every_metric_the_readme_lists_is_in_a_scrape() {
    let scrape = Scrape::parse(&scrape_a_running_controller().await);
    let readme = read("README.md");
    let listed: BTreeSet<String> = readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| code.starts_with("waymark_"))
        .map(|code| code.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    assert!(listed.len() >= 8, "{listed:?}");
    for name in listed {
        let exported = scrape.labels.contains_key(&name)
            || scrape.labels.contains_key(&format!("{name}_count"));
        assert!(
            exported,
            "the README lists {name}, which /metrics does not serve"
        );
    }
}

#[test]
fn the_checker_finds_misspelled_metrics_and_labels() {
    let scrape = Scrape::parse(
        r#"# TYPE waymark_reconcile_errors counter
waymark_reconcile_errors_total{kind="kube"} 1
waymark_release_phase{namespace="shop",release="a\"b,c",roadmap_item="PAY-1",phase="Paused"} 1
waymark_time_to_restore_seconds_bucket{namespace="shop",release="a",roadmap_item="PAY-1",le="5.0"} 0
# EOF
"#,
    );
    let none: Vec<String> = Vec::new();
    let correct = r#"max by (namespace, release) (waymark_release_phase{phase="Paused", namespace=~"$namespace"}) == 1"#;
    assert_eq!(problems(correct, &["release".into()], &scrape), none);
    let prefix_grouping =
        r#"sum by (phase) (max by (namespace, release, phase) (waymark_release_phase))"#;
    assert_eq!(problems(prefix_grouping, &["phase".into()], &scrape), none);
    assert_eq!(
        problems(
            "histogram_quantile(0.9, sum by (le, roadmap_item) (increase(waymark_time_to_restore_seconds_bucket[1d])))",
            &[],
            &scrape
        ),
        none
    );
    for (wrong, shown, expected) in [
        (
            "sum(rate(waymark_reconcile_error_total[5m]))",
            vec![],
            "waymark_reconcile_error_total is not exported",
        ),
        (
            r#"waymark_release_phase{phaze="Paused"}"#,
            vec![],
            "has no label phaze",
        ),
        (
            "sum by (roadmap_item) (rate(waymark_reconcile_errors_total[5m]))",
            vec![],
            "no label roadmap_item to group by",
        ),
        (
            "max by (namespace) (waymark_release_phase)",
            vec!["release".to_string()],
            "release is shown",
        ),
        (
            "sum(waymark_release_phase) / on (namespace) sum(waymark_reconcile_errors_total)",
            vec![],
            "no label namespace to group by",
        ),
        (
            r#"{__name__="waymark_release_phase"}"#,
            vec![],
            "without a metric name",
        ),
    ] {
        let found = problems(wrong, &shown, &scrape);
        assert!(
            found.iter().any(|problem| problem.contains(expected)),
            "{wrong}: expected {expected:?}, found {found:?}"
        );
    }
}
