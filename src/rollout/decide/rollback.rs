//! Taking a canary away: a rollback (analysis, progress deadline, abort), a rolled-back
//! revision waiting for a new template or a retry, and a canary superseded by a newer one.

use super::Decider;
use crate::api::{Outcome, Phase, TimelineKind};
use crate::rollout::{Severity, history, timeline};

impl Decider<'_> {
    /// A new template while a canary runs: the old canary's release ends as Superseded and the
    /// new revision starts from the first step.
    pub(super) fn supersede(&mut self) {
        let Some(canary) = self.status.canary_revision.clone() else {
            return;
        };
        if canary == self.spec_revision {
            return;
        }
        let old_item = self
            .old
            .roadmap_item
            .clone()
            .unwrap_or_else(|| self.item.to_string());
        let message = format!(
            "canary {canary} replaced by revision {} at step {}",
            self.spec_revision,
            self.step_label()
        );
        self.finish_revision(
            &canary,
            &old_item,
            Outcome::Superseded,
            "Superseded",
            message.clone(),
        );
        self.retire_canary();
        self.event(
            Severity::Normal,
            "CanarySuperseded",
            format!("{message} (canary was {old_item})"),
        );
        self.clear_canary();
    }

    /// Roll the canary back: traffic off it first, then its pods; the revision is remembered
    /// so it is not tried again until the template changes or a retry.
    pub(super) fn rollback(&mut self, outcome: Outcome, reason: &str, message: String) {
        let revision = self.status.canary_revision.clone().unwrap_or_default();
        self.retire_canary();
        // The traffic leaves the canary in this decision's first action: time to restore ends now.
        let failure_detected_at = self
            .analysis_of(&revision)
            .and_then(|analysis| analysis.failing_since.clone());
        let item = self.item;
        let entry = self.finish_revision(&revision, item, outcome, reason, message.clone());
        entry.failure_detected_at = failure_detected_at;
        let (event_reason, verb) = match outcome {
            Outcome::Aborted => ("CanaryAborted", "aborted"),
            _ => ("CanaryRolledBack", "rolled back"),
        };
        self.event(
            Severity::Warning,
            event_reason,
            format!("canary {revision} {verb}: {message}"),
        );
        self.status.rolled_back_revision = Some(revision);
        self.clear_canary();
    }

    /// The spec's revision was rolled back: keep the canary without traffic or pods and the
    /// stable at full size (also finishing a rollback a restart cut short).
    pub(super) fn rolled_back(&mut self) -> bool {
        self.retire_canary();
        // For the post-mortem: when the traffic was seen back on the stable, and the canary's
        // pods gone.
        let traffic_off = match self.mode {
            super::Mode::Gateway => {
                self.route_weight() == Some(0) && !self.observed.route_carries_additions(self.name)
            }
            super::Mode::Replicas => self
                .observed
                .canary
                .as_ref()
                .is_none_or(|c| c.replicas == 0),
        };
        if traffic_off {
            self.note_after(TimelineKind::TrafficOnStable, timeline::traffic_on_stable);
        }
        if self
            .observed
            .canary
            .as_ref()
            .is_none_or(|c| c.replicas == 0)
        {
            self.note_after(TimelineKind::CanaryScaledDown, timeline::canary_scaled_down);
        }
        let revision = self.status.rolled_back_revision.clone().unwrap_or_default();
        let (reason, message) = history::latest_of(&self.status.history, &revision)
            .map(|entry| {
                (
                    entry.reason.clone(),
                    entry
                        .message
                        .clone()
                        .unwrap_or_else(|| format!("canary {revision} rolled back")),
                )
            })
            .unwrap_or_else(|| {
                (
                    "RolledBack".into(),
                    format!("canary {revision} rolled back"),
                )
            });
        let message = format!(
            "{message}; waiting for a new template or `waymark retry {}`",
            self.name
        );
        self.set_report(Phase::RolledBack, &reason, message);
        false
    }
}
