//! The metrics and health server: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use super::metrics::Metrics;

/// What `/readyz` reports on.
#[derive(Debug, Default)]
pub struct Health {
    leader_election: bool,
    leading: AtomicBool,
    caches_synced: AtomicBool,
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

    /// Record whether the Release cache has its first full list.
    pub fn set_caches_synced(&self, synced: bool) {
        self.caches_synced.store(synced, Ordering::SeqCst);
    }

    /// Ready once the caches are synced; with leader election a standby is ready too (it is
    /// healthy and waiting), a new leader once its caches are synced.
    pub fn ready(&self) -> bool {
        let synced = self.caches_synced.load(Ordering::SeqCst);
        if self.leader_election {
            !self.leading.load(Ordering::SeqCst) || synced
        } else {
            synced
        }
    }

    fn describe(&self) -> &'static str {
        match (
            self.leader_election,
            self.leading.load(Ordering::SeqCst),
            self.ready(),
        ) {
            (true, false, _) => "ready: standing by for the leader Lease\n",
            (true, true, true) => "ready: leading, caches synced\n",
            (_, _, true) => "ready: caches synced\n",
            (_, _, false) => "not ready: waiting for the Release cache to sync\n",
        }
    }
}

/// State shared by the handlers.
#[derive(Clone)]
pub struct Shared {
    /// The controller's metrics.
    pub metrics: Arc<Metrics>,
    /// Readiness.
    pub health: Arc<Health>,
}

/// The HTTP routes.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .with_state(shared)
}

async fn metrics(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.metrics.encode() {
        Ok(text) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
            "cannot encode metrics\n".to_string(),
        ),
    }
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    let code = if shared.health.ready() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, shared.health.describe())
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
