//! The end of a decision: phase, reason and message, the standard conditions, the Events on
//! entering a hold or a degraded state, and when to look again.

use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::{CONVERGE_POLL, Decider, Mode, Report, Stage, next_analysis_at, plus, stage};
use crate::api::{Phase, Role, Verdict};
use crate::rollout::conditions::{self, Truth};
use crate::rollout::validate::SpecError;
use crate::rollout::{
    Action, Audience, Decision, EventNote, LastApply, NoteKind, RouteState, Severity,
};

/// Reason of `SpecValid=False` and of the Degraded phase it causes.
pub const REASON_INVALID_SPEC: &str = "InvalidSpec";
/// Reason of `TrafficRouted=False` and of the Degraded phase it causes.
pub const REASON_ROUTE_UNUSABLE: &str = "TrafficRouteUnusable";
/// Reason of a Degraded phase when a workload is not available within `progressDeadline`.
pub const REASON_PROGRESS_DEADLINE: &str = "ProgressDeadlineExceeded";

/// A problem in front of what the release was doing: `"<problem>; holding: <doing>"`.
pub fn holding(problem: &str, doing: &str) -> String {
    format!("{problem}; holding: {doing}")
}

impl Decider<'_> {
    /// The decision for a spec that fails the checks the schema cannot make: nothing is done,
    /// the status says which field is wrong, and only a spec change is worth a new look.
    pub(in crate::rollout) fn invalid_spec(mut self, error: &SpecError) -> Decision {
        let message = error.to_string();
        let report = Report {
            phase: Phase::Degraded,
            reason: REASON_INVALID_SPEC.into(),
            message: message.clone(),
        };
        self.announce(&report);
        conditions::set_condition(
            &mut self.status.conditions,
            conditions::SPEC_VALID,
            Truth::False,
            REASON_INVALID_SPEC,
            message,
            self.generation,
            self.now,
        );
        self.status.roadmap_item = Some(self.item.to_string());
        // Nothing is applied for an invalid spec, but what the last apply met is still said.
        self.applied();
        self.status.phase = Some(report.phase);
        self.status.reason = Some(report.reason);
        self.status.message = Some(report.message);
        Decision {
            actions: self.actions,
            status: self.status,
            requeue_after: None,
        }
    }

    /// The end of every decision: the progress shown, the report (a stable past its deadline,
    /// an unusable route or a refused write overrides what the steps said), the conditions,
    /// and when to look again.
    pub(super) fn finish(mut self) -> Decision {
        let promoting = stage(&self.spec_revision, &self.status) == Stage::Promoting;
        self.show_progress(promoting);
        let report = self.report.take().unwrap_or(Report {
            phase: Phase::Healthy,
            reason: "StableAvailable".into(),
            message: String::new(),
        });
        let report = self.stable_report(report, promoting);
        let (report, unusable) = self.route_report(report);
        let report = self.applied_report(report);
        self.set_conditions(&report, unusable.as_deref(), promoting);
        self.set_credentials_condition();
        self.set_session_persistence_condition();
        self.status.phase = Some(report.phase);
        self.status.reason = Some(report.reason);
        self.status.message = Some(report.message);
        let requeue_after = self.requeue_after();
        Decision {
            actions: self.actions,
            status: self.status,
            requeue_after,
        }
    }

    /// The weight as it is, the step's label and the roadmap item being delivered.
    fn show_progress(&mut self, promoting: bool) {
        let canary_revision = self.status.canary_revision.clone();
        let stage_now = stage(&self.spec_revision, &self.status);
        // Weight as it is, not as wished. While promoting, the stable already runs the
        // canary's revision: the share between the two Deployments says nothing about which
        // revision serves, and the pods handed over batch by batch would rewrite it each time.
        if !promoting || self.status.canary_weight.is_none() {
            self.status.canary_weight = Some(self.shown_weight());
        }
        self.status.step_progress = canary_revision
            .as_ref()
            .filter(|_| self.status.current_step.is_some())
            .map(|_| self.step_label());
        let in_progress = canary_revision.is_some() || stage_now == Stage::Pending;
        self.status.roadmap_item = if in_progress {
            Some(self.item.to_string())
        } else {
            self.status
                .stable_roadmap_item
                .clone()
                .or_else(|| Some(self.item.to_string()))
        };
        // The Burn column reads `analysis.burn`: it speaks of the canary being judged. Once the
        // canary is promoted, rolled back or gone (or before one starts), the last run's burn
        // would read as a live one, so it is left unset; the run's numbers stay.
        let judged = stage_now == Stage::Canary;
        if let Some(analysis) = self.status.analysis.as_mut()
            && !(judged && analysis.revision.is_some() && analysis.revision == canary_revision)
        {
            analysis.burn = None;
        }
    }

    /// `report`, unless the stable has been unavailable for longer than progressDeadline.
    fn stable_report(&mut self, mut report: Report, promoting: bool) -> Report {
        // The stable has not been available for longer than progressDeadline: Degraded. A
        // stable whose newest spec the Deployment controller has not seen yet (the controller
        // has just scaled it) keeps what the status says of it until its counts are current.
        // During a promotion the stable's rollout is the promotion itself (the canary's pods
        // serve meanwhile): it is held to progressDeadline from the promotion's start and is
        // not reported as the stable going down.
        let stable = self.observed.stable.as_ref();
        let stable_down = match stable {
            Some(s) if !s.settled || promoting => self.status.stable_unavailable_since.is_some(),
            Some(s) => !s.available,
            None => true,
        };
        if promoting && !stable.is_some_and(|s| s.available) {
            let since = self
                .status
                .step_started_at
                .as_ref()
                .or(self.status.canary_started_at.as_ref())
                .map_or(self.now, |t| t.0);
            report = self.stable_deadline(since, " of the promotion's start", report);
        }
        if stable_down {
            let since = self
                .status
                .stable_unavailable_since
                .get_or_insert(Time(self.now))
                .0;
            report = self.stable_deadline(since, "", report);
        } else {
            self.status.stable_unavailable_since = None;
        }
        report
    }

    /// `report`, or Degraded with the route's words when the HTTPRoute cannot be used (and
    /// then no weight is written); the second value is the route's problem, if any.
    fn route_report(&mut self, mut report: Report) -> (Report, Option<String>) {
        // An unusable route: no traffic actions, since nobody knows where they would land.
        let unusable = match (&self.mode, &self.observed.route) {
            (Mode::Gateway, Some(RouteState::Unusable { message })) => Some(message.clone()),
            _ => None,
        };
        if let Some(route_message) = &unusable {
            // The route is watched: a fixed route brings the next reconcile.
            self.actions.retain(|a| {
                !matches!(
                    a,
                    Action::SetWeight { .. } | Action::SetRouteAdditions { .. }
                )
            });
            report = Report {
                phase: Phase::Degraded,
                reason: REASON_ROUTE_UNUSABLE.into(),
                message: holding(route_message, &report.message),
            };
        }
        (report, unusable)
    }

    /// `report`, or Degraded with the API server's words while one of the controller's writes
    /// stands refused (the refusal has its own event); the Event on entering a hold otherwise.
    fn applied_report(&mut self, report: Report) -> Report {
        match self.applied() {
            Some((reason, refusal)) => Report {
                phase: Phase::Degraded,
                reason,
                message: holding(&refusal, &report.message),
            },
            None => {
                self.announce(&report);
                report
            }
        }
    }

    /// When to look again: the next analysis, a deadline, or soon while acting or polling.
    fn requeue_after(&mut self) -> Option<StdDuration> {
        if let Some(next) = next_analysis_at(
            self.spec,
            &self.spec_revision,
            &self.status,
            self.analysis_offset,
        ) {
            self.due_at(next);
        }
        let mut requeue = self.due.map(|due| {
            StdDuration::try_from(due.duration_since(self.now))
                .unwrap_or_default()
                .max(StdDuration::from_secs(1))
        });
        let acting = self.actions.iter().any(|a| !matches!(a, Action::Event(_)));
        if acting || self.poll {
            requeue = Some(requeue.map_or(CONVERGE_POLL, |r| r.min(CONVERGE_POLL)));
        }
        requeue
    }

    /// `report`, or Degraded with `ProgressDeadlineExceeded` once the stable has not been
    /// available for `progressDeadline` since `since` (`from` says since what); until then the
    /// deadline is when to look again.
    fn stable_deadline(&mut self, since: Timestamp, from: &str, report: Report) -> Report {
        let limit = plus(since, self.spec.progress_deadline);
        if self.now < limit {
            self.due_at(limit);
            return report;
        }
        let (ready, wanted) = self
            .observed
            .stable
            .as_ref()
            .map_or((0, 0), |s| (s.available_replicas, s.replicas));
        Report {
            phase: Phase::Degraded,
            reason: REASON_PROGRESS_DEADLINE.into(),
            message: format!(
                "stable {} not available within progressDeadline {}{from} ({ready}/{wanted} pods available); {}",
                self.status.stable_revision.as_deref().unwrap_or("none"),
                self.spec.progress_deadline,
                report.message
            ),
        }
    }

    /// The `Applied` condition from what the controller's last apply met
    /// ([`Observed::last_apply`](crate::rollout::Observed::last_apply)), and the refusal that
    /// stands, as `(reason, "<object>: <message>")`, if one does. Unknown (a restarted
    /// controller) keeps what the condition said; Accepted turns a False condition True and
    /// adds none where there was none.
    ///
    /// A refusal the condition did not say yet gets a Warning event naming the object and
    /// quoting the API server, first among the actions: the refused write is among them again,
    /// and the controller stops at the first write refused.
    fn applied(&mut self) -> Option<(String, String)> {
        let said = self
            .old
            .conditions
            .iter()
            .find(|c| c.type_ == conditions::APPLIED && c.status == "False")
            .map(|c| (c.reason.clone(), c.message.clone()));
        let refused = match &self.observed.last_apply {
            LastApply::Refused(refusal) => Some((
                refusal.reason.clone(),
                format!("{}: {}", refusal.object, refusal.message),
            )),
            LastApply::Unknown => said.clone(),
            LastApply::Accepted => None,
        };
        let (now, generation) = (self.now, self.generation);
        match &refused {
            Some((reason, text)) => {
                if said.as_ref() != Some(&(reason.clone(), text.clone())) {
                    let note = EventNote {
                        severity: Severity::Warning,
                        reason: reason.clone(),
                        note: format!("{}: {text}", self.spec.roadmap.tagged()),
                        audience: Audience::EventAndLog,
                        kind: NoteKind::RefusedWrite,
                    };
                    self.actions.insert(0, Action::Event(note));
                }
                conditions::set_condition(
                    &mut self.status.conditions,
                    conditions::APPLIED,
                    Truth::False,
                    reason,
                    text.clone(),
                    generation,
                    now,
                );
                // The next apply tells whether the refusal still stands: look again soon.
                self.poll = true;
            }
            None if said.is_some() => conditions::set_condition(
                &mut self.status.conditions,
                conditions::APPLIED,
                Truth::True,
                "Applied",
                "the API server accepts Waymark's writes again".into(),
                generation,
                now,
            ),
            None => {}
        }
        refused
    }

    /// An Event on entering a hold or a degraded state, once.
    fn announce(&mut self, report: &Report) {
        let entered = self.old.phase != Some(report.phase)
            || self.old.reason.as_deref() != Some(report.reason.as_str());
        if !entered || !matches!(report.phase, Phase::Paused | Phase::Degraded) {
            return;
        }
        let severity = if report.phase == Phase::Degraded
            || report.reason == "ErrorBudgetExhausted"
            || report.reason == "AnalysisInconclusive"
        {
            Severity::Warning
        } else {
            Severity::Normal
        };
        self.event(severity, &report.reason, report.message.clone());
    }

    /// The standard conditions: SpecValid, Available, Progressing, AnalysisHealthy and
    /// TrafficRouted.
    fn set_conditions(&mut self, report: &Report, unusable: Option<&str>, promoting: bool) {
        let (now, generation) = (self.now, self.generation);
        let conditions = &mut self.status.conditions;
        conditions::set_condition(
            conditions,
            conditions::SPEC_VALID,
            Truth::True,
            "SpecValid",
            String::new(),
            generation,
            now,
        );
        self.set_available_condition(promoting);
        let conditions = &mut self.status.conditions;
        conditions::set_condition(
            conditions,
            conditions::PROGRESSING,
            if report.phase == Phase::Progressing {
                Truth::True
            } else {
                Truth::False
            },
            &report.reason,
            report.message.clone(),
            generation,
            now,
        );
        self.set_analysis_condition();
        self.set_traffic_condition(unusable);
    }

    /// Available: every pod of the stable available, kept as it was while the stable settles.
    fn set_available_condition(&mut self, promoting: bool) {
        let (now, generation) = (self.now, self.generation);
        let stable = self.observed.stable.as_ref();
        let available = stable.is_some_and(|s| s.available);
        let unsettled = stable.is_some_and(|s| !s.settled) || (promoting && !available);
        let conditions = &mut self.status.conditions;
        let known = conditions.iter().any(|c| c.type_ == conditions::AVAILABLE);
        // No pod counts here: they move on their own while pods start (`waymark status`
        // shows them live from the Deployments). No revision either: `stableRevision` has it,
        // and a promotion that began before the stable was seen settled would write the
        // condition again only to rename it.
        if !(unsettled && known) {
            let (truth, reason, message) = if available {
                (
                    Truth::True,
                    "StableAvailable",
                    "every pod of the stable available".to_string(),
                )
            } else {
                (
                    Truth::False,
                    "StableUnavailable",
                    "not every pod of the stable available".to_string(),
                )
            };
            conditions::set_condition(
                conditions,
                conditions::AVAILABLE,
                truth,
                reason,
                message,
                generation,
                now,
            );
        }
    }

    /// AnalysisHealthy: the verdict of the last analysis, absent without an analysis.
    fn set_analysis_condition(&mut self) {
        let (now, generation) = (self.now, self.generation);
        let conditions = &mut self.status.conditions;
        if self.spec.analysis.is_some() {
            let (truth, reason, message) = match self.status.analysis.as_ref() {
                Some(a) => (
                    match a.verdict {
                        Verdict::Passing => Truth::True,
                        Verdict::Failing | Verdict::Error => Truth::False,
                        Verdict::Inconclusive => Truth::Unknown,
                    },
                    format!("Analysis{}", a.verdict),
                    format!(
                        "revision {}: {}",
                        a.revision.as_deref().unwrap_or("none"),
                        a.summary.as_deref().unwrap_or("")
                    ),
                ),
                None => (
                    Truth::Unknown,
                    "AnalysisNotRun".to_string(),
                    "no analysis has run yet".to_string(),
                ),
            };
            conditions::set_condition(
                conditions,
                conditions::ANALYSIS_HEALTHY,
                truth,
                &reason,
                message,
                generation,
                now,
            );
        } else {
            conditions::remove_condition(conditions, conditions::ANALYSIS_HEALTHY);
        }
    }

    /// TrafficRouted: the route's weights, or why it cannot be used; absent in replica split.
    fn set_traffic_condition(&mut self, unusable: Option<&str>) {
        let (now, generation) = (self.now, self.generation);
        let conditions = &mut self.status.conditions;
        match (self.mode, unusable, &self.observed.route) {
            (Mode::Replicas, _, _) => {
                conditions::remove_condition(conditions, conditions::TRAFFIC_ROUTED)
            }
            (Mode::Gateway, Some(message), _) => conditions::set_condition(
                conditions,
                conditions::TRAFFIC_ROUTED,
                Truth::False,
                REASON_ROUTE_UNUSABLE,
                message.to_string(),
                generation,
                now,
            ),
            (Mode::Gateway, None, Some(RouteState::Ready { canary_weight })) => {
                conditions::set_condition(
                    conditions,
                    conditions::TRAFFIC_ROUTED,
                    Truth::True,
                    "RouteReady",
                    format!(
                        "{canary_weight}% to {} and the rest to {}{}",
                        Role::Canary.child_name(self.name),
                        Role::Stable.child_name(self.name),
                        if self.status.traffic.is_empty() {
                            String::new()
                        } else {
                            format!("; to the canary also: {}", self.status.traffic.describe())
                        }
                    ),
                    generation,
                    now,
                )
            }
            (Mode::Gateway, None, _) => conditions::set_condition(
                conditions,
                conditions::TRAFFIC_ROUTED,
                Truth::Unknown,
                "RouteNotObserved",
                "the HTTPRoute has not been read yet".into(),
                generation,
                now,
            ),
        }
    }
}
