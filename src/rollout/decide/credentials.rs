//! The Prometheus Secrets (`bearerTokenSecret`, `caSecret`): a condition as soon as the Release
//! is seen, and no canary started that its analysis could not judge.

use super::{Decider, plus};
use crate::api::{Duration, Phase};
use crate::rollout::conditions::{self, Truth};
use crate::rollout::{CREDENTIALS_RECHECK, CredentialsCheck};

/// Reason of `PrometheusCredentials=False`, and of the Degraded phase of a new revision that
/// waits for the Secret.
pub const REASON_CREDENTIALS_MISSING: &str = "PrometheusSecretMissing";

impl Decider<'_> {
    fn names_a_secret(&self) -> bool {
        self.spec
            .analysis
            .as_ref()
            .is_some_and(|analysis| analysis.prometheus.names_a_secret())
    }

    /// What is wrong with the Prometheus Secrets, as last found: this reconcile's check, or
    /// else what the condition says (a check the API server could not answer changes nothing).
    pub(super) fn credentials_problem(&self) -> Option<String> {
        if !self.names_a_secret() {
            return None;
        }
        match &self.observed.credentials {
            CredentialsCheck::Found => None,
            CredentialsCheck::Missing(problem) => Some(problem.clone()),
            CredentialsCheck::Unknown => self
                .old
                .conditions
                .iter()
                .find(|c| c.type_ == conditions::PROMETHEUS_CREDENTIALS && c.status == "False")
                .map(|c| c.message.clone()),
        }
    }

    /// A new revision whose analysis could not read its Secret does not start its canary: it
    /// would fail every run (and roll back a healthy canary) for a reason that is not its own.
    /// Returns whether it waits.
    pub(super) fn wait_for_credentials(&mut self, revision: &str) -> bool {
        let Some(problem) = self.credentials_problem() else {
            return false;
        };
        self.canary_traffic_off();
        self.set_report(
            Phase::Degraded,
            REASON_CREDENTIALS_MISSING,
            format!("revision {revision} waits: its analysis cannot reach Prometheus: {problem}"),
        );
        true
    }

    /// The `PrometheusCredentials` condition: only while the spec names a Secret; False with
    /// the problem, and then a look again within [`CREDENTIALS_RECHECK`] so that a Secret
    /// created since clears it.
    pub(super) fn set_credentials_condition(&mut self) {
        if !self.names_a_secret() {
            conditions::remove_condition(
                &mut self.status.conditions,
                conditions::PROMETHEUS_CREDENTIALS,
            );
            return;
        }
        let (truth, reason, message) = match self.credentials_problem() {
            Some(problem) => {
                let recheck = Duration::from_secs(CREDENTIALS_RECHECK.as_secs());
                self.due_at(plus(self.now, recheck));
                (Truth::False, REASON_CREDENTIALS_MISSING, problem)
            }
            None if self.observed.credentials == CredentialsCheck::Found => (
                Truth::True,
                "PrometheusSecretsFound",
                "every Secret named in spec.analysis.prometheus holds its key".to_string(),
            ),
            // Not checked yet, and nothing said otherwise: leave the condition as it is.
            None => return,
        };
        conditions::set_condition(
            &mut self.status.conditions,
            conditions::PROMETHEUS_CREDENTIALS,
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
    use crate::api::{ManualAction, Phase};
    use crate::rollout::conditions::PROMETHEUS_CREDENTIALS;
    use crate::rollout::fixtures::*;
    use crate::rollout::{Action, CREDENTIALS_RECHECK, CredentialsCheck, Decision};

    const MISSING: &str = "Secret shop/prometheus-token, key token (named in \
        spec.analysis.prometheus.bearerTokenSecret): not found: create it in namespace shop \
        with the key token, or name an existing Secret in \
        spec.analysis.prometheus.bearerTokenSecret";

    fn missing() -> CredentialsCheck {
        CredentialsCheck::Missing(MISSING.into())
    }

    /// The gateway Release with analysis, naming a bearer-token Secret.
    fn with_token_secret() -> ReleaseBuilder {
        ReleaseBuilder::gateway().bearer_token_secret("prometheus-token", "token")
    }

    fn condition(sim: &Sim) -> Option<(String, String, String)> {
        sim.status()
            .conditions
            .iter()
            .find(|c| c.type_ == PROMETHEUS_CREDENTIALS)
            .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
    }

    fn starts_a_canary(decision: &Decision) -> bool {
        decision
            .actions
            .iter()
            .any(|a| matches!(a, Action::ApplyCanary { .. }))
    }

    #[test]
    fn a_missing_secret_on_a_settled_release_is_a_condition_looked_at_again_until_found() {
        let mut sim = Sim::new(with_token_secret().build());
        sim.observed.credentials = missing();
        let decision = sim.settle();
        assert_eq!(
            condition(&sim),
            Some((
                "False".into(),
                "PrometheusSecretMissing".into(),
                MISSING.into()
            ))
        );
        // The stable serves: the release is not disturbed, only told.
        assert_eq!(sim.status().phase, Some(Phase::Healthy));
        assert_eq!(decision.requeue_after, Some(CREDENTIALS_RECHECK));

        // The controller could not ask this time: nothing changes.
        sim.observed.credentials = CredentialsCheck::Unknown;
        let before = sim.status().clone();
        let decision = sim.tick(5);
        assert_eq!(sim.status(), &before);
        assert!(decision.requeue_after.is_some());

        // Created: the condition turns True, and nothing more is due.
        sim.observed.credentials = CredentialsCheck::Found;
        let decision = sim.tick(30);
        let (status, reason, _) = condition(&sim).unwrap();
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("True", "PrometheusSecretsFound")
        );
        assert_eq!(decision.requeue_after, None);
    }

    #[test]
    fn a_new_revision_waits_for_its_secret_then_starts_its_canary() {
        let mut sim = Sim::canary_of(with_token_secret());
        sim.pods_ready();
        sim.observed.credentials = missing();
        let decision = sim.settle();
        assert!(!starts_a_canary(&decision), "{:?}", decision.actions);
        assert!(sim.observed.canary.is_none());
        let status = sim.status();
        assert_eq!(status.canary_revision, None);
        assert_eq!(status.phase, Some(Phase::Degraded));
        assert_eq!(status.reason.as_deref(), Some("PrometheusSecretMissing"));
        let message = status.message.clone().unwrap();
        assert!(
            message.starts_with(&format!(
                "revision {} waits: its analysis cannot reach Prometheus: Secret shop/prometheus-token, key token",
                revision_of(V2)
            )),
            "{message}"
        );
        assert!(
            notes(&decision)
                .iter()
                .any(|note| note.contains("prometheus-token")),
            "a Warning event on entering the wait: {:?}",
            notes(&decision)
        );
        // Still missing when the controller cannot ask: still waiting.
        sim.observed.credentials = CredentialsCheck::Unknown;
        assert!(!starts_a_canary(&sim.tick(30)));

        sim.observed.credentials = CredentialsCheck::Found;
        let decision = sim.tick(30);
        assert!(starts_a_canary(&decision), "{:?}", decision.actions);
        assert_eq!(sim.status().canary_revision, Some(revision_of(V2)));
    }

    #[test]
    fn promote_does_not_start_a_canary_waiting_for_its_secret_but_promote_full_skips_it() {
        let mut sim = Sim::canary_of(with_token_secret());
        sim.pods_ready();
        sim.observed.credentials = missing();
        sim.settle();
        sim.request("p", ManualAction::Promote);
        let decision = sim.tick(1);
        assert!(!starts_a_canary(&decision), "{:?}", decision.actions);
        assert!(
            notes(&decision).iter().any(|note| note
                .contains("promote request p by sre@example.com ignored: revision")
                && note.contains("--full")),
            "{:?}",
            notes(&decision)
        );
        assert_eq!(
            sim.status().reason.as_deref(),
            Some("PrometheusSecretMissing")
        );

        sim.request("f", ManualAction::PromoteFull);
        sim.tick(1);
        sim.settle();
        assert_eq!(sim.status().stable_revision, Some(revision_of(V2)));
        assert_eq!(sim.status().phase, Some(Phase::Healthy));
    }

    #[test]
    fn a_first_release_is_not_held_by_a_missing_secret() {
        let mut sim = Sim::new(with_token_secret().build());
        sim.observed.credentials = missing();
        let decision = sim.tick(0);
        assert!(
            decision
                .actions
                .iter()
                .any(|a| matches!(a, Action::ApplyStable { .. })),
            "{:?}",
            decision.actions
        );
        assert_eq!(condition(&sim).unwrap().0, "False");
    }

    #[test]
    fn without_a_secret_named_there_is_no_condition() {
        let mut sim = Sim::new(with_token_secret().build());
        sim.observed.credentials = missing();
        sim.settle();
        assert!(condition(&sim).is_some());
        // The Secret is no longer named: the condition goes, whatever was last found.
        sim.release.spec.analysis = ReleaseBuilder::gateway().analysis().build().spec.analysis;
        let decision = sim.settle();
        assert_eq!(condition(&sim), None);
        assert_eq!(decision.requeue_after, None);
        let mut plain = Sim::new(ReleaseBuilder::gateway().analysis().build());
        plain.observed.credentials = CredentialsCheck::Found;
        plain.settle();
        assert_eq!(condition(&plain), None);
    }
}
