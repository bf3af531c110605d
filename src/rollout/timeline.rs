//! A canary's timeline, kept for its post-mortem: bounded so that a Release holding ten
//! histories stays far below etcd's object size limit.
//!
//! The rollout core records entries with [`push`] into `status.timeline` while the canary
//! runs, built with the constructors here; when the canary ends its timeline moves into the
//! revision's history entry (`entry.timeline = std::mem::take(&mut status.timeline)`), and
//! what happens after that (traffic back on the stable, the canary scaled down) is pushed onto
//! `status.history[0].timeline`.
//!
//! The bound: at most [`TIMELINE_LIMIT`] entries. Past it, the oldest routine entries (steps
//! and analysis runs) are merged with their neighbour of the same kind, preferring neighbours
//! with the same verdict; a merged entry keeps the first time, the last time (`until`), how
//! many it stands for (`count`) and the numbers of its worst run. Entries that tell the
//! story (canary created or available, the first failure, requests, traffic back on stable,
//! scale-down) are never merged, and are dropped only if nothing else is left to merge.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::analysis::verdict::severity;
use crate::api::{
    Analysis, AnalysisStatus, ManualAction, RoleAnalysis, TimelineCheck, TimelineEntry,
    TimelineKind, TimelineWindow, Verdict,
};

/// Most entries one timeline keeps.
pub const TIMELINE_LIMIT: usize = 50;
/// Longest message an entry keeps, in characters; longer ones end in `…`.
pub const MESSAGE_LIMIT: usize = 240;
/// Longest query an entry keeps, in characters; longer ones end in `…`.
pub const QUERY_LIMIT: usize = 2048;

/// Appends `entry` (its message and queries cut to [`MESSAGE_LIMIT`] and [`QUERY_LIMIT`];
/// queries kept on [`TimelineKind::FirstFailure`] only), then merges the oldest routine
/// entries until at most [`TIMELINE_LIMIT`] remain.
pub fn push(timeline: &mut Vec<TimelineEntry>, mut entry: TimelineEntry) {
    let keep_queries = entry.kind == TimelineKind::FirstFailure;
    entry.message = entry.message.map(|m| cut(&m, MESSAGE_LIMIT));
    for window in [&mut entry.canary, &mut entry.stable].into_iter().flatten() {
        for query in [&mut window.error_query, &mut window.total_query] {
            *query = query
                .take()
                .filter(|_| keep_queries)
                .map(|q| cut(&q, QUERY_LIMIT));
        }
    }
    if let Some(check) = &mut entry.check {
        check.query = check
            .query
            .take()
            .filter(|_| keep_queries)
            .map(|q| cut(&q, QUERY_LIMIT));
    }
    timeline.push(entry);
    while timeline.len() > TIMELINE_LIMIT {
        shrink(timeline);
    }
}

fn cut(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        text.to_string()
    } else {
        let mut short: String = text.chars().take(limit.saturating_sub(1)).collect();
        short.push('…');
        short
    }
}

fn routine(kind: TimelineKind) -> bool {
    matches!(kind, TimelineKind::Step | TimelineKind::Analysis)
}

/// Makes the timeline one entry shorter, oldest first.
fn shrink(timeline: &mut Vec<TimelineEntry>) {
    let pair = |same_verdict: bool| {
        timeline.windows(2).position(|pair| {
            routine(pair[0].kind)
                && pair[0].kind == pair[1].kind
                && (!same_verdict || pair[0].verdict == pair[1].verdict)
        })
    };
    if let Some(index) = pair(true).or_else(|| pair(false)) {
        let later = timeline.remove(index + 1);
        let earlier = &mut timeline[index];
        *earlier = merge(earlier, &later);
        return;
    }
    if let Some(index) = timeline.iter().position(|entry| routine(entry.kind)) {
        timeline.remove(index);
        return;
    }
    // Nothing routine left: keep the first entry (how it began) and drop the next oldest.
    let index = usize::from(timeline.len() > 1);
    timeline.remove(index);
}

/// How close to (or past) its limit an analysis entry's canary was: the worse run to keep.
fn heat(entry: &TimelineEntry) -> f64 {
    entry
        .canary
        .as_ref()
        .and_then(|window| Some(window.burn_rate? / window.max))
        .unwrap_or(f64::NEG_INFINITY)
}

fn merge(earlier: &TimelineEntry, later: &TimelineEntry) -> TimelineEntry {
    let count = earlier.count.unwrap_or(1) + later.count.unwrap_or(1);
    let until = Some(later.until.clone().unwrap_or_else(|| later.at.clone()));
    match earlier.kind {
        TimelineKind::Step => TimelineEntry {
            until,
            count: Some(count),
            from_step: earlier.from_step.or(earlier.step),
            from_weight: earlier.from_weight.or(earlier.weight),
            step: later.step,
            weight: later.weight,
            ..earlier.clone()
        },
        _ => {
            let worse_verdict = |a: Option<Verdict>, b: Option<Verdict>| match (a, b) {
                (Some(a), Some(b)) if severity(b) > severity(a) => Some(b),
                (Some(a), _) => Some(a),
                (None, b) => b,
            };
            let hotter = if heat(later) > heat(earlier) {
                later
            } else {
                earlier
            };
            TimelineEntry {
                at: earlier.at.clone(),
                until,
                count: Some(count),
                verdict: worse_verdict(earlier.verdict, later.verdict),
                consecutive: later.consecutive,
                limit: later.limit,
                ..hotter.clone()
            }
        }
    }
}

fn bare(at: Time, kind: TimelineKind) -> TimelineEntry {
    TimelineEntry {
        at,
        kind,
        until: None,
        count: None,
        step: None,
        weight: None,
        from_step: None,
        from_weight: None,
        verdict: None,
        canary: None,
        stable: None,
        check: None,
        consecutive: None,
        limit: None,
        action: None,
        by: None,
        message: None,
    }
}

/// The canary Deployment was created for `revision`.
pub fn canary_created(at: Time, revision: &str) -> TimelineEntry {
    TimelineEntry {
        message: Some(format!("canary {revision} created")),
        ..bare(at, TimelineKind::CanaryCreated)
    }
}

/// The canary's pods became available and its steps began.
pub fn canary_available(at: Time) -> TimelineEntry {
    bare(at, TimelineKind::CanaryAvailable)
}

/// Step `step` (1-based) began, with `weight` percent on the canary.
pub fn step(at: Time, step: i32, weight: i32) -> TimelineEntry {
    TimelineEntry {
        step: Some(step),
        weight: Some(weight),
        ..bare(at, TimelineKind::Step)
    }
}

/// A person's request, with who made it as the API server authenticated them.
pub fn request(at: Time, action: ManualAction, by: Option<String>) -> TimelineEntry {
    TimelineEntry {
        action: Some(action),
        by,
        ..bare(at, TimelineKind::Request)
    }
}

/// All traffic back on the stable.
pub fn traffic_on_stable(at: Time) -> TimelineEntry {
    bare(at, TimelineKind::TrafficOnStable)
}

/// The canary scaled down to zero.
pub fn canary_scaled_down(at: Time) -> TimelineEntry {
    bare(at, TimelineKind::CanaryScaledDown)
}

/// An analysis run, compact, from the status it was folded into (`analysis`, so the
/// consecutive counters are known) and the spec's limits.
pub fn analysis_run(analysis: &AnalysisStatus, limits: Option<&Analysis>) -> TimelineEntry {
    analysis_entry(analysis, limits, TimelineKind::Analysis, false)
}

/// The first failing (or erroring) run of a streak: like [`analysis_run`], with the resolved
/// queries of its worst windows and check, for the post-mortem's PromQL.
pub fn first_failure(analysis: &AnalysisStatus, limits: Option<&Analysis>) -> TimelineEntry {
    analysis_entry(analysis, limits, TimelineKind::FirstFailure, true)
}

fn analysis_entry(
    analysis: &AnalysisStatus,
    limits: Option<&Analysis>,
    kind: TimelineKind,
    with_queries: bool,
) -> TimelineEntry {
    let at = analysis
        .last_run_at
        .clone()
        .unwrap_or(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH));
    let (consecutive, limit) = match analysis.verdict {
        Verdict::Passing => (None, None),
        Verdict::Failing => (
            Some(analysis.consecutive_failures),
            limits.map(|l| l.failure_limit),
        ),
        Verdict::Error => (
            Some(analysis.consecutive_errors),
            limits.map(|l| l.error_limit),
        ),
        Verdict::Inconclusive => (
            Some(analysis.consecutive_inconclusive),
            limits.map(|l| l.inconclusive_limit),
        ),
    };
    let check = analysis
        .checks
        .iter()
        .find(|check| check.verdict != Verdict::Passing)
        .map(|check| TimelineCheck {
            name: check.name.clone(),
            value: check.value,
            max: check.max,
            min: check.min,
            query: with_queries.then(|| check.query.clone()),
        });
    TimelineEntry {
        verdict: Some(analysis.verdict),
        canary: analysis
            .canary
            .as_ref()
            .and_then(|role| worst_window(role, with_queries)),
        stable: analysis
            .stable
            .as_ref()
            .and_then(|role| worst_window(role, with_queries)),
        check,
        consecutive,
        limit,
        message: analysis.summary.clone(),
        ..bare(at, kind)
    }
}

/// The window nearest to (or furthest past) its limit; without any burn rate, the first
/// window (its request count says why there was none).
fn worst_window(role: &RoleAnalysis, with_queries: bool) -> Option<TimelineWindow> {
    let window = role
        .windows
        .iter()
        .filter_map(|w| Some((w, w.burn_rate? / w.max)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(w, _)| w)
        .or_else(|| role.windows.first())?;
    Some(TimelineWindow {
        window: window.window.clone(),
        burn_rate: window.burn_rate,
        error_ratio: window.error_ratio,
        requests: window.requests,
        max: window.max,
        error_query: with_queries.then(|| window.error_query.clone()),
        total_query: with_queries.then(|| window.total_query.clone()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CheckResult, WindowResult};
    use k8s_openapi::jiff::Timestamp;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(1_800_000_000 + seconds).unwrap())
    }

    fn window(name: &str, burn: f64, query: &str) -> WindowResult {
        WindowResult {
            window: name.into(),
            error_ratio: Some(burn * 0.001),
            requests: Some(4_800.0),
            burn_rate: Some(burn),
            max: 14.4,
            note: None,
            error_query: format!("sum(rate(http_requests_total{{code=~\"5..\"}}[{query}]))"),
            total_query: format!("sum(rate(http_requests_total[{query}]))"),
        }
    }

    /// A folded analysis status at `seconds` with the canary burning `burn` (both windows).
    fn status(seconds: i64, verdict: Verdict, burn: f64) -> AnalysisStatus {
        AnalysisStatus {
            verdict,
            last_run_at: Some(at(seconds)),
            revision: Some("6f9c7d".into()),
            summary: Some(format!(
                "canary burns {burn:.1}x of 14.4x over 5m and 1m (4,800 requests)"
            )),
            canary: Some(RoleAnalysis {
                verdict,
                service: "checkout-canary".into(),
                windows: vec![window("5m", burn, "5m"), window("1m", burn * 1.1, "1m")],
            }),
            stable: Some(RoleAnalysis {
                verdict: Verdict::Passing,
                service: "checkout-stable".into(),
                windows: vec![window("5m", 0.3, "5m"), window("1m", 0.2, "1m")],
            }),
            checks: vec![CheckResult {
                name: "p99-latency".into(),
                verdict: if verdict == Verdict::Failing {
                    Verdict::Failing
                } else {
                    Verdict::Passing
                },
                value: Some(0.31),
                max: Some(0.25),
                min: None,
                query: "histogram_quantile(0.99, sum by (le) (rate(x[5m])))".into(),
                note: None,
            }],
            consecutive_failures: i32::from(verdict == Verdict::Failing),
            error_budget_remaining: Some(0.73),
            ..Default::default()
        }
    }

    fn limits() -> Analysis {
        serde_saphyr::from_str(
            "{prometheus: {address: 'http://p:9090'}, slo: {objective: 99.9, errorQuery: e, totalQuery: t, burnRates: [{long: 5m, short: 1m, max: 14.4}]}}",
        )
        .unwrap()
    }

    #[test]
    fn an_analysis_entry_keeps_the_worst_window_per_role_and_the_limit() {
        let entry = analysis_run(&status(30, Verdict::Failing, 20.0), Some(&limits()));
        assert_eq!(entry.kind, TimelineKind::Analysis);
        assert_eq!(entry.verdict, Some(Verdict::Failing));
        let canary = entry.canary.unwrap();
        assert_eq!(canary.window, "1m", "the 1m window burns hotter");
        assert!((canary.burn_rate.unwrap() - 22.0).abs() < 1e-9);
        assert_eq!(canary.requests, Some(4_800.0));
        assert_eq!(entry.stable.unwrap().window, "5m");
        assert_eq!((entry.consecutive, entry.limit), (Some(1), Some(2)));
        assert_eq!(entry.check.unwrap().name, "p99-latency");
        assert!(canary.error_query.is_none(), "routine runs keep no queries");

        let passing = analysis_run(&status(60, Verdict::Passing, 0.5), Some(&limits()));
        assert_eq!((passing.consecutive, passing.limit), (None, None));
        assert!(passing.check.is_none());
    }

    #[test]
    fn the_first_failure_keeps_its_queries() {
        let mut timeline = Vec::new();
        push(
            &mut timeline,
            first_failure(&status(30, Verdict::Failing, 20.0), Some(&limits())),
        );
        let entry = &timeline[0];
        let canary = entry.canary.as_ref().unwrap();
        assert_eq!(
            canary.error_query.as_deref(),
            Some("sum(rate(http_requests_total{code=~\"5..\"}[1m]))")
        );
        assert!(entry.check.as_ref().unwrap().query.is_some());
        // Any other entry loses queries given to it.
        let mut run = first_failure(&status(60, Verdict::Failing, 20.0), Some(&limits()));
        run.kind = TimelineKind::Analysis;
        push(&mut timeline, run);
        assert!(timeline[1].canary.as_ref().unwrap().error_query.is_none());
        assert!(timeline[1].check.as_ref().unwrap().query.is_none());
    }

    #[test]
    fn long_messages_and_queries_are_cut() {
        let mut timeline = Vec::new();
        let mut entry = first_failure(&status(0, Verdict::Failing, 20.0), Some(&limits()));
        entry.message = Some("x".repeat(1_000));
        if let Some(canary) = entry.canary.as_mut() {
            canary.error_query = Some("q".repeat(5_000));
        }
        push(&mut timeline, entry);
        let message = timeline[0].message.as_deref().unwrap();
        assert_eq!(message.chars().count(), MESSAGE_LIMIT);
        assert!(message.ends_with('…'));
        let query = timeline[0].canary.as_ref().unwrap().error_query.as_deref();
        assert_eq!(query.unwrap().chars().count(), QUERY_LIMIT);
    }

    #[test]
    fn below_the_limit_every_entry_is_kept_in_order() {
        let mut timeline = Vec::new();
        push(&mut timeline, canary_created(at(0), "6f9c7d"));
        push(&mut timeline, canary_available(at(20)));
        push(&mut timeline, step(at(20), 1, 10));
        for index in 0..40 {
            push(
                &mut timeline,
                analysis_run(&status(30 + 30 * index, Verdict::Passing, 0.5), None),
            );
        }
        assert_eq!(timeline.len(), 43);
        assert!(timeline.iter().all(|entry| entry.count.is_none()));
        assert!(timeline.windows(2).all(|pair| pair[0].at.0 <= pair[1].at.0));
    }

    #[test]
    fn a_long_canary_is_bounded_with_the_story_kept_and_nothing_lost_from_the_counts() {
        let mut timeline = Vec::new();
        push(&mut timeline, canary_created(at(0), "6f9c7d"));
        push(&mut timeline, canary_available(at(0)));
        let mut pushed_runs = 0;
        let mut pushed_steps = 0;
        for index in 0..1_000i64 {
            if index % 100 == 0 {
                push(
                    &mut timeline,
                    step(
                        at(30 * index),
                        (index / 100 + 1) as i32,
                        (index / 10) as i32,
                    ),
                );
                pushed_steps += 1;
            }
            // Alternating verdicts are the worst case for merging like with like.
            let verdict = if index % 3 == 0 {
                Verdict::Inconclusive
            } else {
                Verdict::Passing
            };
            push(
                &mut timeline,
                analysis_run(&status(30 * index + 1, verdict, 0.5), Some(&limits())),
            );
            pushed_runs += 1;
            if index == 500 {
                push(
                    &mut timeline,
                    request(
                        at(30 * index + 2),
                        ManualAction::Promote,
                        Some("alice".into()),
                    ),
                );
            }
        }
        push(
            &mut timeline,
            first_failure(&status(30_001, Verdict::Failing, 40.0), Some(&limits())),
        );
        push(&mut timeline, traffic_on_stable(at(30_060)));
        push(&mut timeline, canary_scaled_down(at(30_061)));

        assert!(timeline.len() <= TIMELINE_LIMIT, "{}", timeline.len());
        let kinds: Vec<TimelineKind> = timeline.iter().map(|e| e.kind).collect();
        for kept in [
            TimelineKind::CanaryCreated,
            TimelineKind::CanaryAvailable,
            TimelineKind::Request,
            TimelineKind::FirstFailure,
            TimelineKind::TrafficOnStable,
            TimelineKind::CanaryScaledDown,
        ] {
            assert_eq!(
                kinds.iter().filter(|k| **k == kept).count(),
                1,
                "{kept:?} kept"
            );
        }
        let count = |kind: TimelineKind| -> i32 {
            timeline
                .iter()
                .filter(|e| e.kind == kind)
                .map(|e| e.count.unwrap_or(1))
                .sum()
        };
        assert_eq!(count(TimelineKind::Analysis), pushed_runs);
        assert_eq!(count(TimelineKind::Step), pushed_steps);
        let times: Vec<i64> = timeline
            .iter()
            .map(|e| e.at.0.as_second() - 1_800_000_000)
            .collect();
        assert!(
            timeline.windows(2).all(|pair| pair[0].at.0 <= pair[1].at.0),
            "{times:?} {kinds:?}"
        );
        // The newest runs are merged last: the last analysis entry before the failure stands
        // for itself.
        let last_run = timeline
            .iter()
            .rev()
            .find(|e| e.kind == TimelineKind::Analysis)
            .unwrap();
        assert_eq!(last_run.count, None);
        assert_eq!(last_run.at, at(30 * 999 + 1));
        // Inconclusive runs merged with passing ones keep the worse verdict.
        assert!(
            timeline
                .iter()
                .filter(|e| e.kind == TimelineKind::Analysis && e.count.unwrap_or(1) > 3)
                .all(|e| e.verdict == Some(Verdict::Inconclusive))
        );
    }

    #[test]
    fn merged_steps_say_from_which_step_and_weight_to_which() {
        let mut timeline = Vec::new();
        push(&mut timeline, canary_created(at(0), "6f9c7d"));
        for index in 0..60 {
            push(
                &mut timeline,
                step(at(index), index as i32 + 1, index as i32),
            );
        }
        assert_eq!(timeline.len(), TIMELINE_LIMIT);
        let merged = &timeline[1];
        // 61 entries into 50: the eleven oldest merges fold the first twelve steps into one.
        assert_eq!(merged.count, Some(12));
        assert_eq!((merged.from_step, merged.from_weight), (Some(1), Some(0)));
        assert_eq!((merged.step, merged.weight), (Some(12), Some(11)));
        assert_eq!(merged.at, at(0));
        assert_eq!(merged.until, Some(at(11)));
    }

    #[test]
    fn merged_runs_keep_the_numbers_of_the_hottest_run() {
        let mut timeline = Vec::new();
        let runs = [0.5, 9.0, 2.0];
        for (index, burn) in runs.iter().enumerate() {
            timeline.push(analysis_run(
                &status(index as i64, Verdict::Passing, *burn),
                None,
            ));
        }
        while timeline.len() > 1 {
            shrink(&mut timeline);
        }
        let merged = &timeline[0];
        assert_eq!(merged.count, Some(3));
        assert!((merged.canary.as_ref().unwrap().burn_rate.unwrap() - 9.9).abs() < 1e-9);
        assert_eq!(merged.at, at(0));
        assert_eq!(merged.until, Some(at(2)));
    }
}
