//! Roadmap outcomes in the core: the record a promotion starts, which measurements are due at
//! `now` (the controller asks Prometheus for exactly those and hands the answers back in
//! [`Observed::outcome_answers`]), the answers folded into the history entries with an Event
//! per verdict, and the requeue at the next due moment.
//!
//! None of this touches the rollout: the outcome is for the roadmap, the SLO is for safety.
//! While nothing is due the status does not change, so a Release waiting a week for its outcome
//! causes no writes.

use k8s_openapi::jiff::Timestamp;

use super::{Action, Audience, Decision, EventNote, NoteKind, Observed, Severity};
use crate::analysis::QueryOutcome;
use crate::analysis::format::format_period;
use crate::analysis::roadmap_outcome::{self, Measurement, PendingMeasurement, describe};
use crate::api::{HistoryEntry, OutcomeRecord, OutcomeVerdict, Release, RoadmapOutcome};

/// Reason of the Event that tells an outcome's verdict.
pub const REASON_OUTCOME_MEASURED: &str = "RoadmapOutcomeMeasured";

/// The record a promotion starts from `spec.roadmap.outcome`: the spec as it is now, and no
/// numbers yet.
pub fn record_for(outcome: &RoadmapOutcome) -> OutcomeRecord {
    OutcomeRecord {
        name: outcome.name.clone(),
        query: outcome.query.clone(),
        goal: outcome.goal,
        min_change: outcome.min_change,
        baseline_window: outcome.baseline,
        after_window: outcome.after,
        baseline: None,
        after: None,
        change: None,
        verdict: None,
        attempts: None,
        last_attempt_at: None,
        measured_at: None,
        message: None,
    }
}

/// What Prometheus answered to one due measurement, as the controller hands it back.
#[derive(Clone, Debug, PartialEq)]
pub struct OutcomeAnswer {
    /// The history entry's revision.
    pub revision: String,
    /// The history entry's `finishedAt` (with the revision, the entry's key).
    pub finished_at: Timestamp,
    /// Which number was asked.
    pub measurement: Measurement,
    /// What came back.
    pub answer: QueryOutcome,
}

/// The outcome measurements of `release` due at `now`: the controller asks Prometheus for
/// these (and for nothing while this is empty).
pub fn measurements_due(release: &Release, now: Timestamp) -> Vec<PendingMeasurement> {
    release
        .status
        .as_ref()
        .map(|status| roadmap_outcome::due(&status.history, now))
        .unwrap_or_default()
}

/// Fold the answers of `observed` into the decision's history entries, tell each verdict
/// reached (an Event, reason [`REASON_OUTCOME_MEASURED`]), and look again at the next due
/// moment.
pub fn fold(decision: &mut Decision, observed: &Observed, now: Timestamp) {
    // To the second, as every instant of the status (the API server keeps no fraction).
    let now = Timestamp::from_second(now.as_second()).unwrap_or(now);
    for answer in &observed.outcome_answers {
        let Some(entry) = decision.status.history.iter_mut().find(|entry| {
            entry.revision == answer.revision && entry.finished_at.0 == answer.finished_at
        }) else {
            // The entry was dropped from the bounded history meanwhile: nothing to record.
            continue;
        };
        let Some(record) = entry.roadmap_outcome.as_mut() else {
            continue;
        };
        if let Some(verdict) =
            roadmap_outcome::apply(record, answer.measurement, &answer.answer, now)
        {
            let note = verdict_note(entry);
            decision.actions.push(Action::Event(EventNote {
                severity: match verdict {
                    OutcomeVerdict::Inconclusive => Severity::Warning,
                    OutcomeVerdict::Met | OutcomeVerdict::NotMet => Severity::Normal,
                },
                reason: REASON_OUTCOME_MEASURED.into(),
                note,
                audience: Audience::EventAndLog,
                kind: NoteKind::StateChange,
            }));
        }
    }
    if let Some(due) = roadmap_outcome::next_due(&decision.status.history) {
        let wait = std::time::Duration::try_from(due.duration_since(now))
            .unwrap_or(std::time::Duration::ZERO);
        decision.requeue_after = Some(decision.requeue_after.map_or(wait, |after| after.min(wait)));
    }
}

/// The Event's note: the item (with its horizon and kind), the outcome with its change and
/// goal, the revision, and the numbers behind the verdict.
fn verdict_note(entry: &HistoryEntry) -> String {
    let Some(record) = &entry.roadmap_outcome else {
        return String::new();
    };
    let tags: Vec<&str> = [
        entry.horizon.map(|h| h.as_str()),
        entry.kind.map(|k| k.as_str()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let item = if tags.is_empty() {
        entry.roadmap_item.clone()
    } else {
        format!("{} ({})", entry.roadmap_item, tags.join(", "))
    };
    let numbers = match (record.baseline, record.after) {
        (Some(baseline), Some(after)) => format!(
            "; {baseline} over {} before the canary, {after} over {} after promotion",
            format_period(record.baseline_window),
            format_period(record.after_window)
        ),
        _ => String::new(),
    };
    let why = match (record.verdict, &record.message) {
        (Some(OutcomeVerdict::Inconclusive), Some(message)) => format!(" ({message})"),
        _ => String::new(),
    };
    format!(
        "{item}: outcome of revision {}: {}{numbers}{why}",
        entry.revision,
        describe(record)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Duration, Goal, MinChange, Outcome};
    use crate::rollout::fixtures::{ReleaseBuilder, at};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn outcome() -> RoadmapOutcome {
        RoadmapOutcome {
            name: "checkout-conversion".into(),
            query: "sum(rate(orders_total[{{window}}]))".into(),
            goal: Goal::Increase,
            baseline: Duration::from_secs(30),
            after: Duration::from_secs(20),
            min_change: MinChange::Percent(2.0),
        }
    }

    /// A Release whose revision 6f9c7d (canary from 0s) was promoted at 100s, outcome recorded.
    fn promoted_release() -> Release {
        let mut release = ReleaseBuilder::gateway().analysis().build();
        release.spec.roadmap.outcome = Some(outcome());
        let mut entry = crate::rollout::history::entry(
            "6f9c7d",
            "PAY-142",
            Outcome::Promoted,
            Some(Time(at(0))),
            Time(at(100)),
            "Promoted",
            None,
        );
        entry.roadmap_outcome = Some(record_for(&outcome()));
        release.status = Some(crate::api::ReleaseStatus {
            history: vec![entry],
            ..Default::default()
        });
        release
    }

    fn answer(measurement: Measurement, value: f64) -> OutcomeAnswer {
        OutcomeAnswer {
            revision: "6f9c7d".into(),
            finished_at: at(100),
            measurement,
            answer: QueryOutcome::Value(value),
        }
    }

    fn decision(release: &Release) -> Decision {
        Decision {
            actions: vec![],
            status: release.status.clone().unwrap_or_default(),
            requeue_after: None,
        }
    }

    #[test]
    fn baseline_then_after_then_one_event_and_nothing_more_due() {
        let mut release = promoted_release();
        assert_eq!(measurements_due(&release, at(100)).len(), 1);
        // The baseline, at promotion: recorded, no Event, next look when `after` has passed.
        let mut first = decision(&release);
        let observed = Observed {
            outcome_answers: vec![answer(Measurement::Baseline, 0.2)],
            ..Observed::default()
        };
        fold(&mut first, &observed, at(100));
        assert!(first.actions.is_empty());
        assert_eq!(
            first.requeue_after,
            Some(std::time::Duration::from_secs(20))
        );
        release.status = Some(first.status);
        assert!(measurements_due(&release, at(119)).is_empty());
        // The after number: the verdict and its Event.
        let mut second = decision(&release);
        let observed = Observed {
            outcome_answers: vec![answer(Measurement::After, 0.21)],
            ..Observed::default()
        };
        fold(&mut second, &observed, at(120));
        let record = second.status.history[0].roadmap_outcome.clone().unwrap();
        assert_eq!(
            (record.baseline, record.after, record.verdict),
            (Some(0.2), Some(0.21), Some(OutcomeVerdict::Met))
        );
        assert_eq!(second.requeue_after, None, "nothing is due any more");
        let [Action::Event(note)] = second.actions.as_slice() else {
            panic!("one Event: {:?}", second.actions);
        };
        assert_eq!(note.reason, REASON_OUTCOME_MEASURED);
        assert_eq!(
            note.note,
            "PAY-142: outcome of revision 6f9c7d: checkout-conversion +5% (goal +2%): met; 0.2 \
             over 30s before the canary, 0.21 over 20s after promotion"
        );
        // Quiet: with nothing due and nothing answered the status stays as it is.
        release.status = Some(second.status.clone());
        let mut third = decision(&release);
        fold(&mut third, &Observed::default(), at(5000));
        assert_eq!(third.status, second.status);
        assert!(measurements_due(&release, at(5000)).is_empty());
    }

    /// A canary of V2 (item `item`) promoted after a Healthy first release of V1 (PAY-142).
    fn promote_v2_as(item: &str) -> crate::api::ReleaseStatus {
        use crate::api::Verdict;
        use crate::rollout::fixtures::{Sim, V2, run, set_weight};
        let mut builder = ReleaseBuilder::gateway()
            .analysis()
            .steps(vec![set_weight(20)])
            .build();
        builder.spec.roadmap.outcome = Some(outcome());
        let mut sim = Sim::new(builder);
        sim.release.spec.template =
            crate::rollout::fixtures::template(crate::rollout::fixtures::V1);
        sim.tick(0);
        sim.settle();
        sim.release.spec.template = crate::rollout::fixtures::template(V2);
        sim.release.spec.roadmap.item = item.into();
        sim.settle();
        sim.observed.analysis = Some(run(V2, Verdict::Passing, at(30)));
        sim.tick(30);
        sim.pods_ready();
        sim.settle();
        sim.status().clone()
    }

    #[test]
    fn a_promoted_canary_records_its_outcome_and_a_second_promotion_of_an_item_is_rework() {
        let status = promote_v2_as("PAY-142");
        let [promoted, first] = status.history.as_slice() else {
            panic!("two entries: {:#?}", status.history);
        };
        assert_eq!(
            (
                first.reason.as_str(),
                first.roadmap_outcome.clone(),
                first.rework
            ),
            ("FirstRelease", None, false),
            "the first release is not measured"
        );
        assert_eq!(promoted.outcome, Outcome::Promoted);
        assert_eq!(promoted.roadmap_outcome, Some(record_for(&outcome())));
        assert!(promoted.rework, "PAY-142 was promoted 30s before");
        let other = promote_v2_as("PAY-143");
        assert!(!other.history[0].rework, "another item is no rework");
        assert!(other.history[0].roadmap_outcome.is_some());
    }
}
