//! The `waymark.dev/route` finalizer: whether a Release needs it now, and what deleting a Release
//! that holds it needs done, as plain data the controller carries out.
//!
//! Why a finalizer: the HTTPRoute is the user's and outlives the Release, but the Services it
//! names go with the Release (owner references, garbage collector). A route left at
//! `<name>-stable: 80, <name>-canary: 20` sends a fifth of its requests to a Service that no
//! longer exists. So while the route carries canary weight, the finalizer holds a deleted Release
//! until the route is given back to the stable.
//!
//! When: added before the first write that gives the canary weight (after the status, which
//! records the intent, and before any action), and removed once the route carries no canary
//! weight and the decision gives it none. A settled Release carries no finalizer, so deleting
//! one (or one in replica-split mode, which has no route) is never delayed, and an uninstalled
//! controller never wedges it.

use super::{Action, Audience, EventNote, NoteKind, RouteState, Severity};
use crate::api::{ROUTE_FINALIZER, Release, Role};

/// How a Release's finalizers change around one reconcile's actions.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinalizerChange {
    /// Add [`ROUTE_FINALIZER`] before the first action: the route carries canary weight, or an
    /// action is about to give it some.
    Add,
    /// Remove [`ROUTE_FINALIZER`] after the last action: the route carries no canary weight and
    /// the decision gives it none.
    Remove,
}

/// One step of deleting a Release that holds [`ROUTE_FINALIZER`], in order.
#[derive(Clone, Debug, PartialEq)]
pub enum DeletionStep {
    /// Write the route back as its owner wrote it
    /// ([`crate::traffic::cohort::restore_all`]): no backendRef, cohort rule or mirror of
    /// Waymark's, all of the
    /// Release's traffic on the stable backendRef. Then publish `done`. If the route turns out
    /// to be gone, publish [`route_gone`] instead and go on.
    RestoreRoute {
        /// The Event saying what was done.
        done: EventNote,
    },
    /// Publish an Event on the Release.
    Event(EventNote),
    /// Remove [`ROUTE_FINALIZER`]. The API server then deletes the Release, or goes on with the
    /// garbage collector's finalizers (`orphan`, `foregroundDeletion`).
    RemoveFinalizer,
}

/// Reason of the Event after the route was given back.
pub const REASON_ROUTE_RESTORED: &str = "RouteRestored";
/// Reason of the Event when the finalizer goes without the route being touched.
pub const REASON_ROUTE_LEFT: &str = "RouteLeftAsIs";

/// Whether `release` holds [`ROUTE_FINALIZER`].
pub fn holds_route_finalizer(release: &Release) -> bool {
    release
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|finalizer| finalizer == ROUTE_FINALIZER)
}

/// Whether `release` is being deleted (the API server set `deletionTimestamp`).
pub fn is_deleting(release: &Release) -> bool {
    release.metadata.deletion_timestamp.is_some()
}

/// How the finalizers of a Release that is not being deleted change around `actions` (the
/// decision's), given its `route` as observed (`None`: replica-split mode) and whether the route
/// carries a cohort rule or mirror of the Release (`carries_additions`): those send requests to
/// the canary's Service as weight does, so they hold the finalizer too.
///
/// A route that cannot be read (missing, or without the stable backendRef) says nothing about
/// its canary weight: the finalizer stays as it is (a deletion then lets it go, see
/// [`deletion_steps`]).
pub fn finalizer_change(
    release: &Release,
    route: Option<&RouteState>,
    carries_additions: bool,
    actions: &[Action],
) -> Option<FinalizerChange> {
    if is_deleting(release) {
        // The API server refuses new finalizers now, and deletion has its own steps.
        return None;
    }
    let gives_weight = actions.iter().any(|action| match action {
        Action::SetWeight { canary_weight } => *canary_weight > 0,
        Action::SetRouteAdditions { additions } => !additions.is_empty(),
        _ => false,
    });
    let carries_weight = match route {
        Some(RouteState::Ready { canary_weight }) => Some(*canary_weight > 0 || carries_additions),
        Some(RouteState::Unusable { .. }) => None,
        None => Some(false),
    };
    match (
        holds_route_finalizer(release),
        gives_weight || carries_weight == Some(true),
    ) {
        (false, true) => Some(FinalizerChange::Add),
        (true, false) if carries_weight == Some(false) => Some(FinalizerChange::Remove),
        _ => None,
    }
}

/// What deleting `release` needs done, given its `route` as observed (`None`: replica-split
/// mode). Nothing unless it is being deleted and holds [`ROUTE_FINALIZER`]: a Release without
/// it is not delayed at all.
///
/// A route that cannot be used (deleted, or without the stable backendRef) never blocks the
/// deletion: the finalizer goes, with a Warning Event saying why the route was left as it is.
pub fn deletion_steps(release: &Release, route: Option<&RouteState>) -> Vec<DeletionStep> {
    if !is_deleting(release) || !holds_route_finalizer(release) {
        return Vec::new();
    }
    let tag = release.spec.roadmap.tagged();
    let namespace = release.metadata.namespace.as_deref().unwrap_or_default();
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let (stable, canary) = (Role::Stable.child_name(name), Role::Canary.child_name(name));
    let route_name = release
        .spec
        .traffic
        .route()
        .map(|(kind, route)| format!("{} {namespace}/{route}", kind.kind()));
    match (route, route_name) {
        (Some(RouteState::Ready { canary_weight }), Some(route_name)) => {
            let what = if *canary_weight > 0 {
                format!(
                    "Release deleted with {canary_weight}% on the canary: {route_name} sends all \
                     of it to Service {stable} again"
                )
            } else {
                format!(
                    "Release deleted: {route_name} keeps all of its traffic on Service {stable}"
                )
            };
            vec![
                DeletionStep::RestoreRoute {
                    done: EventNote {
                        severity: Severity::Normal,
                        reason: REASON_ROUTE_RESTORED.into(),
                        note: format!(
                            "{tag}: {what}, without Waymark's backendRef to {canary} nor its \
                             cohort rules and mirrors; finalizer {ROUTE_FINALIZER} removed"
                        ),
                        audience: Audience::EventAndLog,
                        kind: NoteKind::StateChange,
                    },
                },
                DeletionStep::RemoveFinalizer,
            ]
        }
        (Some(RouteState::Unusable { message }), _) => vec![
            DeletionStep::Event(route_gone(release, message)),
            DeletionStep::RemoveFinalizer,
        ],
        // Replica split now (the spec changed since the route was used): no route to give back.
        _ => vec![
            DeletionStep::Event(EventNote {
                severity: Severity::Normal,
                reason: REASON_ROUTE_LEFT.into(),
                note: format!(
                    "{tag}: Release deleted: spec.traffic names no route; finalizer \
                     {ROUTE_FINALIZER} removed"
                ),
                audience: Audience::EventAndLog,
                kind: NoteKind::StateChange,
            }),
            DeletionStep::RemoveFinalizer,
        ],
    }
}

/// The Warning Event for a deleted Release whose route cannot be given back (`why`: the route
/// missing, its API not served, no backendRef to the stable): the finalizer goes anyway.
pub fn route_gone(release: &Release, why: &str) -> EventNote {
    EventNote {
        severity: Severity::Warning,
        reason: REASON_ROUTE_LEFT.into(),
        note: format!(
            "{}: Release deleted while its route cannot be used ({why}); the route is left as it \
             is and finalizer {ROUTE_FINALIZER} removed, so that the deletion does not wait for it",
            release.spec.roadmap.tagged()
        ),
        audience: Audience::EventAndLog,
        kind: NoteKind::StateChange,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{ReleaseBuilder, at};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn release(finalizers: &[&str], deleting: bool, gateway: bool) -> Release {
        let mut release = if gateway {
            ReleaseBuilder::gateway().build()
        } else {
            ReleaseBuilder::replica_split().build()
        };
        release.metadata.finalizers =
            (!finalizers.is_empty()).then(|| finalizers.iter().map(|f| f.to_string()).collect());
        release.metadata.deletion_timestamp = deleting.then(|| Time(at(0)));
        release
    }

    fn ready(canary_weight: i32) -> Option<RouteState> {
        Some(RouteState::Ready { canary_weight })
    }

    fn unusable() -> Option<RouteState> {
        Some(RouteState::Unusable {
            message: "HTTPRoute shop/checkout (spec.traffic.gatewayAPI.httpRoute) not found".into(),
        })
    }

    const OURS: &[&str] = &[ROUTE_FINALIZER];
    const NONE: &[&str] = &[];

    /// One row: a Release not being deleted with `finalizers` and `route`, a decision with
    /// `actions`, and the change expected.
    struct GuardCase {
        case: &'static str,
        finalizers: &'static [&'static str],
        route: Option<RouteState>,
        actions: Vec<Action>,
        expected: Option<FinalizerChange>,
    }

    fn guard(
        case: &'static str,
        finalizers: &'static [&'static str],
        route: Option<RouteState>,
        actions: Vec<Action>,
        expected: Option<FinalizerChange>,
    ) -> GuardCase {
        GuardCase {
            case,
            finalizers,
            route,
            actions,
            expected,
        }
    }

    #[test]
    fn the_finalizer_guards_exactly_while_the_route_carries_or_is_given_canary_weight() {
        use FinalizerChange::{Add, Remove};
        let weight = |canary_weight| vec![Action::SetWeight { canary_weight }];
        #[rustfmt::skip]
        let cases = [
            guard("a settled Release has none and gets none", NONE, ready(0), vec![], None),
            guard("the first step: added before the weight is written", NONE, ready(0), weight(20), Some(Add)),
            guard("a canary found mid-way (an upgrade, a hand edit)", NONE, ready(20), vec![], Some(Add)),
            guard("held while the canary has traffic", OURS, ready(20), weight(50), None),
            guard("held while the weight goes back to 0 (rollback, promotion)", OURS, ready(20), weight(0), None),
            guard("removed once the route carries none", OURS, ready(0), vec![], Some(Remove)),
            guard("a weight of 0 to write is no reason to add it", NONE, ready(0), weight(0), None),
            guard("an unreadable route keeps what is there", OURS, unusable(), vec![], None),
            guard("an unreadable route adds nothing", NONE, unusable(), vec![], None),
            guard("replica split has no route: removed", OURS, None, vec![], Some(Remove)),
            guard("replica split never adds it", NONE, None, vec![], None),
            guard("others' finalizers do not count", &["example.com/backup"], ready(20), vec![], Some(Add)),
        ];
        for GuardCase {
            case,
            finalizers,
            route,
            actions,
            expected,
        } in cases
        {
            let release = release(finalizers, false, route.is_some());
            assert_eq!(
                finalizer_change(&release, route.as_ref(), false, &actions),
                expected,
                "{case}"
            );
        }
    }
    #[test]
    fn the_finalizer_also_guards_while_the_route_carries_or_is_given_a_cohort_or_mirror() {
        use FinalizerChange::{Add, Remove};
        let cohort = crate::api::RouteAdditions::after_steps(&[crate::fixtures::header_route(
            "beta", "x-canary", "true",
        )]);
        let set = |additions: &crate::api::RouteAdditions| {
            vec![Action::SetRouteAdditions {
                additions: additions.clone(),
            }]
        };
        let none = crate::api::RouteAdditions::default();
        // (case, finalizers, route carries additions, actions, expected)
        let cases = [
            (
                "a cohort at weight 0: added before it is written",
                NONE,
                false,
                set(&cohort),
                Some(Add),
            ),
            (
                "a cohort found on the route at weight 0",
                NONE,
                true,
                vec![],
                Some(Add),
            ),
            (
                "held while the cohort is being taken away",
                OURS,
                true,
                set(&none),
                None,
            ),
            (
                "removed once the route carries none",
                OURS,
                false,
                set(&none),
                Some(Remove),
            ),
            (
                "taking away is no reason to add it",
                NONE,
                false,
                set(&none),
                None,
            ),
        ];
        for (case, finalizers, carries, actions, expected) in cases {
            let release = release(finalizers, false, true);
            assert_eq!(
                finalizer_change(&release, ready(0).as_ref(), carries, &actions),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn nothing_is_added_or_removed_by_the_rollout_while_the_release_is_deleted() {
        for finalizers in [OURS, NONE] {
            let release = release(finalizers, true, true);
            let actions = [Action::SetWeight { canary_weight: 20 }];
            assert_eq!(
                finalizer_change(&release, ready(0).as_ref(), false, &actions),
                None
            );
            assert_eq!(
                finalizer_change(&release, ready(20).as_ref(), false, &[]),
                None
            );
        }
    }

    fn kinds(steps: &[DeletionStep]) -> Vec<String> {
        steps
            .iter()
            .map(|step| match step {
                DeletionStep::RestoreRoute { .. } => "RestoreRoute".to_string(),
                DeletionStep::Event(note) => format!("Event {}", note.reason),
                DeletionStep::RemoveFinalizer => "RemoveFinalizer".to_string(),
            })
            .collect()
    }

    /// One row: a Release with `finalizers`, deleted or not, in Gateway API mode or not, its
    /// `route`, and the steps expected.
    struct DeletionCase {
        case: &'static str,
        finalizers: &'static [&'static str],
        deleting: bool,
        route: Option<RouteState>,
        expected: &'static [&'static str],
    }

    fn deletion(
        case: &'static str,
        finalizers: &'static [&'static str],
        deleting: bool,
        route: Option<RouteState>,
        expected: &'static [&'static str],
    ) -> DeletionCase {
        DeletionCase {
            case,
            finalizers,
            deleting,
            route,
            expected,
        }
    }

    #[test]
    fn deletion_gives_the_route_back_before_the_finalizer_goes_and_never_waits_on_a_broken_route() {
        const BACK: &[&str] = &["RestoreRoute", "RemoveFinalizer"];
        const LET_GO: &[&str] = &["Event RouteLeftAsIs", "RemoveFinalizer"];
        const CASCADES: &[&str] = &["orphan", ROUTE_FINALIZER, "foregroundDeletion"];
        #[rustfmt::skip]
        let cases = [
            deletion("deleted at 20%", OURS, true, ready(20), BACK),
            deletion("deleted with the weight back at 0 already", OURS, true, ready(0), BACK),
            deletion("orphan and foreground cascades alike", CASCADES, true, ready(20), BACK),
            deletion("the route deleted first: no wait", OURS, true, unusable(), LET_GO),
            deletion("replica split by now: no route to give back", OURS, true, None, LET_GO),
            deletion("a settled Release is not delayed at all", NONE, true, ready(0), &[]),
            deletion("nor one held by others' finalizers only", &["orphan"], true, ready(20), &[]),
            deletion("not deleted: nothing", OURS, false, ready(20), &[]),
        ];
        for DeletionCase {
            case,
            finalizers,
            deleting,
            route,
            expected,
        } in cases
        {
            let release = release(finalizers, deleting, route.is_some());
            assert_eq!(
                kinds(&deletion_steps(&release, route.as_ref())),
                expected,
                "{case}"
            );
        }
    }

    #[test]
    fn the_deletion_events_name_the_item_the_route_the_services_and_the_finalizer() {
        let release = release(OURS, true, true);
        let steps = deletion_steps(&release, ready(20).as_ref());
        let DeletionStep::RestoreRoute { done } = &steps[0] else {
            panic!("{steps:?}");
        };
        assert_eq!(done.severity, Severity::Normal);
        assert_eq!(
            done.note,
            "PAY-142: Release deleted with 20% on the canary: HTTPRoute shop/checkout sends all \
             of it to Service checkout-stable again, without Waymark's backendRef to \
             checkout-canary nor its cohort rules and mirrors; finalizer waymark.dev/route removed"
        );

        // A GRPCRoute is given back the same way, and named as what it is.
        let mut grpc = release.clone();
        grpc.spec.traffic.gateway_api = Some(crate::api::GatewayApiTraffic::grpc("checkout"));
        let steps = deletion_steps(&grpc, ready(20).as_ref());
        let DeletionStep::RestoreRoute { done } = &steps[0] else {
            panic!("{steps:?}");
        };
        assert!(
            done.note
                .contains("GRPCRoute shop/checkout sends all of it to Service checkout-stable"),
            "{}",
            done.note
        );

        let steps = deletion_steps(&release, unusable().as_ref());
        let DeletionStep::Event(left) = &steps[0] else {
            panic!("{steps:?}");
        };
        assert_eq!(left.severity, Severity::Warning);
        assert!(
            left.note
                .starts_with("PAY-142: Release deleted while its route cannot be used"),
            "{}",
            left.note
        );
        assert!(left.note.contains("not found"), "says why: {}", left.note);
        assert!(left.note.contains(ROUTE_FINALIZER), "{}", left.note);
    }
}
