//! Which transitions a decision tells and which targets hear about them: pure functions of the
//! rollout core's notes, the Release and the configuration.
//!
//! Notifications make no decision of their own: a transition is one of the core's
//! [`EventNote`]s (the same note the Event and the log line are made of), mapped by its reason
//! in [`transition_of`], the one place that knows the reasons.

use kube::ResourceExt;

use crate::api::{Release, Verdict};
use crate::rollout::{Action, Decision, EventNote, NoteKind, validate::selector_matches};

use super::config::{NotificationConfig, ReleaseFilter, Target};
pub use super::transition::Transition;

/// The reason the roadmap outcome's measurement is told with (emitted by the outcome engine).
pub const REASON_OUTCOME_MEASURED: &str = "RoadmapOutcomeMeasured";

/// The transition a note of the core tells, if any. `verdict_now` is the analysis verdict of
/// the decision the note belongs to: a verdict change is a transition only when it is to
/// Failing.
pub fn transition_of(reason: &str, verdict_now: Option<Verdict>) -> Option<Transition> {
    match reason {
        "CanaryStarted" => Some(Transition::CanaryStarted),
        // Told once on entering the pause (see the core's `announce`).
        "CanaryPauseStep" => Some(Transition::Paused),
        "VerdictChanged" if verdict_now == Some(Verdict::Failing) => {
            Some(Transition::AnalysisFailing)
        }
        // An abort is a rollback a person asked for; the message names them.
        "CanaryRolledBack" | "CanaryAborted" => Some(Transition::RolledBack),
        "CanaryPromoted" => Some(Transition::Promoted),
        REASON_OUTCOME_MEASURED => Some(Transition::OutcomeMeasured),
        _ => None,
    }
}

/// The transitions `decision` tells, each with its note, in the decision's order.
pub fn transitions(decision: &Decision) -> Vec<(Transition, &EventNote)> {
    let verdict_now = decision.status.analysis.as_ref().map(|a| a.verdict);
    decision
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::Event(note) if note.kind == NoteKind::StateChange => {
                transition_of(&note.reason, verdict_now).map(|t| (t, note))
            }
            _ => None,
        })
        .collect()
}

/// Whether `filter` selects `release`: every condition it sets holds.
pub fn filter_matches(filter: &ReleaseFilter, release: &Release) -> bool {
    let namespace = release.namespace().unwrap_or_default();
    let roadmap = &release.spec.roadmap;
    (filter.namespaces.is_empty() || filter.namespaces.contains(&namespace))
        && filter
            .selector
            .as_ref()
            .is_none_or(|selector| selector_matches(selector, release.labels()))
        && (filter.horizons.is_empty()
            || roadmap
                .horizon
                .is_some_and(|h| filter.horizons.contains(&h)))
        && (filter.kinds.is_empty() || roadmap.kind.is_some_and(|k| filter.kinds.contains(&k)))
}

/// Who hears about one transition of one Release.
#[derive(Debug, PartialEq)]
pub struct Recipient<'c> {
    /// The target.
    pub target: &'c Target,
    /// Whether the Release names it in `spec.roadmap.notify` (its failures show in the
    /// Release's condition).
    pub named: bool,
}

/// The targets that hear about `transition` of `release`: those listening to the transition
/// whose filter selects the Release, and that either take every Release (`default`) or are
/// named in its `spec.roadmap.notify`.
pub fn recipients<'c>(
    config: &'c NotificationConfig,
    release: &Release,
    transition: Transition,
) -> Vec<Recipient<'c>> {
    let names = &release.spec.roadmap.notify;
    config
        .targets
        .iter()
        .filter(|target| target.transitions.contains(&transition))
        .filter(|target| filter_matches(&target.releases, release))
        .filter_map(|target| {
            let named = names.contains(&target.name);
            (target.default || named).then_some(Recipient { target, named })
        })
        .collect()
}

/// The names in `spec.roadmap.notify` that `config` lacks (all of them without a
/// configuration).
pub fn unknown_targets(config: Option<&NotificationConfig>, release: &Release) -> Vec<String> {
    release
        .spec
        .roadmap
        .notify
        .iter()
        .filter(|name| config.and_then(|config| config.target(name)).is_none())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Horizon, ReleaseStatus, RoadmapKind};
    use crate::controller::notify::config::parse_text;
    use crate::fixtures::ReleaseBuilder;
    use crate::rollout::{Audience, Severity};
    use std::collections::BTreeMap;

    #[test]
    fn reasons_map_to_transitions() {
        use Transition::*;
        let cases: [(&str, Option<Verdict>, Option<Transition>); 12] = [
            ("CanaryStarted", None, Some(CanaryStarted)),
            ("CanaryPauseStep", None, Some(Paused)),
            (
                "VerdictChanged",
                Some(Verdict::Failing),
                Some(AnalysisFailing),
            ),
            ("VerdictChanged", Some(Verdict::Passing), None),
            ("VerdictChanged", Some(Verdict::Inconclusive), None),
            ("VerdictChanged", None, None),
            ("CanaryRolledBack", Some(Verdict::Failing), Some(RolledBack)),
            ("CanaryAborted", None, Some(RolledBack)),
            ("CanaryPromoted", None, Some(Promoted)),
            ("RoadmapOutcomeMeasured", None, Some(OutcomeMeasured)),
            ("StepCompleted", None, None),
            ("StableCreated", None, None),
        ];
        for (reason, verdict, expected) in cases {
            assert_eq!(
                transition_of(reason, verdict),
                expected,
                "{reason} {verdict:?}"
            );
        }
    }

    fn note(reason: &str, kind: NoteKind) -> Action {
        Action::Event(EventNote {
            severity: Severity::Normal,
            reason: reason.into(),
            note: format!("PAY-142: {reason}"),
            audience: Audience::EventAndLog,
            kind,
        })
    }

    #[test]
    fn a_decision_tells_its_state_changes_in_order_and_no_refusal() {
        let decision = Decision {
            actions: vec![
                note("RoleRefused", NoteKind::RefusedWrite),
                note("CanaryStarted", NoteKind::StateChange),
                note("StepCompleted", NoteKind::StateChange),
                note("CanaryPromoted", NoteKind::StateChange),
            ],
            status: ReleaseStatus::default(),
            requeue_after: None,
        };
        let told: Vec<Transition> = transitions(&decision).into_iter().map(|(t, _)| t).collect();
        assert_eq!(told, [Transition::CanaryStarted, Transition::Promoted]);
    }

    const CONFIG: &str = r#"
targets:
- name: everyone
  type: webhook
  urlFrom: {secretKeyRef: {name: s, key: a}}
- name: shop-failures
  type: slack
  urlFrom: {secretKeyRef: {name: s, key: b}}
  transitions: [rolled-back, analysis-failing]
  releases: {namespaces: [shop]}
- name: team-checkout
  type: slack
  default: false
  urlFrom: {secretKeyRef: {name: s, key: c}}
- name: now-features
  type: cloudevents
  urlFrom: {secretKeyRef: {name: s, key: d}}
  releases:
    selector: {matchLabels: {tier: web}}
    horizons: [now]
    kinds: [feature]
"#;

    fn release(namespace: &str, labels: &[(&str, &str)], notify: &[&str]) -> Release {
        let mut release = ReleaseBuilder::gateway().build();
        release.metadata.namespace = Some(namespace.into());
        release.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        );
        release.spec.roadmap.notify = notify.iter().map(|n| n.to_string()).collect();
        release
    }

    fn heard(release: &Release, transition: Transition) -> Vec<(String, bool)> {
        let config = parse_text("ns/cm", CONFIG).unwrap();
        recipients(&config, release, transition)
            .into_iter()
            .map(|r| (r.target.name.clone(), r.named))
            .collect()
    }

    #[test]
    fn targets_are_chosen_by_transition_namespace_labels_roadmap_and_name() {
        use Transition::*;
        let plain = release("shop", &[], &[]);
        let mut tagged = release("web", &[("tier", "web")], &["team-checkout"]);
        tagged.spec.roadmap.horizon = Some(Horizon::Now);
        tagged.spec.roadmap.kind = Some(RoadmapKind::Feature);
        let mut debt = tagged.clone();
        debt.spec.roadmap.kind = Some(RoadmapKind::Debt);
        let own = |name: &str| (name.to_string(), false);
        let named = |name: &str| (name.to_string(), true);
        /// (release, transition, the targets that hear it and whether the Release names them)
        type Case<'a> = (&'a Release, Transition, Vec<(String, bool)>);
        let cases: Vec<Case> = vec![
            // Default targets hear every transition they list; a default: false one only
            // where named.
            (&plain, CanaryStarted, vec![own("everyone")]),
            (
                &plain,
                RolledBack,
                vec![own("everyone"), own("shop-failures")],
            ),
            // Another namespace: not shop-failures; labels and roadmap tags: now-features.
            (
                &tagged,
                RolledBack,
                vec![own("everyone"), named("team-checkout"), own("now-features")],
            ),
            // The kind does not match: not now-features.
            (
                &debt,
                Promoted,
                vec![own("everyone"), named("team-checkout")],
            ),
        ];
        for (release, transition, expected) in cases {
            assert_eq!(heard(release, transition), expected, "{transition}");
        }
    }

    #[test]
    fn a_filter_on_horizon_or_kind_skips_releases_without_them() {
        let config = parse_text("ns/cm", CONFIG).unwrap();
        let filter = &config.target("now-features").unwrap().releases;
        let release = release("web", &[("tier", "web")], &[]);
        assert!(!filter_matches(filter, &release), "no horizon, no kind");
    }

    #[test]
    fn named_targets_the_configuration_lacks_are_listed() {
        let config = parse_text("ns/cm", CONFIG).unwrap();
        let release = release("shop", &[], &["team-checkout", "team-payments"]);
        assert_eq!(unknown_targets(Some(&config), &release), ["team-payments"]);
        assert_eq!(
            unknown_targets(None, &release),
            ["team-checkout", "team-payments"],
            "without a configuration every name is unknown"
        );
    }
}
