//! `waymark postmortem`: a blameless post-mortem draft of one revision, from its history entry
//! and timeline (`status.history[].timeline`). Pure: the renderers take the Release and write
//! Markdown or JSON; the team fills in the contributing factors and action items.
//!
//! Figures and how they are reckoned:
//! - **impact**: the highest share of traffic the canary had (the weights its steps reached,
//!   recorded in the timeline when the traffic got there: a step held short of its target
//!   never counts), and the share of the service's error budget the canary burned: for each
//!   analysis run, the canary's share of traffic × its worst window's burn rate × the time
//!   until the next run, over the budget period (`slo.budget.period`, else 30 days). The worst
//!   window makes it an upper estimate, which is the honest side to err on.
//! - **detection**: the first bad sample is the first run in which a canary window burned above
//!   its limit (or that failed: a value past a limit); then the first failing run and the
//!   moment traffic was back on the stable. A run that could not be judged because a query
//!   errored is no bad sample: it is reported as an error, with what the error was.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use serde_json::json;

use crate::analysis::format::{
    format_burn, format_count, format_number, format_percent, format_span as span,
};
use crate::api::{
    Duration, HistoryEntry, ManualAction, Outcome, Release, TimelineEntry, TimelineKind,
    TimelineWindow, Verdict,
};

/// The budget period when the Release sets none: the usual 30-day SLO window.
const DEFAULT_BUDGET_PERIOD: Duration = Duration::from_secs(30 * 86_400);

/// Why there is nothing to write a post-mortem about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PostmortemError {
    /// No rolled-back or aborted revision in the history.
    #[error(
        "release {namespace}/{name} has no rolled-back or aborted revision in status.history (it keeps the last ten revisions){known}; pass --revision REV for another one"
    )]
    NoIncident {
        /// The Release's namespace.
        namespace: String,
        /// The Release's name.
        name: String,
        /// `: it holds 5d8b9c (Promoted), ...` or nothing.
        known: String,
    },
    /// `--revision` names no entry of the history.
    #[error(
        "release {namespace}/{name} has no revision {revision} in status.history (it keeps the last ten revisions){known}"
    )]
    UnknownRevision {
        /// The Release's namespace.
        namespace: String,
        /// The Release's name.
        name: String,
        /// What was asked for.
        revision: String,
        /// `: it holds 5d8b9c (Promoted), ...` or nothing.
        known: String,
    },
}

/// The history entry a post-mortem is about: `revision`'s newest, or else the newest rollback
/// or abort.
pub fn pick<'a>(
    release: &'a Release,
    revision: Option<&str>,
) -> Result<&'a HistoryEntry, PostmortemError> {
    let namespace = release.metadata.namespace.clone().unwrap_or_default();
    let name = release.metadata.name.clone().unwrap_or_default();
    let history = release
        .status
        .as_ref()
        .map(|status| status.history.as_slice())
        .unwrap_or_default();
    let known = if history.is_empty() {
        String::new()
    } else {
        let entries: Vec<String> = history
            .iter()
            .map(|entry| format!("{} ({:?})", entry.revision, entry.outcome))
            .collect();
        format!(": it holds {}", entries.join(", "))
    };
    match revision {
        Some(revision) => history
            .iter()
            .find(|entry| entry.revision == revision)
            .ok_or(PostmortemError::UnknownRevision {
                namespace,
                name,
                revision: revision.to_string(),
                known,
            }),
        None => history
            .iter()
            .find(|entry| matches!(entry.outcome, Outcome::RolledBack | Outcome::Aborted))
            .ok_or(PostmortemError::NoIncident {
                namespace,
                name,
                known,
            }),
    }
}

/// The figures of one post-mortem, computed once for both renderers.
#[derive(Clone, Debug, PartialEq)]
pub struct Findings<'a> {
    /// The Release.
    pub release: &'a Release,
    /// The revision's history entry.
    pub entry: &'a HistoryEntry,
    /// When the canary started (history's `startedAt`, else the first timeline entry).
    pub started_at: Option<Timestamp>,
    /// Traffic back on the stable (the timeline's, else the entry's `finishedAt`).
    pub restored_at: Timestamp,
    /// The highest canary weight in the timeline.
    pub max_weight: Option<i32>,
    /// Fraction of the budget period's error budget the canary burned (upper estimate).
    pub budget_burned: Option<f64>,
    /// The budget period used.
    pub budget_period: Duration,
    /// First run with a canary window above its limit (or failing); never an errored run.
    pub first_bad_sample: Option<Timestamp>,
    /// First failing run (a value past its limit).
    pub first_failing_run: Option<Timestamp>,
    /// The first failing run's entry, with its queries where the timeline kept them.
    pub first_failure: Option<&'a TimelineEntry>,
    /// The first run whose queries errored (Prometheus unreachable, a query rejected), with
    /// what the error was in its message.
    pub first_error: Option<&'a TimelineEntry>,
}

fn is_run(entry: &TimelineEntry) -> bool {
    matches!(
        entry.kind,
        TimelineKind::Analysis | TimelineKind::FirstFailure
    )
}

fn above_limit(window: &TimelineWindow) -> bool {
    window.burn_rate.is_some_and(|burn| burn > window.max)
}

/// Works out the figures of `entry` of `release`.
pub fn findings<'a>(release: &'a Release, entry: &'a HistoryEntry) -> Findings<'a> {
    let timeline = &entry.timeline;
    let started_at = entry
        .started_at
        .as_ref()
        .map(|t| t.0)
        .or_else(|| timeline.first().map(|e| e.at.0));
    let restored_at = timeline
        .iter()
        .find(|e| e.kind == TimelineKind::TrafficOnStable)
        .map_or(entry.finished_at.0, |e| e.at.0);
    let max_weight = timeline
        .iter()
        .flat_map(|e| [e.weight, e.from_weight])
        .flatten()
        .max();
    let budget_period = release
        .spec
        .analysis
        .as_ref()
        .and_then(|analysis| analysis.slo.budget.as_ref())
        .map_or(DEFAULT_BUDGET_PERIOD, |budget| budget.period);

    // The canary's weight at `at`: the last step begun by then.
    let weight_at = |at: Timestamp| {
        timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::Step && e.at.0 <= at)
            .filter_map(|e| e.weight)
            .next_back()
            .unwrap_or(0)
    };
    let runs: Vec<&TimelineEntry> = timeline.iter().filter(|e| is_run(e)).collect();
    let mut burned = 0.0;
    let mut any = false;
    for (index, run) in runs.iter().enumerate() {
        let Some(burn) = run.canary.as_ref().and_then(|w| w.burn_rate) else {
            continue;
        };
        let end = runs
            .get(index + 1)
            .map_or(restored_at, |next| next.at.0)
            .min(restored_at);
        let seconds = end.duration_since(run.at.0).as_secs_f64().max(0.0);
        let share = f64::from(weight_at(run.at.0)) / 100.0;
        burned += share * burn * seconds / budget_period.as_secs_f64();
        any = true;
    }
    let first_bad_sample = runs
        .iter()
        .find(|run| {
            run.verdict == Some(Verdict::Failing) || run.canary.as_ref().is_some_and(above_limit)
        })
        .map(|run| run.at.0);
    let failing = |e: &&TimelineEntry| e.verdict == Some(Verdict::Failing);
    // The entry that kept its queries, else the first failing run at all.
    let first_failure = timeline
        .iter()
        .filter(|e| e.kind == TimelineKind::FirstFailure)
        .find(failing)
        .or_else(|| runs.iter().copied().find(failing));
    let first_error = runs
        .iter()
        .copied()
        .find(|e| e.verdict == Some(Verdict::Error));
    // Without any run in the timeline (an entry recorded before timelines were kept), the
    // history's own figure is all there is.
    let first_failing_run = runs
        .iter()
        .copied()
        .find(failing)
        .map(|e| e.at.0)
        .or_else(|| {
            runs.is_empty()
                .then(|| entry.failure_detected_at.as_ref().map(|t| t.0))
                .flatten()
        });
    Findings {
        release,
        entry,
        started_at,
        restored_at,
        max_weight,
        budget_burned: any.then_some(burned),
        budget_period,
        first_bad_sample: first_bad_sample.or(first_failing_run),
        first_failing_run,
        first_failure,
        first_error,
    }
}

fn clock(at: Timestamp) -> String {
    at.strftime("%Y-%m-%d %H:%M:%S").to_string()
}

fn window_text(window: &TimelineWindow) -> String {
    let mut text = format!("{} ", window.window);
    match window.burn_rate {
        Some(burn) => {
            let _ = write!(
                text,
                "burn {} of {}x",
                format_burn(burn),
                format_number(window.max)
            );
        }
        None => text.push_str("no burn rate"),
    }
    if let Some(requests) = window.requests {
        let _ = write!(text, " ({} requests)", format_count(requests));
    }
    text
}

/// How a revision's release ended, in lower-case words (`rolled back`).
pub fn outcome_words(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Promoted => "promoted",
        Outcome::RolledBack => "rolled back",
        Outcome::Aborted => "aborted",
        Outcome::Superseded => "superseded",
    }
}

fn action_words(action: Option<ManualAction>) -> &'static str {
    match action {
        Some(ManualAction::Abort) => "Abort",
        Some(ManualAction::Promote) => "Promote",
        Some(ManualAction::PromoteFull) => "Full promotion",
        Some(ManualAction::Retry) => "Retry",
        None => "A request",
    }
}

/// What one timeline entry says, in words, as a sentence.
pub fn event_text(entry: &TimelineEntry) -> String {
    let text = event_words(entry);
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

fn event_words(entry: &TimelineEntry) -> String {
    match entry.kind {
        TimelineKind::CanaryCreated => entry
            .message
            .clone()
            .unwrap_or_else(|| "canary created".into()),
        TimelineKind::CanaryAvailable => "canary available; steps begin".into(),
        TimelineKind::Step => match (entry.from_step, entry.from_weight, entry.count) {
            (Some(from_step), Some(from_weight), Some(count)) => format!(
                "{count} steps, {from_step} to {}: {from_weight}% to {}% of traffic on the canary",
                entry.step.unwrap_or_default(),
                entry.weight.unwrap_or_default()
            ),
            _ => format!(
                "step {}: {}% of traffic on the canary",
                entry.step.unwrap_or_default(),
                entry.weight.unwrap_or_default()
            ),
        },
        TimelineKind::Analysis | TimelineKind::FirstFailure
            if entry.verdict == Some(Verdict::Error) =>
        {
            // An errored run has no numbers to show: what the error was is the story.
            let mut text = match (entry.kind, entry.count) {
                (TimelineKind::FirstFailure, _) => "**First analysis error**".to_string(),
                (_, Some(count)) => format!("{count} analysis runs, worst Error"),
                (_, None) => "analysis Error".to_string(),
            };
            let _ = write!(
                text,
                ": {}",
                entry.message.as_deref().unwrap_or("no error recorded")
            );
            if let (Some(consecutive), Some(limit)) = (entry.consecutive, entry.limit) {
                let _ = write!(text, " ({consecutive}/{limit} in a row)");
            }
            text
        }
        TimelineKind::Analysis | TimelineKind::FirstFailure => {
            let verdict = entry.verdict.map_or("?".into(), |v| v.to_string());
            let mut text = match entry.count {
                Some(count) => format!("{count} analysis runs, worst {verdict}"),
                None => format!("analysis {verdict}"),
            };
            if entry.kind == TimelineKind::FirstFailure {
                text = format!("**First failing analysis**: {verdict}");
            }
            if let Some(canary) = &entry.canary {
                let _ = write!(text, "; canary {}", window_text(canary));
            }
            if let Some(stable) = &entry.stable {
                let _ = write!(text, "; stable {}", window_text(stable));
            }
            if let Some(check) = &entry.check {
                let value = check.value.map_or("no value".into(), format_number);
                let _ = write!(text, "; check {} {value}", check.name);
            }
            if let (Some(consecutive), Some(limit)) = (entry.consecutive, entry.limit) {
                let _ = write!(text, " ({consecutive}/{limit} in a row)");
            }
            text
        }
        TimelineKind::Request => format!(
            "{} requested by {}",
            action_words(entry.action),
            entry.by.as_deref().unwrap_or("an unknown user")
        ),
        TimelineKind::TrafficOnStable => "all traffic back on the stable".into(),
        TimelineKind::CanaryScaledDown => "canary scaled down".into(),
    }
}

/// The post-mortem draft as Markdown: what the status recorded (title, summary, timeline,
/// detection, the queries), then the sections people write (contributing factors, actions).
pub fn markdown(findings: &Findings<'_>) -> String {
    let mut out = String::new();
    title(&mut out, findings);
    summary(&mut out, findings);
    timeline(&mut out, findings);
    detection(&mut out, findings);
    queries(&mut out, findings);
    let _ = writeln!(
        out,
        "## Contributing factors\n\n_What made this change fail, and what let it reach the canary? Describe systems and conditions, not people._\n"
    );
    let _ = writeln!(
        out,
        "## Action items\n\n| Action | Owner | Tracking |\n|---|---|---|\n| | | |"
    );
    out
}

/// The title and the line saying what this draft is.
fn title(out: &mut String, findings: &Findings<'_>) {
    let release = findings.release;
    let entry = findings.entry;
    let namespace = release.metadata.namespace.as_deref().unwrap_or_default();
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let _ = writeln!(
        out,
        "# Post-mortem draft: {name} {} {} ({})\n",
        entry.revision,
        outcome_words(entry.outcome),
        entry.roadmap_item
    );
    let _ = writeln!(
        out,
        "_A blameless draft from `status.history` of Release {namespace}/{name}, written by `waymark postmortem`. Times are UTC; +offsets count from the canary's start. Edit freely._\n"
    );
}

/// Summary: the item, revision, outcome, duration and impact.
fn summary(out: &mut String, findings: &Findings<'_>) {
    let entry = findings.entry;
    let roadmap = &findings.release.spec.roadmap;
    let same_item = roadmap.item == entry.roadmap_item;
    let _ = writeln!(out, "## Summary\n");
    let mut item = format!("- **Roadmap item:** {}", entry.roadmap_item);
    if same_item {
        if let Some(title) = &roadmap.title {
            let _ = write!(item, " — {title}");
        }
        if let Some(url) = &roadmap.url {
            let _ = write!(item, " (<{url}>)");
        }
    }
    let tags: Vec<String> = [
        entry.horizon.map(|h| format!("horizon {h}")),
        entry.kind.map(|k| format!("kind {k}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !tags.is_empty() {
        let _ = write!(item, "; {}", tags.join(", "));
    }
    let _ = writeln!(out, "{item}");
    let _ = writeln!(out, "- **Revision:** {}", entry.revision);
    let _ = writeln!(
        out,
        "- **Outcome:** {} ({}){}",
        outcome_words(entry.outcome),
        entry.reason,
        entry
            .message
            .as_deref()
            .map(|m| format!(": {m}"))
            .unwrap_or_default()
    );
    match findings.started_at {
        Some(started) => {
            let _ = writeln!(
                out,
                "- **Duration:** {}, from {} (canary start) to {} (traffic back on the stable)",
                span(started, findings.restored_at),
                clock(started),
                clock(findings.restored_at)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- **Duration:** unknown (no start recorded); ended {}",
                clock(findings.restored_at)
            );
        }
    }
    let weight = findings
        .max_weight
        .map_or("an unrecorded share".into(), |w| format!("at most {w}%"));
    let budget = findings.budget_burned.map_or(
        "the error budget burned is unknown (no analysis numbers recorded)".into(),
        |burned| {
            format!(
                "about {} of the {} error budget burned by the canary (upper estimate)",
                format_percent(burned),
                crate::analysis::format::format_period(findings.budget_period)
            )
        },
    );
    let _ = writeln!(
        out,
        "- **Impact:** {weight} of the traffic on the canary; {budget}\n"
    );
}

/// Timeline: every recorded event, with its offset from the canary's start.
fn timeline(out: &mut String, findings: &Findings<'_>) {
    let entry = findings.entry;
    let _ = writeln!(out, "## Timeline (UTC)\n");
    if entry.timeline.is_empty() {
        let _ = writeln!(
            out,
            "No timeline was recorded for this revision; only its start and end are known.\n"
        );
    } else {
        let _ = writeln!(out, "| Time (UTC) | + | What happened |\n|---|---|---|");
        let origin = findings
            .started_at
            .unwrap_or_else(|| entry.timeline[0].at.0);
        for event in &entry.timeline {
            let time = match &event.until {
                Some(until) => format!("{} – {}", clock(event.at.0), clock(until.0)),
                None => clock(event.at.0),
            };
            let _ = writeln!(
                out,
                "| {time} | +{} | {} |",
                span(origin, event.at.0),
                event_text(event).replace('|', "\\|")
            );
        }
        out.push('\n');
    }
}

/// Detection: from the first bad sample to traffic back on the stable.
fn detection(out: &mut String, findings: &Findings<'_>) {
    let _ = writeln!(out, "## Detection\n");
    let line = |what: &str, at: Option<Timestamp>, origin: Option<Timestamp>| match (at, origin) {
        (Some(at), Some(origin)) => format!("{what}: {} (+{})", clock(at), span(origin, at)),
        (Some(at), None) => format!("{what}: {}", clock(at)),
        (None, _) => format!("{what}: not recorded"),
    };
    let origin = findings.started_at;
    let _ = writeln!(
        out,
        "- {}",
        line(
            "First bad sample (a canary window above its limit)",
            findings.first_bad_sample,
            origin
        )
    );
    if let Some(error) = findings.first_error {
        let _ = writeln!(
            out,
            "- {}: {}",
            line("First analysis error", Some(error.at.0), origin),
            error.message.as_deref().unwrap_or("no error recorded")
        );
    }
    let _ = writeln!(
        out,
        "- {}",
        line("First failing analysis", findings.first_failing_run, origin)
    );
    let _ = writeln!(
        out,
        "- {}",
        line(
            "Traffic back on the stable",
            Some(findings.restored_at),
            origin
        )
    );
    if let Some(bad) = findings.first_bad_sample {
        if let Some(failing) = findings.first_failing_run {
            let _ = writeln!(
                out,
                "- From the first bad sample to the first failing analysis: {}",
                span(bad, failing)
            );
        }
        let _ = writeln!(
            out,
            "- From the first bad sample to traffic back on the stable: {}",
            span(bad, findings.restored_at)
        );
    }
    out.push('\n');
}

/// The queries and their values at the first failing (or erroring) analysis.
fn queries(out: &mut String, findings: &Findings<'_>) {
    let _ = writeln!(out, "## The queries and their values\n");
    let with_queries = |entry: &&TimelineEntry| entry.kind == TimelineKind::FirstFailure;
    let shown = findings
        .first_failure
        .filter(with_queries)
        .or_else(|| findings.first_error.filter(with_queries));
    match shown {
        Some(failure) => {
            if failure.verdict == Some(Verdict::Error) {
                let _ = writeln!(
                    out,
                    "At the first analysis error ({}): {}\n",
                    clock(failure.at.0),
                    failure.message.as_deref().unwrap_or("no error recorded")
                );
            } else {
                let _ = writeln!(
                    out,
                    "At the first failing analysis ({}):\n",
                    clock(failure.at.0)
                );
            }
            for (role, window) in [("Canary", &failure.canary), ("Stable", &failure.stable)] {
                let Some(window) = window else { continue };
                let ratio = window
                    .error_ratio
                    .map_or("no error ratio".into(), format_percent);
                let _ = writeln!(out, "- {role}, {}; {ratio} errors:", window_text(window));
                for query in [&window.error_query, &window.total_query]
                    .into_iter()
                    .flatten()
                {
                    let _ = writeln!(out, "  ```promql\n  {query}\n  ```");
                }
            }
            if let Some(check) = &failure.check {
                let limits: Vec<String> = [
                    check.max.map(|max| format!("max {}", format_number(max))),
                    check.min.map(|min| format!("min {}", format_number(min))),
                ]
                .into_iter()
                .flatten()
                .collect();
                let value = check.value.map_or("no value".into(), format_number);
                let _ = writeln!(
                    out,
                    "- Check {}: {value} against {}:",
                    check.name,
                    limits.join(" and ")
                );
                if let Some(query) = &check.query {
                    let _ = writeln!(out, "  ```promql\n  {query}\n  ```");
                }
            }
            out.push('\n');
        }
        None => {
            let _ = writeln!(
                out,
                "No failing analysis was recorded with its queries for this revision.\n"
            );
        }
    }
}

/// The post-mortem's facts as JSON, for tools that write their own report.
pub fn json(findings: &Findings<'_>) -> serde_json::Value {
    let entry = findings.entry;
    let release = findings.release;
    let roadmap = &release.spec.roadmap;
    let same_item = roadmap.item == entry.roadmap_item;
    let seconds = |from: Option<Timestamp>, to: Option<Timestamp>| match (from, to) {
        (Some(from), Some(to)) => Some(to.as_second() - from.as_second()),
        _ => None,
    };
    json!({
        "release": release.metadata.name,
        "namespace": release.metadata.namespace,
        "revision": entry.revision,
        "roadmap": {
            "item": entry.roadmap_item,
            "title": if same_item { roadmap.title.clone() } else { None },
            "url": if same_item { roadmap.url.clone() } else { None },
            "horizon": entry.horizon,
            "kind": entry.kind,
        },
        "outcome": entry.outcome,
        "reason": entry.reason,
        "message": entry.message,
        "startedAt": findings.started_at,
        "restoredAt": findings.restored_at,
        "durationSeconds": seconds(findings.started_at, Some(findings.restored_at)),
        "impact": {
            "maxCanaryWeight": findings.max_weight,
            "errorBudgetBurned": findings.budget_burned,
            "budgetPeriod": crate::analysis::format::format_period(findings.budget_period),
        },
        "detection": {
            "firstBadSampleAt": findings.first_bad_sample,
            "firstAnalysisErrorAt": findings.first_error.map(|e| e.at.0),
            "firstAnalysisError": findings.first_error.and_then(|e| e.message.clone()),
            "firstFailingRunAt": findings.first_failing_run,
            "trafficOnStableAt": findings.restored_at,
            "badSampleToFailingRunSeconds": seconds(findings.first_bad_sample, findings.first_failing_run),
            "badSampleToStableSeconds": seconds(findings.first_bad_sample, Some(findings.restored_at)),
        },
        "timeline": entry.timeline,
        "contributingFactors": [],
        "actionItems": [],
    })
}

#[cfg(test)]
pub(crate) mod fixtures {
    //! Fixed Releases for the post-mortem goldens, recorded with the timeline API the rollout
    //! core uses.
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use crate::api::{
        AnalysisStatus, CheckResult, Horizon, ManualAction, Outcome, Phase, Release, RoadmapKind,
        RoleAnalysis, Verdict, WindowResult,
    };
    use crate::rollout::history::entry;
    use crate::rollout::timeline::{self, analysis_run, first_failure};

    /// `2026-11-21T12:00:00Z` plus `seconds`.
    pub fn at(seconds: i64) -> Time {
        let start: Timestamp = "2026-11-21T12:00:00Z".parse().unwrap();
        Time(
            start
                .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(seconds))
                .unwrap(),
        )
    }

    fn window(name: &str, burn: f64, requests: f64, service: &str) -> WindowResult {
        WindowResult {
            window: name.into(),
            error_ratio: Some(burn * 0.001),
            requests: Some(requests),
            burn_rate: Some(burn),
            max: 14.4,
            note: None,
            error_query: format!(
                "sum(rate(http_requests_total{{namespace=\"shop\",service=\"{service}\",code=~\"5..\"}}[{name}]))"
            ),
            total_query: format!(
                "sum(rate(http_requests_total{{namespace=\"shop\",service=\"{service}\"}}[{name}]))"
            ),
        }
    }

    /// A folded analysis at `seconds` with the canary burning `long`/`short` over 5m/1m.
    pub fn analysis(
        seconds: i64,
        verdict: Verdict,
        long: f64,
        short: f64,
        failures: i32,
    ) -> AnalysisStatus {
        let canary = vec![
            window("5m", long, 4_812.0, "checkout-canary"),
            window("1m", short, 962.0, "checkout-canary"),
        ];
        let stable = vec![
            window("5m", 0.4, 43_310.0, "checkout-stable"),
            window("1m", 0.3, 8_660.0, "checkout-stable"),
        ];
        AnalysisStatus {
            verdict,
            last_run_at: Some(at(seconds)),
            revision: Some("6f9c7d".into()),
            summary: Some(format!("canary burns {:.1}x of 14.4x over 5m and 1m (4,812 requests)", long.min(short))),
            canary: Some(RoleAnalysis { verdict, service: "checkout-canary".into(), windows: canary }),
            stable: Some(RoleAnalysis { verdict: Verdict::Passing, service: "checkout-stable".into(), windows: stable }),
            checks: vec![CheckResult {
                name: "p99-latency".into(),
                verdict: Verdict::Passing,
                value: Some(0.18),
                max: Some(0.25),
                min: None,
                query: "histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace=\"shop\",service=\"checkout-canary\"}[5m])))".into(),
                note: None,
            }],
            consecutive_failures: failures,
            error_budget_remaining: Some(0.73),
            ..Default::default()
        }
    }

    /// The example checkout Release, with horizon and kind, after analysis rolled back
    /// revision 6f9c7d: 10% for the 2m soak, 50%, then the error rate jumps at +6m10s.
    pub fn rolled_back() -> Release {
        let mut release = crate::cli::fixtures::release_in(Phase::RolledBack, None);
        release.spec.roadmap.horizon = Some(Horizon::Now);
        release.spec.roadmap.kind = Some(RoadmapKind::Feature);
        let limits = release.spec.analysis.clone();
        let mut lines = Vec::new();
        timeline::push(&mut lines, timeline::canary_created(at(0), "6f9c7d"));
        timeline::push(&mut lines, timeline::canary_available(at(40)));
        timeline::push(&mut lines, timeline::step(at(40), 1, 10));
        let mut seconds = 70;
        while seconds <= 340 {
            if seconds == 190 {
                timeline::push(&mut lines, timeline::step(at(160), 3, 50));
            }
            timeline::push(
                &mut lines,
                analysis_run(
                    &analysis(seconds, Verdict::Passing, 0.6, 0.5, 0),
                    limits.as_ref(),
                ),
            );
            seconds += 30;
        }
        // +370s: the short window jumps (a bad sample), the long one is not there yet.
        timeline::push(
            &mut lines,
            analysis_run(
                &analysis(370, Verdict::Passing, 9.8, 31.0, 0),
                limits.as_ref(),
            ),
        );
        timeline::push(
            &mut lines,
            first_failure(
                &analysis(400, Verdict::Failing, 21.3, 33.2, 1),
                limits.as_ref(),
            ),
        );
        timeline::push(
            &mut lines,
            analysis_run(
                &analysis(430, Verdict::Failing, 27.9, 34.0, 2),
                limits.as_ref(),
            ),
        );
        timeline::push(&mut lines, timeline::traffic_on_stable(at(431)));
        timeline::push(&mut lines, timeline::canary_scaled_down(at(436)));
        let mut finished = entry(
            "6f9c7d",
            "PAY-142",
            Outcome::RolledBack,
            Some(at(0)),
            at(431),
            "AnalysisFailing",
            Some("2 failing analyses in a row (failureLimit 2): canary burns 27.9x of 14.4x over 5m and 1m (4,812 requests)".into()),
        );
        finished.failure_detected_at = Some(at(400));
        finished.horizon = Some(Horizon::Now);
        finished.kind = Some(RoadmapKind::Feature);
        finished.timeline = lines;
        let status = release.status.as_mut().unwrap();
        status.stable_revision = Some("5d8b9c".into());
        status.rolled_back_revision = Some("6f9c7d".into());
        status.history = vec![finished];
        release
    }

    /// A run at `seconds` whose queries Prometheus did not answer: an error, no numbers.
    pub fn analysis_error(seconds: i64, errors: i32) -> AnalysisStatus {
        let mut errored = analysis(seconds, Verdict::Error, 0.0, 0.0, 0);
        errored.consecutive_errors = errors;
        errored.failing_since = Some(at(400));
        errored.summary = Some(
            "Prometheus at http://prometheus.monitoring:9090 did not answer within 10s".into(),
        );
        for role in [errored.canary.as_mut(), errored.stable.as_mut()]
            .into_iter()
            .flatten()
        {
            role.verdict = Verdict::Error;
            for window in &mut role.windows {
                window.burn_rate = None;
                window.error_ratio = None;
                window.requests = None;
                window.note = errored.summary.clone();
            }
        }
        errored
    }

    /// Revision 6f9c7d at 10% whose first bad run did not reach Prometheus (+6m40s, a
    /// timeout), then burned past its limit twice and was rolled back: recorded the way the
    /// rollout core records it, the errored run and the first failing one each with queries.
    pub fn errored_then_failing() -> Release {
        let mut release = crate::cli::fixtures::release_in(Phase::RolledBack, None);
        let limits = release.spec.analysis.clone();
        let mut lines = Vec::new();
        timeline::push(&mut lines, timeline::canary_created(at(0), "6f9c7d"));
        timeline::push(&mut lines, timeline::canary_available(at(40)));
        timeline::push(&mut lines, timeline::step(at(40), 1, 10));
        for seconds in [70, 100] {
            timeline::push(
                &mut lines,
                analysis_run(
                    &analysis(seconds, Verdict::Passing, 0.6, 0.5, 0),
                    limits.as_ref(),
                ),
            );
        }
        timeline::push(
            &mut lines,
            first_failure(&analysis_error(130, 1), limits.as_ref()),
        );
        timeline::push(
            &mut lines,
            first_failure(
                &analysis(160, Verdict::Failing, 21.3, 33.2, 1),
                limits.as_ref(),
            ),
        );
        timeline::push(
            &mut lines,
            analysis_run(
                &analysis(190, Verdict::Failing, 27.9, 34.0, 2),
                limits.as_ref(),
            ),
        );
        timeline::push(&mut lines, timeline::traffic_on_stable(at(191)));
        timeline::push(&mut lines, timeline::canary_scaled_down(at(196)));
        let mut finished = entry(
            "6f9c7d",
            "PAY-142",
            Outcome::RolledBack,
            Some(at(0)),
            at(191),
            "AnalysisFailing",
            Some("2 failing analyses in a row (failureLimit 2): canary burns 27.9x of 14.4x over 5m and 1m (4,812 requests)".into()),
        );
        finished.failure_detected_at = Some(at(130));
        finished.timeline = lines;
        let status = release.status.as_mut().unwrap();
        status.stable_revision = Some("5d8b9c".into());
        status.rolled_back_revision = Some("6f9c7d".into());
        status.history = vec![finished];
        release
    }

    /// A release whose canary a person aborted while analysis was inconclusive, and an older
    /// promoted revision without a timeline.
    pub fn aborted() -> Release {
        let mut release = crate::cli::fixtures::release_in(Phase::RolledBack, None);
        let limits = release.spec.analysis.clone();
        let mut lines = Vec::new();
        timeline::push(&mut lines, timeline::canary_created(at(0), "7a8b9c"));
        timeline::push(&mut lines, timeline::canary_available(at(30)));
        timeline::push(&mut lines, timeline::step(at(30), 1, 10));
        let mut inconclusive = analysis(60, Verdict::Inconclusive, 0.0, 0.0, 0);
        inconclusive.consecutive_inconclusive = 1;
        inconclusive.summary =
            Some("canary has 12 requests in 1m, fewer than minRequests 100".into());
        if let Some(canary) = inconclusive.canary.as_mut() {
            for window in &mut canary.windows {
                window.burn_rate = None;
                window.error_ratio = None;
                window.requests = Some(12.0);
            }
        }
        timeline::push(&mut lines, analysis_run(&inconclusive, limits.as_ref()));
        timeline::push(
            &mut lines,
            timeline::request(
                at(75),
                ManualAction::Abort,
                Some("alice@example.com".into()),
            ),
        );
        timeline::push(&mut lines, timeline::traffic_on_stable(at(76)));
        timeline::push(&mut lines, timeline::canary_scaled_down(at(80)));
        let mut finished = entry(
            "7a8b9c",
            "PAY-142",
            Outcome::Aborted,
            Some(at(0)),
            at(76),
            "Aborted",
            Some("aborted by alice@example.com".into()),
        );
        finished.timeline = lines;
        let older = entry(
            "5d8b9c",
            "PAY-139",
            Outcome::Promoted,
            Some(at(-86_400)),
            at(-84_000),
            "Promoted",
            None,
        );
        release.status.as_mut().unwrap().history = vec![finished, older];
        release
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{aborted, analysis_error, at, errored_then_failing, rolled_back};
    use super::*;
    use crate::cli::golden::assert_golden;

    #[test]
    fn picks_the_newest_rollback_or_the_revision_asked_for() {
        let release = aborted();
        assert_eq!(pick(&release, None).unwrap().revision, "7a8b9c");
        assert_eq!(pick(&release, Some("5d8b9c")).unwrap().revision, "5d8b9c");
        let error = pick(&release, Some("000000")).unwrap_err().to_string();
        assert_eq!(
            error,
            "release shop/checkout has no revision 000000 in status.history (it keeps the last ten revisions): it holds 7a8b9c (Aborted), 5d8b9c (Promoted)"
        );
        let mut healthy = aborted();
        healthy.status.as_mut().unwrap().history.remove(0);
        let error = pick(&healthy, None).unwrap_err().to_string();
        assert!(
            error.contains("no rolled-back or aborted revision"),
            "{error}"
        );
        assert!(
            error.ends_with("pass --revision REV for another one"),
            "{error}"
        );
    }

    #[test]
    fn detection_runs_from_the_first_bad_sample_to_traffic_on_stable() {
        let release = rolled_back();
        let findings = findings(&release, pick(&release, None).unwrap());
        assert_eq!(findings.first_bad_sample, Some(at(370).0));
        assert_eq!(findings.first_failing_run, Some(at(400).0));
        assert_eq!(findings.restored_at, at(431).0);
        assert_eq!(findings.max_weight, Some(50));
        // 10% from +70s to +160s at burn 0.6, 50% until +370s at 0.6, then 50% at 31, 33.2
        // and 34 for 30s, 30s and 1s, over 30 days.
        let expected =
            (0.1 * 0.6 * 90.0 + 0.5 * 0.6 * 210.0 + 0.5 * (31.0 * 30.0 + 33.2 * 30.0 + 34.0 * 1.0))
                / (30.0 * 86_400.0);
        let burned = findings.budget_burned.unwrap();
        assert!((burned - expected).abs() < 1e-9, "{burned} vs {expected}");
    }

    #[test]
    fn a_rollback_draft_matches_its_golden_files() {
        let release = rolled_back();
        let findings = findings(&release, pick(&release, None).unwrap());
        let draft = markdown(&findings);
        assert!(draft.contains("## Contributing factors"));
        assert_golden("postmortem_rollback.md", &draft);
        let json = serde_json::to_string_pretty(&json(&findings)).unwrap() + "\n";
        assert_golden("postmortem_rollback.json", &json);
    }

    #[test]
    fn an_abort_names_who_asked_and_a_revision_without_timeline_still_renders() {
        let release = aborted();
        let draft = markdown(&findings(&release, pick(&release, None).unwrap()));
        assert!(
            draft.contains("Abort requested by alice@example.com"),
            "{draft}"
        );
        assert_golden("postmortem_abort.md", &draft);
        let older = markdown(&findings(&release, pick(&release, Some("5d8b9c")).unwrap()));
        assert!(older.contains("No timeline was recorded"), "{older}");
        assert_golden("postmortem_no_timeline.md", &older);
    }

    #[test]
    fn an_errored_run_is_reported_as_an_error_and_no_bad_sample() {
        let release = errored_then_failing();
        let findings = findings(&release, pick(&release, None).unwrap());
        assert_eq!(
            findings.first_bad_sample,
            Some(at(160).0),
            "the first value past its limit, not the run that could not be judged"
        );
        assert_eq!(findings.first_failing_run, Some(at(160).0));
        assert_eq!(findings.first_error.map(|e| e.at.0), Some(at(130).0));
        let draft = markdown(&findings);
        for line in [
            "| 2026-11-21 12:02:10 | +2m10s | **First analysis error**: Prometheus at http://prometheus.monitoring:9090 did not answer within 10s (1/4 in a row) |",
            "- First analysis error: 2026-11-21 12:02:10 (+2m10s): Prometheus at http://prometheus.monitoring:9090 did not answer within 10s",
            "- First bad sample (a canary window above its limit): 2026-11-21 12:02:40 (+2m40s)",
            "- First failing analysis: 2026-11-21 12:02:40 (+2m40s)",
            "At the first failing analysis (2026-11-21 12:02:40):",
        ] {
            assert!(draft.contains(line), "{line}\nmissing from\n{draft}");
        }
        assert_golden("postmortem_error_then_failing.md", &draft);
        let json = json(&findings);
        assert_eq!(
            json["detection"]["firstAnalysisError"],
            "Prometheus at http://prometheus.monitoring:9090 did not answer within 10s"
        );
        assert_eq!(
            json["detection"]["firstFailingRunAt"],
            "2026-11-21T12:02:40Z"
        );
    }

    #[test]
    fn a_canary_rolled_back_on_errors_alone_has_no_bad_sample() {
        let mut release = errored_then_failing();
        let entry = &mut release.status.as_mut().unwrap().history[0];
        let limits = None;
        entry.timeline.retain(|e| {
            !matches!(e.kind, TimelineKind::Analysis | TimelineKind::FirstFailure)
                || e.verdict != Some(Verdict::Failing)
        });
        entry.timeline.insert(
            entry.timeline.len() - 2,
            crate::rollout::timeline::analysis_run(&analysis_error(160, 2), limits),
        );
        let findings = findings(&release, pick(&release, None).unwrap());
        assert_eq!(findings.first_bad_sample, None);
        assert_eq!(findings.first_failing_run, None);
        let draft = markdown(&findings);
        assert!(
            draft.contains("- First bad sample (a canary window above its limit): not recorded"),
            "{draft}"
        );
        assert!(
            draft.contains("At the first analysis error (2026-11-21 12:02:10): Prometheus at http://prometheus.monitoring:9090 did not answer within 10s"),
            "{draft}"
        );
    }

    #[test]
    fn a_held_canary_s_impact_is_the_weight_it_was_held_at() {
        use crate::rollout::fixtures::{ReleaseBuilder, Sim, V2, at, run};
        // 10%, a 2m pause, 50%: every analysis without data for five minutes, so the canary
        // stays at 10%; then it fails twice and is rolled back.
        let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
        if let Some(analysis) = sim.release.spec.analysis.as_mut() {
            analysis.inconclusive_limit = 100;
        }
        sim.settle();
        for n in 1..=10 {
            sim.observed.analysis = Some(run(V2, Verdict::Inconclusive, at(30 * n)));
            sim.tick(30);
            sim.settle();
        }
        for n in 11..=12 {
            sim.observed.analysis = Some(run(V2, Verdict::Failing, at(30 * n)));
            sim.tick(30);
            sim.settle();
        }
        let release = &sim.release;
        assert_eq!(
            release.status.as_ref().unwrap().phase,
            Some(crate::api::Phase::RolledBack)
        );
        let findings = findings(release, pick(release, None).unwrap());
        assert_eq!(findings.max_weight, Some(10));
        let draft = markdown(&findings);
        assert!(
            draft.contains("- **Impact:** at most 10% of the traffic on the canary"),
            "{draft}"
        );
        assert!(!draft.contains("50% of traffic"), "{draft}");
    }
}
