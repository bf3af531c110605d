//! `waymark status|promote|abort|retry` as a person runs them: the binary, the admin
//! kubeconfig, against the real API server.

use std::process::Command;

use serde_json::json;

use crate::fixtures::*;
use crate::support::{Env, kubeconfig_path};
use waymark::api::{Outcome, Phase, TimelineKind};

/// What one run of the `waymark` binary printed, and whether it succeeded.
pub struct Run {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Run `waymark ARGS` with the suite's kubeconfig, as a person would in a shell.
pub async fn waymark(args: &[&str]) -> Run {
    waymark_with(&kubeconfig_path(), args).await
}

/// Run `waymark ARGS` with `kubeconfig`.
async fn waymark_with(kubeconfig: &std::path::Path, args: &[&str]) -> Run {
    let mut command = Command::new(env!("CARGO_BIN_EXE_waymark"));
    command.args(args).env("KUBECONFIG", kubeconfig);
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command ran")
        .expect("the waymark binary starts");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Status, a refused promote, promote, abort and retry, each checked against the API server.
pub async fn the_command_line_promotes_aborts_and_retries(env: Env) {
    let name = "checkout";
    let ns = env.namespace.clone();
    healthy_first_release(&env, name, json!([{"setWeight": 30}, {"pause": {}}])).await;

    let status = waymark(&["status", name, "-n", &ns]).await;
    assert!(status.success, "{}", status.stderr);
    assert!(status.stdout.contains("Healthy"), "{}", status.stdout);
    assert!(
        status.stdout.contains("E2E-1"),
        "names the roadmap item: {}",
        status.stdout
    );

    let refused = waymark(&["promote", name, "-n", &ns]).await;
    assert!(!refused.success, "promote of a Healthy release is refused");
    assert!(
        refused.stderr.contains("first release") && refused.stderr.contains("no steps to promote"),
        "{}",
        refused.stderr
    );

    let missing = waymark(&["status", "no-such-release", "-n", &ns]).await;
    assert!(!missing.success);
    assert!(
        missing.stderr.contains(&ns),
        "says where it looked: {}",
        missing.stderr
    );

    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    let paused = waymark(&["status", name, "-n", &ns]).await;
    assert!(paused.stdout.contains("Paused"), "{}", paused.stdout);
    assert!(paused.stdout.contains("30%"), "{}", paused.stdout);
    // Pod counts are not in the status (they move while pods start): read live.
    let mut counts = Vec::new();
    for role in ["stable", "canary"] {
        let deployment = env
            .deployments()
            .get(&format!("{name}-{role}"))
            .await
            .expect("the child Deployment");
        let wanted = deployment.spec.and_then(|s| s.replicas).unwrap_or(1);
        let available = deployment
            .status
            .and_then(|s| s.available_replicas)
            .unwrap_or(0);
        counts.push(format!("{role} {available}/{wanted} available"));
    }
    let pods = format!("Pods:      {}", counts.join(", "));
    assert!(
        paused.stdout.contains(&pods),
        "{pods:?} in {}",
        paused.stdout
    );

    let promote = waymark(&["promote", name, "-n", &ns]).await;
    assert!(promote.success, "{}", promote.stderr);
    wait_for_status(&env, name, "the promotion of E2E-2", |s| {
        s.phase == Some(Phase::Healthy) && s.roadmap_item.as_deref() == Some("E2E-2")
    })
    .await;

    ship(&env, name, "nginx:1.29-alpine", "E2E-3").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    let abort = waymark(&["abort", name, "-n", &ns]).await;
    assert!(abort.success, "{}", abort.stderr);
    let rolled_back = wait_for_phase_status(&env, name, Phase::RolledBack).await;
    assert_eq!(rolled_back.history[0].outcome, Outcome::Aborted);
    wait_for_weight(&env, name, name, 0).await;

    let retry = waymark(&["retry", name, "-n", &ns]).await;
    assert!(retry.success, "{}", retry.stderr);
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    wait_for_weight(&env, name, name, 30).await;
    let after = waymark(&["status", name, "-n", &ns]).await;
    assert!(after.stdout.contains("E2E-3"), "{}", after.stdout);

    // The controller's cache holds only the newest history entry's timeline; its status
    // patches since (the abort, the retry) leave the older entries' timelines on the server.
    let history = env.status(name).await.history;
    let promoted = history
        .iter()
        .find(|entry| entry.outcome == Outcome::Promoted && entry.roadmap_item == "E2E-2")
        .unwrap_or_else(|| panic!("the promotion of E2E-2 in {history:?}"));
    assert_ne!(history[0].revision, promoted.revision, "an older entry");
    assert!(
        promoted
            .timeline
            .iter()
            .any(|entry| entry.kind == TimelineKind::Step),
        "the promotion's timeline is kept: {promoted:?}"
    );
}

/// The Events on Release `name`, as `(reason, note)`, once one has `reason`: the Events of a
/// decision are published after its status, so a reason that comes with an outcome proves the
/// decision's Events are all there.
async fn events_once(env: &Env, name: &str, reason: &str) -> Vec<(String, String)> {
    let events: kube::Api<k8s_openapi::api::events::v1::Event> =
        kube::Api::namespaced(env.client.clone(), &env.namespace);
    crate::support::eventually(&format!("a {reason} Event on {name}"), || async {
        let story: Vec<(String, String)> = events
            .list(&Default::default())
            .await
            .map_err(|error| error.to_string())?
            .items
            .into_iter()
            .filter(|event| event.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
            .map(|event| {
                (
                    event.reason.unwrap_or_default(),
                    event.note.unwrap_or_default(),
                )
            })
            .collect();
        if story.iter().any(|(r, _)| r == reason) {
            Ok(story)
        } else {
            Err(format!("{story:?}"))
        }
    })
    .await
}

/// Abort during promotion: the CLI's answer and the outcome agree. The stable's new pods are
/// kept from becoming available so the promotion is caught in the middle; `waymark abort` is
/// refused there (the previous template is gone), exits non-zero, writes nothing, and the
/// promotion finishes. An abort the CLI accepts (at a pause) is acted on: Aborted, no
/// `RequestIgnored`. After it, `promote --full` points to `waymark retry`.
pub async fn abort_during_promotion_the_cli_answer_and_the_outcome_agree(env: Env) {
    let name = "checkout";
    let ns = env.namespace.clone();
    healthy_first_release(&env, name, json!([{"setWeight": 50}, {"pause": {}}])).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    let canary = env.status(name).await.canary_revision.expect("a canary");

    env.set_pods_become_ready(false);
    let promote = waymark(&["promote", name, "-n", &ns]).await;
    assert!(promote.success, "{}", promote.stderr);
    let promoting = wait_for_status(&env, name, "the promotion in progress", |s| {
        s.reason.as_deref() == Some("Promoting")
    })
    .await;
    let promote_id = promoting
        .request
        .as_ref()
        .expect("the promote request")
        .id
        .clone();
    assert_eq!(
        promoting.handled_request.as_deref(),
        Some(promote_id.as_str())
    );

    let abort = waymark(&["abort", name, "-n", &ns]).await;
    assert!(
        !abort.success,
        "abort during a promotion is refused: {}",
        abort.stdout
    );
    assert!(
        abort.stderr.starts_with(&format!(
            "error: cannot abort {ns}/{name}: canary {canary} is being promoted"
        )),
        "{}",
        abort.stderr
    );
    assert!(
        abort
            .stderr
            .contains("apply the previous template as a new revision"),
        "says what to do instead: {}",
        abort.stderr
    );
    let after_abort = env.status(name).await;
    assert_eq!(
        after_abort.request.as_ref().map(|r| r.id.as_str()),
        Some(promote_id.as_str()),
        "a refused abort writes nothing"
    );

    env.set_pods_become_ready(true);
    let promoted = wait_for_status(&env, name, "the promotion of E2E-2", |s| {
        s.phase == Some(Phase::Healthy) && s.roadmap_item.as_deref() == Some("E2E-2")
    })
    .await;
    assert_eq!(promoted.history[0].revision, canary);
    assert_eq!(promoted.history[0].outcome, Outcome::Promoted);
    let story = events_once(&env, name, "CanaryPromoted").await;
    assert!(
        story.iter().any(|(reason, _)| reason == "PromoteRequested"),
        "{story:#?}"
    );
    assert!(
        !story.iter().any(|(reason, _)| reason == "RequestIgnored"),
        "{story:#?}"
    );

    // An abort the CLI accepts is what happens.
    ship(&env, name, "nginx:1.29-alpine", "E2E-3").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;
    let abort = waymark(&["abort", name, "-n", &ns]).await;
    assert!(abort.success, "{}", abort.stderr);
    assert!(abort.stdout.contains("is rolled back"), "{}", abort.stdout);
    let aborted = wait_for_phase_status(&env, name, Phase::RolledBack).await;
    assert_eq!(aborted.history[0].outcome, Outcome::Aborted);
    assert_eq!(aborted.handled_request, aborted.request.map(|r| r.id));
    wait_for_weight(&env, name, name, 0).await;
    let story = events_once(&env, name, "CanaryAborted").await;
    assert!(
        !story.iter().any(|(reason, _)| reason == "RequestIgnored"),
        "{story:#?}"
    );

    let full = waymark(&["promote", name, "--full", "-n", &ns]).await;
    assert!(!full.success, "promote --full after a rollback is refused");
    assert!(
        full.stderr.contains(&format!("`waymark retry {name}`")),
        "points to retry: {}",
        full.stderr
    );
}

async fn wait_for_phase_status(env: &Env, name: &str, phase: Phase) -> waymark::api::ReleaseStatus {
    wait_for_status(env, name, &format!("phase {phase}"), |s| {
        s.phase == Some(phase)
    })
    .await
}

/// A developer bound only to the built-in `edit` role in one namespace can `waymark promote`
/// there (Waymark's operator role aggregates into `edit`), and is refused in another namespace
/// with a message naming the missing permission.
pub async fn a_user_with_edit_promotes_in_their_namespace_only(env: Env) {
    use k8s_openapi::api::core::v1::Namespace;
    use k8s_openapi::api::rbac::v1::RoleBinding;
    use kube::api::{DeleteParams, PostParams};

    let name = "checkout";
    let ns = env.namespace.clone();
    healthy_first_release(&env, name, json!([{"setWeight": 30}, {"pause": {}}])).await;
    ship(&env, name, &image(2), "E2E-2").await;
    wait_for_phase(&env, name, Phase::Paused, Some("CanaryPauseStep")).await;

    let binding: RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": {"name": "alice-edit"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice"}]
    }))
    .expect("a RoleBinding");
    kube::Api::<RoleBinding>::namespaced(env.client.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("bind alice to edit");
    let elsewhere = format!("{ns}-other");
    let namespaces: kube::Api<Namespace> = kube::Api::all(env.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": elsewhere}}),
            )
            .expect("a Namespace"),
        )
        .await
        .expect("another namespace");

    let dir = tempfile::tempdir().expect("a temporary directory");
    let alice = crate::support::kubeconfig_as("alice", dir.path()).await;
    // The operator role reaches `edit` through aggregation: wait for it.
    let promoted = crate::support::eventually("alice's promote to be allowed", || {
        let alice = alice.clone();
        let ns = ns.clone();
        async move {
            let run = waymark_with(&alice, &["promote", name, "-n", &ns]).await;
            if run.success {
                Ok(run)
            } else {
                Err(run.stderr)
            }
        }
    })
    .await;
    assert!(promoted.stdout.contains(name), "{}", promoted.stdout);
    wait_for_status(&env, name, "the promotion of E2E-2", |s| {
        s.phase == Some(Phase::Healthy) && s.roadmap_item.as_deref() == Some("E2E-2")
    })
    .await;

    let refused = waymark_with(&alice, &["promote", name, "-n", &elsewhere]).await;
    assert!(!refused.success, "no binding there");
    let message = refused.stderr.to_lowercase();
    assert!(
        message.contains("forbidden") || message.contains("not allowed"),
        "{}",
        refused.stderr
    );
    assert!(
        message.contains("releases"),
        "names the resource: {}",
        refused.stderr
    );
    assert!(
        message.contains(&elsewhere),
        "names the namespace: {}",
        refused.stderr
    );
    let _ = namespaces
        .delete(&elsewhere, &DeleteParams::background())
        .await;
}

/// Run `kubectl ARGS` with the suite's kubeconfig.
async fn kubectl(args: &[&str]) -> Run {
    let mut command = Command::new("kubectl");
    command.args(args).env("KUBECONFIG", kubeconfig_path());
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .expect("the command ran")
        .expect("kubectl starts");
    Run {
        success: output.status.success(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// The cells of a table kubectl or `waymark list` printed, by column title: each column
/// starts where its title starts (cells are left-aligned), so an empty cell reads as "".
fn table_cells(table: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let mut starts: Vec<(usize, String)> = Vec::new();
    let mut previous_space = true;
    let mut title_start = 0;
    let bytes: Vec<char> = header.chars().collect();
    for (index, character) in bytes.iter().enumerate() {
        // A title may hold one space ("ROADMAP ITEM"); columns are at least two apart.
        let gap = *character == ' ' && bytes.get(index + 1) == Some(&' ');
        if !gap && previous_space && *character != ' ' {
            title_start = index;
        }
        if gap && !previous_space {
            starts.push((title_start, header[title_start..index].to_string()));
        }
        previous_space = gap || (*character == ' ' && previous_space);
    }
    if !previous_space {
        starts.push((title_start, header[title_start..].to_string()));
    }
    lines
        .map(|line| {
            starts
                .iter()
                .enumerate()
                .map(|(index, (start, title))| {
                    let end = starts.get(index + 1).map_or(line.len(), |next| next.0);
                    let cell = line.get(*start..end.min(line.len())).unwrap_or_default();
                    (title.clone(), cell.trim().to_string())
                })
                .collect()
        })
        .collect()
}

/// `waymark list` (and `status` without a name, with `-A`), `kubectl get waymark -o wide` and
/// `kubectl explain` against the real API server: the columns the CRD serves, the category,
/// the Burn column empty on a Healthy Release, and the spec explained in sentences.
pub async fn list_and_kubectl_get_wide_show_where_each_release_stands(env: Env) {
    let name = "listed";
    let ns = env.namespace.clone();
    healthy_first_release(&env, name, json!([{"setWeight": 30}, {"pause": {}}])).await;
    let stable = env
        .releases()
        .get(name)
        .await
        .expect("the Release")
        .status
        .and_then(|status| status.stable_revision)
        .expect("a stable revision");

    let list = waymark(&["list", "-n", &ns, "--request-timeout=30s"]).await;
    assert!(list.success, "{}", list.stderr);
    let rows = table_cells(&list.stdout);
    assert_eq!(rows.len(), 1, "{}", list.stdout);
    assert_eq!(
        rows[0].keys().map(String::as_str).collect::<Vec<_>>(),
        ["AGE", "NAME", "PHASE", "ROADMAP ITEM", "STEP", "WEIGHT"],
        "{}",
        list.stdout
    );
    assert_eq!(rows[0]["NAME"], name);
    assert_eq!(rows[0]["PHASE"], "Healthy");
    assert_eq!(rows[0]["STEP"], "-");
    assert_eq!(rows[0]["WEIGHT"], "0");
    assert_eq!(rows[0]["ROADMAP ITEM"], "E2E-1");
    assert!(rows[0]["AGE"].ends_with('s') || rows[0]["AGE"].ends_with('m'));

    let everywhere = waymark(&["status", "-A"]).await;
    assert!(everywhere.success, "{}", everywhere.stderr);
    assert!(
        table_cells(&everywhere.stdout)
            .iter()
            .any(|row| row["NAMESPACE"] == ns && row["NAME"] == name),
        "{}",
        everywhere.stdout
    );

    let refused = waymark(&["list", "-n", &ns, "--request-timeout=soon"]).await;
    assert!(!refused.success);
    assert!(
        refused
            .stderr
            .contains("write a duration with a unit such as 30s, 2m or 1h"),
        "{}",
        refused.stderr
    );

    let wide = kubectl(&["get", "waymark", "-n", &ns, "-o", "wide"]).await;
    assert!(wide.success, "{}", wide.stderr);
    let rows = table_cells(&wide.stdout);
    assert_eq!(rows.len(), 1, "{}", wide.stdout);
    let row = &rows[0];
    assert_eq!(row["NAME"], name, "{}", wide.stdout);
    assert_eq!(row["PHASE"], "Healthy");
    assert_eq!(row["STABLE"], stable);
    assert_eq!(row["REASON"], "StableAvailable");
    assert_eq!(row["TITLE"], "End-to-end first release");
    for empty in ["BURN", "CANARY", "STEP"] {
        assert!(
            row[empty].is_empty() || row[empty] == "<none>",
            "{empty} on a Healthy Release: {}",
            wide.stdout
        );
    }
    let narrow = kubectl(&["get", "releases", "-n", &ns]).await;
    assert!(narrow.success, "{}", narrow.stderr);
    assert!(
        !narrow.stdout.contains("REASON") && narrow.stdout.contains("BURN"),
        "the wide columns only with -o wide: {}",
        narrow.stdout
    );

    let explain = kubectl(&["explain", "release.spec.steps"]).await;
    assert!(explain.success, "{}", explain.stderr);
    assert!(
        explain
            .stdout
            .contains("The canary steps, run in order from the first;"),
        "{}",
        explain.stdout
    );
}
