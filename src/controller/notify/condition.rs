//! The condition `NotificationsDelivered` of a Release that names targets in
//! `spec.roadmap.notify`: pure, from what the configuration lacks and how the last deliveries
//! to those targets ended.

use std::collections::BTreeMap;

use k8s_openapi::jiff::Timestamp;

use crate::api::ReleaseStatus;
use crate::rollout::conditions::{Truth, set_condition};

/// The condition's type.
pub const NOTIFICATIONS_DELIVERED: &str = "NotificationsDelivered";

/// The reason of the condition when `spec.roadmap.notify` names a target the configuration
/// lacks.
pub const REASON_UNKNOWN_TARGET: &str = "NotificationTargetUnknown";

/// How the last delivery to one target ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The target answered 2xx.
    Delivered,
    /// Given up: why, e.g. `HTTP 500 after 5 attempts`.
    Failed(String),
}

/// What the condition says, if anything is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// True or False.
    pub truth: Truth,
    /// CamelCase reason.
    pub reason: &'static str,
    /// What is wrong and what to do.
    pub message: String,
}

/// The condition for a Release naming `named` targets: a name `unknown` to the configuration
/// (`source`, or `None` without one) or a failed last delivery makes it False; a delivered one
/// True; nothing known yet (no delivery since this controller started): `None`, the condition
/// is left as it is.
pub fn verdict(
    named: &[String],
    unknown: &[String],
    source: Option<&str>,
    last: &BTreeMap<String, Delivery>,
) -> Option<Verdict> {
    if !unknown.is_empty() {
        let names = unknown.join(", ");
        let message = match source {
            Some(source) => format!(
                "spec.roadmap.notify names {names}, which the notification configuration \
                 {source} lacks: add the target there or remove the name from \
                 spec.roadmap.notify"
            ),
            None => format!(
                "spec.roadmap.notify names {names}, but the controller runs without a \
                 notification configuration: start it with --notifications-config (the Helm \
                 value notifications.configMap) or remove spec.roadmap.notify"
            ),
        };
        return Some(Verdict {
            truth: Truth::False,
            reason: REASON_UNKNOWN_TARGET,
            message,
        });
    }
    let failed: Vec<String> = named
        .iter()
        .filter_map(|name| match last.get(name) {
            Some(Delivery::Failed(why)) => Some(format!("{name}: {why}")),
            _ => None,
        })
        .collect();
    if !failed.is_empty() {
        return Some(Verdict {
            truth: Truth::False,
            reason: "NotificationFailed",
            message: format!(
                "the last notification was not delivered to {}; check the receiver and the URL \
                 in the target's Secret (urlFrom)",
                failed.join("; ")
            ),
        });
    }
    let delivered: Vec<&str> = named
        .iter()
        .filter(|name| last.get(*name) == Some(&Delivery::Delivered))
        .map(String::as_str)
        .collect();
    (!delivered.is_empty()).then(|| Verdict {
        truth: Truth::True,
        reason: "Delivered",
        message: format!(
            "the last notification was delivered to {}",
            delivered.join(", ")
        ),
    })
}

/// Set the condition in `status` as `verdict` says; a Release that names no target carries
/// none. Unchanged words leave the status unchanged (the quiet rule).
pub fn apply(
    status: &mut ReleaseStatus,
    named: &[String],
    verdict: Option<Verdict>,
    generation: Option<i64>,
    now: Timestamp,
) {
    if named.is_empty() {
        status
            .conditions
            .retain(|condition| condition.type_ != NOTIFICATIONS_DELIVERED);
        return;
    }
    // A name once unknown and now in the configuration: the old words would be stale.
    let verdict = verdict.or_else(|| {
        status
            .conditions
            .iter()
            .any(|c| c.type_ == NOTIFICATIONS_DELIVERED && c.reason == REASON_UNKNOWN_TARGET)
            .then(|| Verdict {
                truth: Truth::Unknown,
                reason: "AwaitingDelivery",
                message: format!(
                    "the configuration has every target spec.roadmap.notify names ({}); none \
                     was sent a notification yet",
                    named.join(", ")
                ),
            })
    });
    if let Some(verdict) = verdict {
        set_condition(
            &mut status.conditions,
            NOTIFICATIONS_DELIVERED,
            verdict.truth,
            verdict.reason,
            verdict.message,
            generation,
            now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    #[test]
    fn the_condition_names_the_target_and_what_to_do() {
        let named = names(&["team-a", "team-b"]);
        let failed = BTreeMap::from([
            ("team-a".to_string(), Delivery::Delivered),
            (
                "team-b".to_string(),
                Delivery::Failed("HTTP 500 after 5 attempts".into()),
            ),
        ]);
        let delivered = BTreeMap::from([("team-a".to_string(), Delivery::Delivered)]);
        let cm = Some("waymark-system/notifications");
        /// (unknown names, configuration, last deliveries, expected truth, reason and words)
        type Case<'a> = (
            Vec<String>,
            Option<&'a str>,
            BTreeMap<String, Delivery>,
            Option<(Truth, &'a str, &'a str)>,
        );
        let cases: Vec<Case> = vec![
            (
                names(&["team-b"]),
                cm,
                BTreeMap::new(),
                Some((
                    Truth::False,
                    "NotificationTargetUnknown",
                    "spec.roadmap.notify names team-b, which the notification configuration \
                     waymark-system/notifications lacks",
                )),
            ),
            (
                names(&["team-a", "team-b"]),
                None,
                BTreeMap::new(),
                Some((
                    Truth::False,
                    "NotificationTargetUnknown",
                    "--notifications-config",
                )),
            ),
            (
                vec![],
                cm,
                failed.clone(),
                Some((
                    Truth::False,
                    "NotificationFailed",
                    "not delivered to team-b: HTTP 500 after 5 attempts",
                )),
            ),
            (
                vec![],
                cm,
                delivered,
                Some((Truth::True, "Delivered", "delivered to team-a")),
            ),
            (vec![], cm, BTreeMap::new(), None),
        ];
        for (unknown, source, last, expected) in cases {
            let got = verdict(&named, &unknown, source, &last);
            match (got, expected) {
                (None, None) => {}
                (Some(got), Some((truth, reason, words))) => {
                    assert_eq!((got.truth, got.reason), (truth, reason));
                    assert!(
                        got.message.contains(words),
                        "{:?} in {}",
                        words,
                        got.message
                    );
                }
                (got, expected) => panic!("{got:?} != {expected:?}"),
            }
        }
    }

    #[test]
    fn unchanged_words_leave_the_status_as_it_was_and_no_names_no_condition() {
        let t0: Timestamp = "2026-12-06T14:00:00Z".parse().unwrap();
        let t1: Timestamp = "2026-12-06T15:00:00Z".parse().unwrap();
        let named = names(&["team-a"]);
        let failing = || {
            Some(Verdict {
                truth: Truth::False,
                reason: "NotificationFailed",
                message: "team-a: HTTP 500".into(),
            })
        };
        let mut status = ReleaseStatus::default();
        apply(&mut status, &named, failing(), Some(1), t0);
        let first = status.clone();
        apply(&mut status, &named, failing(), Some(1), t1);
        assert_eq!(
            status, first,
            "the same words at another time change nothing"
        );
        apply(&mut status, &named, None, Some(1), t1);
        assert_eq!(status, first, "nothing known: left as it is");
        apply(&mut status, &[], None, Some(1), t1);
        assert!(status.conditions.is_empty());
    }

    #[test]
    fn a_target_added_to_the_configuration_clears_its_unknown_name() {
        let now: Timestamp = "2026-12-06T14:00:00Z".parse().unwrap();
        let named = names(&["team-a"]);
        let mut status = ReleaseStatus::default();
        let unknown = verdict(&named, &named, Some("ns/cm"), &BTreeMap::new());
        apply(&mut status, &named, unknown, Some(1), now);
        assert_eq!(status.conditions[0].reason, REASON_UNKNOWN_TARGET);
        // Now known, nothing sent yet: no verdict, but the stale words go.
        let known = verdict(&named, &[], Some("ns/cm"), &BTreeMap::new());
        assert_eq!(known, None);
        apply(&mut status, &named, known, Some(1), now);
        let condition = &status.conditions[0];
        assert_eq!(
            (condition.status.as_str(), condition.reason.as_str()),
            ("Unknown", "AwaitingDelivery")
        );
        assert!(
            condition.message.contains("(team-a)"),
            "{}",
            condition.message
        );
    }
}
