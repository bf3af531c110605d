//! Builders for rollout tests: releases, observed worlds, analysis runs, and a small simulator
//! that applies a decision's actions to the world the way the controller and Kubernetes would.

use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::{Action, Decision, Observed, RouteState, WorkloadState, decide};
use crate::analysis::AnalysisRun;
use crate::api::{
    Analysis, BudgetPolicy, BurnRate, Duration, GatewayApiTraffic, ManualAction, ManualRequest,
    Pause, PrometheusSource, Release, ReleaseSpec, ReleaseStatus, ReplicaTraffic, Roadmap,
    RoleAnalysis, Slo, Step, Traffic, Verdict, WindowResult, template_revision,
};

/// A fixed instant plus `secs` seconds.
pub fn at(secs: i64) -> Timestamp {
    let base: Timestamp = "2026-03-01T12:00:00Z".parse().unwrap();
    base.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(secs))
        .unwrap()
}

pub fn set_weight(weight: i32) -> Step {
    Step {
        set_weight: Some(weight),
        pause: None,
    }
}

pub fn pause_for(secs: u64) -> Step {
    Step {
        set_weight: None,
        pause: Some(Pause {
            duration: Some(Duration::from_secs(secs)),
        }),
    }
}

pub fn pause_until_promoted() -> Step {
    Step {
        set_weight: None,
        pause: Some(Pause { duration: None }),
    }
}

pub fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: None,
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                ..Default::default()
            }],
            ..Default::default()
        }),
    }
}

pub fn revision_of(image: &str) -> String {
    template_revision(&template(image))
}

pub const V1: &str = "shop/checkout:1.0";
pub const V2: &str = "shop/checkout:2.0";
pub const V3: &str = "shop/checkout:3.0";

pub struct ReleaseBuilder {
    release: Release,
}

impl ReleaseBuilder {
    fn new(traffic: Traffic) -> Self {
        let spec = ReleaseSpec {
            roadmap: Roadmap {
                item: "PAY-142".into(),
                ..Default::default()
            },
            replicas: 4,
            selector: LabelSelector::default(),
            template: template(V1),
            service: None,
            traffic,
            steps: vec![
                set_weight(10),
                pause_for(120),
                set_weight(50),
                pause_until_promoted(),
            ],
            analysis: None,
            progress_deadline: Duration::from_secs(600),
            scale_down_delay: Duration::from_secs(30),
        };
        let mut release = Release::new("checkout", spec);
        release.metadata = ObjectMeta {
            name: Some("checkout".into()),
            namespace: Some("shop".into()),
            generation: Some(7),
            ..Default::default()
        };
        Self { release }
    }

    pub fn gateway() -> Self {
        Self::new(Traffic {
            gateway_api: Some(GatewayApiTraffic {
                http_route: "checkout".into(),
            }),
            replicas: None,
        })
    }

    pub fn replica_split() -> Self {
        Self::new(Traffic {
            gateway_api: None,
            replicas: Some(ReplicaTraffic {}),
        })
    }

    pub fn steps(mut self, steps: Vec<Step>) -> Self {
        self.release.spec.steps = steps;
        self
    }

    pub fn replicas(mut self, replicas: i32) -> Self {
        self.release.spec.replicas = replicas;
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        self.release.spec.template = template(image);
        self
    }

    pub fn analysis(mut self) -> Self {
        self.release.spec.analysis = Some(Analysis {
            interval: Duration::from_secs(30),
            prometheus: PrometheusSource {
                address: "http://prometheus.monitoring:9090".into(),
                timeout: Duration::from_secs(10),
                bearer_token_secret: None,
                ca_secret: None,
            },
            slo: Slo {
                objective: 99.9,
                error_query: "errors".into(),
                total_query: "total".into(),
                burn_rates: vec![BurnRate {
                    long: Duration::from_secs(300),
                    short: Duration::from_secs(60),
                    max: 14.4,
                }],
                min_requests: 100,
                budget: None,
            },
            checks: vec![],
            failure_limit: 2,
            inconclusive_limit: 3,
            error_limit: 4,
        });
        self
    }

    pub fn budget(mut self, freeze_below: f64) -> Self {
        if self.release.spec.analysis.is_none() {
            self = self.analysis();
        }
        if let Some(analysis) = self.release.spec.analysis.as_mut() {
            analysis.slo.budget = Some(BudgetPolicy {
                period: Duration::from_secs(30 * 86_400),
                freeze_below,
            });
        }
        self
    }

    pub fn progress_deadline(mut self, secs: u64) -> Self {
        self.release.spec.progress_deadline = Duration::from_secs(secs);
        self
    }

    pub fn status(mut self, status: ReleaseStatus) -> Self {
        self.release.status = Some(status);
        self
    }

    pub fn build(self) -> Release {
        self.release
    }
}

pub fn workload(image: &str, replicas: i32, available: bool) -> WorkloadState {
    WorkloadState {
        revision: Some(revision_of(image)),
        replicas,
        available_replicas: if available { replicas } else { 0 },
        updated_replicas: replicas,
        available,
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
        requested_at: Time(at(at_secs)),
        requested_by: Some("sre@example.com".into()),
    }
}

/// A release and its world, moved on by applying each decision the way the controller and
/// Kubernetes would (new pods become available at once unless `slow_pods` is set).
pub struct Sim {
    pub release: Release,
    pub observed: Observed,
    pub now: Timestamp,
    pub slow_pods: bool,
    pub last: Option<Decision>,
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
                ..Default::default()
            },
            now: at(0),
            slow_pods: false,
            last: None,
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
        self.last = Some(decision.clone());
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

    pub fn apply(&mut self, decision: &Decision) {
        let spec_revision = template_revision(&self.release.spec.template);
        let available = !self.slow_pods;
        for action in &decision.actions {
            match action {
                Action::ApplyServices => self.observed.services_ready = true,
                Action::ApplyStable { revision, replicas } => {
                    assert_eq!(
                        revision, &spec_revision,
                        "ApplyStable uses the spec template"
                    );
                    self.observed.stable = Some(pods(revision, *replicas, available));
                }
                Action::ScaleStable { replicas } => {
                    if let Some(stable) = self.observed.stable.as_mut() {
                        let revision = stable.revision.clone().unwrap_or_default();
                        *stable = pods(&revision, *replicas, available);
                    }
                }
                Action::ApplyCanary { revision, replicas } => {
                    self.observed.canary = Some(pods(revision, *replicas, available));
                }
                Action::ScaleCanary { replicas } => {
                    if let Some(canary) = self.observed.canary.as_mut() {
                        let revision = canary.revision.clone().unwrap_or_default();
                        *canary = pods(&revision, *replicas, available || *replicas == 0);
                    }
                }
                Action::DeleteCanary => self.observed.canary = None,
                Action::SetWeight { canary_weight } => {
                    if let Some(RouteState::Ready { .. }) = self.observed.route {
                        self.observed.route = Some(RouteState::Ready {
                            canary_weight: *canary_weight,
                        });
                    }
                }
                Action::Event(_) => {}
            }
        }
        self.release.status = Some(decision.status.clone());
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

    pub fn request(&mut self, id: &str, action: ManualAction) {
        let at_secs = self.now.as_second() - at(0).as_second();
        let status = self.release.status.get_or_insert_with(Default::default);
        status.request = Some(request(id, action, at_secs));
    }
}

fn pods(revision: &str, replicas: i32, available: bool) -> WorkloadState {
    WorkloadState {
        revision: Some(revision.to_string()),
        replicas,
        available_replicas: if available { replicas } else { 0 },
        updated_replicas: replicas,
        available,
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
