//! `spec.traffic.gatewayAPI.sessionPersistence`: written only where the route's GatewayClass
//! lists the feature, and a `SessionPersistence` condition that says which of the three it is.

use super::Decider;
use crate::rollout::conditions::{self, Truth};
use crate::traffic::features::{SessionPersistencePlan, session_persistence_plan};

/// Reason of `SessionPersistence=True`.
pub const REASON_SESSION_PERSISTENCE_WRITTEN: &str = "SessionPersistenceWritten";
/// Reason of `SessionPersistence=False`: the GatewayClass lists features, not this one.
pub const REASON_SESSION_PERSISTENCE_UNSUPPORTED: &str = "SessionPersistenceUnsupported";
/// Reason of `SessionPersistence=Unknown`: the GatewayClass lists no features.
pub const REASON_SESSION_PERSISTENCE_UNKNOWN: &str = "SessionPersistenceSupportUnknown";

impl Decider<'_> {
    /// The `SessionPersistence` condition: only while the spec asks for session persistence.
    pub(super) fn set_session_persistence_condition(&mut self) {
        let Some(gateway) = self.spec.traffic.gateway_api.as_ref() else {
            conditions::remove_condition(
                &mut self.status.conditions,
                conditions::SESSION_PERSISTENCE,
            );
            return;
        };
        let Some((kind, _)) = gateway.route() else {
            return;
        };
        let plan = session_persistence_plan(
            gateway.session_persistence.as_ref(),
            kind,
            self.observed.gateway_features.as_deref(),
        );
        let (truth, reason, message) = match plan {
            SessionPersistencePlan::NotAsked => {
                conditions::remove_condition(
                    &mut self.status.conditions,
                    conditions::SESSION_PERSISTENCE,
                );
                return;
            }
            SessionPersistencePlan::Write(_) => (
                Truth::True,
                REASON_SESSION_PERSISTENCE_WRITTEN,
                format!(
                    "spec.traffic.gatewayAPI.sessionPersistence is written on the {}'s rules \
                     that send traffic to the stable: its GatewayClass supports it",
                    kind.kind()
                ),
            ),
            SessionPersistencePlan::Unsupported(message) => (
                Truth::False,
                REASON_SESSION_PERSISTENCE_UNSUPPORTED,
                message,
            ),
            SessionPersistencePlan::Unknown(message) => {
                (Truth::Unknown, REASON_SESSION_PERSISTENCE_UNKNOWN, message)
            }
        };
        conditions::set_condition(
            &mut self.status.conditions,
            conditions::SESSION_PERSISTENCE,
            truth,
            reason,
            message,
            self.generation,
            self.now,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{GatewayApiTraffic, SessionPersistence};
    use crate::rollout::decide;
    use crate::rollout::fixtures::*;

    fn asking() -> crate::api::Release {
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.traffic.gateway_api = Some(GatewayApiTraffic {
            session_persistence: Some(SessionPersistence {
                session_name: Some("cart".into()),
                ..SessionPersistence::default()
            }),
            ..GatewayApiTraffic::http("checkout")
        });
        release
    }

    fn condition(
        release: &crate::api::Release,
        features: Option<&[&str]>,
    ) -> Option<(String, String, String)> {
        let mut observed = observed().stable(V1, 4).route(0).build();
        observed.gateway_features =
            features.map(|names| names.iter().map(|name| name.to_string()).collect());
        let decision = decide(release, &observed, at(10));
        decision
            .status
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::SESSION_PERSISTENCE)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    #[test]
    fn a_gateway_class_without_the_feature_refuses_session_persistence_naming_the_field() {
        let (status, reason, message) = condition(
            &asking(),
            Some(&["Gateway", "HTTPRoute", "HTTPRouteRequestMirror"]),
        )
        .expect("a condition");
        assert_eq!(status, "False");
        assert_eq!(reason, REASON_SESSION_PERSISTENCE_UNSUPPORTED);
        assert!(
            message.contains("spec.traffic.gatewayAPI.sessionPersistence"),
            "{message}"
        );
    }

    #[test]
    fn the_session_persistence_condition_says_written_unknown_or_nothing() {
        let (status, reason, _) = condition(
            &asking(),
            Some(&["HTTPRoute", "HTTPRouteSessionPersistence"]),
        )
        .unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", REASON_SESSION_PERSISTENCE_WRITTEN)
        );
        let (status, reason, message) = condition(&asking(), None).unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("Unknown", REASON_SESSION_PERSISTENCE_UNKNOWN)
        );
        assert!(message.contains("support is unknown"), "{message}");
        // Not asked for: no condition at all, whatever the class says.
        let plain = ReleaseBuilder::gateway().build();
        assert_eq!(condition(&plain, Some(&["HTTPRoute"])), None);
        assert_eq!(condition(&plain, None), None);
    }
}
