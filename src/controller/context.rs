//! What every reconcile shares: the client, the process's event recorder and metrics, the
//! watch caches it reads the world from, and the bookkeeping that keeps writes fresh and
//! retries backed off.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::events::EventRecorder;
use gateway_api::apis::experimental::grpcroutes::GrpcRoute;
use gateway_api::apis::experimental::httproutes::HttpRoute;
use k8s_openapi::api::apps::v1::Deployment;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource};

use crate::api::Release;
use crate::rollout::LastApply;

use super::cached::{CachedDeployment, CachedRelease, CachedService};
use super::credentials::CredentialChecks;
use super::metrics::Metrics;
use super::prometheus::Clients;

/// Analysis runs in flight at once across all Releases: each is a handful of concurrent
/// queries, and Prometheus should not see thousands at the same second.
pub const ANALYSIS_SLOTS: usize = 16;
/// First wait after a failed reconcile; doubled on each failure in a row.
pub const ERROR_BACKOFF_START: Duration = Duration::from_secs(5);
/// Longest wait between retries of a failing Release.
pub const ERROR_BACKOFF_CAP: Duration = Duration::from_secs(300);

/// How soon to look again at a Release whose cached copy has not caught up with our own last
/// status write (the watch event is on its way).
pub const STALE_RETRY: Duration = Duration::from_millis(200);
/// How long a Deployment the controller wrote is read from what the write returned, at most,
/// when the watch cache has not caught up with it yet.
pub const WRITTEN_KEPT: Duration = Duration::from_secs(60);

/// The watch caches a reconcile reads from: Waymark's own Deployments and Services (selected by
/// the `waymark.dev/release` label) and the HTTPRoutes in the watched namespaces. No reconcile
/// GETs what a cache holds.
#[derive(Clone)]
pub struct Stores {
    /// Child Deployments, narrowed to what a decision reads (see [`CachedDeployment`]).
    pub deployments: Store<CachedDeployment>,
    /// Child Services, narrowed to what a decision reads (see [`CachedService`]).
    pub services: Store<CachedService>,
    /// HTTPRoutes, read for their weights.
    pub routes: Store<HttpRoute>,
    /// GRPCRoutes, read for their weights. Filled only once a Release names a GRPCRoute (the
    /// watch starts then: a cluster without the GRPCRoute CRD is never asked for them).
    pub grpc_routes: Store<GrpcRoute>,
    /// The Deployments this process wrote, as the API server returned them, until the cache
    /// shows that write: a reconcile that runs before the watch delivers it (a loaded API
    /// server's watches lag by seconds) reads its own write instead of creating the canary a
    /// second time or scaling it again.
    written: Arc<Mutex<HashMap<ObjectRef<CachedDeployment>, Written>>>,
    /// The HTTPRoutes this process wrote, as the API server returned them, until the cache
    /// shows that write: the rules are one atomic list, so a second edit made from a cache
    /// that lags behind the first (a weight, then a cohort) would undo it.
    written_routes: WrittenRoutes<HttpRoute>,
    /// The GRPCRoutes this process wrote, kept for the same reason as `written_routes`.
    written_grpc_routes: WrittenRoutes<GrpcRoute>,
}

/// Routes of one kind as writes of ours returned them, and when.
type WrittenRoutes<R> = Arc<Mutex<HashMap<ObjectRef<R>, (Arc<R>, Instant)>>>;

/// A Deployment as a write of ours returned it (or the one we deleted), and when.
struct Written {
    deployment: Arc<CachedDeployment>,
    deleted: bool,
    at: Instant,
}

impl Stores {
    /// Stores over these caches, with nothing written yet.
    pub fn new(
        deployments: Store<CachedDeployment>,
        services: Store<CachedService>,
        routes: Store<HttpRoute>,
        grpc_routes: Store<GrpcRoute>,
    ) -> Stores {
        Stores {
            deployments,
            services,
            routes,
            grpc_routes,
            written: Arc::default(),
            written_routes: Arc::default(),
            written_grpc_routes: Arc::default(),
        }
    }

    /// The Deployment `namespace/name`: from the cache, or from our newer write of it.
    pub fn deployment(&self, namespace: &str, name: &str) -> Option<Arc<CachedDeployment>> {
        self.deployment_at(namespace, name, Instant::now())
    }

    fn deployment_at(
        &self,
        namespace: &str,
        name: &str,
        now: Instant,
    ) -> Option<Arc<CachedDeployment>> {
        let key = ObjectRef::new(name).within(namespace);
        let cached = self.deployments.get(&key);
        let Ok(mut written) = self.written.lock() else {
            return cached;
        };
        let Some(ours) = written.get(&key) else {
            return cached;
        };
        let expired = now.saturating_duration_since(ours.at) >= WRITTEN_KEPT;
        if ours.deleted {
            // Gone, though the cache may still show the object we deleted.
            let still_shown = cached
                .as_deref()
                .is_some_and(|cached| cached.metadata.uid == ours.deployment.metadata.uid);
            if still_shown && !expired {
                return None;
            }
            written.remove(&key);
            return cached;
        }
        let caught_up = cached
            .as_deref()
            .is_some_and(|cached| caught_up(cached, &ours.deployment));
        if caught_up || expired {
            written.remove(&key);
            return cached;
        }
        Some(ours.deployment.clone())
    }

    /// Remember the Deployment `namespace/name` as our write returned it (narrowed like the
    /// cache's).
    pub fn wrote_deployment(&self, namespace: &str, name: &str, deployment: Deployment) {
        self.wrote_deployment_at(namespace, name, deployment, Instant::now());
    }

    fn wrote_deployment_at(
        &self,
        namespace: &str,
        name: &str,
        deployment: Deployment,
        now: Instant,
    ) {
        let deployment = CachedDeployment::from(deployment);
        let key = ObjectRef::new(name).within(namespace);
        if let Ok(mut written) = self.written.lock() {
            // Entries nobody read again (a Release that went) do not outlive their use.
            written.retain(|_, ours| now.saturating_duration_since(ours.at) < WRITTEN_KEPT);
            written.insert(
                key,
                Written {
                    deployment: Arc::new(deployment),
                    deleted: false,
                    at: now,
                },
            );
        }
    }

    /// Remember that we deleted `deployment` (as last read): until the watch reports it gone,
    /// it is read as gone, and not deleted a second time.
    pub fn deleted_deployment(&self, deployment: Arc<CachedDeployment>) {
        self.deleted_deployment_at(deployment, Instant::now());
    }

    fn deleted_deployment_at(&self, deployment: Arc<CachedDeployment>, now: Instant) {
        let (Some(namespace), Some(name)) =
            (&deployment.metadata.namespace, &deployment.metadata.name)
        else {
            return;
        };
        let key = ObjectRef::new(name).within(namespace);
        if let Ok(mut written) = self.written.lock() {
            written.insert(
                key,
                Written {
                    deployment,
                    deleted: true,
                    at: now,
                },
            );
        }
    }

    /// The watch delivered `event` (and the cache holds it): forget our write of that
    /// Deployment once the cache shows it, or once the object we wrote is gone.
    pub fn seen_deployment(&self, event: &watcher::Event<CachedDeployment>) {
        let (deployment, deleted) = match event {
            watcher::Event::Apply(deployment) | watcher::Event::InitApply(deployment) => {
                (deployment, false)
            }
            watcher::Event::Delete(deployment) => (deployment, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let (Some(namespace), Some(name)) =
            (&deployment.metadata.namespace, &deployment.metadata.name)
        else {
            return;
        };
        let key = ObjectRef::new(name).within(namespace);
        if let Ok(mut written) = self.written.lock()
            && let Some(ours) = written.get(&key)
            && (!ours.deleted && caught_up(deployment, &ours.deployment)
                || deleted && deployment.metadata.uid == ours.deployment.metadata.uid)
        {
            written.remove(&key);
        }
    }

    /// The cached Service `namespace/name`.
    pub fn service(&self, namespace: &str, name: &str) -> Option<Arc<CachedService>> {
        self.services.get(&ObjectRef::new(name).within(namespace))
    }

    /// The HTTPRoute `namespace/name`: from the cache, or from our newer write of it.
    pub fn route(&self, namespace: &str, name: &str) -> Option<Arc<HttpRoute>> {
        let key = ObjectRef::new(name).within(namespace);
        newer_of(self.routes.get(&key), &self.written_routes, &key)
    }

    /// Remember `route` as our write returned it, until the cache shows it (see
    /// [`Stores::route`]).
    pub fn wrote_route(&self, route: HttpRoute) {
        remember(&self.written_routes, route);
    }

    /// The GRPCRoute `namespace/name`: from the cache, or from our newer write of it.
    pub fn grpc_route(&self, namespace: &str, name: &str) -> Option<Arc<GrpcRoute>> {
        let key = ObjectRef::new(name).within(namespace);
        newer_of(self.grpc_routes.get(&key), &self.written_grpc_routes, &key)
    }

    /// Remember `route` as our write returned it, until the cache shows it (see
    /// [`Stores::grpc_route`]).
    pub fn wrote_grpc_route(&self, route: GrpcRoute) {
        remember(&self.written_grpc_routes, route);
    }
}

/// `cached`, or our write of `key` while the cache has not caught up with it: the same object
/// (uid) at an older generation. A route deleted since (the cache has none, or another uid) is
/// not brought back, and a write is forgotten after `WRITTEN_KEPT`.
fn newer_of<R: Resource<DynamicType = ()>>(
    cached: Option<Arc<R>>,
    written: &WrittenRoutes<R>,
    key: &ObjectRef<R>,
) -> Option<Arc<R>> {
    let Ok(mut written) = written.lock() else {
        return cached;
    };
    let Some((ours, at)) = written.get(key) else {
        return cached;
    };
    let seen = cached.as_deref().is_some_and(|cached| {
        cached.meta().uid == ours.meta().uid && cached.meta().generation >= ours.meta().generation
    });
    let replaced = cached
        .as_deref()
        .is_none_or(|cached| cached.meta().uid != ours.meta().uid);
    if seen || replaced || at.elapsed() >= WRITTEN_KEPT {
        written.remove(key);
        return cached;
    }
    Some(ours.clone())
}

/// Remember `route` in `written` as our write returned it (dropping writes kept too long).
fn remember<R: Resource<DynamicType = ()>>(written: &WrittenRoutes<R>, route: R) {
    let (Some(namespace), Some(name)) = (route.meta().namespace.clone(), route.meta().name.clone())
    else {
        return;
    };
    let key = ObjectRef::new(&name).within(&namespace);
    if let Ok(mut written) = written.lock() {
        written.retain(|_, (_, at)| at.elapsed() < WRITTEN_KEPT);
        written.insert(key, (Arc::new(route), Instant::now()));
    }
}

/// Whether `cached` shows the write that returned `ours`: the same object (uid) at that
/// generation or a later one, so with our write and whatever came after it. A write that left
/// the generation alone (metadata only) counts as seen at once, as without this bookkeeping.
fn caught_up(cached: &CachedDeployment, ours: &CachedDeployment) -> bool {
    cached.metadata.uid == ours.metadata.uid
        && cached.metadata.generation >= ours.metadata.generation
}

/// What every reconcile shares.
pub struct Context {
    /// The Kubernetes client.
    pub client: Client,
    /// The process-wide event recorder (a new one would forget the event series it bumps).
    pub recorder: EventRecorder,
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
    /// What the watches know of the API server: whether the HTTPRoute CRD is missing.
    pub health: Option<Arc<super::Health>>,
    /// Per Release, what the last read of its Prometheus Secrets found.
    pub credential_checks: CredentialChecks,
    /// Per Gateway, the features its GatewayClass lists, as last read.
    pub gateway_features: super::gateway_features::FeatureLookups,
    /// Per Release, what its last apply met, and whether a decision has seen that yet.
    applies: Mutex<HashMap<ObjectRef<Release>, (LastApply, bool)>>,
    /// The notifier, with `--notifications-config`.
    pub notifier: Option<Arc<super::notify::Notifier>>,
    /// The slots a reconcile waits for, per lane.
    pub lanes: super::lanes::Lanes,
    /// The Release cache, to reconcile the newest version of a Release after waiting for a
    /// slot (`None` in tests that pass the Release in).
    releases: Option<Store<CachedRelease>>,
}

impl Context {
    /// A context over `stores`.
    pub fn new(
        client: Client,
        recorder: EventRecorder,
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
            health: None,
            credential_checks: CredentialChecks::default(),
            gateway_features: Default::default(),
            applies: Mutex::new(HashMap::new()),
            notifier: None,
            lanes: super::lanes::Lanes::default(),
            releases: None,
        }
    }

    /// The same context, reading the newest version of a Release from `releases`.
    pub fn with_releases(mut self, releases: Store<CachedRelease>) -> Context {
        self.releases = Some(releases);
        self
    }

    /// The newest version the cache holds of `release` (itself without a cache), or `None`
    /// once it is gone from the cache (deleted).
    pub fn newest(&self, release: &Arc<CachedRelease>) -> Option<Arc<CachedRelease>> {
        match &self.releases {
            Some(releases) => releases.get(&ObjectRef::from_obj(release.as_ref())),
            None => Some(release.clone()),
        }
    }

    /// The same context, sending notifications through `notifier`.
    pub fn with_notifier(mut self, notifier: Option<Arc<super::notify::Notifier>>) -> Context {
        self.notifier = notifier;
        self
    }

    /// The same context, told what the watches know (`/readyz`'s [`super::Health`]).
    pub fn with_health(mut self, health: Arc<super::Health>) -> Context {
        self.health = Some(health);
        self
    }

    /// Whether the API server does not serve HTTPRoutes at all (the Gateway API CRD is missing).
    pub fn http_routes_missing(&self) -> bool {
        self.routes_missing(super::watched::Watched::HttpRoutes)
    }

    /// Whether the API server does not serve the route resource `watched` at all (its CRD is
    /// missing).
    pub fn routes_missing(&self, watched: super::watched::Watched) -> bool {
        self.health
            .as_ref()
            .is_some_and(|health| health.is_missing(watched))
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

    /// What the last apply of `release`'s actions met, for the decision about to be made (which
    /// then has seen it). `Unknown` before this process applied anything for it.
    pub fn last_apply(&self, release: &ObjectRef<Release>) -> LastApply {
        let Ok(mut applies) = self.applies.lock() else {
            return LastApply::Unknown;
        };
        match applies.get_mut(release) {
            Some((outcome, seen)) => {
                *seen = true;
                outcome.clone()
            }
            None => LastApply::Unknown,
        }
    }

    /// Remember what applying `release`'s actions met.
    pub fn record_apply(&self, release: &ObjectRef<Release>, outcome: LastApply) {
        if let Ok(mut applies) = self.applies.lock() {
            let seen = applies
                .get(release)
                .is_some_and(|(last, seen)| *seen && *last == outcome);
            applies.insert(release.clone(), (outcome, seen));
        }
    }

    /// Whether `release`'s last apply was refused and no decision has seen that refusal yet.
    pub fn refusal_unseen(&self, release: &ObjectRef<Release>) -> bool {
        self.applies.lock().is_ok_and(|applies| {
            applies
                .get(release)
                .is_some_and(|(outcome, seen)| matches!(outcome, LastApply::Refused(_)) && !seen)
        })
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
        if let Ok(mut applies) = self.applies.lock() {
            applies.remove(release);
        }
        self.credential_checks.forget(release);
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
    use kube::runtime::reflector::{self, store::Writer};

    fn stores() -> (Stores, Writer<CachedDeployment>) {
        let (deployments, writer) = reflector::store();
        let (services, _) = reflector::store();
        let (routes, _) = reflector::store();
        (
            Stores::new(deployments, services, routes, reflector::store().0),
            writer,
        )
    }

    /// The canary Deployment `shop/checkout-canary` at `generation` of object `uid`, with
    /// `replicas`.
    fn canary(uid: &str, generation: i64, replicas: i32) -> Deployment {
        let mut deployment = Deployment::default();
        deployment.metadata.name = Some("checkout-canary".into());
        deployment.metadata.namespace = Some("shop".into());
        deployment.metadata.uid = Some(uid.into());
        deployment.metadata.generation = Some(generation);
        deployment.spec = Some(Default::default());
        deployment.spec.as_mut().unwrap().replicas = Some(replicas);
        deployment
    }

    fn replicas(stores: &Stores, now: Instant) -> Option<i32> {
        stores
            .deployment_at("shop", "checkout-canary", now)
            .map(|deployment| deployment.spec.as_ref().unwrap().replicas.unwrap())
    }

    #[test]
    fn our_write_is_read_until_the_cache_shows_that_generation_of_that_object() {
        let (stores, mut cache) = stores();
        let now = Instant::now();
        // Created: the cache has nothing yet.
        stores.wrote_deployment_at("shop", "checkout-canary", canary("a", 1, 1), now);
        assert_eq!(replicas(&stores, now), Some(1));
        // Scaled to 3 (generation 2); the cache still shows generation 1.
        cache.apply_watcher_event(&watcher::Event::Apply(canary("a", 1, 1).into()));
        stores.wrote_deployment_at("shop", "checkout-canary", canary("a", 2, 3), now);
        assert_eq!(replicas(&stores, now), Some(3));
        // A Deployment of the same name that is another object (uid) is not our write.
        cache.apply_watcher_event(&watcher::Event::Apply(canary("b", 5, 7).into()));
        assert_eq!(replicas(&stores, now), Some(3));
        // The cache caught up (and someone scaled it to 4 since): the cache wins from then on.
        cache.apply_watcher_event(&watcher::Event::Apply(canary("a", 3, 4).into()));
        assert_eq!(replicas(&stores, now), Some(4));
        cache.apply_watcher_event(&watcher::Event::Delete(canary("a", 3, 4).into()));
        assert_eq!(replicas(&stores, now), None, "nothing of ours left to read");
    }

    #[test]
    fn a_write_the_cache_never_shows_is_read_for_a_minute_at_most() {
        let (stores, _cache) = stores();
        let now = Instant::now();
        stores.wrote_deployment_at("shop", "checkout-canary", canary("a", 1, 1), now);
        assert_eq!(
            replicas(&stores, now + WRITTEN_KEPT - Duration::from_secs(1)),
            Some(1)
        );
        assert_eq!(replicas(&stores, now + WRITTEN_KEPT), None);
    }

    #[test]
    fn the_watch_seeing_our_object_deleted_forgets_our_write_of_it() {
        // We created the canary; someone deleted it before anything read the cache again. The
        // next reconcile must see it gone (and create it again), not our old write.
        let (stores, mut cache) = stores();
        let now = Instant::now();
        stores.wrote_deployment_at("shop", "checkout-canary", canary("a", 1, 1), now);
        let deleted = watcher::Event::Delete(canary("a", 1, 1).into());
        cache.apply_watcher_event(&deleted);
        stores.seen_deployment(&deleted);
        assert_eq!(replicas(&stores, now), None);

        // The delivery of another object of that name does not forget our write.
        stores.wrote_deployment_at("shop", "checkout-canary", canary("c", 1, 2), now);
        stores.seen_deployment(&watcher::Event::Delete(canary("a", 1, 1).into()));
        assert_eq!(replicas(&stores, now), Some(2));
        // Nor does an older generation of ours; ours or a later one does.
        stores.wrote_deployment_at("shop", "checkout-canary", canary("c", 2, 3), now);
        stores.seen_deployment(&watcher::Event::Apply(canary("c", 1, 2).into()));
        assert_eq!(replicas(&stores, now), Some(3));
        cache.apply_watcher_event(&watcher::Event::Apply(canary("c", 2, 3).into()));
        stores.seen_deployment(&watcher::Event::Apply(canary("c", 2, 3).into()));
        assert!(stores.written.lock().unwrap().is_empty());
    }

    #[test]
    fn what_we_deleted_is_gone_though_the_cache_still_shows_it() {
        let (stores, mut cache) = stores();
        let now = Instant::now();
        cache.apply_watcher_event(&watcher::Event::Apply(canary("a", 2, 0).into()));
        stores.wrote_deployment_at("shop", "checkout-canary", canary("a", 2, 0), now);
        stores.deleted_deployment_at(Arc::new(canary("a", 2, 0).into()), now);
        assert_eq!(replicas(&stores, now), None, "not deleted a second time");
        assert_eq!(
            replicas(&stores, now + WRITTEN_KEPT),
            Some(0),
            "a minute at most"
        );

        // Deleted, then reported gone by the watch: the cache is the truth again, and a new
        // canary of that name is seen.
        stores.deleted_deployment_at(Arc::new(canary("a", 2, 0).into()), now);
        let gone = watcher::Event::Delete(canary("a", 2, 0).into());
        cache.apply_watcher_event(&gone);
        stores.seen_deployment(&gone);
        assert!(stores.written.lock().unwrap().is_empty());
        cache.apply_watcher_event(&watcher::Event::Apply(canary("b", 1, 1).into()));
        assert_eq!(replicas(&stores, now), Some(1));

        // A newer object of that name in the cache is not the one we deleted.
        stores.deleted_deployment_at(Arc::new(canary("a", 2, 0).into()), now);
        assert_eq!(replicas(&stores, now), Some(1));
    }

    #[test]
    fn backoff_doubles_from_five_seconds_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
        assert_eq!(backoff(u32::MAX), ERROR_BACKOFF_CAP);
    }
}
