//! The Helm chart, rendered without `helm` (see `support/chart.rs`): what it installs for the
//! default values, for one watched namespace with three replicas, and with the monitoring
//! objects on; and the values it refuses.
//!
//! The default and watched-namespace renders are written under Cargo's target directory
//! (`waymark-chart/*.yaml`, see `support::chart::write_rendered`) for a later
//! `kubectl apply --dry-run=server` against a real API server.

#[path = "support/chart.rs"]
mod chart;

use std::collections::BTreeSet;

use serde_yaml::Value;

use chart::{merged_values, render_chart, render_chart_as, render_template, schema_problems};

fn yaml(text: &str) -> Value {
    serde_yaml::from_str(text).unwrap()
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

fn container(documents: &[Value]) -> &Value {
    &only(documents, "Deployment")["spec"]["template"]["spec"]["containers"][0]
}

fn args(documents: &[Value]) -> Vec<String> {
    container(documents)["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("string args").to_string())
        .collect()
}

fn watched_shop_with_three_replicas() -> Value {
    yaml("{watchNamespace: shop, replicaCount: 3}")
}

/// Documents written to a file read back the same, so the e2e suite applies what was checked.
fn write_and_reread(name: &str, documents: &[Value]) {
    let path = chart::write_rendered(name, documents);
    let text = std::fs::read_to_string(&path).unwrap();
    let reread: Vec<Value> = serde_yaml::Deserializer::from_str(&text)
        .map(|document| serde::Deserialize::deserialize(document).unwrap())
        .collect();
    assert_eq!(reread, documents, "{}", path.display());
}

// ----- the renderer itself -----

#[test]
fn the_renderer_trims_whitespace_as_go_templates_do() {
    let template = "a:\n  {{- if .Values.on }}\n  b: 1\n  {{- end }}\n";
    assert_eq!(
        render_template(template, &yaml("on: true")).unwrap(),
        "a:\n  b: 1\n"
    );
    assert_eq!(
        render_template(template, &yaml("on: false")).unwrap(),
        "a:\n"
    );
    assert_eq!(
        render_template("x {{- /* gone */ -}} y", &yaml("{}")).unwrap(),
        "xy"
    );
}

#[test]
fn the_renderer_pipes_the_value_in_as_the_last_argument() {
    let render = |template: &str, values: &str| render_template(template, &yaml(values)).unwrap();
    assert_eq!(
        render("{{ .Values.tag | default \"1.0\" }}", "tag: ''"),
        "1.0"
    );
    assert_eq!(
        render("{{ .Values.tag | default \"1.0\" }}", "tag: '2.0'"),
        "2.0"
    );
    assert_eq!(
        render("{{ .Values.port | quote }}", "port: 8080"),
        "\"8080\""
    );
    assert_eq!(
        render("k:{{ toYaml .Values.m | nindent 2 }}", "m: {a: 1, b: [x]}"),
        "k:\n  a: 1\n  b:\n  - x"
    );
    assert_eq!(
        render("{{ if gt (int .Values.n) 1 }}many{{ end }}", "n: 3"),
        "many"
    );
    assert_eq!(
        render("{{ if gt (int .Values.n) 1 }}many{{ end }}", "n: 1"),
        ""
    );
    assert_eq!(
        render(
            "{{ if .Values.a }}a{{ else if .Values.b }}b{{ else }}c{{ end }}",
            "b: 1"
        ),
        "b"
    );
}

#[test]
fn the_renderer_handles_with_range_include_and_the_root() {
    let template = r#"{{- define "item" }}[{{ . }}]{{ end -}}
{{ range .Values.list }}{{ include "item" . }}{{ $.Values.separator }}{{ end }}
{{ with .Values.missing }}no{{ else }}fallback{{ end }}"#;
    assert_eq!(
        render_template(template, &yaml("{list: [a, b], separator: ','}")).unwrap(),
        "[a],[b],\nfallback"
    );
}

#[test]
fn the_renderer_refuses_what_it_does_not_implement() {
    let error =
        |template: &str, values: &str| render_template(template, &yaml(values)).unwrap_err();
    assert!(error("{{ .Values.x | upper }}", "x: a").contains("upper"));
    assert!(error("{{ $x := 1 }}", "{}").contains("variables"));
    assert!(error("{{ if .Values.x }}", "x: 1").contains("end"));
    assert!(error("{{ .Values.a.b.c }}", "a: {}").contains("nil pointer"));
}

// ----- values and schema -----

#[test]
fn the_default_values_satisfy_the_schema() {
    let problems = schema_problems(&merged_values(&Value::Null).unwrap()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn the_schema_accepts_a_full_set_of_sensible_values() {
    let values = yaml(
        r#"
replicaCount: 2
image: {repository: platform/waymark, tag: 0.1.0-rc.1, pullPolicy: Always}
imagePullSecrets: [{name: pull}]
watchNamespace: shop
rbac: {secretNamespaces: [shop, cart], userRoles: false}
serviceAccount: {name: waymark, annotations: {team: platform}}
metrics: {port: 9090, serviceMonitor: {enabled: true, interval: 1m30s, labels: {release: prom}}}
prometheusRule: {enabled: true, labels: {release: prom}}
grafanaDashboard: {enabled: true, namespace: monitoring, labels: {}, annotations: {grafana_folder: Delivery}}
logLevel: info,waymark=debug
logFormat: text
resources: {requests: {cpu: 100m, memory: 128Mi}, limits: {cpu: 1, memory: 512Mi}}
podAnnotations: {a: b}
priorityClassName: system-cluster-critical
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Exists}]
affinity: {}
"#,
    );
    let problems = schema_problems(&merged_values(&values).unwrap()).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
}

#[test]
fn the_schema_rejects_wrong_values_and_the_renderer_refuses_them() {
    for (override_text, why) in [
        ("replicaCount: 0", "no controller at all"),
        ("replicaCount: '2'", "a string where a number belongs"),
        ("replicaCount: 1.5", "half a replica"),
        ("replicas: 2", "a misspelled key is not ignored"),
        ("image: {pullPolicy: Sometimes}", "not a pull policy"),
        ("image: {repository: ''}", "an empty image"),
        ("image: {tag: 'v1 beta'}", "not an image tag"),
        ("watchNamespace: Shop_1", "not a namespace name"),
        (
            "rbac: {secretNamespaces: [shop, shop]}",
            "a namespace twice",
        ),
        (
            "rbac: {userRoles: 'yes'}",
            "a string where a boolean belongs",
        ),
        ("metrics: {port: 70000}", "not a port"),
        (
            "metrics: {serviceMonitor: {interval: often}}",
            "not a duration",
        ),
        ("logFormat: xml", "not a log format"),
        ("resources: {limits: {memory: [1]}}", "not a quantity"),
        (
            "grafanaDashboard: {enabled: 'true'}",
            "a string where a boolean belongs",
        ),
        ("nodeSelector: {zone: 1}", "label values are strings"),
    ] {
        let overrides = yaml(override_text);
        let problems = schema_problems(&merged_values(&overrides).unwrap()).unwrap();
        assert!(!problems.is_empty(), "{override_text} ({why}) was accepted");
        let refused = render_chart_as("waymark", "waymark-system", &overrides).unwrap_err();
        assert!(refused.contains("values.schema.json"), "{refused}");
    }
}

// ----- what the chart installs -----

#[test]
fn default_install_watches_all_namespaces_with_a_cluster_role_and_one_leader_elected_replica() {
    let documents = render_chart(&Value::Null);
    let names: BTreeSet<_> = kinds(&documents).into_iter().collect();
    let expected: BTreeSet<(String, String)> = [
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
        documents
            .iter()
            .all(|document| document["kind"] != "PodDisruptionBudget"),
        "one replica: a PodDisruptionBudget would block every drain"
    );
    let binding = find(&documents, "ClusterRoleBinding", "waymark-controller").unwrap();
    assert_eq!(binding["roleRef"]["name"], "waymark-controller");
    assert_eq!(binding["subjects"][0]["name"], "waymark-controller");
    assert_eq!(binding["subjects"][0]["namespace"], "waymark-system");
    write_and_reread("default", &documents);
}

#[test]
fn a_watched_namespace_gets_a_role_there_and_three_replicas_get_a_disruption_budget() {
    let documents = render_chart(&watched_shop_with_three_replicas());
    assert!(
        documents
            .iter()
            .all(|document| document["kind"] != "ClusterRoleBinding"),
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
    write_and_reread("watch-shop-replicas-3", &documents);
}

#[test]
fn two_replicas_are_enough_for_a_disruption_budget() {
    let documents = render_chart(&yaml("replicaCount: 2"));
    only(&documents, "PodDisruptionBudget");
}

#[test]
fn watching_all_namespaces_reads_secrets_only_in_the_listed_ones() {
    let documents = render_chart(&yaml("rbac: {secretNamespaces: [shop, cart]}"));
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
fn the_controller_container_runs_hardened_with_the_values_resources() {
    let documents = render_chart(&yaml(
        "resources: {requests: {cpu: 10m}, limits: {memory: 1Gi}}",
    ));
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
        container(&render_chart(&Value::Null))["resources"],
        yaml("{requests: {cpu: 50m, memory: 64Mi}, limits: {memory: 256Mi}}")
    );
}

#[test]
fn the_image_tag_defaults_to_the_app_version_which_is_the_crate_version() {
    let chart_yaml = yaml(&read("charts/waymark/Chart.yaml"));
    assert_eq!(chart_yaml["appVersion"], env!("CARGO_PKG_VERSION"));
    let image = |documents: &[Value]| container(documents)["image"].as_str().unwrap().to_string();
    assert_eq!(
        image(&render_chart(&Value::Null)),
        format!("waymark:{}", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(
        image(&render_chart(&yaml(
            "image: {repository: platform/waymark, tag: 9.9.9}"
        ))),
        "platform/waymark:9.9.9"
    );
}

#[test]
fn selectors_match_the_pod_and_the_service_targets_a_named_container_port() {
    let documents = render_chart(&watched_shop_with_three_replicas());
    let deployment = only(&documents, "Deployment");
    let pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        .as_mapping()
        .unwrap();
    let matches_pod = |selector: &Value| {
        let selector = selector.as_mapping().expect("a selector");
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
    let container_ports = container(&documents)["ports"].as_sequence().unwrap();
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
    let cluster_scoped = ["ClusterRole", "ClusterRoleBinding"];
    for overrides in [
        Value::Null,
        watched_shop_with_three_replicas(),
        monitoring_on(),
    ] {
        let documents = render_chart(&overrides);
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
    let documents = render_chart_as("prod", "ops", &Value::Null).unwrap();
    assert!(find(&documents, "Deployment", "prod-waymark-controller").is_some());
    assert!(find(&documents, "ClusterRole", "prod-waymark-controller").is_some());
    assert!(find(&documents, "ClusterRole", "waymark-viewer").is_some());
    let documents = render_chart(&yaml("rbac: {userRoles: false}"));
    assert!(find(&documents, "ClusterRole", "waymark-viewer").is_none());
    assert!(find(&documents, "ClusterRole", "waymark-operator").is_none());
}

fn monitoring_on() -> Value {
    yaml(
        r#"
metrics: {serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}}
prometheusRule: {enabled: true, labels: {release: prom}}
grafanaDashboard: {enabled: true, namespace: monitoring, annotations: {grafana_folder: Delivery}}
"#,
    )
}

#[test]
fn monitoring_objects_render_only_when_enabled() {
    let defaults = render_chart(&Value::Null);
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(
            defaults.iter().all(|document| document["kind"] != kind),
            "{kind} is off by default: it needs CRDs or a Grafana that not every cluster has"
        );
    }

    let documents = render_chart(&monitoring_on());
    let monitor = only(&documents, "ServiceMonitor");
    assert_eq!(monitor["metadata"]["labels"]["release"], "prom");
    let service = only(&documents, "Service");
    let selected = monitor["spec"]["selector"]["matchLabels"]
        .as_mapping()
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
    write_and_reread("monitoring", &documents);

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
