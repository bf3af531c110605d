//! `spec.workloadRef`: an existing Deployment as the source of a Release's pod template, and how
//! it makes way for `<name>-stable`. Pure: the shell reads the referenced Deployment (and the
//! other Releases naming it) into [`WorkloadLookup`]; these rules say what its template is and
//! what its `spec.replicas` should be.
//!
//! The policy is a function of the observed world, not of what Waymark wrote last: when GitOps
//! re-applies `replicas` the next decision sets it back at once, so the pods of both never run
//! at full size for longer than one reconcile.

use k8s_openapi::api::core::v1::PodTemplateSpec;

use super::deletion::FinalizerChange;
use super::validate::{SpecError, selector_matches};
use super::{Action, Decision, Observed};
use crate::api::{Release, ScaleDown, WORKLOAD_FINALIZER, WorkloadStatus};

/// The field every problem with the reference is reported against.
pub const FIELD: &str = "spec.workloadRef";

/// What the shell found of the Deployment `spec.workloadRef` names.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum WorkloadLookup {
    /// The Release has no `workloadRef` (or the shell has not looked).
    #[default]
    NotReferenced,
    /// No Deployment of that name in the Release's namespace (yet).
    Missing,
    /// The Deployment as read.
    Found(Box<ReferencedDeployment>),
}

/// The Deployment `spec.workloadRef` names, as observed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ReferencedDeployment {
    /// Its `spec.template`: the Release's template.
    pub template: PodTemplateSpec,
    /// Its `spec.replicas` (1 when unset, as Kubernetes defaults it).
    pub replicas: i32,
    /// Its `status.availableReplicas`.
    pub available_replicas: i32,
    /// Other Releases of the namespace whose `spec.workloadRef` names the same Deployment.
    pub other_referrers: Vec<OtherReferrer>,
}

/// Another Release naming the same Deployment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct OtherReferrer {
    /// Its name.
    pub name: String,
    /// Whether its status records the Deployment as taken over (`status.workload`).
    pub claimed: bool,
}

/// The Release as the core acts on it: with `workloadRef`, its template is the referenced
/// Deployment's. `Ok(None)` when the Release has no `workloadRef` (its own template stands).
///
/// Refused, naming the field and the Deployment, when the Deployment does not exist, another
/// Release already holds it, or its pod labels do not match `spec.selector`: nothing is scaled
/// and the next look (the Deployment appearing or changing, the Release edited) picks it up.
pub fn resolve(release: &Release, lookup: &WorkloadLookup) -> Result<Option<Release>, SpecError> {
    let Some(reference) = &release.spec.workload_ref else {
        return Ok(None);
    };
    let namespace = release.metadata.namespace.as_deref().unwrap_or_default();
    let object = format!("Deployment {namespace}/{}", reference.name);
    let deployment = match lookup {
        WorkloadLookup::Found(deployment) => deployment,
        WorkloadLookup::Missing | WorkloadLookup::NotReferenced => {
            return Err(problem(format!(
                "{object} does not exist: create it, or correct {FIELD}.name; \
                 nothing is scaled until it exists"
            )));
        }
    };
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let claimed_here = release
        .status
        .as_ref()
        .and_then(|status| status.workload.as_ref())
        .is_some_and(|workload| workload.name == reference.name);
    if !claimed_here && let Some(holder) = holder(name, &deployment.other_referrers) {
        return Err(problem(format!(
            "{object} is already referenced by Release {namespace}/{holder}: a Deployment can \
             feed one Release; remove {FIELD} from one of them"
        )));
    }
    let labels = deployment
        .template
        .metadata
        .as_ref()
        .and_then(|meta| meta.labels.clone())
        .unwrap_or_default();
    if !selector_matches(&release.spec.selector, &labels) {
        return Err(problem(format!(
            "the pod labels of {object} ({}) do not match spec.selector: make spec.selector \
             select its pods, or reference another Deployment",
            labels
                .iter()
                .map(|(key, value)| format!("{key}={value}"))
                .collect::<Vec<_>>()
                .join(",")
        )));
    }
    let mut resolved = release.clone();
    resolved.spec.template = deployment.template.clone();
    Ok(Some(resolved))
}

/// Which other Release holds the Deployment against this one: one that has taken it over, or
/// else (none has yet) the first by name, so that two Releases created together agree.
fn holder<'a>(name: &str, others: &'a [OtherReferrer]) -> Option<&'a str> {
    others
        .iter()
        .find(|other| other.claimed)
        .or_else(|| {
            others
                .iter()
                .filter(|other| other.name.as_str() < name)
                .min_by(|a, b| a.name.cmp(&b.name))
        })
        .map(|other| other.name.as_str())
}

fn problem(message: String) -> SpecError {
    SpecError {
        field: FIELD.into(),
        message,
    }
}

/// The `spec.replicas` the referenced Deployment should have, or `None` to leave it as it is.
///
/// - `progressively`: the original replicas less the pods the stable has available (never
///   below 0), so that the two together always serve at least the original number;
/// - `onSuccess`: 0 once the stable is fully available, else the original replicas;
/// - `never`: left as it is.
///
/// Computed from what is observed, so a re-applied `replicas` is set back in one decision.
pub fn desired_replicas(
    policy: ScaleDown,
    original_replicas: i32,
    stable_available: i32,
    stable_fully_available: bool,
    current_replicas: i32,
) -> Option<i32> {
    let desired = match policy {
        ScaleDown::Progressively => (original_replicas - stable_available.max(0)).max(0),
        ScaleDown::OnSuccess if stable_fully_available => 0,
        ScaleDown::OnSuccess => original_replicas,
        ScaleDown::Never => return None,
    };
    (desired != current_replicas).then_some(desired)
}

/// The takeover as the status records it: the original replicas are read once, at the first
/// sight of the Deployment, and kept (a Deployment already scaled by Waymark must not become
/// its own original).
pub fn recorded(
    previous: Option<&WorkloadStatus>,
    name: &str,
    deployment: &ReferencedDeployment,
) -> WorkloadStatus {
    match previous {
        Some(previous) if previous.name == name => previous.clone(),
        _ => WorkloadStatus {
            name: name.to_string(),
            original_replicas: deployment.replicas,
            scaled_down_to: None,
        },
    }
}

/// Whether `release` holds [`WORKLOAD_FINALIZER`].
pub fn holds_finalizer(release: &Release) -> bool {
    release
        .metadata
        .finalizers
        .iter()
        .flatten()
        .any(|finalizer| finalizer == WORKLOAD_FINALIZER)
}

/// How [`WORKLOAD_FINALIZER`] changes around a decision whose status is `status`: added before
/// the first action once a takeover is recorded (before any scale-down), removed after the
/// last once the record is gone (the Deployment was given back). Never while deleting.
pub fn finalizer_change(
    release: &Release,
    status: &crate::api::ReleaseStatus,
) -> Option<FinalizerChange> {
    if release.metadata.deletion_timestamp.is_some() {
        return None;
    }
    match (holds_finalizer(release), status.workload.is_some()) {
        (false, true) => Some(FinalizerChange::Add),
        (true, false) => Some(FinalizerChange::Remove),
        _ => None,
    }
}

/// What giving the referenced Deployment back needs next (the Release deleted, or its
/// `workloadRef` removed).
#[derive(Clone, Debug, PartialEq)]
pub enum GiveBack {
    /// Set its `spec.replicas` back to the recorded original.
    Scale {
        /// The Deployment.
        name: String,
        /// Its original replicas.
        replicas: i32,
    },
    /// Scaled back; its pods are not all available yet: look again soon, keep everything else.
    Wait,
    /// Given back (or nothing to give back): the finalizer may go, the children with it.
    Done,
}

/// The next step of giving the Deployment back, from its record in the status and the
/// Deployment as observed. A Deployment that is gone has nothing to give back.
pub fn give_back(release: &Release, lookup: &WorkloadLookup) -> GiveBack {
    let Some(record) = release
        .status
        .as_ref()
        .and_then(|status| status.workload.as_ref())
    else {
        return GiveBack::Done;
    };
    let WorkloadLookup::Found(deployment) = lookup else {
        return GiveBack::Done;
    };
    if deployment.replicas < record.original_replicas {
        return GiveBack::Scale {
            name: record.name.clone(),
            replicas: record.original_replicas,
        };
    }
    if deployment.available_replicas < record.original_replicas {
        return GiveBack::Wait;
    }
    GiveBack::Done
}

/// Record the takeover in the status and scale the referenced Deployment as its policy says,
/// after the decision's own actions (the stable is created or scaled first).
pub fn make_way(release: &Release, observed: &Observed, decision: &mut Decision) {
    if release.spec.workload_ref.is_none() && decision.status.workload.is_some() {
        // The reference was removed: give the Deployment back, then forget it.
        match give_back(release, &observed.workload) {
            GiveBack::Scale { name, replicas } => {
                decision
                    .actions
                    .push(Action::ScaleReferenced { name, replicas });
            }
            GiveBack::Wait => {}
            GiveBack::Done => decision.status.workload = None,
        }
        return;
    }
    if let (Some(reference), Some(held)) = (
        &release.spec.workload_ref,
        decision.status.workload.as_ref(),
    ) && held.name != reference.name
    {
        // The reference now names another Deployment: the held one serves again (its original
        // replicas, all available) before the new one is touched; until then `status.workload`
        // still names the held one.
        match give_back(release, &observed.held_workload) {
            GiveBack::Scale { name, replicas } => {
                decision
                    .actions
                    .push(Action::ScaleReferenced { name, replicas });
                return;
            }
            GiveBack::Wait => return,
            GiveBack::Done => decision.status.workload = None,
        }
    }
    let (Some(reference), WorkloadLookup::Found(deployment)) =
        (&release.spec.workload_ref, &observed.workload)
    else {
        return;
    };
    let mut record = recorded(
        decision.status.workload.as_ref(),
        &reference.name,
        deployment,
    );
    let (stable_available, stable_fully_available) =
        observed.stable.as_ref().map_or((0, false), |stable| {
            (
                stable.available_replicas,
                stable.available && stable.replicas >= release.spec.replicas,
            )
        });
    if let Some(replicas) = desired_replicas(
        reference.scale_down,
        record.original_replicas,
        stable_available,
        stable_fully_available,
        deployment.replicas,
    ) {
        decision.actions.push(Action::ScaleReferenced {
            name: reference.name.clone(),
            replicas,
        });
        record.scaled_down_to = Some(replicas);
    }
    decision.status.workload = Some(record);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::WorkloadRef;
    use crate::fixtures::{ReleaseBuilder, V1, V2, template};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
    use std::collections::BTreeMap;

    #[test]
    fn the_policy_table() {
        use ScaleDown::*;
        // (policy, original, stable available, stable fully available, current) -> desired
        let table = [
            (Progressively, 4, 0, false, 4, None),
            (Progressively, 4, 1, false, 4, Some(3)),
            (Progressively, 4, 3, false, 3, Some(1)),
            (Progressively, 4, 4, true, 1, Some(0)),
            (Progressively, 4, 4, true, 0, None),
            (Progressively, 4, 6, true, 0, None),
            // GitOps re-applied replicas: set back at once.
            (Progressively, 4, 4, true, 4, Some(0)),
            // The stable lost pods: the Deployment serves them again.
            (Progressively, 4, 2, false, 0, Some(2)),
            (OnSuccess, 4, 3, false, 4, None),
            (OnSuccess, 4, 4, true, 4, Some(0)),
            (OnSuccess, 4, 4, true, 0, None),
            (OnSuccess, 4, 2, false, 0, Some(4)),
            (Never, 4, 4, true, 4, None),
            (Never, 4, 4, true, 7, None),
        ];
        for (policy, original, available, fully, current, want) in table {
            assert_eq!(
                desired_replicas(policy, original, available, fully, current),
                want,
                "{policy:?} original {original} stable {available} fully {fully} current {current}"
            );
        }
    }

    #[test]
    fn progressively_never_serves_fewer_than_the_original_pods() {
        for original in 0..8 {
            for available in 0..10 {
                let desired =
                    desired_replicas(ScaleDown::Progressively, original, available, false, -1)
                        .unwrap_or(-1);
                assert!(desired >= 0);
                assert!(desired + available >= original, "{original} {available}");
            }
        }
    }

    fn labelled(image: &str, app: &str) -> PodTemplateSpec {
        let mut template = template(image);
        template.metadata = Some(ObjectMeta {
            labels: Some(BTreeMap::from([("app".to_string(), app.to_string())])),
            ..Default::default()
        });
        template
    }

    fn referencing(name: &str) -> Release {
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.template = PodTemplateSpec::default();
        release.spec.workload_ref = Some(WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: name.into(),
            scale_down: ScaleDown::Progressively,
        });
        release
    }

    fn found(image: &str, app: &str, others: &[(&str, bool)]) -> WorkloadLookup {
        WorkloadLookup::Found(Box::new(ReferencedDeployment {
            template: labelled(image, app),
            replicas: 4,
            available_replicas: 4,
            other_referrers: others
                .iter()
                .map(|(name, claimed)| OtherReferrer {
                    name: name.to_string(),
                    claimed: *claimed,
                })
                .collect(),
        }))
    }

    #[test]
    fn the_template_is_the_referenced_deployments() {
        let release = referencing("checkout");
        let resolved = resolve(&release, &found(V2, "checkout", &[]))
            .unwrap()
            .unwrap();
        assert_eq!(resolved.spec.template, labelled(V2, "checkout"));
        let plain = ReleaseBuilder::gateway().build();
        assert_eq!(resolve(&plain, &WorkloadLookup::NotReferenced), Ok(None));
        let edited = resolve(&release, &found(V1, "checkout", &[]))
            .unwrap()
            .unwrap();
        assert_ne!(
            crate::api::template_revision(&edited.spec.template),
            crate::api::template_revision(&resolved.spec.template),
            "an edit of the referenced template is a new revision"
        );
    }

    #[test]
    fn bad_references_name_the_field_and_the_deployment() {
        let release = referencing("checkout");
        let cases = [
            ("missing", WorkloadLookup::Missing, "does not exist"),
            (
                "held by another that claimed it",
                found(V1, "checkout", &[("zz-other", true)]),
                "already referenced by Release shop/zz-other",
            ),
            (
                "named first by another, none claimed",
                found(V1, "checkout", &[("aa-other", false)]),
                "already referenced by Release shop/aa-other",
            ),
            (
                "labels not selected",
                found(V1, "payments", &[]),
                "do not match spec.selector",
            ),
        ];
        for (what, lookup, words) in cases {
            let error = resolve(&release, &lookup).expect_err(what);
            assert_eq!(error.field, FIELD, "{what}");
            assert!(
                error.message.contains("Deployment shop/checkout") && error.message.contains(words),
                "{what}: {}",
                error.message
            );
        }
        // Named later by another that has not claimed it: this one keeps it.
        assert!(resolve(&release, &found(V1, "checkout", &[("zz-other", false)])).is_ok());
        // Claimed here already: another naming it does not take it away.
        let mut holding = release.clone();
        holding.status = Some(crate::api::ReleaseStatus {
            workload: Some(WorkloadStatus {
                name: "checkout".into(),
                original_replicas: 4,
                scaled_down_to: Some(0),
            }),
            ..Default::default()
        });
        assert!(resolve(&holding, &found(V1, "checkout", &[("aa-other", false)])).is_ok());
    }

    #[test]
    fn the_original_replicas_are_recorded_once() {
        let WorkloadLookup::Found(mut deployment) = found(V1, "checkout", &[]) else {
            unreachable!()
        };
        let first = recorded(None, "checkout", &deployment);
        assert_eq!(first.original_replicas, 4);
        deployment.replicas = 0;
        assert_eq!(recorded(Some(&first), "checkout", &deployment), first);
        assert_eq!(
            recorded(Some(&first), "other", &deployment).original_replicas,
            0
        );
    }
}

#[cfg(test)]
mod decide_tests {
    use super::*;
    use crate::api::WorkloadRef;
    use crate::rollout::decide;
    use crate::rollout::fixtures::{ReleaseBuilder, V1, V2, at, observed, template, workload};

    fn release(policy: ScaleDown) -> Release {
        let mut release = ReleaseBuilder::replica_split().build();
        release.spec.template = PodTemplateSpec::default();
        release.spec.workload_ref = Some(WorkloadRef {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "checkout".into(),
            scale_down: policy,
        });
        release
    }

    fn referenced(image: &str, replicas: i32) -> WorkloadLookup {
        // The fixture template carries the labels the fixture selector selects.
        WorkloadLookup::Found(Box::new(ReferencedDeployment {
            template: template(image),
            replicas,
            available_replicas: replicas,
            other_referrers: Vec::new(),
        }))
    }

    fn scaled(decision: &Decision) -> Option<i32> {
        decision.actions.iter().find_map(|action| match action {
            Action::ScaleReferenced { replicas, .. } => Some(*replicas),
            _ => None,
        })
    }

    #[test]
    fn progressively_hands_over_pod_by_pod_and_sets_back_a_reapplied_count() {
        let mut release = release(ScaleDown::Progressively);
        let mut world = observed().build();
        world.workload = referenced(V1, 4);
        let first = decide(&release, &world, at(0));
        assert!(
            first.actions.iter().any(|action| matches!(action,
                Action::ApplyStable { revision, .. } if *revision == crate::api::template_revision(&template(V1)))),
            "the stable runs the referenced template: {:?}",
            first.actions
        );
        assert_eq!(
            scaled(&first),
            None,
            "nothing is scaled before the stable serves"
        );
        assert_eq!(
            first.status.workload.as_ref().map(|w| w.original_replicas),
            Some(4)
        );
        release.status = Some(first.status);

        // Two stable pods available: the Deployment gives up two.
        let mut stable = workload(V1, 4, false);
        stable.available_replicas = 2;
        world.stable = Some(stable);
        let half = decide(&release, &world, at(10));
        assert_eq!(scaled(&half), Some(2));
        release.status = Some(half.status);

        world.stable = Some(workload(V1, 4, true));
        world.workload = referenced(V1, 2);
        let done = decide(&release, &world, at(20));
        assert_eq!(scaled(&done), Some(0));
        assert_eq!(
            done.status.workload.as_ref().and_then(|w| w.scaled_down_to),
            Some(0)
        );
        assert_eq!(
            done.status.workload.as_ref().map(|w| w.original_replicas),
            Some(4)
        );
        release.status = Some(done.status);

        // GitOps re-applies replicas: 4; the very next decision sets it back.
        world.workload = referenced(V1, 4);
        assert_eq!(scaled(&decide(&release, &world, at(30))), Some(0));

        // An edit of the referenced template starts a canary.
        world.workload = referenced(V2, 0);
        let edited = decide(&release, &world, at(40));
        assert_eq!(
            edited.status.canary_revision,
            Some(crate::api::template_revision(&template(V2)))
        );
    }

    #[test]
    fn on_success_waits_for_the_whole_stable_and_never_leaves_it() {
        let mut world = observed().build();
        world.workload = referenced(V1, 4);
        let mut stable = workload(V1, 4, false);
        stable.available_replicas = 3;
        world.stable = Some(stable);
        assert_eq!(
            scaled(&decide(&release(ScaleDown::OnSuccess), &world, at(0))),
            None
        );
        world.stable = Some(workload(V1, 4, true));
        assert_eq!(
            scaled(&decide(&release(ScaleDown::OnSuccess), &world, at(0))),
            Some(0)
        );
        assert_eq!(
            scaled(&decide(&release(ScaleDown::Never), &world, at(0))),
            None
        );
    }

    fn with_availability(image: &str, replicas: i32, available_replicas: i32) -> WorkloadLookup {
        WorkloadLookup::Found(Box::new(ReferencedDeployment {
            template: template(image),
            replicas,
            available_replicas,
            other_referrers: Vec::new(),
        }))
    }

    /// The Release as the API server has it after a decision: its status, and the finalizer
    /// the shell adds or removes around it.
    fn after(release: &Release, decision: &Decision) -> Release {
        let mut next = release.clone();
        match finalizer_change(release, &decision.status) {
            Some(FinalizerChange::Add) => {
                next.metadata.finalizers = Some(vec![WORKLOAD_FINALIZER.into()]);
            }
            Some(FinalizerChange::Remove) => next.metadata.finalizers = Some(Vec::new()),
            None => {}
        }
        next.status = Some(decision.status.clone());
        next
    }

    #[test]
    fn removing_the_reference_gives_the_deployment_back_before_the_finalizer_goes() {
        let mut release = release(ScaleDown::Progressively);
        let mut world = observed().build();
        world.workload = referenced(V1, 4);
        release = after(&release, &decide(&release, &world, at(0)));
        world.stable = Some(workload(V1, 4, true));
        let taken = decide(&release, &world, at(10));
        assert_eq!(scaled(&taken), Some(0));
        release = after(&release, &taken);
        assert!(holds_finalizer(&release));

        // The user replaces spec.workloadRef with the same template, inline.
        release.spec.workload_ref = None;
        release.spec.template = template(V1);
        world.workload = with_availability(V1, 0, 0);
        let scaling_back = decide(&release, &world, at(20));
        assert_eq!(
            scaled(&scaling_back),
            Some(4),
            "the recorded original replicas are given back"
        );
        assert_eq!(
            scaling_back
                .status
                .workload
                .as_ref()
                .map(|w| w.name.as_str()),
            Some("checkout"),
            "the record stays until the Deployment serves again"
        );
        release = after(&release, &scaling_back);
        assert!(holds_finalizer(&release));

        // Scaled back, not yet available: wait, keep the record and the finalizer.
        for available in [0, 3] {
            world.workload = with_availability(V1, 4, available);
            let waiting = decide(&release, &world, at(30));
            assert_eq!(scaled(&waiting), None, "available {available}");
            assert!(waiting.status.workload.is_some(), "available {available}");
            assert_eq!(finalizer_change(&release, &waiting.status), None);
        }

        // All available: the record goes, and the finalizer with it.
        world.workload = with_availability(V1, 4, 4);
        let given_back = decide(&release, &world, at(40));
        assert_eq!(scaled(&given_back), None);
        assert_eq!(given_back.status.workload, None);
        assert_eq!(
            finalizer_change(&release, &given_back.status),
            Some(FinalizerChange::Remove)
        );
        release = after(&release, &given_back);
        assert!(!holds_finalizer(&release));
        // The Deployment is the user's again: later decisions leave it alone.
        world.workload = with_availability(V1, 7, 7);
        assert_eq!(scaled(&decide(&release, &world, at(50))), None);
    }

    fn scales(decision: &Decision) -> Vec<(String, i32)> {
        decision
            .actions
            .iter()
            .filter_map(|action| match action {
                Action::ScaleReferenced { name, replicas } => Some((name.clone(), *replicas)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_reference_moved_to_another_deployment_gives_the_held_one_back_first() {
        let mut held = release(ScaleDown::Progressively);
        held.metadata.finalizers = Some(vec![WORKLOAD_FINALIZER.into()]);
        held.status = Some(crate::api::ReleaseStatus {
            workload: Some(WorkloadStatus {
                name: "checkout".into(),
                original_replicas: 4,
                scaled_down_to: Some(0),
            }),
            ..Default::default()
        });
        let mut moved = held.clone();
        if let Some(reference) = moved.spec.workload_ref.as_mut() {
            reference.name = "payments".into();
        }
        let mut world = observed().build();
        world.stable = Some(workload(V1, 4, true));
        // The newly referenced Deployment runs 3 of the same pods.
        world.workload = referenced(V1, 3);
        let checkout = |replicas: i32| vec![("checkout".to_string(), replicas)];
        let payments = |replicas: i32| vec![("payments".to_string(), replicas)];
        // (the held Deployment as read, the scaling wanted, who status.workload then holds,
        //  with which original replicas)
        let table = [
            (with_availability(V1, 0, 0), checkout(4), "checkout", 4),
            (with_availability(V1, 2, 2), checkout(4), "checkout", 4),
            (with_availability(V1, 4, 0), vec![], "checkout", 4),
            (with_availability(V1, 4, 3), vec![], "checkout", 4),
            (with_availability(V1, 4, 4), payments(0), "payments", 3),
            (with_availability(V1, 5, 5), payments(0), "payments", 3),
            (WorkloadLookup::Missing, payments(0), "payments", 3),
        ];
        for (held_deployment, want_scales, want_holder, want_original) in table {
            world.held_workload = held_deployment.clone();
            let decision = decide(&moved, &world, at(0));
            assert_eq!(scales(&decision), want_scales, "{held_deployment:?}");
            let record = decision
                .status
                .workload
                .as_ref()
                .expect("a held Deployment");
            assert_eq!(record.name, want_holder, "{held_deployment:?}");
            assert_eq!(
                record.original_replicas, want_original,
                "{held_deployment:?}"
            );
            assert_eq!(
                finalizer_change(&moved, &decision.status),
                None,
                "the finalizer stays across the move"
            );
        }
        // The held reference unchanged: nothing to give back, the takeover goes on.
        world.held_workload = WorkloadLookup::NotReferenced;
        world.workload = referenced(V1, 4);
        let staying = decide(&held, &world, at(0));
        assert_eq!(scales(&staying), checkout(0));
        assert_eq!(
            staying.status.workload.as_ref().map(|w| w.name.as_str()),
            Some("checkout")
        );
    }

    #[test]
    fn a_bad_reference_is_a_condition_and_nothing_is_done() {
        let mut world = observed().stable(V1, 4).build();
        world.workload = WorkloadLookup::Missing;
        let decision = decide(&release(ScaleDown::Progressively), &world, at(0));
        assert!(
            decision
                .actions
                .iter()
                .all(|action| matches!(action, Action::Event(_))),
            "{:?}",
            decision.actions
        );
        let condition = decision
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == crate::rollout::conditions::SPEC_VALID)
            .expect("SpecValid");
        assert_eq!(condition.status, "False");
        assert!(
            condition.message.contains("spec.workloadRef")
                && condition.message.contains("Deployment shop/checkout"),
            "{}",
            condition.message
        );
        // Once it exists, the release goes on.
        world.workload = referenced(V1, 4);
        let fixed = decide(&release(ScaleDown::Progressively), &world, at(10));
        assert!(
            fixed
                .status
                .conditions
                .iter()
                .any(|c| c.type_ == crate::rollout::conditions::SPEC_VALID && c.status == "True")
        );
    }
}

#[cfg(test)]
mod leaving_tests {
    use super::*;
    use crate::api::ReleaseStatus;
    use crate::fixtures::{ReleaseBuilder, V1, template};

    fn taken_over() -> Release {
        let mut release = ReleaseBuilder::replica_split().build();
        release.status = Some(ReleaseStatus {
            workload: Some(WorkloadStatus {
                name: "checkout".into(),
                original_replicas: 4,
                scaled_down_to: Some(0),
            }),
            ..Default::default()
        });
        release
    }

    fn deployment(replicas: i32, available_replicas: i32) -> WorkloadLookup {
        WorkloadLookup::Found(Box::new(ReferencedDeployment {
            template: template(V1),
            replicas,
            available_replicas,
            other_referrers: Vec::new(),
        }))
    }

    #[test]
    fn the_deployment_is_scaled_back_and_waited_for_before_the_finalizer_goes() {
        let release = taken_over();
        let table = [
            (
                deployment(0, 0),
                GiveBack::Scale {
                    name: "checkout".into(),
                    replicas: 4,
                },
            ),
            (
                deployment(2, 2),
                GiveBack::Scale {
                    name: "checkout".into(),
                    replicas: 4,
                },
            ),
            (deployment(4, 1), GiveBack::Wait),
            (deployment(4, 4), GiveBack::Done),
            (deployment(6, 6), GiveBack::Done),
            (WorkloadLookup::Missing, GiveBack::Done),
        ];
        for (lookup, want) in table {
            assert_eq!(give_back(&release, &lookup), want, "{lookup:?}");
        }
        let mut never_taken = taken_over();
        never_taken.status = None;
        assert_eq!(give_back(&never_taken, &deployment(0, 0)), GiveBack::Done);
    }

    #[test]
    fn the_finalizer_comes_with_the_record_and_goes_with_it() {
        let mut release = taken_over();
        let recorded = release.status.clone().unwrap_or_default();
        assert_eq!(
            finalizer_change(&release, &recorded),
            Some(FinalizerChange::Add)
        );
        assert_eq!(finalizer_change(&release, &ReleaseStatus::default()), None);
        release.metadata.finalizers = Some(vec![WORKLOAD_FINALIZER.into()]);
        assert_eq!(finalizer_change(&release, &recorded), None);
        assert_eq!(
            finalizer_change(&release, &ReleaseStatus::default()),
            Some(FinalizerChange::Remove)
        );
    }
}
