//! Test fixtures shared by the crate's unit tests: one builder for Releases as users write
//! them (`shop/checkout`, roadmap item PAY-142), and builders for steps and instants.

use std::collections::BTreeMap;

use gateway_api::apis::experimental::httproutes::{
    HttpRoute, HttpRouteRules, HttpRouteRulesBackendRefs, HttpRouteSpec,
};
use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

use crate::api::{
    Analysis, BudgetPolicy, BurnRate, Duration, GatewayApiTraffic, Pause, PrometheusSource,
    Release, ReleaseSpec, ReleaseStatus, ReplicaTraffic, Roadmap, ServicePorts, Slo, Step, Traffic,
    template_revision,
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
        ..Step::default()
    }
}

pub fn pause_for(secs: u64) -> Step {
    Step {
        pause: Some(Pause {
            duration: Some(Duration::from_secs(secs)),
        }),
        ..Step::default()
    }
}

pub fn pause_until_promoted() -> Step {
    Step {
        pause: Some(Pause { duration: None }),
        ..Step::default()
    }
}

/// `setHeaderRoute` adding cohort `name`: requests with header `header: value` (exact).
pub fn header_route(name: &str, header: &str, value: &str) -> Step {
    Step {
        set_header_route: Some(crate::api::HeaderRoute {
            name: name.into(),
            route_match: Some(crate::api::RouteMatch {
                headers: vec![crate::api::ValueMatch {
                    name: header.into(),
                    value: value.into(),
                    match_type: crate::api::MatchType::Exact,
                }],
                ..Default::default()
            }),
        }),
        ..Step::default()
    }
}

/// `setHeaderRoute` removing cohort `name`.
pub fn remove_cohort(name: &str) -> Step {
    Step {
        set_header_route: Some(crate::api::HeaderRoute {
            name: name.into(),
            route_match: None,
        }),
        ..Step::default()
    }
}

/// `setMirrorRoute` copying `percent` of the stable's requests to the canary as mirror `name`.
pub fn mirror_route(name: &str, percent: i32) -> Step {
    Step {
        set_mirror_route: Some(crate::api::MirrorRoute {
            name: name.into(),
            percent: Some(percent),
            route_match: None,
        }),
        ..Step::default()
    }
}

/// `setMirrorRoute` removing mirror `name`.
pub fn remove_mirror(name: &str) -> Step {
    Step {
        set_mirror_route: Some(crate::api::MirrorRoute {
            name: name.into(),
            percent: None,
            route_match: None,
        }),
        ..Step::default()
    }
}

/// The pod template of `checkout` running `image`: label `app=checkout`, port 8080.
pub fn template(image: &str) -> PodTemplateSpec {
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(BTreeMap::from([(
                "app".to_string(),
                "checkout".to_string(),
            )])),
            ..Default::default()
        }),
        spec: Some(PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some(image.into()),
                ports: Some(vec![ContainerPort {
                    container_port: 8080,
                    ..Default::default()
                }]),
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
            selector: LabelSelector {
                match_labels: Some(BTreeMap::from([(
                    "app".to_string(),
                    "checkout".to_string(),
                )])),
                match_expressions: None,
            },
            template: template(V1),
            workload_ref: None,
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
            uid: Some("0b3f1c2e-0000-4000-8000-000000000001".into()),
            resource_version: Some("100".into()),
            ..Default::default()
        };
        Self { release }
    }

    pub fn gateway() -> Self {
        Self::new(Traffic {
            gateway_api: Some(GatewayApiTraffic::http("checkout")),
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

    /// With analysis, reading Prometheus's bearer token from Secret `name`, key `key`.
    pub fn bearer_token_secret(mut self, name: &str, key: &str) -> Self {
        if self.release.spec.analysis.is_none() {
            self = self.analysis();
        }
        if let Some(analysis) = self.release.spec.analysis.as_mut() {
            analysis.prometheus.bearer_token_secret = Some(crate::api::SecretKeyRef {
                name: name.into(),
                key: key.into(),
            });
        }
        self
    }

    pub fn progress_deadline(mut self, secs: u64) -> Self {
        self.release.spec.progress_deadline = Duration::from_secs(secs);
        self
    }

    pub fn roadmap_title(mut self, title: &str) -> Self {
        self.release.spec.roadmap.title = Some(title.into());
        self
    }

    pub fn service_port(mut self, port: i32, target_port: Option<IntOrString>) -> Self {
        self.release.spec.service = Some(ServicePorts { port, target_port });
        self
    }

    /// No `spec.service` and no container port: nothing says which port to expose.
    pub fn no_ports(mut self) -> Self {
        self.release.spec.service = None;
        if let Some(pod) = self.release.spec.template.spec.as_mut() {
            pod.containers[0].ports = None;
        }
        self
    }

    pub fn container_port(mut self, port: i32) -> Self {
        if let Some(pod) = self.release.spec.template.spec.as_mut() {
            pod.containers[0].ports = Some(vec![ContainerPort {
                container_port: port,
                ..ContainerPort::default()
            }]);
        }
        self
    }

    pub fn selector_label(mut self, key: &str, value: &str) -> Self {
        self.release
            .spec
            .selector
            .match_labels
            .get_or_insert_with(BTreeMap::new)
            .insert(key.into(), value.into());
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

/// A backendRef to Service `name` on port 80 with `weight`.
pub fn route_backend(name: &str, weight: Option<i32>) -> HttpRouteRulesBackendRefs {
    HttpRouteRulesBackendRefs {
        name: name.into(),
        port: Some(80),
        weight,
        ..Default::default()
    }
}

/// HTTPRoute `shop/checkout` with one rule per entry of `rules`, each with those backendRefs.
pub fn http_route(rules: Vec<Vec<HttpRouteRulesBackendRefs>>) -> HttpRoute {
    HttpRoute {
        metadata: ObjectMeta {
            name: Some("checkout".into()),
            namespace: Some("shop".into()),
            ..Default::default()
        },
        spec: HttpRouteSpec {
            rules: Some(
                rules
                    .into_iter()
                    .map(|refs| HttpRouteRules {
                        backend_refs: Some(refs),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        },
        status: None,
    }
}
