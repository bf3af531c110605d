//! The README's quick start as a newcomer follows it: `examples/hello.yaml` applied from the
//! file, Healthy, `examples/hello-v2.yaml` applied, its canary through every step, `waymark
//! promote`; and the same Release when its namespace is deleted under it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::time::Instant;

use crate::fixtures::*;
use crate::operate::waymark;
use crate::support::{E2E_MANAGER, Env, Versions, eventually};
use waymark::api::{LABEL_RELEASE, LABEL_ROLE, Outcome, Phase, Release, ReleaseStatus};

/// The Release both examples define.
const NAME: &str = "hello";
/// The namespace the examples name (the README creates it with `kubectl create namespace`).
const EXAMPLE_NAMESPACE: &str = "demo";
/// The images of the two versions, as the examples give them.
const IMAGE_V1: &str = "nginx:1.27-alpine";
const IMAGE_V2: &str = "nginx:1.28-alpine";
/// The timed pause of the examples' second step.
const TIMED_PAUSE: Duration = Duration::from_secs(30);

/// `examples/<file>` as the README applies it, moved to the walk's own namespace: the only
/// change made to it.
fn example(file: &str, namespace: &str) -> Release {
    let path = format!("{}/examples/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("cannot read examples/{file}: {error}"));
    let mut release: Release = serde_saphyr::from_str(&text)
        .unwrap_or_else(|error| panic!("examples/{file} is not a Release: {error}"));
    assert_eq!(release.name_any(), NAME, "examples/{file}");
    assert_eq!(
        release.metadata.namespace.as_deref(),
        Some(EXAMPLE_NAMESPACE),
        "examples/{file} names the namespace the README creates"
    );
    release.metadata.namespace = Some(namespace.to_string());
    release
}

/// The README's `kubectl apply -f` of `release`, made through the API (server-side apply: the
/// suite does not need a kubectl): the object becomes exactly what the file says.
async fn apply(env: &Env, release: &Release) {
    let params = PatchParams::apply(E2E_MANAGER).force();
    let applied = env
        .releases()
        .patch(NAME, &params, &Patch::Apply(release))
        .await
        .unwrap_or_else(|error| panic!("cannot apply Release {NAME}: {error}"));
    assert_eq!(
        serde_json::to_value(&applied.spec).expect("a spec"),
        serde_json::to_value(&release.spec).expect("a spec"),
        "the API server kept the example's spec as written (defaults aside, it sets none here)"
    );
}

/// The pods of `role`, checked to number `count`, all Ready, all running `image`.
async fn check_pods(env: &Env, role: &str, count: usize, image: &str) {
    let selector = format!("{LABEL_RELEASE}={NAME},{LABEL_ROLE}={role}");
    wait_for_pods(
        env,
        &selector,
        &format!("{count} Ready {role} pods running {image}"),
        |pods| {
            let live: Vec<&Pod> = pods
                .iter()
                .filter(|pod| pod.metadata.deletion_timestamp.is_none())
                .collect();
            let ready = live.iter().filter(|pod| pod_ready(pod)).count();
            let images: Vec<&str> = live
                .iter()
                .flat_map(|pod| pod.spec.iter().flat_map(|spec| spec.containers.iter()))
                .filter_map(|container| container.image.as_deref())
                .collect();
            if live.len() == count && ready == count && images.iter().all(|i| *i == image) {
                Ok(())
            } else {
                Err(format!(
                    "{} pods, {ready} Ready, images {images:?}",
                    live.len()
                ))
            }
        },
    )
    .await;
}

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .is_some_and(|conditions| {
            conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
        })
}

/// The quick start, step by step, from a namespace with nothing in it: version 1 Healthy (its
/// history entry made only once its stable pods are Ready), version 2's canary at 25% (1 pod
/// of 4), 30 s, 50% (2 of 4), then `waymark promote`: Healthy on nginx 1.28, DEMO-2 live.
/// Prints how long a newcomer waits for each.
pub async fn the_quick_start_walks_the_examples_to_a_promotion(env: Env) {
    let ns = env.namespace.clone();
    // The namespace was created just before the walk: the README's `kubectl create namespace`.
    let started = Instant::now();
    let versions = Versions::record(env.releases(), NAME).await;

    // Step 3: version 1.
    apply(&env, &example("hello.yaml", &ns)).await;
    let healthy = wait_for_status(&env, NAME, "version 1 Healthy", |s| {
        s.phase == Some(Phase::Healthy)
    })
    .await;
    let first_release_healthy = started.elapsed();
    check_pods(&env, "stable", 4, IMAGE_V1).await;
    wait_for_endpoints(&env, NAME, 4, 0).await;
    assert_eq!(healthy.roadmap_item.as_deref(), Some("DEMO-1"));
    let first_revision = healthy.stable_revision.clone().expect("a stable revision");
    let first = healthy.history.first().expect("the first release's entry");
    assert_eq!(
        (
            first.outcome,
            first.reason.as_str(),
            first.roadmap_item.as_str()
        ),
        (Outcome::Promoted, "FirstRelease", "DEMO-1")
    );
    // The entry came with the stable available, not before: every version the status had
    // while its pods were starting has no history.
    let rolling_out: Vec<ReleaseStatus> = versions
        .seen()
        .into_iter()
        .filter_map(|release| release.status)
        .filter(|s| s.stable_revision.is_some() && s.phase != Some(Phase::Healthy))
        .collect();
    assert!(
        !rolling_out.is_empty(),
        "the first release was seen rolling out before it was Healthy"
    );
    for status in &rolling_out {
        assert!(
            status.history.is_empty(),
            "a history entry while the stable's pods were not all available ({:?}): {:?}",
            status.message,
            status.history
        );
    }

    // Step 4: version 2, a canary.
    let shipped = Instant::now();
    apply(&env, &example("hello-v2.yaml", &ns)).await;
    let at_25 = wait_for_status(&env, NAME, "the canary at 25%", |s| {
        s.canary_weight == Some(25) && s.canary_revision.is_some()
    })
    .await;
    let canary_revision = at_25.canary_revision.clone().expect("a canary");
    assert_ne!(canary_revision, first_revision);
    assert_eq!(
        at_25.roadmap_item.as_deref(),
        Some("DEMO-2"),
        "the item on its way"
    );
    assert_eq!(
        at_25.stable_roadmap_item.as_deref(),
        Some("DEMO-1"),
        "the item live"
    );
    // 25% of 4 pods by the replica split: 1 canary pod and 3 stable pods serve.
    let split = wait_for_endpoints(&env, NAME, 3, 1).await;
    let first_canary_ready = started.elapsed();
    assert!(
        split.iter().all(|e| e.revision
            == if e.role == "canary" {
                canary_revision.as_str()
            } else {
                first_revision.as_str()
            }),
        "{split:?}"
    );
    check_pods(&env, "canary", 1, IMAGE_V2).await;
    check_pods(&env, "stable", 3, IMAGE_V1).await;
    let timed = wait_for_status(&env, NAME, "the 30 s pause", |s| {
        s.pause_until.is_some() || s.current_step.is_some_and(|step| step >= 1)
    })
    .await;
    assert_eq!(timed.phase, Some(Phase::Progressing), "{:?}", timed.message);

    // The pause over: 50%, 2 pods of 4, then it waits for `waymark promote`.
    let paused = wait_for_status(&env, NAME, "the canary paused at 50%", |s| {
        s.phase == Some(Phase::Paused) && s.canary_weight == Some(50)
    })
    .await;
    assert!(
        shipped.elapsed() >= TIMED_PAUSE,
        "50% only after the 30 s pause: {:?} since version 2",
        shipped.elapsed()
    );
    assert_eq!(paused.reason.as_deref(), Some("CanaryPauseStep"));
    wait_for_endpoints(&env, NAME, 2, 2).await;
    check_pods(&env, "canary", 2, IMAGE_V2).await;
    check_pods(&env, "stable", 2, IMAGE_V1).await;
    let status = waymark(&["status", NAME, "-n", &ns]).await;
    assert!(status.success, "{}", status.stderr);
    assert!(
        status.stdout.contains("Paused") && status.stdout.contains("50%"),
        "{}",
        status.stdout
    );

    // Step 5: promote.
    let promote = waymark(&["promote", NAME, "-n", &ns]).await;
    assert!(promote.success, "{}", promote.stderr);
    let promoted = wait_for_status(&env, NAME, "version 2 Healthy, DEMO-2 live", |s| {
        s.phase == Some(Phase::Healthy)
            && s.roadmap_item.as_deref() == Some("DEMO-2")
            && s.stable_roadmap_item.as_deref() == Some("DEMO-2")
            && s.stable_revision.as_deref() == Some(&canary_revision)
            && s.canary_revision.is_none()
    })
    .await;
    wait_for_endpoints(&env, NAME, 4, 0).await;
    check_pods(&env, "stable", 4, IMAGE_V2).await;
    let outcomes: Vec<(Outcome, &str)> = promoted
        .history
        .iter()
        .map(|entry| (entry.outcome, entry.roadmap_item.as_str()))
        .collect();
    assert_eq!(
        outcomes,
        vec![(Outcome::Promoted, "DEMO-2"), (Outcome::Promoted, "DEMO-1")]
    );
    // The canary goes after scaleDownDelay (10 s).
    eventually("the canary Deployment removed", || async {
        match env.deployments().get_opt(&format!("{NAME}-canary")).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(error) => Err(error.to_string()),
        }
    })
    .await;
    let roadmap = waymark(&["roadmap", "-n", &ns]).await;
    assert!(roadmap.success, "{}", roadmap.stderr);
    // As the README says: DEMO-2 live, and two deliveries (DEMO-1, DEMO-2) promoted.
    let live = roadmap
        .stdout
        .lines()
        .find(|line| line.contains(&ns))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    assert_eq!(
        live.get(2..4),
        Some(&["DEMO-2", "live"][..]),
        "{}",
        roadmap.stdout
    );
    let all = roadmap
        .stdout
        .lines()
        .find(|line| line.starts_with("all "))
        .unwrap_or_default()
        .split_whitespace()
        .collect::<Vec<_>>();
    // HORIZON DELIVERIES SHARE PROMOTED ...
    assert_eq!(
        (all.get(1), all.get(3)),
        (Some(&"2"), Some(&"2")),
        "{}",
        roadmap.stdout
    );
    eprintln!(
        "quick start: namespace created -> version 1 Healthy in {:.1}s; -> first canary pod \
         Ready in {:.1}s; whole walk {:.1}s",
        first_release_healthy.as_secs_f64(),
        first_canary_ready.as_secs_f64(),
        started.elapsed().as_secs_f64()
    );
}

/// The sum of `waymark_reconcile_errors_total` in a `/metrics` text (0 when absent).
fn reconcile_errors(metrics: &str) -> f64 {
    metrics
        .lines()
        .filter_map(|line| line.strip_prefix("waymark_reconcile_errors_total"))
        .filter(|rest| rest.starts_with([' ', '{']))
        .filter_map(|rest| rest.rsplit(' ').next())
        .filter_map(|value| value.trim().parse::<f64>().ok())
        .fold(0.0, |sum, value| sum + value)
}

/// Removes the holding policy and its binding when dropped, also when the walk fails: the
/// namespace can then go.
struct Hold {
    policies: Api<DynamicObject>,
    bindings: Api<DynamicObject>,
    name: String,
}

impl Drop for Hold {
    fn drop(&mut self) {
        let (policies, bindings, name) = (
            self.policies.clone(),
            self.bindings.clone(),
            self.name.clone(),
        );
        tokio::spawn(async move {
            let params = DeleteParams::default();
            if let Err(error) = bindings.delete(&name, &params).await {
                eprintln!("cannot remove ValidatingAdmissionPolicyBinding {name}: {error}");
            }
            if let Err(error) = policies.delete(&name, &params).await {
                eprintln!("cannot remove ValidatingAdmissionPolicy {name}: {error}");
            }
        });
    }
}

/// A ValidatingAdmissionPolicy (and its binding) refusing the deletion of Releases in
/// `namespace`: it holds the namespace in `Terminating` with the Release still there while
/// the namespace controller deletes everything else, as a Release the namespace controller
/// cannot delete yet would.
fn hold_policy(namespace: &str) -> (DynamicObject, DynamicObject, ApiResource, ApiResource) {
    let gvk = |kind: &str| GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    let policy_resource = ApiResource::from_gvk(&gvk("ValidatingAdmissionPolicy"));
    let binding_resource = ApiResource::from_gvk(&gvk("ValidatingAdmissionPolicyBinding"));
    let name = format!("hold-releases-{namespace}");
    let policy = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": name},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": namespace}},
                "resourceRules": [{
                    "apiGroups": ["waymark.dev"], "apiVersions": ["*"],
                    "operations": ["DELETE"], "resources": ["releases"]
                }]
            },
            "validations": [{"expression": "false", "message": "held by the e2e walk"}]
        }
    });
    let binding = json!({
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": name},
        "spec": {"policyName": name, "validationActions": ["Deny"]}
    });
    let object = |value| serde_json::from_value(value).expect("an admission object");
    (
        object(policy),
        object(binding),
        policy_resource,
        binding_resource,
    )
}

/// A Release whose namespace is being deleted: the API server refuses to create anything in it
/// (403, "because it is being terminated"), so the Services the namespace controller deleted
/// cannot come back. The controller takes that as the namespace going away: no reconcile error,
/// no refusal in the status (no Degraded, no Warning Event), and it is not retried.
pub async fn a_release_in_a_deleted_namespace_does_not_fight_for_its_services(env: Env) {
    let ns = env.namespace.clone();
    apply(&env, &example("hello.yaml", &ns)).await;
    wait_for_phase(&env, NAME, Phase::Healthy, Some("StableAvailable")).await;

    let (policy, binding, policy_resource, binding_resource) = hold_policy(&ns);
    let policies: Api<DynamicObject> = Api::all_with(env.client.clone(), &policy_resource);
    let bindings: Api<DynamicObject> = Api::all_with(env.client.clone(), &binding_resource);
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("the holding policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("the holding policy's binding");
    let hold = Hold {
        policies: policies.clone(),
        bindings: bindings.clone(),
        name: policy.name_any(),
    };
    // In force once a dry-run deletion of the Release is refused.
    eventually("the policy holding the Release in force", || async {
        let dry_run = DeleteParams {
            dry_run: true,
            ..DeleteParams::default()
        };
        match env.releases().delete(NAME, &dry_run).await {
            Err(kube::Error::Api(status)) if status.message.contains("held by the e2e walk") => {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await;

    let errors_before = reconcile_errors(&env.controller_http("/metrics").await.1);
    let versions = Versions::record(env.releases(), NAME).await;
    let namespaces: Api<Namespace> = Api::all(env.client.clone());
    namespaces
        .delete(&ns, &DeleteParams::background())
        .await
        .expect("the namespace deleted");
    // The namespace controller deletes the Services and Deployments; the Release stays.
    eventually("the Release's Services and Deployments gone", || async {
        let services = env
            .services()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        let deployments = env
            .deployments()
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?;
        if services.items.is_empty() && deployments.items.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "services {:?}, deployments {:?}",
                services.iter().map(|s| s.name_any()).collect::<Vec<_>>(),
                deployments.iter().map(|d| d.name_any()).collect::<Vec<_>>()
            ))
        }
    })
    .await;
    let namespace = namespaces.get(&ns).await.expect("the namespace");
    assert_eq!(
        namespace.status.and_then(|s| s.phase).as_deref(),
        Some("Terminating")
    );
    // Make the controller look twice at the Release as it is now (a change of its spec: it
    // reconciles on generation changes) and wait for both reconciles: each wants Services
    // back and is refused.
    for delay in ["11s", "12s"] {
        let before = env.reconciles().await;
        env.releases()
            .patch(
                NAME,
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": {"scaleDownDelay": delay}})),
            )
            .await
            .expect("a spec change in a terminating namespace");
        eventually("a reconcile after the spec change", || async {
            let now = env.reconciles().await;
            if now > before {
                Ok(())
            } else {
                Err(format!("{now} reconciles, {before} before"))
            }
        })
        .await;
    }
    // The create is refused as expected, so the controller did try.
    let refused = env
        .services()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "probe"},
                "spec": {"ports": [{"port": 80}]}
            }))
            .expect("a Service"),
        )
        .await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.code == 403 && s.message.contains("being terminated")),
        "{refused:?}"
    );

    let errors_after = reconcile_errors(&env.controller_http("/metrics").await.1);
    assert_eq!(
        errors_after, errors_before,
        "no reconcile error for a namespace going away"
    );
    for release in versions.seen() {
        let status = release.status.unwrap_or_default();
        assert_ne!(
            status.phase,
            Some(Phase::Degraded),
            "{:?}: {:?}",
            status.reason,
            status.message
        );
        assert!(
            !status
                .conditions
                .iter()
                .any(|c| c.type_ == "Applied" && c.status == "False"),
            "a refusal in the status: {:?}",
            status.conditions
        );
    }

    // Let the namespace go.
    drop(hold);
}
