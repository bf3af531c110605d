//! A roadmap item's outcome measured against a real Prometheus holding a past the test wrote
//! (promtool backfill): two weeks of checkout visits and orders, conversion 3.0% before the
//! canary and 3.1% after promotion. The controller's own path is taken: the core says which
//! measurements are due, the shell asks Prometheus (an instant query at the end of each
//! window), the core folds the answers into the history entry and tells the verdict.

mod common;

use std::fmt::Write as _;

use common::prometheus::Prometheus;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use waymark::analysis::roadmap_outcome::Measurement;
use waymark::api::{Outcome, OutcomeVerdict, Release, ReleaseStatus};
use waymark::controller::prometheus::{Clients, Credentials, measure_outcomes};
use waymark::rollout::outcome::{self, REASON_OUTCOME_MEASURED};
use waymark::rollout::{Action, Decision, Observed, history};

/// Seconds between backfilled samples: business counters need no finer grain.
const SCRAPE: i64 = 300;
/// Checkout visits per second, throughout.
const VISITS: f64 = 10.0;
/// Orders per visit before promotion and after it.
const CONVERSION_BEFORE: f64 = 0.030;
const CONVERSION_AFTER: f64 = 0.031;

const RELEASE: &str = r#"
apiVersion: waymark.dev/v1alpha1
kind: Release
metadata: {name: checkout, namespace: shop}
spec:
  roadmap:
    item: PAY-142
    title: One-click checkout
    horizon: now
    kind: feature
    outcome:
      name: checkout-conversion
      query: 'sum(increase(orders_total{namespace="{{namespace}}"}[{{window}}])) / sum(increase(checkout_visits_total{namespace="{{namespace}}"}[{{window}}]))'
      goal: increase
      baseline: 7d
      after: 7d
      minChange: 2%
  selector: {matchLabels: {app: checkout}}
  template: {metadata: {labels: {app: checkout}}}
  traffic: {replicas: {}}
  steps: [{setWeight: 10}]
  analysis:
    prometheus: {address: "http://prometheus.monitoring:9090"}
    slo:
      objective: 99.9
      errorQuery: 'sum(rate(http_requests_total{code=~"5.."}[{{window}}]))'
      totalQuery: 'sum(rate(http_requests_total[{{window}}]))'
      burnRates: [{long: 5m, short: 1m, max: 14.4}]
"#;

/// OpenMetrics counters of visits and orders from `start` to `end`, one sample per [`SCRAPE`],
/// orders at the after conversion from `promoted_at` on.
fn history(start: i64, end: i64, promoted_at: i64) -> String {
    let mut text = String::new();
    for (name, help) in [
        ("checkout_visits", "Checkout pages shown."),
        ("orders", "Orders placed."),
    ] {
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} counter");
        let mut total = 0.0;
        let mut at = start;
        while at <= end {
            if at > start {
                let per_visit = match (name, at > promoted_at) {
                    ("checkout_visits", _) => 1.0,
                    (_, false) => CONVERSION_BEFORE,
                    (_, true) => CONVERSION_AFTER,
                };
                total += VISITS * per_visit * SCRAPE as f64;
            }
            let _ = writeln!(text, "{name}_total{{namespace=\"shop\"}} {total} {at}");
            at += SCRAPE;
        }
    }
    text.push_str("# EOF\n");
    text
}

/// [`history`] plus healthy request counters of `checkout-stable` and `checkout-canary` (20/s
/// each, 0.05% errors) around `from`, for a replayed canary that passes its analysis.
fn history_with_requests(start: i64, end: i64, promoted_at: i64, from: i64) -> String {
    let mut text = history(start, end, promoted_at);
    text.truncate(text.len() - "# EOF\n".len());
    let _ = writeln!(
        text,
        "# HELP http_requests Requests served.\n# TYPE http_requests counter"
    );
    for service in ["checkout-stable", "checkout-canary"] {
        for (code, share) in [("200", 0.9995), ("500", 0.0005)] {
            let mut total = 0.0;
            let mut at = from - 900;
            while at <= from + 1200 {
                let _ = writeln!(
                    text,
                    "http_requests_total{{namespace=\"shop\",service=\"{service}\",code=\"{code}\"}} {total} {at}"
                );
                total += 20.0 * share * 15.0;
                at += 15;
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
async fn one_items_outcome_is_measured_against_a_real_prometheus_and_met() {
    // The canary started 7d 2h ago and was promoted an hour later: the after window ended an
    // hour ago. History from just before the baseline window until ten minutes ago.
    let now = Timestamp::now().as_second() / 60 * 60;
    let week = 7 * 86_400;
    let canary_started = now - week - 2 * 3600;
    let promoted_at = canary_started + 3600;
    let start = canary_started - week - 3600;
    let end = now - 600;
    let Some(prometheus) = Prometheus::start_with_history(&history(start, end, promoted_at)).await
    else {
        return;
    };

    let mut release: Release = serde_saphyr::from_str(RELEASE).expect("the Release parses");
    release.spec.analysis.as_mut().unwrap().prometheus.address = prometheus.address().into();
    let spec_outcome = release.spec.roadmap.outcome.clone().unwrap();
    let mut entry = history::entry(
        "6f9c7d",
        "PAY-142",
        Outcome::Promoted,
        Some(Time(time(canary_started))),
        Time(time(promoted_at)),
        "Promoted",
        None,
    );
    entry.horizon = release.spec.roadmap.horizon;
    entry.kind = release.spec.roadmap.kind;
    entry.roadmap_outcome = Some(outcome::record_for(&spec_outcome));
    release.status = Some(ReleaseStatus {
        history: vec![entry],
        ..ReleaseStatus::default()
    });

    // Two reconciles at `now`: the baseline is due first, then (its window long past) the
    // after number. Each asks Prometheus exactly what is due.
    let clients = Clients::default();
    let mut events = Vec::new();
    for expected in [Measurement::Baseline, Measurement::After] {
        let due = outcome::measurements_due(&release, time(now));
        assert_eq!(
            due.iter().map(|d| d.measurement).collect::<Vec<_>>(),
            vec![expected]
        );
        let answers = measure_outcomes(&release, Ok(&Credentials::default()), &clients, &due).await;
        let mut decision = Decision {
            actions: Vec::new(),
            status: release.status.clone().unwrap(),
            requeue_after: None,
        };
        let observed = Observed {
            outcome_answers: answers,
            ..Observed::default()
        };
        outcome::fold(&mut decision, &observed, time(now));
        events.extend(
            decision
                .actions
                .into_iter()
                .filter_map(|action| match action {
                    Action::Event(note) => Some(note),
                    _ => None,
                }),
        );
        release.status = Some(decision.status);
    }
    assert!(
        outcome::measurements_due(&release, time(now + 86_400)).is_empty(),
        "nothing more is ever due"
    );

    let record = release.status.as_ref().unwrap().history[0]
        .roadmap_outcome
        .clone()
        .unwrap();
    let baseline = record.baseline.expect("a baseline number");
    let after = record.after.expect("an after number");
    let change = record.change.expect("a change");
    println!(
        "outcome measured against a real Prometheus: {}",
        waymark::analysis::roadmap_outcome::describe(&record)
    );
    println!(
        "  baseline {baseline:.5} (7d before the canary), after {after:.5} (7d after promotion), change {change:+.2}%"
    );
    for event in &events {
        println!("  Event {}: {}", event.reason, event.note);
    }
    // Conversion is orders over visits in each window, whatever Prometheus' extrapolation.
    assert!((baseline - CONVERSION_BEFORE).abs() < 1e-6, "{baseline}");
    assert!((after - CONVERSION_AFTER).abs() < 1e-6, "{after}");
    assert!((change - 3.333).abs() < 0.01, "{change}");
    assert_eq!(record.verdict, Some(OutcomeVerdict::Met));
    assert_eq!(record.attempts, None);
    assert_eq!(events.len(), 1, "one Event, for the verdict: {events:?}");
    assert_eq!(events[0].reason, REASON_OUTCOME_MEASURED);
    assert!(
        events[0].note.starts_with(
            "PAY-142 (now, feature): outcome of revision 6f9c7d: checkout-conversion +3.3% (goal +2%): met"
        ),
        "{}",
        events[0].note
    );
}

#[tokio::test]
async fn a_prometheus_that_is_down_is_retried_and_then_inconclusive_never_guessed() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut release: Release = serde_saphyr::from_str(RELEASE).expect("the Release parses");
    release.spec.analysis.as_mut().unwrap().prometheus.address = address;
    let mut entry = history::entry(
        "6f9c7d",
        "PAY-142",
        Outcome::Promoted,
        Some(Time(time(1_800_000_000))),
        Time(time(1_800_003_600)),
        "Promoted",
        None,
    );
    entry.roadmap_outcome = Some(outcome::record_for(
        release.spec.roadmap.outcome.as_ref().unwrap(),
    ));
    release.status = Some(ReleaseStatus {
        history: vec![entry],
        ..ReleaseStatus::default()
    });
    let clients = Clients::default();
    let mut now = time(1_800_003_600);
    let mut tries = 0;
    loop {
        let due = outcome::measurements_due(&release, now);
        if due.is_empty() {
            break;
        }
        tries += 1;
        let answers = measure_outcomes(&release, Ok(&Credentials::default()), &clients, &due).await;
        let mut decision = Decision {
            actions: Vec::new(),
            status: release.status.clone().unwrap(),
            requeue_after: None,
        };
        outcome::fold(
            &mut decision,
            &Observed {
                outcome_answers: answers,
                ..Observed::default()
            },
            now,
        );
        release.status = Some(decision.status);
        // The core asks to look again exactly at the next try.
        if let Some(after) = decision.requeue_after {
            now = now
                .checked_add(k8s_openapi::jiff::SignedDuration::try_from(after).unwrap())
                .unwrap();
        }
        assert!(tries <= 10, "bounded");
    }
    let record = release.status.as_ref().unwrap().history[0]
        .roadmap_outcome
        .clone()
        .unwrap();
    assert_eq!(tries, waymark::analysis::roadmap_outcome::MAX_ATTEMPTS);
    assert_eq!(record.verdict, Some(OutcomeVerdict::Inconclusive));
    assert_eq!(
        (record.baseline, record.after, record.change),
        (None, None, None)
    );
    assert!(
        record
            .message
            .as_deref()
            .is_some_and(|m| m.starts_with("no baseline number after 5 attempts: Prometheus at")),
        "{:?}",
        record.message
    );
}

#[tokio::test]
async fn waymark_replay_evaluates_the_outcome_of_the_replayed_promotion() {
    use waymark::cli::replay::{self, ReplayArgs, ReplayFormat};
    let now = Timestamp::now().as_second() / 60 * 60;
    let week = 7 * 86_400;
    let canary_started = now - week - 2 * 3600;
    let start = canary_started - week - 3600;
    let end = now - 600;
    let Some(prometheus) = Prometheus::start_with_history(&history_with_requests(
        start,
        end,
        canary_started + 3600,
        canary_started,
    ))
    .await
    else {
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("release.yaml");
    std::fs::write(&file, RELEASE).expect("write the Release");
    let args = ReplayArgs {
        file,
        prometheus: prometheus.address().to_string(),
        from: time(canary_started).to_string(),
        to: time(canary_started + 600).to_string(),
        step: None,
        canary_role_selector: None,
        stable_role_selector: None,
        namespace: None,
        output: ReplayFormat::Text,
        changes: true,
    };
    let prepared = replay::prepare(&args, RELEASE, Timestamp::now()).expect("valid input");
    let report = replay::fetch(prepared).await.expect("Prometheus answers");
    let text = replay::render_text(&report, true);
    println!("{text}");
    assert!(
        matches!(
            report.replay.outcome,
            waymark::analysis::replay::ReplayOutcome::Promoted { .. }
        ),
        "{text}"
    );
    let record = report
        .roadmap_outcome
        .clone()
        .expect("the outcome replayed");
    assert_eq!(record.verdict, Some(OutcomeVerdict::Met), "{record:?}");
    assert!((record.baseline.unwrap() - CONVERSION_BEFORE).abs() < 1e-6);
    // The replayed promotion is minutes after --from, before the conversion rose an hour in:
    // the after window holds about an hour at the old rate.
    let change = record.change.unwrap();
    assert!((3.0..3.34).contains(&change), "{change}");
    assert!(
        text.contains("Roadmap outcome: checkout-conversion +3."),
        "{text}"
    );
    let json = replay::render_json(&report);
    assert_eq!(json["roadmapOutcome"]["verdict"], "Met");
}
