//! The pure core: `(Release, Observed, now) -> Decision`. No I/O, no async, no clock reads.
//!
//! The controller reads the world into [`Observed`], calls [`decide`], applies
//! [`Decision::actions`] in order and writes [`Decision::status`].

use k8s_openapi::jiff::Timestamp;

use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use gateway_api::apis::experimental::httproutes::HttpRoute;

use crate::analysis::AnalysisRun;
use crate::api::{Release, ReleaseStatus, RouteAdditions, template_revision};

#[cfg(test)]
mod burn_column_tests;
#[cfg(test)]
mod cohort_tests;
pub mod conditions;
mod decide;
pub mod deletion;
#[cfg(test)]
mod evidence_tests;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod history;
pub mod manual;
#[cfg(test)]
mod narration_tests;
pub mod outcome;
#[cfg(test)]
mod props;
#[cfg(test)]
mod quiet_tests;
pub mod scale;
#[cfg(test)]
mod scale_tests;
pub mod stage;
#[cfg(test)]
mod tests;
pub mod timeline;
pub mod validate;
pub mod workload;

pub use crate::traffic::gateway::RouteState;
pub use decide::CONVERGE_POLL;
pub use decide::credentials::REASON_CREDENTIALS_MISSING;
pub use decide::report::{REASON_INVALID_SPEC, REASON_PROGRESS_DEADLINE, REASON_ROUTE_UNUSABLE};

/// What the controller saw in the cluster for one Release, this reconcile.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Observed {
    /// The `<name>-stable` Deployment, if it exists.
    pub stable: Option<WorkloadState>,
    /// The `<name>-canary` Deployment, if it exists.
    pub canary: Option<WorkloadState>,
    /// Whether the Services `<name>-stable`, `<name>-canary` (and `<name>` in replica mode)
    /// exist with the wanted ports and selectors.
    pub services_ready: bool,
    /// The router's view of traffic (Gateway API mode only; `None` in replica mode).
    pub route: Option<RouteState>,
    /// The HTTPRoute as read (Gateway API mode), for the cohorts and mirrors it carries
    /// ([`crate::traffic::cohort`]); `None` when it was not read, which counts as carrying none.
    pub route_object: Option<HttpRoute>,
    /// The GRPCRoute as read (Gateway API mode with a `grpcRoute`), for the cohorts it carries
    /// ([`crate::traffic::grpc`]); `None` when it was not read, which counts as carrying none.
    pub grpc_route_object: Option<GrpcRoute>,
    /// An analysis run made during this reconcile (the controller runs one when
    /// [`analysis_due`] says so).
    pub analysis: Option<AnalysisRun>,
    /// What the controller last found of the Secrets `spec.analysis.prometheus` names.
    pub credentials: CredentialsCheck,
    /// What became of the controller's last attempt to apply this Release's actions: the core
    /// sets the `Applied` condition from it.
    pub last_apply: LastApply,
    /// The Deployment `spec.workloadRef` names, as read (`NotReferenced` without one).
    pub workload: workload::WorkloadLookup,
    /// The features the route's GatewayClass lists in `status.supportedFeatures` (route
    /// parentRefs → Gateway → GatewayClass; with several parents, what all of them list).
    /// `None`: not reported, or not looked up (the controller looks only while the spec asks
    /// for something that depends on it).
    pub gateway_features: Option<Vec<String>>,
    /// The Deployment `status.workload` names, read when `spec.workloadRef` now names another
    /// (`NotReferenced` otherwise): it is given back before the new one is taken over.
    pub held_workload: workload::WorkloadLookup,
    /// What Prometheus answered to the roadmap outcome measurements due this reconcile (the
    /// controller asks for exactly those [`outcome::measurements_due`] lists).
    pub outcome_answers: Vec<outcome::OutcomeAnswer>,
}

impl Observed {
    /// Whether the route carries a cohort rule or mirror of Release `release`.
    pub fn route_carries_additions(&self, release: &str) -> bool {
        self.route_object
            .as_ref()
            .is_some_and(|route| crate::traffic::cohort::carries_additions(route, release))
            || self
                .grpc_route_object
                .as_ref()
                .is_some_and(|route| crate::traffic::grpc::carries_additions(route, release))
    }

    /// Whether the route carries exactly `wanted` of Release `release`'s cohorts and mirrors
    /// (a route not read, or one Waymark cannot edit, counts as carrying none).
    pub fn route_additions_in_place(&self, release: &str, wanted: &RouteAdditions) -> bool {
        match (&self.route_object, &self.grpc_route_object) {
            (Some(route), _) => {
                let mut edited = route.clone();
                crate::traffic::cohort::set_additions(&mut edited, release, wanted)
                    .is_ok_and(|changed| !changed)
            }
            (None, Some(route)) => {
                let mut edited = route.clone();
                crate::traffic::grpc::set_additions(&mut edited, release, wanted)
                    .is_ok_and(|changed| !changed)
            }
            (None, None) => wanted.is_empty(),
        }
    }
}

/// What became of the controller's last attempt to apply a Release's actions (and its
/// finalizer changes).
#[derive(Clone, Debug, Default, PartialEq)]
pub enum LastApply {
    /// Not known (this process has not applied anything for the Release yet, e.g. just
    /// restarted): the `Applied` condition keeps what it said.
    #[default]
    Unknown,
    /// Every write went through.
    Accepted,
    /// The API server refused a write (RBAC, validation, quota, a webhook) or the object is not
    /// Waymark's; the actions after it were not tried.
    Refused(Refusal),
}

/// A write the API server refused, as the controller reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct Refusal {
    /// The object, e.g. `Deployment shop/checkout-canary`.
    pub object: String,
    /// CamelCase reason, for the condition and the event: `Forbidden`, `QuotaExceeded`, ...
    pub reason: String,
    /// What the API server said (or why Waymark leaves the object alone).
    pub message: String,
}

/// Whether the Secrets named in `spec.analysis.prometheus` (`bearerTokenSecret`, `caSecret`)
/// exist with their keys, as the controller last found them. It reads them when it first sees a
/// generation of the Release and again every [`CREDENTIALS_RECHECK`] while one is missing, not
/// on every reconcile; the core sets the `PrometheusCredentials` condition from it.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum CredentialsCheck {
    /// Not known this time (nothing named, or the API server could not be asked): the condition
    /// keeps what it said.
    #[default]
    Unknown,
    /// Every Secret named exists and holds its key.
    Found,
    /// A Secret named is missing or unusable: the message names the Secret, its key and the
    /// field, and says what to do (the words of the analysis run that would fail on it).
    Missing(String),
}

/// How often a Release whose Prometheus Secret is missing is looked at again (and the Secret
/// read again), so that creating the Secret clears the condition within this time.
pub const CREDENTIALS_RECHECK: std::time::Duration = std::time::Duration::from_secs(30);

/// A child Deployment as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WorkloadState {
    /// Value of its `waymark.dev/revision` label.
    pub revision: Option<String>,
    /// `spec.replicas`.
    pub replicas: i32,
    /// `status.availableReplicas`.
    pub available_replicas: i32,
    /// `status.updatedReplicas`.
    pub updated_replicas: i32,
    /// True when the Deployment controller has observed the latest spec and every desired
    /// replica is updated and available (what `kubectl rollout status` waits for).
    pub available: bool,
    /// True when the Deployment controller has observed the latest spec
    /// (`status.observedGeneration` ≥ `metadata.generation`): until then the counts describe
    /// an older spec, and a change of availability seen in them is not reported.
    pub settled: bool,
}

/// One thing for the controller to do, in order.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Apply the Services `<name>-stable`, `<name>-canary` (and `<name>` in replica mode).
    ApplyServices,
    /// Apply `<name>-stable` with the spec's template at `revision` (first release, promotion).
    ApplyStable { revision: String, replicas: i32 },
    /// Change only the replica count of `<name>-stable`, keeping its template.
    ScaleStable { replicas: i32 },
    /// Apply `<name>-canary` with the spec's template at `revision`.
    ApplyCanary { revision: String, replicas: i32 },
    /// Change only the replica count of `<name>-canary`.
    ScaleCanary { replicas: i32 },
    /// Delete `<name>-canary`.
    DeleteCanary,
    /// Change only `spec.replicas` of the user's Deployment `spec.workloadRef` names (never its
    /// template), through Waymark's field manager.
    ScaleReferenced { name: String, replicas: i32 },
    /// Send `canary_weight` percent of traffic to the canary and the rest to the stable
    /// (Gateway API mode; replica mode moves traffic with the scale actions).
    SetWeight { canary_weight: i32 },
    /// Make the route carry exactly these cohorts and mirrors of the Release (and no others of
    /// its own), leaving the user's rules and the weights as they are (Gateway API mode).
    SetRouteAdditions { additions: RouteAdditions },
    /// Tell of a state change: a line in the controller's log and, when the note's
    /// [`Audience`] says so, a Kubernetes Event on the Release, both from this one note so that
    /// they cannot tell different stories.
    Event(EventNote),
}

/// A state change of a Release, or a write the API server refused, told in the controller's
/// log and (see [`Audience`]) as a Kubernetes Event.
#[derive(Clone, Debug, PartialEq)]
pub struct EventNote {
    /// The Event's type: Normal, or Warning when a person should look.
    pub severity: Severity,
    /// CamelCase reason, e.g. `CanaryPromoted`.
    pub reason: String,
    /// The note; always names the roadmap item.
    pub note: String,
    /// Who hears it: everyone (an Event and a log line) or the log alone.
    pub audience: Audience,
    /// What it tells, which sets its log level.
    pub kind: NoteKind,
}

/// What a note tells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NoteKind {
    /// A state change of the Release (a step, a verdict, a rollback...): logged at `info`,
    /// whatever the Event's type, so that `info` holds the whole story.
    StateChange,
    /// A write the API server refused: logged at `warn`, the controller's own trouble.
    RefusedWrite,
}

/// Where a note is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Audience {
    /// A Kubernetes Event on the Release and a line in the controller's log.
    EventAndLog,
    /// A line in the controller's log only: a state change the Events never told (a step's
    /// pause, a verdict changed, a hold), kept out of the API server so that a canary costs
    /// no more writes than before.
    LogOnly,
}

/// Kubernetes Event type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something went as planned.
    Normal,
    /// Something needs a person's attention.
    Warning,
}

/// The outcome of one decision.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    /// What to do, in order.
    pub actions: Vec<Action>,
    /// The status to write.
    pub status: ReleaseStatus,
    /// When to look again if nothing changes before (end of a pause, next analysis, deadline).
    pub requeue_after: Option<std::time::Duration>,
}

/// Whether an analysis run is due now (so the controller should run one and pass it in
/// [`Observed::analysis`]).
///
/// Due every `analysis.interval` from the canary's first step until promotion, and while a new
/// revision waits under an error-budget policy without a budget figure younger than one interval.
pub fn analysis_due(release: &Release, now: Timestamp) -> bool {
    next_analysis_at(release).is_some_and(|due| due <= now)
}

/// When the next analysis run is due (see [`analysis_due`]); `None` when none is wanted.
pub fn next_analysis_at(release: &Release) -> Option<Timestamp> {
    let default_status = ReleaseStatus::default();
    let status = release.status.as_ref().unwrap_or(&default_status);
    let revision = template_revision(&release.spec.template);
    decide::next_analysis_at(
        &release.spec,
        &revision,
        status,
        decide::analysis_offset(release),
    )
}

/// Make every canary decision for one Release.
///
/// Depends only on its arguments: the place in the rollout lives in `release.status`, so a
/// restarted controller continues where the last one stopped, and feeding the returned status
/// back with the same world changes nothing.
///
/// A spec that fails [`validate::spec`] gets no actions, only a status naming the field.
///
/// With `spec.workloadRef` the template is the referenced Deployment's (see [`workload`]); a
/// reference that cannot be used is reported like an invalid spec, and nothing is scaled.
pub fn decide(release: &Release, observed: &Observed, now: Timestamp) -> Decision {
    let (resolved, problem) = match workload::resolve(release, &observed.workload) {
        Ok(resolved) => (resolved, None),
        Err(error) => (None, Some(error)),
    };
    let release = resolved.as_ref().unwrap_or(release);
    let decider = decide::Decider::new(release, observed, now);
    let checked = match problem {
        Some(error) => Err(error),
        None => validate::spec(release),
    };
    let mut decision = match checked {
        Ok(()) => {
            let mut decision = decider.decide();
            workload::make_way(release, observed, &mut decision);
            decision
        }
        Err(error) => decider.invalid_spec(&error),
    };
    history::stamp_status_roadmap(&mut decision.status, &release.spec.roadmap);
    outcome::fold(&mut decision, observed, now);
    scale::stamp_scale_status(
        &mut decision.status,
        release.status.as_ref(),
        release,
        observed,
    );
    decision
}

#[cfg(test)]
mod roadmap_tag_tests {
    use super::fixtures::{ReleaseBuilder, V1, at, notes, observed};
    use super::*;
    use crate::api::{Horizon, RoadmapKind};

    #[test]
    fn history_entries_and_event_notes_carry_the_horizon_and_kind() {
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.roadmap.horizon = Some(Horizon::Next);
        release.spec.roadmap.kind = Some(RoadmapKind::Debt);
        let first = decide(&release, &observed().route(0).build(), at(0));
        let notes = notes(&first);
        release.status = Some(first.status);
        let decision = decide(&release, &observed().stable(V1, 4).route(0).build(), at(10));
        let entry = &decision.status.history[0];
        assert_eq!(
            (entry.horizon, entry.kind),
            (Some(Horizon::Next), Some(RoadmapKind::Debt))
        );
        assert_eq!(
            (
                decision.status.roadmap_horizon,
                decision.status.roadmap_kind
            ),
            (Some(Horizon::Next), Some(RoadmapKind::Debt))
        );
        assert!(
            notes
                .iter()
                .any(|n| n.contains("PAY-142 (next, debt): first release")),
            "{notes:?}"
        );
    }

    #[test]
    fn without_horizon_and_kind_notes_name_the_item_alone() {
        let mut release = ReleaseBuilder::gateway().build();
        let first = decide(&release, &observed().route(0).build(), at(0));
        release.status = Some(first.status.clone());
        let decision = decide(&release, &observed().stable(V1, 4).route(0).build(), at(10));
        assert_eq!(decision.status.history[0].horizon, None);
        assert!(
            notes(&first)
                .iter()
                .any(|n| n.contains("PAY-142: first release"))
        );
    }
}
