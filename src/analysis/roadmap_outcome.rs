//! A roadmap item's outcome, pure: which promoted revisions are due for a measurement at a
//! given instant, what a measurement's answer does to the record, the verdict from two numbers,
//! and rework (an item promoted again soon after it was delivered).
//!
//! Timing: the baseline is measured as soon as the revision is promoted, as an instant query
//! at the moment its canary started over `baseline` (`{{window}}` = `baseline`); the after
//! number once `after` has passed since promotion, as an instant query at promotion + `after`
//! over `after`. A failed or empty answer is retried every [`retry_delay`], at most
//! [`MAX_ATTEMPTS`] times per measurement, and then the outcome is Inconclusive: never guessed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::format::format_period;
use super::outcome::QueryOutcome;
use super::template::{QueryError, TemplateError, TemplateValues, parse_promql, render};
use crate::api::{
    Duration, Goal, HistoryEntry, MinChange, Outcome, OutcomeRecord, OutcomeVerdict,
    RoadmapOutcome, Role,
};

/// Attempts at one measurement before the outcome is recorded Inconclusive.
pub const MAX_ATTEMPTS: i32 = 5;

/// How long after a failed attempt the next one is made: a quarter of the after window, between
/// 10 seconds and 30 minutes, so that a week-long outcome rides out a Prometheus restart and a
/// test's 20-second one finishes within a minute.
pub fn retry_delay(record: &OutcomeRecord) -> std::time::Duration {
    let quarter = record.after_window.as_std() / 4;
    quarter.clamp(
        std::time::Duration::from_secs(10),
        std::time::Duration::from_secs(30 * 60),
    )
}

/// Which of the two numbers a measurement is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, strum::Display)]
#[strum(serialize_all = "lowercase")]
pub enum Measurement {
    /// Over `baseline` before the canary started.
    Baseline,
    /// Over `after` since promotion.
    After,
}

/// The measurement a history entry waits for.
#[derive(Clone, Debug, PartialEq)]
pub struct PendingMeasurement {
    /// The entry's revision (with `finished_at`, the entry's key).
    pub revision: String,
    /// The entry's `finishedAt`: when the revision was promoted.
    pub finished_at: Timestamp,
    /// Which number.
    pub measurement: Measurement,
    /// When it may be asked (the window has passed, and the retry delay since a failed try).
    pub due_at: Timestamp,
    /// The instant the query is evaluated at: the end of its window.
    pub evaluate_at: Timestamp,
    /// `{{window}}`: the window's length.
    pub window: Duration,
    /// The query template as recorded at promotion.
    pub query: String,
}

/// The measurement `entry` waits for, if any: none once it has a verdict or when it records no
/// outcome.
pub fn pending(entry: &HistoryEntry) -> Option<PendingMeasurement> {
    let record = entry.roadmap_outcome.as_ref()?;
    if record.verdict.is_some() || entry.outcome != Outcome::Promoted {
        return None;
    }
    let promoted = entry.finished_at.0;
    let (measurement, earliest, evaluate_at, window) = match record.baseline {
        None => {
            let canary_started = entry.started_at.as_ref().map_or(promoted, |at| at.0);
            (
                Measurement::Baseline,
                promoted,
                canary_started,
                record.baseline_window,
            )
        }
        Some(_) => {
            let end = plus(promoted, record.after_window);
            (Measurement::After, end, end, record.after_window)
        }
    };
    let retry_at = match (&record.last_attempt_at, record.attempts) {
        (Some(last), Some(attempts)) if attempts > 0 => {
            plus(last.0, Duration::from(retry_delay(record)))
        }
        _ => earliest,
    };
    Some(PendingMeasurement {
        revision: entry.revision.clone(),
        finished_at: promoted,
        measurement,
        due_at: earliest.max(retry_at),
        evaluate_at,
        window,
        query: record.query.clone(),
    })
}

/// The measurements of `history` due at `now`: the ones the controller asks Prometheus for
/// in this reconcile.
pub fn due(history: &[HistoryEntry], now: Timestamp) -> Vec<PendingMeasurement> {
    history
        .iter()
        .filter_map(pending)
        .filter(|pending| pending.due_at <= now)
        .collect()
}

/// When the next measurement of `history` falls due (maybe already past): the controller looks
/// again then, and not before, so a Release waiting a week for its outcome costs nothing.
pub fn next_due(history: &[HistoryEntry]) -> Option<Timestamp> {
    history
        .iter()
        .filter_map(pending)
        .map(|pending| pending.due_at)
        .min()
}

/// What one measurement's answer does to `record`, at `now`: the number recorded (and, for
/// the after number, the change and verdict), or one more failed attempt (and Inconclusive at
/// [`MAX_ATTEMPTS`]). Returns the verdict when this answer concluded the outcome.
pub fn apply(
    record: &mut OutcomeRecord,
    measurement: Measurement,
    answer: &QueryOutcome,
    now: Timestamp,
) -> Option<OutcomeVerdict> {
    let value = match answer {
        QueryOutcome::Value(value) if value.is_finite() => Ok(*value),
        QueryOutcome::Value(value) => Err(format!("the query gave {value}, not a number")),
        QueryOutcome::NoData => Err("the query matched no series".to_string()),
        QueryOutcome::Failed(failure) => Err(cut(&failure.to_string())),
    };
    match value {
        Ok(value) => {
            record.attempts = None;
            record.last_attempt_at = None;
            record.message = None;
            match measurement {
                Measurement::Baseline => {
                    record.baseline = Some(value);
                    None
                }
                Measurement::After => {
                    record.after = Some(value);
                    let baseline = record.baseline?;
                    let compared = compare(record.goal, record.min_change, baseline, value);
                    record.change = compared.change;
                    record.verdict = Some(compared.verdict);
                    record.message = compared.reason;
                    record.measured_at = Some(Time(now));
                    Some(compared.verdict)
                }
            }
        }
        Err(reason) => {
            let attempts = record.attempts.unwrap_or(0) + 1;
            record.attempts = Some(attempts);
            record.last_attempt_at = Some(Time(now));
            if attempts >= MAX_ATTEMPTS {
                record.verdict = Some(OutcomeVerdict::Inconclusive);
                record.measured_at = Some(Time(now));
                record.message = Some(format!(
                    "no {measurement} number after {attempts} attempts: {reason}"
                ));
                Some(OutcomeVerdict::Inconclusive)
            } else {
                record.message = Some(format!(
                    "{measurement} attempt {attempts} of {MAX_ATTEMPTS} failed: {reason}"
                ));
                None
            }
        }
    }
}

/// The change from `baseline` to `after` and what it means for the goal.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// In percent of the baseline when `minChange` is a percent, else absolute.
    pub change: Option<f64>,
    /// Met, NotMet, or Inconclusive when no change can be computed.
    pub verdict: OutcomeVerdict,
    /// Why it is Inconclusive.
    pub reason: Option<String>,
}

/// The verdict of two numbers: Met when the change in the goal's direction is at least
/// `min_change` (a percent of the baseline's magnitude, or an absolute amount).
pub fn compare(goal: Goal, min_change: MinChange, baseline: f64, after: f64) -> Comparison {
    let (change, needed) = match min_change {
        MinChange::Absolute(needed) => (after - baseline, needed),
        MinChange::Percent(needed) => {
            if baseline == 0.0 {
                return Comparison {
                    change: None,
                    verdict: OutcomeVerdict::Inconclusive,
                    reason: Some(
                        "the baseline is 0, so a change in percent is undefined: write \
                         spec.roadmap.outcome.minChange as an absolute amount (e.g. 0.5)"
                            .into(),
                    ),
                };
            }
            ((after - baseline) / baseline.abs() * 100.0, needed)
        }
    };
    let towards_goal = match goal {
        Goal::Increase => change,
        Goal::Decrease => -change,
    };
    // A tiny tolerance so that float noise (101.99999999 for 102) does not miss the goal; a
    // goal of 0 asks for any move in its direction, and no move is not one.
    let met = if needed > 0.0 {
        towards_goal >= needed * (1.0 - 1e-9)
    } else {
        towards_goal > 0.0
    };
    Comparison {
        change: Some(change),
        verdict: if met {
            OutcomeVerdict::Met
        } else {
            OutcomeVerdict::NotMet
        },
        reason: None,
    }
}

/// Whether a revision of `item` promoted at `promoted_at` is rework: `earlier` (the history
/// before it) holds a promotion of the same item within `window` before it. Only what the
/// status keeps (the newest ten revisions) is seen.
pub fn is_rework(
    earlier: &[HistoryEntry],
    item: &str,
    promoted_at: Timestamp,
    window: Duration,
) -> bool {
    let since = promoted_at
        .checked_sub(window.as_signed())
        .unwrap_or(Timestamp::MIN);
    earlier.iter().any(|entry| {
        entry.outcome == Outcome::Promoted
            && entry.roadmap_item == item
            && entry.finished_at.0 >= since
            && entry.finished_at.0 <= promoted_at
    })
}

/// The outcome query of a Release with its placeholders filled in: `{{window}}` the window,
/// `{{service}}` and `{{role}}` the stable's, `{{revision}}` the promoted revision.
pub fn render_query(
    template: &str,
    namespace: &str,
    release: &str,
    revision: &str,
    window: Duration,
) -> Result<String, TemplateError> {
    render(
        template,
        &TemplateValues {
            namespace: namespace.into(),
            release: release.into(),
            role: Role::Stable,
            service: None,
            revision: revision.into(),
            window,
        },
    )
}

/// Checks `spec.roadmap.outcome.query` without talking to Prometheus: it resolves and parses
/// as PromQL with `{{window}}` as each of its windows, as the analysis queries are checked.
pub fn validate_query(outcome: &RoadmapOutcome) -> Result<(), QueryError> {
    for window in [outcome.baseline, outcome.after] {
        let field = || "spec.roadmap.outcome.query".to_string();
        let query = render_query(&outcome.query, "namespace", "release", "revision", window)
            .map_err(|error| QueryError {
                field: field(),
                error,
            })?;
        parse_promql(&query).map_err(|reason| QueryError {
            field: field(),
            error: TemplateError::InvalidPromql { window, reason },
        })?;
    }
    Ok(())
}

/// The change as people read it: `+3.1%`, `-0.4`.
pub fn format_change(change: f64, min_change: MinChange) -> String {
    let sign = if change >= 0.0 { "+" } else { "" };
    match min_change {
        MinChange::Percent(_) => format!("{sign}{}%", round(change)),
        MinChange::Absolute(_) => format!("{sign}{}", round(change)),
    }
}

/// The goal as people read it: `goal +2%`, `goal -0.5`.
pub fn format_goal(goal: Goal, min_change: MinChange) -> String {
    let sign = match goal {
        Goal::Increase => "+",
        Goal::Decrease => "-",
    };
    format!("goal {sign}{min_change}")
}

/// One line for a record: `checkout-conversion +3.1% (goal +2%): met`, or where it stands.
pub fn describe(record: &OutcomeRecord) -> String {
    let goal = format_goal(record.goal, record.min_change);
    match (record.verdict, record.change) {
        (Some(verdict), Some(change)) => format!(
            "{} {} ({goal}): {}",
            record.name,
            format_change(change, record.min_change),
            verdict_word(verdict)
        ),
        (Some(verdict), None) => format!(
            "{} ({goal}): {}{}",
            record.name,
            verdict_word(verdict),
            record
                .message
                .as_ref()
                .map(|message| format!(" ({message})"))
                .unwrap_or_default()
        ),
        (None, _) if record.baseline.is_none() => {
            format!("{} ({goal}): measuring the baseline", record.name)
        }
        (None, _) => format!(
            "{} ({goal}): baseline {}, after number due {} after promotion",
            record.name,
            record
                .baseline
                .map_or_else(|| "-".to_string(), |value| value.to_string()),
            format_period(record.after_window)
        ),
    }
}

/// `met`, `not met`, `inconclusive`.
pub fn verdict_word(verdict: OutcomeVerdict) -> &'static str {
    match verdict {
        OutcomeVerdict::Met => "met",
        OutcomeVerdict::NotMet => "not met",
        OutcomeVerdict::Inconclusive => "inconclusive",
    }
}

/// The most characters of a failure's words kept in the record: Prometheus' error text is not
/// bounded, and ten history entries must stay far below etcd's object limit.
pub const REASON_LIMIT: usize = 400;

fn cut(text: &str) -> String {
    match text.char_indices().nth(REASON_LIMIT) {
        Some((end, _)) => format!("{}…", &text[..end]),
        None => text.to_string(),
    }
}

fn round(value: f64) -> f64 {
    (value * 10.0).round() / 10.0
}

fn plus(at: Timestamp, duration: Duration) -> Timestamp {
    at.checked_add(duration.as_signed())
        .unwrap_or(Timestamp::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::QueryFailure;

    fn entry(
        item: &str,
        outcome: Outcome,
        started_at: Option<Time>,
        finished_at: Time,
    ) -> HistoryEntry {
        HistoryEntry {
            revision: "6f9c7d".into(),
            roadmap_item: item.into(),
            outcome,
            started_at,
            finished_at,
            failure_detected_at: None,
            reason: "Promoted".into(),
            message: None,
            horizon: None,
            kind: None,
            timeline: Vec::new(),
            roadmap_outcome: None,
            rework: false,
        }
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn record(baseline: Duration, after: Duration) -> OutcomeRecord {
        OutcomeRecord {
            name: "checkout-conversion".into(),
            query: "sum(rate(orders_total[{{window}}]))".into(),
            goal: Goal::Increase,
            min_change: MinChange::Percent(2.0),
            baseline_window: baseline,
            after_window: after,
            baseline: None,
            after: None,
            change: None,
            verdict: None,
            attempts: None,
            last_attempt_at: None,
            measured_at: None,
            message: None,
        }
    }

    /// A revision whose canary started at 0 and was promoted at 600.
    fn promoted(record: Option<OutcomeRecord>) -> HistoryEntry {
        let mut entry = entry(
            "PAY-142",
            Outcome::Promoted,
            Some(Time(at(0))),
            Time(at(600)),
        );
        entry.roadmap_outcome = record;
        entry
    }

    const S30: Duration = Duration::from_secs(30);
    const S20: Duration = Duration::from_secs(20);

    #[test]
    fn which_measurement_is_due_when() {
        let fresh = record(S30, S20);
        let mut with_baseline = fresh.clone();
        with_baseline.baseline = Some(10.0);
        let mut retrying = fresh.clone();
        retrying.attempts = Some(1);
        retrying.last_attempt_at = Some(Time(at(600)));
        let mut concluded = with_baseline.clone();
        concluded.verdict = Some(OutcomeVerdict::Met);
        // (case, record, now, due: (measurement, evaluated at, window) or nothing)
        type Due = Option<(Measurement, i64, Duration)>;
        let cases: Vec<(&str, Option<OutcomeRecord>, i64, Due)> = vec![
            ("no outcome in the spec", None, 600, None),
            (
                "baseline at promotion, evaluated at the canary's start",
                Some(fresh.clone()),
                600,
                Some((Measurement::Baseline, 0, S30)),
            ),
            ("before promotion nothing", Some(fresh.clone()), 599, None),
            (
                "after number not before promotion + after",
                Some(with_baseline.clone()),
                619,
                None,
            ),
            (
                "after number at promotion + after",
                Some(with_baseline.clone()),
                620,
                Some((Measurement::After, 620, S20)),
            ),
            (
                "a failed try waits the retry delay",
                Some(retrying.clone()),
                609,
                None,
            ),
            (
                "and is tried again after it",
                Some(retrying),
                610,
                Some((Measurement::Baseline, 0, S30)),
            ),
            ("a verdict ends it", Some(concluded), 10_000, None),
        ];
        for (case, record, now, expected) in cases {
            let entry = promoted(record);
            let got: Vec<_> = due(std::slice::from_ref(&entry), at(now))
                .into_iter()
                .map(|due| (due.measurement, due.evaluate_at, due.window))
                .collect();
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(m, evaluated, window)| (m, at(evaluated), window))
                .collect();
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn the_next_due_time_is_the_earliest_pending_one() {
        let mut with_baseline = record(S30, S20);
        with_baseline.baseline = Some(1.0);
        let history = vec![promoted(Some(with_baseline)), promoted(None)];
        assert_eq!(next_due(&history), Some(at(620)));
        assert_eq!(next_due(&[promoted(None)]), None);
    }

    #[test]
    fn verdicts_by_goal_and_min_change() {
        use Goal::{Decrease, Increase};
        use OutcomeVerdict::{Inconclusive, Met, NotMet};
        let pct = MinChange::Percent;
        let abs = MinChange::Absolute;
        // (goal, minChange, baseline, after, change, verdict)
        let cases = [
            (Increase, pct(2.0), 100.0, 103.1, Some(3.1), Met),
            (Increase, pct(2.0), 100.0, 102.0, Some(2.0), Met),
            (Increase, pct(2.0), 100.0, 101.0, Some(1.0), NotMet),
            (Increase, pct(2.0), 100.0, 95.0, Some(-5.0), NotMet),
            (Decrease, pct(2.0), 200.0, 190.0, Some(-5.0), Met),
            (Decrease, pct(2.0), 200.0, 210.0, Some(5.0), NotMet),
            (Increase, abs(0.5), 1.0, 1.6, Some(0.6), Met),
            (Increase, abs(0.5), 1.0, 1.4, Some(0.4), NotMet),
            (Decrease, abs(0.5), 1.0, 0.4, Some(-0.6), Met),
            (Increase, pct(0.0), 1.0, 1.0, Some(0.0), NotMet),
            (Increase, pct(0.0), 1.0, 1.01, Some(1.0), Met),
            (Increase, pct(2.0), -100.0, -90.0, Some(10.0), Met),
            (Increase, pct(2.0), 0.0, 5.0, None, Inconclusive),
        ];
        for (goal, min_change, baseline, after, change, verdict) in cases {
            let got = compare(goal, min_change, baseline, after);
            let case = format!("{goal} {min_change} {baseline} -> {after}");
            assert_eq!(got.verdict, verdict, "{case}");
            assert_eq!(got.change.map(round), change, "{case}");
        }
    }

    #[test]
    fn answers_fill_the_record_and_missing_data_is_retried_then_inconclusive() {
        let mut record = record(S30, S20);
        assert_eq!(
            apply(
                &mut record,
                Measurement::Baseline,
                &QueryOutcome::Value(0.2),
                at(600)
            ),
            None
        );
        assert_eq!(record.baseline, Some(0.2));
        let down = QueryOutcome::Failed(QueryFailure::Unreachable {
            address: "http://prometheus:9090".into(),
            reason: "connection refused".into(),
        });
        let missing = [down, QueryOutcome::NoData, QueryOutcome::Value(f64::NAN)];
        for attempt in 1..MAX_ATTEMPTS {
            let answer = &missing[(attempt as usize - 1) % missing.len()];
            assert_eq!(
                apply(&mut record, Measurement::After, answer, at(620)),
                None
            );
            assert_eq!(record.attempts, Some(attempt));
            assert_eq!(record.verdict, None, "never guessed");
        }
        assert_eq!(
            apply(
                &mut record,
                Measurement::After,
                &QueryOutcome::NoData,
                at(700)
            ),
            Some(OutcomeVerdict::Inconclusive)
        );
        assert_eq!(record.after, None);
        assert_eq!(record.change, None);
        assert_eq!(
            record.message.as_deref(),
            Some("no after number after 5 attempts: the query matched no series")
        );
        assert_eq!(
            pending(&promoted(Some(record))),
            None,
            "nothing more is due"
        );
    }

    #[test]
    fn a_long_failure_reason_is_cut_so_the_history_stays_bounded() {
        let mut record = record(S30, S20);
        let rejected = QueryOutcome::Failed(QueryFailure::Rejected {
            address: "http://prometheus:9090".into(),
            message: "x".repeat(10_000),
        });
        apply(&mut record, Measurement::Baseline, &rejected, at(600));
        let message = record.message.unwrap();
        assert!(
            message.chars().count() < REASON_LIMIT + 60,
            "{}",
            message.len()
        );
        assert!(message.ends_with('…'));
    }

    #[test]
    fn a_number_after_failed_tries_resets_the_attempts_and_concludes() {
        let mut record = record(S30, S20);
        record.baseline = Some(0.2);
        apply(
            &mut record,
            Measurement::After,
            &QueryOutcome::NoData,
            at(620),
        );
        let verdict = apply(
            &mut record,
            Measurement::After,
            &QueryOutcome::Value(0.21),
            at(640),
        );
        assert_eq!(verdict, Some(OutcomeVerdict::Met));
        assert_eq!((record.attempts, record.message.clone()), (None, None));
        assert_eq!(record.measured_at, Some(Time(at(640))));
        assert_eq!(describe(&record), "checkout-conversion +5% (goal +2%): met");
    }

    #[test]
    fn rework_is_a_promotion_of_an_item_promoted_within_the_window() {
        let entry = |item: &str, outcome: Outcome, finished: i64| {
            entry(item, outcome, None, Time(at(finished)))
        };
        let day = 86_400;
        let week = Duration::from_secs(7 * day as u64);
        let cases = [
            (
                "same item promoted 3 days before",
                vec![entry("PAY-142", Outcome::Promoted, -3 * day)],
                true,
            ),
            (
                "same item promoted 8 days before",
                vec![entry("PAY-142", Outcome::Promoted, -8 * day)],
                false,
            ),
            (
                "same item only rolled back before",
                vec![entry("PAY-142", Outcome::RolledBack, -day)],
                false,
            ),
            (
                "another item promoted the day before",
                vec![entry("PAY-139", Outcome::Promoted, -day)],
                false,
            ),
            ("no history", vec![], false),
        ];
        for (case, earlier, expected) in cases {
            assert_eq!(
                is_rework(&earlier, "PAY-142", at(0), week),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn the_query_is_checked_with_each_window_and_escaped_placeholders() {
        let mut outcome = RoadmapOutcome {
            name: "conversion".into(),
            query: "sum(increase(orders_total{namespace=\"{{namespace}}\"}[{{window}}]))".into(),
            goal: Goal::Increase,
            baseline: Duration::from_secs(7 * 86_400),
            after: S20,
            min_change: MinChange::Percent(2.0),
        };
        assert_eq!(validate_query(&outcome), Ok(()));
        assert_eq!(
            render_query(
                &outcome.query,
                "sh\"op",
                "checkout",
                "6f9c7d",
                outcome.baseline
            )
            .unwrap(),
            "sum(increase(orders_total{namespace=\"sh\\\"op\"}[168h]))"
        );
        outcome.query = "sum(rate(orders_total[{{window}}])".into();
        let error = validate_query(&outcome).unwrap_err();
        assert_eq!(error.field, "spec.roadmap.outcome.query");
        assert!(error.to_string().contains("not valid PromQL"), "{error}");
        outcome.query = "orders_total{pod=\"{{pod}}\"}".into();
        assert!(
            validate_query(&outcome)
                .unwrap_err()
                .to_string()
                .starts_with("spec.roadmap.outcome.query: unknown placeholder {{pod}}")
        );
    }
}
