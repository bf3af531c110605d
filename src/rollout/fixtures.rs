//! Builders for rollout tests: releases, observed worlds, analysis runs, and a small simulator
//! that applies a decision's actions to the world the way the controller and Kubernetes would.
//!
//! The simulator gives each action its meaning a second time, in a few lines: the mock-API test
//! `the_simulator_predicts_the_children_the_shell_writes` (src/controller/mock_tests.rs) runs
//! the same decisions through the real shell and fails when the two worlds differ.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{Action, Decision, Observed, RouteState, WorkloadState, decide};
use crate::analysis::AnalysisRun;
use crate::api::{
    ManualAction, ManualRequest, Release, ReleaseStatus, RoleAnalysis, Verdict, WindowResult,
    template_revision,
};
pub use crate::fixtures::*;

pub fn workload(image: &str, replicas: i32, available: bool) -> WorkloadState {
    WorkloadState {
        revision: Some(revision_of(image)),
        replicas,
        available_replicas: if available { replicas } else { 0 },
        updated_replicas: replicas,
        available,
        settled: true,
    }
}

pub struct ObservedBuilder {
    observed: Observed,
}

pub fn observed() -> ObservedBuilder {
    ObservedBuilder {
        observed: Observed {
            services_ready: true,
            ..Default::default()
        },
    }
}

impl ObservedBuilder {
    pub fn stable(mut self, image: &str, replicas: i32) -> Self {
        self.observed.stable = Some(workload(image, replicas, true));
        self
    }
    pub fn stable_unavailable(mut self, image: &str, replicas: i32) -> Self {
        self.observed.stable = Some(workload(image, replicas, false));
        self
    }
    pub fn canary_available(mut self, image: &str, replicas: i32) -> Self {
        self.observed.canary = Some(workload(image, replicas, true));
        self
    }
    pub fn canary_unavailable(mut self, image: &str, replicas: i32) -> Self {
        self.observed.canary = Some(workload(image, replicas, false));
        self
    }
    pub fn route(mut self, canary_weight: i32) -> Self {
        self.observed.route = Some(RouteState::Ready { canary_weight });
        self
    }
    pub fn route_unusable(mut self, message: &str) -> Self {
        self.observed.route = Some(RouteState::Unusable {
            message: message.into(),
        });
        self
    }
    pub fn analysis(mut self, run: AnalysisRun) -> Self {
        self.observed.analysis = Some(run);
        self
    }
    pub fn build(self) -> Observed {
        self.observed
    }
}

/// An analysis run of `image`'s revision with `verdict`, finished at `ran_at`.
pub fn run(image: &str, verdict: Verdict, ran_at: Timestamp) -> AnalysisRun {
    let burn = match verdict {
        Verdict::Failing => 21.3,
        _ => 0.8,
    };
    AnalysisRun {
        verdict,
        ran_at,
        revision: Some(revision_of(image)),
        canary: Some(RoleAnalysis {
            verdict,
            service: "checkout-canary".into(),
            windows: vec![WindowResult {
                window: "5m".into(),
                error_ratio: Some(burn * 0.001),
                requests: Some(4812.0),
                burn_rate: Some(burn),
                max: 14.4,
                note: None,
                error_query: "sum(rate(http_requests_total{code=~\"5..\"}[5m]))".into(),
                total_query: "sum(rate(http_requests_total[5m]))".into(),
            }],
        }),
        stable: None,
        comparison: vec![],
        checks: vec![],
        error_budget_remaining: Some(0.73),
        summary: format!("canary burns {burn}x of 14.4x over 5m and 1m (4,812 requests)"),
        burn: Some(format!("{burn}x/14.4x")),
    }
}

pub fn request(id: &str, action: ManualAction, at_secs: i64) -> ManualRequest {
    ManualRequest {
        id: id.into(),
        action,
        revision: None,
        stage: None,
        step: None,
        requested_at: Time(at(at_secs)),
        requested_by: Some("sre@example.com".into()),
    }
}

/// A release and its world, moved on by applying each decision the way the controller and
/// Kubernetes would (new pods become available at once unless `slow_pods` is set).
#[derive(Clone)]
pub struct Sim {
    pub release: Release,
    pub observed: Observed,
    pub now: Timestamp,
    pub slow_pods: bool,
    /// The canary's traffic after every action that changed it: the route's canary weight
    /// (Gateway API) or the canary's pod count (replica split), with the canary's revision.
    pub traffic: Vec<(Option<String>, i32)>,
}

impl Sim {
    /// A gateway release already Healthy on `V1`, then moved to `V2`.
    pub fn canary_of(builder: ReleaseBuilder) -> Self {
        let mut sim = Sim::new(builder.image(V1).build());
        sim.tick(0);
        sim.release.spec.template = template(V2);
        sim
    }

    pub fn new(release: Release) -> Self {
        let gateway = release.spec.traffic.gateway_api.is_some();
        Self {
            release,
            observed: Observed {
                services_ready: false,
                route: gateway.then_some(RouteState::Ready { canary_weight: 0 }),
                // The user's route, to carry the cohorts and mirrors as the real one would.
                route_object: gateway.then(|| {
                    crate::fixtures::http_route(vec![vec![crate::fixtures::route_backend(
                        "checkout-stable",
                        None,
                    )]])
                }),
                ..Default::default()
            },
            now: at(0),
            slow_pods: false,
            traffic: Vec::new(),
        }
    }

    /// Move the clock by `secs`, decide, apply; returns the decision.
    pub fn tick(&mut self, secs: i64) -> Decision {
        self.now = self
            .now
            .checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
            .unwrap();
        let decision = decide(&self.release, &self.observed, self.now);
        self.apply(&decision);
        self.observed.analysis = None;
        decision
    }

    /// Decide repeatedly at the same instant until nothing but events is asked for.
    pub fn settle(&mut self) -> Decision {
        let mut decision = self.tick(0);
        for _ in 0..20 {
            if decision
                .actions
                .iter()
                .all(|a| matches!(a, Action::Event(_)))
            {
                break;
            }
            decision = self.tick(0);
        }
        decision
    }

    /// Write the decision's status (the controller does so first), then apply its actions.
    pub fn apply(&mut self, decision: &Decision) {
        self.apply_prefix(decision, decision.actions.len());
    }

    /// Write the decision's status, then apply only its first `keep` actions: a controller
    /// stopped in the middle of a transition.
    pub fn apply_prefix(&mut self, decision: &Decision, keep: usize) {
        self.release.status = Some(decision.status.clone());
        let spec_revision = template_revision(&self.release.spec.template);
        let available = !self.slow_pods;
        for action in decision.actions.iter().take(keep) {
            match action {
                Action::ApplyServices => self.observed.services_ready = true,
                Action::ApplyStable { revision, replicas } => {
                    assert_eq!(
                        revision, &spec_revision,
                        "ApplyStable uses the spec template"
                    );
                    self.observed.stable = Some(applied(
                        self.observed.stable.as_ref(),
                        revision,
                        *replicas,
                        available,
                    ));
                }
                Action::ScaleStable { replicas } => {
                    if let Some(stable) = self.observed.stable.as_mut() {
                        *stable = scaled(stable, *replicas, available);
                    }
                }
                Action::ApplyCanary { revision, replicas } => {
                    self.observed.canary = Some(applied(
                        self.observed.canary.as_ref(),
                        revision,
                        *replicas,
                        available,
                    ));
                }
                Action::ScaleCanary { replicas } => {
                    if let Some(canary) = self.observed.canary.as_mut() {
                        *canary = scaled(canary, *replicas, available);
                    }
                }
                Action::DeleteCanary => self.observed.canary = None,
                Action::ScaleReferenced { replicas, .. } => {
                    if let super::workload::WorkloadLookup::Found(deployment) =
                        &mut self.observed.workload
                    {
                        deployment.replicas = *replicas;
                        deployment.available_replicas = *replicas;
                    }
                }
                Action::SetWeight { canary_weight } => {
                    if let Some(RouteState::Ready { .. }) = self.observed.route {
                        self.observed.route = Some(RouteState::Ready {
                            canary_weight: *canary_weight,
                        });
                    }
                }
                Action::SetRouteAdditions { additions } => {
                    let release = self.release.metadata.name.clone().unwrap_or_default();
                    if let Some(route) = self.observed.route_object.as_mut() {
                        crate::traffic::cohort::set_additions(route, &release, additions)
                            .expect("the simulated route has a stable backendRef");
                    }
                }
                Action::Event(_) => {}
            }
            self.note_traffic();
        }
    }

    fn note_traffic(&mut self) {
        let canary = self.observed.canary.as_ref();
        let revision = canary.and_then(|c| c.revision.clone());
        let amount = match &self.observed.route {
            Some(RouteState::Ready { canary_weight }) => *canary_weight,
            _ => canary.map_or(0, |c| c.replicas),
        };
        if self.traffic.last().map(|(_, a)| *a) != Some(amount) {
            self.traffic.push((revision, amount));
        }
    }

    /// Pods that were slow become available.
    pub fn pods_ready(&mut self) {
        for workload in [self.observed.stable.as_mut(), self.observed.canary.as_mut()]
            .into_iter()
            .flatten()
        {
            workload.available = true;
            workload.available_replicas = workload.replicas;
        }
    }

    pub fn status(&self) -> &ReleaseStatus {
        self.release.status.as_ref().unwrap()
    }

    /// The request `waymark ACTION` builds from the release as it is now; panics when the CLI
    /// refuses it.
    pub fn cli_request(&self, id: &str, action: ManualAction) -> ManualRequest {
        let mut request = crate::cli::request::build_request(
            &self.release,
            action,
            self.now,
            Some("sre@example.com".into()),
        )
        .unwrap_or_else(|refusal| panic!("the CLI refuses {id}: {refusal}"));
        request.id = id.into();
        request
    }

    /// Write `request` to `status.request`, as the CLI's patch does.
    pub fn write_request(&mut self, request: ManualRequest) {
        self.release
            .status
            .get_or_insert_with(Default::default)
            .request = Some(request);
    }

    /// A request with only an action (as one written by hand, or before requests recorded
    /// where the release stood).
    pub fn request(&mut self, id: &str, action: ManualAction) {
        let at_secs = self.now.as_second() - at(0).as_second();
        let status = self.release.status.get_or_insert_with(Default::default);
        status.request = Some(request(id, action, at_secs));
    }
}

/// A Deployment applied with `revision`: the same template only scales it, a new one replaces
/// its pods.
fn applied(
    existing: Option<&WorkloadState>,
    revision: &str,
    replicas: i32,
    available: bool,
) -> WorkloadState {
    match existing.filter(|w| w.revision.as_deref() == Some(revision)) {
        Some(same) => scaled(same, replicas, available),
        None => pods(revision, replicas, available || replicas == 0),
    }
}

/// `workload` scaled to `replicas`: pods it keeps stay available; new ones are available at
/// once unless pods are slow.
fn scaled(workload: &WorkloadState, replicas: i32, available: bool) -> WorkloadState {
    let revision = workload.revision.clone().unwrap_or_default();
    let mut next = pods(&revision, replicas, available || replicas == 0);
    if !next.available {
        next.available_replicas = workload.available_replicas.min(replicas);
        next.available = next.available_replicas == replicas;
    }
    next
}

fn pods(revision: &str, replicas: i32, available: bool) -> WorkloadState {
    WorkloadState {
        revision: Some(revision.to_string()),
        replicas,
        available_replicas: if available { replicas } else { 0 },
        updated_replicas: replicas,
        available,
        settled: true,
    }
}

/// The event notes of a decision.
pub fn notes(decision: &Decision) -> Vec<String> {
    decision
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Event(note) => Some(format!("{}: {}", note.reason, note.note)),
            _ => None,
        })
        .collect()
}

/// The actions of a decision other than events.
pub fn moves(decision: &Decision) -> Vec<Action> {
    decision
        .actions
        .iter()
        .filter(|a| !matches!(a, Action::Event(_)))
        .cloned()
        .collect()
}
