//! `waymark replay` against a real Prometheus holding a past the test wrote: three hours of
//! request counters backfilled with promtool, with a known bad interval in which the canary
//! fails 5% of its requests. The replayed rollback must fall just after that interval begins.

mod common;

use std::fmt::Write as _;
use std::time::Instant;

use common::prometheus::Prometheus;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use waymark::analysis::replay::ReplayOutcome;
use waymark::api::Verdict;
use waymark::cli::replay::{self, ReplayArgs, ReplayFormat};

/// Seconds between backfilled samples, as a 15s scrape would take them.
const SCRAPE: i64 = 15;
/// Requests per second of each Service.
const RATE: f64 = 20.0;
/// The replay's step (and the Release's analysis interval).
const STEP: i64 = 30;
/// The long window of the burn pair.
const LONG_WINDOW: i64 = 300;

/// The Release replayed: burn 5m/1m above 14.4x, failureLimit 2, a hold at the end so only a
/// rollback can decide the outcome.
const RELEASE: &str = r#"
apiVersion: waymark.dev/v1alpha1
kind: Release
metadata: {name: checkout, namespace: shop}
spec:
  roadmap: {item: PAY-142}
  selector: {matchLabels: {app: checkout}}
  template: {metadata: {labels: {app: checkout}}}
  traffic: {replicas: {}}
  steps: [{setWeight: 10}, {pause: {}}]
  analysis:
    interval: 30s
    prometheus: {address: "http://prometheus.monitoring:9090"}
    slo:
      objective: 99.9
      errorQuery: 'sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",code=~"5.."}[{{window}}]))'
      totalQuery: 'sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}"}[{{window}}]))'
      burnRates: [{long: 5m, short: 1m, max: 14.4}]
      minRequests: 100
    failureLimit: 2
"#;

/// OpenMetrics counters for `checkout-stable` (0.05% errors throughout) and `checkout-canary`
/// (0.05%, but 5% from `bad_from` until `bad_to`), one sample per [`SCRAPE`] from `start` to
/// `end`. Each series is written whole, in time order, as promtool wants.
fn history(start: i64, end: i64, bad_from: i64, bad_to: i64) -> String {
    let mut text =
        String::from("# HELP http_requests Requests served.\n# TYPE http_requests counter\n");
    for service in ["checkout-stable", "checkout-canary"] {
        for code in ["200", "500"] {
            let mut total = 0.0;
            let mut at = start;
            while at <= end {
                let bad = service == "checkout-canary" && at > bad_from && at <= bad_to;
                let error_ratio = if bad { 0.05 } else { 0.0005 };
                let share = if code == "500" {
                    error_ratio
                } else {
                    1.0 - error_ratio
                };
                if at > start {
                    total += RATE * share * SCRAPE as f64;
                }
                let _ = writeln!(
                    text,
                    "http_requests_total{{namespace=\"shop\",service=\"{service}\",code=\"{code}\"}} {total} {at}"
                );
                at += SCRAPE;
            }
        }
    }
    text.push_str("# EOF\n");
    text
}

fn time(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).expect("a valid time")
}

#[tokio::test]
async fn the_replayed_rollback_falls_just_after_the_bad_interval_begins() {
    // Three hours ending ten minutes ago, on whole minutes.
    let now = Timestamp::now().as_second();
    let end = (now - 600) / 60 * 60;
    let start = end - 3 * 3600;
    let bad_from = start + 90 * 60;
    let bad_to = bad_from + 20 * 60;
    let Some(prometheus) =
        Prometheus::start_with_history(&history(start, end, bad_from, bad_to)).await
    else {
        return;
    };

    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("release.yaml");
    std::fs::write(&file, RELEASE).expect("write the Release");
    let from = start + 60 * 60;
    let args = ReplayArgs {
        file,
        prometheus: prometheus.address().to_string(),
        from: time(from).to_string(),
        to: time(end).to_string(),
        step: None,
        canary_role_selector: None,
        stable_role_selector: Some("revision=5d8b9c".into()),
        namespace: None,
        output: ReplayFormat::Text,
        changes: false,
    };

    let started = Instant::now();
    let prepared = replay::prepare(&args, RELEASE, Timestamp::now()).expect("valid input");
    let report = replay::fetch(prepared).await.expect("Prometheus answers");
    let elapsed = started.elapsed();

    let runs = &report.replay.steps;
    assert_eq!(runs.len() as i64, (end - from) / STEP + 1);
    // One range query per resolved query (error and total, per window and role), whatever the
    // number of instants: the instant queries of one controller run.
    assert_eq!(report.range_queries, 8);
    // Before the bad interval every run passes on real numbers: burn 0.5 on 600 requests in 5m.
    for step in runs.iter().filter(|s| s.run.ran_at < time(bad_from)) {
        assert_eq!(
            step.run.verdict,
            Verdict::Passing,
            "{}: {}",
            step.run.ran_at,
            step.run.summary
        );
        let canary = step.run.canary.as_ref().expect("canary judged");
        let burn = canary.windows[0].burn_rate.expect("a burn rate");
        let requests = canary.windows[0].requests.expect("a request count");
        assert!((burn - 0.5).abs() < 0.1, "{}: burn {burn}", step.run.ran_at);
        assert!(
            (requests - RATE * 300.0).abs() < 300.0,
            "requests {requests}"
        );
    }
    let ReplayOutcome::RolledBack {
        at,
        reason,
        message,
        failing_since,
    } = &report.replay.outcome
    else {
        panic!("expected a rollback: {:?}", report.replay.outcome);
    };
    assert_eq!(reason, "AnalysisFailing");
    // The long window needs about 29% of its 5m bad (14.4 of a burn of 50) before both windows
    // burn above 14.4; two failing runs in a row then roll back: within the window and two
    // steps of the bad interval's start, never before it.
    let latest = bad_from + LONG_WINDOW + 2 * STEP;
    assert!(
        *at > time(bad_from) && *at <= time(latest),
        "rollback at {at}, bad from {} to {}",
        time(bad_from),
        time(bad_to)
    );
    let since = failing_since.expect("a failing streak");
    assert_eq!(
        at.duration_since(since),
        SignedDuration::from_secs(STEP),
        "failureLimit 2: the second failing run rolls back"
    );
    // The baseline comparison sees the canary clearly worse than the stable (z-test) before the
    // long burn window crosses 14.4x; either way the message carries the numbers.
    assert!(
        message.starts_with("2 failing analyses in a row (failureLimit 2): canary "),
        "{message}"
    );

    let text = replay::render_text(&report, false);
    assert_eq!(
        text.lines().filter(|line| line.starts_with("20")).count(),
        runs.len(),
        "one line per run"
    );
    assert!(text.contains("ROLLBACK (AnalysisFailing)"), "{text}");
    let changes = replay::render_text(&report, true);
    if std::env::var_os("WAYMARK_SHOW_REPLAY").is_some() {
        eprintln!("{changes}");
    }
    // With --changes: the first run, the first failing and rolling-back runs, the first run
    // after the outcome, the first passing one after the bad interval, and the last.
    assert!(
        changes
            .lines()
            .filter(|line| line.starts_with("20"))
            .count()
            <= 8,
        "{changes}"
    );
    assert!(
        changes.contains("more runs like the one above"),
        "{changes}"
    );
    assert!(changes.contains("ROLLBACK (AnalysisFailing)"), "{changes}");
    let json = replay::render_json(&report);
    assert_eq!(json["outcome"]["outcome"], "rolledBack");
    assert_eq!(json["outcome"]["at"], at.to_string());
    eprintln!(
        "replay: {} runs over {}s from {} range queries in {elapsed:?}; {}",
        runs.len(),
        end - from,
        report.range_queries,
        replay::outcome_text(&report)
    );
}

#[tokio::test]
async fn an_unreachable_prometheus_is_an_error_naming_the_flag() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    drop(listener);
    let args = ReplayArgs {
        file: "release.yaml".into(),
        prometheus: address.clone(),
        from: "-1h".into(),
        to: "now".into(),
        step: None,
        canary_role_selector: None,
        stable_role_selector: Some("revision=5d8b9c".into()),
        namespace: None,
        output: ReplayFormat::Text,
        changes: false,
    };
    let prepared = replay::prepare(&args, RELEASE, Timestamp::now()).expect("valid input");
    let error = replay::fetch(prepared)
        .await
        .expect_err("no Prometheus there");
    assert_eq!(
        error.to_string(),
        format!("--prometheus: Prometheus at {address} unreachable: connection refused")
    );
}

#[test]
fn the_binary_exits_non_zero_naming_the_file_that_is_not_a_release() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("route.yaml");
    std::fs::write(
        &file,
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x}\n",
    )
    .expect("write the file");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_waymark"))
        .args(["replay", "-f"])
        .arg(&file)
        .args(["--prometheus", "http://127.0.0.1:9", "--from", "-1h"])
        .output()
        .expect("run waymark");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("holds no Release") && stderr.contains("it holds: ConfigMap"),
        "{stderr}"
    );
}
