//! Prometheus analysis: PromQL templating and escaping, the Prometheus client, burn-rate and
//! error-budget math.
//!
//! The pure parts (templating, burn rates, the baseline comparison, the budget, verdicts, the
//! summary line, the limits and the replay fold) are synchronous functions of plain values
//! and import nothing from the HTTP client; only [`client`] and [`mod@run`] talk to Prometheus,
//! and replay's range queries go through the same client. A run never fails: what goes wrong
//! becomes an `Error` verdict with a message.
//!
//! One function decides a verdict from numbers: [`judge::judge`]. The controller feeds it the
//! answers of instant queries ([`run::measure`]); replay feeds it one instant of range queries
//! ([`outcome::SampledSeries::at`]); both pair answers with queries through
//! [`run::Plan::assemble`].
//!
//! - [`outcome`]: what a query answered (value, no data, failure), as plain values.
//! - [`template`]: the one templating function and [`validate_queries`] for `SpecValid`.
//! - [`burn`]: error ratio, burn rate, the multi-window rule, `minRequests`.
//! - [`baseline`]: canary against stable, and why that rule.
//! - [`budget`]: the error budget left over `slo.budget.period`.
//! - [`judge`]: all of the above into an [`AnalysisRun`].
//! - [`limits`]: when `failureLimit`, `errorLimit` or `inconclusiveLimit` is reached.
//! - [`replay`]: judged runs folded into a replayed canary: when it would have rolled back.
//! - [`client`], [`clients`], [`mod@run`]: the Prometheus client, one per address, and the I/O
//!   shell.

pub mod baseline;
pub mod budget;
pub mod burn;
pub mod client;
pub mod clients;
pub mod judge;
pub mod limits;
pub mod outcome;
pub mod replay;
pub mod run;
pub mod summary;
pub mod template;
pub mod verdict;

use k8s_openapi::jiff::Timestamp;

use crate::api::{BaselineComparison, CheckResult, RoleAnalysis, Verdict};

pub use clients::Clients;
pub use outcome::{QueryFailure, QueryOutcome, SampledSeries};
pub use template::{QueryError, TemplateError, validate_queries};

/// The result of one analysis run, before the rollout core folds it into the status.
#[derive(Clone, Debug, PartialEq)]
pub struct AnalysisRun {
    /// Overall verdict: the worst of the canary SLO, the baseline comparison and the checks
    /// (Failing > Error > Inconclusive > Passing).
    pub verdict: Verdict,
    /// When the run finished.
    pub ran_at: Timestamp,
    /// The revision that was judged (the canary's).
    pub revision: Option<String>,
    /// The canary's SLO windows (`None` when no canary was judged, e.g. a budget-only run).
    pub canary: Option<RoleAnalysis>,
    /// The stable's SLO windows (baseline).
    pub stable: Option<RoleAnalysis>,
    /// Canary against stable.
    pub comparison: Vec<BaselineComparison>,
    /// The extra checks.
    pub checks: Vec<CheckResult>,
    /// Fraction of the service's error budget left over `slo.budget.period`, when it is set
    /// and Prometheus gave the figure: 1 untouched, 0 spent, below 0 overspent (−0.5: 150%
    /// spent), so that `freezeBelow: 0` holds new revisions once the budget is overspent.
    pub error_budget_remaining: Option<f64>,
    /// One line, why: `canary burns 21.3x of 14.4x over 5m and 1m (4,812 requests)`.
    pub summary: String,
    /// Highest canary burn rate against its limit, e.g. `0.8x/14.4x`.
    pub burn: Option<String>,
}

/// Secrets resolved by the controller for one Release's Prometheus connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credentials {
    /// Value of `spec.analysis.prometheus.bearerTokenSecret`, when set.
    pub bearer_token: Option<String>,
    /// PEM CA bundle from `spec.analysis.prometheus.caSecret`, when set.
    pub ca_pem: Option<Vec<u8>>,
}

/// Run one analysis of `release` (canary and stable SLO windows, comparison, checks, budget).
///
/// Never fails: an unreachable Prometheus or an invalid query is an `Error` verdict whose
/// summary names the address and Prometheus's error text.
///
/// Queries of one run go to Prometheus concurrently, over the client `clients` keeps for the
/// address (connections are reused across runs and Releases).
pub async fn run(
    release: &crate::api::Release,
    credentials: &Credentials,
    clients: &Clients,
) -> AnalysisRun {
    run::run(release, credentials, clients).await
}
