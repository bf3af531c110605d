//! The canary state machine behind [`super::decide`], one file per stage of a release:
//!
//! - [`start`]: the first release, the steady state, a new revision waiting to start;
//! - [`steps`]: the canary moving through its steps;
//! - [`gate`]: analysis runs folded into the status, and the limits that stop a canary;
//! - [`promotion`]: the stable taking the canary's template;
//! - [`rollback`]: traffic off the canary, a rolled-back revision, a superseded canary;
//! - [`requests`]: `waymark promote|abort|retry`;
//! - [`report`]: phase, reason, message, conditions and the requeue time;
//! - [`credentials`]: the Prometheus Secrets, checked before a canary starts;
//! - [`session`]: session persistence, written only where the GatewayClass supports it.
//!
//! Where a release stands (its [`Stage`]) is derived from revisions in the status, never from
//! the phase: the phase is a report and may be overridden (Degraded) without losing the place.
//!
//! **Restart safety.** The controller writes [`Decision::status`] *before* it applies
//! [`Decision::actions`], so the status always records the intent of a transition (the step
//! being moved to, a rollback, a promotion) before its first action. Every stage derives its
//! actions from that status and the observed children, so deciding again after any prefix of
//! the actions finishes the transition the same way, and traffic never goes backwards.

pub(super) mod credentials;
mod gate;
mod promotion;
pub(super) mod report;
mod requests;
mod rollback;
pub(super) mod session;
mod start;
mod steps;

use std::time::Duration as StdDuration;

use k8s_openapi::jiff::Timestamp;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{
    Action, Audience, Decision, EventNote, NoteKind, Observed, RouteState, Severity, WorkloadState,
};
use super::{history, outcome, timeline};
use crate::api::{
    AnalysisStatus, Duration, HistoryEntry, Outcome, Phase, Release, ReleaseSpec, ReleaseStatus,
    RouteAdditions, TimelineEntry, TimelineKind, template_revision,
};

/// How soon to look again while waiting for the world to catch up with actions just taken, in
/// case a watch event is missed.
pub const CONVERGE_POLL: StdDuration = StdDuration::from_secs(5);

/// Stage transitions one decision may chain (first release then steady; canary started then
/// its first step; promotion finished then the old canary's removal timer).
const MAX_PASSES: usize = 6;

pub(super) use super::stage::{Stage, stage};

/// `at + duration`, saturating at the end of time.
pub(super) fn plus(at: Timestamp, duration: Duration) -> Timestamp {
    whole_second(
        at.checked_add(duration.as_signed())
            .unwrap_or(Timestamp::MAX),
    )
}

/// `at` cut to the whole second. The API server keeps status times to the second: an instant
/// with a fraction would read back different from what was written, and a message built from
/// it would change on the next reconcile with nothing else changed.
pub(super) fn whole_second(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

pub(super) use gate::{analysis_offset, next_analysis_at};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Gateway,
    Replicas,
}

/// What the status will say: phase, reason and message.
struct Report {
    phase: Phase,
    reason: String,
    message: String,
}

/// One decision in the making.
pub(super) struct Decider<'a> {
    spec: &'a ReleaseSpec,
    observed: &'a Observed,
    now: Timestamp,
    name: &'a str,
    item: &'a str,
    generation: Option<i64>,
    spec_revision: String,
    mode: Mode,
    old: ReleaseStatus,
    status: ReleaseStatus,
    actions: Vec<Action>,
    due: Option<Timestamp>,
    poll: bool,
    report: Option<Report>,
    /// A promote request lets a revision start despite an exhausted error budget.
    budget_override: bool,
    /// This Release's share of the analysis interval (see [`analysis_offset`]).
    analysis_offset: std::time::Duration,
}

impl<'a> Decider<'a> {
    pub(super) fn new(release: &'a Release, observed: &'a Observed, now: Timestamp) -> Self {
        let spec = &release.spec;
        let old = release.status.clone().unwrap_or_default();
        Self {
            spec,
            observed,
            now: whole_second(now),
            name: release.metadata.name.as_deref().unwrap_or("release"),
            item: &spec.roadmap.item,
            generation: release.metadata.generation,
            spec_revision: template_revision(&spec.template),
            mode: if spec.traffic.gateway_api.is_some() {
                Mode::Gateway
            } else {
                Mode::Replicas
            },
            status: old.clone(),
            old,
            actions: Vec::new(),
            due: None,
            poll: false,
            report: None,
            budget_override: false,
            analysis_offset: analysis_offset(release),
        }
    }

    pub(super) fn decide(mut self) -> Decision {
        self.status.observed_generation = self.generation;
        if !self.observed.services_ready {
            self.push(Action::ApplyServices);
        }
        if self.status.stable_revision.is_none() {
            // A status lost to a restore: the running stable's revision label tells where we are.
            self.status.stable_revision = self
                .observed
                .stable
                .as_ref()
                .and_then(|s| s.revision.clone());
        }
        self.supersede();
        self.fold_analysis();
        self.handle_request();
        for _ in 0..MAX_PASSES {
            let moved_on = match stage(&self.spec_revision, &self.status) {
                Stage::FirstRelease => self.first_release(),
                Stage::Steady => self.steady(),
                Stage::Pending => self.pending(),
                Stage::RolledBack => self.rolled_back(),
                Stage::Canary => self.canary(),
                Stage::Promoting => self.promoting(),
            };
            if !moved_on {
                break;
            }
        }
        self.finish()
    }

    // ----- helpers shared by the stages -----

    fn push(&mut self, action: Action) {
        // A Deployment created or re-templated in this same decision is created at the size
        // decided after it: one write instead of two.
        if let Action::ScaleStable { replicas } | Action::ScaleCanary { replicas } = action {
            let stable = matches!(action, Action::ScaleStable { .. });
            let applied = self
                .actions
                .iter_mut()
                .rev()
                .take_while(|a| !matches!(a, Action::DeleteCanary))
                .find_map(|a| match a {
                    Action::ApplyStable { replicas, .. } if stable => Some(replicas),
                    Action::ApplyCanary { replicas, .. } if !stable => Some(replicas),
                    _ => None,
                });
            if let Some(applied) = applied {
                *applied = replicas;
                return;
            }
            // Pods for a canary whose Deployment does not run it yet (missing, or an older
            // canary's): the Deployment is applied with its template at that size.
            if !stable
                && replicas > 0
                && let Some(revision) = self.status.canary_revision.clone()
                && self.canary_of(&revision).is_none()
            {
                self.actions
                    .push(Action::ApplyCanary { revision, replicas });
                return;
            }
        }
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    /// An Event (and the log line telling the same) whose note starts with the roadmap item
    /// (and its horizon and kind).
    fn event(&mut self, severity: Severity, reason: &str, note: String) {
        self.tell(Audience::EventAndLog, severity, reason, note);
    }

    /// A state change told in the controller's log only, worded like an Event: one no Event
    /// told before (a pause begun, a verdict changed, a hold), which must not cost another API
    /// write per canary.
    fn narrate(&mut self, severity: Severity, reason: &str, note: String) {
        self.tell(Audience::LogOnly, severity, reason, note);
    }

    fn tell(&mut self, audience: Audience, severity: Severity, reason: &str, note: String) {
        self.push(Action::Event(EventNote {
            severity,
            reason: reason.to_string(),
            note: format!("{}: {note}", self.spec.roadmap.tagged()),
            audience,
            kind: NoteKind::StateChange,
        }));
    }

    /// Record how the canary of `revision` ended: a history entry (with the spec's horizon and
    /// kind when it delivered the spec's item) that takes the canary's timeline with it.
    fn finish_revision(
        &mut self,
        revision: &str,
        roadmap_item: &str,
        outcome: Outcome,
        reason: &str,
        message: String,
    ) -> &mut HistoryEntry {
        let mut entry = history::entry(
            revision,
            roadmap_item,
            outcome,
            self.status.canary_started_at.clone(),
            Time(self.now),
            reason,
            Some(message),
        );
        if roadmap_item == self.item {
            entry.horizon = self.spec.roadmap.horizon;
            entry.kind = self.spec.roadmap.kind;
        } else {
            entry.horizon = self.old.roadmap_horizon;
            entry.kind = self.old.roadmap_kind;
        }
        entry.timeline = std::mem::take(&mut self.status.timeline);
        if outcome == Outcome::Promoted && roadmap_item == self.item {
            let roadmap = &self.spec.roadmap;
            entry.rework = crate::analysis::roadmap_outcome::is_rework(
                &self.status.history,
                roadmap_item,
                self.now,
                roadmap.rework_window,
            );
            // Only a canary has a moment before it to compare with: the first release, made
            // the stable directly, is not measured.
            if entry.started_at.is_some() {
                entry.roadmap_outcome = roadmap.outcome.as_ref().map(outcome::record_for);
            }
        }
        history::record(&mut self.status.history, entry);
        &mut self.status.history[0]
    }

    /// Add `entry` to the running canary's timeline.
    fn note(&mut self, entry: TimelineEntry) {
        timeline::push(&mut self.status.timeline, entry);
    }

    /// Add an entry of `kind` to the newest finished revision's timeline, once: what happens
    /// after a canary ended (traffic back on the stable, its pods gone) as it is observed.
    fn note_after(&mut self, kind: TimelineKind, make: fn(Time) -> TimelineEntry) {
        let now = self.now;
        if let Some(newest) = self.status.history.first_mut()
            && !newest.timeline.iter().any(|entry| entry.kind == kind)
        {
            timeline::push(&mut newest.timeline, make(Time(now)));
        }
    }

    fn due_at(&mut self, at: Timestamp) {
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    fn set_report(&mut self, phase: Phase, reason: &str, message: String) {
        self.report = Some(Report {
            phase,
            reason: reason.to_string(),
            message,
        });
    }

    fn total(&self) -> i32 {
        self.spec.replicas.max(1)
    }

    /// The route's canary weight, when the route is readable (Gateway API mode).
    fn route_weight(&self) -> Option<i32> {
        match &self.observed.route {
            Some(RouteState::Ready { canary_weight }) => Some(*canary_weight),
            _ => None,
        }
    }

    /// The canary Deployment, if it runs `revision`.
    fn canary_of(&self, revision: &str) -> Option<&'a WorkloadState> {
        self.observed
            .canary
            .as_ref()
            .filter(|c| c.revision.as_deref() == Some(revision))
    }

    /// The analysis status, if it judged `revision`.
    fn analysis_of(&self, revision: &str) -> Option<&AnalysisStatus> {
        self.status
            .analysis
            .as_ref()
            .filter(|a| a.revision.as_deref() == Some(revision))
    }

    /// Give the stable all `spec.replicas` pods again (after a rollback or during a hold).
    fn restore_stable_size(&mut self) {
        let total = self.total();
        if self
            .observed
            .stable
            .as_ref()
            .is_some_and(|stable| stable.replicas != total)
        {
            self.push(Action::ScaleStable { replicas: total });
        }
    }

    /// Make the route carry exactly `wanted` of this Release's cohorts and mirrors, recording
    /// them in `status.traffic` first (the intent); true once the route does. Replica split
    /// has no route: nothing to do.
    fn ensure_additions(&mut self, wanted: RouteAdditions) -> bool {
        if self.mode != Mode::Gateway {
            return true;
        }
        let in_place = self.observed.route_additions_in_place(self.name, &wanted);
        self.status.traffic = wanted.clone();
        if !in_place {
            self.push(Action::SetRouteAdditions { additions: wanted });
        }
        in_place
    }

    /// Send the canary no traffic: the route's canary weight to 0 and its cohorts and mirrors
    /// away (Gateway API), or the canary's pods out of the shared Service (replica split). The
    /// one place this rule is written.
    fn canary_traffic_off(&mut self) {
        match self.mode {
            Mode::Gateway => {
                if self.route_weight().is_some_and(|weight| weight != 0) {
                    self.push(Action::SetWeight { canary_weight: 0 });
                }
                self.ensure_additions(RouteAdditions::default());
            }
            Mode::Replicas => {
                if self
                    .observed
                    .canary
                    .as_ref()
                    .is_some_and(|c| c.replicas > 0)
                {
                    self.push(Action::ScaleCanary { replicas: 0 });
                }
            }
        }
    }

    /// Retire the canary: traffic off it first, then its pods, then the stable back to full
    /// size. Called before any other traffic or scale action of the decision, so the order of
    /// the actions is the order of this function.
    fn retire_canary(&mut self) {
        debug_assert!(
            !self.actions.iter().any(|a| matches!(
                a,
                Action::SetWeight { canary_weight: 1.. }
                    | Action::ScaleCanary { replicas: 1.. }
                    | Action::ApplyCanary { .. }
            )),
            "retire_canary after an action giving the canary traffic or pods: {:?}",
            self.actions
        );
        self.canary_traffic_off();
        if self
            .observed
            .canary
            .as_ref()
            .is_some_and(|c| c.replicas > 0)
        {
            self.push(Action::ScaleCanary { replicas: 0 });
        }
        self.restore_stable_size();
    }

    fn clear_canary(&mut self) {
        self.status.timeline.clear();
        self.status.canary_revision = None;
        self.status.current_step = None;
        self.status.step_progress = None;
        self.status.step_started_at = None;
        self.status.steps_started_at = None;
        self.status.pause_until = None;
        self.status.canary_waiting_since = None;
        self.status.canary_started_at = None;
    }
}
