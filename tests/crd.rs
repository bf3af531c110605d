//! The generated CRD: fresh under `crds/`, structural, and rejecting bad manifests with
//! messages that name the field, the way the API server does.
//!
//! OpenAPI bounds and patterns are checked with a JSON-Schema validator over the CRD's
//! `openAPIV3Schema`; CEL rules with kube's client-side CEL evaluator, after applying the
//! schema's defaults as the API server would.

mod common;

use std::path::Path;

use jsonschema::error::ValidationErrorKind;
use kube::core::cel::{self, ScopeContext, Validator};
use serde_json::{Value, json};
use waymark::api::{Release, crd};
use waymark::rollout::{self, Observed, conditions};

use common::mutations::{self, Expect, names_field};

/// Where the generated CRD is checked in: `crds/` for `kubectl apply -f`, `config/crd/` for kustomize.
const CRD_FILES: [&str; 2] = [
    "crds/waymark.dev_releases.yaml",
    "config/crd/waymark.dev_releases.yaml",
];

fn schema() -> Value {
    let crd = serde_json::to_value(crd::release_crd()).unwrap();
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

fn example_documents() -> Vec<Value> {
    documents_of("examples/checkout.yaml")
}

fn documents_of(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(Path::new(file)).unwrap();
    serde_saphyr::from_multiple(&text).unwrap_or_else(|error| panic!("{file} is not YAML: {error}"))
}

fn example_release() -> Value {
    example_documents()
        .into_iter()
        .find(|doc| doc["kind"] == "Release")
        .expect("examples/checkout.yaml holds a Release")
}

/// The CRD's checks as the API server makes them, compiled once: the OpenAPI bounds and
/// patterns (a JSON-Schema validator over `openAPIV3Schema`) and the CEL rules.
struct ApiServer {
    schema: Value,
    openapi: jsonschema::Validator,
    rules: cel::CompiledSchema,
}

impl ApiServer {
    fn new() -> ApiServer {
        let schema = schema();
        // What the API server implies: an int-or-string is an integer or a string (not 80.5),
        // and formats such as `date-time` are checked.
        let mut typed = schema.clone();
        type_int_or_string(&mut typed);
        ApiServer {
            openapi: jsonschema::options()
                .should_validate_formats(true)
                .build(&typed)
                .unwrap(),
            rules: cel::compile_schema(&schema),
            schema,
        }
    }

    /// Every problem the API server would report, as `path: message` lines.
    fn errors(&self, object: &Value) -> Vec<String> {
        let mut errors = Vec::new();
        for error in self.openapi.iter_errors(object) {
            let mut path = error
                .instance_path()
                .as_str()
                .trim_start_matches('/')
                .replace('/', ".");
            // The API server names the missing field itself: `spec.roadmap.item: Required value`.
            if let ValidationErrorKind::Required { property } = error.kind() {
                let property = property.as_str().unwrap_or_default();
                path = if path.is_empty() {
                    property.to_string()
                } else {
                    format!("{path}.{property}")
                };
            }
            errors.push(format!("{path}: {error}"));
        }
        if let Err(cel_errors) = Validator::new().validate_compiled(&self.rules, object, None) {
            for error in cel_errors.as_slice() {
                errors.push(format!("{}: {}", error.field_path, error.message));
            }
        }
        duplicate_keys(&self.schema, object, "", &mut errors);
        errors
    }
}

/// What the API server checks of a list map (`x-kubernetes-list-type: map`) and a JSON-Schema
/// validator does not: two items with the same keys, reported as the API server words it
/// (`spec.analysis.checks[1]: Duplicate value: {"name":"a"}`).
fn duplicate_keys(schema: &Value, object: &Value, path: &str, errors: &mut Vec<String>) {
    let child = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match object {
        Value::Object(map) => {
            for (key, value) in map {
                if let Some(property) = schema["properties"].get(key) {
                    duplicate_keys(property, value, &child(key), errors);
                }
            }
        }
        Value::Array(items) => {
            if schema["x-kubernetes-list-type"] == "map" {
                let keys: Vec<&str> = schema["x-kubernetes-list-map-keys"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(Value::as_str)
                    .collect();
                let mut seen = Vec::new();
                for (index, item) in items.iter().enumerate() {
                    let key: serde_json::Map<String, Value> = keys
                        .iter()
                        .map(|key| (key.to_string(), item[*key].clone()))
                        .collect();
                    if seen.contains(&key) {
                        errors.push(format!(
                            "{path}[{index}]: Duplicate value: {}",
                            Value::Object(key.clone())
                        ));
                    }
                    seen.push(key);
                }
            }
            for (index, item) in items.iter().enumerate() {
                duplicate_keys(&schema["items"], item, &format!("{path}[{index}]"), errors);
            }
        }
        _ => {}
    }
}

fn type_int_or_string(node: &mut Value) {
    match node {
        Value::Object(map) => {
            if map.get("x-kubernetes-int-or-string") == Some(&json!(true)) {
                map.insert("type".into(), json!(["integer", "string"]));
            }
            map.values_mut().for_each(type_int_or_string);
        }
        Value::Array(items) => items.iter_mut().for_each(type_int_or_string),
        _ => {}
    }
}

/// Every problem the API server would report, as `path: message` lines.
fn validation_errors(object: &Value) -> Vec<String> {
    ApiServer::new().errors(object)
}

#[test]
fn checked_in_crds_match_the_generated_crd() {
    let generated = crd::release_crd_yaml().unwrap();
    for file in CRD_FILES {
        let checked_in = std::fs::read_to_string(file).unwrap_or_default();
        assert!(
            generated == checked_in,
            "{file} is stale: run `cargo run -- crd > {file}` and commit it"
        );
    }
}

#[test]
fn crd_names_match_the_design() {
    let crd = crd::release_crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("releases.waymark.dev"));
    assert_eq!(crd.spec.group, "waymark.dev");
    assert_eq!(crd.spec.scope, "Namespaced");
    assert_eq!(crd.spec.names.kind, "Release");
    assert_eq!(crd.spec.names.plural, "releases");
    assert_eq!(crd.spec.names.short_names, Some(vec!["rel".to_string()]));
    // `kubectl get waymark` lists Releases.
    assert_eq!(crd.spec.names.categories, Some(vec!["waymark".to_string()]));
    let version = &crd.spec.versions[0];
    assert_eq!(version.name, "v1alpha1");
    assert!(
        version
            .subresources
            .as_ref()
            .and_then(|s| s.status.as_ref())
            .is_some()
    );
    let columns: Vec<_> = version
        .additional_printer_columns
        .iter()
        .flatten()
        .map(|column| {
            (
                column.name.as_str(),
                column.json_path.as_str(),
                column.priority.unwrap_or(0),
            )
        })
        .collect();
    // Priority 1: shown by `kubectl get releases -o wide` only, after the default ones.
    assert_eq!(
        columns,
        [
            ("Roadmap", ".spec.roadmap.item", 0),
            ("Phase", ".status.phase", 0),
            ("Weight", ".status.canaryWeight", 0),
            ("Step", ".status.stepProgress", 0),
            ("Burn", ".status.analysis.burn", 0),
            ("Age", ".metadata.creationTimestamp", 0),
            ("Stable", ".status.stableRevision", 1),
            ("Canary", ".status.canaryRevision", 1),
            ("Reason", ".status.reason", 1),
            ("Title", ".spec.roadmap.title", 1),
        ]
    );
}

/// What `kubectl explain release.spec.<field>` prints for each field of the spec: whole
/// sentences on one line (kubectl wraps them), saying what the field does.
#[test]
fn every_spec_field_is_explained_in_whole_sentences() {
    let schema = schema();
    let mut found = Vec::new();
    schema_nodes(&schema["properties"]["spec"], "spec".into(), &mut found);
    let mut checked = 0;
    for (path, node) in found {
        // The pod template and the selector's insides are Kubernetes' own documentation.
        if path.starts_with("spec.template") || path.starts_with("spec.selector.") {
            continue;
        }
        let Some(description) = node.get("description").and_then(Value::as_str) else {
            continue;
        };
        checked += 1;
        assert!(!description.contains('\n'), "{path}: {description:?}");
        assert!(
            description.ends_with('.') || description.ends_with(".)"),
            "{path} does not end a sentence: {description:?}"
        );
        assert!(
            description.starts_with(|c: char| c.is_uppercase() || c == '`'),
            "{path} does not start a sentence: {description:?}"
        );
    }
    assert!(checked > 40, "only {checked} spec descriptions");
    let steps = schema["properties"]["spec"]["properties"]["steps"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(steps.contains("run in order"), "{steps}");
    // An optional enum keeps the field's own words, not the enum type's.
    let roadmap = &schema["properties"]["spec"]["properties"]["roadmap"]["properties"];
    for field in ["horizon", "kind"] {
        let description = roadmap[field]["description"].as_str().unwrap_or_default();
        assert!(description.contains("Optional;"), "{field}: {description}");
    }
}

#[test]
fn crd_fits_client_side_apply_annotation_limit() {
    // Argo CD and plain `kubectl apply` store the whole object in an annotation of at most 256 KiB.
    let json = serde_json::to_string(&crd::release_crd()).unwrap();
    assert!(
        json.len() < 256 * 1024,
        "CRD is {} bytes of JSON",
        json.len()
    );
}

/// A structural schema: every node says its type (or is explicitly int-or-string or
/// preserve-unknown-fields), and nothing uses `$ref` or a type-changing combinator.
fn assert_structural(node: &Value, path: &str) {
    let Value::Object(map) = node else { return };
    assert!(!map.contains_key("$ref"), "{path} uses $ref");
    for combinator in ["oneOf", "anyOf", "allOf", "not"] {
        if let Some(Value::Array(branches)) = map.get(combinator) {
            for branch in branches {
                assert!(
                    branch.get("type").is_none(),
                    "{path}.{combinator} sets a type"
                );
            }
        }
    }
    let typed = map.contains_key("type")
        || map.get("x-kubernetes-int-or-string") == Some(&json!(true))
        || map.get("x-kubernetes-preserve-unknown-fields") == Some(&json!(true));
    assert!(typed, "{path} has no type");
    if let Some(Value::Object(properties)) = map.get("properties") {
        for (name, child) in properties {
            assert_structural(child, &format!("{path}.{name}"));
        }
    }
    if let Some(items) = map.get("items") {
        assert_structural(items, &format!("{path}[]"));
    }
    if let Some(additional @ Value::Object(_)) = map.get("additionalProperties") {
        assert!(
            !map.contains_key("properties"),
            "{path} has properties and additionalProperties"
        );
        assert_structural(additional, &format!("{path}{{}}"));
    }
}

#[test]
fn crd_schema_is_structural() {
    assert_structural(&schema(), "openAPIV3Schema");
}

fn rules(node: &Value, found: &mut Vec<String>) {
    match node {
        Value::Object(map) => {
            if let Some(Value::Array(validations)) = map.get("x-kubernetes-validations") {
                for validation in validations {
                    found.push(validation["rule"].as_str().unwrap().to_string());
                }
            }
            map.values().for_each(|child| rules(child, found));
        }
        Value::Array(items) => items.iter().for_each(|child| rules(child, found)),
        _ => {}
    }
}

#[test]
fn cel_rules_compile_and_stay_within_the_cost_budget() {
    let schema = schema();
    let compiled = cel::compile_schema(&schema);
    assert!(
        !compiled.has_errors(),
        "{:?}",
        compiled.compilation_errors()
    );
    let mut found = Vec::new();
    rules(&schema, &mut found);
    assert!(
        found.len() >= 8,
        "expected the design's CEL rules, found {found:?}"
    );
    for rule in &found {
        let warnings: Vec<_> = cel::analyze_rule(rule, &compiled, ScopeContext::CrdValidation)
            .into_iter()
            .filter(|warning| !names_a_macro_variable(rule, warning))
            .collect();
        assert!(warnings.is_empty(), "{rule}: {warnings:?}");
    }
}

/// kube-cel's scope check reports the variable a macro binds (`pair` in
/// `self.burnRates.all(pair, pair.max < 1.0)`) when the rule selects a field of it; such a
/// variable is in scope.
fn names_a_macro_variable(rule: &str, warning: &cel::AnalysisWarning) -> bool {
    let Some(variable) = warning
        .message
        .strip_prefix("variable '")
        .and_then(|rest| rest.split_once('\''))
        .map(|(variable, _)| variable)
    else {
        return false;
    };
    matches!(warning.kind, cel::WarningKind::WrongScope)
        && ["all", "exists", "exists_one", "map", "filter"]
            .iter()
            .any(|name| rule.contains(&format!(".{name}({variable}, ")))
}

#[test]
fn the_quick_start_releases_pass_and_differ_only_in_image_and_item() {
    let [v1, v2] = ["examples/hello.yaml", "examples/hello-v2.yaml"].map(|file| {
        let documents = documents_of(file);
        assert_eq!(documents.len(), 1, "{file} holds one Release");
        let release = documents.into_iter().next().unwrap();
        assert_eq!(validation_errors(&release), Vec::<String>::new(), "{file}");
        let with_defaults = cel::apply_defaults(&schema(), &release);
        let typed: Release = serde_json::from_value(with_defaults).unwrap();
        // Runs on a bare cluster: a replica split, no analysis.
        assert!(typed.spec.traffic.replicas.is_some(), "{file}");
        assert!(typed.spec.analysis.is_none(), "{file}");
        release
    });
    let mut v2_as_v1 = v2.clone();
    v2_as_v1["spec"]["roadmap"] = v1["spec"]["roadmap"].clone();
    v2_as_v1["spec"]["template"]["spec"]["containers"][0]["image"] =
        v1["spec"]["template"]["spec"]["containers"][0]["image"].clone();
    assert_eq!(
        v2_as_v1, v1,
        "version 2 changes only the image and the roadmap item"
    );
    assert_ne!(
        v1["spec"]["template"]["spec"]["containers"][0]["image"],
        v2["spec"]["template"]["spec"]["containers"][0]["image"]
    );
}

#[test]
fn example_release_passes_schema_and_cel_validation() {
    let release = example_release();
    assert_eq!(validation_errors(&release), Vec::<String>::new());
    let with_defaults = cel::apply_defaults(&schema(), &release);
    let typed: Release = serde_json::from_value(with_defaults).unwrap();
    assert_eq!(typed.spec.roadmap.item, "PAY-142");
    assert_eq!(typed.spec.steps.len(), 4);
    assert!(typed.spec.traffic.gateway_api.is_some());
}

#[test]
fn example_holds_the_httproute_the_release_names() {
    let documents = example_documents();
    let route = documents
        .iter()
        .find(|doc| doc["kind"] == "HTTPRoute")
        .expect("an HTTPRoute");
    assert_eq!(
        route["metadata"]["name"],
        example_release()["spec"]["traffic"]["gatewayAPI"]["httpRoute"]
    );
    assert_eq!(
        route["spec"]["rules"][0]["backendRefs"][0]["name"],
        "checkout-stable"
    );
}

#[test]
fn schema_defaults_are_the_ones_a_user_expects() {
    let minimal = json!({
        "apiVersion": "waymark.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": "api", "namespace": "shop"},
        "spec": {
            "roadmap": {"item": "API-1"},
            "selector": {"matchLabels": {"app": "api"}},
            "template": {"metadata": {"labels": {"app": "api"}},
                         "spec": {"containers": [{"name": "api", "image": "api:1"}]}},
            "traffic": {"replicas": {}},
            "steps": [{"setWeight": 50}],
            "analysis": {
                "prometheus": {"address": "http://prometheus:9090"},
                "slo": {"objective": 99.5, "errorQuery": "e", "totalQuery": "t",
                        "burnRates": [{"long": "1h", "short": "5m", "max": 14.4}]}
            }
        }
    });
    assert_eq!(validation_errors(&minimal), Vec::<String>::new());
    let defaulted = cel::apply_defaults(&schema(), &minimal);
    let spec = &defaulted["spec"];
    assert_eq!(spec["replicas"], 1);
    assert_eq!(spec["progressDeadline"], "10m");
    assert_eq!(spec["scaleDownDelay"], "30s");
    let analysis = &spec["analysis"];
    assert_eq!(analysis["interval"], "1m");
    assert_eq!(analysis["prometheus"]["timeout"], "10s");
    assert_eq!(analysis["slo"]["minRequests"], 100);
    assert_eq!(analysis["failureLimit"], 2);
    assert_eq!(analysis["inconclusiveLimit"], 6);
    assert_eq!(analysis["errorLimit"], 4);
}

/// Set `pointer` in the example Release to `value` (creating the last key when missing).
fn with(pointer: &str, value: Value) -> Value {
    let mut release = example_release();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    let target = release.pointer_mut(parent).unwrap();
    match target {
        Value::Array(items) => items[key.parse::<usize>().unwrap()] = value,
        Value::Object(map) => {
            map.insert(key.to_string(), value);
        }
        _ => panic!("{parent} is not a container"),
    }
    release
}

fn without(pointer: &str) -> Value {
    let mut release = example_release();
    let (parent, key) = pointer.rsplit_once('/').unwrap();
    release
        .pointer_mut(parent)
        .unwrap()
        .as_object_mut()
        .unwrap()
        .remove(key);
    release
}

#[test]
fn no_steps_and_a_check_named_twice_are_refused_naming_the_field() {
    let api_server = ApiServer::new();
    let errors = api_server.errors(&with("/spec/steps", json!([])));
    assert_eq!(
        errors,
        [format!("spec.steps: {}", waymark::api::STEPS_EMPTY)],
        "no steps"
    );
    assert!(errors[0].contains("with no canary"), "{errors:?}");

    let checks = json!([
        {"name": "p99-latency", "query": "a", "max": 1},
        {"name": "errors", "query": "b", "max": 1},
        {"name": "p99-latency", "query": "c", "max": 2}
    ]);
    let errors = api_server.errors(&with("/spec/analysis/checks", checks));
    assert_eq!(
        errors,
        [r#"spec.analysis.checks[2]: Duplicate value: {"name":"p99-latency"}"#],
        "a check named twice"
    );
    // The API server finds the duplicate because the list is a map keyed by name.
    let schema =
        &api_server.schema["properties"]["spec"]["properties"]["analysis"]["properties"]["checks"];
    assert_eq!(schema["x-kubernetes-list-type"], "map");
    assert_eq!(schema["x-kubernetes-list-map-keys"], json!(["name"]));
}

#[test]
fn a_grpc_route_with_session_persistence_is_accepted() {
    let api_server = ApiServer::new();
    let release = with(
        "/spec/traffic",
        json!({"gatewayAPI": {"grpcRoute": "checkout", "sessionPersistence": {
            "sessionName": "cart", "type": "Cookie", "absoluteTimeout": "1h",
            "idleTimeout": "10m", "cookieConfig": {"lifetimeType": "Permanent"}}}}),
    );
    assert_eq!(api_server.errors(&release), Vec::<String>::new());
    let typed: waymark::api::Release = serde_json::from_value(release).unwrap();
    let gateway = typed.spec.traffic.gateway_api.unwrap();
    assert_eq!(
        gateway.route(),
        Some((waymark::api::RouteKind::Grpc, "checkout"))
    );
}

#[test]
fn every_roadmap_horizon_and_kind_is_accepted() {
    for horizon in ["now", "next", "later"] {
        for kind in ["feature", "debt", "platform", "security", "experiment"] {
            let manifest = with("/spec/roadmap/horizon", json!(horizon));
            let manifest = {
                let mut manifest = manifest;
                manifest["spec"]["roadmap"]["kind"] = json!(kind);
                manifest
            };
            assert_eq!(
                validation_errors(&manifest),
                Vec::<String>::new(),
                "{horizon}/{kind}"
            );
            let typed: Release = serde_json::from_value(manifest).unwrap();
            assert_eq!(
                typed.spec.roadmap.tagged(),
                format!("PAY-142 ({horizon}, {kind})")
            );
        }
    }
}

#[test]
fn invalid_manifests_are_rejected_with_the_field_named() {
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "weight over 100",
            with("/spec/steps/0", json!({"setWeight": 150})),
            "setWeight",
        ),
        (
            "negative weight",
            with("/spec/steps/0", json!({"setWeight": -1})),
            "setWeight",
        ),
        (
            "two traffic modes",
            with(
                "/spec/traffic",
                json!({"gatewayAPI": {"httpRoute": "checkout"}, "replicas": {}}),
            ),
            "spec.traffic",
        ),
        (
            "no traffic mode",
            with("/spec/traffic", json!({})),
            "spec.traffic",
        ),
        (
            "an HTTPRoute and a GRPCRoute",
            with(
                "/spec/traffic",
                json!({"gatewayAPI": {"httpRoute": "checkout", "grpcRoute": "checkout"}}),
            ),
            "spec.traffic.gatewayAPI must set exactly one of httpRoute or grpcRoute",
        ),
        (
            "a gatewayAPI without a route",
            with(
                "/spec/traffic",
                json!({"gatewayAPI": {"sessionPersistence": {"sessionName": "cart"}}}),
            ),
            "spec.traffic.gatewayAPI must set exactly one of httpRoute or grpcRoute",
        ),
        (
            "a permanent session cookie without an absolute timeout",
            with(
                "/spec/traffic",
                json!({"gatewayAPI": {"grpcRoute": "checkout", "sessionPersistence": {
                    "cookieConfig": {"lifetimeType": "Permanent"}}}}),
            ),
            "spec.traffic.gatewayAPI.sessionPersistence.absoluteTimeout",
        ),
        (
            "a session persistence type Gateway API does not know",
            with(
                "/spec/traffic",
                json!({"gatewayAPI": {"httpRoute": "checkout", "sessionPersistence": {
                    "type": "IPHash"}}}),
            ),
            "sessionPersistence.type",
        ),
        (
            "a session timeout that is not a Gateway API duration",
            with(
                "/spec/traffic",
                json!({"gatewayAPI": {"httpRoute": "checkout", "sessionPersistence": {
                    "idleTimeout": "1 hour"}}}),
            ),
            "sessionPersistence.idleTimeout",
        ),
        (
            "a step with both kinds",
            with(
                "/spec/steps/1",
                json!({"setWeight": 20, "pause": {"duration": "1m"}}),
            ),
            "spec.steps",
        ),
        (
            "an empty step",
            with("/spec/steps/1", json!({})),
            "spec.steps",
        ),
        (
            "burn windows in the wrong order",
            with(
                "/spec/analysis/slo/burnRates/0",
                json!({"long": "1m", "short": "5m", "max": 14.4}),
            ),
            "short",
        ),
        (
            "equal burn windows",
            with(
                "/spec/analysis/slo/burnRates/0",
                json!({"long": "5m", "short": "5m", "max": 14.4}),
            ),
            "short",
        ),
        (
            "a zero burn-rate limit",
            with(
                "/spec/analysis/slo/burnRates/0",
                json!({"long": "5m", "short": "1m", "max": 0}),
            ),
            "max",
        ),
        (
            "a roadmap item with a space",
            with("/spec/roadmap/item", json!("PAY 142")),
            "roadmap.item",
        ),
        (
            "an empty roadmap item",
            with("/spec/roadmap/item", json!("")),
            "roadmap.item",
        ),
        (
            "a 65-character roadmap item",
            with("/spec/roadmap/item", json!("X".repeat(65))),
            "roadmap.item",
        ),
        ("no roadmap item", without("/spec/roadmap/item"), "item"),
        (
            "a horizon outside now, next, later",
            with("/spec/roadmap/horizon", json!("someday")),
            "horizon",
        ),
        (
            "a capitalised horizon",
            with("/spec/roadmap/horizon", json!("Now")),
            "horizon",
        ),
        (
            "a kind outside the five",
            with("/spec/roadmap/kind", json!("bugfix")),
            "kind",
        ),
        (
            "a kind that is not a string",
            with("/spec/roadmap/kind", json!(3)),
            "kind",
        ),
        (
            "objective of 100",
            with("/spec/analysis/slo/objective", json!(100)),
            "objective",
        ),
        (
            "objective of 0",
            with("/spec/analysis/slo/objective", json!(0)),
            "objective",
        ),
        (
            "zero replicas",
            with("/spec/replicas", json!(0)),
            "replicas",
        ),
        (
            "zero failureLimit",
            with("/spec/analysis/failureLimit", json!(0)),
            "failureLimit",
        ),
        (
            "zero errorLimit",
            with("/spec/analysis/errorLimit", json!(0)),
            "errorLimit",
        ),
        (
            "zero inconclusiveLimit",
            with("/spec/analysis/inconclusiveLimit", json!(0)),
            "inconclusiveLimit",
        ),
        (
            "a duration in words",
            with("/spec/progressDeadline", json!("ten minutes")),
            "progressDeadline",
        ),
        (
            "a pause in days",
            with("/spec/steps/1", json!({"pause": {"duration": "1d"}})),
            "duration",
        ),
        (
            "a budget freeze above 1",
            with("/spec/analysis/slo/budget/freezeBelow", json!(1.5)),
            "freezeBelow",
        ),
        ("no steps", without("/spec/steps"), "steps"),
        ("no selector", without("/spec/selector"), "selector"),
        (
            "a check without limits",
            with(
                "/spec/analysis/checks/0",
                json!({"name": "x", "query": "q"}),
            ),
            "checks",
        ),
        (
            "a Prometheus address without a scheme",
            with(
                "/spec/analysis/prometheus/address",
                json!("prometheus:9090"),
            ),
            "address",
        ),
    ];
    for (what, manifest, field) in cases {
        let errors = validation_errors(&manifest);
        assert!(!errors.is_empty(), "{what}: accepted");
        assert!(
            errors.iter().any(|error| error.contains(field)),
            "{what}: no error names {field}: {errors:?}"
        );
    }
}

/// What a hostile mutation came to, client-side.
#[derive(Debug, Default)]
struct Outcomes {
    rejected: usize,
    flagged: usize,
    valid: usize,
    failures: Vec<String>,
}

#[test]
fn every_hostile_mutation_is_rejected_flagged_or_valid_on_purpose() {
    let api_server = ApiServer::new();
    let schema = &api_server.schema;
    let base = mutations::example_release();
    let now: k8s_openapi::jiff::Timestamp = "2030-01-01T00:00:00Z".parse().unwrap();
    let all = mutations::mutations(schema);
    let mut outcomes = Outcomes::default();
    for mutation in &all {
        let manifest = mutation.apply(&base);
        let errors = api_server.errors(&manifest);
        let name = &mutation.name;
        if mutation.expect == Expect::Rejected {
            if errors.is_empty() {
                outcomes.failures.push(format!("{name}: accepted"));
            } else if !errors
                .iter()
                .any(|error| names_field(error, &mutation.field))
            {
                outcomes.failures.push(format!(
                    "{name}: rejected, but no error names {}: {errors:?}",
                    mutation.field
                ));
            } else {
                outcomes.rejected += 1;
            }
            continue;
        }
        if !errors.is_empty() {
            outcomes
                .failures
                .push(format!("{name}: rejected: {errors:?}"));
            continue;
        }
        // What the controller reads: the object with the schema's defaults applied.
        let stored = cel::apply_defaults(schema, &manifest);
        let release: Release = match serde_json::from_value(stored) {
            Ok(release) => release,
            Err(error) => {
                outcomes.failures.push(format!(
                    "{name}: accepted, but the controller cannot decode it: {error}"
                ));
                continue;
            }
        };
        let decision = rollout::decide(&release, &Observed::default(), now);
        let spec_valid = decision
            .status
            .conditions
            .iter()
            .find(|condition| condition.type_ == conditions::SPEC_VALID);
        match (&mutation.expect, spec_valid) {
            (Expect::SpecInvalid, Some(condition))
                if condition.status == "False"
                    && names_field(&condition.message, &mutation.field) =>
            {
                assert!(
                    decision
                        .actions
                        .iter()
                        .all(|action| matches!(action, rollout::Action::Event(_))),
                    "{name}: acts on an invalid spec: {:?}",
                    decision.actions
                );
                outcomes.flagged += 1;
            }
            (Expect::Valid(_), Some(condition)) if condition.status == "True" => {
                outcomes.valid += 1;
            }
            (expect, condition) => outcomes.failures.push(format!(
                "{name}: expected {expect:?} naming {}, got SpecValid {condition:?}",
                mutation.field
            )),
        }
    }
    eprintln!(
        "{} hostile mutations: {} rejected by the schema, {} SpecValid=False, {} valid on purpose",
        all.len(),
        outcomes.rejected,
        outcomes.flagged,
        outcomes.valid
    );
    assert!(
        outcomes.failures.is_empty(),
        "{} of {} mutations ended otherwise than expected:\n{}",
        outcomes.failures.len(),
        all.len(),
        outcomes.failures.join("\n")
    );
    assert!(outcomes.rejected > 100 && outcomes.flagged >= 8 && outcomes.valid > 30);
}

/// Each node of the schema with its path.
fn schema_nodes<'a>(node: &'a Value, path: String, found: &mut Vec<(String, &'a Value)>) {
    let Value::Object(map) = node else { return };
    found.push((path.clone(), node));
    if let Some(Value::Object(properties)) = map.get("properties") {
        for (name, child) in properties {
            schema_nodes(child, format!("{path}.{name}"), found);
        }
    }
    if let Some(items) = map.get("items") {
        schema_nodes(items, format!("{path}[]"), found);
    }
    if let Some(additional @ Value::Object(_)) = map.get("additionalProperties") {
        schema_nodes(additional, format!("{path}{{}}"), found);
    }
    for combinator in ["allOf", "anyOf", "oneOf"] {
        for branch in map
            .get(combinator)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            schema_nodes(branch, path.clone(), found);
        }
    }
}

/// The API server does not enforce `format: int32`: without bounds, a number the controller
/// cannot decode is stored, and the controller's list of Releases fails as a whole.
#[test]
fn every_integer_in_the_schema_is_bounded_within_its_format() {
    let schema = schema();
    let mut nodes = Vec::new();
    schema_nodes(&schema, String::new(), &mut nodes);
    let mut integers = 0;
    for (path, node) in &nodes {
        if node["type"] != "integer" {
            continue;
        }
        integers += 1;
        let (floor, ceiling) = match node["format"].as_str() {
            Some("int32") => (f64::from(i32::MIN), f64::from(i32::MAX)),
            // A float bound of 2^63 (`i64::MAX` rounded) overflows in the API server.
            Some("int64") => (i64::MIN as f64, crd::INT64_MAXIMUM as f64),
            other => panic!("{path}: an integer of format {other:?}"),
        };
        let minimum = node["minimum"]
            .as_f64()
            .unwrap_or_else(|| panic!("{path}: no minimum"));
        let maximum = node["maximum"]
            .as_f64()
            .unwrap_or_else(|| panic!("{path}: no maximum"));
        assert!(
            floor <= minimum && minimum <= maximum && maximum <= ceiling,
            "{path}: [{minimum}, {maximum}] is not within its format's [{floor}, {ceiling}]"
        );
    }
    assert!(integers > 100, "only {integers} integers found");
}

/// An `IntOrString` holds an `i32`; a `Quantity` reads any number. Both are int-or-string in
/// the schema, told apart by their property names.
#[test]
fn every_int_or_string_is_a_bounded_port_or_a_quantity() {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    // The Quantity fields of a pod template: resource limits and requests (and overhead),
    // downward-API divisors and emptyDir size limits.
    const QUANTITIES: [&str; 5] = [
        "limits{}",
        "requests{}",
        "overhead{}",
        "divisor",
        "sizeLimit",
    ];
    let schema = schema();
    let mut nodes = Vec::new();
    schema_nodes(&schema, String::new(), &mut nodes);
    let mut ports = 0;
    for (path, node) in &nodes {
        if node["x-kubernetes-int-or-string"] != true {
            continue;
        }
        let name = path.rsplit('.').next().unwrap_or_default();
        if crd::INT_OR_STRING_PORTS.contains(&name) {
            ports += 1;
            let within = |key: &str| {
                node[key].as_f64().is_some_and(|bound| {
                    (f64::from(i32::MIN)..=f64::from(i32::MAX)).contains(&bound)
                })
            };
            assert!(within("minimum") && within("maximum"), "{path}: {node}");
        } else {
            assert!(
                QUANTITIES.contains(&name),
                "{path}: an int-or-string that is neither a port nor a known Quantity"
            );
            assert_eq!(node["pattern"], crd::QUANTITY_PATTERN, "{path}");
        }
    }
    assert!(ports >= 10, "only {ports} ports found");
    assert!(serde_json::from_value::<IntOrString>(json!(2_147_483_648_i64)).is_err());
    assert!(serde_json::from_value::<Quantity>(json!(9_223_372_036_854_775_808_u64)).is_ok());
    assert!(serde_json::from_value::<Quantity>(json!(1.5e300)).is_ok());
}

#[test]
fn the_selector_cannot_change_once_created() {
    let schema = schema();
    let old = mutations::example_release();
    let mut changed = old.clone();
    changed["spec"]["selector"] = json!({"matchLabels": {"app": "checkout", "tier": "web"}});
    changed["spec"]["template"]["metadata"]["labels"]["tier"] = json!("web");
    let errors = Validator::new()
        .validate(&schema, &changed, Some(&old))
        .expect_err("a selector change is refused");
    let error = errors
        .as_slice()
        .iter()
        .find(|error| error.field_path == "spec.selector")
        .unwrap_or_else(|| panic!("no error on spec.selector: {errors:?}"));
    assert!(error.message.contains("immutable"), "{}", error.message);
    assert!(
        error.message.contains("create a new Release"),
        "{}",
        error.message
    );

    // A new image, a new roadmap item: the selector stays, the update is fine.
    let mut shipped = old.clone();
    shipped["spec"]["template"]["spec"]["containers"][0]["image"] = json!("checkout:1.9.0");
    shipped["spec"]["roadmap"]["item"] = json!("PAY-143");
    assert!(
        Validator::new()
            .validate(&schema, &shipped, Some(&old))
            .is_ok()
    );
    // On create there is no old selector to compare with.
    assert!(Validator::new().validate(&schema, &changed, None).is_ok());
}

/// The scale subresource that `kubectl scale` and a HorizontalPodAutoscaler use, with the paths
/// the controller fills in, and the bounds that refuse a negative, zero or absurd count (the
/// API server checks a `/scale` write against the Release's schema).
#[test]
fn the_scale_subresource_sets_spec_replicas_within_its_bounds() {
    let crd = crd::release_crd();
    let scale = crd.spec.versions[0]
        .subresources
        .as_ref()
        .and_then(|s| s.scale.as_ref())
        .expect("a scale subresource");
    assert_eq!(scale.spec_replicas_path, ".spec.replicas");
    assert_eq!(scale.status_replicas_path, ".status.replicas");
    assert_eq!(
        scale.label_selector_path.as_deref(),
        Some(".status.selector")
    );

    let api_server = ApiServer::new();
    for refused in [-1, 0, 10_001, 2_147_483_647] {
        let errors = api_server.errors(&with("/spec/replicas", json!(refused)));
        assert_eq!(errors.len(), 1, "{refused}: {errors:?}");
        assert!(
            errors[0].starts_with("spec.replicas: "),
            "{refused}: {errors:?}"
        );
    }
    for accepted in [1, 8, 10_000] {
        let errors = api_server.errors(&with("/spec/replicas", json!(accepted)));
        assert!(errors.is_empty(), "{accepted}: {errors:?}");
    }
    let status = &api_server.schema["properties"]["status"]["properties"];
    assert_eq!(status["replicas"]["type"], "integer");
    assert_eq!(status["selector"]["type"], "string");
}

/// The example Release with its template swapped for `spec.workloadRef`.
fn with_workload_ref(reference: Value) -> Value {
    let mut release = without("/spec/template");
    release["spec"]["workloadRef"] = reference;
    release
}

#[test]
fn a_workload_ref_replaces_the_template_and_names_only_an_apps_v1_deployment() {
    let reference = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "checkout"});
    let accepted = with_workload_ref(reference.clone());
    assert_eq!(validation_errors(&accepted), Vec::<String>::new());
    for policy in ["progressively", "onSuccess", "never"] {
        let mut with_policy = reference.clone();
        with_policy["scaleDown"] = json!(policy);
        assert_eq!(
            validation_errors(&with_workload_ref(with_policy)),
            Vec::<String>::new(),
            "scaleDown {policy}"
        );
    }

    let mut both = example_release();
    both["spec"]["workloadRef"] = reference.clone();
    let neither = without("/spec/template");
    let mut stateful_set = reference.clone();
    stateful_set["kind"] = json!("StatefulSet");
    let mut beta = reference.clone();
    beta["apiVersion"] = json!("apps/v1beta1");
    let mut unknown_policy = reference.clone();
    unknown_policy["scaleDown"] = json!("atOnce");
    let cases: Vec<(&str, Value, &[&str])> = vec![
        (
            "both template and workloadRef",
            both,
            &["spec.template", "spec.workloadRef"],
        ),
        (
            "neither template nor workloadRef",
            neither,
            &["spec.template", "spec.workloadRef"],
        ),
        (
            "a StatefulSet",
            with_workload_ref(stateful_set),
            &["spec.workloadRef", "apps/v1 Deployment"],
        ),
        (
            "apps/v1beta1",
            with_workload_ref(beta),
            &["spec.workloadRef", "apps/v1 Deployment"],
        ),
        (
            "an unknown scaleDown",
            with_workload_ref(unknown_policy),
            &["scaleDown"],
        ),
    ];
    for (what, manifest, fields) in cases {
        let errors = validation_errors(&manifest);
        assert!(!errors.is_empty(), "{what}: accepted");
        for field in fields {
            assert!(
                errors.iter().any(|error| error.contains(field)),
                "{what}: no error names {field}: {errors:?}"
            );
        }
    }
}

#[test]
fn a_roadmap_outcome_is_accepted_defaulted_and_needs_the_analysis_prometheus() {
    let outcome = json!({
        "name": "checkout-conversion",
        "query": "sum(increase(orders_total[{{window}}])) / sum(increase(visits_total[{{window}}]))",
        "goal": "increase",
        "minChange": "2%"
    });
    let manifest = with("/spec/roadmap/outcome", outcome.clone());
    assert_eq!(validation_errors(&manifest), Vec::<String>::new());
    let defaulted = cel::apply_defaults(&schema(), &manifest);
    let roadmap = &defaulted["spec"]["roadmap"];
    assert_eq!(roadmap["reworkWindow"], "168h", "7 days");
    assert_eq!(roadmap["outcome"]["baseline"], "168h");
    assert_eq!(roadmap["outcome"]["after"], "168h");
    let typed: Release = serde_json::from_value(defaulted).unwrap();
    let typed_outcome = typed.spec.roadmap.outcome.unwrap();
    assert_eq!(
        typed_outcome.min_change,
        waymark::api::MinChange::Percent(2.0)
    );
    assert_eq!(typed.spec.roadmap.rework_window.as_secs(), 7 * 86_400);

    let api_server = ApiServer::new();
    let cases = [
        ("/goal", json!("sideways"), "goal"),
        ("/minChange", json!("two percent"), "minChange"),
        ("/baseline", json!("7 days"), "baseline"),
        ("/name", json!("checkout conversion"), "name"),
    ];
    for (field, value, named) in cases {
        let mut broken = outcome.clone();
        broken[&field[1..]] = value;
        let errors = api_server.errors(&with("/spec/roadmap/outcome", broken));
        assert!(
            errors.iter().any(|error| error.contains(named)),
            "{field}: {errors:?}"
        );
    }
    let mut without_analysis = with("/spec/roadmap/outcome", outcome);
    without_analysis["spec"]
        .as_object_mut()
        .unwrap()
        .remove("analysis");
    let errors = api_server.errors(&without_analysis);
    assert!(
        errors
            .iter()
            .any(|error| error.contains("spec.roadmap.outcome is measured with the Prometheus")),
        "{errors:?}"
    );
}

#[test]
fn route_steps_the_schema_refuses_name_the_field() {
    let api_server = ApiServer::new();
    let cohort = json!({"setHeaderRoute": {"name": "beta", "match": {
        "headers": [{"name": "x-canary", "value": "true"}],
        "cookies": [{"name": "group", "value": "b.*", "type": "RegularExpression"}],
        "queryParams": [{"name": "canary", "value": "1"}]
    }}});
    let valid = json!([cohort, {"setMirrorRoute": {"name": "shadow", "percent": 20}},
        {"setWeight": 30}, {"setHeaderRoute": {"name": "beta"}}, {"setMirrorRoute": {"name": "shadow"}}]);
    assert_eq!(
        api_server.errors(&with("/spec/steps", valid)),
        Vec::<String>::new()
    );
    // (steps, a fragment of the one error expected)
    let cases = [
        (
            json!([{"setWeight": 10, "setHeaderRoute": {"name": "beta"}}]),
            "exactly one of setWeight, pause, setHeaderRoute or setMirrorRoute",
        ),
        (
            json!([{"setHeaderRoute": {"name": "Beta_Testers"}}]),
            "setHeaderRoute.name",
        ),
        (
            json!([{"setMirrorRoute": {"name": "shadow", "percent": 101}}]),
            "setMirrorRoute.percent",
        ),
        (
            json!([{"setMirrorRoute": {"name": "shadow", "match": {"headers": [{"name": "a", "value": "1"}]}}}]),
            "setMirrorRoute.match needs percent",
        ),
        (
            json!([{"setHeaderRoute": {"name": "beta", "match": {}}}]),
            "at least one of headers, cookies or queryParams",
        ),
        (
            json!([{"setHeaderRoute": {"name": "beta", "match": {"headers": [{"name": "x canary", "value": "1"}]}}}]),
            "x canary",
        ),
        (
            json!([{"setHeaderRoute": {"name": "beta", "match": {"headers": [{"name": "x", "value": "1", "type": "Prefix"}]}}}]),
            "Prefix",
        ),
    ];
    for (steps, expected) in cases {
        let errors = api_server.errors(&with("/spec/steps", steps.clone()));
        assert!(
            errors.len() == 1 && errors[0].contains(expected),
            "{steps}: {errors:?}"
        );
    }
}
