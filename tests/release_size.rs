//! How big a Release gets with the longest history it can hold: ten history entries, each with
//! a full timeline. etcd refuses objects above 1.5 MiB; the Release must stay well below it,
//! with room for a large pod template.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use waymark::api::{
    AnalysisStatus, CheckResult, Goal, Horizon, ManualAction, MinChange, Outcome, OutcomeVerdict,
    Release, ReleaseSpec, ReleaseStatus, RoadmapKind, RoadmapOutcome, RoleAnalysis, Verdict,
    WindowResult,
};
use waymark::rollout::history::{HISTORY_LIMIT, entry, record};
use waymark::rollout::timeline::{
    self, MESSAGE_LIMIT, QUERY_LIMIT, TIMELINE_LIMIT, analysis_run, first_failure,
};

/// What the size must stay under: a third of etcd's limit.
const BUDGET: usize = 512 * 1024;

fn at(seconds: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + seconds).expect("a valid time"))
}

fn example() -> Release {
    let text = include_str!("../examples/checkout.yaml");
    let document = text.split("\n---\n").next().expect("a first document");
    let value: serde_json::Value = serde_saphyr::from_str(document).expect("YAML");
    let spec: ReleaseSpec = serde_json::from_value(value["spec"].clone()).expect("a spec");
    let mut release = Release::new("checkout", spec);
    release.metadata.namespace = Some("shop".into());
    release
}

/// A window with every field set; queries of `query_len` characters.
fn window(name: &str, burn: f64, query_len: usize) -> WindowResult {
    let query = |kind: &str| {
        let base = format!(
            "sum(rate(http_requests_total{{namespace=\"shop\",service=\"checkout-canary\"{kind}}}[{name}]))"
        );
        let padding = query_len.saturating_sub(base.len());
        format!("{base}{}", " ".repeat(padding))
    };
    WindowResult {
        window: name.into(),
        error_ratio: Some(burn * 0.001),
        requests: Some(123_456.0),
        burn_rate: Some(burn),
        max: 14.4,
        note: Some("a note about this window".into()),
        error_query: query(",code=~\"5..\""),
        total_query: query(""),
    }
}

/// A folded analysis with two burn pairs, both roles, a check, and a summary of
/// `MESSAGE_LIMIT` characters.
fn analysis(seconds: i64, verdict: Verdict, query_len: usize) -> AnalysisStatus {
    let windows = |burn: f64| {
        vec![
            window("5m", burn, query_len),
            window("1m", burn, query_len),
            window("30m", burn / 2.0, query_len),
            window("5m", burn, query_len),
        ]
    };
    AnalysisStatus {
        verdict,
        last_run_at: Some(at(seconds)),
        revision: Some("6f9c7d41ab".into()),
        summary: Some("s".repeat(MESSAGE_LIMIT * 4)),
        burn: Some("21.3x/14.4x".into()),
        canary: Some(RoleAnalysis {
            verdict,
            service: "checkout-canary".into(),
            windows: windows(21.3),
        }),
        stable: Some(RoleAnalysis {
            verdict: Verdict::Passing,
            service: "checkout-stable".into(),
            windows: windows(0.4),
        }),
        comparison: vec![],
        checks: vec![CheckResult {
            name: "p99-latency".into(),
            verdict,
            value: Some(0.31),
            max: Some(0.25),
            min: Some(0.0),
            query: "q".repeat(query_len),
            note: None,
        }],
        consecutive_failures: 1,
        consecutive_inconclusive: 0,
        consecutive_errors: 0,
        failing_since: None,
        error_budget_remaining: Some(0.5),
    }
}

/// The example Release with ten rolled-back revisions of full timelines: every entry at its
/// longest (messages at the cut, the first failure's queries `query_len` long).
fn longest_release(query_len: usize) -> Release {
    let mut release = example();
    let limits = release.spec.analysis.clone();
    let mut history = Vec::new();
    for revision in 0..HISTORY_LIMIT as i64 {
        let base = revision * 100_000;
        let mut timeline = Vec::new();
        timeline::push(
            &mut timeline,
            timeline::canary_created(at(base), "6f9c7d41ab"),
        );
        timeline::push(&mut timeline, timeline::canary_available(at(base + 20)));
        timeline::push(
            &mut timeline,
            timeline::request(
                at(base + 25),
                ManualAction::Abort,
                Some("system:serviceaccount:platform-team:deploy-bot-with-a-long-name".into()),
            ),
        );
        for run in 0..200 {
            if run % 20 == 0 {
                timeline::push(&mut timeline, timeline::step(at(base + 30 * run), 3, 50));
            }
            let verdict = if run % 2 == 0 {
                Verdict::Passing
            } else {
                Verdict::Inconclusive
            };
            timeline::push(
                &mut timeline,
                analysis_run(
                    &analysis(base + 30 * run + 1, verdict, query_len),
                    limits.as_ref(),
                ),
            );
        }
        timeline::push(
            &mut timeline,
            first_failure(
                &analysis(base + 7_000, Verdict::Failing, query_len),
                limits.as_ref(),
            ),
        );
        timeline::push(&mut timeline, timeline::traffic_on_stable(at(base + 7_030)));
        timeline::push(
            &mut timeline,
            timeline::canary_scaled_down(at(base + 7_031)),
        );
        assert_eq!(timeline.len(), TIMELINE_LIMIT);
        let mut finished = entry(
            "6f9c7d41ab",
            "PAY-142",
            Outcome::RolledBack,
            Some(at(base)),
            at(base + 7_030),
            "AnalysisFailing",
            Some("m".repeat(2_000)),
        );
        finished.failure_detected_at = Some(at(base + 7_000));
        finished.horizon = Some(Horizon::Now);
        finished.kind = Some(RoadmapKind::Feature);
        finished.timeline = timeline;
        // The largest outcome record: the longest query the schema takes, every number, and
        // the longest failure reason kept.
        let mut outcome = waymark::rollout::outcome::record_for(&RoadmapOutcome {
            name: "n".repeat(63),
            query: "q".repeat(4096),
            goal: Goal::Increase,
            baseline: waymark::api::Duration::from_secs(7 * 86_400),
            after: waymark::api::Duration::from_secs(7 * 86_400),
            min_change: MinChange::Percent(2.5),
        });
        outcome.baseline = Some(0.123_456_789_012_345);
        outcome.after = Some(0.123_456_789_012_345);
        outcome.change = Some(-12.345_678_901_234_5);
        outcome.verdict = Some(OutcomeVerdict::Inconclusive);
        outcome.attempts = Some(5);
        outcome.last_attempt_at = Some(at(base + 9_000));
        outcome.measured_at = Some(at(base + 9_000));
        outcome.message = Some(format!(
            "no after number after 5 attempts: {}",
            "m".repeat(waymark::analysis::roadmap_outcome::REASON_LIMIT + 1)
        ));
        finished.roadmap_outcome = Some(outcome);
        finished.rework = true;
        record(&mut history, finished);
    }
    assert_eq!(history.len(), HISTORY_LIMIT);
    release.status = Some(ReleaseStatus {
        analysis: Some(analysis(1_000_000, Verdict::Failing, query_len)),
        history,
        ..ReleaseStatus::default()
    });
    release
}

#[test]
fn a_release_with_ten_full_timelines_stays_well_under_the_etcd_limit() {
    let typical = serde_json::to_vec(&longest_release(120)).expect("JSON");
    let longest = serde_json::to_vec(&longest_release(QUERY_LIMIT + 500)).expect("JSON");
    eprintln!(
        "Release with {HISTORY_LIMIT} history entries x {TIMELINE_LIMIT} timeline entries: {} bytes with example-length queries, {} bytes with every query at the {QUERY_LIMIT}-character cut",
        typical.len(),
        longest.len()
    );
    assert!(typical.len() < BUDGET, "{} bytes", typical.len());
    assert!(longest.len() < BUDGET, "{} bytes", longest.len());
    // The bound holds because of the cuts: no timeline text is longer than they allow.
    let release = longest_release(QUERY_LIMIT + 500);
    for history in &release.status.as_ref().expect("a status").history {
        for entry in &history.timeline {
            let message = entry.message.as_deref().unwrap_or_default();
            assert!(message.chars().count() <= MESSAGE_LIMIT);
            for window in entry.canary.iter().chain(entry.stable.iter()) {
                for query in [&window.error_query, &window.total_query]
                    .into_iter()
                    .flatten()
                {
                    assert!(query.chars().count() <= QUERY_LIMIT);
                }
            }
        }
    }
}
