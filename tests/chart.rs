//! The Helm chart, rendered and linted by the real `helm` (see `common/helm.rs`): what it
//! installs for the default values, for one watched namespace with three replicas, and with the
//! monitoring objects on; the Release CRD it carries; and the values it refuses.
//!
//! Every test needs `helm` (`WAYMARK_HELM` or the PATH): without it each prints `SKIPPED`, and
//! fails under `CI=true`. The e2e walk `the_helm_chart_applies_to_the_api_server` installs the
//! same chart on a real API server.

#[path = "common/helm.rs"]
mod helm;

use std::collections::BTreeSet;

use serde_json::Value;

use helm::{RELEASE_NAME, RELEASE_NAMESPACE, helm_or_skip};

/// The tests' `helm`, or return from the test (skipped) when there is none outside CI.
macro_rules! helm {
    () => {
        match helm_or_skip() {
            Some(helm) => helm,
            None => return,
        }
    };
}

const DEFAULTS: &str = "";
const WATCHED_SHOP_WITH_THREE_REPLICAS: &str = "{watchNamespace: shop, replicaCount: 3}";
const MONITORING_ON: &str = r#"
metrics: {serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}}
prometheusRule: {enabled: true, labels: {release: prom}}
grafanaDashboard: {enabled: true, namespace: monitoring, annotations: {grafana_folder: Delivery}}
"#;
const CRD_FILE: &str = "crds/waymark.dev_releases.yaml";
const CHART_CRD_FILE: &str = "charts/waymark/files/crds/waymark.dev_releases.yaml";

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

fn read(path: &str) -> String {
    let full = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn kinds(documents: &[Value]) -> Vec<(String, String)> {
    documents
        .iter()
        .map(|document| {
            (
                document["kind"].as_str().unwrap_or_default().to_string(),
                document["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect()
}

fn find<'a>(documents: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    documents
        .iter()
        .find(|document| document["kind"] == kind && document["metadata"]["name"] == name)
}

fn only<'a>(documents: &'a [Value], kind: &str) -> &'a Value {
    let found: Vec<_> = documents
        .iter()
        .filter(|document| document["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "exactly one {kind}: {:?}", kinds(documents));
    found[0]
}

fn none_of(documents: &[Value], kind: &str) -> bool {
    documents.iter().all(|document| document["kind"] != kind)
}

fn container(documents: &[Value]) -> &Value {
    &only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(documents: &[Value]) -> Vec<String> {
    container(documents)["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("string args").to_string())
        .collect()
}

// ----- lint, values and schema -----

#[test]
fn helm_lint_strict_passes_for_every_tested_set_of_values() {
    let helm = helm!();
    for values in [
        DEFAULTS,
        WATCHED_SHOP_WITH_THREE_REPLICAS,
        MONITORING_ON,
        "{crds: {install: false}}",
    ] {
        if let Err(report) = helm.lint_strict(values) {
            panic!("helm lint --strict with {values:?}:\n{report}");
        }
    }
}

#[test]
fn the_schema_accepts_a_full_set_of_sensible_values() {
    let helm = helm!();
    let values = r#"
replicaCount: 2
image: {repository: platform/waymark, tag: 0.1.0-rc.1, pullPolicy: Always}
imagePullSecrets: [{name: pull}]
crds: {install: false, keep: false}
watchNamespace: shop
rbac: {secretNamespaces: [shop], userRoles: false}
serviceAccount: {name: waymark.controller, annotations: {team: platform}}
metrics: {port: 9090, serviceMonitor: {enabled: true, interval: 1m30s, labels: {release: prom}}}
prometheusRule: {enabled: true, labels: {release: prom}}
grafanaDashboard: {enabled: true, namespace: monitoring, labels: {}, annotations: {grafana_folder: Delivery}}
logLevel: info,waymark=debug,kube_runtime::watcher=error
logFormat: text
resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 1, memory: 512Mi, ephemeral-storage: 1.5G}}
podAnnotations: {a: b}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations:
  - {key: dedicated, operator: Equal, value: platform, effect: NoSchedule}
  - {operator: Exists, effect: NoExecute, tolerationSeconds: 300}
affinity: {}
"#;
    if let Err(report) = helm.lint_strict(values) {
        panic!("{report}");
    }
    helm.render(values);
}

#[test]
fn the_schema_refuses_wrong_values_before_anything_renders() {
    let helm = helm!();
    for (values, why) in [
        ("replicaCount: 0", "no controller at all"),
        ("replicaCount: '2'", "a string where a number belongs"),
        ("replicaCount: 1.5", "half a replica"),
        ("replicas: 2", "a misspelled key is not ignored"),
        ("image: {pullPolicy: Sometimes}", "not a pull policy"),
        ("image: {repository: ''}", "an empty image"),
        ("image: {tag: 'v1 beta'}", "not an image tag"),
        ("crds: {install: 'yes'}", "a string where a boolean belongs"),
        ("crds: {upgrade: true}", "not a CRD switch of this chart"),
        ("watchNamespace: Shop_1", "not a namespace name"),
        (
            "rbac: {secretNamespaces: [shop, shop]}",
            "a namespace twice",
        ),
        (
            "rbac: {userRoles: 'yes'}",
            "a string where a boolean belongs",
        ),
        ("serviceAccount: {name: Waymark_SA}", "not an object name"),
        ("serviceAccount: {name: '!!x'}", "not an object name"),
        ("metrics: {port: 70000}", "not a port"),
        (
            "metrics: {serviceMonitor: {interval: often}}",
            "not a duration",
        ),
        ("logLevel: ''", "no directive"),
        (
            "logLevel: debugg",
            "a misspelt level, which RUST_LOG reads as a target and logs nothing else",
        ),
        ("logLevel: 'waymark=loud'", "not a level"),
        ("logLevel: 'info;debug'", "not a directive separator"),
        ("logFormat: xml", "not a log format"),
        ("resources: {limits: {memory: [1]}}", "not a quantity"),
        ("resources: {limits: {memory: 1Gb}}", "not a quantity"),
        ("resources: {limits: {cpu: -1}}", "a negative quantity"),
        ("resources: {limit: {cpu: 1}}", "limits misspelled"),
        ("tolerations: [{operator: Sometimes}]", "not an operator"),
        ("tolerations: [{effect: NoRun}]", "not an effect"),
        ("tolerations: [{keys: dedicated}]", "not a toleration field"),
        (
            "tolerations: {key: dedicated}",
            "one toleration, not a list",
        ),
        (
            "grafanaDashboard: {enabled: 'true'}",
            "a string where a boolean belongs",
        ),
        ("nodeSelector: {zone: 1}", "label values are strings"),
    ] {
        let refused = helm
            .template_as(RELEASE_NAME, RELEASE_NAMESPACE, values, &[])
            .expect_err(&format!("{values} ({why}) was rendered"));
        assert!(
            refused.contains("don't meet the specifications of the schema"),
            "{values}: {refused}"
        );
        assert!(helm.lint_strict(values).is_err(), "{values} ({why}) lints");
    }
}

/// The `.Values` paths a text uses: `.Values.metrics.serviceMonitor.enabled` and so on.
fn value_paths(text: &str) -> BTreeSet<String> {
    text.match_indices(".Values.")
        .map(|(start, found)| {
            text[start + found.len()..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '_')
                .collect::<String>()
                .trim_end_matches('.')
                .to_string()
        })
        .collect()
}

/// The leaf paths of a values document (maps are walked, anything else is a leaf).
fn leaf_paths(value: &Value, prefix: &str, into: &mut BTreeSet<String>) {
    match value.as_object() {
        Some(map) if !map.is_empty() => {
            for (key, child) in map {
                let key = key.as_str();
                let path = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}.{key}")
                };
                leaf_paths(child, &path, into);
            }
        }
        _ => {
            into.insert(prefix.to_string());
        }
    }
}

#[test]
fn every_value_the_templates_use_is_in_the_schema_and_every_default_is_used() {
    let schema: serde_json::Value =
        serde_json::from_str(&read("charts/waymark/values.schema.json")).unwrap();
    let defaults = yaml(&read("charts/waymark/values.yaml"));
    let templates =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/waymark/templates");
    let mut used = BTreeSet::new();
    for entry in std::fs::read_dir(&templates).unwrap() {
        used.extend(value_paths(
            &std::fs::read_to_string(entry.unwrap().path()).unwrap(),
        ));
    }
    assert!(used.len() > 20, "{used:?}");
    for path in &used {
        let mut node = &schema;
        let mut default = &defaults;
        for key in path.split('.') {
            node = &node["properties"][key];
            assert!(
                node.is_object(),
                ".Values.{path}: values.schema.json has no `{key}` there"
            );
            default = &default[key];
        }
        assert!(
            node.get("type").is_some()
                || node.get("enum").is_some()
                || node.get("anyOf").is_some()
                || node.get("$ref").is_some(),
            ".Values.{path}: the schema says nothing of its type: {node}"
        );
        assert!(
            !default.is_null(),
            ".Values.{path} has no default in values.yaml"
        );
    }
    let mut leaves = BTreeSet::new();
    leaf_paths(&defaults, "", &mut leaves);
    for leaf in leaves {
        assert!(
            used.iter()
                .any(|path| leaf == *path || leaf.starts_with(&format!("{path}."))),
            "values.yaml sets {leaf}, which no template uses"
        );
    }
}

// ----- what the chart installs -----

#[test]
fn default_install_watches_all_namespaces_with_a_cluster_role_and_one_leader_elected_replica() {
    let helm = helm!();
    let documents = helm.render(DEFAULTS);
    let names: BTreeSet<_> = kinds(&documents).into_iter().collect();
    let expected: BTreeSet<(String, String)> = [
        ("CustomResourceDefinition", "releases.waymark.dev"),
        ("ServiceAccount", "waymark-controller"),
        ("ClusterRole", "waymark-controller"),
        ("ClusterRoleBinding", "waymark-controller"),
        ("ClusterRole", "waymark-secret-reader"),
        ("Role", "waymark-leader-election"),
        ("RoleBinding", "waymark-leader-election"),
        ("ClusterRole", "waymark-viewer"),
        ("ClusterRole", "waymark-operator"),
        ("Deployment", "waymark-controller"),
        ("Service", "waymark-metrics"),
    ]
    .into_iter()
    .map(|(kind, name)| (kind.to_string(), name.to_string()))
    .collect();
    assert_eq!(names, expected);

    let deployment = only(&documents, "Deployment");
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(
        args(&documents),
        [
            "controller",
            "--metrics-addr=0.0.0.0:8080",
            "--leader-elect"
        ],
        "leader election even with one replica: a rolling update runs two side by side"
    );
    assert!(
        none_of(&documents, "PodDisruptionBudget"),
        "one replica: a PodDisruptionBudget would block every drain"
    );
    let binding = find(&documents, "ClusterRoleBinding", "waymark-controller").unwrap();
    assert_eq!(binding["roleRef"]["name"], "waymark-controller");
    assert_eq!(binding["subjects"][0]["name"], "waymark-controller");
    assert_eq!(binding["subjects"][0]["namespace"], "waymark-system");
    let annotations = &deployment["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"], "true");
    assert_eq!(annotations["prometheus.io/port"], "8080");
}

#[test]
fn a_watched_namespace_gets_a_role_there_and_three_replicas_get_a_disruption_budget() {
    let helm = helm!();
    let documents = helm.render(WATCHED_SHOP_WITH_THREE_REPLICAS);
    assert!(
        none_of(&documents, "ClusterRoleBinding"),
        "nothing cluster-wide is granted to the controller: {:?}",
        kinds(&documents)
    );
    assert!(find(&documents, "ClusterRole", "waymark-controller").is_none());
    assert!(find(&documents, "ClusterRole", "waymark-secret-reader").is_none());

    let role = find(&documents, "Role", "waymark-controller").expect("a Role");
    assert_eq!(role["metadata"]["namespace"], "shop");
    let binding = find(&documents, "RoleBinding", "waymark-controller").expect("a RoleBinding");
    assert_eq!(binding["metadata"]["namespace"], "shop");
    assert_eq!(binding["roleRef"]["kind"], "Role");
    assert_eq!(binding["subjects"][0]["namespace"], "waymark-system");
    let lease_role = find(&documents, "Role", "waymark-leader-election").unwrap();
    assert_eq!(
        lease_role["metadata"]["namespace"], "waymark-system",
        "the Lease lives beside the controller, not in the watched namespace"
    );

    assert_eq!(only(&documents, "Deployment")["spec"]["replicas"], 3);
    assert_eq!(
        args(&documents),
        [
            "controller",
            "--metrics-addr=0.0.0.0:8080",
            "--leader-elect",
            "--namespace=shop"
        ]
    );
    let budget = only(&documents, "PodDisruptionBudget");
    assert_eq!(budget["spec"]["minAvailable"], 1);
    assert_eq!(budget["metadata"]["namespace"], "waymark-system");
}

#[test]
fn two_replicas_are_enough_for_a_disruption_budget() {
    let helm = helm!();
    only(&helm.render("replicaCount: 2"), "PodDisruptionBudget");
}

#[test]
fn watching_all_namespaces_reads_secrets_only_in_the_listed_ones() {
    let helm = helm!();
    let documents = helm.render("rbac: {secretNamespaces: [shop, cart]}");
    let bindings: BTreeSet<String> = documents
        .iter()
        .filter(|document| {
            document["kind"] == "RoleBinding"
                && document["roleRef"]["name"] == "waymark-secret-reader"
        })
        .map(|document| {
            assert_eq!(document["roleRef"]["kind"], "ClusterRole");
            assert_eq!(document["subjects"][0]["name"], "waymark-controller");
            assert_eq!(document["subjects"][0]["namespace"], "waymark-system");
            document["metadata"]["namespace"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(bindings, ["cart".to_string(), "shop".to_string()].into());
    for document in &documents {
        if document["kind"] == "ClusterRoleBinding" {
            assert_ne!(
                document["roleRef"]["name"], "waymark-secret-reader",
                "Secrets are never readable cluster-wide"
            );
        }
    }
}

#[test]
fn a_watched_namespace_refuses_secret_namespaces_it_cannot_see() {
    let helm = helm!();
    let refused = helm
        .template_as(
            RELEASE_NAME,
            RELEASE_NAMESPACE,
            "{watchNamespace: shop, rbac: {secretNamespaces: [shop, cart]}}",
            &[],
        )
        .expect_err("a Secret namespace outside the watched one was rendered");
    assert!(
        refused.contains(r#"rbac.secretNamespaces lists "cart", but watchNamespace is "shop""#)
            && refused.contains("Remove rbac.secretNamespaces"),
        "{refused}"
    );
    // (`helm lint` renders in lint mode, where `fail` only logs: install and template refuse.)
    // Naming the watched namespace itself is redundant, not wrong: its Role reads Secrets.
    let documents = helm.render("{watchNamespace: shop, rbac: {secretNamespaces: [shop]}}");
    assert!(find(&documents, "ClusterRole", "waymark-secret-reader").is_none());
    let role = find(&documents, "Role", "waymark-controller").unwrap();
    assert!(
        role["rules"]
            .as_array()
            .unwrap()
            .iter()
            .any(|rule| rule["resources"] == yaml("[secrets]")),
        "{role:?}"
    );
}

#[test]
fn the_controller_container_runs_hardened_with_the_values_resources() {
    let helm = helm!();
    let documents = helm.render("resources: {requests: {cpu: 10m}, limits: {memory: 1Gi}}");
    let pod = &only(&documents, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let security = &container(&documents)["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["capabilities"]["drop"], yaml("[ALL]"));
    assert!(security["capabilities"]["add"].is_null());
    assert_eq!(security["seccompProfile"]["type"], "RuntimeDefault");
    assert_eq!(
        container(&documents)["resources"],
        yaml("{requests: {cpu: 10m, memory: 64Mi}, limits: {memory: 1Gi}}"),
        "values merge over the defaults key by key, as with `helm install -f`"
    );
    assert_eq!(
        container(&helm.render(DEFAULTS))["resources"],
        yaml("{requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}")
    );
}

#[test]
fn scheduling_values_reach_the_pod_spec_as_given() {
    let helm = helm!();
    let documents = helm.render(
        r#"
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: platform, effect: NoSchedule}]
affinity: {nodeAffinity: {requiredDuringSchedulingIgnoredDuringExecution: {nodeSelectorTerms: [{matchExpressions: [{key: zone, operator: In, values: [a]}]}]}}}
serviceAccount: {name: delivery-bot}
"#,
    );
    let pod = &only(&documents, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["priorityClassName"], "system-cluster-critical");
    assert_eq!(pod["nodeSelector"], yaml("{kubernetes.io/os: linux}"));
    assert_eq!(
        pod["tolerations"],
        yaml("[{key: dedicated, operator: Equal, value: platform, effect: NoSchedule}]")
    );
    assert_eq!(
        pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
            [0]["matchExpressions"][0]["key"],
        "zone"
    );
    assert_eq!(pod["serviceAccountName"], "delivery-bot");
    assert!(find(&documents, "ServiceAccount", "delivery-bot").is_some());
    let default_pod = helm.render(DEFAULTS);
    let default_pod = &only(&default_pod, "Deployment")["spec"]["template"]["spec"];
    for field in [
        "priorityClassName",
        "nodeSelector",
        "tolerations",
        "affinity",
    ] {
        assert!(default_pod[field].is_null(), "{field} is unset by default");
    }
}

#[test]
fn a_priority_class_name_that_yaml_would_read_as_a_tag_renders_as_a_string() {
    let helm = helm!();
    // Unquoted, `priorityClassName: !!x` is a YAML tag, not the string the user gave.
    for name in ["!!x", "#x", "*x", "x: y"] {
        let documents = helm
            .template_as(
                RELEASE_NAME,
                RELEASE_NAMESPACE,
                DEFAULTS,
                &[&format!("priorityClassName={name}")],
            )
            .unwrap_or_else(|error| panic!("priorityClassName={name}: {error}"));
        assert_eq!(
            only(&documents, "Deployment")["spec"]["template"]["spec"]["priorityClassName"],
            Value::String(name.to_string()),
            "priorityClassName={name}"
        );
    }
}

#[test]
fn pod_annotations_are_added_and_may_turn_the_scrape_annotations_off() {
    let helm = helm!();
    let documents =
        helm.render(r#"podAnnotations: {team: platform, prometheus.io/scrape: "false"}"#);
    let annotations =
        &only(&documents, "Deployment")["spec"]["template"]["metadata"]["annotations"];
    assert_eq!(
        annotations,
        &yaml(r#"{prometheus.io/port: "8080", prometheus.io/scrape: "false", team: platform}"#),
        "one key each, the value's winning (a ServiceMonitor user stops the second scrape)"
    );
}

#[test]
fn the_image_tag_defaults_to_the_app_version_which_is_the_crate_version() {
    let helm = helm!();
    let chart_yaml = yaml(&read("charts/waymark/Chart.yaml"));
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
    let image = |documents: &[Value]| container(documents)["image"].as_str().unwrap().to_string();
    assert_eq!(
        image(&helm.render(DEFAULTS)),
        format!("waymark:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        image(&helm.render("image: {repository: platform/waymark, tag: 9.9.9}")),
        "platform/waymark:9.9.9"
    );
}

#[test]
fn selectors_match_the_pod_and_the_service_targets_a_named_container_port() {
    let helm = helm!();
    let documents = helm.render(WATCHED_SHOP_WITH_THREE_REPLICAS);
    let deployment = only(&documents, "Deployment");
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_object()
        .unwrap();
    let matches_pod = |selector: &Value| {
        let selector = selector.as_object().expect("a selector");
        assert!(!selector.is_empty());
        selector
            .iter()
            .all(|(key, value)| pod_labels.get(key) == Some(value))
    };
    assert!(matches_pod(&deployment["spec"]["selector"]["matchLabels"]));
    assert!(matches_pod(
        &only(&documents, "Service")["spec"]["selector"]
    ));
    assert!(matches_pod(
        &only(&documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"]
    ));
    let port_name = &only(&documents, "Service")["spec"]["ports"][0]["targetPort"];
    let container_ports = container(&documents)["ports"].as_array().unwrap();
    assert!(
        container_ports
            .iter()
            .any(|port| &port["name"] == port_name),
        "{port_name:?} not among {container_ports:?}"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(&container(&documents)[probe]["httpGet"]["port"], port_name);
    }
}

#[test]
fn every_object_is_named_once_and_namespaced_ones_say_where() {
    let helm = helm!();
    let cluster_scoped = [
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
    ];
    for values in [DEFAULTS, WATCHED_SHOP_WITH_THREE_REPLICAS, MONITORING_ON] {
        let documents = helm.render(values);
        let mut seen = BTreeSet::new();
        for document in &documents {
            let kind = document["kind"].as_str().expect("a kind");
            assert!(
                document["apiVersion"].is_string(),
                "{kind} has an apiVersion"
            );
            let name = document["metadata"]["name"].as_str().expect("a name");
            let namespace = document["metadata"]["namespace"].as_str();
            if cluster_scoped.contains(&kind) {
                assert_eq!(namespace, None, "{kind} {name} is cluster-scoped");
            } else {
                assert!(namespace.is_some(), "{kind} {name} needs a namespace");
            }
            assert!(
                seen.insert((kind.to_string(), namespace, name.to_string())),
                "{kind} {name} rendered twice"
            );
        }
    }
}

#[test]
fn another_release_name_prefixes_the_controller_objects_but_not_the_roles_for_people() {
    let helm = helm!();
    let documents = helm.template_as("prod", "ops", DEFAULTS, &[]).unwrap();
    assert!(find(&documents, "Deployment", "prod-waymark-controller").is_some());
    assert!(find(&documents, "ClusterRole", "prod-waymark-controller").is_some());
    assert!(find(&documents, "ClusterRole", "waymark-viewer").is_some());
    let documents = helm.render("rbac: {userRoles: false}");
    assert!(find(&documents, "ClusterRole", "waymark-viewer").is_none());
    assert!(find(&documents, "ClusterRole", "waymark-operator").is_none());
}

// ----- the CRD -----

fn rendered_crd(documents: &[Value]) -> Option<&Value> {
    find(
        documents,
        "CustomResourceDefinition",
        "releases.waymark.dev",
    )
}

#[test]
fn the_chart_carries_an_exact_copy_of_the_generated_crd() {
    assert!(
        read(CHART_CRD_FILE) == read(CRD_FILE),
        "{CHART_CRD_FILE} is stale: run `cp {CRD_FILE} {CHART_CRD_FILE}` and commit it"
    );
}

#[test]
fn by_default_the_crd_renders_as_generated_with_the_chart_labels_and_the_keep_policy() {
    let helm = helm!();
    let documents = helm.render(DEFAULTS);
    let crd = rendered_crd(&documents).expect("the CRD is installed by default");
    assert_eq!(
        crd["metadata"]["annotations"],
        yaml("{helm.sh/resource-policy: keep}"),
        "helm uninstall must not delete every Release"
    );
    let service = only(&documents, "Service");
    assert_eq!(crd["metadata"]["labels"], service["metadata"]["labels"]);

    // Apart from what the chart adds to its metadata, the CRD is exactly the generated one.
    let mut expected = yaml(&read(CRD_FILE));
    expected["metadata"]["labels"] = service["metadata"]["labels"].clone();
    expected["metadata"]["annotations"] = yaml("{helm.sh/resource-policy: keep}");
    assert!(
        crd == &expected,
        "the rendered CRD differs from {CRD_FILE} beyond the chart's labels and annotation"
    );
}

#[test]
fn crds_install_false_renders_no_crd() {
    let helm = helm!();
    let documents = helm.render("crds: {install: false}");
    assert!(
        rendered_crd(&documents).is_none(),
        "{:?}",
        kinds(&documents)
    );
    assert!(
        none_of(&documents, "CustomResourceDefinition"),
        "{:?}",
        kinds(&documents)
    );
    assert!(find(&documents, "Deployment", "waymark-controller").is_some());
}

#[test]
fn crds_keep_false_renders_the_crd_without_the_keep_policy() {
    let helm = helm!();
    let documents = helm.render("crds: {keep: false}");
    let crd = rendered_crd(&documents).expect("still installed");
    assert!(
        crd["metadata"]["annotations"].is_null(),
        "{:?}",
        crd["metadata"]
    );
    assert_eq!(crd["spec"], yaml(&read(CRD_FILE))["spec"]);
}

// ----- monitoring -----

#[test]
fn monitoring_objects_render_only_when_enabled() {
    let helm = helm!();
    let defaults = helm.render(DEFAULTS);
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(
            none_of(&defaults, kind),
            "{kind} is off by default: it needs CRDs or a Grafana that not every cluster has"
        );
    }

    let documents = helm.render(MONITORING_ON);
    let monitor = only(&documents, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let service = only(&documents, "Service");
    let selected = monitor["spec"]["selector"]["matchLabels"]
        .as_object()
        .unwrap();
    assert!(
        selected
            .iter()
            .all(|(key, value)| service["metadata"]["labels"].get(key) == Some(value)),
        "the ServiceMonitor selects the metrics Service"
    );
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        service["spec"]["ports"][0]["name"]
    );
    assert_eq!(monitor["spec"]["endpoints"][0]["interval"], "15s");

    let rule = only(&documents, "PrometheusRule");
    assert_eq!(rule["metadata"]["labels"]["release"], "prom");
    assert_eq!(
        rule["spec"],
        yaml(&read("config/prometheus/waymark-rules.yaml"))
    );

    let dashboard = only(&documents, "ConfigMap");
    assert_eq!(dashboard["metadata"]["namespace"], "monitoring");
    assert_eq!(dashboard["metadata"]["labels"]["grafana_dashboard"], "1");
    assert_eq!(
        dashboard["metadata"]["annotations"]["grafana_folder"],
        "Delivery"
    );
    let json: serde_json::Value =
        serde_json::from_str(dashboard["data"]["waymark.json"].as_str().unwrap()).unwrap();
    let shipped: serde_json::Value =
        serde_json::from_str(&read("config/grafana/waymark.json")).unwrap();
    assert_eq!(json, shipped);
}

#[test]
fn extra_labels_may_not_redefine_the_charts_own_but_may_retarget_the_grafana_sidecar() {
    let helm = helm!();
    for (values, field) in [
        (
            "metrics: {serviceMonitor: {enabled: true, labels: {app.kubernetes.io/name: x}}}",
            "metrics.serviceMonitor.labels",
        ),
        (
            "prometheusRule: {enabled: true, labels: {helm.sh/chart: x}}",
            "prometheusRule.labels",
        ),
        (
            "grafanaDashboard: {enabled: true, labels: {app.kubernetes.io/instance: x}}",
            "grafanaDashboard.labels",
        ),
    ] {
        let refused = helm
            .template_as(RELEASE_NAME, RELEASE_NAMESPACE, values, &[])
            .expect_err(values);
        assert!(
            refused.contains(&format!("{field} sets the label"))
                && refused.contains(&format!("remove it from {field}")),
            "{refused}"
        );
    }
    let documents =
        helm.render(r#"grafanaDashboard: {enabled: true, labels: {grafana_dashboard: "waymark"}}"#);
    assert_eq!(
        only(&documents, "ConfigMap")["metadata"]["labels"]["grafana_dashboard"],
        "waymark",
        "the sidecar's labelValue may be another than 1"
    );
}

#[test]
fn the_chart_carries_exact_copies_of_the_dashboard_and_the_alert_rules() {
    assert!(
        read("charts/waymark/files/waymark-dashboard.json") == read("config/grafana/waymark.json"),
        "copy config/grafana/waymark.json to charts/waymark/files/waymark-dashboard.json"
    );
    assert!(
        read("charts/waymark/files/waymark-rules.yaml")
            == read("config/prometheus/waymark-rules.yaml"),
        "copy config/prometheus/waymark-rules.yaml to charts/waymark/files/waymark-rules.yaml"
    );
}
