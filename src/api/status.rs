//! `Release.status`: what the controller observed and decided, as SREs read it.
//!
//! Everything the controller needs to continue after a restart lives here (and in the child
//! objects), so the rollout core can be a pure function of spec, status, world and time.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::analysis_status::{AnalysisStatus, Verdict};
use super::outcome::OutcomeRecord;
use super::roadmap::{Horizon, RoadmapKind};
use super::routes::RouteAdditions;

/// Observed state of a Release.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseStatus {
    /// The `metadata.generation` this status was computed from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Where the release stands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,

    /// Why, in one CamelCase word (e.g. `AnalysisPassing`, `CanaryPauseStep`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,

    /// Why, in words and numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,

    /// The roadmap item of the revision in progress, or of the live one when none is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roadmap_item: Option<String>,

    /// The roadmap horizon of `roadmapItem`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roadmap_horizon: Option<Horizon>,

    /// The kind of work of `roadmapItem`, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roadmap_kind: Option<RoadmapKind>,

    /// Revision (template hash) serving as stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_revision: Option<String>,

    /// Roadmap item delivered by the stable revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_roadmap_item: Option<String>,

    /// Revision being rolled out as canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_revision: Option<String>,

    /// Index (0-based) of the step in progress; equal to the number of steps once all are done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_step: Option<i32>,

    /// The step in progress as `n/total` (1-based), for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_progress: Option<String>,

    /// Percent of traffic on the canary.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_weight: Option<i32>,

    /// The cohorts and mirrors Waymark means the route to carry now (Gateway API mode),
    /// recorded before the route is written, and emptied before they are taken away.
    #[serde(default, skip_serializing_if = "RouteAdditions::is_empty")]
    pub traffic: RouteAdditions,

    /// When the current canary was created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_started_at: Option<Time>,

    /// When the current step started (pause durations count from here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_started_at: Option<Time>,

    /// When the timed pause in progress ends (an instant, so the status stays still while the
    /// pause runs; readers compute the time left).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause_until: Option<Time>,

    /// When the canary first became available and its first step began; analysis runs every
    /// `interval` from here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub steps_started_at: Option<Time>,

    /// Since when the canary has been waiting to become available (created, scaled or lost
    /// pods); it is rolled back when this is older than `progressDeadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary_waiting_since: Option<Time>,

    /// Since when the stable has not been available; the release is Degraded when this is older
    /// than `progressDeadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_unavailable_since: Option<Time>,

    /// When the canary was promoted; the old canary is removed `scaleDownDelay` after this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub promoted_at: Option<Time>,

    /// A revision that was rolled back; it is not retried until the template changes or
    /// `waymark retry` is run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_revision: Option<String>,

    /// The latest analysis, its numbers and the consecutive-run counters.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisStatus>,

    /// A manual action (`waymark promote|abort|retry`) written by the CLI to the status
    /// subresource. The controller never writes this field.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request: Option<ManualRequest>,

    /// The id of the last manual request the controller acted on (or ignored as stale).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handled_request: Option<String>,

    // Scale subresource (issue 20): what `kubectl scale` and a HorizontalPodAutoscaler read.
    /// Ready pods of the revision(s) serving: the stable's, plus the canary's while it is part
    /// of the split. The scale subresource's `status.replicas`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<i32>,

    /// The label selector, in its string form, of the pods the Release serves (both roles),
    /// e.g. `app=checkout,waymark.dev/release=checkout`: what a HorizontalPodAutoscaler reads
    /// from the scale subresource to find the pods whose metrics it averages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,

    /// The Deployment `spec.workloadRef` names, as Waymark took it over: its replicas before
    /// Waymark scaled it, given back when the Release is deleted or the reference removed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<WorkloadStatus>,

    /// Standard conditions: `Available`, `Progressing`, `AnalysisHealthy`, `TrafficRouted`,
    /// `SpecValid`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// The timeline of the canary in progress (bounded, oldest routine entries merged); it
    /// moves into the revision's history entry when the canary ends.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub timeline: Vec<TimelineEntry>,

    /// Outcome of earlier revisions, newest first, at most ten.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    pub history: Vec<HistoryEntry>,
}

/// Where a release stands.
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
    strum::VariantArray,
)]
pub enum Phase {
    /// The stable revision serves all traffic and no canary is in progress.
    Healthy,
    /// A canary is moving through its steps.
    Progressing,
    /// A canary waits: for `waymark promote`, for data, or for the error budget.
    Paused,
    /// The canary was rolled back; the stable serves all traffic.
    RolledBack,
    /// The release cannot make progress (invalid spec, missing route, unavailable stable).
    Degraded,
}

impl Phase {
    /// The name as written in the status.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// A manual action requested by a person.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManualRequest {
    /// Unique id of the request; the controller records it in `handledRequest`.
    pub id: String,
    /// What to do.
    pub action: ManualAction,
    /// The revision the request is about, as the person saw it (the canary, the rolled-back or
    /// the pending revision): once the spec's template is another, the request is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Where the release stood when the request was written; once it stands elsewhere (a
    /// promotion began, a rollback happened), the request is stale. Absent in requests written
    /// before this field existed: those are judged on the revision alone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<ReleaseStage>,
    /// The canary's step (0-based, as `currentStep`) when the request was written; a `promote`
    /// finishes that step, so once the canary is at another step the promote is stale.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    /// When it was asked.
    pub requested_at: Time,
    /// Who asked, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// Where a release stands, derived from the revisions in the status (never from the phase,
/// which is a report and may be overridden by Degraded).
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
    strum::VariantArray,
)]
pub enum ReleaseStage {
    /// No stable revision yet: the first template becomes the stable directly.
    FirstRelease,
    /// The stable runs the spec's template; no canary.
    Steady,
    /// The spec has a new revision and no canary runs it yet (maybe held by the error budget).
    Pending,
    /// The spec's revision was rolled back and waits for a new template or a retry.
    RolledBack,
    /// A canary of the spec's revision moves through its steps.
    Canary,
    /// The stable is taking the canary's template.
    Promoting,
}

impl ReleaseStage {
    /// The name as written in the status.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// Manual actions.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ManualAction {
    /// Finish the current step (a pause, or a hold on data or budget) and go on.
    Promote,
    /// Skip the remaining steps and analysis gates and promote now.
    PromoteFull,
    /// Roll the canary back now.
    Abort,
    /// Start a rolled-back revision again from the first step.
    Retry,
}

impl ManualAction {
    /// The command a person types for this action.
    pub fn verb(&self) -> &'static str {
        match self {
            ManualAction::Promote => "promote",
            ManualAction::PromoteFull => "promote --full",
            ManualAction::Abort => "abort",
            ManualAction::Retry => "retry",
        }
    }
}

/// How a revision's release ended.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// It became the stable revision.
    Promoted,
    /// Analysis or the progress deadline rolled it back.
    RolledBack,
    /// A person aborted it.
    Aborted,
    /// A newer revision replaced it before it finished.
    Superseded,
}

impl Outcome {
    /// Lower-case label used in metrics (`promoted`, `rolled_back`, ...).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Outcome::Promoted => "promoted",
            Outcome::RolledBack => "rolled_back",
            Outcome::Aborted => "aborted",
            Outcome::Superseded => "superseded",
        }
    }
}

/// One finished revision.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Template hash.
    pub revision: String,
    /// Roadmap item the revision delivered.
    pub roadmap_item: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When its canary started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When it ended.
    pub finished_at: Time,
    /// For a rollback or abort while analysis was failing: when it first failed. Time to
    /// restore runs from here to `finishedAt`, when traffic went back to the stable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_detected_at: Option<Time>,
    /// Why it ended, as a CamelCase reason.
    pub reason: String,
    /// Why it ended, in words and numbers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The roadmap horizon of the item, when the spec set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon: Option<Horizon>,
    /// The kind of work of the item, when the spec set one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<RoadmapKind>,
    /// What happened during the revision's canary, oldest first: at most 50 entries, the
    /// oldest routine ones (steps, analysis runs) merged.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeline: Vec<TimelineEntry>,
    /// For a promoted revision whose spec set `roadmap.outcome`: the outcome as measured
    /// before the canary and after promotion, and its verdict once known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roadmap_outcome: Option<OutcomeRecord>,
    /// True for a promoted revision whose item was already promoted within
    /// `spec.roadmap.reworkWindow` before it (the fifth delivery figure, rework).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rework: bool,
}

/// One moment of a canary, kept for its post-mortem. Compact on purpose: a Release holds up
/// to ten histories of fifty of these.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineEntry {
    /// When it happened; for merged entries, when the first of them happened.
    pub at: Time,
    /// What happened.
    pub kind: TimelineKind,
    /// For merged entries: when the last of them happened.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<Time>,
    /// For merged entries: how many entries this one stands for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<i32>,
    /// The step (1-based) during which the canary's traffic reached `weight`; for merged steps,
    /// the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<i32>,
    /// Percent of traffic the canary reached then (the route's weight, or the replica split's
    /// effective share), never a target it was held short of; for merged steps, the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<i32>,
    /// For merged steps: the first step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_step: Option<i32>,
    /// For merged steps: the weight the first of them reached.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub from_weight: Option<i32>,
    /// An analysis run's verdict; for merged runs, the worst.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verdict: Option<Verdict>,
    /// The canary's window nearest to (or furthest past) its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub canary: Option<TimelineWindow>,
    /// The stable's window nearest to (or furthest past) its limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable: Option<TimelineWindow>,
    /// The check that failed (or errored) the run, when one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub check: Option<TimelineCheck>,
    /// Runs in a row with this verdict, counted against `limit`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consecutive: Option<i32>,
    /// The limit the verdict counts against (`failureLimit`, `errorLimit`,
    /// `inconclusiveLimit`); absent for a passing run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i32>,
    /// A manual request's action.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<ManualAction>,
    /// Who made a manual request, as the API server authenticated them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub by: Option<String>,
    /// One line: the run's summary, the reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a timeline entry records.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimelineKind {
    /// The canary Deployment was created.
    CanaryCreated,
    /// The canary's pods became available; its steps began.
    CanaryAvailable,
    /// The canary's traffic reached `weight` during `step` (noted once per weight reached).
    Step,
    /// An analysis run (verdict, worst windows, limit).
    Analysis,
    /// The first failing (or erroring) run of a streak, and the streak's first failing run
    /// when errors began it, with their queries.
    FirstFailure,
    /// A person's request (`action`, `by`).
    Request,
    /// All traffic back on the stable.
    TrafficOnStable,
    /// The canary scaled down to zero.
    CanaryScaledDown,
}

/// One window of one role, compact.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineWindow {
    /// The window, e.g. `5m`.
    pub window: String,
    /// Error-budget burn rate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub burn_rate: Option<f64>,
    /// Bad requests / all requests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_ratio: Option<f64>,
    /// Requests in the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requests: Option<f64>,
    /// The burn-rate limit of the window's pair.
    pub max: f64,
    /// The resolved error query (first failure only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_query: Option<String>,
    /// The resolved total query (first failure only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total_query: Option<String>,
}

/// A check that decided a run, compact.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TimelineCheck {
    /// The check's name.
    pub name: String,
    /// Its value, when there was one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
    /// Upper limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// Lower limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The resolved query (first failure only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

/// The Deployment a Release's `spec.workloadRef` names, as Waymark took it over.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadStatus {
    /// The Deployment's name.
    pub name: String,
    /// Its `spec.replicas` when Waymark first read it, before any scale-down: what it gets
    /// back when the Release lets it go.
    pub original_replicas: i32,
    /// The `spec.replicas` Waymark last set on it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaled_down_to: Option<i32>,
}
