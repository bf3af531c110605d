//! Test fixtures: a builder for Releases as users write them.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Container, ContainerPort, PodSpec, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::api::{
    Duration, GatewayApiTraffic, Release, ReleaseSpec, ReleaseStatus, ReplicaTraffic, Roadmap,
    ServicePorts, Step, Traffic,
};

/// Builds a Release `shop/<name>` for roadmap item PAY-142, image `shop/<name>:1.0.0`, one
/// container port 8080, selector `app=<name>`, routed by HTTPRoute `<name>`.
pub struct ReleaseBuilder {
    release: Release,
}

impl ReleaseBuilder {
    pub fn new(name: &str) -> Self {
        let labels = BTreeMap::from([("app".to_string(), name.to_string())]);
        let spec = ReleaseSpec {
            roadmap: Roadmap {
                item: "PAY-142".into(),
                ..Roadmap::default()
            },
            replicas: 4,
            selector: LabelSelector {
                match_labels: Some(labels.clone()),
                match_expressions: None,
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..ObjectMeta::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![Container {
                        name: "app".into(),
                        image: Some(format!("shop/{name}:1.0.0")),
                        ports: Some(vec![ContainerPort {
                            container_port: 8080,
                            ..ContainerPort::default()
                        }]),
                        ..Container::default()
                    }],
                    ..PodSpec::default()
                }),
            },
            service: None,
            traffic: Traffic {
                gateway_api: Some(GatewayApiTraffic {
                    http_route: name.into(),
                }),
                replicas: None,
            },
            steps: vec![
                Step {
                    set_weight: Some(10),
                    pause: None,
                },
                Step {
                    set_weight: Some(50),
                    pause: None,
                },
            ],
            analysis: None,
            progress_deadline: Duration::from_secs(600),
            scale_down_delay: Duration::from_secs(30),
        };
        let mut release = Release::new(name, spec);
        release.metadata.namespace = Some("shop".into());
        release.metadata.uid = Some("0b3f1c2e-0000-4000-8000-000000000001".into());
        release.metadata.generation = Some(1);
        release.metadata.resource_version = Some("100".into());
        ReleaseBuilder { release }
    }

    pub fn roadmap_title(mut self, title: &str) -> Self {
        self.release.spec.roadmap.title = Some(title.into());
        self
    }

    pub fn image(mut self, image: &str) -> Self {
        if let Some(pod) = self.release.spec.template.spec.as_mut() {
            pod.containers[0].image = Some(image.into());
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

    pub fn no_ports(mut self) -> Self {
        if let Some(pod) = self.release.spec.template.spec.as_mut() {
            pod.containers[0].ports = None;
        }
        self
    }

    pub fn service_port(mut self, port: i32, target_port: Option<IntOrString>) -> Self {
        self.release.spec.service = Some(ServicePorts { port, target_port });
        self
    }

    pub fn replica_split(mut self) -> Self {
        self.release.spec.traffic = Traffic {
            gateway_api: None,
            replicas: Some(ReplicaTraffic {}),
        };
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
