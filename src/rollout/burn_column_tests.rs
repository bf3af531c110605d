//! The Burn column of `kubectl get releases` (`status.analysis.burn`) is filled only while a
//! canary is judged: a Healthy, rolled-back or promoting Release shows it empty, never the
//! burn of a run that no longer speaks of anything live.

use super::fixtures::*;
use crate::api::{ManualAction, Phase, Verdict};

/// A gateway Release with analysis, its V2 canary judged once by a passing run.
fn judged_canary() -> Sim {
    let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
    sim.settle();
    sim.observed.analysis = Some(run(V2, Verdict::Passing, at(30)));
    sim.tick(30);
    sim
}

#[test]
fn the_burn_column_is_set_only_while_a_canary_is_judged() {
    type Scenario = fn() -> Sim;
    let cases: [(&str, Scenario, Phase, Option<&str>); 5] = [
        (
            "a canary judged by a passing run",
            judged_canary,
            Phase::Progressing,
            Some("0.8x/14.4x"),
        ),
        (
            "the first release, before any run",
            || {
                let mut sim = Sim::new(ReleaseBuilder::gateway().analysis().image(V1).build());
                sim.settle();
                sim
            },
            Phase::Healthy,
            None,
        ),
        (
            "the judged canary promoted: Healthy on V2",
            || {
                let mut sim = judged_canary();
                sim.request("full", ManualAction::PromoteFull);
                sim.tick(0);
                sim.settle();
                sim.tick(60);
                sim.settle();
                sim
            },
            Phase::Healthy,
            None,
        ),
        (
            "the canary rolled back by failing runs",
            || {
                let mut sim = judged_canary();
                sim.observed.analysis = Some(run(V2, Verdict::Failing, at(60)));
                sim.tick(30);
                sim.observed.analysis = Some(run(V2, Verdict::Failing, at(90)));
                sim.tick(30);
                sim.settle();
                sim
            },
            Phase::RolledBack,
            None,
        ),
        (
            "a newer canary (V3) before its first run, after V2's",
            || {
                let mut sim = judged_canary();
                sim.release.spec.template = template(V3);
                sim.settle();
                sim
            },
            Phase::Progressing,
            None,
        ),
    ];
    for (name, scenario, phase, burn) in cases {
        let sim = scenario();
        let status = sim.status();
        assert_eq!(status.phase, Some(phase), "{name}: {:?}", status.message);
        assert_eq!(
            status.analysis.as_ref().and_then(|a| a.burn.as_deref()),
            burn,
            "{name}"
        );
    }
}

#[test]
fn a_promoted_release_keeps_its_last_run_numbers_without_the_burn() {
    let mut sim = judged_canary();
    sim.request("full", ManualAction::PromoteFull);
    sim.tick(0);
    sim.settle();
    let analysis = sim.status().analysis.clone().expect("the last run stays");
    assert_eq!(analysis.verdict, Verdict::Passing);
    assert!(analysis.summary.is_some());
    assert_eq!(analysis.burn, None);
}
