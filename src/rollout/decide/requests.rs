//! Manual requests (`waymark promote|abort|retry`), read from `status.request` and handled once
//! by id; a request that makes no sense in the current stage is ignored with an Event saying why.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Decider, Stage, stage};
use crate::api::{ManualAction, ManualRequest, Outcome};
use crate::rollout::{Severity, timeline};

impl Decider<'_> {
    /// Act on a new manual request, or ignore it with an Event saying why. Either way its id is
    /// recorded so it is handled once.
    pub(super) fn handle_request(&mut self) {
        let Some(request) = self.old.request.clone() else {
            return;
        };
        if self.old.handled_request.as_deref() == Some(request.id.as_str()) {
            return;
        }
        self.status.handled_request = Some(request.id.clone());
        let stage = stage(&self.spec_revision, &self.status);
        let target = match stage {
            Stage::Canary | Stage::Promoting => self.status.canary_revision.clone(),
            Stage::RolledBack => self.status.rolled_back_revision.clone(),
            Stage::Pending => Some(self.spec_revision.clone()),
            Stage::Steady | Stage::FirstRelease => None,
        };
        if let Some(asked) = request.revision.as_deref()
            && target.as_deref() != Some(asked)
        {
            let actual = target.map_or_else(
                || "no canary is in progress".to_string(),
                |t| format!("the canary is {t}"),
            );
            self.ignore(&request, format!("it names revision {asked} but {actual}"));
            return;
        }
        let phase = self.old.phase.map_or("unset", |p| p.as_str());
        match (request.action, stage) {
            (ManualAction::Promote | ManualAction::PromoteFull, Stage::Promoting) => {
                self.ignore(&request, "the canary is already being promoted".into());
            }
            (ManualAction::Promote | ManualAction::PromoteFull, Stage::Canary | Stage::Pending) => {
                self.promote(&request, stage);
            }
            (ManualAction::Promote | ManualAction::PromoteFull, _) => self.ignore(
                &request,
                format!("promote works only while Progressing or Paused; phase is {phase}"),
            ),
            (ManualAction::Abort, Stage::Canary) => {
                self.note(timeline::request(
                    Time(self.now),
                    request.action,
                    request.requested_by.clone(),
                ));
                let who = request.requested_by.as_deref().unwrap_or("a person");
                let message = format!(
                    "aborted by {who} at step {} with {}% on canary",
                    self.step_label(),
                    self.shown_weight()
                );
                self.rollback(Outcome::Aborted, "Aborted", message);
            }
            (ManualAction::Abort, Stage::Promoting) => self.ignore(
                &request,
                "the canary is being promoted; the stable already runs its template".into(),
            ),
            (ManualAction::Abort, _) => self.ignore(
                &request,
                format!("abort works only while a canary exists; phase is {phase}"),
            ),
            (ManualAction::Retry, Stage::RolledBack) => {
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
                    format!(
                        "retry request {}: revision {revision} starts again from step 1",
                        request.id
                    ),
                );
            }
            (ManualAction::Retry, _) => self.ignore(
                &request,
                format!("retry works only after RolledBack; phase is {phase}"),
            ),
        }
    }

    fn ignore(&mut self, request: &ManualRequest, why: String) {
        let action = request.action.verb();
        self.event(
            Severity::Warning,
            "RequestIgnored",
            format!("{action} request {} ignored: {why}", request.id),
        );
    }

    fn promote(&mut self, request: &ManualRequest, stage: Stage) {
        let action = request.action.verb();
        self.note(timeline::request(
            Time(self.now),
            request.action,
            request.requested_by.clone(),
        ));
        match (request.action, stage) {
            (ManualAction::PromoteFull, Stage::Pending) => {
                self.event(
                    Severity::Normal,
                    "PromoteRequested",
                    format!(
                        "{action} request {}: revision {} goes to stable without a canary",
                        request.id, self.spec_revision
                    ),
                );
                self.status.canary_revision = Some(self.spec_revision.clone());
                self.status.canary_started_at = Some(Time(self.now));
                self.begin_promotion();
            }
            (ManualAction::PromoteFull, _) => {
                let canary = self.status.canary_revision.clone().unwrap_or_default();
                self.event(
                    Severity::Normal,
                    "PromoteRequested",
                    format!(
                        "{action} request {}: canary {canary} skips steps from {} and analysis",
                        request.id,
                        self.step_label()
                    ),
                );
                self.begin_promotion();
            }
            // A canary its analysis cannot judge does not start, even when asked to.
            (_, Stage::Pending) if self.credentials_problem().is_some() => self.ignore(
                request,
                format!(
                    "revision {} waits for its Prometheus Secret (see the PrometheusCredentials condition): create it, or `waymark promote --full` to skip the canary and its analysis",
                    self.spec_revision
                ),
            ),
            (_, Stage::Pending) => {
                self.budget_override = true;
                self.event(
                    Severity::Normal,
                    "PromoteRequested",
                    format!(
                        "{action} request {}: revision {} starts despite the error-budget policy",
                        request.id, self.spec_revision
                    ),
                );
            }
            _ => {
                let canary = self.status.canary_revision.clone().unwrap_or_default();
                if self.inconclusive_hold(&canary) {
                    if let Some(analysis) = self.status.analysis.as_mut() {
                        analysis.consecutive_inconclusive = 0;
                    }
                    self.event(
                        Severity::Normal,
                        "PromoteRequested",
                        format!(
                            "{action} request {}: hold on inconclusive analysis of canary {canary} released",
                            request.id
                        ),
                    );
                } else if self.current_step() < self.steps_len() {
                    let finished = self.step_label();
                    let next = self.current_step() + 1;
                    self.set_current_step(next);
                    self.status.pause_until = None;
                    if self.status.steps_started_at.is_some() {
                        self.status.step_started_at = Some(Time(self.now));
                        self.note_step_begins();
                    }
                    self.event(
                        Severity::Normal,
                        "PromoteRequested",
                        format!(
                            "{action} request {}: canary {canary} step {finished} finished",
                            request.id
                        ),
                    );
                } else {
                    self.ignore(
                        request,
                        format!(
                            "canary {canary} has no step left and waits for a passing analysis; promote --full skips it"
                        ),
                    );
                }
            }
        }
    }
}
