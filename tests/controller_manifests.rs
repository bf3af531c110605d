//! The shipped manifests say what the controller needs and no more.

use std::path::Path;

use serde_yaml::Value;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn yaml(path: &str) -> Value {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|error| panic!("{path} is not YAML: {error}"))
}

/// The Helm template with its template-only lines removed, so it parses as YAML.
fn helm_rules(path: &str) -> Value {
    let text: String = read(path)
        .lines()
        .filter(|line| !line.contains("{{"))
        .map(|line| format!("{line}\n"))
        .collect();
    let value: Value = serde_yaml::from_str(&text).unwrap();
    value["rules"].clone()
}

#[test]
fn cluster_role_has_no_wildcards_and_reads_secrets_with_get_only() {
    let role = yaml("config/rbac/role.yaml");
    let rules = role["rules"].as_sequence().unwrap();
    for rule in rules {
        for field in ["apiGroups", "resources", "verbs"] {
            for item in rule[field].as_sequence().unwrap() {
                assert_ne!(item.as_str(), Some("*"), "wildcard in {field}: {rule:?}");
            }
        }
        let resources: Vec<_> = rule["resources"].as_sequence().unwrap().iter().collect();
        if resources.iter().any(|r| r.as_str() == Some("secrets")) {
            assert_eq!(
                rule["verbs"],
                serde_yaml::from_str::<Value>("[get]").unwrap()
            );
        }
    }
    let release_status = rules
        .iter()
        .find(|rule| rule["resources"][0].as_str() == Some("releases/status"))
        .expect("a rule for releases/status");
    assert_eq!(
        release_status["verbs"],
        serde_yaml::from_str::<Value>("[patch]").unwrap()
    );
    let releases = rules
        .iter()
        .find(|rule| rule["resources"][0].as_str() == Some("releases"))
        .expect("a rule for releases");
    assert_eq!(
        releases["verbs"],
        serde_yaml::from_str::<Value>("[list, watch]").unwrap(),
        "the controller never writes a Release's spec"
    );
}

#[test]
fn helm_chart_grants_the_same_rules_as_the_kustomize_base() {
    assert_eq!(
        helm_rules("charts/waymark/templates/clusterrole.yaml"),
        yaml("config/rbac/role.yaml")["rules"]
    );
}

#[test]
fn argocd_patch_carries_exactly_the_health_check_script() {
    let patch = yaml("config/argocd/argocd-cm-patch.yaml");
    let script = patch["data"]["resource.customizations.health.waymark.dev_Release"]
        .as_str()
        .expect("the health customization key");
    assert_eq!(script, read("config/argocd/health.lua"));
}

#[test]
fn argocd_health_check_maps_every_phase() {
    let script = read("config/argocd/health.lua");
    for (phase, health) in [
        ("Healthy", "Healthy"),
        ("Progressing", "Progressing"),
        ("Paused", "Suspended"),
        ("RolledBack", "Degraded"),
        ("Degraded", "Degraded"),
    ] {
        assert!(script.contains(&format!("\"{phase}\"")), "{phase} handled");
        assert!(script.contains(&format!("hs.status = \"{health}\"")));
    }
}

#[test]
fn manager_probes_health_and_readiness() {
    let deployment = yaml("config/manager/manager.yaml");
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    let args: Vec<_> = container["args"]
        .as_sequence()
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
