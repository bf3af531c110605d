//! Error ratio and burn rate over one window, and the multi-window burn-rate rule.
//!
//! A burn rate of 1 spends the error budget exactly over the SLO period; 14.4 spends a 30-day
//! budget's 2% in one hour. A pair of windows fails only when BOTH burn above `max` (Google SRE
//! workbook, "multiwindow, multi-burn-rate alerts"): the long window proves the burn is
//! significant, the short one that it is still going on, so a canary that has recovered is not
//! rolled back for an old spike.

use super::format::{format_count, format_number};
use super::outcome::{QueryFailure, QueryOutcome};
use crate::api::{Duration, Role, Verdict};

/// The error ratio the SLO allows: `1 − objective/100` (0.001 for 99.9).
pub fn allowed_error_ratio(objective_percent: f64) -> f64 {
    1.0 - objective_percent / 100.0
}

/// How many times faster than sustainable the error budget burns: error ratio / allowed ratio.
pub fn burn_rate(error_ratio: f64, objective_percent: f64) -> f64 {
    error_ratio / allowed_error_ratio(objective_percent)
}

/// The numbers of one window with enough data to judge.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowNumbers {
    /// Requests in the window: total rate × window seconds.
    pub requests: f64,
    /// Bad requests / all requests.
    pub error_ratio: f64,
    /// [`burn_rate`] of the error ratio.
    pub burn_rate: f64,
}

/// Why a window gives no number to judge by. Each of these makes the verdict Inconclusive:
/// missing data never counts as passing.
#[derive(Clone, Debug, PartialEq)]
pub enum Shortfall {
    /// Fewer requests than `minRequests`.
    TooFewRequests {
        /// Requests seen.
        requests: f64,
        /// `slo.minRequests`.
        min_requests: i64,
    },
    /// The query matched no series.
    Empty {
        /// `error` or `total`.
        query: &'static str,
    },
    /// The query gave NaN or an infinity (e.g. a division by zero inside it).
    NotFinite {
        /// `error` or `total`.
        query: &'static str,
        /// The value.
        value: f64,
    },
}

impl Shortfall {
    /// The reason in words, without the role: `12 requests in 1m, fewer than minRequests 100`.
    pub fn describe(&self, window: Duration) -> String {
        match self {
            Shortfall::TooFewRequests {
                min_requests: 0, ..
            } => format!("no requests in {window}"),
            Shortfall::TooFewRequests {
                requests,
                min_requests,
            } => format!(
                "{} requests in {window}, fewer than minRequests {min_requests}",
                format_count(*requests)
            ),
            // An error query over a labelled counter has no series until the first error: say
            // how to write it so that "no errors" reads as 0 rather than as no data.
            Shortfall::Empty { query: "error" } => format!(
                "error query returned no data over {window} (append `or vector(0)` if the service simply had no errors)"
            ),
            Shortfall::Empty { query } => format!("{query} query returned no data over {window}"),
            Shortfall::NotFinite { query, value } => {
                format!(
                    "{query} query returned {} over {window}",
                    format_number(*value)
                )
            }
        }
    }
}

/// What one window of one role shows.
#[derive(Clone, Debug, PartialEq)]
pub enum WindowOutcome {
    /// Enough data: the numbers.
    Measured(WindowNumbers),
    /// Not enough data to judge; `requests` is known when the total query answered.
    NoData {
        /// Why.
        shortfall: Shortfall,
        /// Requests in the window, when the total query gave a finite number.
        requests: Option<f64>,
    },
    /// A query failed.
    Failed {
        /// The failure.
        failure: QueryFailure,
        /// Which query: `error` or `total`.
        query: &'static str,
    },
}

impl WindowOutcome {
    /// The verdict this window alone allows: Error, Inconclusive, or Passing when measured
    /// (whether it burns too fast is for the pair to say).
    pub fn data_verdict(&self) -> Verdict {
        match self {
            WindowOutcome::Measured(_) => Verdict::Passing,
            WindowOutcome::NoData { .. } => Verdict::Inconclusive,
            WindowOutcome::Failed { .. } => Verdict::Error,
        }
    }

    /// The numbers, when measured.
    pub fn numbers(&self) -> Option<WindowNumbers> {
        match self {
            WindowOutcome::Measured(numbers) => Some(*numbers),
            _ => None,
        }
    }

    /// Requests in the window, when known.
    pub fn requests(&self) -> Option<f64> {
        match self {
            WindowOutcome::Measured(numbers) => Some(numbers.requests),
            WindowOutcome::NoData { requests, .. } => *requests,
            WindowOutcome::Failed { .. } => None,
        }
    }
}

/// Turns the answers of a window's error and total queries (both rates per second) into its
/// numbers, or into the reason there are none.
///
/// The total decides first: without a trustworthy request count the error ratio means nothing,
/// and "12 requests in 1m" is the more useful thing to read than "no errors".
pub fn measure_window(
    error: &QueryOutcome,
    total: &QueryOutcome,
    window: Duration,
    objective_percent: f64,
    min_requests: i64,
) -> WindowOutcome {
    let no_data = |shortfall, requests| WindowOutcome::NoData {
        shortfall,
        requests,
    };
    // A failed query is an Error whatever the other one says: a syntax error in the error
    // query must not hide behind "no traffic".
    for (outcome, query) in [(total, "total"), (error, "error")] {
        if let QueryOutcome::Failed(failure) = outcome {
            return WindowOutcome::Failed {
                failure: failure.clone(),
                query,
            };
        }
    }
    let total_rate = match total {
        // `Failed` was returned above; it is matched here only to be exhaustive.
        QueryOutcome::Failed(_) | QueryOutcome::NoData => {
            return no_data(Shortfall::Empty { query: "total" }, None);
        }
        QueryOutcome::Value(value) if !value.is_finite() => {
            return no_data(
                Shortfall::NotFinite {
                    query: "total",
                    value: *value,
                },
                None,
            );
        }
        QueryOutcome::Value(value) => *value,
    };
    let requests = total_rate * window.as_secs_f64();
    let error_rate = match error {
        _ if requests < min_requests as f64 || requests <= 0.0 => {
            return no_data(
                Shortfall::TooFewRequests {
                    requests,
                    min_requests,
                },
                Some(requests),
            );
        }
        // `Failed` was returned above; it is matched here only to be exhaustive.
        QueryOutcome::Failed(_) | QueryOutcome::NoData => {
            return no_data(Shortfall::Empty { query: "error" }, Some(requests));
        }
        QueryOutcome::Value(value) if !value.is_finite() => {
            return no_data(
                Shortfall::NotFinite {
                    query: "error",
                    value: *value,
                },
                Some(requests),
            );
        }
        QueryOutcome::Value(value) => *value,
    };
    let error_ratio = error_rate / total_rate;
    WindowOutcome::Measured(WindowNumbers {
        requests,
        error_ratio,
        burn_rate: burn_rate(error_ratio, objective_percent),
    })
}

/// The multi-window rule for one `burnRates` pair.
///
/// Failing when both windows burn above `max`. Otherwise the worst data verdict of the two
/// windows (Error, then Inconclusive), so a pair with a window short of requests is
/// Inconclusive even if the other window looks fine: missing data never passes.
pub fn pair_verdict(long: &WindowOutcome, short: &WindowOutcome, max: f64) -> Verdict {
    match (long.numbers(), short.numbers()) {
        (Some(long), Some(short)) if long.burn_rate > max && short.burn_rate > max => {
            Verdict::Failing
        }
        _ => super::verdict::worst([long.data_verdict(), short.data_verdict()]),
    }
}

/// The burn rate that the pair's rule compares with `max`: the lower of its two windows, since
/// the pair fails only when both exceed `max`.
pub fn pair_burn(long: &WindowOutcome, short: &WindowOutcome) -> Option<f64> {
    Some(long.numbers()?.burn_rate.min(short.numbers()?.burn_rate))
}

/// One `burnRates` pair judged for one role.
#[derive(Clone, Debug, PartialEq)]
pub struct PairJudgement {
    /// The pair's long window.
    pub long: Duration,
    /// The pair's short window.
    pub short: Duration,
    /// The burn rate both windows must stay under.
    pub max: f64,
    /// What the long window measured.
    pub long_outcome: WindowOutcome,
    /// What the short window measured.
    pub short_outcome: WindowOutcome,
    /// The multi-window rule's verdict ([`pair_verdict`]).
    pub verdict: Verdict,
    /// The lower burn of the two windows: what the rule compares with `max`.
    pub burn: Option<f64>,
}

/// One role judged by its SLO.
#[derive(Clone, Debug, PartialEq)]
pub struct RoleJudgement {
    /// Canary or stable.
    pub role: Role,
    /// The role's Service.
    pub service: String,
    /// Each `burnRates` pair judged.
    pub pairs: Vec<PairJudgement>,
    /// The worst verdict of the pairs.
    pub verdict: Verdict,
    /// Per distinct window, in the order of `RoleMeasurement::windows`.
    pub windows: Vec<(Duration, WindowOutcome)>,
}

impl RoleJudgement {
    /// The pair nearest to (or furthest past) its limit: the one worth showing.
    pub fn hottest_pair(&self) -> Option<&PairJudgement> {
        self.pairs
            .iter()
            .filter_map(|pair| Some((pair, pair.burn? / pair.max)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(pair, _)| pair)
    }

    /// The outcome of `window` for this role.
    pub fn outcome(&self, window: Duration) -> Option<&WindowOutcome> {
        self.windows
            .iter()
            .find(|(candidate, _)| *candidate == window)
            .map(|(_, outcome)| outcome)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn measured(burn: f64) -> WindowOutcome {
        WindowOutcome::Measured(WindowNumbers {
            requests: 1_000.0,
            error_ratio: burn * 0.001,
            burn_rate: burn,
        })
    }

    #[test]
    fn burn_rate_is_error_ratio_over_allowed_ratio() {
        assert!((allowed_error_ratio(99.9) - 0.001).abs() < 1e-12);
        assert!((burn_rate(0.05, 99.9) - 50.0).abs() < 1e-9);
        assert!((burn_rate(0.0144, 99.9) - 14.4).abs() < 1e-9);
        assert!((burn_rate(0.01, 99.0) - 1.0).abs() < 1e-9);
        assert_eq!(burn_rate(0.0, 99.9), 0.0);
    }

    #[test]
    fn measures_requests_ratio_and_burn_from_rates() {
        // 40 requests/s, 2 of them errors, over 5 minutes.
        let outcome = measure_window(
            &QueryOutcome::Value(2.0),
            &QueryOutcome::Value(40.0),
            Duration::from_secs(300),
            99.9,
            100,
        );
        let numbers = outcome.numbers().unwrap();
        assert!((numbers.requests - 12_000.0).abs() < 1e-9);
        assert!((numbers.error_ratio - 0.05).abs() < 1e-12);
        assert!((numbers.burn_rate - 50.0).abs() < 1e-6);
    }

    #[test]
    fn fewer_requests_than_min_requests_is_no_data() {
        // 0.2 requests/s over 1m = 12 requests.
        let outcome = measure_window(
            &QueryOutcome::Value(0.2),
            &QueryOutcome::Value(0.2),
            MINUTE,
            99.9,
            100,
        );
        let WindowOutcome::NoData {
            shortfall,
            requests,
        } = &outcome
        else {
            panic!("{outcome:?}");
        };
        assert_eq!(requests.map(f64::round), Some(12.0));
        assert_eq!(
            shortfall.describe(MINUTE),
            "12 requests in 1m, fewer than minRequests 100"
        );
        assert_eq!(outcome.data_verdict(), Verdict::Inconclusive);
        // Zero traffic is never enough, even with minRequests 0.
        let idle = measure_window(
            &QueryOutcome::Value(0.0),
            &QueryOutcome::Value(0.0),
            MINUTE,
            99.9,
            0,
        );
        assert_eq!(idle.data_verdict(), Verdict::Inconclusive);
    }

    #[test]
    fn empty_nan_and_infinite_results_are_no_data() {
        let cases = [
            (
                QueryOutcome::Value(1.0),
                QueryOutcome::NoData,
                "total query returned no data over 1m",
            ),
            (
                QueryOutcome::NoData,
                QueryOutcome::Value(10.0),
                "error query returned no data over 1m",
            ),
            (
                QueryOutcome::Value(f64::NAN),
                QueryOutcome::Value(10.0),
                "error query returned NaN over 1m",
            ),
            (
                QueryOutcome::Value(1.0),
                QueryOutcome::Value(f64::INFINITY),
                "total query returned +Inf over 1m",
            ),
        ];
        for (error, total, reason) in cases {
            let outcome = measure_window(&error, &total, MINUTE, 99.9, 100);
            let WindowOutcome::NoData { shortfall, .. } = &outcome else {
                panic!("{outcome:?}");
            };
            assert!(
                shortfall.describe(MINUTE).starts_with(reason),
                "{outcome:?}"
            );
            assert_eq!(outcome.data_verdict(), Verdict::Inconclusive);
        }
    }

    #[test]
    fn a_failed_query_is_an_error() {
        let failure = QueryFailure::Unreachable {
            address: "http://p:9090".into(),
            reason: "connection refused".into(),
        };
        let outcome = measure_window(
            &QueryOutcome::Failed(failure.clone()),
            &QueryOutcome::Value(100.0),
            MINUTE,
            99.9,
            100,
        );
        assert_eq!(
            outcome,
            WindowOutcome::Failed {
                failure,
                query: "error"
            }
        );
        assert_eq!(outcome.data_verdict(), Verdict::Error);
        // Even when the other query shows no traffic.
        let rejected = QueryFailure::Rejected {
            address: "http://p:9090".into(),
            message: "bad_data: parse error".into(),
        };
        let outcome = measure_window(
            &QueryOutcome::Failed(rejected),
            &QueryOutcome::NoData,
            MINUTE,
            99.9,
            100,
        );
        assert_eq!(outcome.data_verdict(), Verdict::Error);
    }

    #[test]
    fn a_pair_fails_only_when_both_windows_burn_above_max() {
        assert_eq!(
            pair_verdict(&measured(20.0), &measured(15.0), 14.4),
            Verdict::Failing
        );
        // A spike that is over (short window back to normal) is not a verdict.
        assert_eq!(
            pair_verdict(&measured(20.0), &measured(2.0), 14.4),
            Verdict::Passing
        );
        // A fresh spike the long window does not confirm yet is not one either.
        assert_eq!(
            pair_verdict(&measured(3.0), &measured(40.0), 14.4),
            Verdict::Passing
        );
        // Exactly at the limit is allowed.
        assert_eq!(
            pair_verdict(&measured(14.4), &measured(14.4), 14.4),
            Verdict::Passing
        );
        assert_eq!(pair_burn(&measured(20.0), &measured(15.0)), Some(15.0));
    }

    #[test]
    fn a_pair_with_a_window_short_of_data_is_inconclusive_or_error() {
        let thin = WindowOutcome::NoData {
            shortfall: Shortfall::TooFewRequests {
                requests: 12.0,
                min_requests: 100,
            },
            requests: Some(12.0),
        };
        let failed = WindowOutcome::Failed {
            failure: QueryFailure::TimedOut {
                address: "http://p:9090".into(),
                timeout: Duration::from_secs(10),
            },
            query: "total",
        };
        assert_eq!(
            pair_verdict(&measured(0.5), &thin, 14.4),
            Verdict::Inconclusive
        );
        assert_eq!(
            pair_verdict(&measured(50.0), &thin, 14.4),
            Verdict::Inconclusive
        );
        assert_eq!(pair_verdict(&thin, &failed, 14.4), Verdict::Error);
        assert_eq!(pair_burn(&measured(0.5), &thin), None);
    }
}
