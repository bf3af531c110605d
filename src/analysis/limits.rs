//! `failureLimit`, `errorLimit` and `inconclusiveLimit`: when the consecutive-run counters
//! call for a rollback or a hold.
//!
//! Pure: the counters come from folding runs into `status.analysis`; the controller acts on
//! the answer in the rollout core, replay reports it.

use crate::api::{Analysis, AnalysisStatus};

/// A limit the counters have reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitReached {
    /// `failureLimit` failing runs in a row: roll back (reason `AnalysisFailing`).
    Failures {
        /// Failing runs in a row.
        count: i32,
        /// `spec.analysis.failureLimit`.
        limit: i32,
    },
    /// `errorLimit` erroring runs in a row: roll back (reason `AnalysisError`).
    Errors {
        /// Erroring runs in a row.
        count: i32,
        /// `spec.analysis.errorLimit`.
        limit: i32,
    },
    /// `inconclusiveLimit` inconclusive runs in a row: hold the canary where it is (reason
    /// `AnalysisInconclusive`) until a run that is not Inconclusive or `waymark promote`.
    Inconclusive {
        /// Inconclusive runs in a row.
        count: i32,
        /// `spec.analysis.inconclusiveLimit`.
        limit: i32,
    },
}

impl LimitReached {
    /// True for the limits that roll the canary back (failures, errors).
    pub fn rolls_back(&self) -> bool {
        matches!(
            self,
            LimitReached::Failures { .. } | LimitReached::Errors { .. }
        )
    }

    /// The status reason the rollout core uses for it.
    pub fn reason(&self) -> &'static str {
        match self {
            LimitReached::Failures { .. } => "AnalysisFailing",
            LimitReached::Errors { .. } => "AnalysisError",
            LimitReached::Inconclusive { .. } => "AnalysisInconclusive",
        }
    }
}

impl std::fmt::Display for LimitReached {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitReached::Failures { count, limit } => {
                write!(
                    f,
                    "{count} failing analyses in a row (failureLimit {limit})"
                )
            }
            LimitReached::Errors { count, limit } => {
                write!(f, "{count} analysis errors in a row (errorLimit {limit})")
            }
            // The counter goes on past the limit while the canary is held: the words do not.
            LimitReached::Inconclusive { limit, .. } => write!(
                f,
                "inconclusiveLimit {limit} reached (the last {limit} analyses were inconclusive)"
            ),
        }
    }
}

/// The limit `analysis` (the folded counters) has reached under `limits`, the rollback limits
/// first; `None` while the canary may go on. A limit below 1 counts as 1, as the schema
/// requires.
pub fn limit_reached(analysis: &AnalysisStatus, limits: &Analysis) -> Option<LimitReached> {
    let failure_limit = limits.failure_limit.max(1);
    let error_limit = limits.error_limit.max(1);
    let inconclusive_limit = limits.inconclusive_limit.max(1);
    if analysis.consecutive_failures >= failure_limit {
        Some(LimitReached::Failures {
            count: analysis.consecutive_failures,
            limit: failure_limit,
        })
    } else if analysis.consecutive_errors >= error_limit {
        Some(LimitReached::Errors {
            count: analysis.consecutive_errors,
            limit: error_limit,
        })
    } else if analysis.consecutive_inconclusive >= inconclusive_limit {
        Some(LimitReached::Inconclusive {
            count: analysis.consecutive_inconclusive,
            limit: inconclusive_limit,
        })
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Verdict;

    fn counters(failures: i32, inconclusive: i32, errors: i32) -> AnalysisStatus {
        AnalysisStatus {
            verdict: Verdict::Passing,
            consecutive_failures: failures,
            consecutive_inconclusive: inconclusive,
            consecutive_errors: errors,
            ..Default::default()
        }
    }

    fn limits(failure: i32, inconclusive: i32, error: i32) -> Analysis {
        let mut analysis: Analysis = serde_saphyr::from_str(
            "{prometheus: {address: 'http://p:9090'}, slo: {objective: 99.9, errorQuery: e, totalQuery: t, burnRates: [{long: 5m, short: 1m, max: 14.4}]}}",
        )
        .unwrap();
        analysis.failure_limit = failure;
        analysis.inconclusive_limit = inconclusive;
        analysis.error_limit = error;
        analysis
    }

    #[test]
    fn below_every_limit_the_canary_goes_on() {
        assert_eq!(limit_reached(&counters(1, 5, 3), &limits(2, 6, 4)), None);
    }

    #[test]
    fn reaching_failure_or_error_limit_rolls_back_with_its_reason() {
        let reached = limit_reached(&counters(2, 0, 0), &limits(2, 6, 4)).unwrap();
        assert!(reached.rolls_back());
        assert_eq!(reached.reason(), "AnalysisFailing");
        assert_eq!(
            reached.to_string(),
            "2 failing analyses in a row (failureLimit 2)"
        );
        let reached = limit_reached(&counters(0, 0, 4), &limits(2, 6, 4)).unwrap();
        assert_eq!(reached.reason(), "AnalysisError");
        assert_eq!(
            reached.to_string(),
            "4 analysis errors in a row (errorLimit 4)"
        );
    }

    #[test]
    fn inconclusive_limit_holds_without_rolling_back() {
        let reached = limit_reached(&counters(0, 6, 0), &limits(2, 6, 4)).unwrap();
        assert!(!reached.rolls_back());
        assert_eq!(reached.reason(), "AnalysisInconclusive");
        // Runs go on while the canary is held: the words never count past the limit.
        let past = limit_reached(&counters(0, 9, 0), &limits(2, 6, 4)).unwrap();
        assert_eq!(
            past.to_string(),
            "inconclusiveLimit 6 reached (the last 6 analyses were inconclusive)"
        );
    }

    #[test]
    fn a_limit_of_zero_counts_as_one() {
        assert_eq!(
            limit_reached(&counters(1, 0, 0), &limits(0, 6, 4)),
            Some(LimitReached::Failures { count: 1, limit: 1 })
        );
    }
}
