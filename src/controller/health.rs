//! What `/readyz` reports on: leadership, the caches, and each watch's state as the watches
//! report it.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use kube::runtime::reflector::Store;

use super::cached::CachedRelease;
use super::watched::{WATCH_RETRY_CAP, Watched};
use crate::api::RouteKind;

/// What `/readyz` reports on.
#[derive(Default)]
pub struct Health {
    leader_election: bool,
    leading: AtomicBool,
    caches_synced: AtomicBool,
    watches: Mutex<BTreeMap<Watched, WatchState>>,
    /// The Release cache of the running controller: whether any Release names an HTTPRoute
    /// decides whether the HTTPRoute watch is needed.
    releases: Mutex<Option<Store<CachedRelease>>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("leader_election", &self.leader_election)
            .field("leading", &self.leading)
            .field("caches_synced", &self.caches_synced)
            .finish_non_exhaustive()
    }
}

/// One watch as `/readyz` sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WatchState {
    /// Whether it has listed at least once since the controller started.
    pub synced: bool,
    /// Since when it has failed, and why; `None` while it works.
    pub down: Option<(Instant, String)>,
    /// Whether the API server answered 404: the resource (its CRD) is not installed.
    pub missing: bool,
}

impl Health {
    /// Health of a controller that does (or does not) run leader election.
    pub fn new(leader_election: bool) -> Health {
        Health {
            leader_election,
            ..Health::default()
        }
    }

    /// Record whether this process holds the Lease.
    pub fn set_leading(&self, leading: bool) {
        self.leading.store(leading, Ordering::SeqCst);
    }

    /// Record whether the caches have their first full list; `false` also forgets the watches
    /// (a new term as leader starts them again).
    pub fn set_caches_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::SeqCst);
        if !synced && let Ok(mut watches) = self.watches.lock() {
            watches.clear();
        }
    }

    /// The Release cache of the running controller (`None` when it stops).
    pub fn set_releases(&self, releases: Option<Store<CachedRelease>>) {
        if let Ok(mut slot) = self.releases.lock() {
            *slot = releases;
        }
    }

    /// A watch listed everything (its first list, or a relist after a failure).
    pub fn watch_synced(&self, resource: Watched) {
        if let Ok(mut watches) = self.watches.lock() {
            let state = watches.entry(resource).or_default();
            *state = WatchState {
                synced: true,
                ..WatchState::default()
            };
        }
    }

    /// A watch failed; it has been failing since `since`.
    pub fn watch_failed(&self, resource: Watched, since: Instant, missing: bool, reason: &str) {
        if let Ok(mut watches) = self.watches.lock() {
            let state = watches.entry(resource).or_default();
            state.down = Some((since, reason.to_string()));
            state.missing = missing;
        }
    }

    /// Since when a watch has failed and why, while it does.
    pub fn watch_down_since(&self, resource: Watched) -> Option<(Instant, String)> {
        self.watches
            .lock()
            .ok()
            .and_then(|watches| watches.get(&resource).and_then(|state| state.down.clone()))
    }

    /// Whether the API server answers 404 for a watched resource: its CRD is not installed.
    pub fn is_missing(&self, resource: Watched) -> bool {
        self.watches.lock().ok().is_some_and(|watches| {
            watches
                .get(&resource)
                .is_some_and(|state| state.missing && state.down.is_some())
        })
    }

    /// A Release (`namespace/name`) that names an HTTPRoute, if any: then the HTTPRoute watch
    /// is needed.
    pub fn route_user(&self) -> Option<String> {
        self.route_user_of(RouteKind::Http)
    }

    /// A Release (`namespace/name`) that names a route of `kind`, if any: then that route
    /// watch is needed.
    pub fn route_user_of(&self, kind: RouteKind) -> Option<String> {
        let releases = self.releases.lock().ok()?.clone()?;
        releases
            .state()
            .iter()
            .find(|release| release.routes_through(kind))
            .map(|release| {
                format!(
                    "{}/{}",
                    release.metadata.namespace.as_deref().unwrap_or_default(),
                    release.metadata.name.as_deref().unwrap_or_default()
                )
            })
    }

    /// Ready, or why not.
    pub fn readiness(&self) -> Result<&'static str, String> {
        let leading = self.leading.load(Ordering::SeqCst);
        if self.leader_election && !leading {
            // A standby is healthy and waiting.
            return Ok("ready: standing by for the leader Lease");
        }
        let watches = self
            .watches
            .lock()
            .map(|watches| watches.clone())
            .unwrap_or_default();
        let route_user = self.route_user();
        let grpc_route_user = self.route_user_of(RouteKind::Grpc);
        readiness(
            self.caches_synced.load(Ordering::SeqCst),
            &watches,
            RouteUsers {
                http: route_user.as_deref(),
                grpc: grpc_route_user.as_deref(),
            },
            Instant::now(),
        )
        .map(|()| {
            if self.leader_election {
                "ready: leading, caches synced"
            } else {
                "ready: caches synced"
            }
        })
    }

    /// Whether `/readyz` answers 200.
    pub fn ready(&self) -> bool {
        self.readiness().is_ok()
    }
}

/// A Release (`namespace/name`) per route kind that names a route of that kind, if any.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RouteUsers<'a> {
    /// A Release that names an HTTPRoute.
    pub http: Option<&'a str>,
    /// A Release that names a GRPCRoute.
    pub grpc: Option<&'a str>,
}

impl<'a> RouteUsers<'a> {
    /// Only an HTTPRoute user (or none).
    pub fn http(user: Option<&'a str>) -> RouteUsers<'a> {
        RouteUsers {
            http: user,
            grpc: None,
        }
    }
}

/// Ready when the caches synced and no watch the controller needs has been down for longer
/// than [`WATCH_RETRY_CAP`] (a shorter failure is retried before anyone notices); a route watch
/// is needed only while some Release (`route_users`) names a route of its kind, so a cluster
/// without the GRPCRoute (or any Gateway API) CRD stays ready for everyone else.
pub fn readiness(
    caches_synced: bool,
    watches: &BTreeMap<Watched, WatchState>,
    route_users: RouteUsers,
    now: Instant,
) -> Result<(), String> {
    let mut problems = Vec::new();
    for resource in Watched::ALL {
        let user = match resource {
            Watched::HttpRoutes => Some(route_users.http),
            Watched::GrpcRoutes => Some(route_users.grpc),
            Watched::Releases | Watched::Deployments | Watched::Services => None,
        };
        let needed = user.is_none_or(|user| user.is_some());
        let Some(state) = watches.get(&resource).filter(|_| needed) else {
            continue;
        };
        let Some((since, reason)) = &state.down else {
            continue;
        };
        let down_for = now.saturating_duration_since(*since);
        if down_for <= WATCH_RETRY_CAP && !state.missing {
            continue;
        }
        let whose = match (resource, route_users.http, route_users.grpc) {
            (Watched::HttpRoutes, Some(release), _) => {
                format!(" (Release {release} names an HTTPRoute)")
            }
            (Watched::GrpcRoutes, _, Some(release)) => {
                format!(" (Release {release} names a GRPCRoute)")
            }
            _ => String::new(),
        };
        problems.push(format!(
            "the {} watch has been down for {}s: {reason}{whose}",
            resource.as_str(),
            down_for.as_secs()
        ));
    }
    if !problems.is_empty() {
        return Err(format!("not ready: {}", problems.join("; ")));
    }
    if !caches_synced {
        return Err(
            "not ready: waiting for the caches (Releases, Deployments, Services) to sync".into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn without_leader_election_ready_means_synced() {
        let health = Health::new(false);
        assert!(!health.ready());
        health.set_caches_synced(true);
        assert!(health.ready());
    }

    #[test]
    fn with_leader_election_a_standby_is_ready_and_a_new_leader_waits_for_its_caches() {
        let health = Health::new(true);
        assert!(health.ready(), "standby");
        health.set_leading(true);
        assert!(!health.ready(), "leading, caches not synced");
        health.set_caches_synced(true);
        assert!(health.ready());
    }

    fn down(since: Instant, reason: &str, missing: bool) -> WatchState {
        WatchState {
            synced: true,
            down: Some((since, reason.into())),
            missing,
        }
    }

    #[test]
    fn a_watch_down_longer_than_its_retry_cap_makes_the_controller_not_ready_with_the_reason() {
        let now = Instant::now();
        let since = now - Duration::from_secs(12);
        let watches = BTreeMap::from([
            (
                Watched::Releases,
                WatchState {
                    synced: true,
                    ..WatchState::default()
                },
            ),
            (
                Watched::Deployments,
                down(
                    since,
                    "the deployments watch failed: connection refused",
                    false,
                ),
            ),
        ]);
        let error = readiness(true, &watches, RouteUsers::default(), now).expect_err("not ready");
        assert_eq!(
            error,
            "not ready: the deployments watch has been down for 12s: the deployments watch \
             failed: connection refused"
        );
        // A failure younger than the cap is being retried: still ready.
        let recent = BTreeMap::from([(
            Watched::Deployments,
            down(now - Duration::from_secs(1), "connection refused", false),
        )]);
        assert_eq!(readiness(true, &recent, RouteUsers::default(), now), Ok(()));
    }

    #[test]
    fn a_missing_release_crd_is_named_at_once() {
        let now = Instant::now();
        let watches = BTreeMap::from([(
            Watched::Releases,
            down(now, &Watched::Releases.missing_hint(), true),
        )]);
        let error = readiness(false, &watches, RouteUsers::default(), now).expect_err("not ready");
        assert!(
            error.contains("releases.waymark.dev is not installed"),
            "{error}"
        );
        assert!(
            error.contains("kubectl apply --server-side -f crds/"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_gateway_api_matters_only_while_a_release_names_an_http_route() {
        let now = Instant::now();
        let watches = BTreeMap::from([(
            Watched::HttpRoutes,
            down(
                now - Duration::from_secs(60),
                &Watched::HttpRoutes.missing_hint(),
                true,
            ),
        )]);
        assert_eq!(
            readiness(true, &watches, RouteUsers::default(), now),
            Ok(())
        );
        let error = readiness(true, &watches, RouteUsers::http(Some("shop/checkout")), now)
            .expect_err("needed");
        assert!(
            error.contains("httproutes.gateway.networking.k8s.io"),
            "{error}"
        );
        assert!(
            error.contains("Release shop/checkout names an HTTPRoute"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_grpcroute_crd_matters_only_while_a_release_names_a_grpc_route() {
        let now = Instant::now();
        let watches = BTreeMap::from([(
            Watched::GrpcRoutes,
            down(
                now - Duration::from_secs(60),
                &Watched::GrpcRoutes.missing_hint(),
                true,
            ),
        )]);
        // HTTPRoute users (and everyone else) are not held back by a missing GRPCRoute CRD.
        assert_eq!(
            readiness(true, &watches, RouteUsers::default(), now),
            Ok(())
        );
        assert_eq!(
            readiness(true, &watches, RouteUsers::http(Some("shop/web")), now),
            Ok(())
        );
        let users = RouteUsers {
            http: None,
            grpc: Some("shop/checkout"),
        };
        let error = readiness(true, &watches, users, now).expect_err("needed");
        assert!(
            error.contains("grpcroutes.gateway.networking.k8s.io"),
            "{error}"
        );
        assert!(
            error.contains("Release shop/checkout names a GRPCRoute"),
            "{error}"
        );
    }

    #[test]
    fn a_relist_clears_the_failure() {
        let health = Health::new(false);
        health.set_caches_synced(true);
        health.watch_failed(
            Watched::Services,
            Instant::now() - Duration::from_secs(30),
            false,
            "connection refused",
        );
        assert!(!health.ready());
        health.watch_synced(Watched::Services);
        assert!(health.ready());
        assert_eq!(health.watch_down_since(Watched::Services), None);
    }
}
