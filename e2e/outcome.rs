//! A roadmap item's outcome on a real API server and a live Prometheus: a canary promoted with
//! `spec.roadmap.outcome` (30s baseline, 20s after) gets both numbers, the change and the
//! verdict in its `status.history[]` entry, and an Event `RoadmapOutcomeMeasured`.

use serde_json::json;

use crate::canary::judged_by;
use crate::fixtures::*;
use crate::support::{Env, eventually};
use waymark::api::{Outcome, OutcomeVerdict, Phase};

/// The stable Service serves 50 requests/s until the canary starts, then 60/s: the outcome
/// (requests to the stable Service, goal +10%) measures +20% and is Met.
pub async fn a_promoted_canarys_history_entry_gets_its_roadmap_outcome(env: Env) {
    let name = "checkout";
    let Some((metrics, prometheus)) = prometheus_judging(&env, name, 0.0).await else {
        return;
    };
    // The baseline window is 30s: let Prometheus hold that much of the 50/s before anything.
    prometheus
        .wait_for_window(
            &format!(r#"http_requests_total{{namespace="{}"}}"#, env.namespace),
            std::time::Duration::from_secs(35),
            std::time::Duration::from_secs(90),
        )
        .await
        .unwrap_or_else(|error| panic!("Prometheus collects the baseline window: {error}"));

    let mut release = judged_by(
        release(name, name, json!([{"setWeight": 50}])),
        prometheus.address(),
    );
    release.spec.roadmap.outcome = Some(
        serde_json::from_value(json!({
            "name": "stable-requests",
            "query": "sum(rate(http_requests_total{namespace=\"{{namespace}}\",service=\"{{service}}\"}[{{window}}]))",
            "goal": "increase",
            "baseline": "30s",
            "after": "20s",
            "minChange": "10%"
        }))
        .expect("the outcome deserializes"),
    );
    create_route(&env, name, name).await;
    create_release(&env, &release).await;
    wait_for_phase(&env, name, Phase::Healthy, Some("StableAvailable")).await;

    ship(&env, name, &image(2), "E2E-2").await;
    let started = wait_for_status(&env, name, "the canary to start", |s| {
        s.canary_revision.is_some() && s.canary_started_at.is_some()
    })
    .await;
    let canary_revision = started.canary_revision.clone().expect("a canary");
    // From the canary's start on, the stable Service gets 60/s.
    metrics.set_traffic(&env.namespace, &format!("{name}-stable"), 60.0, 0.0);

    let promoted = wait_for_status(&env, name, "the canary promoted", |s| {
        s.history
            .first()
            .is_some_and(|e| e.revision == canary_revision && e.outcome == Outcome::Promoted)
    })
    .await;
    let entry = &promoted.history[0];
    let record = entry
        .roadmap_outcome
        .as_ref()
        .expect("the promotion records the outcome to measure");
    assert_eq!(record.name, "stable-requests");
    assert!(!entry.rework, "E2E-2 was never promoted before");

    // Measured: the baseline at promotion, the after number 20s later (and the Event).
    let measured = eventually("the outcome measured in the history entry", || async {
        let status = env.status(name).await;
        let record = status
            .history
            .iter()
            .find(|e| e.revision == canary_revision)
            .and_then(|e| e.roadmap_outcome.clone())
            .ok_or("no entry with an outcome")?;
        if record.verdict.is_some() {
            Ok(record)
        } else {
            Err(format!("{record:?}"))
        }
    })
    .await;
    println!(
        "outcome of {canary_revision}: {} (baseline {:?}, after {:?})",
        waymark::analysis::roadmap_outcome::describe(&measured),
        measured.baseline,
        measured.after
    );
    let baseline = measured.baseline.expect("a baseline number");
    let after = measured.after.expect("an after number");
    assert!(
        (45.0..55.0).contains(&baseline),
        "baseline {baseline}, expected about 50"
    );
    assert!(
        (57.0..63.0).contains(&after),
        "after {after}, expected about 60"
    );
    assert_eq!(measured.verdict, Some(OutcomeVerdict::Met), "{measured:?}");
    assert!(
        measured
            .change
            .is_some_and(|change| (10.0..30.0).contains(&change)),
        "{measured:?}"
    );

    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    let note = eventually("a RoadmapOutcomeMeasured Event", || async {
        events
            .list(&Default::default())
            .await
            .map_err(|error| error.to_string())?
            .items
            .into_iter()
            .find(|event| event.reason.as_deref() == Some("RoadmapOutcomeMeasured"))
            .and_then(|event| event.note)
            .ok_or_else(|| "none yet".to_string())
    })
    .await;
    assert!(
        note.starts_with(&format!(
            "E2E-2: outcome of revision {canary_revision}: stable-requests +"
        )),
        "{note}"
    );
    assert!(note.contains("(goal +10%): met"), "{note}");
}
