//! Promotion: the stable takes the canary's template, becomes available, takes all the traffic
//! (or, with a replica split, the canary's pods), and the canary is removed after
//! `scaleDownDelay`.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Decider, Mode};
use crate::api::{Outcome, Phase, RouteAdditions};
use crate::rollout::{Action, Severity};

impl Decider<'_> {
    /// Record the promotion as begun (the stable's revision is the canary's): from here a
    /// restarted controller goes on promoting, and analysis no longer counts.
    pub(super) fn begin_promotion(&mut self) {
        let revision = self.status.canary_revision.clone().unwrap_or_default();
        self.status.stable_revision = Some(revision.clone());
        let steps = self.steps_len();
        if self.status.current_step.is_some() {
            self.set_current_step(steps);
        }
        self.status.pause_until = None;
        // Told in the log only: the status says Promoting at the same moment, and the
        // CanaryPromoted Event follows; an Event of its own would be one more write per canary.
        self.narrate(
            Severity::Normal,
            "PromotionStarted",
            format!("canary {revision} promoting: stable takes its template"),
        );
    }

    pub(super) fn promoting(&mut self) -> bool {
        let revision = self.status.canary_revision.clone().unwrap_or_default();
        let total = self.total();
        let stable = self
            .observed
            .stable
            .as_ref()
            .filter(|s| s.revision.as_deref() == Some(revision.as_str()));
        // Not the observed count: a step finished in this same call may already have scaled
        // the canary, and the pod total must hold after all of this decision's actions.
        let canary_replicas = self.planned_canary_replicas().max(0);
        let Some(stable) = stable else {
            let replicas = match self.mode {
                Mode::Gateway => total,
                // Keep the pod total: the stable takes the template at its current share.
                Mode::Replicas => (total - canary_replicas).max(0),
            };
            self.push(Action::ApplyStable {
                revision: revision.clone(),
                replicas,
            });
            self.report_promoting(&revision);
            return false;
        };
        if !stable.available {
            self.report_promoting(&revision);
            return false;
        }
        match self.mode {
            Mode::Gateway => {
                if stable.replicas != total {
                    self.push(Action::ScaleStable { replicas: total });
                }
                let weight_off = self.route_weight() == Some(0);
                if !weight_off {
                    self.push(Action::SetWeight { canary_weight: 0 });
                }
                // The cohorts and mirrors go with the canary's weight: every request is the
                // stable's, which now runs the canary's revision.
                let additions_off = self.ensure_additions(RouteAdditions::default());
                if !weight_off || !additions_off {
                    self.report_promoting(&revision);
                    return false;
                }
            }
            Mode::Replicas => {
                if canary_replicas > 0 {
                    // Hand pods over a quarter at a time, make before break: the stable grows
                    // by a batch, and once those pods are available the canary shrinks by as
                    // many, so capacity never drops below spec.replicas.
                    let batch = ((total + 3) / 4).max(1);
                    if stable.replicas + canary_replicas <= total {
                        self.push(Action::ScaleStable {
                            replicas: (stable.replicas + batch).min(total),
                        });
                        self.report_promoting(&revision);
                        return false;
                    }
                    let left = (total - stable.replicas).max(0);
                    if left > 0 || stable.replicas != total {
                        self.push(Action::ScaleCanary { replicas: left });
                        self.report_promoting(&revision);
                        return false;
                    }
                    // The stable has every pod, available, so the promotion is complete. The
                    // canary's last pods run the stable's revision: they serve like the
                    // stable's until the canary is deleted after `scaleDownDelay` (see
                    // `steady`), so no scale to 0 first, which would be one more write.
                }
                if stable.replicas != total {
                    self.push(Action::ScaleStable { replicas: total });
                    self.report_promoting(&revision);
                    return false;
                }
            }
        }
        self.complete_promotion(&revision);
        true
    }

    /// The stable's replica count once the actions already decided in this call are applied.
    pub(super) fn planned_stable_replicas(&self) -> i32 {
        self.actions
            .iter()
            .rev()
            .find_map(|action| match action {
                Action::ScaleStable { replicas } | Action::ApplyStable { replicas, .. } => {
                    Some(*replicas)
                }
                _ => None,
            })
            .unwrap_or_else(|| self.observed.stable.as_ref().map_or(0, |s| s.replicas))
    }

    /// The canary's replica count once the actions already decided in this call are applied.
    pub(super) fn planned_canary_replicas(&self) -> i32 {
        self.actions
            .iter()
            .rev()
            .find_map(|action| match action {
                Action::ScaleCanary { replicas } | Action::ApplyCanary { replicas, .. } => {
                    Some(*replicas)
                }
                Action::DeleteCanary => Some(0),
                _ => None,
            })
            .unwrap_or_else(|| self.observed.canary.as_ref().map_or(0, |c| c.replicas))
    }

    /// One message for the whole promotion: its sub-steps (the stable's rollout, the hand-over
    /// of traffic or pods) show in the children and in `waymark status`, not as status writes.
    fn report_promoting(&mut self, revision: &str) {
        let message = match self.mode {
            Mode::Gateway => format!(
                "promoting canary {revision}: the stable takes its template, then all of the traffic"
            ),
            Mode::Replicas => format!(
                "promoting canary {revision}: the stable takes its template, then the canary's pods"
            ),
        };
        self.set_report(Phase::Progressing, "Promoting", message);
    }

    fn complete_promotion(&mut self, revision: &str) {
        let message = format!("canary {revision} promoted; stable serves 100%");
        let item = self.item;
        self.finish_revision(revision, item, Outcome::Promoted, "Promoted", message);
        self.event(
            Severity::Normal,
            "CanaryPromoted",
            format!("canary {revision} promoted"),
        );
        self.status.stable_roadmap_item = Some(self.item.to_string());
        self.status.promoted_at = Some(Time(self.now));
        if self.status.rolled_back_revision.as_deref() == Some(revision) {
            self.status.rolled_back_revision = None;
        }
        self.clear_canary();
    }
}
