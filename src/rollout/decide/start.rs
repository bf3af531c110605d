//! Before a canary: the first release, the steady state, and a new revision waiting to start
//! (under an error-budget policy).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Decider, Mode, plus};
use crate::api::{Outcome, Phase};
use crate::rollout::{Action, Severity, history, timeline};
use crate::traffic::split::canary_size;

impl Decider<'_> {
    /// No stable yet: the template becomes the stable directly.
    pub(super) fn first_release(&mut self) -> bool {
        let revision = self.spec_revision.clone();
        let total = self.total();
        self.push(Action::ApplyStable {
            revision: revision.clone(),
            replicas: total,
        });
        self.status.stable_revision = Some(revision.clone());
        self.status.stable_roadmap_item = Some(self.item.to_string());
        // No history entry yet: the first release is recorded Promoted once its stable is
        // available (see `steady`), not while it has no pod to serve with.
        self.event(
            Severity::Normal,
            "StableCreated",
            format!("first release: stable {revision} created with {total} replicas"),
        );
        true
    }

    /// The stable runs the spec's template: keep it at full size with all the traffic, remove
    /// an old canary once `scaleDownDelay` has passed. Healthy only once it is available, and
    /// a first release is recorded `Promoted` in the history then.
    pub(super) fn steady(&mut self) -> bool {
        let revision = self.spec_revision.clone();
        let total = self.total();
        match self.observed.stable.as_ref() {
            Some(stable) if stable.revision.as_deref() == Some(revision.as_str()) => {
                if stable.replicas != total {
                    self.push(Action::ScaleStable { replicas: total });
                }
            }
            _ => self.push(Action::ApplyStable {
                revision: revision.clone(),
                replicas: total,
            }),
        }
        // In replica split a leftover canary's pods take traffic through the shared Service.
        // The promoted canary's pods run the stable's revision and serve like it until the
        // canary goes after `scaleDownDelay`; any other revision's pods (a canary whose
        // rollback or abort a stopped controller left half done) go at once.
        let promoted_canary = self
            .observed
            .canary
            .as_ref()
            .is_some_and(|c| c.revision.as_deref() == Some(revision.as_str()));
        if !(self.mode == Mode::Replicas && promoted_canary) {
            self.canary_traffic_off();
        }
        if self.observed.canary.is_some() {
            match self
                .status
                .promoted_at
                .as_ref()
                .map(|t| plus(t.0, self.spec.scale_down_delay))
            {
                Some(remove_at) if self.now < remove_at => self.due_at(remove_at),
                _ => self.push(Action::DeleteCanary),
            }
        }
        let available = self
            .observed
            .stable
            .as_ref()
            .filter(|s| s.revision.as_deref() == Some(revision.as_str()))
            .is_some_and(|s| s.available);
        if available && history::first_release_unrecorded(&self.status) {
            let item = self.item;
            self.finish_revision(
                &revision,
                item,
                Outcome::Promoted,
                "FirstRelease",
                format!("first release: stable {revision} available with {total} pods"),
            );
        }
        // The wanted pod count, not the count available: a figure that moves while pods
        // start would rewrite the status for every pod (`waymark status` shows them live).
        if available {
            self.set_report(
                Phase::Healthy,
                "StableAvailable",
                format!("stable {revision} serves 100% ({total} pods available)"),
            );
        } else {
            // Until every pod is available nothing is Healthy (Argo CD would show it green);
            // the report turns Degraded once progressDeadline has passed.
            self.set_report(
                Phase::Progressing,
                "StableRollingOut",
                format!("stable {revision} rolling out, waiting for {total} pods to be available"),
            );
        }
        false
    }

    /// A new revision without a canary yet: start one, unless its analysis cannot read its
    /// Prometheus Secret or the error-budget policy holds it.
    pub(super) fn pending(&mut self) -> bool {
        let revision = self.spec_revision.clone();
        if self.wait_for_credentials(&revision) {
            return false;
        }
        let budget = self
            .spec
            .analysis
            .as_ref()
            .and_then(|a| a.slo.budget.as_ref().map(|b| (a.interval, b.freeze_below)));
        if let Some((interval, freeze_below)) = budget.filter(|_| !self.budget_override) {
            let fresh = self
                .status
                .analysis
                .as_ref()
                .filter(|a| {
                    a.last_run_at
                        .as_ref()
                        .is_some_and(|t| plus(t.0, interval) > self.now)
                })
                .map(|a| a.error_budget_remaining);
            match fresh {
                Some(Some(remaining)) if remaining < freeze_below => {
                    self.canary_traffic_off();
                    let message = format!(
                        "revision {revision} waits: error budget {:.1}% left, below the freeze at {:.1}%; `waymark promote {}` starts it anyway",
                        remaining * 100.0,
                        freeze_below * 100.0,
                        self.name
                    );
                    self.set_report(Phase::Paused, "ErrorBudgetExhausted", message);
                    return false;
                }
                // A figure above the freeze, or a run that could not read the budget: the
                // canary's own analysis still guards it, so an unreadable budget does not block.
                Some(_) => {}
                None if self.observed.analysis.is_some() => {}
                None => {
                    self.canary_traffic_off();
                    self.poll = true;
                    self.set_report(
                        Phase::Progressing,
                        "CheckingErrorBudget",
                        format!("revision {revision} waits for a fresh error-budget figure"),
                    );
                    return false;
                }
            }
        }
        self.start_canary();
        true
    }

    fn start_canary(&mut self) {
        let revision = self.spec_revision.clone();
        self.canary_traffic_off();
        match self.mode {
            Mode::Gateway => self.push(Action::ApplyCanary {
                revision: revision.clone(),
                replicas: canary_size(self.total(), self.weight_target(0)),
            }),
            // In replica mode every ready canary pod takes traffic: the Deployment is made by
            // the first step that gives the canary pods.
            Mode::Replicas => {}
        }
        self.status.canary_revision = Some(revision.clone());
        self.status.canary_started_at = Some(Time(self.now));
        self.status.canary_waiting_since = Some(Time(self.now));
        self.status.step_started_at = None;
        self.status.steps_started_at = None;
        self.status.pause_until = None;
        self.status.promoted_at = None;
        // Judged afresh: counters left by an earlier canary (even of this same revision, which
        // was superseded) would otherwise roll it back before its first run. A budget-only
        // figure (no revision) stays.
        if self
            .status
            .analysis
            .as_ref()
            .is_some_and(|a| a.revision.is_some())
        {
            self.status.analysis = None;
        }
        self.set_current_step(0);
        self.status.timeline.clear();
        self.note(timeline::canary_created(Time(self.now), &revision));
        let stable = self.status.stable_revision.clone().unwrap_or_default();
        self.event(
            Severity::Normal,
            "CanaryStarted",
            format!(
                "canary {revision} started against stable {stable}, {} steps",
                self.steps_len()
            ),
        );
    }
}
