//! Traffic routers: Gateway API HTTPRoute weights and replica split.
//!
//! The controller talks to one [`TrafficRouter`], chosen by [`Router::for_release`] from
//! `spec.traffic`, so the reconcile loop does not care how traffic moves.

pub mod gateway;
pub mod replicas;

use std::future::Future;

use kube::Client;

use crate::api::Release;
use crate::rollout::RouteState;

pub use gateway::GatewayRouter;
pub use replicas::ReplicaRouter;

/// Errors of a traffic router.
#[derive(thiserror::Error, Debug)]
pub enum TrafficError {
    /// The route is missing or has no backendRef to the stable Service; the message names both.
    #[error("{message}")]
    Unusable {
        /// E.g. `HTTPRoute shop/checkout has no backendRef to Service checkout-stable`.
        message: String,
    },
    /// Other writers kept changing the route between our read and our write.
    #[error(
        "HTTPRoute {namespace}/{name} kept changing: gave up after {attempts} conflicting writes"
    )]
    Conflict {
        /// The route's namespace.
        namespace: String,
        /// The route's name.
        name: String,
        /// How many writes were tried.
        attempts: u32,
    },
    /// The API call failed.
    #[error("HTTPRoute {namespace}/{name}: {source}")]
    Kube {
        /// The route's namespace.
        namespace: String,
        /// The route's name.
        name: String,
        /// The API error (boxed: it is large).
        source: Box<kube::Error>,
    },
}

impl TrafficError {
    /// A short, stable label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            TrafficError::Unusable { .. } => "route_unusable",
            TrafficError::Conflict { .. } => "route_conflict",
            TrafficError::Kube { .. } => "route_kube",
        }
    }
}

/// Moves traffic between a Release's stable and canary.
pub trait TrafficRouter {
    /// The router's view of traffic for [`crate::rollout::Observed::route`]: `None` when the
    /// router has no separate traffic state (replica split).
    fn observe(
        &self,
        release: &Release,
    ) -> impl Future<Output = Result<Option<RouteState>, TrafficError>> + Send;

    /// Send `canary_weight` percent of traffic to the canary and the rest to the stable.
    fn set_weight(
        &self,
        release: &Release,
        canary_weight: i32,
    ) -> impl Future<Output = Result<(), TrafficError>> + Send;
}

/// The router a Release's `spec.traffic` asks for.
#[derive(Clone)]
pub enum Router {
    /// `spec.traffic.gatewayAPI`.
    Gateway(GatewayRouter),
    /// `spec.traffic.replicas`.
    Replicas(ReplicaRouter),
}

impl Router {
    /// Choose the router for `release`.
    pub fn for_release(client: Client, release: &Release) -> Router {
        match &release.spec.traffic.gateway_api {
            Some(gateway) => Router::Gateway(GatewayRouter::new(client, &gateway.http_route)),
            None => Router::Replicas(ReplicaRouter),
        }
    }
}

impl TrafficRouter for Router {
    async fn observe(&self, release: &Release) -> Result<Option<RouteState>, TrafficError> {
        match self {
            Router::Gateway(router) => router.observe(release).await,
            Router::Replicas(router) => router.observe(release).await,
        }
    }

    async fn set_weight(&self, release: &Release, canary_weight: i32) -> Result<(), TrafficError> {
        match self {
            Router::Gateway(router) => router.set_weight(release, canary_weight).await,
            Router::Replicas(router) => router.set_weight(release, canary_weight).await,
        }
    }
}
