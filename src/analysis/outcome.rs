//! What Prometheus answered, as plain values: the input of the pure judging code.
//!
//! These types know no I/O. The HTTP client (`client.rs`) produces them from instant queries;
//! replay produces them from one step of range queries ([`SampledSeries::at`]); the judge
//! (`judge.rs`) turns them into verdicts either way.

use std::collections::BTreeMap;

use crate::api::Duration;

/// What one instant query gave.
#[derive(Clone, Debug, PartialEq)]
pub enum QueryOutcome {
    /// The value: a scalar, or the sum of the vector's samples (may be NaN or infinite).
    Value(f64),
    /// An empty vector: no series matched.
    NoData,
    /// Prometheus could not answer.
    Failed(QueryFailure),
}

/// Why Prometheus gave no answer, worded so an SRE knows where to look.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QueryFailure {
    /// No connection: refused, DNS, TLS handshake.
    #[error("Prometheus at {address} unreachable: {reason}")]
    Unreachable {
        /// `spec.analysis.prometheus.address`.
        address: String,
        /// The innermost cause, e.g. `connection refused`.
        reason: String,
    },
    /// No answer within `spec.analysis.prometheus.timeout`.
    #[error("Prometheus at {address} did not answer within {timeout}")]
    TimedOut {
        /// `spec.analysis.prometheus.address`.
        address: String,
        /// `spec.analysis.prometheus.timeout`.
        timeout: Duration,
    },
    /// Prometheus answered with an error of its own (syntax error, execution error).
    #[error("Prometheus at {address} rejected the query: {message}")]
    Rejected {
        /// `spec.analysis.prometheus.address`.
        address: String,
        /// Prometheus's error type and text, e.g. `bad_data: 1:5: parse error: ...`.
        message: String,
    },
    /// Something answered, but not with a usable Prometheus response (a proxy's 401 or 404,
    /// a range vector).
    #[error("Prometheus at {address} gave an unusable answer: {reason}")]
    BadResponse {
        /// `spec.analysis.prometheus.address`.
        address: String,
        /// What was wrong with it.
        reason: String,
    },
    /// The connection settings themselves are unusable (bad address, token, CA bundle).
    #[error("cannot query Prometheus at {address}: {reason}")]
    Setup {
        /// `spec.analysis.prometheus.address`.
        address: String,
        /// What to fix.
        reason: String,
    },
}

impl QueryFailure {
    /// The failure as one line naming the query that met it (`what`, e.g. `canary error query
    /// over 5m`) where that helps: a rejected query. Connection failures are the same for every
    /// query, so they are worded alone.
    pub fn in_context(&self, what: &str) -> String {
        match self {
            QueryFailure::Rejected { address, message } => {
                format!("Prometheus at {address} rejected the {what}: {message}")
            }
            QueryFailure::BadResponse { address, reason } => {
                format!("Prometheus at {address} gave an unusable answer to the {what}: {reason}")
            }
            other => other.to_string(),
        }
    }
}

/// What one range query gave: per evaluation instant (Unix seconds), the sum of the samples
/// of every series at that instant, as an instant query at that moment would have summed
/// its vector.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SampledSeries {
    values: BTreeMap<i64, f64>,
}

impl SampledSeries {
    /// Adds one series' sample at `at` (Unix seconds) to the instant's sum.
    pub fn add(&mut self, at: i64, value: f64) {
        *self.values.entry(at).or_insert(0.0) += value;
    }

    /// The answer an instant query at `at` would have given: the sum, or no data when no series
    /// had a sample then.
    pub fn at(&self, at: i64) -> QueryOutcome {
        match self.values.get(&at) {
            Some(value) => QueryOutcome::Value(*value),
            None => QueryOutcome::NoData,
        }
    }

    /// How many instants have a value.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True when no instant has a value.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sampled_series_sums_series_per_instant_and_has_no_data_between() {
        let mut series = SampledSeries::default();
        series.add(60, 2.5);
        series.add(60, 0.5);
        series.add(90, 1.0);
        assert_eq!(series.at(60), QueryOutcome::Value(3.0));
        assert_eq!(series.at(90), QueryOutcome::Value(1.0));
        assert_eq!(series.at(75), QueryOutcome::NoData);
        assert_eq!(series.len(), 2);
    }
}
