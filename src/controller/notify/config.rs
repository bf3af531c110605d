//! The notification configuration: the targets a ConfigMap names, parsed and checked without
//! any I/O, so that a bad edit is refused with the key and field to fix.
//!
//! The ConfigMap holds one key, [`CONFIG_KEY`], with YAML such as:
//!
//! ```yaml
//! targets:
//! - name: team-checkout
//!   type: slack                   # webhook | slack | cloudevents
//!   urlFrom: {secretKeyRef: {name: waymark-notifications, key: team-checkout}}
//!   transitions: [promoted, rolled-back]   # default: every transition
//!   default: false                # only Releases naming it in spec.roadmap.notify
//!   releases:                     # default: every Release
//!     namespaces: [shop]
//!     selector: {matchLabels: {team: checkout}}
//!     horizons: [now]
//!     kinds: [feature]
//! ```
//!
//! URLs come from Secrets, never from the ConfigMap: a webhook URL is a credential (a Slack
//! incoming webhook's URL is all it takes to post in that channel), and ConfigMaps are readable
//! by far more people than Secrets.

use std::collections::BTreeSet;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde::Deserialize;

use crate::api::{Horizon, RoadmapKind};

use super::transition::Transition;

/// The ConfigMap key holding the configuration.
pub const CONFIG_KEY: &str = "notifications.yaml";

/// The whole configuration: its targets, by unique name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NotificationConfig {
    /// Where the configuration was read from (`namespace/name`), for messages that point at it.
    pub source: String,
    /// The targets, in the order written.
    pub targets: Vec<Target>,
}

impl NotificationConfig {
    /// The target named `name`.
    pub fn target(&self, name: &str) -> Option<&Target> {
        self.targets.iter().find(|target| target.name == name)
    }
}

/// Where and how one kind of receiver is told.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, strum::Display, strum::IntoStaticStr)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum TargetKind {
    /// A plain JSON document with every field of the message.
    Webhook,
    /// A Slack-compatible incoming webhook: `{"text": ...}`, with blocks when asked.
    Slack,
    /// CloudEvents 1.0 over HTTP, structured mode (`application/cloudevents+json`).
    CloudEvents,
}

/// One notification target.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// Its name, as metrics label it and `spec.roadmap.notify` names it.
    pub name: String,
    /// The payload it takes.
    pub kind: TargetKind,
    /// The Secret key holding its URL.
    pub url_from: SecretKeyRef,
    /// The transitions it hears about.
    pub transitions: BTreeSet<Transition>,
    /// Whether every Release its filter selects is sent to it; false: only those naming it in
    /// `spec.roadmap.notify` (its filter still applies).
    pub default: bool,
    /// Which Releases it hears about.
    pub releases: ReleaseFilter,
    /// Slack only: add Block Kit blocks beside the text.
    pub blocks: bool,
}

/// A key of a Secret in the configuration's namespace.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretKeyRef {
    /// The Secret's name.
    pub name: String,
    /// The key in its data.
    pub key: String,
}

/// Which Releases a target hears about: every condition set must hold; an empty one holds
/// for all.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ReleaseFilter {
    /// The Releases' namespaces.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// A label selector on the Release.
    #[serde(default)]
    pub selector: Option<LabelSelector>,
    /// The roadmap horizons (`spec.roadmap.horizon`).
    #[serde(default)]
    pub horizons: Vec<Horizon>,
    /// The roadmap kinds (`spec.roadmap.kind`).
    #[serde(default)]
    pub kinds: Vec<RoadmapKind>,
}

/// Why a configuration was refused; every message names the ConfigMap, the key and the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// The ConfigMap lacks the key.
    #[error(
        "notification configuration {configmap}: no key {CONFIG_KEY}; put the targets under data.{CONFIG_KEY}"
    )]
    MissingKey {
        /// `namespace/name` of the ConfigMap.
        configmap: String,
    },
    /// The YAML does not parse, or a field has the wrong shape.
    #[error("notification configuration {configmap}, key {CONFIG_KEY}: {field}: {reason}")]
    Invalid {
        /// `namespace/name` of the ConfigMap.
        configmap: String,
        /// The field path, e.g. `targets[1].urlFrom`.
        field: String,
        /// What is wrong and what to write instead.
        reason: String,
    },
}

/// A target as written, before the checks that serde cannot make.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawTarget {
    name: String,
    #[serde(rename = "type")]
    kind: TargetKind,
    #[serde(default)]
    url_from: Option<RawUrlFrom>,
    /// Refused with a message saying where URLs go; accepted here only to say so.
    #[serde(default)]
    url: Option<serde_json::Value>,
    #[serde(default)]
    transitions: Option<Vec<String>>,
    #[serde(default = "yes")]
    default: bool,
    #[serde(default)]
    releases: ReleaseFilter,
    #[serde(default)]
    blocks: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawUrlFrom {
    secret_key_ref: SecretKeyRef,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    targets: Vec<RawTarget>,
}

/// Parse the ConfigMap `source`'s data (`None`: the ConfigMap has no data).
pub fn parse(
    source: &str,
    data: Option<&std::collections::BTreeMap<String, String>>,
) -> Result<NotificationConfig, ConfigError> {
    let text =
        data.and_then(|data| data.get(CONFIG_KEY))
            .ok_or_else(|| ConfigError::MissingKey {
                configmap: source.to_string(),
            })?;
    parse_text(source, text)
}

/// Parse the YAML text of [`CONFIG_KEY`].
pub fn parse_text(source: &str, text: &str) -> Result<NotificationConfig, ConfigError> {
    let invalid = |field: &str, reason: String| ConfigError::Invalid {
        configmap: source.to_string(),
        field: field.to_string(),
        reason,
    };
    let value: serde_json::Value =
        serde_saphyr::from_str(text).map_err(|error| invalid("(document)", error.to_string()))?;
    let value = if value.is_null() {
        serde_json::json!({})
    } else {
        value
    };
    let raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let field = if path == "." {
            "(document)".to_string()
        } else {
            path
        };
        invalid(&field, error.inner().to_string())
    })?;
    let mut targets: Vec<Target> = Vec::with_capacity(raw.targets.len());
    for (index, raw) in raw.targets.into_iter().enumerate() {
        let at = |field: &str| format!("targets[{index}].{field}");
        if !is_target_name(&raw.name) {
            return Err(invalid(
                &at("name"),
                format!(
                    "{:?} is not a valid target name: use 1-63 lowercase letters, digits and '-', \
                     starting and ending with a letter or digit (spec.roadmap.notify names it so)",
                    raw.name
                ),
            ));
        }
        if targets.iter().any(|target| target.name == raw.name) {
            return Err(invalid(
                &at("name"),
                format!(
                    "target {} is named twice; give each target its own name",
                    raw.name
                ),
            ));
        }
        if raw.url.is_some() {
            return Err(invalid(
                &at("url"),
                "URLs are not written in the ConfigMap: put the URL in a Secret and name it with \
                 urlFrom: {secretKeyRef: {name, key}}"
                    .into(),
            ));
        }
        let Some(url_from) = raw.url_from else {
            return Err(invalid(
                &at("urlFrom"),
                "missing: name the Secret key holding the URL with urlFrom: {secretKeyRef: {name, key}}"
                    .into(),
            ));
        };
        if url_from.secret_key_ref.name.is_empty() || url_from.secret_key_ref.key.is_empty() {
            return Err(invalid(
                &at("urlFrom.secretKeyRef"),
                "both name and key must be set".into(),
            ));
        }
        let transitions = match raw.transitions {
            None => Transition::ALL.into_iter().collect(),
            Some(names) => {
                let mut transitions = BTreeSet::new();
                for (position, name) in names.iter().enumerate() {
                    let transition = name.parse::<Transition>().map_err(|_| {
                        invalid(
                            &at(&format!("transitions[{position}]")),
                            format!(
                                "unknown transition {name:?}; use one of {}",
                                Transition::ALL.map(Transition::as_str).join(", ")
                            ),
                        )
                    })?;
                    transitions.insert(transition);
                }
                if transitions.is_empty() {
                    return Err(invalid(
                        &at("transitions"),
                        "empty: list the transitions to send, or leave the field out for all"
                            .into(),
                    ));
                }
                transitions
            }
        };
        if raw.blocks && raw.kind != TargetKind::Slack {
            return Err(invalid(
                &at("blocks"),
                format!("only a slack target takes blocks, this one is {}", raw.kind),
            ));
        }
        targets.push(Target {
            name: raw.name,
            kind: raw.kind,
            url_from: url_from.secret_key_ref,
            transitions,
            default: raw.default,
            releases: raw.releases,
            blocks: raw.blocks,
        });
    }
    Ok(NotificationConfig {
        source: source.to_string(),
        targets,
    })
}

/// A DNS label, as `spec.roadmap.notify` accepts.
fn is_target_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 63
        && bytes[0].is_ascii_alphanumeric()
        && !bytes[0].is_ascii_uppercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric()
        && !bytes[bytes.len() - 1].is_ascii_uppercase()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    const SOURCE: &str = "waymark-system/waymark-notifications";

    fn refused(text: &str) -> (String, String) {
        match parse_text(SOURCE, text) {
            Err(ConfigError::Invalid { field, reason, .. }) => (field, reason),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn a_full_target_is_read_with_its_filter() {
        let config = parse_text(
            SOURCE,
            r#"
targets:
- name: team-checkout
  type: slack
  blocks: true
  urlFrom: {secretKeyRef: {name: hooks, key: checkout}}
  transitions: [promoted, rolled-back]
  default: false
  releases:
    namespaces: [shop]
    selector: {matchLabels: {team: checkout}}
    horizons: [now]
    kinds: [feature, security]
- name: audit
  type: cloudevents
  urlFrom: {secretKeyRef: {name: hooks, key: audit}}
"#,
        )
        .unwrap();
        assert_eq!(config.source, SOURCE);
        let team = config.target("team-checkout").unwrap();
        assert_eq!(team.kind, TargetKind::Slack);
        assert!(team.blocks);
        assert!(!team.default);
        assert_eq!(
            team.transitions,
            BTreeSet::from([Transition::Promoted, Transition::RolledBack])
        );
        assert_eq!(team.releases.namespaces, ["shop"]);
        assert_eq!(team.releases.horizons, [Horizon::Now]);
        assert_eq!(
            team.releases.kinds,
            [RoadmapKind::Feature, RoadmapKind::Security]
        );
        assert_eq!(
            team.url_from,
            SecretKeyRef {
                name: "hooks".into(),
                key: "checkout".into()
            }
        );
        let audit = config.target("audit").unwrap();
        assert_eq!(audit.kind, TargetKind::CloudEvents);
        assert!(audit.default, "default: true unless said otherwise");
        assert_eq!(
            audit.transitions.len(),
            Transition::ALL.len(),
            "all by default"
        );
        assert_eq!(audit.releases, ReleaseFilter::default());
    }

    #[test]
    fn an_empty_document_has_no_targets() {
        assert_eq!(parse_text(SOURCE, "").unwrap().targets, vec![]);
        assert_eq!(parse_text(SOURCE, "targets: []").unwrap().targets, vec![]);
    }

    #[test]
    fn a_configmap_without_the_key_names_the_key() {
        let error = parse(SOURCE, None).unwrap_err();
        assert_eq!(
            error.to_string(),
            "notification configuration waymark-system/waymark-notifications: no key \
             notifications.yaml; put the targets under data.notifications.yaml"
        );
    }

    /// Every bad configuration is refused naming the field to fix and what to write.
    #[test]
    fn bad_configurations_name_the_key_and_the_fix() {
        let hook = "urlFrom: {secretKeyRef: {name: hooks, key: a}}";
        let cases: Vec<(String, &str, &str)> = vec![
            (
                format!("targets:\n- name: a\n  type: teams\n  {hook}"),
                "targets[0].type",
                "unknown variant `teams`",
            ),
            (
                "targets:\n- name: a\n  type: slack\n  url: https://hooks.example/x".into(),
                "targets[0].url",
                "put the URL in a Secret",
            ),
            (
                "targets:\n- name: a\n  type: webhook".into(),
                "targets[0].urlFrom",
                "name the Secret key holding the URL",
            ),
            (
                format!(
                    "targets:\n- name: a\n  type: webhook\n  {hook}\n  transitions: [deployed]"
                ),
                "targets[0].transitions[0]",
                "unknown transition \"deployed\"; use one of canary-started, paused",
            ),
            (
                format!("targets:\n- name: a\n  type: webhook\n  {hook}\n  transitions: []"),
                "targets[0].transitions",
                "leave the field out for all",
            ),
            (
                format!(
                    "targets:\n- name: a\n  type: webhook\n  {hook}\n- name: a\n  type: slack\n  {hook}"
                ),
                "targets[1].name",
                "target a is named twice",
            ),
            (
                format!("targets:\n- name: Team_A\n  type: webhook\n  {hook}"),
                "targets[0].name",
                "lowercase letters",
            ),
            (
                format!("targets:\n- name: a\n  type: webhook\n  {hook}\n  blocks: true"),
                "targets[0].blocks",
                "only a slack target takes blocks",
            ),
            (
                format!("targets:\n- name: a\n  type: webhook\n  {hook}\n  releases: {{team: x}}"),
                "targets[0].releases.team",
                "unknown field `team`",
            ),
            (
                format!(
                    "targets:\n- name: a\n  type: webhook\n  {hook}\n  releases: {{horizons: [soon]}}"
                ),
                "targets[0].releases.horizons[0]",
                "unknown variant `soon`",
            ),
            (
                "targets:\n- name: a\n  type: webhook\n  urlFrom: {secretKeyRef: {name: hooks}}"
                    .into(),
                "targets[0].urlFrom.secretKeyRef",
                "missing field `key`",
            ),
            (
                "target: []".into(),
                "target",
                "unknown field `target`, expected `targets`",
            ),
        ];
        for (text, field, reason) in cases {
            let (got_field, got_reason) = refused(&text);
            assert_eq!(got_field, field, "{text}");
            assert!(
                got_reason.contains(reason),
                "{text}\n  reason {got_reason:?} should contain {reason:?}"
            );
        }
    }

    #[test]
    fn the_refusal_names_the_configmap_and_key() {
        let error = parse_text(SOURCE, "targets:\n- name: a\n  type: webhook").unwrap_err();
        let text = error.to_string();
        assert!(
            text.starts_with(
                "notification configuration waymark-system/waymark-notifications, key \
                 notifications.yaml: targets[0].urlFrom: "
            ),
            "{text}"
        );
    }

    #[test]
    fn target_names_are_dns_labels() {
        for good in ["a", "team-checkout", "x1", "0"] {
            assert!(is_target_name(good), "{good}");
        }
        for bad in ["", "-a", "a-", "A", "a_b", &"a".repeat(64)] {
            assert!(!is_target_name(bad), "{bad}");
        }
    }
}
