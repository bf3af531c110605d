//! `spec.roadmap.outcome` (the number a roadmap item is meant to move) and what the controller
//! records of it in a promoted revision's `status.history[]` entry.
//!
//! The outcome is for the roadmap, the SLO is for safety: nothing here blocks, holds or reverses
//! a release.

use std::{borrow::Cow, fmt, str::FromStr};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::duration::Duration;

/// The pattern of an outcome window (`baseline`, `after`) and of `roadmap.reworkWindow`: parts
/// of seconds to weeks, e.g. `30s`, `7d`, `1w`. Days and weeks are allowed (unlike the analysis
/// windows) because outcomes are measured over days; CEL cannot read them, so the bounds are
/// checked when the spec is validated.
pub const OUTCOME_WINDOW_PATTERN: &str = r"^([0-9]+(s|m|h|d|w))+$";

/// The shortest outcome window: Prometheus needs a few scrapes in a window to say anything.
pub const OUTCOME_WINDOW_MIN: Duration = Duration::from_secs(10);

/// The longest outcome window and rework window (90 days): longer than most Prometheus
/// retentions, so a longer one would only ever be Inconclusive.
pub const OUTCOME_WINDOW_MAX: Duration = Duration::from_secs(90 * 86_400);

/// Schema of an outcome window ([`OUTCOME_WINDOW_PATTERN`]).
pub fn outcome_window_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "string",
        "pattern": OUTCOME_WINDOW_PATTERN,
        "maxLength": 16,
    })
}

/// The number a roadmap item is meant to move, measured around each promotion of the item.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoadmapOutcome {
    /// The outcome's name as `waymark roadmap` and the metrics show it, e.g.
    /// `checkout-conversion`: 1 to 63 characters of `[A-Za-z0-9._-]`. Required.
    #[schemars(length(min = 1, max = 63), pattern(r"^[A-Za-z0-9._-]{1,63}$"))]
    pub name: String,

    /// PromQL giving one number (a scalar, or a vector whose samples are summed), evaluated
    /// as an instant query at the end of each window. Use `{{window}}` as the range so the
    /// number covers the whole window, e.g.
    /// `sum(increase(orders_total[{{window}}])) / sum(increase(checkout_visits_total[{{window}}]))`.
    /// The analysis placeholders `{{namespace}}`, `{{release}}`, `{{service}}` (the stable
    /// Service), `{{role}}` (`stable`) and `{{revision}}` (the promoted revision) are also
    /// placed, escaped. Required.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// Whether the item is meant to make the number go up (`increase`) or down (`decrease`).
    /// Required.
    pub goal: Goal,

    /// The window before the canary started that the number is compared with; default 7d.
    #[serde(default = "default_outcome_window")]
    #[schemars(schema_with = "outcome_window_schema")]
    pub baseline: Duration,

    /// The window after promotion the number is measured over, once it has passed; default 7d.
    #[serde(default = "default_outcome_window")]
    #[schemars(schema_with = "outcome_window_schema")]
    pub after: Duration,

    /// The smallest change in the goal's direction that counts as met: a percent of the
    /// baseline (`2%`) or an absolute amount in the query's unit (`0.5`); default `0%` (any
    /// change in the goal's direction).
    #[serde(default)]
    pub min_change: MinChange,
}

/// The default of the outcome windows: a week, long enough to average out weekdays.
pub fn default_outcome_window() -> Duration {
    Duration::from_secs(7 * 86_400)
}

/// Which way the outcome's number should move.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::IntoStaticStr,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Goal {
    /// The item should raise the number (conversion, adoption).
    Increase,
    /// The item should lower the number (latency, churn, cost).
    Decrease,
}

/// The smallest change that meets the goal: relative to the baseline, or absolute.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum MinChange {
    /// Percent of the baseline, e.g. `2%` is `Percent(2.0)`.
    Percent(f64),
    /// An amount in the query's unit.
    Absolute(f64),
}

impl Default for MinChange {
    fn default() -> Self {
        MinChange::Percent(0.0)
    }
}

/// Why a `minChange` cannot be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "minChange {0:?} is not a non-negative number or percent; write e.g. 2% (of the baseline) or 0.5 (in the query's unit)"
)]
pub struct MinChangeError(pub String);

impl FromStr for MinChange {
    type Err = MinChangeError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let text = input.trim();
        let (number, percent) = match text.strip_suffix('%') {
            Some(number) => (number, true),
            None => (text, false),
        };
        let value: f64 = number
            .trim()
            .parse()
            .map_err(|_| MinChangeError(input.to_string()))?;
        if !value.is_finite() || value < 0.0 {
            return Err(MinChangeError(input.to_string()));
        }
        Ok(if percent {
            MinChange::Percent(value)
        } else {
            MinChange::Absolute(value)
        })
    }
}

impl fmt::Display for MinChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MinChange::Percent(value) => write!(f, "{value}%"),
            MinChange::Absolute(value) => write!(f, "{value}"),
        }
    }
}

impl Serialize for MinChange {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MinChange {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for MinChange {
    fn schema_name() -> Cow<'static, str> {
        "MinChange".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "pattern": r"^[0-9]+(\.[0-9]+)?%?$",
            "maxLength": 24,
        })
    }
}

/// What the measurement of an outcome concluded.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::IntoStaticStr,
)]
pub enum OutcomeVerdict {
    /// The number moved in the goal's direction by at least `minChange`.
    Met,
    /// It did not (it moved less, not at all, or the other way).
    NotMet,
    /// A number was missing (Prometheus down, no data, not a number) after every retry, or the
    /// change cannot be computed (a percent of a zero baseline): nothing is guessed.
    Inconclusive,
}

impl OutcomeVerdict {
    /// Lower-case label for metrics and tables: `met`, `not_met`, `inconclusive`.
    pub fn label(&self) -> &'static str {
        match self {
            OutcomeVerdict::Met => "met",
            OutcomeVerdict::NotMet => "not_met",
            OutcomeVerdict::Inconclusive => "inconclusive",
        }
    }
}

/// The outcome of one promoted revision, as measured: recorded in its history entry at
/// promotion (with the spec's outcome as it was then, so a later spec change does not change
/// what this revision is judged by) and filled in as the measurements come.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeRecord {
    /// `spec.roadmap.outcome.name` at promotion.
    pub name: String,
    /// `spec.roadmap.outcome.query` at promotion (the template, placeholders unfilled).
    pub query: String,
    /// `spec.roadmap.outcome.goal` at promotion.
    pub goal: Goal,
    /// `spec.roadmap.outcome.minChange` at promotion.
    pub min_change: MinChange,
    /// `spec.roadmap.outcome.baseline` at promotion.
    #[schemars(schema_with = "outcome_window_schema")]
    pub baseline_window: Duration,
    /// `spec.roadmap.outcome.after` at promotion.
    #[schemars(schema_with = "outcome_window_schema")]
    pub after_window: Duration,
    /// The number over `baselineWindow` up to the canary's start, once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baseline: Option<f64>,
    /// The number over `afterWindow` from promotion, once measured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<f64>,
    /// `after − baseline`: in percent of the baseline when `minChange` is a percent, else in
    /// the query's unit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<f64>,
    /// Met, NotMet or Inconclusive; absent while a measurement is still to come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<OutcomeVerdict>,
    /// Failed attempts at the measurement now due (Prometheus down, no data); reset when it
    /// succeeds. At the limit the outcome is Inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<i32>,
    /// When the last failed attempt was made; the next waits a retry delay from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_attempt_at: Option<Time>,
    /// When the verdict was reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured_at: Option<Time>,
    /// Why the last attempt failed, or why the verdict is Inconclusive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_change_reads_percents_and_absolute_amounts() {
        assert_eq!("2%".parse(), Ok(MinChange::Percent(2.0)));
        assert_eq!("0.5".parse(), Ok(MinChange::Absolute(0.5)));
        assert_eq!("1.5 %".parse(), Ok(MinChange::Percent(1.5)));
        assert!("-1%".parse::<MinChange>().is_err());
        assert!("two".parse::<MinChange>().is_err());
        assert_eq!(MinChange::Percent(2.0).to_string(), "2%");
        assert_eq!(MinChange::Absolute(0.25).to_string(), "0.25");
    }
}
