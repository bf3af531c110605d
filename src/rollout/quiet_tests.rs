//! A status changes only when the state does: what the API server reads back is decided the
//! same way again, and a canary takes a bounded number of status writes per step however the
//! pods come and go.

use k8s_openapi::jiff::SignedDuration;

use super::fixtures::*;
use super::{Action, RouteState, analysis_due, decide};
use crate::api::{Phase, ReleaseStatus, Verdict};

/// The status as the API server stores it: times to the second.
fn read_back(status: &ReleaseStatus) -> ReleaseStatus {
    let json = serde_json::to_value(status).expect("a status serializes");
    serde_json::from_value(json).expect("a stored status deserializes")
}

/// One reconcile `step_ms` later: decide, apply the actions (`then` changes the world after
/// them), and keep the status as the API server would (read back). The status, when it was
/// written (differs from the one before).
fn reconcile(sim: &mut Sim, step_ms: i64, then: impl FnOnce(&mut Sim)) -> Option<ReleaseStatus> {
    sim.now += SignedDuration::from_millis(step_ms);
    let before = sim.release.status.clone();
    let decision = decide(&sim.release, &sim.observed, sim.now);
    sim.apply(&decision);
    then(sim);
    sim.release.status = Some(read_back(sim.status()));
    (sim.release.status != before).then(|| sim.status().clone())
}

/// Healthy with the canary gone.
fn done(sim: &Sim) -> bool {
    sim.status().phase == Some(Phase::Healthy) && sim.status().canary_revision.is_none()
}

/// Reconcile `sim` every `step_ms` until done or `limit` decisions; the status writes.
fn writes(sim: &mut Sim, step_ms: i64, limit: usize) -> Vec<ReleaseStatus> {
    let mut written = Vec::new();
    for _ in 0..limit {
        written.extend(reconcile(sim, step_ms, |_| {}));
        if done(sim) {
            break;
        }
    }
    written
}

fn route_weight(sim: &Sim) -> Option<i32> {
    match sim.observed.route {
        Some(RouteState::Ready { canary_weight }) => Some(canary_weight),
        _ => None,
    }
}

/// Each write's reason with the status fields it changed.
fn reasons(written: &[ReleaseStatus]) -> Vec<String> {
    let mut before = serde_json::Value::Null;
    written
        .iter()
        .map(|status| {
            let now = serde_json::to_value(status).expect("a status serializes");
            let changed: Vec<&str> = now
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(key, value)| before.get(key.as_str()) != Some(*value))
                .map(|(key, _)| key.as_str())
                .collect();
            let line = format!(
                "{} {} weight={:?}",
                status.reason.as_deref().unwrap_or_default(),
                changed.join(","),
                status.canary_weight
            );
            before = now;
            line
        })
        .collect()
}

#[test]
fn a_status_read_back_at_whole_seconds_is_decided_again_without_a_change() {
    // Decisions at fractions of a second: an instant kept with its fraction in a message or a
    // field reads back different, and the next reconcile would write again.
    let mut sim =
        Sim::canary_of(ReleaseBuilder::replica_split().steps(vec![set_weight(50), pause_for(30)]));
    let mut seen_pause = false;
    for _ in 0..60 {
        sim.now += SignedDuration::from_millis(1_730);
        let decision = decide(&sim.release, &sim.observed, sim.now);
        let mut stored_release = sim.release.clone();
        let stored = read_back(&decision.status);
        stored_release.status = Some(stored.clone());
        // The same world, the status as stored: nothing new to write.
        let again = decide(&stored_release, &sim.observed, sim.now);
        assert_eq!(
            again.status, stored,
            "decided again at {} from the stored status",
            sim.now
        );
        sim.apply(&decision);
        sim.release.status = Some(stored.clone());
        seen_pause |= stored.reason.as_deref() == Some("StepPause");
    }
    assert!(seen_pause, "the walk went through the pause");
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
}

#[test]
fn a_replica_split_canary_takes_one_status_write_per_step_and_one_for_the_promotion() {
    let mut sim =
        Sim::canary_of(ReleaseBuilder::replica_split().steps(vec![set_weight(50), pause_for(10)]));
    let written = writes(&mut sim, 500, 200);
    let lines = reasons(&written);
    let names: Vec<&str> = lines
        .iter()
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(
        names,
        ["StepSetWeight", "StepPause", "Promoting", "StableAvailable"],
        "{lines:#?}"
    );
}

#[test]
fn pods_that_start_slowly_add_no_status_write() {
    // Every Deployment change is first seen unsettled (the Deployment controller has not
    // looked yet), then with its pods unavailable for a while, then available.
    let mut sim =
        Sim::canary_of(ReleaseBuilder::replica_split().steps(vec![set_weight(50), pause_for(10)]));
    let mut written = Vec::new();
    sim.slow_pods = true;
    for _ in 0..200 {
        // Changed Deployments are seen before their controller has looked at them.
        written.extend(reconcile(&mut sim, 500, |sim| {
            for workload in [sim.observed.stable.as_mut(), sim.observed.canary.as_mut()]
                .into_iter()
                .flatten()
                .filter(|w| !w.available)
            {
                workload.settled = false;
            }
        }));
        // The Deployment controller catches up, then the pods start.
        for workload in [sim.observed.stable.as_mut(), sim.observed.canary.as_mut()]
            .into_iter()
            .flatten()
        {
            workload.settled = true;
        }
        written.extend(reconcile(&mut sim, 500, |_| {}));
        sim.pods_ready();
        if done(&sim) {
            break;
        }
    }
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
    assert!(
        written.len() <= 6,
        "{} writes: {:?}",
        written.len(),
        reasons(&written)
    );
    // No write says only that a Deployment was being looked at.
    for pair in written.windows(2) {
        assert!(
            pair[0].reason != pair[1].reason || pair[0].current_step != pair[1].current_step,
            "a write without a new reason or step: {:#?}",
            reasons(&written)
        );
    }
}

#[test]
fn a_stable_not_yet_seen_by_the_deployment_controller_keeps_what_the_status_says_of_it() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway().steps(vec![set_weight(50), pause_until_promoted()]),
    );
    sim.settle();
    let settled = sim.status().clone();
    assert_eq!(settled.phase, Some(Phase::Paused));

    // The stable was just changed: its counts are those of an older spec.
    let stable = sim.observed.stable.as_mut().unwrap();
    stable.settled = false;
    stable.available = false;
    stable.available_replicas = 0;
    let decision = decide(&sim.release, &sim.observed, sim.now);
    assert_eq!(decision.status, settled, "nothing to report yet");

    // Seen, and truly unavailable: reported, with the moment it began.
    sim.observed.stable.as_mut().unwrap().settled = true;
    let decision = decide(&sim.release, &sim.observed, sim.now);
    let available = decision
        .status
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(available.status, "False");
    assert_eq!(
        decision.status.stable_unavailable_since.map(|t| t.0),
        Some(sim.now)
    );
}

#[test]
fn a_canary_growing_for_its_next_step_keeps_its_traffic_and_status_until_its_pods_are_up() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().replicas(4).steps(vec![
        set_weight(10),
        set_weight(50),
        pause_until_promoted(),
    ]));
    sim.slow_pods = true;
    sim.settle();
    sim.pods_ready();
    // Step 1 gets its 10%, step 2 asks for a second canary pod, which starts slowly.
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1));
    assert_eq!(sim.observed.canary.as_ref().unwrap().replicas, 2);
    assert_eq!(route_weight(&sim), Some(10));
    let waiting = sim.status().clone();
    assert_eq!(waiting.reason.as_deref(), Some("StepSetWeight"));
    assert_eq!(waiting.canary_waiting_since, None, "not a canary failure");

    // A minute of pods starting: no more traffic, no status write.
    let decision = sim.tick(60);
    assert!(
        !decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetWeight { .. })),
        "{:?}",
        decision.actions
    );
    assert_eq!(sim.status(), &waiting);

    // Up: 50%, then the pause.
    sim.pods_ready();
    sim.settle();
    assert_eq!(route_weight(&sim), Some(50));
    assert_eq!(sim.status().phase, Some(Phase::Paused));
}

#[test]
fn a_canary_whose_new_pods_never_start_is_rolled_back_at_its_progress_deadline() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .replicas(4)
            .progress_deadline(600)
            .steps(vec![set_weight(10), set_weight(50), pause_until_promoted()]),
    );
    sim.slow_pods = true;
    sim.settle();
    sim.pods_ready();
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1));
    assert_eq!(route_weight(&sim), Some(10));

    sim.tick(590);
    assert_eq!(sim.status().reason.as_deref(), Some("StepSetWeight"));
    sim.tick(20);
    sim.settle();
    let last = &sim.status().history[0];
    assert_eq!(last.reason, "ProgressDeadlineExceeded", "{last:?}");
    assert_eq!(route_weight(&sim), Some(0));
}

#[test]
fn a_promotion_that_begins_while_the_stable_settles_takes_no_extra_status_write() {
    // Under load the Deployment controller (or the kubelet) is late: when the pause ends the
    // stable's scale-down of the step is not seen yet, and the promotion begins without
    // knowing whether the stable is available.
    let mut sim =
        Sim::canary_of(ReleaseBuilder::replica_split().steps(vec![set_weight(50), pause_for(10)]));
    for _ in 0..20 {
        reconcile(&mut sim, 500, |_| {});
        if sim.status().reason.as_deref() == Some("StepPause") {
            break;
        }
    }
    assert_eq!(sim.status().reason.as_deref(), Some("StepPause"));
    sim.observed.stable.as_mut().unwrap().settled = false;
    let mut written = Vec::new();
    written.extend(reconcile(&mut sim, 10_500, |_| {}));
    assert_eq!(sim.status().reason.as_deref(), Some("Promoting"));
    for _ in 0..100 {
        written.extend(reconcile(&mut sim, 500, |_| {}));
        if done(&sim) {
            break;
        }
    }
    let lines = reasons(&written);
    let names: Vec<&str> = lines
        .iter()
        .map(|line| line.split(' ').next().unwrap_or_default())
        .collect();
    assert_eq!(names, ["Promoting", "StableAvailable"], "{lines:#?}");
}

#[test]
fn a_canary_held_for_want_of_evidence_writes_only_when_a_run_comes_or_its_pause_ends() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    if let Some(analysis) = sim.release.spec.analysis.as_mut() {
        analysis.inconclusive_limit = 1_000;
    }
    for _ in 0..10 {
        reconcile(&mut sim, 0, |_| {});
    }
    assert_eq!(sim.status().current_step, Some(1), "in the 2m pause at 10%");
    // Reconciles every 0.7s for three and a half minutes, a run without data whenever one is
    // due: the status is written for each run (its time and verdict are new), and once more
    // when the pause's time is up and the message turns to what holds the canary.
    let mut writes_without_run = Vec::new();
    for _ in 0..300 {
        let next = sim.now + SignedDuration::from_millis(700);
        let due = analysis_due(&sim.release, next);
        if due {
            sim.observed.analysis = Some(run(V2, Verdict::Inconclusive, next));
        }
        let written = reconcile(&mut sim, 700, |sim| sim.observed.analysis = None);
        if let Some(status) = written.filter(|_| !due) {
            writes_without_run.push((sim.now, status.message.unwrap_or_default()));
        }
    }
    assert_eq!(writes_without_run.len(), 1, "{writes_without_run:#?}");
    let (when, message) = &writes_without_run[0];
    assert!(
        *when >= at(120) && *when < at(121),
        "at the pause's end: {when}"
    );
    assert!(message.contains("held at 10%"), "{message}");
    assert_eq!(route_weight(&sim), Some(10));
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap_or_default()
            .contains(
                "pause 2m ended at 2026-03-01T12:02:00Z; the next step needs a passing analysis"
            ),
        "{:?}",
        sim.status().message
    );
}
