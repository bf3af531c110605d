//! What the scale subresource shows (`status.replicas`, `status.selector`), so that
//! `kubectl scale` and a HorizontalPodAutoscaler can drive a Release as they drive a Deployment.
//!
//! The HPA reads `/scale`: it finds the pods by `status.selector`, averages their metrics and
//! writes a new `spec.replicas`. The selector is the one both child Deployments' pods match (the
//! Release's `spec.selector` plus `waymark.dev/release=<name>`), so the HPA sees the stable and
//! the canary pods together, as the traffic sees them; `status.replicas` counts the same pods,
//! ready ones only.
//!
//! `status.replicas` counts the ready pods of the stable, plus the canary's while a canary is in
//! progress. It must not write the status once per pod that starts (the status changes only when
//! the state does), so it is refreshed when the status is written for another reason, and, with
//! no canary in progress, when every child Deployment has rolled out (one write when a scale
//! completes). The HPA itself takes the total from `spec.replicas` and finds the pods by the
//! selector, so a count that lags a rollout by its duration misleads nobody.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;

use super::Observed;
use crate::api::{LABEL_RELEASE, Release, ReleaseStatus};

/// Set `status.replicas` and `status.selector` on the decided `status`; `old` is the status the
/// decision started from.
pub fn stamp_scale_status(
    status: &mut ReleaseStatus,
    old: Option<&ReleaseStatus>,
    release: &Release,
    observed: &Observed,
) {
    let canary_serving = status.canary_revision.is_some();
    let roles = [(&observed.stable, true), (&observed.canary, canary_serving)];
    let ready = roles
        .iter()
        .filter(|(_, counted)| *counted)
        .filter_map(|(workload, _)| workload.as_ref())
        .map(|w| w.available_replicas.max(0))
        .fold(0_i32, i32::saturating_add);
    let rolled_out = roles
        .iter()
        .all(|(workload, _)| workload.as_ref().is_none_or(|w| w.settled && w.available));
    let name = release.metadata.name.as_deref().unwrap_or_default();
    status.selector = Some(selector_string(&release.spec.selector, name));
    let before = old.and_then(|old| old.replicas);
    status.replicas = before;
    let written_anyway = old != Some(&*status);
    if written_anyway || before.is_none() || (!canary_serving && rolled_out) {
        status.replicas = Some(ready);
    }
}

/// The string form of `selector` (as `kubectl get -l` takes it) with `waymark.dev/release=<name>`
/// added: `app=checkout,waymark.dev/release=checkout`. Keys are sorted so the string does not
/// change between reconciles.
pub fn selector_string(selector: &LabelSelector, release: &str) -> String {
    let mut terms: Vec<(String, String)> = selector
        .match_labels
        .iter()
        .flatten()
        .filter(|(key, _)| key.as_str() != LABEL_RELEASE)
        .map(|(key, value)| (key.clone(), format!("{key}={value}")))
        .collect();
    terms.push((
        LABEL_RELEASE.to_string(),
        format!("{LABEL_RELEASE}={release}"),
    ));
    for expression in selector.match_expressions.iter().flatten() {
        let mut values = expression.values.clone().unwrap_or_default();
        values.sort();
        let key = &expression.key;
        let term = match expression.operator.as_str() {
            "In" => format!("{key} in ({})", values.join(",")),
            "NotIn" => format!("{key} notin ({})", values.join(",")),
            "Exists" => key.clone(),
            _ => format!("!{key}"),
        };
        terms.push((key.clone(), term));
    }
    terms.sort();
    terms
        .into_iter()
        .map(|(_, term)| term)
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::WorkloadState;
    use crate::rollout::fixtures::ReleaseBuilder;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    #[test]
    fn the_selector_string_adds_the_release_label_in_key_order() {
        let selector = LabelSelector {
            match_labels: Some([("app".to_string(), "checkout".to_string())].into()),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["web".into(), "api".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary-opt-out".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert_eq!(
            selector_string(&selector, "checkout"),
            "app=checkout,!canary-opt-out,tier in (api,web),waymark.dev/release=checkout"
        );
    }

    #[test]
    fn status_replicas_counts_ready_pods_without_a_write_per_pod() {
        let release = ReleaseBuilder::replica_split().build();
        let name = release.metadata.name.clone().unwrap_or_default();
        let workload = |replicas, available_replicas| WorkloadState {
            replicas,
            available_replicas,
            available: available_replicas == replicas,
            settled: true,
            ..WorkloadState::default()
        };
        let settled = |replicas: Option<i32>, canary: Option<&str>| ReleaseStatus {
            replicas,
            selector: Some(format!("app=checkout,waymark.dev/release={name}")),
            canary_revision: canary.map(String::from),
            ..ReleaseStatus::default()
        };
        let cases = [
            // (what, stable (replicas, ready), canary, old status.replicas, canary in progress,
            //  the decided status differs otherwise, status.replicas)
            ("nothing yet", None, None, None, None, false, 0),
            ("a first count", Some((3, 1)), None, None, None, false, 1),
            (
                "scaled 2 -> 4, rolled out",
                Some((4, 4)),
                None,
                Some(2),
                None,
                false,
                4,
            ),
            (
                "scaled 2 -> 4, starting",
                Some((4, 3)),
                None,
                Some(2),
                None,
                false,
                2,
            ),
            (
                "canary pods starting",
                Some((6, 6)),
                Some((2, 1)),
                Some(4),
                Some("v2"),
                false,
                4,
            ),
            (
                "canary rolled out",
                Some((6, 6)),
                Some((2, 2)),
                Some(4),
                Some("v2"),
                false,
                4,
            ),
            (
                "written anyway",
                Some((6, 6)),
                Some((2, 1)),
                Some(4),
                Some("v2"),
                true,
                7,
            ),
            (
                "old canary leaving",
                Some((4, 4)),
                Some((4, 4)),
                Some(8),
                None,
                true,
                4,
            ),
        ];
        for (what, stable, canary, before, canary_revision, changed, expected) in cases {
            let observed = Observed {
                stable: stable.map(|(r, a)| workload(r, a)),
                canary: canary.map(|(r, a)| workload(r, a)),
                ..Observed::default()
            };
            let old = settled(before, canary_revision);
            let mut status = old.clone();
            if changed {
                status.message = Some("step 2/3".into());
            }
            stamp_scale_status(&mut status, Some(&old), &release, &observed);
            assert_eq!(status.replicas, Some(expected), "{what}");
            assert_eq!(status.selector, old.selector, "{what}");
        }
    }
}
