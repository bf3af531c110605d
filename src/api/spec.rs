//! `Release.spec`: what platform teams write.

// Several `printcolumn(..)` entries of the `#[kube]` attribute share `type_ = "string"`, which
// clippy mistakes for a duplicated attribute.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{CustomResource, KubeSchema};
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};

use super::duration::{Duration, PERIOD_BOUNDS_RULE, period_schema};
use super::outcome::{RoadmapOutcome, default_outcome_window, outcome_window_schema};
use super::roadmap::{Horizon, RoadmapKind};
use super::routes::{ActiveCohort, ActiveMirror, HeaderRoute, MirrorRoute, RouteAdditions};
use super::status::ReleaseStatus;

/// A service's progressive delivery: its pod template, canary steps, SLO and the roadmap item
/// the current template delivers.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "waymark.dev",
    version = "v1alpha1",
    kind = "Release",
    plural = "releases",
    shortname = "rel",
    // `kubectl get waymark` lists Releases (and any kind Waymark adds later).
    category = "waymark",
    namespaced,
    status = "ReleaseStatus",
    // The scale subresource, so `kubectl scale` and a HorizontalPodAutoscaler can set the total
    // (`spec.replicas`) and read the ready pods and their selector from the status.
    scale(
        spec_replicas_path = ".spec.replicas",
        status_replicas_path = ".status.replicas",
        label_selector_path = ".status.selector"
    ),
    derive = "PartialEq",
    doc = "A service released progressively: canary steps judged by SLO burn rate, tied to a roadmap item.",
    // The children are named `<name>-stable` and `<name>-canary`, and a Service name is a
    // DNS-1035 label of at most 63 characters. CEL at the root sees `metadata.name`; the API
    // server reports a root rule without a field path, so the message names the field.
    validation = Rule::new("self.metadata.name.matches('^[a-z]([-a-z0-9]{0,54}[a-z0-9])?$')").message("metadata.name must be at most 56 characters of a-z, 0-9 and '-', start with a letter and end with a letter or digit, so that the Services <name>-stable and <name>-canary are valid names"),
    printcolumn(
        name = "Roadmap",
        type_ = "string",
        json_path = ".spec.roadmap.item",
        description = "Roadmap item this release delivers"
    ),
    printcolumn(
        name = "Phase",
        type_ = "string",
        json_path = ".status.phase",
        description = "Healthy, Progressing, Paused, RolledBack or Degraded"
    ),
    printcolumn(
        name = "Weight",
        type_ = "integer",
        json_path = ".status.canaryWeight",
        description = "Percent of traffic on the canary"
    ),
    printcolumn(
        name = "Step",
        type_ = "string",
        json_path = ".status.stepProgress",
        description = "Canary step in progress, as n/total"
    ),
    printcolumn(
        name = "Burn",
        type_ = "string",
        json_path = ".status.analysis.burn",
        description = "Canary error-budget burn rate against its limit, while a canary is judged"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    // `-o wide` only (priority 1), after Age as kubectl's own wide columns come.
    printcolumn(
        name = "Stable",
        type_ = "string",
        json_path = ".status.stableRevision",
        description = "Revision (template hash) serving as stable",
        priority = 1
    ),
    printcolumn(
        name = "Canary",
        type_ = "string",
        json_path = ".status.canaryRevision",
        description = "Revision (template hash) being rolled out as canary",
        priority = 1
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.reason",
        description = "Why the release is in its phase, in one CamelCase word",
        priority = 1
    ),
    printcolumn(
        name = "Title",
        type_ = "string",
        json_path = ".spec.roadmap.title",
        description = "Title of the roadmap item",
        priority = 1
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.template) != has(self.workloadRef)").message("spec must set exactly one of spec.template or spec.workloadRef"))]
#[x_kube(validation = Rule::new("!has(self.roadmap.outcome) || has(self.analysis)").message("spec.roadmap.outcome is measured with the Prometheus of spec.analysis.prometheus: set spec.analysis, or remove spec.roadmap.outcome"))]
pub struct ReleaseSpec {
    /// The product-roadmap item the current template delivers. Required. Its identifier labels
    /// every child object, Event, metric and history entry, so deliveries can be traced back to
    /// the roadmap.
    pub roadmap: Roadmap,

    /// The total number of pods the service runs, from 1 to 10000; the default is 1. It is the
    /// scale subresource's count, so `kubectl scale` or a HorizontalPodAutoscaler may set it, also
    /// during a canary: the split follows the current total without restarting the step. During
    /// a replica-split canary the stable and canary pods add up to this number; with a Gateway
    /// API router the canary runs its traffic share of it (rounded up, at least 1) and the
    /// stable keeps all of it, never more, so a rollback finds a stable that carries everything.
    /// 0 is refused: a Release always serves.
    #[serde(default = "default_replicas")]
    #[schemars(range(min = 1, max = 10000))]
    pub replicas: i32,

    /// The label selector of the service's pods. Required, and it must match the template's
    /// labels; Waymark adds its own role label so that stable and canary pods never mix. It
    /// cannot be changed after creation, because it becomes the selector of the child
    /// Deployments, which Kubernetes does not let change.
    #[x_kube(
        validation = Rule::new("self == oldSelf").message("spec.selector is immutable: it is the selector of the child Deployments, which cannot change; to select other pods, create a new Release"),
        validation = Rule::new("(has(self.matchLabels) && size(self.matchLabels) > 0) || (has(self.matchExpressions) && size(self.matchExpressions) > 0)").message("spec.selector must not be empty: it would select every pod in the namespace")
    )]
    pub selector: LabelSelector,

    /// The pod template of the service. Set it or `workloadRef`, not both. Changing it starts
    /// a new release: the new revision runs as a canary through `steps` before it replaces the
    /// stable.
    #[serde(default, skip_serializing_if = "template_is_unset")]
    #[x_kube(validation = Rule::new("has(self.spec) && size(self.spec.containers) > 0").message("spec.template.spec.containers must list at least one container"))]
    pub template: PodTemplateSpec,

    /// An existing Deployment whose pod template is the service's template. Set it or
    /// `template`, not both. The Deployment stays its owner's: Waymark reads its template
    /// (an edit starts a canary) and changes only its `spec.replicas`, as `scaleDown` says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload_ref: Option<WorkloadRef>,

    /// The ports of the stable and canary Services Waymark creates. When it is left out, the
    /// Services expose the first port of the template's first container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service: Option<ServicePorts>,

    /// How traffic is shifted to the canary. Required: set exactly one of `gatewayAPI` (the
    /// weights of an existing HTTPRoute or GRPCRoute) or `replicas` (the canary's share of the
    /// pods).
    pub traffic: Traffic,

    /// The canary steps, run in order from the first; each either sets the canary's traffic
    /// weight or pauses. Required: list 1 to 64 steps. After the last step the canary is
    /// promoted to stable.
    #[x_kube(
        merge_strategy = ListMerge::Atomic,
        validation = Rule::new("size(self) > 0").message(STEPS_EMPTY)
    )]
    #[schemars(length(max = 64))]
    pub steps: Vec<Step>,

    /// The Prometheus analysis that judges the canary by its SLO burn rate and rolls it back
    /// when it fails. Optional: without it, steps advance when their pause ends or on
    /// `waymark promote`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<Analysis>,

    /// The longest time a canary may take to become available before it is rolled back (and
    /// the stable may stay unavailable before the Release is Degraded), from 10s to 24h; the
    /// default is 10m.
    #[serde(default = "default_progress_deadline")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('24h')").message("spec.progressDeadline must be between 10s and 24h"))]
    pub progress_deadline: Duration,

    /// How long the old canary pods keep running after promotion so that in-flight requests
    /// drain, from 0s to 24h; the default is 30s.
    #[serde(default = "default_scale_down_delay")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('24h')").message("spec.scaleDownDelay must be between 0s and 24h"))]
    pub scale_down_delay: Duration,
}

/// The port a Service exposes and the container port it sends to.
#[derive(Clone, Debug, PartialEq)]
pub struct ResolvedPorts {
    /// `spec.ports[0].port`.
    pub port: i32,
    /// `spec.ports[0].targetPort`.
    pub target_port: IntOrString,
}

impl ReleaseSpec {
    /// The Service ports: `service`, or else the first port of the template's first container;
    /// `None` when neither says.
    pub fn service_ports(&self) -> Option<ResolvedPorts> {
        if let Some(service) = &self.service {
            return Some(ResolvedPorts {
                port: service.port,
                target_port: service
                    .target_port
                    .clone()
                    .unwrap_or(IntOrString::Int(service.port)),
            });
        }
        let port = self
            .template
            .spec
            .as_ref()
            .and_then(|pod| pod.containers.first())
            .and_then(|container| container.ports.as_ref())
            .and_then(|ports| ports.first())?;
        Some(ResolvedPorts {
            port: port.container_port,
            target_port: IntOrString::Int(port.container_port),
        })
    }
}

/// The roadmap item a release delivers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Roadmap {
    /// The identifier of the roadmap item, e.g. `PAY-142`. Required: 1 to 64 characters of
    /// `[A-Za-z0-9._/#:-]`.
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9._/#:-]{1,64}$')").message("spec.roadmap.item must be 1-64 characters of [A-Za-z0-9._/#:-]"))]
    #[schemars(length(min = 1, max = 64))]
    pub item: String,

    /// The item's title as people read it, up to 256 characters. Optional; it is shown by
    /// `kubectl get releases -o wide` and on every child object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub title: Option<String>,

    /// A link to the item in the tracker: an `http://` or `https://` URL. Optional; it
    /// becomes a link in Argo CD and an annotation on every child object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    #[x_kube(validation = Rule::new(HTTP_URL_RULE).message("spec.roadmap.url must be an http:// or https:// URL with a host and no spaces"))]
    pub url: Option<String>,

    /// The objective or OKR the item serves, up to 256 characters. Optional; it is shown in
    /// the status and in post-mortems.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 256))]
    pub objective: Option<String>,

    /// The roadmap horizon the item belongs to: `now`, `next` or `later`. Optional; it labels
    /// every child object so delivery can be counted per horizon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_horizon_schema")]
    pub horizon: Option<Horizon>,

    /// The kind of work the item is: `feature`, `debt`, `platform`, `security` or
    /// `experiment`. Optional; it labels every child object so delivery can be counted per kind.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "optional_kind_schema")]
    pub kind: Option<RoadmapKind>,

    /// Targets of the controller's notification configuration (its `--notifications-config`
    /// ConfigMap), by name, that hear about this Release besides the targets the configuration
    /// sends every Release's news to, e.g. `[team-checkout]`: so that the channel of the team
    /// owning the item hears about its rollouts. Up to 16 names of lowercase letters, digits
    /// and `-`. A name the configuration lacks, or a target that keeps failing, is shown in
    /// the condition `NotificationsDelivered`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "notify_schema")]
    pub notify: Vec<String>,

    /// The number the item is meant to move, measured around each promotion and recorded in
    /// the revision's `status.history[]` entry (Met, NotMet or Inconclusive). Optional; it
    /// needs `spec.analysis.prometheus` to ask, and never blocks or reverses a release.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<RoadmapOutcome>,

    /// A promoted revision whose item was already promoted within this window before counts
    /// as rework (the item was delivered, then needed another change); default 7d, up to 90d.
    #[serde(default = "default_rework_window")]
    #[schemars(schema_with = "outcome_window_schema")]
    pub rework_window: Duration,
}

impl Default for Roadmap {
    fn default() -> Self {
        Self {
            item: String::new(),
            title: None,
            url: None,
            objective: None,
            horizon: None,
            kind: None,
            notify: Vec::new(),
            outcome: None,
            rework_window: default_rework_window(),
        }
    }
}

/// The default rework window: a week, as the outcome windows.
fn default_rework_window() -> Duration {
    default_outcome_window()
}

impl Roadmap {
    /// The item as events and messages name it: `PAY-142`, or `PAY-142 (now, feature)` when
    /// the horizon or kind is set.
    pub fn tagged(&self) -> String {
        let tags: Vec<&str> = [
            self.horizon.map(|h| h.as_str()),
            self.kind.map(|k| k.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        if tags.is_empty() {
            self.item.clone()
        } else {
            format!("{} ({})", self.item, tags.join(", "))
        }
    }
}

/// Schema of `roadmap.horizon`, written out: the derived schema of an optional enum takes the
/// enum's description over the field's, and `kubectl explain` would not say the field is
/// optional nor what it is for.
fn optional_horizon_schema(_: &mut SchemaGenerator) -> Schema {
    let values: Vec<&str> = Horizon::ALL.iter().map(Horizon::as_str).collect();
    json_schema!({ "type": "string", "enum": values, "nullable": true })
}

/// Schema of `roadmap.notify`: target names as the notification configuration spells them
/// (lowercase DNS labels), a set, bounded so that the API server's CEL cost estimates stay
/// small.
fn notify_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "maxItems": 16,
        "x-kubernetes-list-type": "set",
        "items": {
            "type": "string",
            "minLength": 1,
            "maxLength": 63,
            "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
        }
    })
}

/// Schema of `roadmap.kind`, written out for the reason [`optional_horizon_schema`] says.
fn optional_kind_schema(_: &mut SchemaGenerator) -> Schema {
    let values: Vec<&str> = RoadmapKind::ALL.iter().map(RoadmapKind::as_str).collect();
    json_schema!({ "type": "string", "enum": values, "nullable": true })
}

/// Ports of the stable and canary Services.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ServicePorts {
    /// The port the stable and canary Services expose, from 1 to 65535. Required.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,

    /// The container port the Services send to, as a number (1 to 65535) or a port name. When
    /// it is left out, the Services send to `port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "target_port_schema")]
    pub target_port: Option<IntOrString>,
}

/// Schema of `service.targetPort`. On an int-or-string the API server applies the range to a
/// number and the length and pattern to a name: an IANA service name, with a letter and no '-'
/// at either end or twice in a row.
fn target_port_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "nullable": true,
        "x-kubernetes-int-or-string": true,
        "minimum": 1,
        "maximum": 65535,
        "minLength": 1,
        "maxLength": 15,
        "pattern": "^([a-z0-9]+-)*[a-z0-9]*[a-z][a-z0-9]*(-[a-z0-9]+)*$",
    })
}

/// Traffic routing mode.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.gatewayAPI) != has(self.replicas)").message("spec.traffic must set exactly one of gatewayAPI or replicas"))]
pub struct Traffic {
    /// Shifts traffic with the backend weights of an existing Gateway API HTTPRoute or
    /// GRPCRoute. Set it or `replicas`, not both.
    #[serde(
        default,
        rename = "gatewayAPI",
        skip_serializing_if = "Option::is_none"
    )]
    pub gateway_api: Option<GatewayApiTraffic>,

    /// Shifts traffic without a router: the canary's share of traffic is its share of the pods
    /// behind the Service named after the Release. Set it (as `{}`) or `gatewayAPI`, not both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replicas: Option<ReplicaTraffic>,
}

impl Traffic {
    /// The Gateway API route the Release names, as its kind and name (`None` with a replica
    /// split).
    pub fn route(&self) -> Option<(RouteKind, &str)> {
        self.gateway_api.as_ref().and_then(GatewayApiTraffic::route)
    }

    /// Whether the Release routes its traffic through a route of `kind`.
    pub fn routes_through(&self, kind: RouteKind) -> bool {
        self.route().is_some_and(|(named, _)| named == kind)
    }
}

/// Gateway API routing: the route whose weights Waymark shares between the stable and the
/// canary, and what Waymark passes through to the rules it edits.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.httpRoute) != has(self.grpcRoute)").message("spec.traffic.gatewayAPI must set exactly one of httpRoute or grpcRoute"))]
pub struct GatewayApiTraffic {
    /// The name of an HTTPRoute in the Release's namespace. Set it or `grpcRoute`, not both;
    /// the route must have a backendRef to the Service `<release>-stable`, whose weight Waymark
    /// shares with `<release>-canary`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub http_route: Option<String>,

    /// The name of a GRPCRoute in the Release's namespace. Set it or `httpRoute`, not both;
    /// the route must have a backendRef to the Service `<release>-stable`, whose weight Waymark
    /// shares with `<release>-canary`, exactly as for an HTTPRoute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub grpc_route: Option<String>,

    /// Session persistence (sticky sessions) for the route rules Waymark edits, in Gateway
    /// API's own shape. Optional. Waymark writes it on the rules that send traffic to
    /// `<release>-stable` only when the route's GatewayClass lists session persistence in
    /// `status.supportedFeatures`; a class that lists features without it gets a condition
    /// naming this field, and a class that lists none leaves it unwritten with a status message
    /// saying support is unknown (a route CRD without the field would drop it on every write).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_persistence: Option<SessionPersistence>,
}

/// The route a Release names, as a kind and a name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RouteKind {
    /// `gateway.networking.k8s.io/v1` HTTPRoute (`spec.traffic.gatewayAPI.httpRoute`).
    Http,
    /// `gateway.networking.k8s.io/v1` GRPCRoute (`spec.traffic.gatewayAPI.grpcRoute`).
    Grpc,
}

impl RouteKind {
    /// The kind as Kubernetes spells it: `HTTPRoute` or `GRPCRoute`.
    pub fn kind(self) -> &'static str {
        match self {
            RouteKind::Http => "HTTPRoute",
            RouteKind::Grpc => "GRPCRoute",
        }
    }

    /// The spec field that names a route of this kind.
    pub fn field(self) -> &'static str {
        match self {
            RouteKind::Http => "spec.traffic.gatewayAPI.httpRoute",
            RouteKind::Grpc => "spec.traffic.gatewayAPI.grpcRoute",
        }
    }
}

impl GatewayApiTraffic {
    /// Routing through the HTTPRoute `name`.
    pub fn http(name: &str) -> GatewayApiTraffic {
        GatewayApiTraffic {
            http_route: Some(name.into()),
            ..GatewayApiTraffic::default()
        }
    }

    /// Routing through the GRPCRoute `name`.
    pub fn grpc(name: &str) -> GatewayApiTraffic {
        GatewayApiTraffic {
            grpc_route: Some(name.into()),
            ..GatewayApiTraffic::default()
        }
    }

    /// The route named, as its kind and name. An HTTPRoute wins when both are set (which the
    /// schema refuses); `None` when neither is (refused too).
    pub fn route(&self) -> Option<(RouteKind, &str)> {
        match (&self.http_route, &self.grpc_route) {
            (Some(name), _) => Some((RouteKind::Http, name)),
            (None, Some(name)) => Some((RouteKind::Grpc, name)),
            (None, None) => None,
        }
    }

    /// Whether this names the route `name` of `kind`.
    pub fn names(&self, kind: RouteKind, name: &str) -> bool {
        self.route() == Some((kind, name))
    }
}

/// Session persistence for the route rules Waymark edits: Gateway API's `SessionPersistence`
/// (experimental channel), passed through as written.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.cookieConfig) || !has(self.cookieConfig.lifetimeType) || self.cookieConfig.lifetimeType != 'Permanent' || has(self.absoluteTimeout)").message("spec.traffic.gatewayAPI.sessionPersistence.absoluteTimeout must be set when cookieConfig.lifetimeType is Permanent"))]
pub struct SessionPersistence {
    /// The name of the session token (the cookie's or the header's name), up to 128
    /// characters. Optional: the implementation picks one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 128))]
    pub session_name: Option<String>,

    /// `Cookie` (the default) or `Header`: where the session token travels.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<SessionPersistenceType>,

    /// How long a session lasts at most, as a Gateway API duration (`1h`, `30m`, `10s`,
    /// `500ms`, up to four parts). Optional; required for a Permanent cookie.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub absolute_timeout: Option<String>,

    /// How long a session may stay idle, as a Gateway API duration. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(pattern(r"^([0-9]{1,5}(h|m|s|ms)){1,4}$"))]
    pub idle_timeout: Option<String>,

    /// Settings of a cookie-based session. Optional.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cookie_config: Option<SessionCookieConfig>,
}

/// Where the session token travels.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionPersistenceType {
    /// A cookie the gateway sets.
    Cookie,
    /// A header the client sends back.
    Header,
}

/// Settings of a cookie-based session.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SessionCookieConfig {
    /// `Session` (the default: the cookie ends with the browser session) or `Permanent` (it
    /// lasts `absoluteTimeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifetime_type: Option<SessionCookieLifetime>,
}

/// How long a session cookie lives.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum SessionCookieLifetime {
    /// Until `absoluteTimeout` (Expires or Max-Age set).
    Permanent,
    /// Until the client's session ends.
    Session,
}

/// Replica-split routing; it has no settings.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct ReplicaTraffic {}

/// One canary step: exactly one of `setWeight`, `pause`, `setHeaderRoute` or `setMirrorRoute`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("(has(self.setWeight) ? 1 : 0) + (has(self.pause) ? 1 : 0) + (has(self.setHeaderRoute) ? 1 : 0) + (has(self.setMirrorRoute) ? 1 : 0) == 1").message("each entry of spec.steps must set exactly one of setWeight, pause, setHeaderRoute or setMirrorRoute"))]
pub struct Step {
    /// The percent of traffic (0 to 100) to send to the canary at this step. Set exactly one
    /// of `setWeight`, `pause`, `setHeaderRoute` or `setMirrorRoute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub set_weight: Option<i32>,

    /// Waits before the next step: for `duration`, or without one until `waymark promote`.
    /// Set exactly one of `setWeight`, `pause`, `setHeaderRoute` or `setMirrorRoute`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,

    /// Routes a cohort (requests with the given headers, cookies or query parameters) to the
    /// canary, all of it, whatever the weights; without `match`, stops routing the cohort an
    /// earlier step added. Gateway API mode only. Adding a cohort gives the canary traffic, so
    /// after the canary's first traffic it waits for a passing analysis like a higher weight.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_header_route: Option<HeaderRoute>,

    /// Copies a share of the requests to the canary (answers dropped); without `percent`,
    /// stops the mirror an earlier step added. Gateway API mode only; the route's Gateway must
    /// support `HTTPRouteRequestMirror` and percentages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_mirror_route: Option<MirrorRoute>,
}

// Here rather than beside `RouteAdditions`: the steps are the spec's, and `routes` stays free
// of the spec so that the status can use it without a circle.
impl RouteAdditions {
    /// Apply one step's route change: add or replace a cohort or mirror by name, or remove it.
    /// Steps that are not route steps change nothing.
    pub fn apply_step(&mut self, step: &Step) {
        if let Some(route) = &step.set_header_route {
            self.cohorts.retain(|cohort| cohort.name != route.name);
            if let Some(route_match) = &route.route_match {
                self.cohorts.push(ActiveCohort {
                    name: route.name.clone(),
                    route_match: route_match.clone(),
                });
            }
        }
        if let Some(mirror) = &step.set_mirror_route {
            self.mirrors.retain(|active| active.name != mirror.name);
            if let Some(percent) = mirror.percent {
                self.mirrors.push(ActiveMirror {
                    name: mirror.name.clone(),
                    percent,
                    route_match: mirror.route_match.clone(),
                });
            }
        }
    }

    /// What the first `steps` leave active.
    pub fn after_steps(steps: &[Step]) -> RouteAdditions {
        let mut additions = RouteAdditions::default();
        for step in steps {
            additions.apply_step(step);
        }
        additions
    }
}

impl Step {
    /// Whether the step sends the canary requests it did not have before: a weight above 0, a
    /// cohort added or a mirror added.
    pub fn exposes_canary(&self) -> bool {
        self.set_weight.unwrap_or(0) > 0
            || self
                .set_header_route
                .as_ref()
                .is_some_and(|route| route.route_match.is_some())
            || self
                .set_mirror_route
                .as_ref()
                .is_some_and(|mirror| mirror.percent.is_some_and(|percent| percent > 0))
    }

    /// Whether the step changes a cohort or a mirror.
    pub fn is_route_step(&self) -> bool {
        self.set_header_route.is_some() || self.set_mirror_route.is_some()
    }
}

/// A pause step.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Pause {
    /// How long to wait, from 0s to 30 days (`720h`). When it is left out, the canary waits
    /// for `waymark promote` in phase Paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("duration(self) <= duration('720h')").message("spec.steps[].pause.duration must be between 0s and 720h (30 days); leave it out to wait for waymark promote"))]
    pub duration: Option<Duration>,
}

/// Prometheus analysis settings.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.prometheus.timeout) <= duration(self.interval)").message("spec.analysis.prometheus.timeout must not be longer than spec.analysis.interval: a run must end before the next one starts"))]
pub struct Analysis {
    /// The time between analysis runs, which go on from the first step to promotion, from 5s
    /// to 1h; the default is 1m.
    #[serde(default = "default_interval")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('5s') && duration(self) <= duration('1h')").message("spec.analysis.interval must be between 5s and 1h"))]
    pub interval: Duration,

    /// The Prometheus server the analysis queries. Required.
    pub prometheus: PrometheusSource,

    /// The service-level objective the canary is judged by, with the stable as its baseline.
    /// Required.
    pub slo: Slo,

    /// Extra guards, each comparing a PromQL value with a `max`, a `min` or both; a check out
    /// of bounds fails the run. Optional, up to 32; the API server refuses two checks with one
    /// `name`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["name".into()]))]
    #[schemars(length(max = 32))]
    pub checks: Vec<Check>,

    /// How many failing runs in a row roll the canary back, from 1 to 1000; the default is 2.
    #[serde(default = "default_failure_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub failure_limit: i32,

    /// How many inconclusive runs (too little data) in a row hold the canary until
    /// `waymark promote`, from 1 to 1000; the default is 6.
    #[serde(default = "default_inconclusive_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub inconclusive_limit: i32,

    /// How many runs in a row with query errors (Prometheus unreachable, an invalid query) roll
    /// the canary back, from 1 to 1000; the default is 4.
    #[serde(default = "default_error_limit")]
    #[schemars(range(min = 1, max = 1000))]
    pub error_limit: i32,
}

/// How to reach Prometheus.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct PrometheusSource {
    /// The base URL of the Prometheus HTTP API, e.g. `http://prometheus.monitoring:9090`.
    /// Required: an `http://` or `https://` URL with a host.
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new(HTTP_URL_RULE).message("spec.analysis.prometheus.address must be an http:// or https:// URL with a host and no spaces"))]
    pub address: String,

    /// How long one query may take before the run counts as an error, from 1s to 5m and not
    /// longer than `interval`; the default is 10s.
    #[serde(default = "default_query_timeout")]
    #[x_kube(validation = Rule::new("duration(self) >= duration('1s') && duration(self) <= duration('5m')").message("spec.analysis.prometheus.timeout must be between 1s and 5m"))]
    pub timeout: Duration,

    /// A key of a Secret in the Release's namespace holding a bearer token to send to
    /// Prometheus. Optional; without it queries carry no token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_token_secret: Option<SecretKeyRef>,

    /// A key of a Secret in the Release's namespace holding a PEM CA bundle to trust for an
    /// `https` address instead of the system's roots. Optional; without it the system's
    /// trusted roots are used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret: Option<SecretKeyRef>,
}

impl PrometheusSource {
    /// Whether a Secret is named (`bearerTokenSecret` or `caSecret`): the controller then
    /// checks that it exists before a canary needs it.
    pub fn names_a_secret(&self) -> bool {
        self.bearer_token_secret.is_some() || self.ca_secret.is_some()
    }
}

/// A key of a Secret in the Release's namespace.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The name of the Secret, in the Release's namespace. Required.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// The key inside the Secret's data. Required.
    #[schemars(length(min = 1, max = 253), pattern(r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

/// A service-level objective on the ratio of good requests, judged by error-budget burn rate.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.burnRates.all(pair, pair.max < 100.0 / (100.0 - double(self.objective)))").message("spec.analysis.slo.burnRates[].max must be below 100 / (100 - objective), the burn rate of a canary failing every request (1000 for 99.9): a higher max can never fail"))]
pub struct Slo {
    /// The percent of requests that must be good, strictly between 0 and 100, e.g. 99.9.
    /// Required.
    #[x_kube(validation = Rule::new("self > 0.0 && self < 100.0").message("spec.analysis.slo.objective must be strictly between 0 and 100"))]
    pub objective: f64,

    /// The PromQL that gives the rate of bad requests over `{{window}}`. Required. Waymark
    /// fills in the placeholders `{{namespace}}`, `{{release}}`, `{{service}}`, `{{role}}`,
    /// `{{revision}}` and `{{window}}` for each role and window.
    #[schemars(length(min = 1, max = 4096))]
    pub error_query: String,

    /// The PromQL that gives the rate of all requests over `{{window}}`, with the same
    /// placeholders as `errorQuery`. Required.
    #[schemars(length(min = 1, max = 4096))]
    pub total_query: String,

    /// The multi-window burn-rate rules: a run fails when both windows of a pair burn the
    /// error budget faster than its `max`. Required: 1 to 8 pairs.
    #[x_kube(merge_strategy = ListMerge::Atomic)]
    #[schemars(length(min = 1, max = 8))]
    pub burn_rates: Vec<BurnRate>,

    /// The fewest requests a window needs for a verdict: with fewer the run is Inconclusive,
    /// never Passing. From 0 to 1,000,000,000; the default is 100.
    #[serde(default = "default_min_requests")]
    #[schemars(range(min = 0, max = 1_000_000_000))]
    pub min_requests: i64,

    /// The error-budget policy of the whole service, which holds new revisions while the
    /// budget is nearly spent. Optional; without it no revision is held for the budget.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetPolicy>,
}

/// A pair of windows and the burn rate both must exceed to fail the canary.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.short) < duration(self.long)").message("spec.analysis.slo.burnRates[]: short must be a shorter window than long"))]
pub struct BurnRate {
    /// The long window, e.g. `5m`, from 10s to 7 days (`168h`). Required.
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('168h')").message("spec.analysis.slo.burnRates[].long must be between 10s and 168h (7 days)"))]
    pub long: Duration,
    /// The short window, e.g. `1m`, from 10s to 7 days and shorter than `long`. Required.
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('168h')").message("spec.analysis.slo.burnRates[].short must be between 10s and 168h (7 days)"))]
    pub short: Duration,
    /// The highest allowed burn rate, in multiples of the sustainable error rate; greater
    /// than 0. Required.
    #[x_kube(validation = Rule::new("self > 0.0").message("spec.analysis.slo.burnRates[].max must be greater than 0"))]
    pub max: f64,
}

/// When the service's error budget is nearly spent, hold new revisions.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetPolicy {
    /// The rolling period the budget is counted over, e.g. `30d` or `4w`: a whole number of
    /// hours, days or weeks, from 1h to 90d. Required.
    #[schemars(schema_with = "period_schema")]
    #[x_kube(validation = Rule::new(PERIOD_BOUNDS_RULE).message("spec.analysis.slo.budget.period must be between 1h and 90d (2160h, or 12w)"))]
    pub period: Duration,

    /// New revisions are held while the fraction of the budget left (1 is untouched) is below
    /// this, from 0 to 1; the default is 0, which holds only when the budget is overspent.
    #[serde(default)]
    #[x_kube(validation = Rule::new("self >= 0.0 && self <= 1.0").message("spec.analysis.slo.budget.freezeBelow must be a fraction between 0 and 1"))]
    pub freeze_below: f64,
}

/// A guard on any PromQL value.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.max) || has(self.min)").message("each entry of spec.analysis.checks must set max, min or both"))]
#[x_kube(validation = Rule::new("!has(self.max) || !has(self.min) || self.min <= self.max").message("spec.analysis.checks[]: min must not be above max, or the check could never pass"))]
pub struct Check {
    /// The check's name as the status shows it, e.g. `p99-latency`. Required and unique
    /// among the checks.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,

    /// The PromQL that returns one value, with the same placeholders as the SLO queries.
    /// Required.
    #[schemars(length(min = 1, max = 4096))]
    pub query: String,

    /// The highest value that passes. Optional, but set `max`, `min` or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,

    /// The lowest value that passes. Optional, but set `max`, `min` or both.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
}

/// Why a Release needs a step, in the schema's rule on `spec.steps` and in the spec check for a
/// Release stored before the schema had that rule.
pub const STEPS_EMPTY: &str = "spec.steps must list at least one step: without one a new \
     template would take all the traffic at once, with no canary; list the weights it goes \
     through, e.g. [{setWeight: 20}, {pause: {duration: 5m}}, {setWeight: 50}]";

/// CEL rule for a link: `http://` or `https://`, a host, no whitespace. Not `javascript:` nor
/// any other scheme a browser would run or a controller could not fetch.
const HTTP_URL_RULE: &str = r"self.matches('^https?://[^\\s/?#]+([/?#]\\S*)?$')";

/// An empty template is one the manifest left out (a Release with `workloadRef`): it is not
/// written back, so that the CEL rule naming both fields keeps holding.
fn template_is_unset(template: &PodTemplateSpec) -> bool {
    *template == PodTemplateSpec::default()
}

/// An existing Deployment a Release takes its pod template from (see `spec.workloadRef`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.apiVersion == 'apps/v1' && self.kind == 'Deployment'").message("spec.workloadRef must name an apps/v1 Deployment (apiVersion: apps/v1, kind: Deployment)"))]
pub struct WorkloadRef {
    /// `apps/v1`, the only API version supported.
    #[schemars(length(max = 64))]
    pub api_version: String,
    /// `Deployment`, the only kind supported.
    #[schemars(length(max = 64))]
    pub kind: String,
    /// The name of the Deployment, in the Release's namespace. Required.
    #[schemars(
        length(min = 1, max = 253),
        pattern(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
    )]
    pub name: String,
    /// How the referenced Deployment makes way for `<name>-stable`: `progressively` (the
    /// default) by as many pods as the stable has available, `onSuccess` to 0 once the stable
    /// is fully available, `never` not at all.
    #[serde(default)]
    pub scale_down: ScaleDown,
}

/// How the Deployment a `workloadRef` names is scaled down once Waymark serves its pods.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum ScaleDown {
    /// By as many pods as the stable has available, so that the pods serving never drop.
    #[default]
    Progressively,
    /// To 0 at once when the stable is fully available.
    OnSuccess,
    /// Never: the Deployment keeps its replicas (both run side by side).
    Never,
}

fn default_replicas() -> i32 {
    1
}
fn default_progress_deadline() -> Duration {
    Duration::from_secs(600)
}
fn default_scale_down_delay() -> Duration {
    Duration::from_secs(30)
}
fn default_interval() -> Duration {
    Duration::from_secs(60)
}
fn default_query_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_min_requests() -> i64 {
    100
}
fn default_failure_limit() -> i32 {
    2
}
fn default_inconclusive_limit() -> i32 {
    6
}
fn default_error_limit() -> i32 {
    4
}
