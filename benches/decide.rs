//! Median time of one `rollout::decide` call for a 10-step Release in the middle of its canary.
//!
//! Run with `cargo bench --bench decide`; the target is well under 50 µs per call.

use std::hint::black_box;
use std::time::{Duration as StdDuration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use waymark::analysis::AnalysisRun;
use waymark::api::{
    Duration, Pause, Release, ReleaseSpec, ReleaseStatus, RoleAnalysis, Step, Verdict,
    WindowResult, template_revision,
};
use waymark::rollout::{Observed, RouteState, WorkloadState, decide};

const ITERATIONS: usize = 20_000;

/// The checkout Release from `examples/checkout.yaml`: a realistic template and analysis.
fn example_spec() -> ReleaseSpec {
    let text = include_str!("../examples/checkout.yaml");
    let release_document = text.split("\n---\n").next().unwrap_or_default();
    let release: Release = serde_saphyr::from_str(release_document)
        .unwrap_or_else(|error| panic!("examples/checkout.yaml holds a Release: {error}"));
    release.spec
}

fn workload(revision: &str, replicas: i32) -> WorkloadState {
    WorkloadState {
        revision: Some(revision.into()),
        replicas,
        available_replicas: replicas,
        updated_replicas: replicas,
        available: true,
        settled: true,
    }
}

fn main() {
    let start: Timestamp = "2026-03-01T12:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let now = start + SignedDuration::from_secs(600);
    let mut spec = example_spec();
    let stable = "5d8b9c0000".to_string();
    let canary = template_revision(&spec.template);

    // Ten steps: weights 10..50 with timed pauses between; the canary is at step 6 (a pause).
    let steps: Vec<Step> = (0..10)
        .map(|index| {
            if index % 2 == 0 {
                Step {
                    set_weight: Some(10 * (index / 2 + 1)),
                    ..Step::default()
                }
            } else {
                Step {
                    pause: Some(Pause {
                        duration: Some(Duration::from_secs(300)),
                    }),
                    ..Step::default()
                }
            }
        })
        .collect();
    spec.steps = steps;
    spec.replicas = 10;
    let mut release = Release::new("checkout", spec);
    release.metadata.generation = Some(7);
    release.status = Some(ReleaseStatus {
        stable_revision: Some(stable.clone()),
        stable_roadmap_item: Some("PAY-139".into()),
        canary_revision: Some(canary.clone()),
        current_step: Some(5),
        canary_weight: Some(30),
        canary_started_at: Some(Time(start)),
        steps_started_at: Some(Time(start)),
        step_started_at: Some(Time(now - SignedDuration::from_secs(100))),
        ..Default::default()
    });
    let observed = Observed {
        stable: Some(workload(&stable, 10)),
        canary: Some(workload(&canary, 3)),
        services_ready: true,
        route: Some(RouteState::Ready { canary_weight: 30 }),
        route_object: None,
        grpc_route_object: None,
        analysis: Some(AnalysisRun {
            verdict: Verdict::Passing,
            ran_at: now,
            revision: Some(canary.clone()),
            canary: Some(RoleAnalysis {
                verdict: Verdict::Passing,
                service: "checkout-canary".into(),
                windows: vec![WindowResult {
                    window: "5m".into(),
                    error_ratio: Some(0.0008),
                    requests: Some(2140.0),
                    burn_rate: Some(0.8),
                    max: 14.4,
                    note: None,
                    error_query: "errors".into(),
                    total_query: "total".into(),
                }],
            }),
            stable: None,
            comparison: vec![],
            checks: vec![],
            error_budget_remaining: Some(0.73),
            summary: "canary burns 0.8x of 14.4x over 5m and 1m (2,140 requests)".into(),
            burn: Some("0.8x/14.4x".into()),
        }),
        credentials: Default::default(),
        last_apply: Default::default(),
        workload: Default::default(),
        held_workload: Default::default(),
        gateway_features: None,
        outcome_answers: Vec::new(),
    };

    // Warm up, then time each call on its own.
    for _ in 0..1_000 {
        black_box(decide(
            black_box(&release),
            black_box(&observed),
            black_box(now),
        ));
    }
    let mut samples: Vec<StdDuration> = (0..ITERATIONS)
        .map(|_| {
            let started = Instant::now();
            black_box(decide(
                black_box(&release),
                black_box(&observed),
                black_box(now),
            ));
            started.elapsed()
        })
        .collect();
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[samples.len() * 99 / 100];
    let decision = decide(&release, &observed, now);
    println!(
        "decide (10 steps, mid-canary, with analysis): median {:.1} µs, p99 {:.1} µs over {ITERATIONS} calls ({} actions, phase {:?})",
        median.as_secs_f64() * 1e6,
        p99.as_secs_f64() * 1e6,
        decision.actions.len(),
        decision.status.phase
    );
}
