//! The CustomResourceDefinition generated from the Rust types.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use serde_json::Value;

use super::Release;

/// The Release CRD.
///
/// The embedded pod template keeps its full structural schema (so the API server validates
/// it) but loses its nested descriptions: they are Kubernetes' own PodSpec documentation and
/// would push the CRD past the 256 KiB that client-side `kubectl apply` (and Argo CD's default
/// sync) can store in its last-applied annotation.
///
/// Every integer gets bounds that fit its Rust type, and every quantity the pattern Kubernetes
/// reads quantities with (see [`bound_integers`]): the API server does not enforce
/// `format: int32`, and one stored Release the controller cannot decode would stop the list of
/// every Release it watches; a quantity the Deployment cannot hold would be refused only then.
pub fn release_crd() -> CustomResourceDefinition {
    let crd = Release::crd();
    let Ok(mut json) = serde_json::to_value(&crd) else {
        return crd;
    };
    for version in json["spec"]["versions"]
        .as_array_mut()
        .into_iter()
        .flatten()
    {
        let schema = &mut version["schema"]["openAPIV3Schema"];
        bound_integers(schema, "");
        unwrap_descriptions(schema);
        let template = &mut schema["properties"]["spec"]["properties"]["template"];
        if let Some(properties) = template.get_mut("properties") {
            strip_descriptions(properties);
        }
    }
    serde_json::from_value(json).unwrap_or(crd)
}

/// Properties of the pod template (and of Waymark's own types) whose int-or-string schema is a
/// Kubernetes `IntOrString`, whose number is an `i32`. Every other int-or-string node of the
/// schema is a `Quantity`, which reads any JSON number.
pub const INT_OR_STRING_PORTS: [&str; 2] = ["port", "targetPort"];

/// What Kubernetes accepts as a quantity written as a string (`500m`, `1Gi`, `1e3`).
pub const QUANTITY_PATTERN: &str = r"^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$";

/// The largest `int64` a schema bound can say: bounds are JSON floats, `i64::MAX` rounds up to
/// 2^63, and the API server turns a bound of 2^63 into `-2^63` (every number is then too
/// large). This is the largest float below 2^63.
pub const INT64_MAXIMUM: i64 = i64::MAX - 1023;

/// Give every `integer` the bounds of its `format` (keeping tighter ones already there), every
/// `IntOrString` ([`INT_OR_STRING_PORTS`]) the bounds of an `i32`, and every `Quantity` the
/// [`QUANTITY_PATTERN`] (on an int-or-string, a pattern applies to strings only).
///
/// `name` is the property name of `schema` in its parent object.
fn bound_integers(schema: &mut Value, name: &str) {
    let Value::Object(map) = schema else { return };
    let int_or_string = map.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    let range = if map.get("type").and_then(Value::as_str) == Some("integer") {
        match map.get("format").and_then(Value::as_str) {
            Some("int32") => Some((i64::from(i32::MIN), i64::from(i32::MAX))),
            _ => Some((i64::MIN, INT64_MAXIMUM)),
        }
    } else if int_or_string && INT_OR_STRING_PORTS.contains(&name) {
        Some((i64::from(i32::MIN), i64::from(i32::MAX)))
    } else {
        None
    };
    if int_or_string && !INT_OR_STRING_PORTS.contains(&name) && !map.contains_key("pattern") {
        map.insert("pattern".into(), Value::from(QUANTITY_PATTERN));
    }
    if let Some((floor, ceiling)) = range {
        let minimum = map
            .get("minimum")
            .and_then(Value::as_f64)
            .map_or(floor, |min| (min.ceil() as i64).max(floor));
        let maximum = map
            .get("maximum")
            .and_then(Value::as_f64)
            .map_or(ceiling, |max| (max.floor() as i64).min(ceiling));
        map.insert("minimum".into(), Value::from(minimum));
        map.insert("maximum".into(), Value::from(maximum));
    }
    for (key, child) in map.iter_mut() {
        match key.as_str() {
            "properties" => {
                if let Value::Object(fields) = child {
                    for (field, schema) in fields.iter_mut() {
                        bound_integers(schema, field);
                    }
                }
            }
            "items" | "additionalProperties" => bound_integers(child, name),
            "allOf" | "anyOf" | "oneOf" => {
                if let Value::Array(branches) = child {
                    for branch in branches {
                        bound_integers(branch, name);
                    }
                }
            }
            _ => {}
        }
    }
}

/// Join the lines of each description that a doc comment wrapped at 100 columns: `kubectl
/// explain` wraps text to the terminal itself, and a line break kept from the source would
/// break a sentence in the middle. A blank line (a new paragraph) stays.
fn unwrap_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            if let Some(Value::String(text)) = map.get_mut("description") {
                *text = unwrap_lines(text);
            }
            // `properties` maps field names to schemas: a field may itself be named "description".
            for (key, child) in map.iter_mut() {
                if key == "properties" {
                    if let Value::Object(fields) = child {
                        fields.values_mut().for_each(unwrap_descriptions);
                    }
                } else if key != "description" {
                    unwrap_descriptions(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(unwrap_descriptions),
        _ => {}
    }
}

/// `text` with the lines of each paragraph joined by a space.
fn unwrap_lines(text: &str) -> String {
    text.split("\n\n")
        .map(|paragraph| {
            paragraph
                .lines()
                .map(str::trim)
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n\n")
}

fn strip_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(map) => {
            map.remove("description");
            // `properties` maps field names to schemas: a field may itself be named "description".
            for (key, child) in map.iter_mut() {
                if key == "properties" {
                    if let Value::Object(fields) = child {
                        fields.values_mut().for_each(strip_descriptions);
                    }
                } else {
                    strip_descriptions(child);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

/// The Release CRD as YAML, as checked in under `crds/` and printed by `waymark crd`.
pub fn release_crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    // One line per string however long (no folding), as `kubectl get -o yaml` shows them.
    let options = serde_saphyr::ser_options! { folded_wrap_chars: usize::MAX };
    let body = serde_saphyr::to_string_with_options(&release_crd(), options)?;
    Ok(format!(
        "# Generated by `waymark crd` from src/api; do not edit by hand.\n{body}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_doc_comment_becomes_one_line_per_paragraph() {
        assert_eq!(
            unwrap_lines("The canary steps, run in order\nfrom the first.\n\nA second\nparagraph."),
            "The canary steps, run in order from the first.\n\nA second paragraph."
        );
        assert_eq!(unwrap_lines("One line."), "One line.");
    }

    #[test]
    fn spec_field_descriptions_are_single_lines_of_whole_sentences() {
        let crd = serde_json::to_value(release_crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        for (field, schema) in spec["properties"].as_object().unwrap() {
            let description = schema["description"].as_str().unwrap_or_default();
            assert!(
                description.ends_with('.') && !description.contains('\n'),
                "spec.{field}: {description:?}"
            );
            let first = description.chars().next().unwrap_or(' ');
            assert!(first.is_uppercase(), "spec.{field}: {description:?}");
        }
    }
}
