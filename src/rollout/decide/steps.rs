//! The canary in its steps: waiting for it to be available, `setWeight` and `pause` steps, and
//! the analysis gate before promotion.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::{Decider, Mode, plus};
use crate::analysis::limits::LimitReached;
use crate::api::{Outcome, Phase, RouteAdditions, TimelineKind};
use crate::rollout::{Action, Severity, WorkloadState, timeline};
use crate::traffic::split::{canary_size, effective_weight, next_replica_scale, replica_split};
use k8s_openapi::jiff::Timestamp;

impl<'a> Decider<'a> {
    pub(super) fn steps_len(&self) -> usize {
        self.spec.steps.len()
    }

    pub(super) fn current_step(&self) -> usize {
        usize::try_from(self.status.current_step.unwrap_or(0).max(0))
            .unwrap_or(0)
            .min(self.steps_len())
    }

    pub(super) fn set_current_step(&mut self, index: usize) {
        self.status.current_step = Some(i32::try_from(index).unwrap_or(i32::MAX));
    }

    /// Note in the timeline that the canary's traffic reached `weight` during step `index`
    /// (0-based), once per weight reached: called where a step sees its traffic in place, so
    /// the timeline (and the post-mortem's impact) holds what the canary had, never a step's
    /// target that a hold kept it from. With a replica split the weight is the split's
    /// effective share, as the status shows it.
    fn note_weight_reached(&mut self, index: usize, weight: i32) {
        let reached = match self.mode {
            Mode::Gateway => weight,
            Mode::Replicas => {
                let total = self.total();
                effective_weight(total, replica_split(total, weight).1)
            }
        };
        let last = self
            .status
            .timeline
            .iter()
            .rev()
            .find(|entry| entry.kind == TimelineKind::Step)
            .and_then(|entry| entry.weight)
            .unwrap_or(0);
        if reached != last {
            let step = i32::try_from(index + 1).unwrap_or(i32::MAX);
            self.note(timeline::step(Time(self.now), step, reached));
        }
    }

    /// Make traffic carry `weight` for step `index` ([`Self::ensure_traffic`]), with the
    /// cohorts and mirrors the steps before it left active, and note in the timeline when it
    /// does; true once it does.
    fn hold_traffic(&mut self, index: usize, canary: &WorkloadState, weight: i32) -> bool {
        let additions = self.additions_before(index);
        self.hold_traffic_with(index, canary, weight, additions)
    }

    /// [`Self::hold_traffic`] with the cohorts and mirrors `additions`.
    fn hold_traffic_with(
        &mut self,
        index: usize,
        canary: &WorkloadState,
        weight: i32,
        additions: RouteAdditions,
    ) -> bool {
        let weight_in_place = self.ensure_traffic(canary, weight);
        if weight_in_place {
            self.note_weight_reached(index, weight);
        }
        let additions_in_place = self.ensure_additions(additions);
        weight_in_place && additions_in_place
    }

    /// The cohorts and mirrors the steps before `index` leave active (what the route carries
    /// while step `index` runs).
    pub(super) fn additions_before(&self, index: usize) -> RouteAdditions {
        RouteAdditions::after_steps(&self.spec.steps[..index.min(self.steps_len())])
    }

    /// Run route step `index` (`setHeaderRoute`, `setMirrorRoute`); true once the route
    /// carries what it asks. Adding a cohort or mirror exposes the canary: after its first
    /// traffic, that waits for a passing analysis like a higher weight.
    fn run_route_step(&mut self, revision: &str, canary: &WorkloadState, index: usize) -> bool {
        let step = self.spec.steps[index].clone();
        let held = self.weight_before(index);
        let (kind, name) = match (&step.set_header_route, &step.set_mirror_route) {
            (Some(cohort), _) => ("cohort", cohort.name.clone()),
            (None, Some(mirror)) => ("mirror", mirror.name.clone()),
            (None, None) => return true,
        };
        let what = match (&step.set_header_route, &step.set_mirror_route) {
            (Some(cohort), _) if cohort.route_match.is_some() => {
                format!("cohort {name} routed to canary {revision}")
            }
            (Some(_), _) => format!("cohort {name} no longer routed to the canary"),
            (None, Some(mirror)) => match mirror.percent {
                Some(percent) => format!("mirror {name} copying {percent}% to canary {revision}"),
                None => format!("mirror {name} removed"),
            },
            (None, None) => String::new(),
        };
        if step.exposes_canary()
            && let Some(cause) = self.evidence_missing(revision, index)
        {
            self.hold_traffic(index, canary, held);
            self.report_held(revision, &cause, &format!("adding {kind} {name}"));
            return false;
        }
        let mut wanted = self.additions_before(index);
        wanted.apply_step(&step);
        if !self.hold_traffic_with(index, canary, held, wanted) {
            // Gateway API may not mirror on this Gateway: said where the mirror is asked for,
            // from the route's GatewayClass's supported features (none reported: no warning).
            let warning = if step.set_mirror_route.is_some() {
                crate::traffic::cohort::mirror_support_warning(
                    self.observed.gateway_features.as_deref(),
                )
                .map(|warning| format!("; warning: {warning}"))
                .unwrap_or_default()
            } else {
                String::new()
            };
            let message = format!(
                "step {}: {what} ({}% on the canary by weight){warning}{}",
                self.step_label(),
                self.shown_weight(),
                self.analysis_summary(revision)
            );
            let reason = if step.set_header_route.is_some() {
                "StepSetHeaderRoute"
            } else {
                "StepSetMirrorRoute"
            };
            self.set_report(Phase::Progressing, reason, message);
            return false;
        }
        self.event(
            Severity::Normal,
            "StepCompleted",
            format!("step {}: {what}", self.step_label()),
        );
        true
    }

    /// `n/total`, 1-based, as the Step column shows it.
    pub(super) fn step_label(&self) -> String {
        let total = self.steps_len();
        format!("{}/{total}", (self.current_step() + 1).min(total))
    }

    /// Weight of the last `setWeight` step before `index` (what traffic holds at while step
    /// `index` runs), 0 when none.
    pub(super) fn weight_before(&self, index: usize) -> i32 {
        self.spec.steps[..index.min(self.steps_len())]
            .iter()
            .rev()
            .find_map(|step| step.set_weight)
            .unwrap_or(0)
            .clamp(0, 100)
    }

    /// Weight step `index` aims at: its own `setWeight` or the one before it.
    pub(super) fn weight_target(&self, index: usize) -> i32 {
        self.spec
            .steps
            .get(index)
            .and_then(|step| step.set_weight)
            .map_or_else(|| self.weight_before(index), |w| w.clamp(0, 100))
    }

    /// The canary's share of traffic as it is: the route's weight, or in replica mode the
    /// canary's share of ready pods.
    pub(super) fn shown_weight(&self) -> i32 {
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
                    // The pods this decision leaves the canary, so that a total changed by a
                    // scale shows its split at once; but pods taken away (traffic off) count
                    // until they are gone, as the traffic sees them.
                    let wanted = match self.planned_canary_replicas() {
                        0 => c.replicas,
                        planned => planned,
                    };
                    let ready = c.available_replicas.min(wanted);
                    if ready >= 1 && ready < wanted && !self.raising_weight() {
                        // Pods added because the total changed (`kubectl scale`, an HPA): the
                        // share is still the step's, not a dip while they start.
                        let held = self.weight_before(self.current_step());
                        effective_weight(self.total(), replica_split(self.total(), held).1)
                    } else {
                        effective_weight(self.total(), ready)
                    }
                }),
        }
    }

    /// Whether the running step raises the canary's weight (its pods grow for that, not for a
    /// change of the total).
    fn raising_weight(&self) -> bool {
        let index = self.current_step();
        index < self.steps_len() && self.weight_target(index) > self.weight_before(index)
    }

    /// A canary that lacks pods only because the total grew (a scale through the scale
    /// subresource mid-step): it has ready pods and the running step does not raise its weight.
    /// It keeps serving at the step's weight; the step goes on and the progress deadline, which
    /// judges the canary, does not run for capacity the HPA asked for.
    fn growing_with_the_total(&self, canary: &WorkloadState) -> bool {
        self.status.steps_started_at.is_some()
            && canary.available_replicas >= 1
            && canary.available_replicas < canary.replicas
            && !self.raising_weight()
    }

    /// Move the canary through its steps; true when it left the stage (rollback, promotion).
    pub(super) fn canary(&mut self) -> bool {
        let revision = self.status.canary_revision.clone().unwrap_or_default();
        if self
            .observed
            .stable
            .as_ref()
            .is_some_and(|stable| stable.revision.as_deref() == Some(revision.as_str()))
        {
            // The stable already runs this revision (a status restored from before the
            // promotion was recorded): finish the promotion, never roll the stable's own
            // template back.
            self.begin_promotion();
            return true;
        }
        if self.rolled_back_by_analysis(&revision) {
            return true;
        }
        // With a replica split, a canary that holds no traffic yet has no pods to wait for:
        // it is created (or takes over the Deployment of an older canary) when a step gives
        // it its first pods.
        let no_pods;
        let canary = match self.canary_of(&revision) {
            None if self.mode == Mode::Replicas && self.canary_pods_held() == 0 => {
                // What runs under the canary's name now (an older canary being replaced)
                // loses its pods: the stable carries everything first.
                self.restore_stable_size();
                if self.planned_canary_replicas() > 0 {
                    self.push(Action::ScaleCanary { replicas: 0 });
                }
                no_pods = WorkloadState {
                    revision: Some(revision.clone()),
                    available: true,
                    settled: true,
                    ..WorkloadState::default()
                };
                &no_pods
            }
            None => return self.canary_not_ready(&revision, None, self.now),
            Some(canary) if canary.replicas < 1 && self.mode == Mode::Gateway => {
                // Scaled to zero (an earlier rollback, or a person): "available" with no pods
                // means nothing.
                return self.canary_not_ready(&revision, Some(canary), self.now);
            }
            Some(canary) if !canary.available => match self.growing_since(canary) {
                // Pods added for the step that runs: what traffic holds at is served; the
                // step waits for the new pods before it moves traffic.
                Some(since) if self.now < plus(since, self.spec.progress_deadline) => {
                    self.due_at(plus(since, self.spec.progress_deadline));
                    canary
                }
                Some(since) => return self.canary_not_ready(&revision, Some(canary), since),
                None if self.growing_with_the_total(canary) => canary,
                None => return self.canary_not_ready(&revision, Some(canary), self.now),
            },
            Some(canary) => canary,
        };
        self.status.canary_waiting_since = None;
        if self.status.steps_started_at.is_none() {
            self.status.steps_started_at = Some(Time(self.now));
            self.status.step_started_at = Some(Time(self.now));
            self.note(timeline::canary_available(Time(self.now)));
        }

        if self.inconclusive_hold(&revision) {
            self.report_inconclusive_hold(&revision);
            return false;
        }

        while self.current_step() < self.steps_len() {
            if !self.run_step(&revision, canary) {
                return false;
            }
            let index = self.current_step();
            self.set_current_step(index + 1);
            self.status.step_started_at = Some(Time(self.now));
            self.status.pause_until = None;
        }

        // Every step done: the analysis gate, then promotion. Traffic holds at the last weight
        // while the gate waits; a promotion goes on from the traffic as it is (a step skipped
        // by `waymark promote` is not taken on the way out).
        if self.spec.analysis.is_some() && !self.passed_since_steps_began(&revision) {
            let held = self.weight_before(self.steps_len());
            self.hold_traffic(self.steps_len(), canary, held);
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
        self.begin_promotion();
        true
    }

    /// Run the current step; true once it is done.
    fn run_step(&mut self, revision: &str, canary: &WorkloadState) -> bool {
        let index = self.current_step();
        let step = self.spec.steps[index].clone();
        let held = self.weight_before(index);
        if step.is_route_step() {
            return self.run_route_step(revision, canary, index);
        }
        if let Some(weight) = step.set_weight {
            let weight = weight.clamp(0, 100);
            if weight > held
                && let Some(cause) = self.evidence_missing(revision, index)
            {
                // No more traffic, and no pods for it, without evidence that the canary is
                // good: missing data never counts as passing.
                self.hold_traffic(index, canary, held);
                self.report_held(revision, &cause, &format!("moving to {weight}%"));
                return false;
            }
            // With a replica split, a step whose last actions only shrink one side is done
            // once they are decided, when the next step holds that weight (a pause): that step
            // begins in the same status write. Otherwise the shrink is seen through first, so
            // one decision never shrinks a side that the next step grows again.
            let done = self.hold_traffic(index, canary, weight)
                && (!self.scale_pending(canary) || self.next_step_holds(index));
            if !done {
                let message = format!(
                    "step {}: moving to {weight}% on canary {revision} (now {}%){}",
                    self.step_label(),
                    self.shown_weight(),
                    self.analysis_summary(revision)
                );
                self.set_report(Phase::Progressing, "StepSetWeight", message);
                return false;
            }
            self.event(
                Severity::Normal,
                "StepCompleted",
                format!(
                    "step {}: {weight}% of traffic on canary {revision}",
                    self.step_label()
                ),
            );
            return true;
        }
        let Some(pause) = step.pause else {
            return true;
        };
        self.hold_traffic(index, canary, held);
        let Some(duration) = pause.duration else {
            let message = format!(
                "step {}: {}% on canary {revision}, paused until `waymark promote {}`{}",
                self.step_label(),
                self.shown_weight(),
                self.name,
                self.analysis_summary(revision)
            );
            self.set_report(Phase::Paused, "CanaryPauseStep", message);
            return false;
        };
        let started = self
            .status
            .step_started_at
            .as_ref()
            .map_or(self.now, |t| t.0);
        let end = plus(started, duration);
        if self.now >= end {
            // A timed pause is a minimum, not a countdown of its own: it ends once its time is
            // up and the latest analysis passes, so the time without evidence never buys the
            // canary its next step.
            let Some(cause) = self.evidence_missing(revision, index) else {
                return true;
            };
            self.status.pause_until = None;
            self.report_held(
                revision,
                &cause,
                &format!("pause {duration} ended at {end}; the next step"),
            );
            return false;
        }
        // An instant, not a countdown: the status must not change while the pause runs.
        if self.old.pause_until.as_ref().map(|t| t.0) != Some(end) {
            self.narrate(
                Severity::Normal,
                "StepPaused",
                format!(
                    "step {}: {}% on canary {revision}, paused for {duration} until {end}",
                    self.step_label(),
                    self.shown_weight()
                ),
            );
        }
        self.status.pause_until = Some(Time(end));
        self.due_at(end);
        let message = format!(
            "step {}: {}% on canary {revision}, pause {duration} until {end}{}",
            self.step_label(),
            self.shown_weight(),
            self.analysis_summary(revision)
        );
        // With analysis, the latest verdict is what an SRE wants to see.
        let reason = self.analysis_of(revision).map_or_else(
            || "StepPause".to_string(),
            |a| format!("Analysis{}", a.verdict),
        );
        self.set_report(Phase::Progressing, &reason, message);
        false
    }

    /// The status of a canary held where it is for want of a passing analysis: `cause` from
    /// [`Self::evidence_missing`], `next` what waits for it.
    ///
    /// Entering the hold is told in the log once: the hold is the same while the status says
    /// the canary is held at the same step, weight and revision (its cause, the latest verdict,
    /// may change meanwhile: that is told as a verdict change). A Degraded report (a route
    /// unusable, a refused write) keeps these words after its own, so it does not end the hold.
    fn report_held(&mut self, revision: &str, cause: &str, next: &str) {
        let held = format!(
            "step {}: held at {}% on canary {revision}",
            self.step_label(),
            self.shown_weight()
        );
        let message = format!(
            "{held}: {cause}; {next} needs a passing analysis (or `waymark promote {}`)",
            self.name
        );
        let reason = self.evidence_reason(revision);
        let held_before = self
            .old
            .message
            .as_deref()
            .is_some_and(|old| old.contains(&format!("{held}:")));
        if !held_before {
            self.narrate(Severity::Normal, "CanaryHeld", message.clone());
        }
        self.set_report(Phase::Progressing, &reason, message);
    }

    /// The status of a canary paused by `inconclusiveLimit`: what reached the limit (without a
    /// count that would climb past it run after run) and exactly what ends the pause.
    fn report_inconclusive_hold(&mut self, revision: &str) {
        let reached = LimitReached::Inconclusive {
            count: self
                .analysis_of(revision)
                .map_or(0, |a| a.consecutive_inconclusive),
            limit: self
                .spec
                .analysis
                .as_ref()
                .map_or(1, |a| a.inconclusive_limit.max(1)),
        };
        let by_hand = if self.current_step() < self.steps_len() {
            format!(
                "`waymark promote {}` finishes step {} without one",
                self.name,
                self.step_label()
            )
        } else {
            format!(
                "`waymark promote --full {}` promotes without one",
                self.name
            )
        };
        let message = format!(
            "step {}: held at {}% on canary {revision}: {reached}{}; resumes by itself at the next passing analysis, or {by_hand}",
            self.step_label(),
            self.shown_weight(),
            self.analysis_summary(revision)
        );
        self.set_report(Phase::Paused, "AnalysisInconclusive", message);
    }

    /// Canary pods for where the steps stand now (used when the Deployment must be applied).
    fn canary_replicas_now(&self) -> i32 {
        let index = self.current_step();
        match self.mode {
            Mode::Gateway => canary_size(self.total(), self.weight_allowed(index)),
            Mode::Replicas if self.status.steps_started_at.is_none() => 0,
            Mode::Replicas => replica_split(self.total(), self.weight_before(index)).1,
        }
    }

    /// Weight step `index` may take the canary to now: its target, or what traffic holds at
    /// while a raise waits for a passing analysis (so no pods are made for it either).
    fn weight_allowed(&self, index: usize) -> i32 {
        let (target, held) = (self.weight_target(index), self.weight_before(index));
        let revision = self.status.canary_revision.as_deref().unwrap_or_default();
        if target > held && self.evidence_missing(revision, index).is_some() {
            held
        } else {
            target
        }
    }

    /// Whether this decision scales a side of a replica split (an action not yet observed).
    fn scale_pending(&self, canary: &WorkloadState) -> bool {
        let stable = self.observed.stable.as_ref().map_or(0, |s| s.replicas);
        self.mode == Mode::Replicas
            && (self.planned_stable_replicas() != stable
                || self.planned_canary_replicas() != canary.replicas)
    }

    /// Whether the step after `index` is a pause (it holds the weight step `index` set).
    fn next_step_holds(&self, index: usize) -> bool {
        self.spec
            .steps
            .get(index + 1)
            .is_some_and(|step| step.set_weight.is_none())
    }

    /// Canary pods the traffic of the running step's start needs.
    fn canary_pods_held(&self) -> i32 {
        let held = self.weight_before(self.current_step());
        match self.mode {
            Mode::Gateway => canary_size(self.total(), held),
            Mode::Replicas => replica_split(self.total(), held).1,
        }
    }

    /// When the canary is not available only because the running step added pods to it (every
    /// pod the traffic so far needs is still available): since when the step has run.
    fn growing_since(&self, canary: &WorkloadState) -> Option<Timestamp> {
        let started = self.status.step_started_at.as_ref()?.0;
        self.status.steps_started_at.as_ref()?;
        let growing = canary.replicas >= 1
            && canary.replicas > self.canary_pods_held()
            && canary.available_replicas >= self.canary_pods_held();
        growing.then_some(started)
    }

    /// The canary is missing, scaled to zero or not available: no traffic while it has no
    /// available pod, create or scale it, and wait up to `progressDeadline` (then roll back).
    /// True when it rolled back.
    fn canary_not_ready(
        &mut self,
        revision: &str,
        canary: Option<&WorkloadState>,
        waiting_from: Timestamp,
    ) -> bool {
        let since = self
            .status
            .canary_waiting_since
            .get_or_insert(Time(waiting_from))
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
        if ready == 0 {
            // Deleted, recreated or replaced: no canary pod could answer. With a router none
            // of the traffic goes there until one is available again; with a replica split the
            // stable carries everything meanwhile.
            match self.mode {
                Mode::Gateway => self.canary_traffic_off(),
                Mode::Replicas => self.restore_stable_size(),
            }
        }
        let replicas = self.canary_replicas_now();
        match canary {
            None => self.push(Action::ApplyCanary {
                revision: revision.to_string(),
                replicas,
            }),
            Some(canary) if canary.replicas < 1 && replicas > 0 => {
                self.push(Action::ScaleCanary { replicas });
            }
            Some(_) => {}
        }
        self.due_at(deadline);
        let (reason, what) = if self.status.steps_started_at.is_none() {
            ("CanaryStarting", "starting")
        } else {
            ("WaitingForCanary", "not available")
        };
        // The wanted pods, not the count available: that moves on its own while pods start.
        let message = format!(
            "step {}: canary {revision} {what}, waiting for {replicas} pods to be available; rolled back if not available by {deadline}",
            self.step_label()
        );
        self.set_report(Phase::Progressing, reason, message);
        false
    }

    /// Make traffic carry `weight` percent to the available canary; true once it does.
    pub(super) fn ensure_traffic(&mut self, canary: &WorkloadState, weight: i32) -> bool {
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
                    if self.route_weight().is_none_or(|now| weight > now) && !canary.available {
                        // More traffic only once every canary pod is available.
                        return false;
                    }
                    self.push(Action::SetWeight {
                        canary_weight: weight,
                    });
                    return false;
                }
                if canary.replicas > needed {
                    // Traffic already lowered: the spare pods can go.
                    self.push(Action::ScaleCanary { replicas: needed });
                }
                true
            }
            Mode::Replicas => {
                // Make before break (`traffic::split::next_replica_scale`): the sides that grow
                // grow first (both at once when the total grew) and must be available before a
                // side shrinks, so capacity never drops below spec.replicas and a decision cut
                // short by a restart is finished the same way. Once only shrinking is left, it
                // is decided and the step is done: scaling down takes effect at once.
                let Some(stable) = self.observed.stable.as_ref() else {
                    return false;
                };
                let scale = next_replica_scale(
                    (
                        self.planned_stable_replicas(),
                        self.planned_canary_replicas(),
                    ),
                    replica_split(total, weight),
                    stable.available,
                    canary.available,
                );
                if let Some(replicas) = scale.canary {
                    self.push(Action::ScaleCanary { replicas });
                }
                if let Some(replicas) = scale.stable {
                    self.push(Action::ScaleStable { replicas });
                }
                scale.in_place
            }
        }
    }
}
