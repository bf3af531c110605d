//! Behaviour of the rollout core, one test per rule of the design.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use std::time::Duration as StdDuration;

use super::fixtures::*;
use super::{Action, CONVERGE_POLL, analysis_due, conditions, decide, history::HISTORY_LIMIT};
use crate::api::{ManualAction, Outcome, Phase, Verdict};

fn weight(canary_weight: i32) -> Action {
    Action::SetWeight { canary_weight }
}

/// Gateway release on V1 moved to V2, ticked until the canary waits at `step` (0-based).
fn gateway_canary_at_indefinite_pause() -> Sim {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.settle();
    sim.tick(120);
    sim.settle();
    sim
}

#[test]
fn first_release_becomes_the_stable_directly_and_is_healthy_once_available() {
    let release = ReleaseBuilder::gateway().build();
    let decision = decide(&release, &observed().route(0).build(), at(0));
    let revision = revision_of(V1);
    assert!(decision.actions.contains(&Action::ApplyStable {
        revision: revision.clone(),
        replicas: 4
    }));
    assert!(
        !decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCanary { .. }))
    );
    let status = &decision.status;
    // Nothing runs yet: Progressing, never Healthy (Argo CD would show it green).
    assert_eq!(status.phase, Some(Phase::Progressing));
    assert_eq!(status.reason.as_deref(), Some("StableRollingOut"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("waiting for 4 pods to be available"),
        "{:?}",
        status.message
    );
    assert_eq!(status.stable_revision.as_deref(), Some(revision.as_str()));
    assert_eq!(status.stable_roadmap_item.as_deref(), Some("PAY-142"));
    assert_eq!(status.roadmap_item.as_deref(), Some("PAY-142"));
    assert_eq!(status.observed_generation, Some(7));
    assert_eq!(status.canary_revision, None);
    assert!(status.history.is_empty(), "{:?}", status.history);
    assert!(
        notes(&decision)
            .iter()
            .any(|n| n.contains("PAY-142: first release"))
    );
    let mut release = release;
    release.status = Some(decision.status.clone());
    let available = decide(&release, &observed().stable(V1, 4).route(0).build(), at(20));
    assert_eq!(available.status.phase, Some(Phase::Healthy));
    assert_eq!(available.status.reason.as_deref(), Some("StableAvailable"));
    assert_eq!(available.status.history[0].reason, "FirstRelease");
}

/// A first release is in the history (`Promoted`, reason `FirstRelease`) only once its stable
/// is available: not while it has no pod to serve with, and once only.
#[test]
fn a_first_release_is_recorded_promoted_only_once_its_stable_is_available() {
    // (what the watch caches show, at second, how many entries, recorded at which second)
    let table: Vec<(&str, super::Observed, i64, Option<i64>)> = vec![
        ("no stable yet", observed().route(0).build(), 0, None),
        (
            "stable made, 0 of 4 available",
            observed().stable_unavailable(V1, 4).route(0).build(),
            10,
            None,
        ),
        (
            "stable available",
            observed().stable(V1, 4).route(0).build(),
            20,
            Some(20),
        ),
        (
            "stable still available",
            observed().stable(V1, 4).route(0).build(),
            30,
            Some(20),
        ),
        (
            "stable lost its pods after",
            observed().stable_unavailable(V1, 4).route(0).build(),
            40,
            Some(20),
        ),
    ];
    let mut release = ReleaseBuilder::gateway().build();
    for (moment, observed, second, recorded_at) in table {
        let decision = decide(&release, &observed, at(second));
        let history = &decision.status.history;
        match recorded_at {
            None => assert!(history.is_empty(), "{moment}: {history:?}"),
            Some(recorded_at) => {
                assert_eq!(history.len(), 1, "{moment}: {history:?}");
                let entry = &history[0];
                assert_eq!(
                    (entry.outcome, entry.reason.as_str(), entry.revision.clone()),
                    (Outcome::Promoted, "FirstRelease", revision_of(V1)),
                    "{moment}"
                );
                assert_eq!(entry.finished_at, Time(at(recorded_at)), "{moment}");
                assert_eq!(entry.roadmap_item, "PAY-142", "{moment}");
            }
        }
        release.status = Some(decision.status);
    }
}

#[test]
fn new_revision_gets_no_traffic_until_the_canary_is_available() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.slow_pods = true;
    let started = sim.tick(0);
    assert_eq!(
        moves(&started),
        vec![Action::ApplyCanary {
            revision: revision_of(V2),
            replicas: 1
        }]
    );
    assert_eq!(sim.status().reason.as_deref(), Some("CanaryStarting"));
    assert_eq!(sim.status().canary_revision, Some(revision_of(V2)));
    assert!(
        notes(&started)
            .iter()
            .any(|n| n.contains("PAY-142: canary"))
    );
    let waiting = sim.tick(10);
    assert!(
        !waiting
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetWeight { .. }))
    );
    // The deadline is the next thing due while waiting (the Deployment itself is watched).
    assert_eq!(waiting.requeue_after, Some(StdDuration::from_secs(590)));
    sim.pods_ready();
    assert_eq!(moves(&sim.tick(5)), vec![weight(10)]);
}

#[test]
fn steps_run_in_order_with_weights_and_a_timed_pause() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1));
    assert_eq!(sim.status().step_progress.as_deref(), Some("2/4"));
    assert_eq!(sim.status().canary_weight, Some(10));
    assert_eq!(sim.status().phase, Some(Phase::Progressing));
    assert_eq!(sim.status().reason.as_deref(), Some("StepPause"));
    let in_pause = sim.tick(60);
    assert!(moves(&in_pause).is_empty());
    assert_eq!(in_pause.requeue_after, Some(StdDuration::from_secs(60)));
    // Pause over: the canary grows to carry 50% before it gets it.
    let grow = sim.tick(60);
    assert_eq!(moves(&grow), vec![Action::ScaleCanary { replicas: 2 }]);
    assert_eq!(moves(&sim.tick(0)), vec![weight(50)]);
    sim.tick(0);
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::Paused));
    assert_eq!(status.reason.as_deref(), Some("CanaryPauseStep"));
    assert_eq!(status.step_progress.as_deref(), Some("4/4"));
    assert_eq!(status.canary_weight, Some(50));
    let message = status.message.clone().unwrap();
    assert!(message.starts_with("step 4/4: 50% on canary"), "{message}");
}

#[test]
fn indefinite_pause_waits_for_promote_then_promotes_and_removes_the_canary_later() {
    let mut sim = gateway_canary_at_indefinite_pause();
    let idle = sim.tick(3600);
    assert!(moves(&idle).is_empty());
    assert_eq!(
        idle.requeue_after, None,
        "an indefinite pause has nothing due"
    );
    assert_eq!(sim.status().phase, Some(Phase::Paused));

    sim.request("r1", ManualAction::Promote);
    let promote = sim.tick(0);
    assert_eq!(sim.status().handled_request.as_deref(), Some("r1"));
    assert_eq!(
        moves(&promote),
        vec![Action::ApplyStable {
            revision: revision_of(V2),
            replicas: 4
        }]
    );
    assert_eq!(sim.status().reason.as_deref(), Some("Promoting"));
    // Stable available with the new template: then all traffic to it.
    assert_eq!(moves(&sim.tick(0)), vec![weight(0)]);
    let done = sim.tick(0);
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::Healthy));
    assert_eq!(status.stable_revision, Some(revision_of(V2)));
    assert_eq!(status.canary_revision, None);
    assert_eq!(status.history[0].outcome, Outcome::Promoted);
    assert!(status.promoted_at.is_some());
    assert!(
        notes(&done)
            .iter()
            .any(|n| n.ends_with(&format!("PAY-142: canary {} promoted", revision_of(V2))))
    );
    assert!(!done.actions.contains(&Action::DeleteCanary));
    assert_eq!(done.requeue_after, Some(StdDuration::from_secs(30)));
    assert!(!sim.tick(29).actions.contains(&Action::DeleteCanary));
    assert!(sim.tick(1).actions.contains(&Action::DeleteCanary));
    assert_eq!(sim.tick(0).requeue_after, None);
}

#[test]
fn rolls_back_after_failure_limit_consecutive_failures() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    let first_run = at(30);
    sim.observed.analysis = Some(run(V2, Verdict::Failing, first_run));
    let one = sim.tick(30);
    assert!(
        moves(&one).is_empty(),
        "one failure is below failureLimit 2"
    );
    assert_eq!(
        sim.status().analysis.as_ref().unwrap().consecutive_failures,
        1
    );
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(60)));
    let rollback = sim.tick(30);
    assert_eq!(
        rollback.actions[0],
        weight(0),
        "traffic off the canary first"
    );
    assert_eq!(rollback.actions[1], Action::ScaleCanary { replicas: 0 });
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::RolledBack));
    assert_eq!(status.reason.as_deref(), Some("AnalysisFailing"));
    assert_eq!(status.rolled_back_revision, Some(revision_of(V2)));
    assert_eq!(status.history[0].outcome, Outcome::RolledBack);
    let message = status.message.clone().unwrap();
    for part in [
        "21.3x",
        "14.4x",
        "window 5m",
        "http_requests_total",
        "failureLimit 2",
    ] {
        assert!(message.contains(part), "{part} missing from {message}");
    }
    assert!(
        notes(&rollback)
            .iter()
            .any(|n| n.contains("PAY-142: canary") && n.contains("rolled back"))
    );
}

#[test]
fn rolls_back_after_error_limit_consecutive_errors() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    for n in 1..=3 {
        sim.observed.analysis = Some(run(V2, Verdict::Error, at(30 * n)));
        sim.tick(30);
        assert_eq!(
            sim.status().phase,
            Some(Phase::Progressing),
            "error {n} of 4"
        );
    }
    sim.observed.analysis = Some(run(V2, Verdict::Error, at(120)));
    let decision = sim.tick(30);
    assert_eq!(decision.actions[0], weight(0));
    assert_eq!(sim.status().reason.as_deref(), Some("AnalysisError"));
}

#[test]
fn a_different_verdict_breaks_the_consecutive_count() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    let verdicts = [
        Verdict::Failing,
        Verdict::Passing,
        Verdict::Failing,
        Verdict::Error,
        Verdict::Failing,
    ];
    for (n, verdict) in verdicts.into_iter().enumerate() {
        sim.observed.analysis = Some(run(V2, verdict, at(30 * (n as i64 + 1))));
        sim.tick(30);
        assert_ne!(
            sim.status().phase,
            Some(Phase::RolledBack),
            "after {verdict}"
        );
    }
    assert_eq!(
        sim.status().analysis.as_ref().unwrap().consecutive_failures,
        1
    );
}

#[test]
fn pauses_after_inconclusive_limit_and_promote_releases_the_hold() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    for n in 1..=3 {
        sim.observed.analysis = Some(run(V2, Verdict::Inconclusive, at(30 * n)));
        sim.tick(30);
    }
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::Paused));
    assert_eq!(status.reason.as_deref(), Some("AnalysisInconclusive"));
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("inconclusiveLimit 3")
    );
    // The pause step would have ended at 120s; the hold keeps the canary at its step.
    sim.tick(60);
    assert_eq!(sim.status().current_step, Some(1));
    sim.request("hold", ManualAction::Promote);
    sim.tick(0);
    assert_eq!(
        sim.status()
            .analysis
            .as_ref()
            .unwrap()
            .consecutive_inconclusive,
        0
    );
    assert_eq!(sim.status().phase, Some(Phase::Progressing));
    assert_eq!(
        sim.status().current_step,
        Some(2),
        "the pause is over, the canary moves on"
    );
}

#[test]
fn never_promotes_while_the_latest_verdict_is_not_passing() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .analysis()
            .steps(vec![set_weight(20)]),
    );
    sim.settle();
    assert_eq!(sim.status().reason.as_deref(), Some("WaitingForAnalysis"));
    for (n, verdict) in [Verdict::Inconclusive, Verdict::Failing, Verdict::Error]
        .into_iter()
        .enumerate()
    {
        sim.observed.analysis = Some(run(V2, verdict, at(30 * (n as i64 + 1))));
        let decision = sim.tick(30);
        assert!(
            !decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::ApplyStable { .. })),
            "{verdict}"
        );
        assert_eq!(sim.status().stable_revision, Some(revision_of(V1)));
    }
    sim.request("plain", ManualAction::Promote);
    let refused = sim.tick(0);
    assert!(
        notes(&refused)
            .iter()
            .any(|n| n.contains("waits for a passing analysis"))
    );
    assert_eq!(sim.status().stable_revision, Some(revision_of(V1)));
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(120)));
    let promote = sim.tick(30);
    assert!(promote.actions.contains(&Action::ApplyStable {
        revision: revision_of(V2),
        replicas: 4
    }));
}

#[test]
fn promote_full_skips_remaining_steps_and_analysis_gates() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    sim.observed.analysis = Some(run(V2, Verdict::Inconclusive, at(30)));
    sim.tick(30);
    sim.request("full", ManualAction::PromoteFull);
    let decision = sim.tick(0);
    assert!(decision.actions.contains(&Action::ApplyStable {
        revision: revision_of(V2),
        replicas: 4
    }));
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
    assert_eq!(sim.status().stable_revision, Some(revision_of(V2)));
}

#[test]
fn analysis_of_another_revision_is_ignored() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    for n in 1..=3 {
        sim.observed.analysis = Some(run(V3, Verdict::Failing, at(30 * n)));
        sim.tick(30);
    }
    assert_eq!(sim.status().phase, Some(Phase::Progressing));
    assert_eq!(sim.status().analysis, None);
}

#[test]
fn analysis_is_due_every_interval_from_the_first_step() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.slow_pods = true;
    sim.tick(0);
    assert!(
        !analysis_due(&sim.release, at(100)),
        "no analysis before the first step"
    );
    sim.pods_ready();
    let started = sim.tick(10);
    assert_eq!(started.requeue_after, Some(CONVERGE_POLL));
    // The first run comes one interval after the first step plus this Release's share of a
    // quarter interval; then every interval.
    let offset = i64::try_from(super::decide::analysis_offset(&sim.release).as_secs()).unwrap();
    assert!(offset < 30 / 4 + 1, "{offset}s");
    assert!(!analysis_due(&sim.release, at(39 + offset)));
    assert!(analysis_due(&sim.release, at(41 + offset)));
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(41 + offset)));
    sim.tick(31 + offset);
    assert!(!analysis_due(&sim.release, at(70 + offset)));
    assert!(analysis_due(&sim.release, at(71 + offset)));
}

#[test]
fn releases_shipped_at_once_spread_their_first_analysis_over_a_quarter_interval() {
    let offsets: Vec<_> = (0..200)
        .map(|n| {
            let mut release = ReleaseBuilder::gateway().analysis().build();
            release.metadata.name = Some(format!("service-{n}"));
            super::decide::analysis_offset(&release)
        })
        .collect();
    let quarter = StdDuration::from_millis(7_500);
    assert!(offsets.iter().all(|offset| *offset < quarter));
    let mut distinct = offsets.clone();
    distinct.sort();
    distinct.dedup();
    assert!(
        distinct.len() > 150,
        "spread, not bunched: {} distinct",
        distinct.len()
    );
    let release = ReleaseBuilder::gateway().analysis().build();
    assert_eq!(
        super::decide::analysis_offset(&release),
        super::decide::analysis_offset(&release.clone()),
        "stable"
    );
    assert_eq!(
        super::decide::analysis_offset(&ReleaseBuilder::gateway().build()),
        StdDuration::ZERO,
        "no analysis, no offset"
    );
}

#[test]
fn clock_past_several_intervals_at_once_counts_one_run() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .analysis()
            .steps(vec![set_weight(10), pause_until_promoted()]),
    );
    sim.settle();
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(300)));
    let decision = sim.tick(300);
    let analysis = sim.status().analysis.clone().unwrap();
    assert_eq!(
        analysis.consecutive_failures, 1,
        "ten intervals passed, one run happened"
    );
    assert_eq!(sim.status().phase, Some(Phase::Paused));
    assert_eq!(decision.requeue_after, Some(StdDuration::from_secs(30)));
    // The same run seen again (a retried reconcile) does not count twice.
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(300)));
    sim.tick(0);
    assert_eq!(
        sim.status().analysis.as_ref().unwrap().consecutive_failures,
        1
    );
}

#[test]
fn exhausted_error_budget_holds_a_new_revision_until_it_recovers() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().budget(0.1));
    assert!(
        analysis_due(&sim.release, at(0)),
        "a pending revision needs a budget figure"
    );
    let mut budget_run = run(V2, Verdict::Passing, at(0));
    budget_run.canary = None;
    budget_run.error_budget_remaining = Some(0.02);
    sim.observed.analysis = Some(budget_run.clone());
    let held = sim.tick(0);
    assert!(
        moves(&held).is_empty(),
        "no canary while the budget is spent"
    );
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::Paused));
    assert_eq!(status.reason.as_deref(), Some("ErrorBudgetExhausted"));
    assert!(status.message.as_deref().unwrap().contains("2.0% left"));
    assert!(
        notes(&held)
            .iter()
            .any(|n| n.starts_with("ErrorBudgetExhausted: PAY-142:"))
    );
    assert_eq!(held.requeue_after, Some(StdDuration::from_secs(30)));
    assert!(!analysis_due(&sim.release, at(29)));
    assert!(analysis_due(&sim.release, at(30)));
    budget_run.ran_at = at(30);
    budget_run.error_budget_remaining = Some(0.4);
    sim.observed.analysis = Some(budget_run);
    let started = sim.tick(30);
    assert!(
        started
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCanary { .. }))
    );
}

#[test]
fn promote_starts_a_revision_held_by_the_error_budget() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().budget(0.1));
    let mut budget_run = run(V2, Verdict::Passing, at(0));
    budget_run.error_budget_remaining = Some(0.0);
    sim.observed.analysis = Some(budget_run);
    sim.tick(0);
    assert_eq!(sim.status().reason.as_deref(), Some("ErrorBudgetExhausted"));
    sim.request("go", ManualAction::Promote);
    let started = sim.tick(1);
    assert!(
        started
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCanary { .. }))
    );
    assert_eq!(sim.status().canary_revision, Some(revision_of(V2)));
}

#[test]
fn rolled_back_revision_is_not_retried_until_retry_or_a_new_template() {
    let mut sim = gateway_canary_at_indefinite_pause();
    sim.request("stop", ManualAction::Abort);
    sim.tick(0);
    sim.settle();
    for _ in 0..3 {
        let decision = sim.tick(600);
        assert!(moves(&decision).is_empty());
        assert_eq!(sim.status().phase, Some(Phase::RolledBack));
        assert_eq!(decision.requeue_after, None);
    }
    sim.request("again", ManualAction::Retry);
    let retry = sim.tick(0);
    assert!(retry.actions.iter().any(
        |a| matches!(a, Action::ApplyCanary { revision, .. } if *revision == revision_of(V2))
    ));
    assert_eq!(sim.status().rolled_back_revision, None);
    assert_eq!(sim.status().current_step, Some(0));
}

#[test]
fn a_new_template_after_rollback_starts_a_new_canary() {
    let mut sim = gateway_canary_at_indefinite_pause();
    sim.request("stop", ManualAction::Abort);
    sim.settle();
    sim.release.spec.template = template(V3);
    let decision = sim.tick(0);
    assert!(decision.actions.iter().any(
        |a| matches!(a, Action::ApplyCanary { revision, .. } if *revision == revision_of(V3))
    ));
}

#[test]
fn abort_during_pause_rolls_back_with_outcome_aborted() {
    let mut sim = gateway_canary_at_indefinite_pause();
    sim.request("stop", ManualAction::Abort);
    let decision = sim.tick(0);
    assert_eq!(decision.actions[0], weight(0));
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::RolledBack));
    assert_eq!(status.reason.as_deref(), Some("Aborted"));
    assert_eq!(status.history[0].outcome, Outcome::Aborted);
    assert!(
        status
            .message
            .as_deref()
            .unwrap()
            .contains("aborted by sre@example.com at step 4/4")
    );
    assert_eq!(status.handled_request.as_deref(), Some("stop"));
}

#[test]
fn progress_deadline_rolls_back_a_canary_that_never_becomes_available() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().progress_deadline(300));
    sim.slow_pods = true;
    sim.tick(0);
    let waiting = sim.tick(200);
    assert_eq!(waiting.requeue_after, Some(StdDuration::from_secs(100)));
    assert_eq!(sim.status().phase, Some(Phase::Progressing));
    let decision = sim.tick(100);
    // The canary never had a pod available, so it never had traffic: only its pods go.
    assert_eq!(moves(&decision)[0], Action::ScaleCanary { replicas: 0 });
    assert_eq!(
        sim.observed.route,
        Some(crate::rollout::RouteState::Ready { canary_weight: 0 })
    );
    assert_eq!(
        sim.status().reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    assert!(
        sim.status()
            .message
            .as_deref()
            .unwrap()
            .contains("progressDeadline 5m")
    );
}

#[test]
fn retry_after_progress_deadline_starts_fresh_timers() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().progress_deadline(300));
    sim.slow_pods = true;
    sim.tick(0);
    sim.tick(300);
    assert_eq!(sim.status().phase, Some(Phase::RolledBack));
    sim.tick(1000);
    sim.request("retry-1", ManualAction::Retry);
    sim.tick(0);
    assert_eq!(sim.status().phase, Some(Phase::Progressing));
    assert_eq!(
        sim.status().canary_waiting_since.as_ref().map(|t| t.0),
        Some(sim.now)
    );
    sim.tick(299);
    assert_eq!(
        sim.status().phase,
        Some(Phase::Progressing),
        "the deadline counts from the retry"
    );
    sim.slow_pods = false;
    sim.pods_ready();
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1));
}

#[test]
fn a_new_revision_mid_canary_supersedes_it_and_restarts_the_steps() {
    let mut sim = gateway_canary_at_indefinite_pause();
    sim.release.spec.template = template(V3);
    sim.release.spec.roadmap.item = "PAY-150".into();
    let decision = sim.tick(0);
    assert_eq!(
        decision.actions[0],
        weight(0),
        "the old canary's traffic goes first"
    );
    assert!(decision.actions.contains(&Action::ApplyCanary {
        revision: revision_of(V3),
        replicas: 1
    }));
    let status = sim.status();
    assert_eq!(status.history[0].outcome, Outcome::Superseded);
    assert_eq!(status.history[0].revision, revision_of(V2));
    assert_eq!(status.history[0].roadmap_item, "PAY-142");
    assert_eq!(status.canary_revision, Some(revision_of(V3)));
    assert_eq!(status.current_step, Some(0));
    assert_eq!(status.roadmap_item.as_deref(), Some("PAY-150"));
    assert!(notes(&decision).iter().all(|n| n.contains("PAY-150: ")));
}

#[test]
fn refused_and_stale_requests_are_ignored_with_an_event_and_recorded() {
    let healthy = || {
        let mut sim = Sim::new(ReleaseBuilder::gateway().build());
        sim.settle();
        sim
    };
    let cases: Vec<(&str, Sim, ManualAction, Option<&str>, &str)> = vec![
        (
            "promote while Healthy",
            healthy(),
            ManualAction::Promote,
            None,
            "the first release: its template becomes the stable directly",
        ),
        (
            "abort while Healthy",
            healthy(),
            ManualAction::Abort,
            None,
            "there is no canary to abort",
        ),
        (
            "retry while Healthy",
            healthy(),
            ManualAction::Retry,
            None,
            "and nothing was rolled back",
        ),
        (
            "retry while Paused",
            gateway_canary_at_indefinite_pause(),
            ManualAction::Retry,
            None,
            "nothing was rolled back",
        ),
        (
            "promote of another revision",
            gateway_canary_at_indefinite_pause(),
            ManualAction::Promote,
            Some("0000000000"),
            "stale: it was written for revision 0000000000",
        ),
    ];
    for (name, mut sim, action, revision, why) in cases {
        let before = sim.status().clone();
        sim.request("stale", action);
        if let Some(request) = sim.release.status.as_mut().and_then(|s| s.request.as_mut()) {
            request.revision = revision.map(String::from);
        }
        let decision = sim.tick(0);
        let notes = notes(&decision);
        assert!(
            notes
                .iter()
                .any(|n| n.starts_with("RequestIgnored: PAY-142:") && n.contains(why)),
            "{name}: {notes:?}"
        );
        assert_eq!(
            sim.status().handled_request.as_deref(),
            Some("stale"),
            "{name}"
        );
        assert_eq!(sim.status().phase, before.phase, "{name}");
        assert_eq!(sim.status().current_step, before.current_step, "{name}");
        // Handled once: the next reconcile says nothing about it.
        assert!(
            crate::rollout::fixtures::notes(&sim.tick(0)).is_empty(),
            "{name}"
        );
    }
}

#[test]
fn a_promote_written_during_a_timed_pause_is_stale_once_the_pause_is_over() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1), "in the timed pause");
    let promote = sim.cli_request("end-pause", ManualAction::Promote);
    // The pause ends, and the canary moves to 50% and its indefinite pause, before the
    // controller reads the request.
    sim.tick(120);
    sim.settle();
    assert_eq!(sim.status().current_step, Some(3));
    sim.write_request(promote);
    let decision = sim.tick(0);
    let notes = notes(&decision);
    assert!(
        notes.iter().any(|n| n.starts_with("RequestIgnored")
            && n.contains("it is stale: it was written for canary")
            && n.contains("at step 2/4, and now it is canary")
            && n.contains("at step 4/4")),
        "{notes:?}"
    );
    assert_eq!(
        sim.status().current_step,
        Some(3),
        "the indefinite pause it never saw is not skipped"
    );
    assert_eq!(sim.status().reason.as_deref(), Some("CanaryPauseStep"));
}

#[test]
fn an_abort_written_before_the_promotion_began_is_stale_and_the_promotion_finishes() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .analysis()
            .steps(vec![set_weight(20)]),
    );
    sim.settle();
    assert_eq!(sim.status().reason.as_deref(), Some("WaitingForAnalysis"));
    let abort = sim.cli_request("stop", ManualAction::Abort);
    sim.slow_pods = true;
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(30)));
    sim.tick(30);
    assert_eq!(sim.status().reason.as_deref(), Some("Promoting"));
    sim.write_request(abort);
    let decision = sim.tick(0);
    assert!(
        notes(&decision)
            .iter()
            .any(|n| n.starts_with("RequestIgnored") && n.contains("being promoted")),
        "{:?}",
        notes(&decision)
    );
    sim.slow_pods = false;
    sim.pods_ready();
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
    assert_eq!(sim.status().history[0].outcome, Outcome::Promoted);
}

#[test]
fn a_promote_written_while_frozen_is_stale_once_the_canary_started() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().budget(0.1));
    let mut budget_run = run(V2, Verdict::Passing, at(0));
    budget_run.error_budget_remaining = Some(0.0);
    sim.observed.analysis = Some(budget_run);
    sim.tick(0);
    assert_eq!(sim.status().reason.as_deref(), Some("ErrorBudgetExhausted"));
    let promote = sim.cli_request("go", ManualAction::Promote);
    let mut recovered = run(V2, Verdict::Passing, at(30));
    recovered.revision = None;
    recovered.error_budget_remaining = Some(0.5);
    sim.observed.analysis = Some(recovered);
    sim.tick(30);
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1), "started on its own");
    sim.write_request(promote);
    let decision = sim.tick(0);
    assert!(
        notes(&decision)
            .iter()
            .any(|n| n.contains("it is stale: it was written for revision")
                && n.contains("waiting for its canary to start")),
        "{:?}",
        notes(&decision)
    );
    assert_eq!(sim.status().current_step, Some(1), "no step skipped");
}

#[test]
fn a_request_stored_before_requests_recorded_their_stage_is_still_read_and_acted_on() {
    let mut sim = gateway_canary_at_indefinite_pause();
    let canary = sim.status().canary_revision.clone().unwrap();
    // As an older CLI wrote it, and as the API server still holds it.
    let stored: crate::api::ManualRequest = serde_json::from_value(serde_json::json!({
        "id": "old-1",
        "action": "Abort",
        "revision": canary,
        "requestedAt": "2026-03-01T12:03:00Z",
        "requestedBy": "sre@example.com"
    }))
    .unwrap();
    assert_eq!((stored.stage, stored.step), (None, None));
    sim.write_request(stored);
    let decision = sim.tick(0);
    assert!(
        !notes(&decision)
            .iter()
            .any(|n| n.starts_with("RequestIgnored")),
        "{:?}",
        notes(&decision)
    );
    assert_eq!(sim.status().history[0].outcome, Outcome::Aborted);
    assert_eq!(sim.status().handled_request.as_deref(), Some("old-1"));
}

#[test]
fn replica_mode_moves_traffic_with_scale_actions_only() {
    let mut sim = Sim::canary_of(ReleaseBuilder::replica_split().steps(vec![
        set_weight(25),
        set_weight(50),
        pause_until_promoted(),
    ]));
    // A canary with no pods has nothing to wait for: the first step starts at once and
    // creates it with its pod (make before break: the canary pod first).
    let start = sim.tick(0);
    assert_eq!(
        moves(&start),
        vec![Action::ApplyCanary {
            revision: revision_of(V2),
            replicas: 1
        }]
    );
    assert_eq!(sim.status().reason.as_deref(), Some("StepSetWeight"));
    // The stable pod goes only once the canary's is available, and that shrink ends the step
    // (the next one sets a weight too, so it is seen through before step 2 begins).
    let first = sim.tick(0);
    assert_eq!(moves(&first), vec![Action::ScaleStable { replicas: 3 }]);
    assert_eq!(sim.status().current_step, Some(0));
    sim.tick(0);
    assert_eq!(sim.status().canary_weight, Some(25));
    sim.settle();
    assert_eq!(sim.observed.canary.as_ref().unwrap().replicas, 2);
    assert_eq!(sim.observed.stable.as_ref().unwrap().replicas, 2);
    assert_eq!(sim.status().canary_weight, Some(50));
    sim.request("go", ManualAction::Promote);
    let mut seen = Vec::new();
    for _ in 0..12 {
        let decision = sim.tick(0);
        seen.extend(moves(&decision));
        let canary = sim.observed.canary.as_ref().map_or(0, |c| c.replicas);
        let pods = sim.observed.stable.as_ref().unwrap().replicas + canary;
        assert!(
            (4..=5).contains(&pods),
            "{pods} pods: never fewer than 4, one batch more at most"
        );
    }
    assert!(!seen.iter().any(|a| matches!(a, Action::SetWeight { .. })));
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
    assert_eq!(
        sim.observed.stable.as_ref().unwrap().revision,
        Some(revision_of(V2))
    );
}

#[test]
fn replica_mode_promote_in_the_same_decision_as_a_scale_never_drops_a_pod() {
    // One pod in all: the first step moves it to the canary, and a promote that finishes that
    // step in the same decision must size the stable from the canary's new count, not the old;
    // the pod total never drops below one, and surges by one pod at most.
    let mut sim = Sim::canary_of(
        ReleaseBuilder::replica_split()
            .replicas(1)
            .steps(vec![set_weight(1)]),
    );
    sim.tick(0);
    sim.request("go", ManualAction::Promote);
    for _ in 0..12 {
        let decision = sim.tick(0);
        let stable = sim.observed.stable.as_ref().map_or(0, |s| s.replicas);
        let canary = sim.observed.canary.as_ref().map_or(0, |c| c.replicas);
        assert!(
            (1..=2).contains(&(stable + canary)),
            "after {:?}",
            decision.actions
        );
    }
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
    assert_eq!(
        sim.observed.stable.as_ref().unwrap().revision,
        Some(revision_of(V2))
    );
}

#[test]
fn replica_mode_rollback_first_takes_canary_pods_out() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::replica_split().steps(vec![set_weight(50), pause_until_promoted()]),
    );
    sim.settle();
    sim.request("stop", ManualAction::Abort);
    let decision = sim.tick(0);
    assert_eq!(
        moves(&decision),
        vec![
            Action::ScaleCanary { replicas: 0 },
            Action::ScaleStable { replicas: 4 }
        ]
    );
}

#[test]
fn replica_mode_promotion_keeps_the_canarys_last_pod_until_it_is_deleted() {
    // The promoted canary's pod runs the stable's revision: it serves like the stable's until
    // the canary is deleted after scaleDownDelay, with no scale to 0 before (one write fewer).
    let mut sim = Sim::canary_of(ReleaseBuilder::replica_split().steps(vec![set_weight(50)]));
    let mut scaled_to_zero = false;
    for _ in 0..40 {
        let decision = sim.tick(0);
        scaled_to_zero |= decision
            .actions
            .contains(&Action::ScaleCanary { replicas: 0 });
        if sim.status().phase == Some(Phase::Healthy) {
            break;
        }
    }
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
    assert!(!scaled_to_zero, "the promoted canary was scaled to 0");
    let canary = sim
        .observed
        .canary
        .clone()
        .expect("the canary waits for scaleDownDelay");
    assert_eq!(canary.revision, Some(revision_of(V2)));
    assert!(canary.replicas > 0, "its last pod serves until the delete");
    let stable = sim.observed.stable.clone().expect("a stable");
    assert_eq!(stable.replicas, 4, "the stable has every pod");
    assert_eq!(
        moves(&sim.tick(10)),
        Vec::<Action>::new(),
        "nothing before scaleDownDelay"
    );
    assert_eq!(moves(&sim.tick(30)), vec![Action::DeleteCanary]);
    assert!(sim.observed.canary.is_none());
}

#[test]
fn replica_mode_healthy_release_takes_a_leftover_canary_of_another_revision_out_at_once() {
    // A canary Deployment left with another revision's pods (a controller stopped halfway
    // through a rollback it had recorded): the Healthy status says nothing about a canary,
    // and those pods serve through the shared Service, so they go now, not after
    // scaleDownDelay.
    let mut sim = Sim::canary_of(ReleaseBuilder::replica_split().steps(vec![set_weight(50)]));
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
    let canary = sim
        .observed
        .canary
        .as_mut()
        .expect("the canary waits for scaleDownDelay");
    canary.revision = Some("0ther".into());
    canary.replicas = 2;
    canary.available_replicas = 2;
    let decision = sim.tick(0);
    assert_eq!(moves(&decision), vec![Action::ScaleCanary { replicas: 0 }]);
    assert_eq!(sim.status().phase, Some(Phase::Healthy));
}

#[test]
fn gateway_canary_is_sized_to_its_weight_while_the_stable_keeps_full_size() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().replicas(10).steps(vec![
        set_weight(33),
        set_weight(100),
        pause_until_promoted(),
    ]));
    sim.settle();
    assert_eq!(sim.observed.canary.as_ref().unwrap().replicas, 10);
    assert_eq!(sim.observed.stable.as_ref().unwrap().replicas, 10);
    assert_eq!(sim.status().canary_weight, Some(100));
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .replicas(10)
            .steps(vec![set_weight(33), pause_until_promoted()]),
    );
    sim.settle();
    assert_eq!(sim.observed.canary.as_ref().unwrap().replicas, 4);
}

#[test]
fn weight_zero_then_hundred() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().steps(vec![
        set_weight(0),
        pause_until_promoted(),
        set_weight(100),
        pause_until_promoted(),
    ]));
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(0));
    assert_eq!(sim.status().current_step, Some(1));
    sim.request("p", ManualAction::Promote);
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(100));
    assert_eq!(sim.status().current_step, Some(3));
    assert_eq!(sim.observed.canary.as_ref().unwrap().replicas, 4);
}

#[test]
fn a_release_stored_without_steps_starts_no_canary_and_names_spec_steps() {
    // Stored before the schema refused `steps: []`: a new template would have gone to 100% at
    // once. Now nothing moves, and the status says which field to fix.
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.release.spec.steps.clear();
    let decision = sim.settle();
    assert!(
        decision
            .actions
            .iter()
            .all(|action| matches!(action, Action::Event(_))),
        "{:?}",
        decision.actions
    );
    let status = sim.status();
    assert_eq!(status.canary_revision, None);
    assert_eq!(status.stable_revision, Some(revision_of(V1)));
    assert_eq!(status.phase, Some(Phase::Degraded));
    let spec_valid = status
        .conditions
        .iter()
        .find(|c| c.type_ == conditions::SPEC_VALID)
        .unwrap();
    assert_eq!(spec_valid.status, "False");
    assert!(
        spec_valid
            .message
            .starts_with("spec.steps: spec.steps must list at least one step"),
        "{}",
        spec_valid.message
    );
    assert!(sim.observed.canary.is_none());
}

#[test]
fn unusable_route_is_degraded_without_traffic_actions() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.settle();
    sim.observed.route = Some(crate::rollout::RouteState::Unusable {
        message: "HTTPRoute shop/checkout has no backendRef for Service checkout-canary".into(),
    });
    let decision = sim.tick(120);
    assert!(
        !decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetWeight { .. }))
    );
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::Degraded));
    assert_eq!(status.reason.as_deref(), Some("TrafficRouteUnusable"));
    assert!(status.message.as_deref().unwrap().contains("no backendRef"));
    let routed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "TrafficRouted")
        .unwrap();
    assert_eq!(routed.status, "False");
    assert!(routed.message.contains("checkout-canary"));
    assert_eq!(status.current_step, Some(2), "held at the setWeight step");
    assert!(
        notes(&decision)
            .iter()
            .any(|n| n.starts_with("TrafficRouteUnusable: PAY-142:"))
    );
    // Usable again: the step goes on.
    sim.observed.route = Some(crate::rollout::RouteState::Ready { canary_weight: 10 });
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(50));
}

#[test]
fn stable_unavailable_for_longer_than_the_deadline_is_degraded() {
    let release = ReleaseBuilder::gateway().build();
    let world = observed().stable_unavailable(V1, 4).route(0).build();
    let first = decide(&release, &world, at(0));
    assert_eq!(first.status.phase, Some(Phase::Progressing));
    assert_eq!(first.status.reason.as_deref(), Some("StableRollingOut"));
    let mut release = release;
    release.status = Some(first.status);
    let later = decide(&release, &world, at(599));
    assert_eq!(later.status.phase, Some(Phase::Progressing));
    assert_eq!(later.requeue_after, Some(StdDuration::from_secs(1)));
    let degraded = decide(&release, &world, at(600));
    assert_eq!(degraded.status.phase, Some(Phase::Degraded));
    assert_eq!(
        degraded.status.reason.as_deref(),
        Some("ProgressDeadlineExceeded")
    );
    assert!(
        degraded
            .status
            .message
            .as_deref()
            .unwrap()
            .contains("progressDeadline 10m (0/4 pods available)"),
        "{:?}",
        degraded.status.message
    );
}

#[test]
fn idle_healthy_release_asks_for_nothing_and_no_requeue() {
    let mut sim = Sim::new(ReleaseBuilder::gateway().build());
    sim.settle();
    let decision = sim.tick(3600);
    assert!(decision.actions.is_empty());
    assert_eq!(decision.requeue_after, None);
    assert_eq!(sim.status().reason.as_deref(), Some("StableAvailable"));
    let available = sim
        .status()
        .conditions
        .iter()
        .find(|c| c.type_ == "Available")
        .unwrap();
    assert_eq!(available.status, "True");
    assert_eq!(available.observed_generation, Some(7));
    assert_eq!(
        available.last_transition_time.0,
        at(0),
        "unchanged while the status holds"
    );
}

#[test]
fn restarted_controller_resumes_at_the_same_step_without_weight_flap() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.settle();
    sim.tick(120);
    sim.settle();
    let status = sim.status().clone();
    // A new process: only the stored status and the world.
    let release = ReleaseBuilder::gateway()
        .image(V2)
        .status(status.clone())
        .build();
    let decision = decide(&release, &sim.observed, sim.now);
    assert!(moves(&decision).is_empty(), "{:?}", decision.actions);
    assert_eq!(decision.status, status);
}

#[test]
fn history_is_bounded_and_newest_first() {
    let mut sim = Sim::new(
        ReleaseBuilder::gateway()
            .steps(vec![set_weight(100)])
            .build(),
    );
    sim.settle();
    let images: Vec<String> = (0..12).map(|n| format!("shop/checkout:{n}.9")).collect();
    for image in &images {
        sim.release.spec.template = template(image);
        sim.settle();
    }
    let history = &sim.status().history;
    assert_eq!(history.len(), HISTORY_LIMIT);
    assert_eq!(history[0].revision, revision_of(&images[11]));
    assert_eq!(history[1].revision, revision_of(&images[10]));
}

#[test]
fn analysis_fills_the_status_message_and_condition() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(30)));
    sim.tick(30);
    let status = sim.status();
    let message = status.message.as_deref().unwrap();
    assert!(message.starts_with("step 2/4: 10% on canary"), "{message}");
    assert!(
        message.ends_with("canary burns 0.8x of 14.4x over 5m and 1m (4,812 requests)"),
        "{message}"
    );
    assert!(
        message.contains(", pause 2m until 2026-03-01T12:02:00Z; "),
        "an instant, not a countdown: {message}"
    );
    assert_eq!(status.pause_until, Some(Time(at(120))));
    assert_eq!(status.reason.as_deref(), Some("AnalysisPassing"));
    let healthy = status
        .conditions
        .iter()
        .find(|c| c.type_ == "AnalysisHealthy")
        .unwrap();
    assert_eq!(healthy.status, "True");
    assert_eq!(
        status.analysis.as_ref().unwrap().error_budget_remaining,
        Some(0.73)
    );
}

#[test]
fn decisions_on_handmade_worlds_mid_canary() {
    // A status at step 3/4 (setWeight 50 done, indefinite pause next), built by hand as a
    // restarted controller would read it.
    let status = || {
        let mut sim = gateway_canary_at_indefinite_pause();
        sim.release.status.take().unwrap()
    };
    let release = ReleaseBuilder::gateway()
        .analysis()
        .image(V2)
        .status(status())
        .build();
    let now = at(400);
    struct Case {
        name: &'static str,
        world: crate::rollout::Observed,
        phase: Phase,
        reason: &'static str,
        first_move: Option<Action>,
    }
    let cases = [
        Case {
            name: "all as expected",
            world: observed()
                .stable(V1, 4)
                .canary_available(V2, 2)
                .route(50)
                .build(),
            phase: Phase::Paused,
            reason: "CanaryPauseStep",
            first_move: None,
        },
        Case {
            name: "route drifted back to 10%",
            world: observed()
                .stable(V1, 4)
                .canary_available(V2, 2)
                .route(10)
                .build(),
            phase: Phase::Paused,
            reason: "CanaryPauseStep",
            first_move: Some(weight(50)),
        },
        Case {
            // No pod can answer: the canary gets no traffic until one is available again.
            name: "canary lost its pods",
            world: observed()
                .stable(V1, 4)
                .canary_unavailable(V2, 2)
                .route(50)
                .build(),
            phase: Phase::Progressing,
            reason: "WaitingForCanary",
            first_move: Some(weight(0)),
        },
        Case {
            name: "route unusable",
            world: observed()
                .stable(V1, 4)
                .canary_available(V2, 2)
                .route_unusable("HTTPRoute shop/checkout not found")
                .build(),
            phase: Phase::Degraded,
            reason: "TrafficRouteUnusable",
            first_move: None,
        },
        Case {
            name: "failing run below the limit",
            world: observed()
                .stable(V1, 4)
                .canary_available(V2, 2)
                .route(50)
                .analysis(run(V2, Verdict::Failing, at(390)))
                .build(),
            phase: Phase::Paused,
            reason: "CanaryPauseStep",
            first_move: None,
        },
    ];
    for case in cases {
        let decision = decide(&release, &case.world, now);
        assert_eq!(decision.status.phase, Some(case.phase), "{}", case.name);
        assert_eq!(
            decision.status.reason.as_deref(),
            Some(case.reason),
            "{}",
            case.name
        );
        assert_eq!(
            moves(&decision).first(),
            case.first_move.as_ref(),
            "{}",
            case.name
        );
        assert_eq!(decision.status.current_step, Some(3), "{}", case.name);
    }
}

#[test]
fn promote_during_a_timed_pause_ends_it_and_analysis_stops_at_promotion() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1));
    sim.request("skip", ManualAction::Promote);
    let decision = sim.tick(10);
    assert_eq!(sim.status().current_step, Some(2));
    // The pause is over; the raise to 50% that follows still needs a passing analysis.
    assert!(moves(&decision).is_empty(), "{:?}", decision.actions);
    assert_eq!(sim.status().reason.as_deref(), Some("WaitingForAnalysis"));
    assert!(analysis_due(&sim.release, at(40)));
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(40)));
    let passed = sim.tick(30);
    assert_eq!(moves(&passed), vec![Action::ScaleCanary { replicas: 2 }]);
    sim.request("full", ManualAction::PromoteFull);
    sim.tick(0);
    assert_eq!(sim.status().reason.as_deref(), Some("Promoting"));
    assert!(
        !analysis_due(&sim.release, at(4000)),
        "no analysis once promotion began"
    );
}

#[test]
fn traffic_is_not_raised_while_the_latest_analysis_fails() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis().steps(vec![
        set_weight(10),
        pause_for(60),
        set_weight(50),
        pause_until_promoted(),
    ]));
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(10));
    // One failure (below failureLimit 2) just as the pause ends: the step to 50% waits.
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(60)));
    let held = sim.tick(60);
    assert!(
        !held
            .actions
            .iter()
            .any(|a| matches!(a, Action::SetWeight { canary_weight } if *canary_weight > 10)),
        "{:?}",
        held.actions
    );
    let status = sim.status();
    assert_eq!(status.canary_weight, Some(10));
    assert_eq!(status.reason.as_deref(), Some("AnalysisFailing"));
    let message = status.message.clone().unwrap();
    assert!(
        message.contains("held at 10%")
            && message.contains("latest analysis Failing: canary burns 21.3x")
            && message.contains("the next step needs a passing analysis"),
        "{message}"
    );
    // Passing again: the step goes on.
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(90)));
    sim.tick(30);
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(50));
}

#[test]
fn retry_after_an_analysis_rollback_starts_clean() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(30)));
    sim.tick(30);
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(60)));
    sim.tick(30);
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::RolledBack));

    sim.request("again", ManualAction::Retry);
    sim.tick(0);
    sim.settle();
    let status = sim.status();
    assert_eq!(
        status.phase,
        Some(Phase::Progressing),
        "{:?}: {:?}",
        status.reason,
        status.message
    );
    assert!(
        status.canary_weight.unwrap_or(0) > 0,
        "the first step runs again: {:?}",
        status.message
    );
}

#[test]
fn a_rollback_records_when_the_analysis_first_failed() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(30)));
    sim.tick(30);
    let since = |sim: &Sim| {
        sim.status()
            .analysis
            .as_ref()
            .unwrap()
            .failing_since
            .clone()
    };
    assert_eq!(since(&sim), Some(Time(at(30))));
    // A passing run ends the failing streak; the next failure starts a new one.
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(60)));
    sim.tick(30);
    assert_eq!(since(&sim), None);
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(90)));
    sim.tick(30);
    sim.observed.analysis = Some(run(V2, Verdict::Error, at(120)));
    sim.tick(30);
    assert_eq!(
        since(&sim),
        Some(Time(at(90))),
        "an error continues the streak"
    );
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(150)));
    sim.tick(30);
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(180)));
    sim.tick(30);
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::RolledBack));
    let entry = &status.history[0];
    assert_eq!(entry.outcome, Outcome::RolledBack);
    assert_eq!(entry.failure_detected_at, Some(Time(at(90))));
    assert_eq!(entry.finished_at, Time(at(180)));
}

#[test]
fn a_timed_pause_keeps_the_status_still_until_it_ends() {
    // Every status write wakes the controller again: a status that changes while nothing
    // happens (a countdown) would be rewritten on every reconcile.
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    sim.settle();
    let in_pause = sim.status().clone();
    assert_eq!(in_pause.reason.as_deref(), Some("StepPause"));
    assert_eq!(in_pause.pause_until, Some(Time(at(120))));
    for later in [1, 7, 59, 119] {
        let decision = decide(&sim.release, &sim.observed, at(later));
        assert_eq!(decision.status, in_pause, "{later}s into the pause");
        assert!(moves(&decision).is_empty());
        assert_eq!(
            decision.requeue_after,
            Some(StdDuration::from_secs(120 - later as u64)),
            "looks again exactly when the pause ends"
        );
    }
    sim.tick(120);
    assert_eq!(sim.status().pause_until, None, "no pause in progress");
}

#[test]
fn a_canary_that_loses_its_pods_gets_no_traffic_until_they_are_back() {
    let mut sim = gateway_canary_at_indefinite_pause();
    assert_eq!(sim.status().canary_weight, Some(50));
    // Someone deletes the canary Deployment: nothing can answer the 50%.
    sim.observed.canary = None;
    sim.slow_pods = true;
    let lost = sim.tick(10);
    assert_eq!(
        moves(&lost)[..2],
        [
            weight(0),
            Action::ApplyCanary {
                revision: revision_of(V2),
                replicas: 2
            }
        ],
        "traffic off first, then the canary again"
    );
    assert_eq!(sim.status().reason.as_deref(), Some("WaitingForCanary"));
    assert_eq!(sim.status().current_step, Some(3), "the place is kept");
    assert!(
        moves(&sim.tick(5)).is_empty(),
        "waits while no pod is ready"
    );
    sim.pods_ready();
    let back = sim.tick(5);
    assert_eq!(moves(&back), vec![weight(50)], "the step's traffic again");
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::Paused));
    assert_eq!(sim.status().canary_weight, Some(50));
}

#[test]
fn a_revision_shipped_again_after_being_superseded_is_judged_afresh() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    // One failing run of V2 (below failureLimit 2), then V3 replaces it, then V2 comes back.
    let mut failing = run(V2, Verdict::Failing, at(30));
    failing.revision = Some(revision_of(V2));
    sim.observed.analysis = Some(failing.clone());
    sim.tick(30);
    sim.release.spec.template = template(V3);
    sim.settle();
    sim.release.spec.template = template(V2);
    sim.settle();
    assert_eq!(sim.status().canary_revision, Some(revision_of(V2)));
    assert_eq!(
        sim.status().analysis,
        None,
        "no counters left from the old canary"
    );
    failing.ran_at = at(90);
    sim.observed.analysis = Some(failing);
    sim.tick(60);
    assert_eq!(
        sim.status().phase,
        Some(Phase::Progressing),
        "one failure is below failureLimit: not rolled back"
    );
}

#[test]
fn a_rollback_keeps_the_canarys_timeline_for_its_post_mortem() {
    use crate::api::TimelineKind;
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(30)));
    sim.tick(30);
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(60)));
    sim.tick(30);
    assert!(
        !sim.status().timeline.is_empty(),
        "the running canary has its timeline in the status"
    );
    sim.observed.analysis = Some(run(V2, Verdict::Failing, at(90)));
    sim.tick(30);
    // The rollback's actions applied; the next look sees traffic back and the pods gone.
    sim.settle();
    let status = sim.status();
    assert!(status.timeline.is_empty(), "moved to the history entry");
    let kinds: Vec<TimelineKind> = status.history[0].timeline.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            TimelineKind::CanaryCreated,
            TimelineKind::CanaryAvailable,
            TimelineKind::Step,
            TimelineKind::Analysis,
            TimelineKind::FirstFailure,
            TimelineKind::Analysis,
            TimelineKind::TrafficOnStable,
            TimelineKind::CanaryScaledDown,
        ],
        "{:#?}",
        status.history[0].timeline
    );
    let first_failure = &status.history[0].timeline[4];
    assert_eq!(first_failure.at, Time(at(60)));
    assert_eq!(
        (first_failure.consecutive, first_failure.limit),
        (Some(1), Some(2))
    );
    let worst = first_failure
        .canary
        .as_ref()
        .expect("the canary's worst window");
    assert!(
        worst.error_query.is_some(),
        "the first failure keeps its PromQL"
    );
    // Deciding again changes nothing: the after-the-end entries are noted once.
    let again = decide(&sim.release, &sim.observed, sim.now);
    assert_eq!(&again.status, sim.status());
}

#[test]
fn a_streak_begun_by_errors_keeps_the_queries_of_its_first_failing_run() {
    use crate::api::TimelineKind;
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    for (n, verdict) in [Verdict::Error, Verdict::Failing, Verdict::Failing]
        .into_iter()
        .enumerate()
    {
        sim.observed.analysis = Some(run(V2, verdict, at(30 * (n as i64 + 1))));
        sim.tick(30);
    }
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::RolledBack));
    let kept: Vec<_> = sim.status().history[0]
        .timeline
        .iter()
        .filter(|e| e.kind == TimelineKind::FirstFailure)
        .map(|e| {
            let queries = e.canary.as_ref().and_then(|w| w.error_query.as_ref());
            (e.at.clone(), e.verdict, queries.is_some())
        })
        .collect();
    assert_eq!(
        kept,
        [
            (Time(at(30)), Some(Verdict::Error), true),
            (Time(at(60)), Some(Verdict::Failing), true),
        ],
        "the errored run begins the streak; its first failing run keeps the values' PromQL"
    );
}

#[test]
fn an_abort_records_who_asked_in_the_timeline() {
    use crate::api::TimelineKind;
    let mut sim = gateway_canary_at_indefinite_pause();
    sim.request("stop", ManualAction::Abort);
    sim.tick(5);
    let timeline = &sim.status().history[0].timeline;
    let request = timeline
        .iter()
        .find(|e| e.kind == TimelineKind::Request)
        .expect("the abort request");
    assert_eq!(request.action, Some(ManualAction::Abort));
    assert_eq!(request.by.as_deref(), Some("sre@example.com"));
}

/// What the `Applied` condition, the phase and the events say for each outcome of the
/// controller's last apply, given what the status already said.
#[test]
fn the_last_apply_decides_the_applied_condition_the_phase_and_one_warning_event() {
    use super::{Audience, EventNote, LastApply, NoteKind, Refusal, Severity};
    let quota = Refusal {
        object: "Deployment shop/checkout-canary".into(),
        reason: "QuotaExceeded".into(),
        message: "exceeded quota: pods, requested: pods=1, used: pods=10, limited: pods=10".into(),
    };
    let forbidden = Refusal {
        object: "Service shop/checkout-canary".into(),
        reason: "Forbidden".into(),
        message: "services is forbidden: User \"waymark\" cannot patch".into(),
    };
    // A canary waiting to start: the next decision applies it.
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway());
    let pending = decide(&sim.release, &sim.observed, sim.now);
    sim.release.status = Some(pending.status.clone());
    let decide_with = |release: &crate::api::Release, last_apply: &LastApply| {
        let mut observed = sim.observed.clone();
        observed.last_apply = last_apply.clone();
        decide(release, &observed, sim.now)
    };
    let refused_once = {
        let mut release = sim.release.clone();
        release.status = Some(decide_with(&sim.release, &LastApply::Refused(quota.clone())).status);
        release
    };
    let applied = |decision: &super::Decision| {
        decision
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::APPLIED)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    };
    let warning = |refusal: &Refusal| {
        Action::Event(EventNote {
            severity: Severity::Warning,
            reason: refusal.reason.clone(),
            note: format!("PAY-142: {}: {}", refusal.object, refusal.message),
            audience: Audience::EventAndLog,
            kind: NoteKind::RefusedWrite,
        })
    };
    let said = |refusal: &Refusal| {
        Some((
            "False".to_string(),
            refusal.reason.clone(),
            format!("{}: {}", refusal.object, refusal.message),
        ))
    };
    let accepted_again = Some((
        "True".to_string(),
        "Applied".to_string(),
        "the API server accepts Waymark's writes again".to_string(),
    ));

    struct Case {
        name: &'static str,
        before: crate::api::Release,
        last_apply: LastApply,
        condition: Option<(String, String, String)>,
        degraded_by: Option<&'static str>,
        event: Option<Action>,
    }
    let cases = [
        Case {
            name: "a new refusal",
            before: sim.release.clone(),
            last_apply: LastApply::Refused(quota.clone()),
            condition: said(&quota),
            degraded_by: Some("QuotaExceeded"),
            event: Some(warning(&quota)),
        },
        Case {
            name: "the same refusal again",
            before: refused_once.clone(),
            last_apply: LastApply::Refused(quota.clone()),
            condition: said(&quota),
            degraded_by: Some("QuotaExceeded"),
            event: None,
        },
        Case {
            name: "another refusal",
            before: refused_once.clone(),
            last_apply: LastApply::Refused(forbidden.clone()),
            condition: said(&forbidden),
            degraded_by: Some("Forbidden"),
            event: Some(warning(&forbidden)),
        },
        Case {
            name: "a restarted controller, the refusal said",
            before: refused_once.clone(),
            last_apply: LastApply::Unknown,
            condition: said(&quota),
            degraded_by: Some("QuotaExceeded"),
            event: None,
        },
        Case {
            name: "accepted after a refusal",
            before: refused_once.clone(),
            last_apply: LastApply::Accepted,
            condition: accepted_again,
            degraded_by: None,
            event: None,
        },
        Case {
            name: "accepted, never refused",
            before: sim.release.clone(),
            last_apply: LastApply::Accepted,
            condition: None,
            degraded_by: None,
            event: None,
        },
        Case {
            name: "a restarted controller, never refused",
            before: sim.release.clone(),
            last_apply: LastApply::Unknown,
            condition: None,
            degraded_by: None,
            event: None,
        },
    ];
    for case in cases {
        let decision = decide_with(&case.before, &case.last_apply);
        let name = case.name;
        assert_eq!(applied(&decision), case.condition, "{name}");
        let status = &decision.status;
        match case.degraded_by {
            Some(reason) => {
                assert_eq!(status.phase, Some(Phase::Degraded), "{name}");
                assert_eq!(status.reason.as_deref(), Some(reason), "{name}");
                let message = status.message.as_deref().unwrap_or_default();
                let (_, _, words) = case.condition.clone().unwrap_or_default();
                assert!(
                    message.starts_with(&format!("{words}; holding: ")),
                    "{name}: says the refusal, then what it holds: {message}"
                );
                assert!(
                    decision
                        .requeue_after
                        .is_some_and(|after| after <= CONVERGE_POLL),
                    "{name}: looks again soon"
                );
            }
            None => assert_ne!(status.phase, Some(Phase::Degraded), "{name}"),
        }
        let warnings: Vec<&Action> = decision
            .actions
            .iter()
            .filter(|a| matches!(a, Action::Event(note) if note.severity == Severity::Warning))
            .collect();
        match &case.event {
            Some(event) => {
                assert_eq!(warnings, [event], "{name}: one Warning event");
                assert_eq!(
                    decision.actions.first(),
                    Some(event),
                    "{name}: before the writes, one of which may be refused again"
                );
            }
            None => assert!(warnings.is_empty(), "{name}: no event: {warnings:?}"),
        }
        assert!(
            decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::ApplyCanary { .. })),
            "{name}: the canary is applied (again)"
        );
        if case.event.is_none() && case.degraded_by.is_some() {
            assert_eq!(
                Some(&decision.status),
                case.before.status.as_ref(),
                "{name}: nothing new to write"
            );
        }
    }
}
