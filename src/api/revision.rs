//! The revision of a pod template: a short, stable hash of its content.

use k8s_openapi::api::core::v1::PodTemplateSpec;
use sha2::{Digest, Sha256};

/// Ten hex characters of the SHA-256 of the template's canonical JSON.
///
/// `serde_json` writes struct fields in declaration order and maps (labels, annotations) in
/// key order, so equal templates always give equal revisions, across restarts and versions of
/// the controller that share the k8s-openapi types.
pub fn template_revision(template: &PodTemplateSpec) -> String {
    let canonical = serde_json::to_vec(template).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    digest
        .iter()
        .take(5)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

    fn template(image: &str) -> PodTemplateSpec {
        PodTemplateSpec {
            metadata: None,
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: "app".into(),
                    image: Some(image.into()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
        }
    }

    #[test]
    fn equal_templates_share_a_revision_and_different_ones_do_not() {
        let first = template_revision(&template("shop/checkout:1.4.0"));
        assert_eq!(first, template_revision(&template("shop/checkout:1.4.0")));
        assert_ne!(first, template_revision(&template("shop/checkout:1.5.0")));
        assert_eq!(first.len(), 10);
        assert!(first.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
