//! The canary state machine behind [`super::decide`].
//!
//! Where a release stands (its [`Stage`]) is derived from revisions in the status, never from
//! the phase: the phase is a report and may be overridden (Degraded) without losing the place.

use std::time::Duration as StdDuration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;

use super::conditions::{self, Truth};
use super::split::{canary_size, effective_weight, replica_split};
use super::{Action, Decision, EventNote, Observed, RouteState, Severity, WorkloadState};
use super::{fold, history};
use crate::api::{
    AnalysisStatus, Duration, ManualAction, ManualRequest, Outcome, Phase, Release, ReleaseSpec,
    ReleaseStatus, Role, Verdict, template_revision,
};

/// How soon to look again while waiting for the world to catch up with actions just taken
/// (HTTPRoute weights are not watched, so a poll is the only way to see them land).
pub const CONVERGE_POLL: StdDuration = StdDuration::from_secs(5);

/// Stage transitions one decision may chain (first release then steady; canary started then
/// its first step; promotion finished then the old canary's removal timer).
const MAX_PASSES: usize = 6;

/// Where a release stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Stage {
    /// No stable revision yet.
    FirstRelease,
    /// The stable runs the spec's template; no canary.
    Steady,
    /// The spec has a new revision and no canary runs it yet (maybe held by the error budget).
    Pending,
    /// The spec's revision was rolled back and waits for a new template or a retry.
    RolledBack,
    /// A canary of the spec's revision moves through its steps.
    Canary,
    /// The stable is taking the canary's template.
    Promoting,
}

/// The stage of a status whose spec template has revision `spec_revision`.
pub(super) fn stage(spec_revision: &str, status: &ReleaseStatus) -> Stage {
    let Some(stable) = status.stable_revision.as_deref() else {
        return Stage::FirstRelease;
    };
    if let Some(canary) = status.canary_revision.as_deref() {
        return if canary == stable {
            Stage::Promoting
        } else {
            Stage::Canary
        };
    }
    if stable == spec_revision {
        Stage::Steady
    } else if status.rolled_back_revision.as_deref() == Some(spec_revision) {
        Stage::RolledBack
    } else {
        Stage::Pending
    }
}

/// When the next analysis run is due, if one is wanted at all: every `interval` from the
/// canary's first step until promotion, and for a pending revision under a budget policy
/// whenever the budget figure is older than one interval.
pub(super) fn next_analysis_at(
    spec: &ReleaseSpec,
    spec_revision: &str,
    status: &ReleaseStatus,
) -> Option<Timestamp> {
    let analysis = spec.analysis.as_ref()?;
    match stage(spec_revision, status) {
        Stage::Canary => {
            let canary = status.canary_revision.as_deref()?;
            if canary != spec_revision {
                return None;
            }
            let started = status.steps_started_at.as_ref()?.0;
            let last = status
                .analysis
                .as_ref()
                .filter(|a| a.revision.as_deref() == Some(canary))
                .and_then(|a| a.last_run_at.as_ref())
                .map(|t| t.0)
                .filter(|last| *last >= started);
            Some(plus(last.unwrap_or(started), analysis.interval))
        }
        Stage::Pending if analysis.slo.budget.is_some() => {
            match status
                .analysis
                .as_ref()
                .and_then(|a| a.last_run_at.as_ref())
            {
                Some(last) => Some(plus(last.0, analysis.interval)),
                None => Some(Timestamp::MIN),
            }
        }
        _ => None,
    }
}

/// `at + duration`, saturating at the end of time.
pub(super) fn plus(at: Timestamp, duration: Duration) -> Timestamp {
    at.checked_add(duration.as_signed())
        .unwrap_or(Timestamp::MAX)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Gateway,
    Replicas,
}

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
}

impl<'a> Decider<'a> {
    pub(super) fn new(release: &'a Release, observed: &'a Observed, now: Timestamp) -> Self {
        let spec = &release.spec;
        let old = release.status.clone().unwrap_or_default();
        Self {
            spec,
            observed,
            now,
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

    // ----- helpers -----

    fn push(&mut self, action: Action) {
        if !self.actions.contains(&action) {
            self.actions.push(action);
        }
    }

    fn event(&mut self, severity: Severity, reason: &str, note: String) {
        self.push(Action::Event(EventNote {
            severity,
            reason: reason.to_string(),
            note: format!("{}: {note}", self.item),
        }));
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

    fn steps_len(&self) -> usize {
        self.spec.steps.len()
    }

    fn current_step(&self) -> usize {
        usize::try_from(self.status.current_step.unwrap_or(0).max(0))
            .unwrap_or(0)
            .min(self.steps_len())
    }

    fn set_current_step(&mut self, index: usize) {
        self.status.current_step = Some(i32::try_from(index).unwrap_or(i32::MAX));
    }

    /// `n/total`, 1-based, as the Step column shows it.
    fn step_label(&self) -> String {
        let total = self.steps_len();
        format!("{}/{total}", (self.current_step() + 1).min(total))
    }

    /// Weight of the last `setWeight` step before `index` (what traffic holds at while step
    /// `index` runs), 0 when none.
    fn weight_before(&self, index: usize) -> i32 {
        self.spec.steps[..index.min(self.steps_len())]
            .iter()
            .rev()
            .find_map(|step| step.set_weight)
            .unwrap_or(0)
            .clamp(0, 100)
    }

    /// Weight step `index` aims at: its own `setWeight` or the one before it.
    fn weight_target(&self, index: usize) -> i32 {
        self.spec
            .steps
            .get(index)
            .and_then(|step| step.set_weight)
            .map_or_else(|| self.weight_before(index), |w| w.clamp(0, 100))
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

    /// The latest verdict on `revision` when it forbids raising the canary's traffic.
    fn blocking_verdict(&self, revision: &str) -> Option<Verdict> {
        self.analysis_of(revision)
            .map(|analysis| analysis.verdict)
            .filter(|verdict| matches!(verdict, Verdict::Failing | Verdict::Error))
    }

    fn analysis_summary(&self, revision: &str) -> String {
        self.analysis_of(revision)
            .and_then(|a| a.summary.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| format!("; {s}"))
            .unwrap_or_default()
    }

    /// The canary's share of traffic as it is: the route's weight, or in replica mode the
    /// canary's share of ready pods.
    fn shown_weight(&self) -> i32 {
        match self.mode {
            Mode::Gateway => self
                .route_weight()
                .or(self.status.canary_weight)
                .unwrap_or(0)
                .clamp(0, 100),
            Mode::Replicas => self
                .status
                .canary_revision
                .as_deref()
                .and_then(|r| self.canary_of(r))
                .map_or(0, |c| {
                    effective_weight(self.total(), c.available_replicas.min(c.replicas))
                }),
        }
    }

    fn clear_canary(&mut self) {
        self.status.canary_revision = None;
        self.status.current_step = None;
        self.status.step_progress = None;
        self.status.step_started_at = None;
        self.status.steps_started_at = None;
        self.status.canary_waiting_since = None;
        self.status.canary_started_at = None;
    }

    /// Take every request off the canary: weight 0 first (Gateway API) or canary pods out of
    /// the shared Service first (replica mode), then the stable back to full size.
    fn retire_canary_traffic(&mut self) {
        let total = self.total();
        self.actions.retain(|a| {
            !matches!(
                a,
                Action::SetWeight { .. }
                    | Action::ScaleCanary { .. }
                    | Action::ScaleStable { .. }
                    | Action::ApplyCanary { .. }
            )
        });
        match self.mode {
            Mode::Gateway => {
                self.actions
                    .insert(0, Action::SetWeight { canary_weight: 0 });
                self.push(Action::ScaleCanary { replicas: 0 });
                self.restore_stable_size();
            }
            Mode::Replicas => {
                self.actions.insert(0, Action::ScaleCanary { replicas: 0 });
                self.push(Action::ScaleStable { replicas: total });
            }
        }
    }

    // ----- before the stage machine -----

    /// A new template while a canary runs: the old canary's release ends as Superseded and the
    /// new revision starts from the first step.
    fn supersede(&mut self) {
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
        history::record(
            &mut self.status.history,
            history::entry(
                &canary,
                &old_item,
                Outcome::Superseded,
                self.status.canary_started_at.clone(),
                Time(self.now),
                "Superseded",
                Some(message.clone()),
            ),
        );
        self.event(
            Severity::Normal,
            "CanarySuperseded",
            format!("{message} (canary was {old_item})"),
        );
        self.retire_canary_traffic();
        self.clear_canary();
    }

    /// Fold this reconcile's analysis run into the status. A run of another revision than the
    /// one under judgement, an old run, and runs after promotion began are ignored.
    fn fold_analysis(&mut self) {
        let Some(run) = self.observed.analysis.as_ref() else {
            return;
        };
        if self.spec.analysis.is_none() {
            return;
        }
        let stage = stage(&self.spec_revision, &self.status);
        // Runs judge a canary in its steps or a pending revision's budget; once promotion has
        // begun, or with nothing to judge, a late run changes nothing.
        if !matches!(stage, Stage::Canary | Stage::Pending) {
            return;
        }
        let current = self
            .status
            .canary_revision
            .clone()
            .unwrap_or_else(|| self.spec_revision.clone());
        if run.revision.as_deref().is_some_and(|r| r != current) {
            return;
        }
        let already_folded = self.status.analysis.as_ref().is_some_and(|p| {
            p.revision == run.revision && p.last_run_at.as_ref().is_some_and(|t| t.0 >= run.ran_at)
        });
        if already_folded {
            return;
        }
        let judging_canary = stage == Stage::Canary && self.status.steps_started_at.is_some();
        if run.revision.is_none() {
            // A budget-only run: while a canary is judged it must not reset its counters.
            if let Some(existing) = self.status.analysis.as_mut().filter(|_| judging_canary) {
                if run.error_budget_remaining.is_some() {
                    existing.error_budget_remaining = run.error_budget_remaining;
                }
                return;
            }
        }
        let counting = judging_canary && run.revision.as_deref() == Some(current.as_str());
        self.status.analysis = Some(fold::fold(self.status.analysis.as_ref(), run, counting));
    }

    /// Act on a new manual request, or ignore it with an Event saying why. Either way its id is
    /// recorded so it is handled once.
    fn handle_request(&mut self) {
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
        if let Some(asked) = request.revision.as_deref() {
            if target.as_deref() != Some(asked) {
                let actual = target.map_or_else(
                    || "no canary is in progress".to_string(),
                    |t| format!("the canary is {t}"),
                );
                self.ignore(&request, format!("it names revision {asked} but {actual}"));
                return;
            }
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
        let action = action_name(request.action);
        self.event(
            Severity::Warning,
            "RequestIgnored",
            format!("{action} request {} ignored: {why}", request.id),
        );
    }

    fn promote(&mut self, request: &ManualRequest, stage: Stage) {
        let action = action_name(request.action);
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
                    if self.status.steps_started_at.is_some() {
                        self.status.step_started_at = Some(Time(self.now));
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

    fn inconclusive_hold(&self, canary: &str) -> bool {
        let Some(limit) = self.spec.analysis.as_ref().map(|a| a.inconclusive_limit) else {
            return false;
        };
        self.analysis_of(canary)
            .is_some_and(|a| a.consecutive_inconclusive >= limit.max(1))
    }

    // ----- stages; each returns true when it moved to another stage -----

    fn first_release(&mut self) -> bool {
        let revision = self.spec_revision.clone();
        let total = self.total();
        self.push(Action::ApplyStable {
            revision: revision.clone(),
            replicas: total,
        });
        self.status.stable_revision = Some(revision.clone());
        self.status.stable_roadmap_item = Some(self.item.to_string());
        history::record(
            &mut self.status.history,
            history::entry(
                &revision,
                self.item,
                Outcome::Promoted,
                None,
                Time(self.now),
                "FirstRelease",
                Some(format!("first release: stable {revision} created directly")),
            ),
        );
        self.event(
            Severity::Normal,
            "StableCreated",
            format!("first release: stable {revision} created with {total} replicas"),
        );
        true
    }

    fn steady(&mut self) -> bool {
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
        if self.mode == Mode::Gateway && self.route_weight().is_some_and(|w| w != 0) {
            self.push(Action::SetWeight { canary_weight: 0 });
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
        let (available, ready) = self
            .observed
            .stable
            .as_ref()
            .map_or((false, 0), |s| (s.available, s.available_replicas));
        if available {
            self.set_report(
                Phase::Healthy,
                "StableAvailable",
                format!("stable {revision} serves 100% ({ready}/{total} pods available)"),
            );
        } else {
            self.set_report(
                Phase::Healthy,
                "StableRollingOut",
                format!("stable {revision} rolling out ({ready}/{total} pods available)"),
            );
        }
        false
    }

    fn rolled_back(&mut self) -> bool {
        if self
            .observed
            .canary
            .as_ref()
            .is_some_and(|c| c.replicas > 0)
        {
            self.push(Action::ScaleCanary { replicas: 0 });
        }
        if self.mode == Mode::Gateway && self.route_weight().is_some_and(|w| w != 0) {
            self.push(Action::SetWeight { canary_weight: 0 });
        }
        self.restore_stable_size();
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

    fn pending(&mut self) -> bool {
        let revision = self.spec_revision.clone();
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
                    self.keep_stable_serving();
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
                    self.keep_stable_serving();
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

    fn keep_stable_serving(&mut self) {
        if self.mode == Mode::Gateway && self.route_weight().is_some_and(|w| w != 0) {
            self.push(Action::SetWeight { canary_weight: 0 });
        }
    }

    fn start_canary(&mut self) {
        let revision = self.spec_revision.clone();
        let replicas = match self.mode {
            Mode::Gateway => canary_size(self.total(), self.weight_target(0)),
            // In replica mode every ready canary pod takes traffic: none before the first step.
            Mode::Replicas => 0,
        };
        self.keep_stable_serving();
        self.push(Action::ApplyCanary {
            revision: revision.clone(),
            replicas,
        });
        self.status.canary_revision = Some(revision.clone());
        self.status.canary_started_at = Some(Time(self.now));
        self.status.canary_waiting_since = Some(Time(self.now));
        self.status.step_started_at = None;
        self.status.steps_started_at = None;
        self.status.promoted_at = None;
        self.set_current_step(0);
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

    fn canary(&mut self) -> bool {
        let revision = self.status.canary_revision.clone().unwrap_or_default();
        if let Some(limits) = self.spec.analysis.as_ref() {
            let (failure_limit, error_limit) =
                (limits.failure_limit.max(1), limits.error_limit.max(1));
            if let Some(analysis) = self.analysis_of(&revision) {
                if analysis.consecutive_failures >= failure_limit {
                    let message = format!(
                        "{} failing analyses in a row (failureLimit {failure_limit}): {}",
                        analysis.consecutive_failures,
                        fold::failure_detail(analysis)
                    );
                    self.rollback(Outcome::RolledBack, "AnalysisFailing", message);
                    return true;
                }
                if analysis.consecutive_errors >= error_limit {
                    let message = format!(
                        "{} analysis errors in a row (errorLimit {error_limit}): {}",
                        analysis.consecutive_errors,
                        fold::failure_detail(analysis)
                    );
                    self.rollback(Outcome::RolledBack, "AnalysisError", message);
                    return true;
                }
            }
        }

        let Some(canary) = self.canary_of(&revision) else {
            let replicas = self.canary_replicas_now();
            self.push(Action::ApplyCanary {
                revision: revision.clone(),
                replicas,
            });
            return self.wait_for_canary(&revision, None);
        };
        if self.mode == Mode::Gateway && canary.replicas < 1 {
            // Scaled to zero by an earlier rollback: "available" with no pods means nothing.
            let replicas = self.canary_replicas_now();
            self.push(Action::ScaleCanary { replicas });
            return self.wait_for_canary(&revision, Some(canary));
        }
        if !canary.available {
            return self.wait_for_canary(&revision, Some(canary));
        }
        self.status.canary_waiting_since = None;
        if self.status.steps_started_at.is_none() {
            self.status.steps_started_at = Some(Time(self.now));
            self.status.step_started_at = Some(Time(self.now));
        }

        if self.inconclusive_hold(&revision) {
            let (count, limit) = (
                self.analysis_of(&revision)
                    .map_or(0, |a| a.consecutive_inconclusive),
                self.spec
                    .analysis
                    .as_ref()
                    .map_or(0, |a| a.inconclusive_limit),
            );
            let message = format!(
                "step {}: held at {}% on canary {revision}: {count} inconclusive analyses in a row (inconclusiveLimit {limit}){}; `waymark promote {}` releases the hold",
                self.step_label(),
                self.shown_weight(),
                self.analysis_summary(&revision),
                self.name
            );
            self.set_report(Phase::Paused, "AnalysisInconclusive", message);
            return false;
        }

        while self.current_step() < self.steps_len() {
            let index = self.current_step();
            let step = self.spec.steps[index].clone();
            if let Some(weight) = step.set_weight {
                let weight = weight.clamp(0, 100);
                let held = self.weight_before(index);
                if weight > held
                    && let Some(verdict) = self.blocking_verdict(&revision)
                {
                    // More traffic on a canary whose latest analysis fails would widen the
                    // damage before `failureLimit` is reached; hold until it passes again.
                    self.ensure_traffic(canary, held);
                    let message = format!(
                        "step {}: held at {held}% on canary {revision}, not moving to {weight}% while the latest analysis is {verdict}{}",
                        self.step_label(),
                        self.analysis_summary(&revision)
                    );
                    self.set_report(Phase::Progressing, &format!("Analysis{verdict}"), message);
                    return false;
                }
                if !self.ensure_traffic(canary, weight) {
                    let message = format!(
                        "step {}: moving to {weight}% on canary {revision} (now {}%){}",
                        self.step_label(),
                        self.shown_weight(),
                        self.analysis_summary(&revision)
                    );
                    self.set_report(Phase::Progressing, "StepSetWeight", message);
                    return false;
                }
            } else if let Some(pause) = step.pause {
                let held = self.weight_before(index);
                self.ensure_traffic(canary, held);
                match pause.duration {
                    Some(duration) => {
                        let started = self
                            .status
                            .step_started_at
                            .as_ref()
                            .map_or(self.now, |t| t.0);
                        let end = plus(started, duration);
                        if self.now < end {
                            self.due_at(end);
                            let left = crate::api::Duration::from(
                                StdDuration::try_from(end.duration_since(self.now))
                                    .unwrap_or_default(),
                            );
                            let message = format!(
                                "step {}: {}% on canary {revision}, pause {duration} ({left} left){}",
                                self.step_label(),
                                self.shown_weight(),
                                self.analysis_summary(&revision)
                            );
                            // With analysis, the latest verdict is what an SRE wants to see.
                            let reason = self.analysis_of(&revision).map_or_else(
                                || "StepPause".to_string(),
                                |a| format!("Analysis{}", a.verdict),
                            );
                            self.set_report(Phase::Progressing, &reason, message);
                            return false;
                        }
                    }
                    None => {
                        let message = format!(
                            "step {}: {}% on canary {revision}, paused until `waymark promote {}`{}",
                            self.step_label(),
                            self.shown_weight(),
                            self.name,
                            self.analysis_summary(&revision)
                        );
                        self.set_report(Phase::Paused, "CanaryPauseStep", message);
                        return false;
                    }
                }
            }
            self.set_current_step(index + 1);
            self.status.step_started_at = Some(Time(self.now));
        }

        // Every step done: the analysis gate, then promotion.
        let held = self.weight_before(self.steps_len());
        self.ensure_traffic(canary, held);
        if self.spec.analysis.is_some() {
            let started = self.status.steps_started_at.as_ref().map(|t| t.0);
            let passing = self.analysis_of(&revision).is_some_and(|a| {
                a.verdict == Verdict::Passing && a.last_run_at.as_ref().map(|t| t.0) >= started
            });
            if !passing {
                let latest = self
                    .analysis_of(&revision)
                    .map_or_else(|| "none yet".to_string(), |a| a.verdict.to_string());
                let message = format!(
                    "step {}: {}% on canary {revision}; all steps done, waiting for a passing analysis (latest: {latest}){}",
                    self.step_label(),
                    self.shown_weight(),
                    self.analysis_summary(&revision)
                );
                self.set_report(Phase::Progressing, "WaitingForAnalysis", message);
                return false;
            }
        }
        self.begin_promotion();
        true
    }

    /// Canary pods for where the steps stand now (used when the Deployment must be applied).
    fn canary_replicas_now(&self) -> i32 {
        let index = self.current_step();
        match self.mode {
            Mode::Gateway => canary_size(self.total(), self.weight_target(index)),
            Mode::Replicas if self.status.steps_started_at.is_none() => 0,
            Mode::Replicas => replica_split(self.total(), self.weight_before(index)).1,
        }
    }

    /// The canary is missing or not available: wait, up to `progressDeadline`.
    fn wait_for_canary(&mut self, revision: &str, canary: Option<&WorkloadState>) -> bool {
        let since = self
            .status
            .canary_waiting_since
            .get_or_insert(Time(self.now))
            .0;
        let deadline = plus(since, self.spec.progress_deadline);
        let (ready, wanted) = canary.map_or((0, 0), |c| (c.available_replicas, c.replicas));
        if self.now >= deadline {
            let message = format!(
                "canary {revision} not available within progressDeadline {} ({ready}/{wanted} pods available)",
                self.spec.progress_deadline
            );
            self.rollback(Outcome::RolledBack, "ProgressDeadlineExceeded", message);
            return true;
        }
        self.due_at(deadline);
        let (reason, what) = if self.status.steps_started_at.is_none() {
            ("CanaryStarting", "starting")
        } else {
            ("WaitingForCanary", "not available")
        };
        let message = format!(
            "step {}: canary {revision} {what} ({ready}/{wanted} pods available); rolled back if not available by {deadline}",
            self.step_label()
        );
        self.set_report(Phase::Progressing, reason, message);
        false
    }

    /// Make traffic carry `weight` percent to the available canary; true once it does.
    fn ensure_traffic(&mut self, canary: &WorkloadState, weight: i32) -> bool {
        let total = self.total();
        match self.mode {
            Mode::Gateway => {
                self.restore_stable_size();
                let needed = canary_size(total, weight);
                if canary.replicas < needed {
                    // Capacity first: the canary must carry its share before it gets it.
                    self.push(Action::ScaleCanary { replicas: needed });
                    return false;
                }
                if self.route_weight() != Some(weight) {
                    self.push(Action::SetWeight {
                        canary_weight: weight,
                    });
                    return false;
                }
                if canary.replicas > needed {
                    self.push(Action::ScaleCanary { replicas: needed });
                }
                true
            }
            Mode::Replicas => {
                let (stable_replicas, canary_replicas) = replica_split(total, weight);
                let stable_now = self.observed.stable.as_ref().map(|s| s.replicas);
                if canary.replicas != canary_replicas || stable_now != Some(stable_replicas) {
                    self.push(Action::ScaleCanary {
                        replicas: canary_replicas,
                    });
                    self.push(Action::ScaleStable {
                        replicas: stable_replicas,
                    });
                    return false;
                }
                true
            }
        }
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

    /// The canary's replica count once the actions already decided in this call are applied.
    fn planned_canary_replicas(&self) -> i32 {
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

    fn begin_promotion(&mut self) {
        let revision = self.status.canary_revision.clone().unwrap_or_default();
        self.status.stable_revision = Some(revision.clone());
        let steps = self.steps_len();
        if self.status.current_step.is_some() {
            self.set_current_step(steps);
        }
        self.event(
            Severity::Normal,
            "PromotionStarted",
            format!("canary {revision} promoting: stable takes its template"),
        );
    }

    fn promoting(&mut self) -> bool {
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
            self.report_promoting(&revision, "stable taking the new template");
            return false;
        };
        if !stable.available {
            let what = format!(
                "stable rolling out the new template ({}/{} pods available)",
                stable.available_replicas, stable.replicas
            );
            self.report_promoting(&revision, &what);
            return false;
        }
        match self.mode {
            Mode::Gateway => {
                if stable.replicas != total {
                    self.push(Action::ScaleStable { replicas: total });
                }
                if self.route_weight() != Some(0) {
                    self.push(Action::SetWeight { canary_weight: 0 });
                    self.report_promoting(&revision, "moving all traffic to the stable");
                    return false;
                }
            }
            Mode::Replicas => {
                if canary_replicas > 0 {
                    // Hand pods over in quarters, each once the stable is available, so the
                    // total never exceeds spec.replicas and never drops by more than a quarter.
                    let batch = (total + 3) / 4;
                    let canary_after = (canary_replicas - batch.max(1)).max(0);
                    self.push(Action::ScaleCanary {
                        replicas: canary_after,
                    });
                    self.push(Action::ScaleStable {
                        replicas: total - canary_after,
                    });
                    self.report_promoting(&revision, "handing canary pods over to the stable");
                    return false;
                }
                if stable.replicas != total {
                    self.push(Action::ScaleStable { replicas: total });
                    self.report_promoting(&revision, "scaling the stable to full size");
                    return false;
                }
            }
        }
        self.complete_promotion(&revision);
        true
    }

    fn report_promoting(&mut self, revision: &str, what: &str) {
        let message = format!("promoting canary {revision}: {what}");
        self.set_report(Phase::Progressing, "Promoting", message);
    }

    fn complete_promotion(&mut self, revision: &str) {
        let message = format!("canary {revision} promoted; stable serves 100%");
        history::record(
            &mut self.status.history,
            history::entry(
                revision,
                self.item,
                Outcome::Promoted,
                self.status.canary_started_at.clone(),
                Time(self.now),
                "Promoted",
                Some(message),
            ),
        );
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

    /// Roll the canary back: traffic off it first, then its pods; the revision is remembered
    /// so it is not tried again until the template changes or a retry.
    fn rollback(&mut self, outcome: Outcome, reason: &str, message: String) {
        let revision = self.status.canary_revision.clone().unwrap_or_default();
        self.retire_canary_traffic();
        let mut entry = history::entry(
            &revision,
            self.item,
            outcome,
            self.status.canary_started_at.clone(),
            Time(self.now),
            reason,
            Some(message.clone()),
        );
        // The traffic leaves the canary in this decision's first action: time to restore ends now.
        entry.failure_detected_at = self
            .analysis_of(&revision)
            .and_then(|analysis| analysis.failing_since.clone());
        history::record(&mut self.status.history, entry);
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

    // ----- after the stage machine -----

    fn finish(mut self) -> Decision {
        let canary_revision = self.status.canary_revision.clone();

        // Weight as it is, not as wished.
        self.status.canary_weight = Some(self.shown_weight());
        self.status.step_progress = canary_revision
            .as_ref()
            .filter(|_| self.status.current_step.is_some())
            .map(|_| self.step_label());
        let in_progress =
            canary_revision.is_some() || stage(&self.spec_revision, &self.status) == Stage::Pending;
        self.status.roadmap_item = if in_progress {
            Some(self.item.to_string())
        } else {
            self.status
                .stable_roadmap_item
                .clone()
                .or_else(|| Some(self.item.to_string()))
        };

        let mut report = self.report.take().unwrap_or(Report {
            phase: Phase::Healthy,
            reason: "StableAvailable".into(),
            message: String::new(),
        });

        // The stable has been unavailable for longer than a canary may take: Degraded.
        let stable_available = self.observed.stable.as_ref().is_some_and(|s| s.available);
        if stable_available {
            self.status.stable_unavailable_since = None;
        } else {
            let since = self
                .status
                .stable_unavailable_since
                .get_or_insert(Time(self.now))
                .0;
            let limit = plus(since, self.spec.progress_deadline);
            if self.now >= limit {
                let (ready, wanted) = self
                    .observed
                    .stable
                    .as_ref()
                    .map_or((0, 0), |s| (s.available_replicas, s.replicas));
                report = Report {
                    phase: Phase::Degraded,
                    reason: "StableUnavailable".into(),
                    message: format!(
                        "stable {} not available for more than {} ({ready}/{wanted} pods available); {}",
                        self.status.stable_revision.as_deref().unwrap_or("none"),
                        self.spec.progress_deadline,
                        report.message
                    ),
                };
            } else {
                self.due_at(limit);
            }
        }

        // An unusable route: no traffic actions, since nobody knows where they would land.
        let unusable = match (&self.mode, &self.observed.route) {
            (Mode::Gateway, Some(RouteState::Unusable { message })) => Some(message.clone()),
            _ => None,
        };
        if let Some(route_message) = &unusable {
            self.actions
                .retain(|a| !matches!(a, Action::SetWeight { .. }));
            self.poll = true;
            report = Report {
                phase: Phase::Degraded,
                reason: "TrafficRouteUnusable".into(),
                message: format!("{route_message}; holding: {}", report.message),
            };
        }

        // Events on entering a hold or a degraded state, once.
        let entered = self.old.phase != Some(report.phase)
            || self.old.reason.as_deref() != Some(report.reason.as_str());
        if entered && matches!(report.phase, Phase::Paused | Phase::Degraded) {
            let severity = if report.phase == Phase::Degraded
                || report.reason == "ErrorBudgetExhausted"
                || report.reason == "AnalysisInconclusive"
            {
                Severity::Warning
            } else {
                Severity::Normal
            };
            let reason = report.reason.clone();
            let note = report.message.clone();
            self.event(severity, &reason, note);
        }

        self.set_conditions(&report, unusable.as_deref());
        self.status.phase = Some(report.phase);
        self.status.reason = Some(report.reason);
        self.status.message = Some(report.message);

        if let Some(next) = next_analysis_at(self.spec, &self.spec_revision, &self.status) {
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
        Decision {
            actions: self.actions,
            status: self.status,
            requeue_after: requeue,
        }
    }

    fn set_conditions(&mut self, report: &Report, unusable: Option<&str>) {
        let (now, generation) = (self.now, self.generation);
        let conditions = &mut self.status.conditions;
        let stable_revision = self.status.stable_revision.as_deref().unwrap_or("none");
        let (available, ready, wanted) = self.observed.stable.as_ref().map_or((false, 0, 0), |s| {
            (s.available, s.available_replicas, s.replicas)
        });
        conditions::set_condition(
            conditions,
            conditions::AVAILABLE,
            if available { Truth::True } else { Truth::False },
            if available {
                "StableAvailable"
            } else {
                "StableUnavailable"
            },
            format!("stable {stable_revision}: {ready}/{wanted} pods available"),
            generation,
            now,
        );
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
        match (self.mode, unusable, &self.observed.route) {
            (Mode::Replicas, _, _) => {
                conditions::remove_condition(conditions, conditions::TRAFFIC_ROUTED)
            }
            (Mode::Gateway, Some(message), _) => conditions::set_condition(
                conditions,
                conditions::TRAFFIC_ROUTED,
                Truth::False,
                "TrafficRouteUnusable",
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
                        "{canary_weight}% to {} and the rest to {}",
                        Role::Canary.child_name(self.name),
                        Role::Stable.child_name(self.name)
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

fn action_name(action: ManualAction) -> &'static str {
    match action {
        ManualAction::Promote => "promote",
        ManualAction::PromoteFull => "promote --full",
        ManualAction::Abort => "abort",
        ManualAction::Retry => "retry",
    }
}
