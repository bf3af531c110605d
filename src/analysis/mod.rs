//! Prometheus analysis, pure: PromQL templating and escaping, the plan of a run's queries,
//! burn-rate and error-budget math, verdicts and the words that explain them.
//!
//! Everything here is a synchronous function of plain values: no HTTP client, no clock, no
//! async (`tests/architecture.rs` fails the build's tests when one creeps in). Asking
//! Prometheus is the shell's (`controller::prometheus`), for the controller's runs and for
//! replay's range queries alike. A run never fails: what goes wrong becomes an `Error` verdict
//! with a message.
//!
//! One function decides a verdict from numbers: [`judge::judge`]. The controller feeds it the
//! answers of instant queries; replay feeds it one instant of range queries
//! ([`outcome::SampledSeries::at`]); both pair answers with queries through
//! [`plan::Plan::assemble`].
//!
//! - [`outcome`]: what a query answered (value, no data, failure), as plain values.
//! - [`template`]: the one templating function and [`validate_queries`] for `SpecValid`.
//! - [`plan`]: every query of one run, resolved from the Release, and its answers paired back.
//! - [`format`]: the number formats every message uses.
//! - [`burn`]: error ratio, burn rate, the multi-window rule, `minRequests`.
//! - [`baseline`]: canary against stable, and why that rule.
//! - [`budget`]: the error budget left over `slo.budget.period`.
//! - [`judge`]: all of the above into an [`AnalysisRun`].
//! - [`fold`]: a run folded into `status.analysis` (the consecutive-run counters).
//! - [`limits`]: when `failureLimit`, `errorLimit` or `inconclusiveLimit` is reached.
//! - [`roadmap_outcome`]: a roadmap item's outcome around a promotion (when due, the verdict)
//!   and rework.
//! - [`replay`]: judged runs folded into a replayed canary: when it would have rolled back.

pub mod baseline;
pub mod budget;
pub mod burn;
pub mod fold;
pub mod format;
pub mod judge;
pub mod limits;
pub mod outcome;
pub mod plan;
pub mod replay;
pub mod roadmap_outcome;
pub mod summary;
pub mod template;
pub mod verdict;

use k8s_openapi::jiff::Timestamp;

use crate::api::{BaselineComparison, CheckResult, RoleAnalysis, Verdict};

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
