//! A scale through the scale subresource (`kubectl scale`, a HorizontalPodAutoscaler) in the
//! middle of a canary: the split follows the new total, the step, its weight and its timers stay.

use super::fixtures::*;
use super::{Action, RouteState};
use crate::api::{Phase, ReleaseStatus};
use crate::traffic::split::{effective_weight, replica_split};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// `(stable, canary)` replica counts of the Deployments as the simulation holds them.
fn pods(sim: &Sim) -> (i32, i32) {
    let count = |w: &Option<super::WorkloadState>| w.as_ref().map_or(0, |w| w.replicas);
    (count(&sim.observed.stable), count(&sim.observed.canary))
}

/// The phase, the step, its start, the steps' start and the pause's end.
type Step = (
    Option<Phase>,
    Option<i32>,
    Option<Time>,
    Option<Time>,
    Option<Time>,
);

/// What a scale must not move: the phase, the step and its timers.
fn step_of(status: &ReleaseStatus) -> Step {
    (
        status.phase,
        status.current_step,
        status.step_started_at.clone(),
        status.steps_started_at.clone(),
        status.pause_until.clone(),
    )
}

#[test]
fn a_replica_split_follows_each_total_at_the_steps_weight() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::replica_split()
            .replicas(4)
            .steps(vec![set_weight(25), pause_until_promoted()]),
    );
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::Paused));
    assert_eq!(pods(&sim), (3, 1));
    let paused = step_of(sim.status());

    // (total set through /scale, stable and canary pods once settled)
    let cases = [
        (8, (6, 2)),
        (4, (3, 1)),
        (10, (7, 3)),
        (3, (2, 1)),
        (4, (3, 1)),
    ];
    for (total, expected) in cases {
        sim.release.spec.replicas = total;
        sim.slow_pods = true;
        let first = sim.tick(5);
        let (stable, canary) = pods(&sim);
        // Make before break: what grows is scaled at once, both sides together; nothing
        // shrinks below what serves before what grows is up.
        assert!(
            stable >= expected.0.min(3) && canary >= 1,
            "{total}: {:?}",
            first.actions
        );
        assert_eq!(step_of(sim.status()), paused, "{total}: while pods start");
        // The weight shown is the split's share of pods for the step's 25% (30% of 10 pods is
        // 3 pods, the nearest to 25%), from the first decision on: no dip while pods start.
        let share = effective_weight(total, replica_split(total, 25).1);
        assert_eq!(sim.status().canary_weight, Some(share), "{total}");
        // Long past progressDeadline with the new pods still starting: no rollback, the step
        // holds (the deadline judges the canary, not capacity the HPA asked for).
        sim.tick(3_600);
        assert_eq!(step_of(sim.status()), paused, "{total}: an hour later");
        assert_eq!(
            sim.status().canary_weight,
            Some(share),
            "{total}: an hour later"
        );
        assert_eq!(sim.status().canary_waiting_since, None, "{total}");
        sim.slow_pods = false;
        sim.pods_ready();
        sim.settle();
        assert_eq!(pods(&sim), expected, "{total}");
        assert_eq!(step_of(sim.status()), paused, "{total}: settled");
        assert_eq!(sim.status().canary_weight, Some(share), "{total}: settled");
    }
}

#[test]
fn a_scale_during_a_timed_pause_keeps_its_end() {
    let mut sim = Sim::canary_of(ReleaseBuilder::replica_split().replicas(4).steps(vec![
        set_weight(50),
        pause_for(600),
        set_weight(75),
    ]));
    sim.settle();
    let pause_until = sim.status().pause_until.clone().expect("a timed pause");
    assert_eq!(pods(&sim), (2, 2));
    sim.release.spec.replicas = 8;
    sim.tick(60);
    sim.settle();
    assert_eq!(pods(&sim), (4, 4));
    assert_eq!(sim.status().pause_until, Some(pause_until));
    assert_eq!(sim.status().canary_weight, Some(50));
    assert_eq!(sim.status().current_step, Some(1));
    // The pause ends when it was due (600 s after it began), not 600 s after the scale.
    sim.tick(539);
    assert_eq!(sim.status().current_step, Some(1));
    sim.tick(1);
    sim.settle();
    assert_ne!(
        sim.status().current_step,
        Some(1),
        "{:?}",
        sim.status().message
    );
}

#[test]
fn with_a_route_the_canary_is_its_share_of_the_total_and_the_weight_stays() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .replicas(4)
            .steps(vec![set_weight(10), pause_until_promoted()]),
    );
    sim.settle();
    assert_eq!(pods(&sim), (4, 1));
    let paused = step_of(sim.status());
    // (total, stable and canary pods): the canary ceil(total × 10%), at least 1; the stable the
    // total, never more.
    for (total, expected) in [(20, (20, 2)), (35, (35, 4)), (8, (8, 1)), (1, (1, 1))] {
        sim.release.spec.replicas = total;
        sim.slow_pods = true;
        let decision = sim.tick(5);
        assert!(
            !decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::SetWeight { .. })),
            "{total}: the route is not touched: {:?}",
            decision.actions
        );
        sim.tick(3_600);
        assert_eq!(step_of(sim.status()), paused, "{total}");
        assert_eq!(sim.status().canary_weight, Some(10), "{total}");
        sim.slow_pods = false;
        sim.pods_ready();
        sim.settle();
        assert_eq!(pods(&sim), expected, "{total}");
        assert_eq!(
            sim.observed.route,
            Some(RouteState::Ready { canary_weight: 10 })
        );
        assert_eq!(step_of(sim.status()), paused, "{total}");
    }
}

#[test]
fn flip_flopping_totals_do_not_flap_the_weight() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::replica_split()
            .replicas(4)
            .steps(vec![set_weight(25), pause_until_promoted()]),
    );
    sim.settle();
    let mut weights = vec![];
    // An HPA and a manual edit disagree, each write seen before the other's pods are up.
    for total in [8, 4, 8, 4, 8, 4, 8] {
        sim.release.spec.replicas = total;
        sim.slow_pods = true;
        sim.tick(2);
        weights.push(sim.status().canary_weight);
        sim.tick(2);
        weights.push(sim.status().canary_weight);
    }
    // 25% of 4 and of 8 are both whole pods: the weight never moves.
    assert!(weights.iter().all(|w| *w == Some(25)), "{weights:?}");
    // The last writer wins once the pods are up.
    sim.slow_pods = false;
    sim.pods_ready();
    sim.settle();
    assert_eq!(pods(&sim), (6, 2));
    assert_eq!(sim.status().canary_weight, Some(25));
    assert_eq!(sim.status().phase, Some(Phase::Paused));
}
