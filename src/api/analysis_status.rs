//! `Release.status.analysis`: the numbers behind each verdict.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The verdict of one analysis run. The default, for a status no run has filled yet, is
/// Inconclusive: missing data never counts as passing.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    Default,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
pub enum Verdict {
    /// Every rule holds with enough data.
    Passing,
    /// A burn-rate rule, the baseline comparison or a check is broken.
    Failing,
    /// Too little data to tell (few requests, empty result, NaN). Never counts as passing.
    #[default]
    Inconclusive,
    /// Prometheus could not answer (unreachable, timeout, invalid query).
    Error,
}

impl Verdict {
    /// The name as written in the status.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// The latest analysis run and the counters the rollout acts on. `Default` is a status no run
/// has filled yet (Inconclusive, no numbers, counters at 0): literals name only what they set.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct AnalysisStatus {
    /// Verdict of the latest run.
    pub verdict: Verdict,
    /// When the latest run finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_run_at: Option<Time>,
    /// The revision the latest run judged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// The latest run in one line, e.g. `canary burns 21.3x of 14.4x over 5m and 1m (4,812 requests)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    /// Highest canary burn rate against its limit, e.g. `0.8x/14.4x` (the Burn column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn: Option<String>,
    /// The canary's SLO windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<RoleAnalysis>,
    /// The stable's SLO windows, the baseline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<RoleAnalysis>,
    /// Canary against stable over the same windows.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub comparison: Vec<BaselineComparison>,
    /// The extra checks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// Failing runs in a row.
    #[serde(default)]
    pub consecutive_failures: i32,
    /// Inconclusive runs in a row.
    #[serde(default)]
    pub consecutive_inconclusive: i32,
    /// Error runs in a row.
    #[serde(default)]
    pub consecutive_errors: i32,
    /// When the current run of Failing or Error verdicts began; cleared by any other verdict.
    /// Time to restore is counted from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failing_since: Option<Time>,
    /// Fraction of the service's error budget left over the budget period: 1 untouched, 0
    /// spent, below 0 overspent (-0.5 means 150% spent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_budget_remaining: Option<f64>,
}

/// The SLO windows of one role (canary or stable).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RoleAnalysis {
    /// Verdict for this role alone.
    pub verdict: Verdict,
    /// The Service whose metrics were read.
    pub service: String,
    /// One entry per window of each burn-rate pair.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub windows: Vec<WindowResult>,
}

/// The SLO over one window.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct WindowResult {
    /// The window, e.g. `5m`.
    pub window: String,
    /// Bad requests / all requests over the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// Requests in the window (total rate × window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// Error ratio divided by the sustainable error ratio (1 − objective).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<f64>,
    /// The burn-rate limit of the pair this window belongs to.
    pub max: f64,
    /// Why this window gives no number, when it gives none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// The resolved error query, ready to paste into Prometheus.
    pub error_query: String,
    /// The resolved total query, ready to paste into Prometheus.
    pub total_query: String,
}

/// Canary against stable over one window.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaselineComparison {
    /// The window compared.
    pub window: String,
    /// Verdict of the comparison alone.
    pub verdict: Verdict,
    /// The statistic used and its value, in words.
    pub detail: String,
}

/// One extra check.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// The check's name.
    pub name: String,
    /// Verdict of this check.
    pub verdict: Verdict,
    /// Its value, when the query returned one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Upper limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Lower limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The resolved query.
    pub query: String,
    /// Why there is no value, when there is none (error text, empty result).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}
