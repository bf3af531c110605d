//! What every reconcile shares: the client, the process's event recorder and metrics, the
//! watch caches it reads the world from, and the bookkeeping that keeps writes fresh and
//! retries backed off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::Client;
use kube::runtime::events::Recorder;
use kube::runtime::reflector::{ObjectRef, Store};

use crate::analysis::Clients;
use crate::api::Release;

use super::metrics::Metrics;

/// Analysis runs in flight at once across all Releases: each is a handful of concurrent
/// queries, and Prometheus should not see thousands at the same second.
pub const ANALYSIS_SLOTS: usize = 16;
/// First wait after a failed reconcile; doubled on each failure in a row.
pub const ERROR_BACKOFF_START: Duration = Duration::from_secs(5);
/// Longest wait between retries of a failing Release.
pub const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// The watch caches a reconcile reads from: Waymark's own Deployments and Services (selected by
/// the `waymark.dev/release` label) and the HTTPRoutes in the watched namespaces. No reconcile
/// GETs what a cache holds.
#[derive(Clone)]
pub struct Stores {
    /// Child Deployments, without their pod templates (see [`super::slim`]).
    pub deployments: Store<Deployment>,
    /// Child Services.
    pub services: Store<Service>,
    /// HTTPRoutes, read for their weights.
    pub routes: Store<HttpRoute>,
}

impl Stores {
    /// The cached Deployment `namespace/name`.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<Deployment>> {
        self.deployments
            .get(&ObjectRef::new(name).within(namespace))
    }

    /// The cached Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<Service>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// The cached HTTPRoute `namespace/name`.
    pub fn route(&self, namespace: &str, name: &str) -> Option<Arc<HttpRoute>> {
        self.routes.get(&ObjectRef::new(name).within(namespace))
    }
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The process-wide event recorder (a new one would forget the event series it bumps).
    pub recorder: Recorder,
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// The watch caches.
    pub stores: Stores,
    /// Prometheus clients, one per address, shared by every Release that uses it.
    pub prometheus: Clients,
    /// Bounds the analysis runs in flight ([`ANALYSIS_SLOTS`]).
    pub analysis_slots: tokio::sync::Semaphore,
    /// Per Release, the resourceVersion our last status write was based on. A Release in the
    /// cache still at that version has not caught up with our write yet: deciding on it would
    /// act on a status older than the one we wrote.
    based_on: Mutex<HashMap<ObjectRef<Release>, String>>,
    /// Per Release, failed reconciles in a row.
    failures: Mutex<HashMap<ObjectRef<Release>, u32>>,
}

impl Context {
    /// A context over `stores`.
    pub fn new(
        client: Client,
        recorder: Recorder,
        metrics: Arc<Metrics>,
        stores: Stores,
    ) -> Context {
        Context {
            client,
            recorder,
            metrics,
            stores,
            prometheus: Clients::default(),
            analysis_slots: tokio::sync::Semaphore::new(ANALYSIS_SLOTS),
            based_on: Mutex::new(HashMap::new()),
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Remember that a status write was based on `resource_version` of `release`.
    pub fn wrote_status(&self, release: &ObjectRef<Release>, resource_version: Option<String>) {
        if let (Ok(mut based_on), Some(version)) = (self.based_on.lock(), resource_version) {
            based_on.insert(release.clone(), version);
        }
    }

    /// Whether the cached `release` predates our last status write of it.
    pub fn is_stale(&self, key: &ObjectRef<Release>, release: &Release) -> bool {
        let Ok(mut based_on) = self.based_on.lock() else {
            return false;
        };
        match based_on.get(key) {
            Some(version) if release.metadata.resource_version.as_ref() == Some(version) => true,
            Some(_) => {
                // The cache has seen our write (or a later change): nothing to wait for.
                based_on.remove(key);
                false
            }
            None => false,
        }
    }

    /// Count a failed reconcile of `release`; returns how long to wait before the next try:
    /// [`ERROR_BACKOFF_START`], doubled for each failure in a row, at most
    /// [`ERROR_BACKOFF_CAP`].
    pub fn failed(&self, release: &ObjectRef<Release>) -> Duration {
        let failures = match self.failures.lock() {
            Ok(mut failures) => {
                let count = failures.entry(release.clone()).or_insert(0);
                *count = count.saturating_add(1);
                *count
            }
            Err(_) => 1,
        };
        backoff(failures)
    }

    /// Forget the failures of `release` after a reconcile that went through.
    pub fn succeeded(&self, release: &ObjectRef<Release>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(release);
        }
    }

    /// Forget everything about a deleted Release.
    pub fn forget(&self, release: &ObjectRef<Release>) {
        if let Ok(mut failures) = self.failures.lock() {
            failures.remove(release);
        }
        if let Ok(mut based_on) = self.based_on.lock() {
            based_on.remove(release);
        }
    }
}

/// The wait after `failures` failed reconciles in a row.
pub fn backoff(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    ERROR_BACKOFF_START
        .saturating_mul(1 << doublings)
        .min(ERROR_BACKOFF_CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), ERROR_BACKOFF_CAP);
    }
}
