//! Analysis runs against a real Prometheus scraping counters the test controls.
//!
//! Windows are short (burn pair 10s/5s, scrape every second) so that each test needs about
//! ten seconds of data. Each test has its own Prometheus and metrics server, so tests run in
//! parallel without seeing each other's series.

mod common;

use std::time::Duration;

use common::prometheus::{MetricsServer, Prometheus};
use k8s_openapi::jiff::Timestamp;
use waymark::api::{Release, ReleaseStatus, Verdict};
use waymark::controller::prometheus::{self as analysis, Credentials};

const LONG_WINDOW: Duration = Duration::from_secs(10);
/// Long enough for Prometheus to collect a window on a busy machine, short enough to notice a
/// scrape that never happens.
const DATA_DEADLINE: Duration = Duration::from_secs(30);
const ERROR_QUERY: &str = r#"sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",code=~"5.."}[{{window}}]))"#;
const TOTAL_QUERY: &str = r#"sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}"}[{{window}}]))"#;

/// A Release `checkout` in `namespace` judged by Prometheus at `address`, with a canary when
/// `canary` is set.
fn release(namespace: &str, address: &str, canary: bool) -> ReleaseBuilder {
    ReleaseBuilder {
        namespace: namespace.into(),
        address: address.into(),
        canary,
        objective: 99.9,
        error_query: ERROR_QUERY.into(),
        budget: String::new(),
    }
}

struct ReleaseBuilder {
    namespace: String,
    address: String,
    canary: bool,
    objective: f64,
    error_query: String,
    budget: String,
}

impl ReleaseBuilder {
    fn objective(mut self, objective: f64) -> Self {
        self.objective = objective;
        self
    }

    fn error_query(mut self, query: &str) -> Self {
        self.error_query = query.into();
        self
    }

    fn budget(mut self, period: &str, freeze_below: f64) -> Self {
        self.budget = format!("budget: {{period: {period}, freezeBelow: {freeze_below}}}");
        self
    }

    fn build(self) -> Release {
        let yaml = format!(
            r#"
apiVersion: waymark.dev/v1alpha1
kind: Release
metadata: {{name: checkout, namespace: {namespace}}}
spec:
  roadmap: {{item: PAY-142}}
  selector: {{matchLabels: {{app: checkout}}}}
  template: {{metadata: {{labels: {{app: checkout}}}}}}
  traffic: {{replicas: {{}}}}
  steps: [{{setWeight: 50}}]
  analysis:
    prometheus: {{address: "{address}", timeout: 2s}}
    slo:
      objective: {objective}
      errorQuery: '{error_query}'
      totalQuery: '{total_query}'
      burnRates: [{{long: 10s, short: 5s, max: 14.4}}]
      minRequests: 100
      {budget}
"#,
            namespace = self.namespace,
            address = self.address,
            objective = self.objective,
            error_query = self.error_query,
            total_query = TOTAL_QUERY,
            budget = self.budget,
        );
        let mut release: Release = serde_saphyr::from_str(&yaml).expect("test Release is valid");
        release.status = Some(ReleaseStatus {
            stable_revision: Some("5d8b9c".into()),
            canary_revision: self.canary.then(|| "6f9c7d".into()),
            ..Default::default()
        });
        release
    }
}

/// A metrics server and a Prometheus scraping it, or `None` when Prometheus is not installed
/// (outside CI).
async fn start() -> Option<(MetricsServer, Prometheus)> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let metrics = MetricsServer::start().await.expect("metrics server starts");
    let prometheus = Prometheus::start(&[metrics.address()]).await?;
    Some((metrics, prometheus))
}

/// Sets each `(service, requests per second, error ratio)` in `namespace`, waits until
/// Prometheus holds a full long window of it, and runs one analysis of the Release made by
/// `configure`. `None` when Prometheus is not installed (outside CI).
async fn analyse_after_traffic(
    namespace: &str,
    traffic: &[(&str, f64, f64)],
    canary: bool,
    configure: impl FnOnce(ReleaseBuilder) -> ReleaseBuilder,
) -> Option<waymark::analysis::AnalysisRun> {
    let (metrics, prometheus) = start().await?;
    for (service, per_second, error_ratio) in traffic {
        metrics.set_traffic(namespace, service, *per_second, *error_ratio);
    }
    prometheus
        .wait_for_window(
            &format!(r#"http_requests_total{{namespace="{namespace}"}}"#),
            LONG_WINDOW,
            DATA_DEADLINE,
        )
        .await
        .expect("Prometheus collects a full window");
    let release = configure(release(namespace, prometheus.address(), canary)).build();
    Some(
        analysis::run(
            &release,
            &Credentials::default(),
            &analysis::Clients::default(),
            Timestamp::now(),
        )
        .await,
    )
}

fn canary_window_numbers(run: &waymark::analysis::AnalysisRun) -> (f64, f64) {
    let canary = run.canary.as_ref().expect("canary judged");
    let long = &canary.windows[0];
    assert_eq!(long.window, "10s");
    (
        long.burn_rate.expect("long window has a burn rate"),
        long.requests.expect("long window has a request count"),
    )
}

#[tokio::test]
async fn a_healthy_canary_passes_with_numbers_near_the_truth() {
    // 40 requests/s with 0.05% errors: burn 0.5 of a 99.9% SLO, 400 requests per 10s.
    let traffic = [
        ("checkout-canary", 40.0, 0.0005),
        ("checkout-stable", 40.0, 0.0005),
    ];
    let Some(run) = analyse_after_traffic("healthy", &traffic, true, |r| r).await else {
        return;
    };

    assert_eq!(run.verdict, Verdict::Passing, "{}", run.summary);
    let (burn, requests) = canary_window_numbers(&run);
    assert!((burn - 0.5).abs() < 0.1, "burn {burn}");
    assert!((requests - 400.0).abs() < 40.0, "requests {requests}");
    assert!(
        run.summary
            .starts_with("canary burns 0.5x of 14.4x over 10s and 5s ("),
        "{}",
        run.summary
    );
    assert_eq!(run.burn.as_deref(), Some("0.5x/14.4x"));
    assert!(run.comparison.iter().all(|c| c.verdict == Verdict::Passing));
    let canary = run.canary.as_ref().unwrap();
    assert!(
        canary.windows[0]
            .error_query
            .contains(r#"service="checkout-canary""#)
    );
    eprintln!(
        "healthy: {} (burn {burn:.3}, requests {requests:.0})",
        run.summary
    );
}

#[tokio::test]
async fn a_canary_at_five_percent_errors_fails_with_burn_near_fifty() {
    let traffic = [
        ("checkout-canary", 40.0, 0.05),
        ("checkout-stable", 40.0, 0.0),
    ];
    let Some(run) = analyse_after_traffic("broken", &traffic, true, |r| r).await else {
        return;
    };

    assert_eq!(run.verdict, Verdict::Failing, "{}", run.summary);
    let (burn, _) = canary_window_numbers(&run);
    assert!((burn - 50.0).abs() < 5.0, "burn {burn}");
    assert!(
        run.summary.starts_with("canary burns 5") && run.summary.contains("x of 14.4x"),
        "{}",
        run.summary
    );
    assert!(
        run.comparison.iter().all(|c| c.verdict == Verdict::Failing),
        "{:?}",
        run.comparison
    );
    eprintln!("broken: {} (burn {burn:.2})", run.summary);
    eprintln!("comparison: {}", run.comparison[0].detail);
}

#[tokio::test]
async fn a_canary_without_traffic_is_inconclusive() {
    let traffic = [
        ("checkout-canary", 0.0, 0.0),
        ("checkout-stable", 40.0, 0.0),
    ];
    let Some(run) = analyse_after_traffic("idle", &traffic, true, |r| r).await else {
        return;
    };

    assert_eq!(run.verdict, Verdict::Inconclusive, "{}", run.summary);
    assert_eq!(
        run.summary,
        "canary has 0 requests in 10s, fewer than minRequests 100"
    );
    assert_eq!(run.burn, None);
}

#[tokio::test]
async fn a_stopped_prometheus_is_an_error_naming_its_address() {
    let Some((_metrics, mut prometheus)) = start().await else {
        return;
    };
    let release = release("stopped", prometheus.address(), true).build();
    prometheus.stop();

    let run = analysis::run(
        &release,
        &Credentials::default(),
        &analysis::Clients::default(),
        Timestamp::now(),
    )
    .await;

    assert_eq!(run.verdict, Verdict::Error, "{}", run.summary);
    assert_eq!(
        run.summary,
        format!(
            "Prometheus at {} unreachable: connection refused",
            prometheus.address()
        )
    );
}

#[tokio::test]
async fn a_query_with_a_syntax_error_is_an_error_with_prometheus_message() {
    let Some((_metrics, prometheus)) = start().await else {
        return;
    };
    // The label matcher is never closed.
    let broken = r#"sum(rate(http_requests_total{namespace="{{namespace}}"[{{window}}]))"#;
    let release = release("syntax", prometheus.address(), true)
        .error_query(broken)
        .build();

    let run = analysis::run(
        &release,
        &Credentials::default(),
        &analysis::Clients::default(),
        Timestamp::now(),
    )
    .await;

    assert_eq!(run.verdict, Verdict::Error, "{}", run.summary);
    let expected = format!(
        "Prometheus at {} rejected the canary error query over 10s: bad_data: ",
        prometheus.address()
    );
    assert!(run.summary.starts_with(&expected), "{}", run.summary);
    assert!(run.summary.contains("parse error"), "{}", run.summary);
    eprintln!("syntax: {}", run.summary);
}

#[tokio::test]
async fn an_exhausted_budget_is_below_the_freeze_threshold() {
    // No canary; the stable fails 5% of requests against a 99% SLO: five budgets' worth.
    let traffic = [("checkout-stable", 40.0, 0.05)];
    let configure = |release: ReleaseBuilder| release.objective(99.0).budget("1m", 0.25);
    let Some(run) = analyse_after_traffic("spent", &traffic, false, configure).await else {
        return;
    };

    let remaining = run
        .error_budget_remaining
        .expect("a budget figure from the stable's counters");
    assert!(remaining < 0.25, "remaining {remaining}");
    assert!((remaining - (-4.0)).abs() < 0.5, "remaining {remaining}");
    assert!(run.canary.is_none());
    assert!(
        run.summary
            .starts_with("no canary, stable only: stable burns 5.0x of 14.4x"),
        "{}",
        run.summary
    );
    assert!(
        run.summary.contains("error budget overspent"),
        "{}",
        run.summary
    );
    eprintln!("budget: {} (remaining {remaining:.3})", run.summary);
}

/// Prometheus's own count of instant queries it answered, from its `/metrics`.
async fn queries_answered(prometheus: &Prometheus) -> f64 {
    let text = reqwest::get(format!("{}/metrics", prometheus.address()))
        .await
        .expect("Prometheus serves its own metrics")
        .text()
        .await
        .expect("its metrics as text");
    text.lines()
        .filter(|line| line.starts_with("prometheus_http_requests_total{"))
        .filter(|line| line.contains(r#"handler="/api/v1/query""#))
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn the_budget_queries_are_not_asked_again_every_interval() {
    let Some((metrics, prometheus)) = start().await else {
        return;
    };
    metrics.set_traffic("cached", "checkout-stable", 40.0, 0.0);
    prometheus
        .wait_for_window(
            r#"http_requests_total{namespace="cached"}"#,
            LONG_WINDOW,
            DATA_DEADLINE,
        )
        .await
        .expect("Prometheus collects a full window");
    // A 30-day budget: its answer is good for an hour.
    let release = release("cached", prometheus.address(), false)
        .budget("30d", 0.0)
        .build();
    let clients = analysis::Clients::default();
    let count = |from: f64, to: f64| (to - from).round() as i64;

    let before = queries_answered(&prometheus).await;
    let first = analysis::run(
        &release,
        &Credentials::default(),
        &clients,
        Timestamp::now(),
    )
    .await;
    let after_first = queries_answered(&prometheus).await;
    let second = analysis::run(
        &release,
        &Credentials::default(),
        &clients,
        Timestamp::now(),
    )
    .await;
    let after_second = queries_answered(&prometheus).await;

    let first_run = count(before, after_first);
    let second_run = count(after_first, after_second);
    assert_eq!(
        first_run - second_run,
        2,
        "the two budget queries are asked once: {first_run} then {second_run} queries"
    );
    assert_eq!(
        first.error_budget_remaining, second.error_budget_remaining,
        "the same figure, from the kept answers"
    );
    assert!(second.error_budget_remaining.is_some());
}
