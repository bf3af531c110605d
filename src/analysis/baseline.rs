//! Canary against stable: is the canary's error ratio clearly worse than the baseline's over
//! the same window?
//!
//! # The rule
//!
//! The canary is Failing over a window when all of these hold:
//! 1. both sides have at least `minRequests` requests in the window (else Inconclusive);
//! 2. a one-sided two-proportion z-test, with pooled variance and a continuity correction,
//!    gives `z >` [`Z_CRITICAL`] (2.326), i.e. a 1% chance of a false alarm per comparison if
//!    canary and stable were truly equal;
//! 3. the canary's error ratio exceeds the stable's by more than the SLO's allowed error ratio
//!    `1 − objective/100` — the canary burns at least one whole error budget faster than the
//!    stable.
//!
//! # Why
//!
//! - **Significance, not just a ratio.** Error counts are small numbers: a canary that burns
//!   2× the stable's rate on 20 requests has seen perhaps one error where the stable would have
//!   seen half of one. That is noise, and rolling back on it trains people to ignore rollbacks.
//!   The z-test asks how surprising the canary's errors are given both samples' sizes.
//! - **1%, not 5%.** An analysis runs every `interval` over overlapping windows, so a canary
//!   sees dozens of comparisons; at 5% a perfectly good canary would "fail" one of them every
//!   few minutes. 1% (plus `failureLimit` consecutive failures before a rollback) keeps false
//!   rollbacks rare, while a real regression of a few percent on a few hundred requests still
//!   gives z far above 2.3 (5% vs 0.1% on 400 requests each is z ≈ 4.3).
//! - **Continuity correction.** The normal approximation overstates significance for small
//!   error counts; subtracting half a request per side (Yates) makes a single error on a small
//!   canary not count as proof.
//! - **A minimum effect.** With enough traffic any difference is significant: 0.11% against
//!   0.10% on ten million requests is "real" but harmless. Requiring the difference to exceed
//!   the allowed error ratio ties "clearly worse" to the SLO the service owners chose.
//! - **minRequests on both sides**, because the stable's ratio is an estimate too; at
//!   `setWeight: 100` the stable serves nothing and there is no baseline to compare with.

use super::burn::{WindowNumbers, WindowOutcome, allowed_error_ratio};
use super::format::{format_count, format_percent};
use crate::api::{BaselineComparison, Duration, Verdict};

/// One-sided significance level of the comparison.
pub const SIGNIFICANCE: f64 = 0.01;

/// The standard normal quantile for [`SIGNIFICANCE`]: z above this is significant.
pub const Z_CRITICAL: f64 = 2.326;

/// The one-sided two-proportion z statistic of "canary errors more than stable", with pooled
/// variance and Yates's continuity correction. Positive when the canary looks worse; 0 when
/// there is no variation at all (no errors anywhere, or every request failing on both sides).
pub fn z_score(canary: WindowNumbers, stable: WindowNumbers) -> f64 {
    let (canary_ratio, stable_ratio) = (
        canary.error_ratio.clamp(0.0, 1.0),
        stable.error_ratio.clamp(0.0, 1.0),
    );
    let (canary_n, stable_n) = (canary.requests, stable.requests);
    if canary_n <= 0.0 || stable_n <= 0.0 {
        return 0.0;
    }
    let pooled = (canary_ratio * canary_n + stable_ratio * stable_n) / (canary_n + stable_n);
    let inverse_sizes = 1.0 / canary_n + 1.0 / stable_n;
    let standard_error = (pooled * (1.0 - pooled) * inverse_sizes).sqrt();
    // NaN (from rounding at the extremes) counts as no variation too.
    if standard_error.is_nan() || standard_error <= 0.0 {
        return 0.0;
    }
    let difference = canary_ratio - stable_ratio;
    let corrected = if difference > 0.0 {
        (difference - 0.5 * inverse_sizes).max(0.0)
    } else {
        difference
    };
    corrected / standard_error
}

/// Compares the canary with the stable over `window` (see the module documentation for the
/// rule and why).
pub fn compare(
    window: Duration,
    canary: &WindowOutcome,
    stable: &WindowOutcome,
    objective_percent: f64,
) -> BaselineComparison {
    let result = |verdict, detail| BaselineComparison {
        window: window.to_string(),
        verdict,
        detail,
    };
    for (role, outcome) in [("canary", canary), ("stable", stable)] {
        match outcome {
            WindowOutcome::Failed { failure, query } => {
                return result(
                    Verdict::Error,
                    failure.in_context(&format!("{role} {query} query over {window}")),
                );
            }
            WindowOutcome::NoData { shortfall, .. } => {
                return result(
                    Verdict::Inconclusive,
                    format!("no comparison: {role} {}", shortfall.describe(window)),
                );
            }
            WindowOutcome::Measured(_) => {}
        }
    }
    let (Some(canary), Some(stable)) = (canary.numbers(), stable.numbers()) else {
        return result(Verdict::Inconclusive, "no comparison: no numbers".into());
    };
    let z = z_score(canary, stable);
    let allowed = allowed_error_ratio(objective_percent);
    let difference = canary.error_ratio - stable.error_ratio;
    let sides = format!(
        "canary {} errors ({} requests) vs stable {} ({})",
        format_percent(canary.error_ratio),
        format_count(canary.requests),
        format_percent(stable.error_ratio),
        format_count(stable.requests),
    );
    let significant = z > Z_CRITICAL;
    let large = difference > allowed;
    let (verdict, judgement) = match (significant, large) {
        (true, true) => (
            Verdict::Failing,
            format!(
                "z = {z:.1} > {Z_CRITICAL} and {} points worse, more than the allowed {}",
                format_percent(difference).trim_end_matches('%'),
                format_percent(allowed),
            ),
        ),
        (true, false) => (
            Verdict::Passing,
            format!(
                "z = {z:.1} but the difference is within the allowed {}",
                format_percent(allowed)
            ),
        ),
        (false, _) => (
            Verdict::Passing,
            format!(
                "z = {z:.1}, not significant (needs > {Z_CRITICAL} at {:.0}%)",
                SIGNIFICANCE * 100.0
            ),
        ),
    };
    result(verdict, format!("{sides}: {judgement}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::burn::{Shortfall, burn_rate};

    const WINDOW: Duration = Duration::from_secs(300);

    fn side(requests: f64, error_ratio: f64) -> WindowNumbers {
        WindowNumbers {
            requests,
            error_ratio,
            burn_rate: burn_rate(error_ratio, 99.9),
        }
    }

    fn verdict(canary: WindowNumbers, stable: WindowNumbers) -> Verdict {
        compare(
            WINDOW,
            &WindowOutcome::Measured(canary),
            &WindowOutcome::Measured(stable),
            99.9,
        )
        .verdict
    }

    #[test]
    fn a_clearly_worse_canary_fails() {
        // 5% errors against 0.1%, 400 requests each.
        let comparison = compare(
            WINDOW,
            &WindowOutcome::Measured(side(400.0, 0.05)),
            &WindowOutcome::Measured(side(400.0, 0.001)),
            99.9,
        );
        assert_eq!(comparison.verdict, Verdict::Failing, "{comparison:?}");
        assert_eq!(comparison.window, "5m");
        assert!(
            comparison
                .detail
                .starts_with("canary 5.00% errors (400 requests) vs stable 0.100% (400): z = 4."),
            "{}",
            comparison.detail
        );
        assert!(
            comparison
                .detail
                .contains("4.90 points worse, more than the allowed 0.100%")
        );
    }

    #[test]
    fn twice_the_stable_rate_on_few_requests_is_not_a_verdict() {
        // One error in 120 canary requests against 0.4% on 10,000 stable requests.
        assert_eq!(
            verdict(side(120.0, 1.0 / 120.0), side(10_000.0, 0.004)),
            Verdict::Passing
        );
        // Two errors in 150: still within noise.
        assert_eq!(
            verdict(side(150.0, 2.0 / 150.0), side(10_000.0, 0.004)),
            Verdict::Passing
        );
    }

    #[test]
    fn a_significant_but_tiny_difference_passes() {
        // 0.105% against 0.1% on ten million requests each is significant and harmless.
        let canary = side(10_000_000.0, 0.00105);
        let stable = side(10_000_000.0, 0.001);
        assert!(z_score(canary, stable) > Z_CRITICAL);
        assert_eq!(verdict(canary, stable), Verdict::Passing);
    }

    #[test]
    fn a_better_or_equal_canary_passes() {
        assert_eq!(
            verdict(side(5_000.0, 0.0), side(5_000.0, 0.01)),
            Verdict::Passing
        );
        assert_eq!(
            verdict(side(5_000.0, 0.0), side(5_000.0, 0.0)),
            Verdict::Passing
        );
        assert_eq!(z_score(side(5_000.0, 0.0), side(5_000.0, 0.0)), 0.0);
        assert_eq!(z_score(side(5_000.0, 1.0), side(5_000.0, 1.0)), 0.0);
    }

    #[test]
    fn z_score_matches_a_hand_computation() {
        // 30/1000 vs 10/1000: pooled 0.02, se = sqrt(0.02*0.98*0.002) = 0.00626,
        // corrected difference 0.02 - 0.001 = 0.019, z = 3.035.
        let z = z_score(side(1_000.0, 0.03), side(1_000.0, 0.01));
        assert!((z - 3.035).abs() < 0.01, "{z}");
    }

    #[test]
    fn a_side_without_enough_data_makes_no_comparison() {
        let thin = WindowOutcome::NoData {
            shortfall: Shortfall::TooFewRequests {
                requests: 12.0,
                min_requests: 100,
            },
            requests: Some(12.0),
        };
        let comparison = compare(
            WINDOW,
            &WindowOutcome::Measured(side(500.0, 0.2)),
            &thin,
            99.9,
        );
        assert_eq!(comparison.verdict, Verdict::Inconclusive);
        assert_eq!(
            comparison.detail,
            "no comparison: stable 12 requests in 5m, fewer than minRequests 100"
        );
    }
}
