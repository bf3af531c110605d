//! The shipped manifests say what the controller needs and no more, and the Helm chart (rendered
//! by the real `helm`, see `common/helm.rs`) grants exactly what the kustomize base grants.

#[path = "common/helm.rs"]
mod helm;

use std::path::Path;

use serde_json::Value;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn yaml(path: &str) -> Value {
    serde_saphyr::from_str(&read(path))
        .unwrap_or_else(|error| panic!("{path} is not YAML: {error}"))
}

fn yaml_documents(path: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(&read(path))
        .unwrap_or_else(|error| panic!("{path} is not YAML: {error}"))
}

fn parse(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

/// The rules of the rendered object `kind`/`name`.
fn rendered_rules(documents: &[Value], kind: &str, name: &str) -> Value {
    documents
        .iter()
        .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("the chart renders no {kind} {name}"))["rules"]
        .clone()
}

/// The rules of the kustomize document `kind`/`name` in `path`.
fn base_rules(path: &str, kind: &str, name: &str) -> Value {
    yaml_documents(path)
        .into_iter()
        .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("{path} has no {kind} {name}"))["rules"]
        .clone()
}

fn rules_of(rules: &Value) -> &[Value] {
    rules.as_array().expect("a list of rules")
}

fn grants(rules: &Value, resource: &str) -> Vec<String> {
    rules_of(rules)
        .iter()
        .filter(|rule| {
            rule["resources"]
                .as_array()
                .is_some_and(|resources| resources.iter().any(|r| r == resource))
        })
        .flat_map(|rule| rule["verbs"].as_array().cloned().unwrap_or_default())
        .filter_map(|verb| verb.as_str().map(String::from))
        .collect()
}

#[test]
fn cluster_role_has_no_wildcards_and_no_secrets() {
    let rules = yaml("config/rbac/role.yaml")["rules"].clone();
    for rule in rules_of(&rules) {
        for field in ["apiGroups", "resources", "verbs"] {
            for item in rule[field].as_array().unwrap() {
                assert_ne!(item.as_str(), Some("*"), "wildcard in {field}: {rule:?}");
            }
        }
    }
    assert_eq!(grants(&rules, "releases/status"), ["patch"]);
    assert_eq!(
        grants(&rules, "releases"),
        ["list", "watch", "patch"],
        "the finalizer waymark.dev/route is a patch of the Release (never of its spec)"
    );
    assert_eq!(
        grants(&rules, "releases/finalizers"),
        ["update"],
        "children's blockOwnerDeletion under OwnerReferencesPermissionEnforcement"
    );
    assert!(
        grants(&rules, "secrets").is_empty(),
        "Secrets are read only where Releases live, through waymark-secret-reader"
    );
    for route in ["httproutes", "grpcroutes"] {
        assert_eq!(
            grants(&rules, route),
            ["list", "watch", "patch"],
            "{route}: watched, weights written by server-side apply"
        );
    }
    for parent in ["gateways", "gatewayclasses"] {
        assert_eq!(
            grants(&rules, parent),
            ["get"],
            "{parent}: read by name for the GatewayClass's supportedFeatures, never listed"
        );
    }
}

#[test]
fn the_secret_reader_gets_secrets_by_name_and_nothing_else() {
    let rules = base_rules(
        "config/rbac/secret_reader_role.yaml",
        "ClusterRole",
        "waymark-secret-reader",
    );
    assert_eq!(
        rules,
        parse(r#"[{apiGroups: [""], resources: [secrets], verbs: [get]}]"#)
    );
    let bindings = yaml_documents("config/rbac/role_binding.yaml");
    assert!(
        bindings
            .iter()
            .all(|binding| binding["roleRef"]["name"] != "waymark-secret-reader"),
        "the kustomize base never binds Secrets cluster-wide"
    );
}

#[test]
fn helm_chart_grants_the_same_rules_as_the_kustomize_base() {
    let controller = base_rules("config/rbac/role.yaml", "ClusterRole", "waymark-controller");
    let secrets = base_rules(
        "config/rbac/secret_reader_role.yaml",
        "ClusterRole",
        "waymark-secret-reader",
    );
    let Some(helm) = helm::helm_or_skip() else {
        return;
    };
    let all_namespaces = helm.render("");
    assert_eq!(
        rendered_rules(&all_namespaces, "ClusterRole", "waymark-controller"),
        controller
    );
    assert_eq!(
        rendered_rules(&all_namespaces, "ClusterRole", "waymark-secret-reader"),
        secrets
    );
    assert_eq!(
        rendered_rules(&all_namespaces, "Role", "waymark-leader-election"),
        base_rules(
            "config/rbac/leader_election_role.yaml",
            "Role",
            "waymark-leader-election"
        )
    );

    // One namespace: the same rules, with Secrets, in a Role there.
    let one_namespace = helm.render("watchNamespace: shop");
    let mut namespaced = rules_of(&controller).to_vec();
    namespaced.extend(rules_of(&secrets).iter().cloned());
    assert_eq!(
        rendered_rules(&one_namespace, "Role", "waymark-controller"),
        Value::Array(namespaced)
    );
}

#[test]
fn roles_for_people_aggregate_viewers_into_view_and_operators_into_edit_and_admin() {
    let path = "config/rbac/user_roles.yaml";
    let label = |name: &str, aggregate: &str| {
        yaml_documents(path)
            .into_iter()
            .find(|document| document["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("{path} has no {name}"))["metadata"]["labels"]
            [format!("rbac.authorization.k8s.io/aggregate-to-{aggregate}").as_str()]
        .clone()
    };
    assert_eq!(label("waymark-viewer", "view"), "true");
    assert_eq!(label("waymark-operator", "edit"), "true");
    assert_eq!(label("waymark-operator", "admin"), "true");
    assert!(
        label("waymark-viewer", "edit").is_null(),
        "view already aggregates into edit"
    );

    let viewer = base_rules(path, "ClusterRole", "waymark-viewer");
    assert_eq!(grants(&viewer, "releases"), ["get", "list", "watch"]);
    assert!(
        grants(&viewer, "releases/status").is_empty(),
        "viewers cannot promote"
    );
    let operator = base_rules(path, "ClusterRole", "waymark-operator");
    assert_eq!(grants(&operator, "releases"), ["get", "list", "watch"]);
    assert_eq!(
        grants(&operator, "releases/status"),
        ["patch"],
        "promote, abort and retry write the status subresource; the spec stays Git's"
    );
    for rules in [&viewer, &operator] {
        for rule in rules_of(rules) {
            assert_eq!(rule["apiGroups"], parse("[waymark.dev]"), "{rule:?}");
        }
    }

    let Some(helm) = helm::helm_or_skip() else {
        return;
    };
    let rendered = helm.render("");
    for name in ["waymark-viewer", "waymark-operator"] {
        assert_eq!(
            rendered_rules(&rendered, "ClusterRole", name),
            base_rules(path, "ClusterRole", name)
        );
        let document = rendered
            .iter()
            .find(|document| document["metadata"]["name"] == name)
            .unwrap();
        for aggregate in ["view", "edit", "admin"] {
            let key = format!("rbac.authorization.k8s.io/aggregate-to-{aggregate}");
            assert_eq!(
                document["metadata"]["labels"][key.as_str()],
                label(name, aggregate),
                "{name} {key}"
            );
        }
    }
}

#[test]
fn every_manifest_in_a_kustomize_directory_is_listed_in_its_kustomization() {
    for directory in ["config/rbac", "config/manager", "config/prometheus"] {
        let listed: Vec<String> = yaml(&format!("{directory}/kustomization.yaml"))["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|resource| resource.as_str().unwrap().to_string())
            .collect();
        let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(directory);
        for entry in std::fs::read_dir(&full).unwrap() {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            let manifest = name.ends_with(".yaml")
                && name != "kustomization.yaml"
                && !name.starts_with("waymark-rules");
            if manifest {
                assert!(
                    listed.contains(&name),
                    "{directory}/{name} is not in its kustomization"
                );
            }
        }
    }
}

#[test]
fn argocd_patch_carries_exactly_the_health_check_script() {
    let patch = yaml("config/argocd/argocd-cm-patch.yaml");
    let script = patch["data"]["resource.customizations.health.waymark.dev_Release"]
        .as_str()
        .expect("the health customization key");
    assert_eq!(script, read("config/argocd/health.lua"));
}

// Declared here rather than at the top, next to the test that uses it.
mod common;

#[test]
fn argocd_health_check_maps_every_phase_under_lua_5_1() {
    use serde_json::json;
    let release = |status: serde_json::Value| {
        json!({
            "apiVersion": "waymark.dev/v1alpha1",
            "kind": "Release",
            "metadata": {"name": "checkout", "namespace": "shop", "generation": 3},
            "status": status,
        })
    };
    let settled = |phase: &str| json!({"phase": phase, "observedGeneration": 3});
    for (status, health, message) in [
        (
            json!(null),
            "Progressing",
            "Waiting for the Waymark controller to report a phase",
        ),
        (
            json!({"phase": "Healthy", "observedGeneration": 2}),
            "Progressing",
            "Waiting for the Waymark controller to observe generation 3",
        ),
        (settled("Healthy"), "Healthy", "Healthy"),
        (settled("Progressing"), "Progressing", "Progressing"),
        (settled("Paused"), "Suspended", "Paused"),
        (settled("RolledBack"), "Degraded", "RolledBack"),
        (settled("Degraded"), "Degraded", "Degraded"),
        (settled("NotAPhase"), "Unknown", "NotAPhase"),
        (
            json!({"phase": "Paused", "observedGeneration": 3, "reason": "AwaitingPromotion",
                   "message": "Step 2 of 4 waits for waymark promote"}),
            "Suspended",
            "AwaitingPromotion: Step 2 of 4 waits for waymark promote",
        ),
        (
            json!({"phase": "RolledBack", "observedGeneration": 3, "reason": "", "message": null}),
            "Degraded",
            "RolledBack",
        ),
    ] {
        let object = release(status);
        assert_eq!(
            common::argocd::health(&object),
            (health.to_string(), message.to_string()),
            "{object}"
        );
    }
}

#[test]
fn manager_probes_health_and_readiness() {
    let deployment = yaml("config/manager/manager.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<_> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(args[0], "controller");
    assert!(
        args.contains(&"--leader-elect"),
        "two replicas need a leader"
    );
}

#[test]
fn manager_runs_the_versioned_image_hardened_with_a_disruption_budget() {
    let deployment = yaml("config/manager/manager.yaml");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        Some(format!("waymark:{}", env!("CARGO_PKG_VERSION")).as_str()),
        "the tag is the crate version, as `docker build -t waymark:<version> .` makes it"
    );
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], parse("[ALL]"));
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");

    let replicas = deployment["spec"]["replicas"].as_i64().unwrap();
    let budget = yaml("config/manager/poddisruptionbudget.yaml");
    assert!(
        replicas > 1,
        "a budget of minAvailable 1 needs a second replica"
    );
    assert_eq!(budget["spec"]["minAvailable"], 1);
    let pod_labels = &deployment["spec"]["template"]["metadata"]["labels"];
    for selector in [
        &budget["spec"]["selector"]["matchLabels"],
        &yaml("config/manager/service.yaml")["spec"]["selector"],
    ] {
        for (key, value) in selector.as_object().unwrap() {
            assert_eq!(&pod_labels[key], value);
        }
    }
}

#[test]
fn argocd_ignores_the_route_fields_of_waymarks_field_manager() {
    let manager = waymark::api::FIELD_MANAGER;
    let application = yaml("config/argocd/application-patch.yaml");
    let ignored = &application["spec"]["ignoreDifferences"][0];
    assert_eq!(ignored["group"], "gateway.networking.k8s.io");
    assert_eq!(ignored["kind"], "HTTPRoute");
    assert_eq!(
        ignored["managedFieldsManagers"],
        serde_saphyr::from_str::<Value>(&format!("[{manager}]")).unwrap(),
        "the manager the controller applies route weights with"
    );
    let options = application["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .unwrap();
    assert!(
        options
            .iter()
            .any(|o| o.as_str() == Some("RespectIgnoreDifferences=true"))
    );

    let patch = yaml("config/argocd/argocd-cm-patch.yaml");
    let system_wide: Value = serde_saphyr::from_str(
        patch["data"]["resource.customizations.ignoreDifferences.gateway.networking.k8s.io_HTTPRoute"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        system_wide["managedFieldsManagers"][0].as_str(),
        Some(manager)
    );
}

/// With an HPA writing `spec.replicas` through the scale subresource, Argo CD must ignore that
/// field of the Release (and still the route fields Waymark manages: a merge patch replaces the
/// whole list), and a sync must respect it.
#[test]
fn argocd_ignores_the_replicas_an_hpa_writes_and_keeps_the_route_entry() {
    let application = yaml("config/argocd/application-hpa-patch.yaml");
    let entries = application["spec"]["ignoreDifferences"].as_array().unwrap();
    let route = yaml("config/argocd/application-patch.yaml");
    assert_eq!(
        entries[0], route["spec"]["ignoreDifferences"][0],
        "the route entry of application-patch.yaml"
    );
    let release = entries
        .iter()
        .find(|entry| entry["kind"] == "Release")
        .expect("an entry for Releases");
    assert_eq!(release["group"], "waymark.dev");
    // The pointer is the scale subresource's specReplicasPath.
    let crd = waymark::api::crd::release_crd();
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("the scale subresource");
    let pointer = scale.spec_replicas_path.replace('.', "/");
    assert_eq!(release["jsonPointers"][0].as_str(), Some(pointer.as_str()));
    assert_eq!(release["jsonPointers"].as_array().map(Vec::len), Some(1));
    let options = application["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .unwrap();
    assert!(
        options
            .iter()
            .any(|o| o.as_str() == Some("RespectIgnoreDifferences=true"))
    );

    // The HPA example targets a Release through the scale subresource's group and kind.
    let hpa = yaml("examples/checkout-hpa.yaml");
    assert_eq!(hpa["apiVersion"], "autoscaling/v2");
    let target = &hpa["spec"]["scaleTargetRef"];
    assert_eq!(target["apiVersion"], "waymark.dev/v1alpha1");
    assert_eq!(target["kind"], "Release");
    assert!(hpa["spec"]["minReplicas"].as_i64().unwrap_or(0) >= 1);
}
