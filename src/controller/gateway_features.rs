//! What the route's GatewayClass supports: route parentRefs → Gateway → GatewayClass
//! `status.supportedFeatures`, read with `get` and kept for [`FEATURES_KEPT`], handed to the
//! core as plain names ([`crate::rollout::Observed::gateway_features`]).
//!
//! Looked up only while a Release asks for something that depends on it (today
//! `spec.traffic.gatewayAPI.sessionPersistence`): other Releases cost no request, and a
//! controller without the RBAC for Gateways keeps working for them.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use gateway_api::apis::standard::gatewayclasses::GatewayClass;
use gateway_api::apis::standard::gateways::Gateway;
use kube::{Api, Client};

use crate::traffic::features::common_features;
use crate::traffic::route::WeightedRoute;

/// How long a Gateway's class features are kept before they are read again: a class changes
/// its features when its implementation is upgraded, not within a canary's step.
pub const FEATURES_KEPT: Duration = Duration::from_secs(60);

/// A Gateway as `(namespace, name)`.
type GatewayKey = (String, String);

/// When a Gateway's class features were read, and what they were.
type Found = (Instant, Option<Vec<String>>);

/// The features per Gateway, as last read.
#[derive(Debug, Default)]
pub struct FeatureLookups {
    found: Mutex<HashMap<GatewayKey, Found>>,
}

impl FeatureLookups {
    fn fresh(&self, gateway: &(String, String), now: Instant) -> Option<Option<Vec<String>>> {
        let found = self.found.lock().ok()?;
        let (at, features) = found.get(gateway)?;
        (now.saturating_duration_since(*at) < FEATURES_KEPT).then(|| features.clone())
    }

    fn record(&self, gateway: (String, String), now: Instant, features: Option<Vec<String>>) {
        if let Ok(mut found) = self.found.lock() {
            found.retain(|_, (at, _)| now.saturating_duration_since(*at) < FEATURES_KEPT);
            found.insert(gateway, (now, features));
        }
    }

    /// The features every parent Gateway of `route` supports (see [`common_features`]); `None`
    /// when any of them reports none or cannot be read (said in the log).
    pub async fn of_route<R: WeightedRoute>(
        &self,
        client: &Client,
        route: &R,
    ) -> Option<Vec<String>> {
        let mut per_parent = Vec::new();
        for gateway in route.parent_gateways() {
            let now = Instant::now();
            let features = match self.fresh(&gateway, now) {
                Some(features) => features,
                None => {
                    let features = read_features(client, &gateway.0, &gateway.1).await;
                    self.record(gateway, now, features.clone());
                    features
                }
            };
            per_parent.push(features);
        }
        common_features(per_parent)
    }
}

/// The `status.supportedFeatures` names of the class of Gateway `namespace/name`; `None` when the
/// class lists none or either object cannot be read.
async fn read_features(client: &Client, namespace: &str, name: &str) -> Option<Vec<String>> {
    let gateways: Api<Gateway> = Api::namespaced(client.clone(), namespace);
    let gateway = match gateways.get(name).await {
        Ok(gateway) => gateway,
        Err(error) => {
            tracing::warn!(%namespace, gateway = %name, %error, "cannot read the route's Gateway: its features are unknown");
            return None;
        }
    };
    let classes: Api<GatewayClass> = Api::all(client.clone());
    let class_name = gateway.spec.gateway_class_name;
    let class = match classes.get(&class_name).await {
        Ok(class) => class,
        Err(error) => {
            tracing::warn!(gateway_class = %class_name, %error, "cannot read the Gateway's GatewayClass: its features are unknown");
            return None;
        }
    };
    let features = class.status?.supported_features?;
    if features.is_empty() {
        return None;
    }
    Some(features.into_iter().map(|feature| feature.name).collect())
}
