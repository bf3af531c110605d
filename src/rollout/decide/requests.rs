//! Manual requests (`waymark promote|abort|retry`), read from `status.request` and handled once
//! by id. Whether a request is acted on is decided by [`manual`], the rule the CLI checks before
//! it writes one: the controller acts on every request the CLI accepted unless the release has
//! moved on since (a stale request), and ignores the others with an Event saying why.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::Decider;
use crate::api::{ManualRequest, Outcome};
use crate::rollout::manual::{self, Effect};
use crate::rollout::{Severity, timeline};

impl Decider<'_> {
    /// Act on a new manual request, or ignore it with an Event saying why. Either way its id is
    /// recorded so it is handled once. Runs after a superseded canary is replaced and the
    /// latest analysis is folded in: the position compared is the one the stages then act on.
    pub(super) fn handle_request(&mut self) {
        let Some(request) = self.old.request.clone() else {
            return;
        };
        if self.old.handled_request.as_deref() == Some(request.id.as_str()) {
            return;
        }
        self.status.handled_request = Some(request.id.clone());
        let now = manual::position(self.spec, &self.status);
        if let Some(why) = manual::stale(&request, &now) {
            self.ignore(&request, why);
            return;
        }
        match manual::judge_status(self.spec, self.name, Some(&self.status), request.action) {
            Ok(accepted) => self.act(&request, accepted.effect),
            // What the rule refuses at an unchanged position: something it does not record
            // moved (an analysis run ended a hold), or the request was not written by the CLI.
            Err(refused) => self.ignore(&request, refused.to_string()),
        }
    }

    fn act(&mut self, request: &ManualRequest, effect: Effect) {
        if effect != Effect::Retry {
            self.note(timeline::request(
                Time(self.now),
                request.action,
                request.requested_by.clone(),
            ));
        }
        // Who asked is in every note: the log must say whose word moved a canary.
        let by = requested(request);
        let canary = self.status.canary_revision.clone().unwrap_or_default();
        match effect {
            Effect::RollBack => {
                let who = request.requested_by.as_deref().unwrap_or("a person");
                let message = format!(
                    "aborted by {who} at step {} with {}% on canary",
                    self.step_label(),
                    self.shown_weight()
                );
                self.rollback(Outcome::Aborted, "Aborted", message);
            }
            Effect::Retry => {
                let revision = self.status.rolled_back_revision.take().unwrap_or_default();
                // The retried revision is judged afresh: the counters that rolled it back
                // would otherwise roll it back again on the spot.
                if self
                    .status
                    .analysis
                    .as_ref()
                    .is_some_and(|analysis| analysis.revision.as_deref() == Some(revision.as_str()))
                {
                    self.status.analysis = None;
                }
                self.event(
                    Severity::Normal,
                    "RetryRequested",
                    format!("{by}: revision {revision} starts again from step 1"),
                );
            }
            Effect::PromoteWithoutCanary => {
                self.event(
                    Severity::Normal,
                    "PromoteRequested",
                    format!(
                        "{by}: revision {} goes to stable without a canary",
                        self.spec_revision
                    ),
                );
                self.status.canary_revision = Some(self.spec_revision.clone());
                self.status.canary_started_at = Some(Time(self.now));
                self.begin_promotion();
            }
            Effect::SkipToPromotion => {
                self.event(
                    Severity::Normal,
                    "PromoteRequested",
                    format!(
                        "{by}: canary {canary} skips steps from {} and analysis",
                        self.step_label()
                    ),
                );
                self.begin_promotion();
            }
            Effect::StartDespiteBudget => {
                self.budget_override = true;
                self.event(
                    Severity::Normal,
                    "PromoteRequested",
                    format!(
                        "{by}: revision {} starts despite the error-budget policy",
                        self.spec_revision
                    ),
                );
            }
            Effect::ReleaseHold => {
                // A person's promote ends an `inconclusiveLimit` hold and, like any promote,
                // finishes the current step: a `setWeight` held for want of a passing analysis
                // then takes its weight (the next step holds it), a person's override.
                if let Some(analysis) = self.status.analysis.as_mut() {
                    analysis.consecutive_inconclusive = 0;
                }
                if self.current_step() < self.steps_len() {
                    let finished = self.finish_step();
                    self.event(
                        Severity::Normal,
                        "PromoteRequested",
                        format!(
                            "{by}: canary {canary} step {finished} finished; hold on inconclusive analysis released"
                        ),
                    );
                } else {
                    self.event(
                        Severity::Normal,
                        "PromoteRequested",
                        format!(
                            "{by}: hold on inconclusive analysis of canary {canary} released; promotion still waits for a passing analysis (promote --full skips it)"
                        ),
                    );
                }
            }
            Effect::FinishStep => {
                let finished = self.finish_step();
                self.event(
                    Severity::Normal,
                    "PromoteRequested",
                    format!("{by}: canary {canary} step {finished} finished"),
                );
            }
        }
    }

    /// End the current step by a person's word; the label of the step that ended.
    fn finish_step(&mut self) -> String {
        let finished = self.step_label();
        let next = self.current_step() + 1;
        self.set_current_step(next);
        self.status.pause_until = None;
        if self.status.steps_started_at.is_some() {
            self.status.step_started_at = Some(Time(self.now));
        }
        finished
    }

    fn ignore(&mut self, request: &ManualRequest, why: String) {
        self.event(
            Severity::Warning,
            "RequestIgnored",
            format!("{} ignored: {why}", requested(request)),
        );
    }
}

/// `promote request r1 by sre@example.com`: the request and who made it (as the CLI recorded
/// it; a request written by hand may name nobody).
fn requested(request: &ManualRequest) -> String {
    let who = request.requested_by.as_deref().unwrap_or("an unnamed user");
    format!("{} request {} by {who}", request.action.verb(), request.id)
}
