//! The error budget left over `slo.budget.period`, for the policy that holds new revisions
//! while it is spent.

use super::burn::allowed_error_ratio;
use super::format::format_number;
use super::outcome::QueryOutcome;

/// The fraction of the error budget left: `1 − error ratio / allowed error ratio`.
///
/// 1 means untouched, 0 exactly spent. The value is NOT clamped at 0: a negative number says
/// by how much the budget is overspent (−0.5: 150% spent), and it keeps `freezeBelow: 0`
/// meaningful — "hold new revisions once the budget is overspent" — which a clamped 0 could
/// never be below.
pub fn budget_remaining(error_ratio: f64, objective_percent: f64) -> f64 {
    1.0 - error_ratio / allowed_error_ratio(objective_percent)
}

/// The budget left from the stable's error and total rates over the budget period, or why
/// there is no figure.
///
/// No `minRequests` floor applies: the budget counts every request of the period, and a
/// service that failed 3 of its 10 requests this month has spent its budget however few they
/// were.
pub fn budget_from(
    error: &QueryOutcome,
    total: &QueryOutcome,
    objective_percent: f64,
) -> Result<f64, String> {
    let value = |outcome: &QueryOutcome, query: &str| match outcome {
        QueryOutcome::Value(value) if value.is_finite() => Ok(*value),
        QueryOutcome::Value(value) => Err(format!(
            "budget {query} query returned {}",
            format_number(*value)
        )),
        QueryOutcome::NoData => Err(format!("budget {query} query returned no data")),
        QueryOutcome::Failed(failure) => Err(failure.in_context(&format!("budget {query} query"))),
    };
    let total_rate = value(total, "total")?;
    if total_rate <= 0.0 {
        return Err("no requests over the budget period".into());
    }
    // Over a whole budget period an empty error query most likely means no errors yet, but
    // "most likely" is not data: report no figure rather than a made-up full budget.
    let error_rate = value(error, "error")?;
    Ok(budget_remaining(error_rate / total_rate, objective_percent))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::outcome::QueryFailure;

    #[test]
    fn budget_left_is_one_minus_spent_fraction() {
        assert!((budget_remaining(0.0, 99.9) - 1.0).abs() < 1e-12);
        assert!((budget_remaining(0.00025, 99.9) - 0.75).abs() < 1e-9);
        assert!((budget_remaining(0.001, 99.9)).abs() < 1e-9);
        // Overspent budgets stay negative so that freezeBelow: 0 still freezes.
        assert!((budget_remaining(0.05, 99.0) - (-4.0)).abs() < 1e-9);
    }

    #[test]
    fn budget_from_rates() {
        let left =
            budget_from(&QueryOutcome::Value(0.01), &QueryOutcome::Value(40.0), 99.9).unwrap();
        assert!((left - 0.75).abs() < 1e-9, "{left}");
    }

    #[test]
    fn missing_or_failed_budget_data_gives_no_figure() {
        assert_eq!(
            budget_from(&QueryOutcome::NoData, &QueryOutcome::Value(1.0), 99.9),
            Err("budget error query returned no data".into())
        );
        assert_eq!(
            budget_from(&QueryOutcome::Value(0.0), &QueryOutcome::Value(0.0), 99.9),
            Err("no requests over the budget period".into())
        );
        assert_eq!(
            budget_from(
                &QueryOutcome::Value(f64::NAN),
                &QueryOutcome::Value(1.0),
                99.9
            ),
            Err("budget error query returned NaN".into())
        );
        let failure = QueryFailure::Unreachable {
            address: "http://p:9090".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            budget_from(
                &QueryOutcome::Value(0.0),
                &QueryOutcome::Failed(failure),
                99.9
            ),
            Err("Prometheus at http://p:9090 unreachable: connection refused".into())
        );
    }
}
