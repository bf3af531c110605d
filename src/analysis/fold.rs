//! Folding an [`AnalysisRun`] into `status.analysis`, and reading a failure out of it: the
//! consecutive-run counters the limits act on, shared by the rollout core and replay.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::AnalysisRun;
use super::format::format_burn;
use crate::api::{AnalysisStatus, Verdict};

/// The status after `run`, with the consecutive counters moved on when `count` is true (runs
/// made while the canary is in its steps); a run of another revision than the previous
/// status restarts the counters.
pub fn fold(previous: Option<&AnalysisStatus>, run: &AnalysisRun, count: bool) -> AnalysisStatus {
    let same_revision = previous.is_some_and(|p| p.revision == run.revision);
    let (mut failures, mut inconclusive, mut errors) = match previous {
        Some(p) if same_revision => (
            p.consecutive_failures,
            p.consecutive_inconclusive,
            p.consecutive_errors,
        ),
        _ => (0, 0, 0),
    };
    if count {
        // Each counter counts runs in a row with its verdict: any other verdict breaks the run.
        let bump = |counter: i32, hit: bool| if hit { counter.saturating_add(1) } else { 0 };
        failures = bump(failures, run.verdict == Verdict::Failing);
        inconclusive = bump(inconclusive, run.verdict == Verdict::Inconclusive);
        errors = bump(errors, run.verdict == Verdict::Error);
    }
    let failing = |verdict: Verdict| matches!(verdict, Verdict::Failing | Verdict::Error);
    let failing_since = if failing(run.verdict) {
        previous
            .filter(|p| same_revision && failing(p.verdict))
            .and_then(|p| p.failing_since.clone())
            .or(Some(Time(run.ran_at)))
    } else {
        None
    };
    AnalysisStatus {
        verdict: run.verdict,
        failing_since,
        last_run_at: Some(Time(run.ran_at)),
        revision: run.revision.clone(),
        summary: Some(run.summary.clone()),
        burn: run.burn.clone(),
        canary: run.canary.clone(),
        stable: run.stable.clone(),
        comparison: run.comparison.clone(),
        checks: run.checks.clone(),
        consecutive_failures: failures,
        consecutive_inconclusive: inconclusive,
        consecutive_errors: errors,
        // The budget is the whole service's: a run that could not read it keeps the last figure.
        error_budget_remaining: run
            .error_budget_remaining
            .or_else(|| previous.and_then(|p| p.error_budget_remaining)),
    }
}

/// What failed in `analysis`, in words and numbers: each broken window (query, value, limit,
/// window) and check, after the run's one-line summary.
pub fn failure_detail(analysis: &AnalysisStatus) -> String {
    let mut parts = Vec::new();
    if let Some(summary) = analysis.summary.as_deref().filter(|s| !s.is_empty()) {
        parts.push(summary.to_string());
    }
    for window in analysis.canary.iter().flat_map(|c| c.windows.iter()) {
        match window.burn_rate {
            Some(burn) if burn > window.max => parts.push(format!(
                "window {}: burn {} above limit {} (query {})",
                window.window,
                format_burn(burn),
                format_burn(window.max),
                window.error_query
            )),
            None if analysis.verdict == Verdict::Error => {
                if let Some(note) = &window.note {
                    parts.push(format!(
                        "window {}: {note} (query {})",
                        window.window, window.error_query
                    ));
                }
            }
            _ => {}
        }
    }
    for check in analysis
        .checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Failing | Verdict::Error))
    {
        let value = check
            .value
            .map_or_else(|| "no value".to_string(), |v| format!("{v}"));
        let mut limits = Vec::new();
        if let Some(max) = check.max {
            limits.push(format!("max {max}"));
        }
        if let Some(min) = check.min {
            limits.push(format!("min {min}"));
        }
        let note = check
            .note
            .as_deref()
            .map(|n| format!(", {n}"))
            .unwrap_or_default();
        parts.push(format!(
            "check {}: {value} against {}{note} (query {})",
            check.name,
            limits.join(" and "),
            check.query
        ));
    }
    for comparison in analysis
        .comparison
        .iter()
        .filter(|c| c.verdict == Verdict::Failing)
    {
        parts.push(format!(
            "window {} against stable: {}",
            comparison.window, comparison.detail
        ));
    }
    if parts.is_empty() {
        format!("latest analysis {}", analysis.verdict)
    } else {
        parts.join("; ")
    }
}
