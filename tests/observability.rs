//! What SREs look at: the Grafana dashboard and the Prometheus alerts.
//!
//! - `promtool check rules` and `promtool test rules` on `config/prometheus/` (the `prometheus`
//!   Debian package ships `promtool`; with `CI=true` a missing one fails, otherwise the test
//!   says it is skipped).
//! - Every dashboard and alert expression is parsed as PromQL (`promql-parser`, after Grafana's
//!   variables are given plain values) and walked: every metric it names, every label it
//!   matches, groups or matches on, and every label a legend or annotation shows exists in what
//!   a real Prometheus stored from a running controller's `/metrics` (after the controller was
//!   fed releases the way the reconcile feeds it, and made an API request through its
//!   instrumented client); and that Prometheus evaluates it without error. The controller's
//!   own series (`waymark_build_info`, `waymark_leader`, `waymark_kube_*`, `process_*`) are
//!   checked the same way.
//! - The PrometheusRule manifest carries exactly the rules file; the dashboard has the panels
//!   it promises, laid out without overlaps.

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::prometheus::Prometheus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, VectorMatchCardinality, VectorSelector,
};
use serde_json::Value as Json;
use serde_json::Value;
use waymark::api::{
    AnalysisStatus, Goal, HistoryEntry, Horizon, MinChange, Outcome, OutcomeRecord, OutcomeVerdict,
    Phase, ReleaseStatus, RoadmapKind, RoadmapOutcome, RoleAnalysis, Verdict, WindowResult,
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
    let Some(promtool) = common::tools::promtool() else {
        return;
    };
    run(&promtool, &["check", "rules", "waymark-rules.yaml"]);
    // Input series with the alerts expected (and not expected) at given times.
    run(&promtool, &["test", "rules", "waymark-rules.test.yaml"]);
}

#[test]
fn the_rule_unit_tests_cover_every_alert_including_a_case_where_it_stays_silent() {
    let rules: Value = serde_saphyr::from_str(&read(RULES)).unwrap();
    let alerts: BTreeSet<String> = alert_rules(&rules)
        .map(|rule| rule["alert"].as_str().unwrap().to_string())
        .collect();
    let tests: Value = serde_saphyr::from_str(&read(RULES_TEST)).unwrap();
    let mut firing = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_array().unwrap() {
        for case in test["alert_rule_test"].as_array().unwrap() {
            let name = case["alertname"].as_str().unwrap().to_string();
            let expected = case["exp_alerts"].as_array().unwrap();
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
    let rules: Value = serde_saphyr::from_str(&read(RULES)).unwrap();
    let manifest: Value =
        serde_saphyr::from_str(&read("config/prometheus/prometheusrule.yaml")).unwrap();
    assert_eq!(manifest["kind"], "PrometheusRule");
    assert_eq!(manifest["apiVersion"], "monitoring.coreos.com/v1");
    assert_eq!(
        manifest["spec"], rules,
        "prometheusrule.yaml is waymark-rules.yaml indented under spec"
    );
}

fn alert_rules(rules: &Value) -> impl Iterator<Item = &Value> {
    rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|group| group["rules"].as_array().unwrap().iter())
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
        "Rework per roadmap item",
        "Roadmap outcomes",
        "Reconcile errors by kind",
        "Controller replicas by version",
        "Leader",
        "Reconciles and errors",
        "API requests by code",
        "API request latency (p99)",
        "Watch restarts",
        "CPU",
        "Resident memory",
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
        serde_saphyr::from_str(&read("config/grafana/kustomization.yaml")).unwrap();
    let generator = &kustomization["configMapGenerator"][0];
    assert_eq!(generator["files"][0], "waymark.json");
    assert_eq!(generator["options"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(generator["options"]["disableNameSuffixHash"], true);
}

// ----- every name in every expression exists in a scrape -----

/// Metric names and the label names each carries, as Prometheus stored them from a scrape.
#[derive(Debug, Default)]
struct Scrape {
    labels: BTreeMap<String, BTreeSet<String>>,
}

impl Scrape {
    /// The metric names and labels of `series` (as the Prometheus API returns them), without
    /// the `job` label Prometheus adds to every target: its value depends on how Prometheus
    /// finds the controller, so the dashboard and the alerts may not rely on it. `instance`
    /// (the target's address) stays: it tells replicas apart, and joins the `process_*` series
    /// every target exports to Waymark's own.
    fn from_series(series: &[HashMap<String, String>]) -> Scrape {
        let mut scrape = Scrape::default();
        for labels in series {
            let name = labels["__name__"].clone();
            let names = labels
                .keys()
                .filter(|label| !["__name__", "job"].contains(&label.as_str()));
            scrape
                .labels
                .entry(name)
                .or_default()
                .extend(names.cloned());
        }
        scrape
    }

    /// A scrape written out as (metric, labels), for testing the checker.
    fn of(table: &[(&str, &[&str])]) -> Scrape {
        let labels = table
            .iter()
            .map(|(name, labels)| {
                let labels = labels.iter().map(|label| label.to_string()).collect();
                (name.to_string(), labels)
            })
            .collect();
        Scrape { labels }
    }
}

/// What an expression gives, as far as labels go.
#[derive(Debug)]
enum Shape {
    /// A number or a string: no labels.
    Scalar,
    /// Series carrying these label names.
    Vector(BTreeSet<String>),
    /// Not known because a problem below it was already reported.
    Unknown,
}

/// Walks a parsed expression, working out the labels of every part from the scrape and
/// noting every metric or label the scrape lacks.
struct Checker<'a> {
    scrape: &'a Scrape,
    selectors: usize,
    problems: Vec<String>,
}

impl Checker<'_> {
    fn shape(&mut self, expression: &Expr) -> Shape {
        match expression {
            Expr::NumberLiteral(_) | Expr::StringLiteral(_) => Shape::Scalar,
            Expr::Paren(inner) => self.shape(&inner.expr),
            Expr::Unary(inner) => self.shape(&inner.expr),
            Expr::Subquery(inner) => self.shape(&inner.expr),
            Expr::VectorSelector(selector) => self.selector(selector),
            Expr::MatrixSelector(matrix) => self.selector(&matrix.vs),
            Expr::Aggregate(aggregate) => self.aggregate(aggregate),
            Expr::Binary(binary) => self.binary(binary),
            Expr::Call(call) => self.call(call),
            Expr::Extension(_) => {
                self.problems
                    .push("an extension node, which the parser never makes".into());
                Shape::Unknown
            }
        }
    }

    fn selector(&mut self, selector: &VectorSelector) -> Shape {
        self.selectors += 1;
        let Some(name) = &selector.name else {
            self.problems.push(format!(
                "{selector} is a selector without a metric name: name the metric"
            ));
            return Shape::Unknown;
        };
        let Some(exported) = self.scrape.labels.get(name) else {
            self.problems.push(format!("{name} is not exported"));
            return Shape::Unknown;
        };
        let matchers = &selector.matchers;
        for matcher in matchers
            .matchers
            .iter()
            .chain(matchers.or_matchers.iter().flatten())
        {
            if matcher.name != "__name__" && !exported.contains(&matcher.name) {
                self.problems
                    .push(format!("{name} has no label {}", matcher.name));
            }
        }
        Shape::Vector(exported.clone())
    }

    fn aggregate(&mut self, aggregate: &AggregateExpr) -> Shape {
        if let Some(parameter) = &aggregate.param {
            self.shape(parameter);
        }
        let Shape::Vector(labels) = self.shape(&aggregate.expr) else {
            return Shape::Unknown;
        };
        let grouped = match &aggregate.modifier {
            Some(LabelModifier::Include(by)) => {
                self.require(&by.labels, &labels, "group by", &aggregate.expr);
                by.labels.iter().cloned().collect()
            }
            Some(LabelModifier::Exclude(without)) => {
                self.require(&without.labels, &labels, "group without", &aggregate.expr);
                labels
                    .iter()
                    .filter(|label| !without.labels.contains(label))
                    .cloned()
                    .collect()
            }
            None => BTreeSet::new(),
        };
        match aggregate.op.to_string().as_str() {
            // These pick series and keep their labels.
            "topk" | "bottomk" | "limitk" | "limit_ratio" => Shape::Vector(labels),
            "count_values" => match aggregate.param.as_deref() {
                Some(Expr::StringLiteral(label)) => {
                    Shape::Vector(grouped.into_iter().chain([label.val.clone()]).collect())
                }
                _ => Shape::Unknown,
            },
            _ => Shape::Vector(grouped),
        }
    }

    fn call(&mut self, call: &Call) -> Shape {
        let arguments: Vec<Shape> = call
            .args
            .args
            .iter()
            .map(|argument| self.shape(argument))
            .collect();
        if call.func.return_type == ValueType::Scalar {
            return Shape::Scalar;
        }
        let labels = match arguments
            .into_iter()
            .find(|shape| !matches!(shape, Shape::Scalar))
        {
            Some(Shape::Vector(labels)) => labels,
            Some(_) => return Shape::Unknown,
            // `vector(1)`: one series without labels.
            None => return Shape::Vector(BTreeSet::new()),
        };
        match call.func.name {
            "histogram_quantile" => {
                let le = ["le".to_string()];
                self.require(&le, &labels, "read buckets by", &call.args.args[1]);
                Shape::Vector(labels.into_iter().filter(|label| label != "le").collect())
            }
            "label_replace" | "label_join" => match call.args.args.get(1).map(|arg| &**arg) {
                Some(Expr::StringLiteral(target)) => {
                    Shape::Vector(labels.into_iter().chain([target.val.clone()]).collect())
                }
                _ => Shape::Unknown,
            },
            _ => Shape::Vector(labels),
        }
    }

    /// Labels of a binary operation, by Prometheus' rules of vector matching: without `on` or
    /// `ignoring` both sides must carry the same labels (or nothing matches); `on` keeps only
    /// its labels; `group_left`/`group_right` copy labels from the "one" side.
    fn binary(&mut self, binary: &BinaryExpr) -> Shape {
        let left = self.shape(&binary.lhs);
        let right = self.shape(&binary.rhs);
        let (left, right) = match (left, right) {
            (Shape::Unknown, _) | (_, Shape::Unknown) => return Shape::Unknown,
            (Shape::Scalar, other) | (other, Shape::Scalar) => return other,
            (Shape::Vector(left), Shape::Vector(right)) => (left, right),
        };
        let operator = binary.op.to_string();
        let modifier = binary.modifier.as_ref();
        let matching = modifier.and_then(|modifier| modifier.matching.as_ref());
        match matching {
            Some(LabelModifier::Include(on)) => {
                self.require(&on.labels, &left, "match on", &binary.lhs);
                self.require(&on.labels, &right, "match on", &binary.rhs);
            }
            Some(LabelModifier::Exclude(ignoring)) => {
                for label in &ignoring.labels {
                    if !left.contains(label) && !right.contains(label) {
                        self.problems.push(format!(
                            "neither side of {operator} has the label {label} it ignores"
                        ));
                    }
                }
            }
            None if !binary.op.is_set_operator() && left != right => {
                self.problems.push(format!(
                    "the sides of {operator} carry different labels ({left:?} and {right:?}), so \
                     no series match: say on(...) or ignoring(...)"
                ));
            }
            None => {}
        }
        if binary.op.is_set_operator() {
            return Shape::Vector(match operator.as_str() {
                "or" => left.union(&right).cloned().collect(),
                _ => left,
            });
        }
        match modifier.map(|modifier| &modifier.card) {
            Some(VectorMatchCardinality::ManyToOne(copied)) => {
                self.require(&copied.labels, &right, "copy with group_left", &binary.rhs);
                Shape::Vector(
                    left.into_iter()
                        .chain(copied.labels.iter().cloned())
                        .collect(),
                )
            }
            Some(VectorMatchCardinality::OneToMany(copied)) => {
                self.require(&copied.labels, &left, "copy with group_right", &binary.lhs);
                Shape::Vector(
                    right
                        .into_iter()
                        .chain(copied.labels.iter().cloned())
                        .collect(),
                )
            }
            _ => Shape::Vector(match matching {
                Some(LabelModifier::Include(on)) => on.labels.iter().cloned().collect(),
                Some(LabelModifier::Exclude(ignoring)) => left
                    .into_iter()
                    .filter(|label| !ignoring.labels.contains(label))
                    .collect(),
                None => left,
            }),
        }
    }

    /// Notes each of `wanted` that `available` (the labels of `part`) lacks.
    fn require(&mut self, wanted: &[String], available: &BTreeSet<String>, to: &str, part: &Expr) {
        for label in wanted {
            if !available.contains(label) {
                self.problems.push(format!(
                    "cannot {to} {label}: {part} carries only {available:?}"
                ));
            }
        }
    }
}

/// Everything `expression` refers to that `scrape` lacks, one line per problem. `shown` are
/// labels read from the result (legend `{{label}}`, alert `$labels.label`): each must be a
/// label of the result.
fn problems(expression: &str, shown: &[String], scrape: &Scrape) -> Vec<String> {
    let parsed = match promql_parser::parser::parse(expression) {
        Ok(parsed) => parsed,
        Err(error) => return vec![format!("not PromQL: {error}")],
    };
    let mut checker = Checker {
        scrape,
        selectors: 0,
        problems: Vec::new(),
    };
    let shape = checker.shape(&parsed);
    let mut problems = checker.problems;
    if checker.selectors == 0 {
        problems.push("no metric in it".into());
    }
    for label in shown {
        match &shape {
            Shape::Vector(labels) if !labels.contains(label) => problems.push(format!(
                "{label} is shown but the result carries only {labels:?}"
            )),
            Shape::Scalar => problems.push(format!("{label} is shown but the result is a number")),
            _ => {}
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

/// `expression` with each Grafana variable (`$name` or `${name}`) replaced by its value in
/// `values`; a variable without one is an error naming it.
fn substitute(expression: &str, values: &BTreeMap<String, String>) -> Result<String, String> {
    let mut plain = String::new();
    let mut rest = expression;
    while let Some(dollar) = rest.find('$') {
        plain.push_str(&rest[..dollar]);
        let after = &rest[dollar + 1..];
        let (name, tail) = match after.strip_prefix('{') {
            Some(braced) => braced
                .split_once('}')
                .ok_or_else(|| format!("an unclosed ${{ in {expression}"))?,
            None => after.split_at(
                after
                    .find(|c: char| !c.is_ascii_alphanumeric() && c != '_')
                    .unwrap_or(after.len()),
            ),
        };
        let value = values.get(name).ok_or_else(|| {
            format!("${name} is not a variable of the dashboard (in {expression})")
        })?;
        plain.push_str(value);
        rest = tail;
    }
    plain.push_str(rest);
    Ok(plain)
}

/// Plain values of the dashboard's variables: Grafana's interval variables as durations, and
/// each variable of the dashboard as its "All" value, as Grafana sends it.
fn variable_values(dashboard: &Json) -> BTreeMap<String, String> {
    let mut values: BTreeMap<String, String> = [
        ("__rate_interval", "5m"),
        ("__range", "1d"),
        ("__interval", "1m"),
    ]
    .map(|(name, value)| (name.to_string(), value.to_string()))
    .into();
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(all) = variable["allValue"].as_str() {
            values.insert(
                variable["name"].as_str().unwrap().to_string(),
                all.to_string(),
            );
        }
    }
    values
}

/// One query to check: where it is, the query with Grafana's variables replaced, and the
/// labels shown from its result.
struct Query {
    place: String,
    expression: Result<String, String>,
    shown: Vec<String>,
}

/// Every query of the dashboard: panel targets, and the selectors of the variables.
fn dashboard_queries(dashboard: &Json) -> Vec<Query> {
    let values = variable_values(dashboard);
    let mut queries = Vec::new();
    for panel in panels(dashboard) {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            queries.push(Query {
                place: format!("panel {} {}", panel["title"], target["refId"]),
                expression: substitute(target["expr"].as_str().unwrap(), &values),
                shown: shown_labels(legend, "{{"),
            });
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        let Some(query) = variable["query"]["query"].as_str() else {
            continue;
        };
        // `label_values(selector, label)` is Grafana's, not PromQL: the selector is checked,
        // with the label shown.
        let inner = query
            .strip_prefix("label_values(")
            .and_then(|rest| rest.strip_suffix(')'))
            .unwrap_or_else(|| panic!("variable {} is not label_values(...)", variable["name"]));
        let (selector, label) = inner.rsplit_once(',').unwrap();
        queries.push(Query {
            place: format!("variable {}", variable["name"]),
            expression: substitute(selector, &values),
            shown: vec![label.trim().to_string()],
        });
    }
    queries
}

/// Every alert's expression, with the labels its annotations show.
fn alert_queries() -> Vec<Query> {
    let rules: Value = serde_saphyr::from_str(&read(RULES)).unwrap();
    alert_rules(&rules)
        .map(|rule| {
            let annotations: String = rule["annotations"]
                .as_object()
                .unwrap()
                .values()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(" ");
            Query {
                place: format!("alert {}", rule["alert"].as_str().unwrap()),
                expression: Ok(rule["expr"].as_str().unwrap().to_string()),
                shown: shown_labels(&annotations, "$labels."),
            }
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
/// after failing analysis. Its roadmap horizon and kind are set: Prometheus drops a label whose
/// value is empty, so without them the delivery series would carry neither.
fn checkout() -> ReleaseStatus {
    ReleaseStatus {
        phase: Some(Phase::Progressing),
        reason: Some("AnalysisError".into()),
        roadmap_item: Some("PAY-142".into()),
        roadmap_horizon: Some(Horizon::Now),
        roadmap_kind: Some(RoadmapKind::Feature),
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
            horizon: Some(Horizon::Now),
            kind: Some(RoadmapKind::Feature),
            timeline: Vec::new(),
            roadmap_outcome: None,
            rework: false,
        }],
        ..ReleaseStatus::default()
    }
}

/// A settled release whose last revision was promoted.
fn cart() -> ReleaseStatus {
    ReleaseStatus {
        phase: Some(Phase::Healthy),
        roadmap_item: Some("PAY-150".into()),
        roadmap_horizon: Some(Horizon::Next),
        roadmap_kind: Some(RoadmapKind::Debt),
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
            horizon: Some(Horizon::Next),
            kind: Some(RoadmapKind::Debt),
            timeline: Vec::new(),
            // A second promotion of PAY-150 within its rework window, its outcome measured.
            roadmap_outcome: Some(OutcomeRecord {
                change: Some(3.1),
                verdict: Some(OutcomeVerdict::Met),
                ..waymark::rollout::outcome::record_for(&RoadmapOutcome {
                    name: "cart-conversion".into(),
                    query: "sum(rate(orders_total[{{window}}]))".into(),
                    goal: Goal::Increase,
                    baseline: waymark::api::Duration::from_secs(7 * 86_400),
                    after: waymark::api::Duration::from_secs(7 * 86_400),
                    min_change: MinChange::Percent(2.0),
                })
            }),
            rework: true,
        }],
        ..ReleaseStatus::default()
    }
}

/// A running metrics server whose `Metrics` were fed as the reconcile feeds them (a status
/// written per Release, a failed reconcile, a reconcile's duration), scraped by a real
/// Prometheus: what that Prometheus stored, and the Prometheus itself to ask further. `None`
/// when the test is skipped (no `prometheus`, outside CI).
async fn scrape_a_running_controller() -> Option<(Scrape, Prometheus)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = Arc::new(Metrics::default());
    let before = cart();
    let mut paused = cart();
    paused.phase = Some(Phase::Paused);
    metrics.observe_release("shop", "checkout", None, &checkout());
    metrics.observe_release("shop", "cart", None, &before);
    metrics.observe_release("shop", "cart", Some(&before), &paused);
    metrics.count_error("kube");
    metrics.count_notification_sent("team-checkout", "promoted");
    metrics.count_notification_failure("team-checkout");
    metrics.observe_reconcile(Duration::from_millis(20));
    metrics.set_leader(true);
    one_api_request_through_the_instrumented_client(metrics.clone()).await;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let app = router(Shared {
        metrics,
        health: Arc::new(Health::new(false)),
    });
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let prometheus = Prometheus::start(&[address]).await?;
    // One scrape carries every series; `up` is written with it.
    prometheus
        .wait_until("up", Duration::from_secs(30), |up| up == Some(1.0))
        .await
        .unwrap_or_else(|error| panic!("Prometheus scrapes /metrics: {error}"));
    let series = prometheus
        .series(r#"{__name__=~"waymark_.+|process_.+"}"#)
        .await
        .expect("the scraped series");
    server.abort();
    Some((Scrape::from_series(&series), prometheus))
}

#[tokio::test]
async fn every_metric_and_label_in_the_dashboard_and_alerts_is_in_a_scrape_and_prometheus_runs_it()
{
    let Some((scrape, prometheus)) = scrape_a_running_controller().await else {
        return;
    };
    let dashboard = dashboard_queries(&dashboard());
    let alerts = alert_queries();
    assert!(
        dashboard.len() >= 20,
        "found {} dashboard queries",
        dashboard.len()
    );
    assert_eq!(alerts.len(), 7);
    let mut all_problems = Vec::new();
    for query in dashboard.iter().chain(&alerts) {
        let expression = match &query.expression {
            Ok(expression) => expression,
            Err(error) => {
                all_problems.push(format!("{}: {error}", query.place));
                continue;
            }
        };
        let mut found = problems(expression, &query.shown, &scrape);
        // The real engine has the last word on what is valid PromQL.
        if let Err(error) = prometheus.query(expression).await {
            found.push(format!("Prometheus refuses it: {error}"));
        }
        for problem in found {
            all_problems.push(format!("{}: {problem}\n    in {expression}", query.place));
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
    let Some((scrape, _prometheus)) = scrape_a_running_controller().await else {
        return;
    };
    let readme = read("README.md");
    let listed: BTreeSet<String> = readme
        .split('`')
        .skip(1)
        .step_by(2)
        .filter(|code| code.starts_with("waymark_") || code.starts_with("process_"))
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

/// A GET of a Deployment through the client the controller wraps, answered 200 by a mock API
/// server: the request series exist as after the controller's first API call.
async fn one_api_request_through_the_instrumented_client(metrics: Arc<Metrics>) {
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::client::Body;
    let (service, mut handle) =
        tower_test::mock::pair::<http::Request<Body>, http::Response<Body>>();
    let client = waymark::controller::kube_requests::instrument(
        kube::Client::new(service, "default"),
        metrics,
    );
    let api_server = tokio::spawn(async move {
        let (_, send) = handle.next_request().await.expect("one request");
        let mut deployment = Deployment::default();
        deployment.metadata.name = Some("checkout".into());
        send.send_response(
            http::Response::builder()
                .status(200)
                .body(Body::from(serde_json::to_vec(&deployment).unwrap()))
                .unwrap(),
        );
    });
    kube::Api::<Deployment>::namespaced(client, "shop")
        .get("checkout")
        .await
        .expect("the mock answers");
    api_server.await.unwrap();
}

#[test]
fn the_controller_watches_itself_with_two_critical_alerts_that_say_what_to_do() {
    let rules: Value = serde_saphyr::from_str(&read(RULES)).unwrap();
    for (alert, metric) in [
        ("WaymarkControllerDown", "waymark_build_info"),
        ("WaymarkNoLeader", "waymark_leader"),
    ] {
        let rule = alert_rules(&rules)
            .find(|rule| rule["alert"] == alert)
            .unwrap_or_else(|| panic!("no alert {alert}"));
        assert!(rule["expr"].as_str().unwrap().contains(metric), "{alert}");
        assert_eq!(rule["for"], "5m", "{alert}");
        assert_eq!(rule["labels"]["severity"], "critical", "{alert}");
        for annotation in ["summary", "description", "runbook"] {
            let text = rule["annotations"][annotation].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{alert} has no {annotation}");
        }
        assert!(
            rule["annotations"]["runbook"]
                .as_str()
                .unwrap()
                .contains("kubectl"),
            "{alert}'s runbook gives a command"
        );
    }
}

fn checker_scrape() -> Scrape {
    Scrape::of(&[
        ("waymark_reconcile_errors_total", &["kind"]),
        (
            "waymark_release_phase",
            &["namespace", "release", "roadmap_item", "phase"],
        ),
        (
            "waymark_time_to_restore_seconds_bucket",
            &["namespace", "release", "roadmap_item", "le"],
        ),
        (
            "waymark_release_burn_rate",
            &["namespace", "release", "roadmap_item", "role", "window"],
        ),
        (
            "waymark_release_burn_rate_limit",
            &["namespace", "release", "roadmap_item", "role", "window"],
        ),
    ])
}

#[test]
fn the_checker_passes_queries_whose_names_all_exist() {
    let scrape = checker_scrape();
    let none: Vec<String> = Vec::new();
    for (correct, shown) in [
        (
            r#"max by (namespace, release) (waymark_release_phase{phase="Paused", namespace=~".*"}) == 1"#,
            vec!["release"],
        ),
        (
            "sum by (phase) (max by (namespace, release, phase) (waymark_release_phase))",
            vec!["phase"],
        ),
        (
            "histogram_quantile(0.9, sum by (le, roadmap_item) (increase(waymark_time_to_restore_seconds_bucket[1d])))",
            vec!["roadmap_item"],
        ),
        (
            "max by (release, role, window) (waymark_release_burn_rate / waymark_release_burn_rate_limit)",
            vec!["role", "window"],
        ),
        (
            "sum by (kind) (rate(waymark_reconcile_errors_total[5m])) / scalar(sum(rate(waymark_reconcile_errors_total[5m])))",
            vec!["kind"],
        ),
        (
            "max by (release) (waymark_release_phase) * on (release) group_left (window) max by (release, window) (waymark_release_burn_rate)",
            vec!["window"],
        ),
        (
            "max without (phase) (waymark_release_phase) > 0",
            vec!["roadmap_item"],
        ),
    ] {
        let shown: Vec<String> = shown.into_iter().map(String::from).collect();
        assert_eq!(problems(correct, &shown, &scrape), none, "{correct}");
    }
}

#[test]
fn the_checker_finds_misspelled_metrics_and_labels_and_queries_that_cannot_match() {
    let scrape = checker_scrape();
    for (wrong, shown, expected) in [
        (
            "sum(rate(waymark_reconcile_error_total[5m]))",
            vec![],
            "waymark_reconcile_error_total is not exported",
        ),
        (
            r#"waymark_release_phase{phaze="Paused"}"#,
            vec![],
            "waymark_release_phase has no label phaze",
        ),
        (
            "sum by (roadmap_item) (rate(waymark_reconcile_errors_total[5m]))",
            vec![],
            "cannot group by roadmap_item",
        ),
        (
            "sum without (roadmap_item) (waymark_reconcile_errors_total)",
            vec![],
            "cannot group without roadmap_item",
        ),
        (
            "max by (namespace) (waymark_release_phase)",
            vec!["release"],
            "release is shown",
        ),
        (
            "sum(waymark_release_phase)",
            vec!["phase"],
            "phase is shown",
        ),
        (
            "sum(waymark_release_phase) / on (namespace) sum(waymark_reconcile_errors_total)",
            vec![],
            "cannot match on namespace",
        ),
        (
            "waymark_release_phase / waymark_reconcile_errors_total",
            vec![],
            "carry different labels",
        ),
        (
            "waymark_release_phase * on (release) group_left (kind) waymark_release_burn_rate",
            vec![],
            "cannot copy with group_left kind",
        ),
        (
            "histogram_quantile(0.9, sum by (roadmap_item) (rate(waymark_time_to_restore_seconds_bucket[5m])))",
            vec![],
            "cannot read buckets by le",
        ),
        (
            r#"{__name__="waymark_release_phase"}"#,
            vec![],
            "without a metric name",
        ),
        (
            "sum(rate(waymark_reconcile_errors_total[5m])",
            vec![],
            "not PromQL",
        ),
        ("1 + 1", vec![], "no metric in it"),
    ] {
        let shown: Vec<String> = shown.into_iter().map(String::from).collect();
        let found = problems(wrong, &shown, &scrape);
        assert!(
            found.iter().any(|problem| problem.contains(expected)),
            "{wrong}: expected {expected:?}, found {found:?}"
        );
    }
}

#[test]
fn grafana_variables_become_plain_values_and_an_unknown_one_is_named() {
    let values = variable_values(&dashboard());
    assert_eq!(
        substitute(
            r#"rate(x{namespace=~"$namespace", release=~"${release}"}[$__rate_interval])"#,
            &values
        ),
        Ok(r#"rate(x{namespace=~".*", release=~".*"}[5m])"#.to_string())
    );
    let misspelled = substitute(r#"x{namespace=~"$namespce"}"#, &values).unwrap_err();
    assert!(
        misspelled.contains("$namespce is not a variable"),
        "{misspelled}"
    );
}

#[test]
fn a_dashboard_naming_a_missing_metric_fails_the_check() {
    let mut dashboard = dashboard();
    let first = dashboard["panels"]
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|panel| panel["targets"].is_array())
        .unwrap();
    let expression = first["targets"][0]["expr"].as_str().unwrap().to_string();
    let metric = "waymark_release_phase";
    assert!(expression.contains(metric), "{expression}");
    first["targets"][0]["expr"] = Json::from(expression.replace(metric, "waymark_release_phases"));
    let scrape = checker_scrape();
    let found: Vec<String> = dashboard_queries(&dashboard)
        .iter()
        .flat_map(|query| problems(query.expression.as_ref().unwrap(), &query.shown, &scrape))
        .collect();
    assert!(
        found.contains(&"waymark_release_phases is not exported".to_string()),
        "{found:?}"
    );
}
