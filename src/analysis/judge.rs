//! From what Prometheus answered to a verdict with its numbers: pure, synchronous, and tested
//! with plain values. The I/O that gathers the answers is the shell's
//! (`controller::prometheus`).

use k8s_openapi::jiff::Timestamp;

use super::AnalysisRun;
use super::baseline::compare;
use super::budget::budget_from;
use super::burn::{
    PairJudgement, RoleJudgement, WindowOutcome, measure_window, pair_burn, pair_verdict,
};
use super::format::{format_burn, format_number};
use super::outcome::QueryOutcome;
use super::summary::summarize;
use super::verdict::worst;
use crate::api::{
    BaselineComparison, Check, CheckResult, Duration, Role, RoleAnalysis, Slo, Verdict,
    WindowResult,
};

/// The resolved queries of one window of one role.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowQueries {
    /// The window.
    pub window: Duration,
    /// `slo.errorQuery`, resolved.
    pub error_query: String,
    /// `slo.totalQuery`, resolved.
    pub total_query: String,
}

/// One window's queries and their answers.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowMeasurement {
    /// The queries.
    pub queries: WindowQueries,
    /// The error query's answer (a rate per second).
    pub error: QueryOutcome,
    /// The total query's answer (a rate per second).
    pub total: QueryOutcome,
}

/// One role's windows, each window measured once even when several pairs share it.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleMeasurement {
    /// Canary or stable.
    pub role: Role,
    /// The Service whose metrics were read (`<release>-<role>`).
    pub service: String,
    /// One entry per distinct window of `slo.burnRates`.
    pub windows: Vec<WindowMeasurement>,
}

/// One check's query and its answer.
#[derive(Clone, Debug, PartialEq)]
pub struct CheckMeasurement {
    /// The check as written in the spec.
    pub check: Check,
    /// Its query, resolved for the canary.
    pub query: String,
    /// The answer.
    pub value: QueryOutcome,
}

/// The budget queries' answers, over the whole budget period.
#[derive(Clone, Debug, PartialEq)]
pub struct BudgetMeasurement {
    /// `slo.budget.period`.
    pub period: Duration,
    /// The stable's error rate over the period.
    pub error: QueryOutcome,
    /// The stable's total rate over the period.
    pub total: QueryOutcome,
}

/// Everything one run read from Prometheus.
#[derive(Clone, Debug, PartialEq)]
pub struct Measurements {
    /// The canary's windows; `None` when there is no canary (a budget-only run).
    pub canary: Option<RoleMeasurement>,
    /// The stable's windows, the baseline.
    pub stable: RoleMeasurement,
    /// The checks (only run when there is a canary: they guard the canary).
    pub checks: Vec<CheckMeasurement>,
    /// The budget, when `slo.budget` is set.
    pub budget: Option<BudgetMeasurement>,
}

/// Judges one run: the SLO windows of both roles, the comparison, the checks and the budget,
/// then the overall verdict, the summary line and the Burn column.
///
/// The overall verdict is the worst (Failing > Error > Inconclusive > Passing) of the canary's
/// SLO, the checks and the comparison — where the comparison can add Failing or Error but not
/// Inconclusive: a missing baseline (at `setWeight: 100` the stable serves nothing) must not
/// stall a canary that meets its own SLO with enough requests of its own. Without a canary the
/// stable's SLO is the verdict.
pub fn judge(
    slo: &Slo,
    revision: Option<String>,
    measurements: &Measurements,
    ran_at: Timestamp,
) -> AnalysisRun {
    let canary = measurements
        .canary
        .as_ref()
        .map(|role| judge_role(slo, role));
    let stable = judge_role(slo, &measurements.stable);

    let comparison: Vec<BaselineComparison> = match &canary {
        Some(canary) => canary
            .windows
            .iter()
            .filter_map(|(window, canary_outcome)| {
                let stable_outcome = stable.outcome(*window)?;
                Some(compare(
                    *window,
                    canary_outcome,
                    stable_outcome,
                    slo.objective,
                ))
            })
            .collect(),
        None => Vec::new(),
    };
    let checks: Vec<CheckResult> = measurements.checks.iter().map(judge_check).collect();

    let verdict = match &canary {
        Some(canary) => worst(
            std::iter::once(canary.verdict)
                .chain(
                    comparison
                        .iter()
                        .map(|comparison| comparison.verdict)
                        .filter(|verdict| matches!(verdict, Verdict::Failing | Verdict::Error)),
                )
                .chain(checks.iter().map(|check| check.verdict)),
        ),
        None => stable.verdict,
    };

    let budget = measurements.budget.as_ref().map(|budget| {
        (
            budget.period,
            budget_from(&budget.error, &budget.total, slo.objective),
        )
    });

    let summary = summarize(
        verdict,
        canary.as_ref(),
        &stable,
        &comparison,
        &checks,
        budget.as_ref(),
    );
    let burn = canary
        .as_ref()
        .and_then(RoleJudgement::hottest_pair)
        .and_then(|pair| {
            Some(format!(
                "{}/{}x",
                format_burn(pair.burn?),
                format_number(pair.max)
            ))
        });

    AnalysisRun {
        verdict,
        ran_at,
        revision,
        canary: canary
            .as_ref()
            .zip(measurements.canary.as_ref())
            .map(|(judgement, measurement)| role_analysis(judgement, measurement)),
        stable: Some(role_analysis(&stable, &measurements.stable)),
        comparison,
        checks,
        error_budget_remaining: budget.and_then(|(_, remaining)| remaining.ok()),
        summary,
        burn,
    }
}

/// An `Error` run before any query: the spec cannot be turned into queries, or there is no
/// `spec.analysis` at all.
pub fn error_run(message: String, revision: Option<String>, ran_at: Timestamp) -> AnalysisRun {
    AnalysisRun {
        verdict: Verdict::Error,
        ran_at,
        revision,
        canary: None,
        stable: None,
        comparison: Vec::new(),
        checks: Vec::new(),
        error_budget_remaining: None,
        summary: message,
        burn: None,
    }
}

fn judge_role(slo: &Slo, measurement: &RoleMeasurement) -> RoleJudgement {
    let windows: Vec<(Duration, WindowOutcome)> = measurement
        .windows
        .iter()
        .map(|window| {
            (
                window.queries.window,
                measure_window(
                    &window.error,
                    &window.total,
                    window.queries.window,
                    slo.objective,
                    slo.min_requests,
                ),
            )
        })
        .collect();
    let find = |window: Duration| {
        windows
            .iter()
            .find(|(candidate, _)| *candidate == window)
            .map(|(_, outcome)| outcome.clone())
            // Cannot happen when the measurement came from the same spec; if it does, it is
            // missing data, and missing data is never a pass.
            .unwrap_or(WindowOutcome::NoData {
                shortfall: super::burn::Shortfall::Empty { query: "total" },
                requests: None,
            })
    };
    let pairs: Vec<PairJudgement> = slo
        .burn_rates
        .iter()
        .map(|pair| {
            let long_outcome = find(pair.long);
            let short_outcome = find(pair.short);
            PairJudgement {
                long: pair.long,
                short: pair.short,
                max: pair.max,
                verdict: pair_verdict(&long_outcome, &short_outcome, pair.max),
                burn: pair_burn(&long_outcome, &short_outcome),
                long_outcome,
                short_outcome,
            }
        })
        .collect();
    RoleJudgement {
        role: measurement.role,
        service: measurement.service.clone(),
        verdict: worst(pairs.iter().map(|pair| pair.verdict)),
        pairs,
        windows,
    }
}

fn role_analysis(judgement: &RoleJudgement, measurement: &RoleMeasurement) -> RoleAnalysis {
    let queries = |window: Duration| {
        measurement
            .windows
            .iter()
            .find(|candidate| candidate.queries.window == window)
            .map(|candidate| candidate.queries.clone())
    };
    let mut windows = Vec::new();
    for pair in &judgement.pairs {
        for (window, outcome) in [
            (pair.long, &pair.long_outcome),
            (pair.short, &pair.short_outcome),
        ] {
            let queries = queries(window);
            windows.push(window_result(
                judgement.role,
                window,
                outcome,
                pair.max,
                queries.as_ref(),
            ));
        }
    }
    RoleAnalysis {
        verdict: judgement.verdict,
        service: judgement.service.clone(),
        windows,
    }
}

fn window_result(
    role: Role,
    window: Duration,
    outcome: &WindowOutcome,
    max: f64,
    queries: Option<&WindowQueries>,
) -> WindowResult {
    let numbers = outcome.numbers();
    let note = match outcome {
        WindowOutcome::Measured(_) => None,
        WindowOutcome::NoData { shortfall, .. } => Some(shortfall.describe(window)),
        WindowOutcome::Failed { failure, query } => {
            Some(failure.in_context(&format!("{role} {query} query over {window}")))
        }
    };
    WindowResult {
        window: window.to_string(),
        error_ratio: numbers.map(|numbers| numbers.error_ratio),
        requests: outcome.requests(),
        burn_rate: numbers.map(|numbers| numbers.burn_rate),
        max,
        note,
        error_query: queries.map(|q| q.error_query.clone()).unwrap_or_default(),
        total_query: queries.map(|q| q.total_query.clone()).unwrap_or_default(),
    }
}

/// One check: Failing above `max` or below `min`; no data is Inconclusive, a failed query an
/// Error.
pub fn judge_check(measurement: &CheckMeasurement) -> CheckResult {
    let check = &measurement.check;
    let (verdict, value, note) = match &measurement.value {
        QueryOutcome::Value(value) if value.is_finite() => {
            let above = check.max.is_some_and(|max| *value > max);
            let below = check.min.is_some_and(|min| *value < min);
            let verdict = if above || below {
                Verdict::Failing
            } else {
                Verdict::Passing
            };
            (verdict, Some(*value), None)
        }
        QueryOutcome::Value(value) => (
            Verdict::Inconclusive,
            None,
            Some(format!("query returned {}", format_number(*value))),
        ),
        QueryOutcome::NoData => (
            Verdict::Inconclusive,
            None,
            Some("query returned no data".to_string()),
        ),
        QueryOutcome::Failed(failure) => (
            Verdict::Error,
            None,
            Some(failure.in_context(&format!("query of check {}", check.name))),
        ),
    };
    CheckResult {
        name: check.name.clone(),
        verdict,
        value,
        max: check.max,
        min: check.min,
        query: measurement.query.clone(),
        note,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::outcome::QueryFailure;
    use crate::api::BurnRate;

    const LONG: Duration = Duration::from_secs(300);
    const SHORT: Duration = Duration::from_secs(60);

    fn slo() -> Slo {
        Slo {
            objective: 99.9,
            error_query: "errors".into(),
            total_query: "total".into(),
            burn_rates: vec![BurnRate {
                long: LONG,
                short: SHORT,
                max: 14.4,
            }],
            min_requests: 100,
            budget: None,
        }
    }

    /// A role whose windows answer `(error rate, total rate)` per second.
    fn role(role: Role, long: (f64, f64), short: (f64, f64)) -> RoleMeasurement {
        let window = |window: Duration, (error, total): (f64, f64)| WindowMeasurement {
            queries: WindowQueries {
                window,
                error_query: format!("errors[{window}]"),
                total_query: format!("total[{window}]"),
            },
            error: QueryOutcome::Value(error),
            total: QueryOutcome::Value(total),
        };
        RoleMeasurement {
            role,
            service: role.child_name("checkout"),
            windows: vec![window(LONG, long), window(SHORT, short)],
        }
    }

    fn measurements(canary: Option<RoleMeasurement>) -> Measurements {
        Measurements {
            canary,
            stable: role(Role::Stable, (0.01, 40.0), (0.01, 40.0)),
            checks: Vec::new(),
            budget: None,
        }
    }

    fn run(measurements: &Measurements) -> AnalysisRun {
        judge(
            &slo(),
            Some("6f9c7d".into()),
            measurements,
            Timestamp::UNIX_EPOCH,
        )
    }

    fn check(
        name: &str,
        max: Option<f64>,
        min: Option<f64>,
        value: QueryOutcome,
    ) -> CheckMeasurement {
        CheckMeasurement {
            check: Check {
                name: name.into(),
                query: "q".into(),
                max,
                min,
            },
            query: "q".into(),
            value,
        }
    }

    #[test]
    fn a_healthy_canary_passes_with_its_numbers() {
        // 16 requests/s, 0.0128 errors/s: 0.08% errors, burn 0.8.
        let canary = role(Role::Canary, (0.0128, 16.0), (0.0128, 16.0));
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.verdict, Verdict::Passing, "{}", result.summary);
        assert_eq!(
            result.summary,
            "canary burns 0.8x of 14.4x over 5m and 1m (4,800 requests)"
        );
        assert_eq!(result.burn.as_deref(), Some("0.8x/14.4x"));
        let canary = result.canary.unwrap();
        assert_eq!(canary.service, "checkout-canary");
        assert_eq!(canary.windows.len(), 2);
        assert_eq!(canary.windows[0].window, "5m");
        assert_eq!(canary.windows[0].error_query, "errors[5m]");
        assert_eq!(canary.windows[1].total_query, "total[1m]");
        assert!((canary.windows[0].burn_rate.unwrap() - 0.8).abs() < 1e-9);
        assert_eq!(result.comparison.len(), 2);
        assert_eq!(result.revision.as_deref(), Some("6f9c7d"));
        assert_eq!(result.stable.unwrap().service, "checkout-stable");
    }

    #[test]
    fn a_canary_burning_above_max_in_both_windows_fails() {
        // 5% errors: burn 50 in both windows.
        let canary = role(Role::Canary, (1.0, 20.0), (1.0, 20.0));
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.verdict, Verdict::Failing);
        assert_eq!(
            result.summary,
            "canary burns 50.0x of 14.4x over 5m and 1m (6,000 requests)"
        );
        assert_eq!(result.burn.as_deref(), Some("50.0x/14.4x"));
        assert!(
            result
                .comparison
                .iter()
                .all(|c| c.verdict == Verdict::Failing)
        );
    }

    #[test]
    fn a_spike_that_is_over_passes_the_burn_rule() {
        // Long window above max, short window healthy: the pair holds.
        let canary = role(Role::Canary, (0.4, 20.0), (0.0, 20.0));
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.canary.as_ref().unwrap().verdict, Verdict::Passing);
        assert_eq!(result.burn.as_deref(), Some("0.0x/14.4x"));
    }

    #[test]
    fn a_canary_clearly_worse_than_stable_fails_even_under_its_burn_limit() {
        // Canary 1% errors (burn 10, under 14.4) against a stable at 0.025%.
        let canary = role(Role::Canary, (0.2, 20.0), (0.2, 20.0));
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.canary.as_ref().unwrap().verdict, Verdict::Passing);
        assert_eq!(result.verdict, Verdict::Failing);
        assert!(
            result
                .summary
                .starts_with("canary clearly worse than stable over 5m: canary 1.00% errors (6,000 requests) vs stable 0.025%"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn too_few_canary_requests_is_inconclusive_never_passing() {
        // 0.2 requests/s: 60 in 5m, 12 in 1m.
        let canary = role(Role::Canary, (0.0, 0.2), (0.0, 0.2));
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.verdict, Verdict::Inconclusive);
        assert_eq!(
            result.summary,
            "canary has 60 requests in 5m, fewer than minRequests 100"
        );
        assert_eq!(result.burn, None);
        let windows = &result.canary.unwrap().windows;
        assert_eq!(windows[1].requests.map(f64::round), Some(12.0));
        assert_eq!(
            windows[1].note.as_deref(),
            Some("12 requests in 1m, fewer than minRequests 100")
        );
    }

    #[test]
    fn an_empty_or_nan_canary_result_is_inconclusive() {
        let mut canary = role(Role::Canary, (0.0, 20.0), (0.0, 20.0));
        canary.windows[0].error = QueryOutcome::NoData;
        let result = run(&measurements(Some(canary.clone())));
        assert_eq!(result.verdict, Verdict::Inconclusive);
        assert!(
            result
                .summary
                .starts_with("canary error query returned no data over 5m"),
            "{}",
            result.summary
        );
        canary.windows[0].error = QueryOutcome::Value(0.0);
        canary.windows[1].total = QueryOutcome::Value(f64::NAN);
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.verdict, Verdict::Inconclusive);
        assert_eq!(result.summary, "canary total query returned NaN over 1m");
    }

    #[test]
    fn a_missing_baseline_does_not_stall_a_canary_meeting_its_slo() {
        let canary = role(Role::Canary, (0.0, 20.0), (0.0, 20.0));
        let mut measurements = measurements(Some(canary));
        measurements.stable = role(Role::Stable, (0.0, 0.0), (0.0, 0.0));
        let result = run(&measurements);
        assert!(
            result
                .comparison
                .iter()
                .all(|c| c.verdict == Verdict::Inconclusive)
        );
        assert_eq!(result.verdict, Verdict::Passing, "{}", result.summary);
    }

    #[test]
    fn an_unreachable_prometheus_is_an_error_naming_the_address() {
        let failure = QueryFailure::Unreachable {
            address: "http://127.0.0.1:9090".into(),
            reason: "connection refused".into(),
        };
        let mut canary = role(Role::Canary, (0.0, 20.0), (0.0, 20.0));
        for window in &mut canary.windows {
            window.error = QueryOutcome::Failed(failure.clone());
            window.total = QueryOutcome::Failed(failure.clone());
        }
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.verdict, Verdict::Error);
        assert_eq!(
            result.summary,
            "Prometheus at http://127.0.0.1:9090 unreachable: connection refused"
        );
    }

    #[test]
    fn a_rejected_query_is_an_error_with_prometheus_text() {
        let mut canary = role(Role::Canary, (0.0, 20.0), (0.0, 20.0));
        canary.windows[0].error = QueryOutcome::Failed(QueryFailure::Rejected {
            address: "http://p:9090".into(),
            message: "bad_data: 1:9: parse error: unclosed left parenthesis".into(),
        });
        let result = run(&measurements(Some(canary)));
        assert_eq!(result.verdict, Verdict::Error);
        assert_eq!(
            result.summary,
            "Prometheus at http://p:9090 rejected the canary error query over 5m: bad_data: 1:9: parse error: unclosed left parenthesis"
        );
    }

    #[test]
    fn checks_compare_values_with_max_and_min() {
        let canary = role(Role::Canary, (0.0, 20.0), (0.0, 20.0));
        let mut measurements = measurements(Some(canary));
        measurements.checks = vec![
            check("p99-latency", Some(0.25), None, QueryOutcome::Value(0.2)),
            check("throughput", None, Some(5.0), QueryOutcome::Value(10.0)),
        ];
        assert_eq!(run(&measurements).verdict, Verdict::Passing);

        measurements.checks[0].value = QueryOutcome::Value(0.31);
        let result = run(&measurements);
        assert_eq!(result.verdict, Verdict::Failing);
        assert_eq!(result.summary, "check p99-latency is 0.31, above max 0.25");
        assert_eq!(result.checks[0].value, Some(0.31));

        measurements.checks[0].value = QueryOutcome::Value(0.2);
        measurements.checks[1].value = QueryOutcome::Value(1.5);
        assert_eq!(
            run(&measurements).summary,
            "check throughput is 1.5, below min 5"
        );

        measurements.checks[1].value = QueryOutcome::NoData;
        let result = run(&measurements);
        assert_eq!(result.verdict, Verdict::Inconclusive);
        assert_eq!(result.summary, "check throughput: query returned no data");
    }

    #[test]
    fn failing_outranks_error_and_error_outranks_inconclusive() {
        let failure = QueryFailure::TimedOut {
            address: "http://p:9090".into(),
            timeout: Duration::from_secs(10),
        };
        let canary = role(Role::Canary, (1.0, 20.0), (1.0, 20.0));
        let mut measurements = measurements(Some(canary));
        measurements.checks = vec![
            check("a", Some(1.0), None, QueryOutcome::Failed(failure.clone())),
            check("b", Some(1.0), None, QueryOutcome::NoData),
        ];
        assert_eq!(run(&measurements).verdict, Verdict::Failing);
        measurements.canary = Some(role(Role::Canary, (0.0, 20.0), (0.0, 20.0)));
        let result = run(&measurements);
        assert_eq!(result.verdict, Verdict::Error);
        assert_eq!(
            result.summary,
            "Prometheus at http://p:9090 did not answer within 10s"
        );
        measurements.checks.remove(0);
        assert_eq!(run(&measurements).verdict, Verdict::Inconclusive);
    }

    #[test]
    fn without_a_canary_the_stable_is_judged_alone_with_the_budget() {
        let mut measurements = measurements(None);
        measurements.budget = Some(BudgetMeasurement {
            period: Duration::from_secs(30 * 86_400),
            error: QueryOutcome::Value(0.01),
            total: QueryOutcome::Value(40.0),
        });
        let result = run(&measurements);
        assert_eq!(result.verdict, Verdict::Passing);
        assert!(result.canary.is_none());
        assert!(result.comparison.is_empty());
        assert_eq!(result.burn, None);
        assert!((result.error_budget_remaining.unwrap() - 0.75).abs() < 1e-9);
        assert_eq!(
            result.summary,
            "no canary, stable only: stable burns 0.3x of 14.4x over 5m and 1m (12,000 requests); error budget 75% left over 30d"
        );
    }

    #[test]
    fn an_overspent_budget_is_reported_below_zero() {
        let mut measurements = measurements(None);
        measurements.budget = Some(BudgetMeasurement {
            period: Duration::from_secs(3_600),
            error: QueryOutcome::Value(2.0),
            total: QueryOutcome::Value(40.0),
        });
        let result = run(&measurements);
        assert!((result.error_budget_remaining.unwrap() - (-49.0)).abs() < 1e-6);
        assert!(
            result
                .summary
                .ends_with("; error budget overspent: 5,000% spent over 1h"),
            "{}",
            result.summary
        );
        measurements.budget.as_mut().unwrap().error = QueryOutcome::NoData;
        let result = run(&measurements);
        assert_eq!(result.error_budget_remaining, None);
        assert!(
            result
                .summary
                .ends_with("; no error budget figure: budget error query returned no data"),
            "{}",
            result.summary
        );
    }

    #[test]
    fn error_runs_carry_the_message() {
        let result = error_run(
            "spec.analysis.slo.errorQuery: unknown placeholder {{pod}}".into(),
            None,
            Timestamp::UNIX_EPOCH,
        );
        assert_eq!(result.verdict, Verdict::Error);
        assert!(result.summary.contains("{{pod}}"));
    }
}
