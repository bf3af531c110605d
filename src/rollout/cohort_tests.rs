//! The route steps (`setHeaderRoute`, `setMirrorRoute`) through the core: each becomes the
//! intent in `status.traffic` and a [`Action::SetRouteAdditions`], and every way a canary ends
//! takes what they added off the route.

use super::fixtures::*;
use super::{Action, Decision};
use crate::api::{ManualAction, Verdict};
use crate::traffic::cohort::carries_additions;

/// Cohort, weight, mirror, then a pause until `waymark promote`.
fn cohort_then_mirror() -> Vec<crate::api::Step> {
    vec![
        header_route("beta", "x-canary", "true"),
        set_weight(20),
        mirror_route("shadow", 30),
        pause_until_promoted(),
    ]
}

fn carries(sim: &Sim) -> bool {
    sim.observed
        .route_object
        .as_ref()
        .is_some_and(|route| carries_additions(route, "checkout"))
}

fn route_rule_names(sim: &Sim) -> Vec<String> {
    sim.observed
        .route_object
        .iter()
        .flat_map(|route| route.spec.rules.iter().flatten())
        .filter_map(|rule| rule.name.clone())
        .collect()
}

fn route_additions_actions(decision: &Decision) -> Vec<&crate::api::RouteAdditions> {
    decision
        .actions
        .iter()
        .filter_map(|action| match action {
            Action::SetRouteAdditions { additions } => Some(additions),
            _ => None,
        })
        .collect()
}

#[test]
fn a_cohort_step_records_its_intent_in_the_status_and_writes_the_named_rule() {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().steps(cohort_then_mirror()));
    let original = sim.observed.route_object.clone();
    // Decide until the cohort is asked for: the decision that asks records it first.
    let mut asked = None;
    for _ in 0..10 {
        let decision = sim.tick(0);
        if !route_additions_actions(&decision).is_empty() {
            asked = Some(decision);
            break;
        }
    }
    let asked = asked.expect("the cohort step writes the route");
    let additions = route_additions_actions(&asked)[0].clone();
    assert_eq!(
        asked.status.traffic, additions,
        "the intent is in the status"
    );
    assert_eq!(additions.describe(), "cohorts beta");
    assert_eq!(route_rule_names(&sim), ["waymark-checkout-beta"]);

    sim.settle();
    assert_eq!(
        sim.status().current_step,
        Some(3),
        "paused after the mirror"
    );
    assert_eq!(
        sim.status().traffic.describe(),
        "cohorts beta; mirrors shadow 30%"
    );
    assert!(carries(&sim));

    sim.request("r1", ManualAction::Promote);
    sim.settle();
    sim.tick(31);
    sim.settle();
    assert_eq!(sim.status().canary_revision, None, "promoted");
    assert!(sim.status().traffic.is_empty());
    assert_eq!(
        sim.observed.route_object, original,
        "the route is exactly as its owner wrote it"
    );
}

#[test]
fn every_way_a_canary_ends_takes_the_cohorts_and_mirrors_away_with_the_weight_first() {
    // (case, what happens at the pause)
    type Ending = (&'static str, fn(&mut Sim));
    let endings: [Ending; 2] = [
        ("abort", |sim| sim.request("r1", ManualAction::Abort)),
        ("a new revision", |sim| {
            sim.release.spec.template = template(V3);
        }),
    ];
    for (case, end) in endings {
        let mut sim = Sim::canary_of(ReleaseBuilder::gateway().steps(cohort_then_mirror()));
        sim.settle();
        assert!(carries(&sim), "{case}: cohort and mirror on the route");
        end(&mut sim);
        let decision = sim.tick(0);
        let traffic_moves: Vec<&Action> = decision
            .actions
            .iter()
            .filter(|a| !matches!(a, Action::Event(_)))
            .take(2)
            .collect();
        assert!(
            traffic_moves.contains(&&Action::SetWeight { canary_weight: 0 })
                && traffic_moves.contains(&&Action::SetRouteAdditions {
                    additions: Default::default()
                }),
            "{case}: the weight and the cohorts go first: {:?}",
            decision.actions
        );
        assert!(!carries(&sim), "{case}: {:?}", decision.actions);
        sim.settle();
        // An abort leaves none; a new revision's canary goes through its own steps, whose
        // cohort and mirror come back once it is available: the route carries what the status
        // says.
        assert_eq!(carries(&sim), !sim.status().traffic.is_empty(), "{case}");
        assert_eq!(
            sim.status().traffic.is_empty(),
            case == "abort",
            "{case}: {:?}",
            sim.status().traffic
        );
    }
}

#[test]
fn a_cohort_after_the_first_traffic_waits_for_a_passing_analysis() {
    let steps = vec![
        set_weight(10),
        header_route("beta", "x-canary", "true"),
        pause_until_promoted(),
    ];
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis().steps(steps));
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1));
    assert!(!carries(&sim), "no cohort without evidence");
    assert!(sim.status().traffic.is_empty());
    let message = sim.status().message.clone().unwrap_or_default();
    assert!(message.contains("adding cohort beta"), "{message}");

    let mut passing = run(V2, Verdict::Passing, sim.now);
    passing.revision = sim.status().canary_revision.clone();
    sim.observed.analysis = Some(passing);
    sim.tick(0);
    sim.settle();
    assert_eq!(sim.status().current_step, Some(2));
    assert!(carries(&sim), "the cohort once the analysis passed");
}

#[test]
fn a_cohort_as_the_first_step_needs_no_evidence_and_its_removal_none_either() {
    let steps = vec![
        header_route("beta", "x-canary", "true"),
        pause_for(60),
        remove_cohort("beta"),
        pause_until_promoted(),
    ];
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis().steps(steps));
    sim.settle();
    assert_eq!(sim.status().current_step, Some(1), "added, then paused");
    assert!(carries(&sim));
    let mut passing = run(V2, Verdict::Passing, sim.now);
    passing.revision = sim.status().canary_revision.clone();
    sim.observed.analysis = Some(passing);
    sim.tick(61);
    sim.settle();
    assert_eq!(sim.status().current_step, Some(3));
    assert!(!carries(&sim), "removed");
    assert!(sim.status().traffic.is_empty());
}

#[test]
fn a_mirror_step_warns_when_the_gateway_class_does_not_list_mirroring() {
    use crate::traffic::cohort::{FEATURE_MIRROR, FEATURE_PERCENTAGE_MIRROR};
    // (the class's supportedFeatures, whether the mirror step's message warns)
    let cases: [(Option<Vec<String>>, bool); 3] = [
        (None, false),
        (Some(vec!["HTTPRoute".into()]), true),
        (
            Some(vec![
                "HTTPRoute".into(),
                FEATURE_MIRROR.into(),
                FEATURE_PERCENTAGE_MIRROR.into(),
            ]),
            false,
        ),
    ];
    for (features, warns) in cases {
        let mut sim = Sim::canary_of(ReleaseBuilder::gateway().steps(cohort_then_mirror()));
        sim.observed.gateway_features = features.clone();
        let mut messages = Vec::new();
        for _ in 0..12 {
            let decision = sim.tick(0);
            messages.extend(decision.status.message.clone());
        }
        let mirror_message = messages
            .iter()
            .find(|message| message.contains("mirror shadow copying 30%"))
            .unwrap_or_else(|| panic!("{features:?}: no mirror step message in {messages:#?}"));
        assert_eq!(
            mirror_message.contains("does not list"),
            warns,
            "{features:?}: {mirror_message}"
        );
    }
}
