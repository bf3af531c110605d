//! Invariants of the rollout core over random step lists, worlds and event sequences.

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;

use super::fixtures::*;
use super::{Action, Decision, RouteState, decide};
use crate::api::{ManualAction, Outcome, ReleaseStatus, Step, Verdict};

#[derive(Clone, Debug)]
enum Event {
    Wait(i64),
    Run(Verdict),
    Request(ManualAction),
    NewTemplate(u8),
    SlowPods(bool),
}

fn step_strategy() -> impl Strategy<Value = Step> {
    let names = || prop_oneof![Just("beta"), Just("staff")];
    prop_oneof![
        3 => (0i32..=100).prop_map(set_weight),
        2 => (1u64..300).prop_map(pause_for),
        1 => Just(pause_until_promoted()),
        // Cohorts and mirrors; a removal before its addition makes the spec invalid (no
        // actions at all), which the invariants must survive too.
        1 => names().prop_map(|name| header_route(name, "x-canary", name)),
        1 => names().prop_map(remove_cohort),
        1 => (names(), 0i32..=100).prop_map(|(name, percent)| mirror_route(name, percent)),
        1 => names().prop_map(remove_mirror),
    ]
}

/// Whether the canary is over (promoted, rolled back, aborted, superseded without a new one):
/// then nothing of Waymark's may be left on the route once the world has settled.
fn canary_over(status: &ReleaseStatus) -> bool {
    status.canary_revision.is_none()
}

/// A settled world whose canary is over carries no cohort or mirror on its route, and the
/// status says none is active.
fn nothing_left_behind(sim: &Sim) -> Result<(), TestCaseError> {
    if canary_over(sim.status()) {
        prop_assert!(
            !sim.observed.route_carries_additions("checkout"),
            "cohort or mirror left on the route: {:?}; {:?}",
            sim.observed
                .route_object
                .as_ref()
                .map(|route| &route.spec.rules),
            sim.status().message
        );
        prop_assert!(
            sim.status().traffic.is_empty(),
            "{:?}",
            sim.status().traffic
        );
    }
    Ok(())
}

fn event_strategy() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (0i64..400).prop_map(Event::Wait),
        3 => prop_oneof![
            Just(Verdict::Passing),
            Just(Verdict::Failing),
            Just(Verdict::Inconclusive),
            Just(Verdict::Error)
        ]
        .prop_map(Event::Run),
        2 => prop_oneof![
            Just(ManualAction::Promote),
            Just(ManualAction::PromoteFull),
            Just(ManualAction::Abort),
            Just(ManualAction::Retry)
        ]
        .prop_map(Event::Request),
        1 => (0u8..3).prop_map(Event::NewTemplate),
        1 => any::<bool>().prop_map(Event::SlowPods),
    ]
}

/// The promotion began in this decision (the stable took the canary's revision).
fn promotion_began(before: &ReleaseStatus, after: &ReleaseStatus) -> bool {
    let was_canary =
        before.canary_revision.is_some() && before.canary_revision != before.stable_revision;
    was_canary && after.stable_revision == before.canary_revision
}

fn check(
    before: &ReleaseStatus,
    decision: &Decision,
    gateway: bool,
    analysis: bool,
    full_requested: bool,
    before_weight: i32,
    before_canary_replicas: i32,
) -> Result<(), TestCaseError> {
    let status = &decision.status;
    let weight = status.canary_weight.unwrap_or(0);
    prop_assert!((0..=100).contains(&weight));
    for action in &decision.actions {
        if let Action::SetWeight { canary_weight } = action {
            prop_assert!((0..=100).contains(canary_weight));
        }
        if !gateway {
            prop_assert!(
                !matches!(action, Action::SetWeight { .. }),
                "no SetWeight in replica mode"
            );
        }
    }
    let rolled_back = !status.history.is_empty()
        && matches!(
            status.history[0].outcome,
            Outcome::RolledBack | Outcome::Aborted
        )
        && status.history.first() != before.history.first();
    if rolled_back {
        // Traffic leaves the canary before anything else moves (when it had any to leave).
        let first = decision
            .actions
            .iter()
            .find(|a| !matches!(a, Action::Event(_) | Action::ApplyServices));
        if let Some(first) = first {
            let traffic_first = match first {
                Action::SetWeight { canary_weight: 0 } => gateway,
                // The cohorts and mirrors go with the weight, before any pod moves.
                Action::SetRouteAdditions { additions } => gateway && additions.is_empty(),
                // Gateway: the canary had no traffic to lose; replica split: its pods leave first.
                Action::ScaleCanary { replicas: 0 } => !gateway || before_weight == 0,
                // Only when the canary had nothing to take away at all.
                Action::ScaleStable { .. } => {
                    (gateway && before_weight == 0) || (!gateway && before_canary_replicas == 0)
                }
                _ => false,
            };
            prop_assert!(traffic_first, "rollback's first move is {:?}", first);
        }
    }
    if promotion_began(before, status) && analysis && !full_requested {
        let canary = before.canary_revision.as_deref();
        let latest = status
            .analysis
            .as_ref()
            .filter(|a| a.revision.as_deref() == canary);
        prop_assert_eq!(latest.map(|a| a.verdict), Some(Verdict::Passing));
    }
    Ok(())
}

/// The most traffic and pods one canary revision has had, for the rule that with analysis
/// nothing rises without evidence.
#[derive(Debug, Default)]
struct Evidence {
    revision: Option<String>,
    most_traffic: i32,
    most_pods: i32,
    /// The cohorts and mirrors (name, match or percent) the canary has had on the route.
    exposures: std::collections::BTreeSet<String>,
    promoted: bool,
}

impl Evidence {
    /// After a decision: the canary's traffic (the route's weight, or its pods with a replica
    /// split) and its pods rise above what they had reached only before it had any traffic,
    /// on a passing latest run since its steps began, or after a person's promote (an
    /// override, which may take several decisions to carry out while pods start).
    fn check(
        &mut self,
        sim: &Sim,
        gateway: bool,
        promoted: bool,
        decision: &Decision,
    ) -> Result<(), TestCaseError> {
        let status = sim.status();
        let in_steps =
            status.canary_revision.is_some() && status.canary_revision != status.stable_revision;
        if !in_steps {
            return Ok(());
        }
        if self.revision != status.canary_revision {
            *self = Evidence {
                revision: status.canary_revision.clone(),
                ..Evidence::default()
            };
        }
        self.promoted |= promoted;
        let pods = sim
            .observed
            .canary
            .as_ref()
            .filter(|c| c.revision == status.canary_revision)
            .map_or(0, |c| c.replicas);
        let traffic = match (&sim.observed.route, gateway) {
            (Some(RouteState::Ready { canary_weight }), true) => *canary_weight,
            _ => pods,
        };
        let passing = status.analysis.as_ref().is_some_and(|a| {
            a.revision == status.canary_revision
                && a.verdict == Verdict::Passing
                && a.last_run_at.as_ref().map(|t| t.0)
                    >= status.steps_started_at.as_ref().map(|t| t.0)
        });
        // A cohort or mirror on the route that the canary did not have before is new exposure,
        // like a higher weight (a mirror copying 0% exposes nothing).
        let exposures: std::collections::BTreeSet<String> =
            if sim.observed.route_carries_additions("checkout") {
                let traffic = &status.traffic;
                traffic
                    .cohorts
                    .iter()
                    .map(|c| format!("cohort {} {:?}", c.name, c.route_match))
                    .chain(
                        traffic.mirrors.iter().filter(|m| m.percent > 0).map(|m| {
                            format!("mirror {} {} {:?}", m.name, m.percent, m.route_match)
                        }),
                    )
                    .collect()
            } else {
                Default::default()
            };
        let exposed_before = self.most_traffic > 0 || !self.exposures.is_empty();
        let rose = traffic > self.most_traffic
            || pods > self.most_pods
            || !exposures.is_subset(&self.exposures);
        prop_assert!(
            !rose || !exposed_before || passing || self.promoted,
            "canary rose to {}% / {} pods / {:?} from {}% / {} pods / {:?} without a passing analysis: {:?}; {:?}",
            traffic,
            pods,
            exposures,
            self.most_traffic,
            self.most_pods,
            self.exposures,
            decision.actions,
            status.message
        );
        self.most_traffic = self.most_traffic.max(traffic);
        self.most_pods = self.most_pods.max(pods);
        self.exposures.extend(exposures);
        Ok(())
    }
}

proptest! {
    // Failures are saved beside this file (`props.regressions`), not in a top-level folder.
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    #[test]
    fn rollout_invariants_hold(
        gateway in any::<bool>(),
        analysis in any::<bool>(),
        replicas in 1i32..8,
        steps in prop::collection::vec(step_strategy(), 1..6),
        events in prop::collection::vec(event_strategy(), 1..40),
    ) {
        let builder = if gateway { ReleaseBuilder::gateway() } else { ReleaseBuilder::replica_split() };
        let builder = builder.replicas(replicas).steps(steps);
        let builder = if analysis { builder.analysis() } else { builder };
        let mut sim = Sim::canary_of(builder);
        let mut clock = 0i64;
        let mut evidence = Evidence::default();
        for (n, event) in events.into_iter().enumerate() {
            let full_requested = matches!(event, Event::Request(ManualAction::PromoteFull));
            let wait = stage_event(&mut sim, n, &event, &mut clock);
            let before = sim.status().clone();
            let before_weight = match sim.observed.route {
                Some(RouteState::Ready { canary_weight }) => canary_weight,
                _ => 0,
            };
            let before_canary_replicas = sim.observed.canary.as_ref().map_or(0, |c| c.replicas);
            let decision = sim.tick(wait);
            check(&before, &decision, gateway, analysis, full_requested, before_weight, before_canary_replicas)?;
            let mut settled = sim.clone();
            settled.settle();
            nothing_left_behind(&settled)?;
            if analysis {
                let promoted = matches!(event, Event::Request(ManualAction::Promote));
                evidence.check(&sim, gateway, promoted, &decision)?;
            }

            // Replica mode never drops below spec.replicas pods (make before break) unless a
            // canary is being taken away, and surges by at most the canary's share.
            if !gateway && let Some(stable) = sim.observed.stable.as_ref() {
                    let canary = sim.observed.canary.as_ref().map_or(0, |c| c.replicas);
                    let retiring = sim.status().history.first() != before.history.first();
                    if !retiring {
                        prop_assert!(stable.replicas + canary >= replicas, "{} + {} pods after {:?}", stable.replicas, canary, decision.actions);
                    }
                    prop_assert!(stable.replicas + canary <= 2 * replicas, "{} + {} pods after {:?}", stable.replicas, canary, decision.actions);
            }
        }
    }

    #[test]
    fn decide_is_idempotent_for_the_same_world(
        gateway in any::<bool>(),
        analysis in any::<bool>(),
        steps in prop::collection::vec(step_strategy(), 1..5),
        events in prop::collection::vec(event_strategy(), 0..25),
        final_verdict in prop::option::of(prop_oneof![Just(Verdict::Passing), Just(Verdict::Failing), Just(Verdict::Inconclusive)]),
    ) {
        let builder = if gateway { ReleaseBuilder::gateway() } else { ReleaseBuilder::replica_split() };
        let builder = builder.steps(steps);
        let builder = if analysis { builder.analysis() } else { builder };
        let mut sim = Sim::canary_of(builder);
        let mut clock = 0;
        for (n, event) in events.into_iter().enumerate() {
            match event {
                Event::Wait(secs) => { clock += secs; sim.tick(secs); }
                Event::Run(verdict) => {
                    clock += 30;
                    let mut analysis_run = run(V2, verdict, at(clock));
                    analysis_run.revision = sim.status().canary_revision.clone();
                    sim.observed.analysis = Some(analysis_run);
                    sim.tick(30);
                }
                Event::Request(action) => { sim.request(&format!("r{n}"), action); sim.tick(0); }
                Event::NewTemplate(index) => { sim.release.spec.template = template([V2, V3, V1][usize::from(index)]); sim.tick(0); }
                Event::SlowPods(slow) => { sim.slow_pods = slow; if !slow { sim.pods_ready(); } sim.tick(0); }
            }
        }
        let mut world = sim.observed.clone();
        if let Some(verdict) = final_verdict {
            let mut analysis_run = run(V2, verdict, sim.now);
            analysis_run.revision = sim.status().canary_revision.clone();
            world.analysis = Some(analysis_run);
        }
        let first = decide(&sim.release, &world, sim.now);
        let mut release = sim.release.clone();
        release.status = Some(first.status.clone());
        let second = decide(&release, &world, sim.now);
        prop_assert_eq!(&second.status, &first.status);
        for action in &second.actions {
            prop_assert!(!matches!(action, Action::Event(_)), "event repeated: {:?}", action);
            prop_assert!(first.actions.contains(action), "new action {:?} not in {:?}", action, first.actions);
        }
    }
}

/// Put `event` into `sim`'s world (a request, a new template, an analysis run, slow pods) and
/// say how long to wait before the next decision.
fn stage_event(sim: &mut Sim, n: usize, event: &Event, clock: &mut i64) -> i64 {
    let images = [V2, V3, "shop/checkout:4.0"];
    let wait = match event {
        Event::Wait(secs) => *secs,
        Event::Run(verdict) => {
            let revision = sim.status().canary_revision.clone();
            let mut analysis_run = run(V2, *verdict, at(*clock + 30));
            analysis_run.revision = revision;
            sim.observed.analysis = Some(analysis_run);
            30
        }
        Event::Request(action) => {
            sim.request(&format!("r{n}"), *action);
            0
        }
        Event::NewTemplate(index) => {
            sim.release.spec.template = template(images[usize::from(*index)]);
            0
        }
        Event::SlowPods(slow) => {
            sim.slow_pods = *slow;
            if !*slow {
                sim.pods_ready();
            }
            0
        }
    };
    *clock += wait;
    wait
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
        ..ProptestConfig::default()
    })]

    /// A controller stopped between any two actions of a decision (after writing its status,
    /// which it does first): the restarted controller decides again from that status and the
    /// world as the cut left it, and ends exactly where an uninterrupted one ends, through the
    /// same sequence of traffic changes (no weight going back and forth).
    #[test]
    fn a_transition_cut_short_by_a_restart_ends_the_same_way_without_traffic_flaps(
        gateway in any::<bool>(),
        analysis in any::<bool>(),
        replicas in 1i32..6,
        steps in prop::collection::vec(step_strategy(), 1..6),
        events in prop::collection::vec(event_strategy(), 1..30),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 30),
    ) {
        let builder = || {
            let builder = if gateway { ReleaseBuilder::gateway() } else { ReleaseBuilder::replica_split() };
            let builder = builder.replicas(replicas).steps(steps.clone());
            if analysis { builder.analysis() } else { builder }
        };
        let mut whole = Sim::canary_of(builder());
        let mut cut = Sim::canary_of(builder());
        let (mut whole_clock, mut cut_clock) = (0i64, 0i64);
        for (n, event) in events.iter().enumerate() {
            let wait = stage_event(&mut whole, n, event, &mut whole_clock);
            stage_event(&mut cut, n, event, &mut cut_clock);
            whole.tick(wait);
            whole.settle();

            cut.now = cut.now.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(wait)).unwrap();
            let decision = decide(&cut.release, &cut.observed, cut.now);
            let keep = cuts[n].index(decision.actions.len() + 1);
            cut.apply_prefix(&decision, keep);
            // The run was made by the stopped controller; the restarted one reads its result
            // from the status and does not run it again.
            cut.observed.analysis = None;
            cut.settle();

            prop_assert_eq!(&cut.observed, &whole.observed, "world after event {} cut at {}", n, keep);
            nothing_left_behind(&cut)?;
            // `status.replicas` counts ready pods as of the last write (`rollout::scale`): a run
            // cut short writes at other moments, so only the rest must agree.
            let without_count = |sim: &Sim| ReleaseStatus { replicas: None, ..sim.status().clone() };
            prop_assert_eq!(without_count(&cut), without_count(&whole), "status after event {} cut at {}", n, keep);
        }
        let amounts = |sim: &Sim| sim.traffic.iter().map(|(_, amount)| *amount).collect::<Vec<_>>();
        prop_assert_eq!(amounts(&cut), amounts(&whole), "traffic changes: {:?} against {:?}", cut.traffic, whole.traffic);
    }
}
