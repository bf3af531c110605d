//! What the controller watches, and how soon a failed watch is started again: shared by the
//! watches ([`super::watch`]), their health for `/readyz` ([`super::health`]) and the metrics.

use std::time::Duration;

/// The first wait before a failed watch is started again.
pub const WATCH_RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait before a failed watch is started again.
pub const WATCH_RETRY_CAP: Duration = Duration::from_secs(2);
/// A resource the controller watches.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "lowercase")]
pub enum Watched {
    /// `releases.waymark.dev`.
    Releases,
    /// Waymark's child Deployments.
    Deployments,
    /// Waymark's child Services.
    Services,
    /// HTTPRoutes (Gateway API), which Releases name in `spec.traffic.gatewayAPI.httpRoute`.
    HttpRoutes,
    /// GRPCRoutes (Gateway API), which Releases name in `spec.traffic.gatewayAPI.grpcRoute`;
    /// watched only once a Release names one.
    GrpcRoutes,
}

impl Watched {
    /// Every watched resource.
    pub const ALL: [Watched; 5] = [
        Watched::Releases,
        Watched::Deployments,
        Watched::Services,
        Watched::HttpRoutes,
        Watched::GrpcRoutes,
    ];

    /// The plural resource name, as the metric label and logs use it.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// What a person does when the API server does not serve this resource at all (404): the
    /// CustomResourceDefinition is missing.
    pub fn missing_hint(self) -> String {
        match self {
            Watched::Releases => "the CustomResourceDefinition releases.waymark.dev is not \
                 installed: install it with `kubectl apply --server-side -f crds/` (or `waymark \
                 crd | kubectl apply --server-side -f -`)"
                .into(),
            Watched::HttpRoutes => "the Gateway API CustomResourceDefinition \
                 httproutes.gateway.networking.k8s.io is not installed: install the Gateway API \
                 CRDs (standard channel, v1.3 or later)"
                .into(),
            Watched::GrpcRoutes => "the Gateway API CustomResourceDefinition \
                 grpcroutes.gateway.networking.k8s.io is not installed: install the Gateway API \
                 CRDs with GRPCRoute (standard channel, v1.1 or later), or name an HTTPRoute in \
                 spec.traffic.gatewayAPI.httpRoute instead"
                .into(),
            Watched::Deployments | Watched::Services => format!(
                "the API server does not serve {} (404): check the API server",
                self.as_str()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use strum::VariantArray;

    use super::*;

    #[test]
    fn watched_resources_are_named_as_their_plural_resource() {
        let names: Vec<&str> = Watched::VARIANTS.iter().map(|w| w.as_str()).collect();
        assert_eq!(
            names,
            [
                "releases",
                "deployments",
                "services",
                "httproutes",
                "grpcroutes"
            ]
        );
        assert_eq!(Watched::ALL.as_slice(), Watched::VARIANTS);
    }
}
