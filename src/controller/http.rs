//! The metrics and health server: `/metrics`, `/healthz`, `/readyz`.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::StreamExt;

use super::health::Health;
use super::metrics::Metrics;

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

/// The exposition, sent one part (one metric family) at a time as the client reads it: the
/// whole text is never in memory at once.
async fn metrics(State(shared): State<Shared>) -> axum::response::Response {
    let metrics = shared.metrics.clone();
    // The first part first: a failure there is still a clean 500.
    let first = match metrics.encode_part(0) {
        Some(Ok(text)) => text,
        _ => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                "cannot encode metrics\n".to_string(),
            )
                .into_response();
        }
    };
    let rest = futures::stream::unfold(1, move |index| {
        let metrics = metrics.clone();
        async move {
            let part = metrics.encode_part(index)?;
            Some((part.map_err(std::io::Error::other), index + 1))
        }
    });
    let parts = futures::stream::once(async move { Ok(first) })
        .chain(rest)
        // A family without series yet has no text: no empty piece.
        .filter(|part| futures::future::ready(part.as_ref().map_or(true, |text| !text.is_empty())));
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        axum::body::Body::from_stream(parts),
    )
        .into_response()
}

async fn readyz(State(shared): State<Shared>) -> impl IntoResponse {
    match shared.health.readiness() {
        Ok(text) => (StatusCode::OK, format!("{text}\n")),
        Err(text) => (StatusCode::SERVICE_UNAVAILABLE, format!("{text}\n")),
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::Request;
    use futures::StreamExt;
    use tower::ServiceExt;

    use super::*;
    use crate::api::{Phase, ReleaseStatus};

    fn metrics_of(releases: usize) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::default());
        for index in 0..releases {
            let status = ReleaseStatus {
                phase: Some(Phase::Progressing),
                canary_weight: Some(10),
                roadmap_item: Some(format!("PAY-{index}")),
                ..ReleaseStatus::default()
            };
            metrics.observe_release("shop", &format!("release-{index}"), None, &status);
        }
        metrics
    }

    #[tokio::test]
    async fn the_exposition_is_sent_a_family_at_a_time_and_reads_as_one() {
        let metrics = metrics_of(200);
        let whole = metrics.encode().unwrap();
        let response = router(Shared {
            metrics: metrics.clone(),
            health: Arc::new(Health::new(false)),
        })
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let mut frames = response.into_body().into_data_stream();
        let mut chunks = Vec::new();
        while let Some(frame) = frames.next().await {
            chunks.push(String::from_utf8(frame.unwrap().to_vec()).unwrap());
        }
        let served: String = chunks.concat();
        // The same text as one encode, but for the process's own figures, which move.
        let steady = |text: &str| -> Vec<String> {
            text.lines()
                .filter(|line| !line.starts_with("process_"))
                .map(str::to_string)
                .collect()
        };
        assert_eq!(
            steady(&served),
            steady(&whole),
            "the same text as one encode"
        );
        assert!(served.ends_with("# EOF\n"));
        assert_eq!(served.matches("# EOF").count(), 1);
        // At most one Waymark family a piece (the first piece is the process's own, the last
        // the EOF), and a per-Release family in many pieces: a scrape holds a part of one
        // family's text at a time, never the whole.
        assert!(chunks.len() >= 8, "{} pieces", chunks.len());
        assert!(chunks[0].contains("# TYPE process_"), "{}", chunks[0]);
        for chunk in &chunks[1..chunks.len() - 1] {
            assert!(chunk.matches("# TYPE ").count() <= 1, "one family: {chunk}");
        }
        assert_eq!(chunks.last().map(String::as_str), Some("# EOF\n"));
        for family in ["waymark_release_phase", "waymark_release_canary_weight"] {
            let series = |chunk: &String| {
                chunk.matches(&format!("\n{family}{{")).count()
                    + usize::from(chunk.starts_with(&format!("{family}{{")))
            };
            assert_eq!(
                served.matches(&format!("# TYPE {family} ")).count(),
                1,
                "{family} described once"
            );
            let holding: Vec<usize> = chunks
                .iter()
                .enumerate()
                .filter(|(_, chunk)| series(chunk) > 0)
                .map(|(index, _)| index)
                .collect();
            let total: usize = holding.iter().map(|&index| series(&chunks[index])).sum();
            assert!(total >= 200, "{family}: {total} series");
            assert!(
                holding.len() > 1
                    && holding
                        .iter()
                        .all(|&index| series(&chunks[index]) < total / 2),
                "{family}'s series in several pieces: {holding:?}"
            );
        }
    }
}
