//! The notes that tell a Release's state changes: each change told once, in the words an SRE
//! reads in the controller's log, and only the changes Kubernetes Events told before are
//! Events (a timed pause, a verdict changed and a hold are for the log alone).

use super::fixtures::*;
use super::{Action, Audience, EventNote, NoteKind, Severity};
use crate::api::{ManualAction, Step, Verdict};

/// What happens between two looks at a canary of `V2` (started by [`Sim::canary_of`]).
#[derive(Clone, Copy)]
enum Move {
    Wait(i64),
    Analysis(Verdict),
    Ask(ManualAction),
    RouteUnusable,
}

/// Every note decided while the canary goes through `moves` (each followed by decisions until
/// only notes are asked for), then two more looks with nothing new.
fn notes_of_walk(steps: Vec<Step>, analysis: bool, moves: &[Move]) -> Vec<EventNote> {
    let builder = ReleaseBuilder::gateway().steps(steps);
    let builder = if analysis {
        builder.analysis()
    } else {
        builder
    };
    let mut sim = Sim::canary_of(builder);
    let mut notes = Vec::new();
    let mut look = |sim: &mut Sim| {
        for _ in 0..10 {
            let decision = sim.tick(0);
            let only_notes = decision
                .actions
                .iter()
                .all(|a| matches!(a, Action::Event(_)));
            notes.extend(decision.actions.into_iter().filter_map(|a| match a {
                Action::Event(note) => Some(note),
                _ => None,
            }));
            if only_notes {
                break;
            }
        }
    };
    look(&mut sim);
    for step in moves {
        match *step {
            Move::Wait(secs) => {
                sim.now += k8s_openapi::jiff::SignedDuration::from_secs(secs);
            }
            Move::Analysis(verdict) => sim.observed.analysis = Some(run(V2, verdict, sim.now)),
            Move::Ask(action) => sim.request("r1", action),
            Move::RouteUnusable => {
                sim.observed.route = Some(super::RouteState::Unusable {
                    message: "HTTPRoute shop/checkout not found".into(),
                });
            }
        }
        look(&mut sim);
    }
    for _ in 0..2 {
        sim.now += k8s_openapi::jiff::SignedDuration::from_secs(1);
        look(&mut sim);
    }
    notes
}

#[test]
fn each_state_change_is_told_once_to_its_audience_with_its_numbers() {
    use Move::*;
    let v2 = revision_of(V2);
    struct Case {
        name: &'static str,
        steps: Vec<Step>,
        analysis: bool,
        moves: Vec<Move>,
        reason: &'static str,
        /// How many notes of `reason` the walk tells.
        times: usize,
        audience: Audience,
        severity: Severity,
        /// The words of the last note of `reason`.
        words: String,
    }
    let cases = [
        Case {
            name: "a timed pause begun",
            steps: vec![set_weight(20), pause_for(60)],
            analysis: false,
            moves: vec![],
            reason: "StepPaused",
            times: 1,
            audience: Audience::LogOnly,
            severity: Severity::Normal,
            words: format!(
                "PAY-142: step 2/2: 20% on canary {v2}, paused for 1m until 2026-03-01T12:01:00Z"
            ),
        },
        Case {
            name: "each timed pause told when it begins",
            steps: vec![set_weight(20), pause_for(60), set_weight(40), pause_for(30)],
            analysis: false,
            moves: vec![Wait(61)],
            reason: "StepPaused",
            times: 2,
            audience: Audience::LogOnly,
            severity: Severity::Normal,
            words: format!(
                "PAY-142: step 4/4: 40% on canary {v2}, paused for 30s until 2026-03-01T12:01:31Z"
            ),
        },
        Case {
            name: "a pause until promoted",
            steps: vec![set_weight(20), pause_until_promoted()],
            analysis: false,
            moves: vec![],
            reason: "CanaryPauseStep",
            times: 1,
            audience: Audience::EventAndLog,
            severity: Severity::Normal,
            words: format!(
                "PAY-142: step 2/2: 20% on canary {v2}, paused until `waymark promote checkout`"
            ),
        },
        Case {
            name: "a verdict told when it changes, not on every run",
            steps: vec![set_weight(20), pause_for(300), set_weight(50)],
            analysis: true,
            moves: vec![
                Wait(30),
                Analysis(Verdict::Passing),
                Wait(30),
                Analysis(Verdict::Passing),
                Wait(30),
                Analysis(Verdict::Failing),
            ],
            reason: "VerdictChanged",
            times: 2,
            audience: Audience::LogOnly,
            severity: Severity::Normal,
            words: format!(
                "PAY-142: analysis of canary {v2}: Failing (was Passing), burn 21.3x over 5m \
                 (limit 14.4x), error budget 73% left; canary burns 21.3x of 14.4x over 5m and \
                 1m (4,812 requests)"
            ),
        },
        Case {
            name: "a hold told when it begins, not while it lasts",
            steps: vec![set_weight(20), pause_for(60), set_weight(50)],
            analysis: true,
            moves: vec![
                Wait(30),
                Analysis(Verdict::Inconclusive),
                Wait(31),
                Wait(29),
                Analysis(Verdict::Inconclusive),
            ],
            reason: "CanaryHeld",
            times: 1,
            audience: Audience::LogOnly,
            severity: Severity::Normal,
            words: format!(
                "PAY-142: step 2/3: held at 20% on canary {v2}: latest analysis Inconclusive: \
                 canary burns 0.8x of 14.4x over 5m and 1m (4,812 requests); pause 1m ended at \
                 2026-03-01T12:01:00Z; the next step needs a passing analysis (or `waymark \
                 promote checkout`)"
            ),
        },
        Case {
            name: "a hold is not told again while a Degraded report stands over it",
            steps: vec![set_weight(20), pause_for(60), set_weight(50)],
            analysis: true,
            moves: vec![
                Wait(30),
                Analysis(Verdict::Inconclusive),
                Wait(31),
                RouteUnusable,
                Wait(5),
                Wait(5),
            ],
            reason: "CanaryHeld",
            times: 1,
            audience: Audience::LogOnly,
            severity: Severity::Normal,
            words: format!("PAY-142: step 2/3: held at 20% on canary {v2}: "),
        },
        Case {
            name: "a request accepted names who asked",
            steps: vec![set_weight(20), pause_until_promoted(), set_weight(50)],
            analysis: false,
            moves: vec![Ask(ManualAction::Promote)],
            reason: "PromoteRequested",
            times: 1,
            audience: Audience::EventAndLog,
            severity: Severity::Normal,
            words: format!(
                "PAY-142: promote request r1 by sre@example.com: canary {v2} step 2/3 finished"
            ),
        },
        Case {
            name: "a request ignored names who asked",
            steps: vec![set_weight(20), pause_until_promoted()],
            analysis: false,
            moves: vec![Ask(ManualAction::Retry)],
            reason: "RequestIgnored",
            times: 1,
            audience: Audience::EventAndLog,
            severity: Severity::Warning,
            words: "PAY-142: retry request r1 by sre@example.com ignored: ".into(),
        },
    ];
    for case in cases {
        let notes = notes_of_walk(case.steps, case.analysis, &case.moves);
        let told: Vec<&EventNote> = notes.iter().filter(|n| n.reason == case.reason).collect();
        assert_eq!(told.len(), case.times, "{}: {notes:#?}", case.name);
        let last = told[told.len() - 1];
        assert_eq!(
            (last.audience, last.severity),
            (case.audience, case.severity),
            "{}",
            case.name
        );
        assert!(
            last.note.starts_with(&case.words),
            "{}:\n{}\ndoes not start with\n{}",
            case.name,
            last.note,
            case.words
        );
    }
}

#[test]
fn only_the_changes_events_told_before_are_events() {
    // A whole canary with analysis, a hold, a verdict change and a promotion: the notes for the
    // log alone are exactly the new ones, so a canary costs no more Event writes than before.
    let notes = notes_of_walk(
        vec![set_weight(20), pause_for(60), set_weight(50)],
        true,
        &[
            Move::Wait(30),
            Move::Analysis(Verdict::Inconclusive),
            Move::Wait(31),
            Move::Analysis(Verdict::Passing),
            Move::Wait(30),
            Move::Analysis(Verdict::Passing),
        ],
    );
    assert!(
        notes.iter().all(|n| n.kind == NoteKind::StateChange),
        "a canary's story is all state changes, logged at info: {notes:#?}"
    );
    let events: Vec<&str> = notes
        .iter()
        .filter(|n| n.audience == Audience::EventAndLog)
        .map(|n| n.reason.as_str())
        .collect();
    let log_only: Vec<&str> = notes
        .iter()
        .filter(|n| n.audience == Audience::LogOnly)
        .map(|n| n.reason.as_str())
        .collect();
    assert_eq!(
        events,
        [
            "CanaryStarted",
            "StepCompleted",
            "StepCompleted",
            "CanaryPromoted"
        ]
    );
    assert_eq!(
        log_only,
        [
            "StepPaused",
            "VerdictChanged",
            "CanaryHeld",
            "VerdictChanged",
            "PromotionStarted"
        ]
    );
}
