//! Missing data never counts as passing: with `spec.analysis`, no step raises the canary's
//! traffic or pods, and no timed pause ends, while the latest verdict is not Passing; the
//! `inconclusiveLimit` hold says what ends it; the timeline keeps the weight reached.

use super::Action;
use super::fixtures::*;
use crate::analysis::AnalysisRun;
use crate::api::{ManualAction, Phase, Step, TimelineKind, Verdict};

/// The limits out of the way, so that only the gate holds the canary (no rollback, no pause).
fn lenient(sim: &mut Sim) {
    let analysis = sim.release.spec.analysis.as_mut().expect("analysis");
    analysis.failure_limit = 1_000;
    analysis.error_limit = 1_000;
    analysis.inconclusive_limit = 1_000;
}

/// A run whose queries matched no series, as the analysis code words it.
fn no_data(seconds: i64) -> AnalysisRun {
    let mut run = run(V2, Verdict::Inconclusive, at(seconds));
    run.summary = "canary total query returned no data over 5m".into();
    if let Some(canary) = run.canary.as_mut() {
        for window in &mut canary.windows {
            window.burn_rate = None;
            window.error_ratio = None;
            window.requests = None;
        }
    }
    run.burn = None;
    run
}

/// A run of `verdict` at `seconds`; Inconclusive ones are [`no_data`].
fn run_at(verdict: Verdict, seconds: i64) -> AnalysisRun {
    match verdict {
        Verdict::Inconclusive => no_data(seconds),
        _ => run(V2, verdict, at(seconds)),
    }
}

fn canary_pods(sim: &Sim) -> i32 {
    sim.observed.canary.as_ref().map_or(0, |c| c.replicas)
}

fn message(sim: &Sim) -> String {
    sim.status().message.clone().unwrap_or_default()
}

#[test]
fn no_step_raises_the_canarys_traffic_or_pods_until_an_analysis_passes() {
    let shapes: [(&str, Vec<Step>); 2] = [
        (
            "a raise right after the first step",
            vec![
                set_weight(10),
                set_weight(30),
                pause_for(60),
                set_weight(60),
                set_weight(90),
            ],
        ),
        (
            "raises after timed pauses",
            vec![
                set_weight(10),
                pause_for(60),
                set_weight(30),
                pause_for(60),
                set_weight(60),
                pause_for(60),
                set_weight(90),
            ],
        ),
    ];
    let verdicts = [
        None,
        Some(Verdict::Inconclusive),
        Some(Verdict::Failing),
        Some(Verdict::Error),
    ];
    for gateway in [true, false] {
        for (shape, steps) in &shapes {
            for verdict in verdicts {
                let mode = if gateway { "gateway" } else { "replica split" };
                let case = format!("{mode}, {shape}, latest verdict {verdict:?}");
                let builder = if gateway {
                    ReleaseBuilder::gateway()
                } else {
                    ReleaseBuilder::replica_split()
                };
                let mut sim = Sim::canary_of(builder.replicas(10).steps(steps.clone()).analysis());
                lenient(&mut sim);
                sim.settle();
                let mut most_pods = canary_pods(&sim);
                // Ten minutes: twenty analysis intervals, every pause long over.
                for n in 1..=20 {
                    if let Some(verdict) = verdict {
                        sim.observed.analysis = Some(run_at(verdict, 30 * n));
                    }
                    sim.tick(30);
                    sim.settle();
                    most_pods = most_pods.max(canary_pods(&sim));
                }
                let most_traffic = sim.traffic.iter().map(|(_, amount)| *amount).max();
                // The first step's share: 10% of the route, or 1 of 10 pods.
                let first_step = if gateway { 10 } else { 1 };
                assert_eq!(most_traffic, Some(first_step), "{case}: {:?}", sim.traffic);
                assert_eq!(most_pods, 1, "{case}: canary pods");
                let status = sim.status();
                assert_eq!(status.canary_weight, Some(10), "{case}");
                assert_eq!(status.phase, Some(Phase::Progressing), "{case}");
                let reason =
                    verdict.map_or("WaitingForAnalysis".to_string(), |v| format!("Analysis{v}"));
                assert_eq!(status.reason.as_deref(), Some(reason.as_str()), "{case}");
                let message = message(&sim);
                let cause = match verdict {
                    None => "no analysis has run yet".to_string(),
                    Some(verdict) => format!("latest analysis {verdict}: "),
                };
                assert!(
                    message.contains("held at 10% on canary")
                        && message.contains(&cause)
                        && message.contains("needs a passing analysis"),
                    "{case}: {message}"
                );

                // Evidence at last: the canary goes on to its next weight.
                sim.observed.analysis = Some(run(V2, Verdict::Passing, at(630)));
                sim.tick(30);
                sim.settle();
                assert_eq!(sim.status().canary_weight, Some(30), "{case}");
            }
        }
    }
}

#[test]
fn a_timed_pause_ends_once_its_time_is_up_and_the_latest_analysis_passes() {
    use Verdict::{Failing as F, Inconclusive as I, Passing as P};
    struct Case {
        name: &'static str,
        runs: &'static [(i64, Verdict)],
        ends_at: i64,
    }
    let cases = [
        Case {
            name: "passing throughout",
            runs: &[(30, P), (60, P), (90, P), (120, P)],
            ends_at: 120,
        },
        Case {
            name: "no data until after its time",
            runs: &[(30, I), (60, I), (90, I), (120, I), (150, I), (180, P)],
            ends_at: 180,
        },
        Case {
            name: "no data at its end",
            runs: &[(30, P), (60, P), (90, P), (120, I), (150, P)],
            ends_at: 150,
        },
        Case {
            name: "no data early, passing by its end",
            runs: &[(30, I), (60, I), (90, P), (120, P)],
            ends_at: 120,
        },
        Case {
            name: "failing at its end",
            runs: &[(30, P), (60, P), (90, P), (120, F), (150, P)],
            ends_at: 150,
        },
    ];
    for case in cases {
        let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
        lenient(&mut sim);
        sim.settle();
        assert_eq!(
            sim.status().current_step,
            Some(1),
            "{}: in the pause",
            case.name
        );
        let mut ended = None;
        for seconds in (30..=210).step_by(30) {
            if let Some((_, verdict)) = case.runs.iter().find(|(at, _)| *at == seconds) {
                sim.observed.analysis = Some(run_at(*verdict, seconds));
            }
            sim.tick(30);
            sim.settle();
            if ended.is_none() && sim.status().current_step > Some(1) {
                ended = Some(seconds);
            }
            if ended.is_none() && seconds >= 120 {
                assert_eq!(
                    sim.status().pause_until,
                    None,
                    "{}: no time left to show once the pause's time is up",
                    case.name
                );
                assert!(
                    message(&sim).contains(
                        "pause 2m ended at 2026-03-01T12:02:00Z; the next step needs a passing analysis"
                    ),
                    "{}: {}",
                    case.name,
                    message(&sim)
                );
            }
        }
        assert_eq!(ended, Some(case.ends_at), "{}", case.name);
    }
}

#[test]
fn the_steps_before_the_first_traffic_are_the_only_ones_that_move_without_evidence() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis().steps(vec![
        pause_for(30),
        set_weight(10),
        set_weight(30),
    ]));
    sim.settle();
    assert_eq!(sim.status().current_step, Some(0));
    // No run has come (none can judge a canary without traffic): the pause at 0% ends on
    // time, and the first traffic goes to the canary.
    sim.tick(30);
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(10));
    assert_eq!(sim.status().current_step, Some(2));
    assert_eq!(sim.status().reason.as_deref(), Some("WaitingForAnalysis"));
    // One interval after the steps began (at the pause), plus this Release's offset.
    let offset = super::decide::analysis_offset(&sim.release).as_secs();
    let due = at(30 + i64::try_from(offset).unwrap());
    assert_eq!(
        message(&sim),
        format!(
            "step 3/3: held at 10% on canary {}: no analysis has run yet (the first is due at {due}); moving to 30% needs a passing analysis (or `waymark promote checkout`)",
            revision_of(V2)
        )
    );
}

#[test]
fn without_analysis_steps_advance_on_time() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().steps(vec![
        set_weight(10),
        pause_for(60),
        set_weight(30),
        pause_until_promoted(),
    ]));
    sim.settle();
    sim.tick(60);
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(30));
    assert_eq!(sim.status().reason.as_deref(), Some("CanaryPauseStep"));
}

#[test]
fn an_inconclusive_limit_hold_names_what_ends_it_and_ends_at_the_next_passing_run() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    for n in 1..=3 {
        sim.observed.analysis = Some(no_data(30 * n));
        sim.tick(30);
    }
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::Paused));
    assert_eq!(status.reason.as_deref(), Some("AnalysisInconclusive"));
    let held = message(&sim);
    assert_eq!(
        held,
        format!(
            "step 2/4: held at 10% on canary {}: inconclusiveLimit 3 reached (the last 3 analyses were inconclusive); canary total query returned no data over 5m; resumes by itself at the next passing analysis, or `waymark promote checkout` finishes step 2/4 without one",
            revision_of(V2)
        )
    );
    // More runs without data: the counter goes past the limit, the message does not.
    for n in 4..=5 {
        sim.observed.analysis = Some(no_data(30 * n));
        sim.tick(30);
    }
    assert_eq!(
        sim.status()
            .analysis
            .as_ref()
            .unwrap()
            .consecutive_inconclusive,
        5
    );
    assert_eq!(
        message(&sim),
        held,
        "the message does not count past its limit"
    );
    assert_eq!(sim.status().canary_weight, Some(10));

    // Data again: the hold ends by itself, and the pause long over, the canary goes on.
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(180)));
    sim.tick(30);
    sim.settle();
    assert_eq!(sim.status().phase, Some(Phase::Paused));
    assert_eq!(sim.status().reason.as_deref(), Some("CanaryPauseStep"));
    assert_eq!(sim.status().canary_weight, Some(50));
}

#[test]
fn an_inconclusive_limit_hold_after_every_step_names_promote_full() {
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .analysis()
            .steps(vec![set_weight(20)]),
    );
    sim.settle();
    for n in 1..=3 {
        sim.observed.analysis = Some(no_data(30 * n));
        sim.tick(30);
    }
    assert_eq!(sim.status().reason.as_deref(), Some("AnalysisInconclusive"));
    assert!(
        message(&sim).ends_with(
            "resumes by itself at the next passing analysis, or `waymark promote --full checkout` promotes without one"
        ),
        "{}",
        message(&sim)
    );
}

#[test]
fn promote_ends_an_inconclusive_limit_hold_and_finishes_the_current_step() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    for n in 1..=3 {
        sim.observed.analysis = Some(no_data(30 * n));
        sim.tick(30);
    }
    assert_eq!(sim.status().phase, Some(Phase::Paused));
    assert_eq!(sim.status().current_step, Some(1));

    // The hold ends and the pause (step 2/4) is finished; the raise to 50% that follows is
    // still held, since the latest analysis has no data.
    sim.request("release-hold", ManualAction::Promote);
    let promoted = sim.tick(0);
    assert!(
        notes(&promoted)
            .iter()
            .any(|n| n.contains("step 2/4 finished; hold on inconclusive analysis released")),
        "{:?}",
        notes(&promoted)
    );
    sim.settle();
    let status = sim.status();
    assert_eq!(status.phase, Some(Phase::Progressing));
    assert_eq!(status.reason.as_deref(), Some("AnalysisInconclusive"));
    assert_eq!(status.current_step, Some(2));
    assert_eq!(status.canary_weight, Some(10));
    assert!(
        message(&sim).contains("moving to 50% needs a passing analysis"),
        "{}",
        message(&sim)
    );

    // A second promote finishes the held step: the person's override takes it to 50%.
    sim.request("go-on", ManualAction::Promote);
    sim.tick(0);
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(50));
    assert_eq!(sim.status().reason.as_deref(), Some("CanaryPauseStep"));
}

#[test]
fn a_held_canary_has_no_pods_made_for_the_step_it_waits_at() {
    // The canary's Deployment is lost while it waits at 10% for a 50% step: it comes back
    // sized for 10%, not for the step that is held.
    let mut sim = Sim::canary_of(
        ReleaseBuilder::gateway()
            .analysis()
            .replicas(10)
            .steps(vec![set_weight(10), set_weight(50)]),
    );
    lenient(&mut sim);
    sim.settle();
    sim.observed.canary = None;
    let recreated = sim.tick(5);
    assert!(
        recreated.actions.contains(&Action::ApplyCanary {
            revision: revision_of(V2),
            replicas: 1
        }),
        "{:?}",
        recreated.actions
    );
}

#[test]
fn the_timeline_records_the_weight_the_canary_reached() {
    // Gateway: held at 10% for ten minutes, then 50% once an analysis passes.
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    lenient(&mut sim);
    sim.settle();
    for n in 1..=20 {
        sim.observed.analysis = Some(no_data(30 * n));
        sim.tick(30);
        sim.settle();
    }
    let reached = |sim: &Sim| -> Vec<(i32, i32)> {
        sim.status()
            .timeline
            .iter()
            .filter(|e| e.kind == TimelineKind::Step)
            .map(|e| (e.step.unwrap_or_default(), e.weight.unwrap_or_default()))
            .collect()
    };
    assert_eq!(reached(&sim), [(1, 10)], "held at 10%: nothing more");
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(630)));
    sim.tick(30);
    sim.settle();
    assert_eq!(reached(&sim), [(1, 10), (3, 50)]);
    let fifty = sim
        .status()
        .timeline
        .iter()
        .rfind(|e| e.kind == TimelineKind::Step)
        .unwrap();
    assert_eq!(fifty.at.0, sim.now, "noted when the route is seen at 50%");

    // Replica split: the split's effective share, as the status shows it (1 pod of 4 is 25%).
    let mut sim = Sim::canary_of(ReleaseBuilder::replica_split().analysis());
    lenient(&mut sim);
    sim.settle();
    assert_eq!(sim.status().canary_weight, Some(25));
    assert_eq!(reached(&sim), [(1, 25)]);
}
