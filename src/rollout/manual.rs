//! Which manual action (`waymark promote [--full]`, `waymark abort`, `waymark retry`) a Release
//! accepts now, and what it then does: the one rule the CLI checks before it writes a request
//! and the controller checks before it acts on one.
//!
//! Both decide from the Release alone (spec and status), so for the same Release they give the
//! same answer, and a refusal says why and what to do instead. A request records where the
//! release stood when it was written (a [`Position`]: stage, revision, step); the controller
//! ignores it only when the release has moved on since (the request is stale), so a request the
//! CLI accepted is acted on unless the release changed in between.
//!
//! Abort while a promotion runs is refused: promotion re-templates the stable Deployment with
//! the canary's template and the previous template is not kept anywhere, so there is no stable
//! to send the traffic back to. Going back means applying the previous template as a new
//! revision, which runs as a canary like any other.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::stage::{Stage, inconclusive_hold, stage};
use super::{history, validate};
use crate::api::{
    ManualAction, ManualRequest, Outcome, Phase, Release, ReleaseSpec, ReleaseStage, ReleaseStatus,
    template_revision,
};

/// Where a release stands, as a manual request records it and the controller compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Position {
    /// The stage, as the controller sees it before it acts on a request (a canary of an older
    /// template than the spec's is about to be replaced, so it does not count).
    pub stage: ReleaseStage,
    /// The revision an action is about: the spec's, while it is pending, a canary, being
    /// promoted or rolled back; none while the stable runs the spec's template.
    pub revision: Option<String>,
    /// The canary's step (0-based, as `status.currentStep`), in the Canary stage.
    pub step: Option<i32>,
    /// How many steps the spec has (for messages: `step 2/4`).
    pub steps: usize,
}

impl Position {
    /// `step n/N`, 1-based as the Step column shows it.
    fn step_label(&self) -> String {
        step_label(self.step, self.steps)
    }

    /// The position in words: "canary 6f9c7d at step 2/4".
    fn describe(&self) -> String {
        let revision = self.revision.as_deref().unwrap_or_default();
        match self.stage {
            Stage::FirstRelease => "the first release, before its stable exists".into(),
            Stage::Steady => "the stable serving the spec's template, no canary".into(),
            Stage::Pending => format!("revision {revision} waiting for its canary to start"),
            Stage::RolledBack => format!("revision {revision} rolled back"),
            Stage::Canary => format!("canary {revision} at {}", self.step_label()),
            Stage::Promoting => format!("canary {revision} being promoted"),
        }
    }
}

fn step_label(step: Option<i32>, steps: usize) -> String {
    let index = usize::try_from(step.unwrap_or(0).max(0)).unwrap_or(0);
    format!("step {}/{steps}", (index + 1).min(steps.max(1)))
}

/// What an accepted action makes the controller do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// `promote` on a canary held by `inconclusiveLimit`: the hold ends and, while a step is
    /// left, the current step ends too (a person's override of the missing evidence).
    ReleaseHold,
    /// `promote` on a canary in its steps: the current step ends and the next begins.
    FinishStep,
    /// `promote` on a pending revision under an error-budget policy: its canary starts anyway.
    StartDespiteBudget,
    /// `promote --full` on a pending revision: it becomes the stable without a canary.
    PromoteWithoutCanary,
    /// `promote --full` on a canary: its remaining steps and the analysis gate are skipped.
    SkipToPromotion,
    /// `abort` on a canary: traffic off it, then its pods; the revision is rolled back.
    RollBack,
    /// `retry` on a rolled-back revision: it starts again from the first step.
    Retry,
}

/// An action the release accepts now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The action asked for.
    pub action: ManualAction,
    /// Where the release stands; the request records it.
    pub position: Position,
    /// What the controller will do.
    pub effect: Effect,
    /// That, in words, for the person who asked.
    pub what: String,
}

impl Accepted {
    /// The request to write to `status.request`: the action and where the release stood, so
    /// that the controller can tell whether the release has moved on since.
    pub fn request(
        &self,
        id: String,
        requested_at: Time,
        requested_by: Option<String>,
    ) -> ManualRequest {
        ManualRequest {
            id,
            action: self.action,
            revision: self.position.revision.clone(),
            stage: Some(self.position.stage),
            step: self.position.step,
            requested_at,
            requested_by,
        }
    }
}

/// An action the release does not accept now.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{why}; {instead}")]
pub struct Refused {
    /// Why, naming the revision and where the release stands.
    pub why: String,
    /// What to do instead, with the command or field to use.
    pub instead: String,
}

/// Whether `release` accepts `action` now, and what it does; or why not and what to do instead.
///
/// The CLI asks this before it writes a request, and refuses (non-zero exit) what it refuses.
pub fn judge(release: &Release, action: ManualAction) -> Result<Accepted, Refused> {
    let name = release.metadata.name.as_deref().unwrap_or_default();
    // The controller acts on nothing while the spec is invalid: a request would wait unseen.
    if let Err(error) = validate::spec(release) {
        return Err(Refused {
            why: format!(
                "its spec is invalid and the controller acts on nothing until it is fixed ({error})"
            ),
            instead: format!(
                "fix that field and apply the Release again (`waymark status {name}` shows SpecValid), then run this again"
            ),
        });
    }
    judge_status(&release.spec, name, release.status.as_ref(), action)
}

/// [`judge`] for a spec that passed validation, on `status` as it is now (the controller calls
/// it with the status as it stands before the stages run).
pub(super) fn judge_status(
    spec: &ReleaseSpec,
    name: &str,
    status: Option<&ReleaseStatus>,
    action: ManualAction,
) -> Result<Accepted, Refused> {
    // A status without a phase was never written by the controller (at most by a request).
    let Some(status) = status.filter(|status| status.phase.is_some()) else {
        return Err(Refused {
            why: "the controller has not reconciled it yet (it has no status)".into(),
            instead: format!(
                "check that the controller runs, and run this again once `waymark status {name}` shows a phase"
            ),
        });
    };
    let rule = Rule {
        spec,
        name,
        status,
        at: position(spec, status),
    };
    let (effect, what) = match rule.at.stage {
        Stage::FirstRelease | Stage::Steady => rule.steady(action),
        Stage::Pending => rule.pending(action),
        Stage::Canary => rule.canary(action),
        Stage::Promoting => rule.promoting(action),
        Stage::RolledBack => rule.rolled_back(action),
    }?;
    Ok(Accepted {
        action,
        position: rule.at,
        effect,
        what,
    })
}

/// Where `status` stands for `spec`, as the controller sees it when it reads requests: a
/// canary of an older template than the spec's is replaced first, so it does not count.
pub fn position(spec: &ReleaseSpec, status: &ReleaseStatus) -> Position {
    let spec_revision = template_revision(&spec.template);
    let superseded = status
        .canary_revision
        .as_deref()
        .is_some_and(|canary| canary != spec_revision);
    let stage = if superseded {
        let mut replaced = status.clone();
        replaced.canary_revision = None;
        stage(&spec_revision, &replaced)
    } else {
        stage(&spec_revision, status)
    };
    let revision = match stage {
        Stage::FirstRelease | Stage::Steady => None,
        Stage::Pending | Stage::RolledBack | Stage::Canary | Stage::Promoting => {
            Some(spec_revision)
        }
    };
    Position {
        stage,
        revision,
        step: (stage == Stage::Canary).then(|| status.current_step.unwrap_or(0)),
        steps: spec.steps.len(),
    }
}

/// Why `request` is stale at position `now` (the release has moved on since it was written),
/// if it is. A request records only what it was written against; what it does not record
/// (requests from before `stage` and `step` existed) is not compared.
pub fn stale(request: &ManualRequest, now: &Position) -> Option<String> {
    let then = Position {
        stage: request.stage.unwrap_or(now.stage),
        revision: request.revision.clone().or_else(|| now.revision.clone()),
        step: request.step.or(now.step),
        steps: now.steps,
    };
    let revision_moved = request.revision.is_some() && then.revision != now.revision;
    let stage_moved = then.stage != now.stage;
    // Only a plain promote means "this step": the others mean the same at any step.
    let step_moved =
        request.action == ManualAction::Promote && request.step.is_some() && then.step != now.step;
    if !(revision_moved || stage_moved || step_moved) {
        return None;
    }
    let was = if request.stage.is_some() {
        then.describe()
    } else {
        format!(
            "revision {}",
            request.revision.as_deref().unwrap_or_default()
        )
    };
    Some(format!(
        "it is stale: it was written for {was}, and now it is {}",
        now.describe()
    ))
}

/// One question: may `name` take an action now?
struct Rule<'a> {
    spec: &'a ReleaseSpec,
    name: &'a str,
    status: &'a ReleaseStatus,
    at: Position,
}

type Answer = Result<(Effect, String), Refused>;

fn refuse(why: String, instead: String) -> Answer {
    Err(Refused { why, instead })
}

impl Rule<'_> {
    fn revision(&self) -> &str {
        self.at.revision.as_deref().unwrap_or_default()
    }

    fn stable(&self) -> &str {
        self.status
            .stable_revision
            .as_deref()
            .unwrap_or("(none yet)")
    }

    /// Whether the stable (or the one about to be) is the release's first template: it never
    /// had a canary.
    fn first_release(&self) -> bool {
        self.at.stage == Stage::FirstRelease
            // Rolling out: its history entry comes when its stable is available.
            || (history::first_release_unrecorded(self.status)
                && self.status.phase != Some(Phase::Healthy))
            || self.status.history.first().is_some_and(|entry| {
                entry.reason == "FirstRelease"
                    && Some(entry.revision.as_str()) == self.status.stable_revision.as_deref()
            })
    }

    /// No canary: the stable runs the spec's template (or is about to, for a first release).
    fn steady(&self, action: ManualAction) -> Answer {
        let name = self.name;
        let stable = self.stable();
        if self.first_release() {
            let first = "this is the first release: its template becomes the stable directly, without a canary";
            return match action {
                ManualAction::Promote | ManualAction::PromoteFull => refuse(
                    format!("{first}, so there are no steps to promote"),
                    format!(
                        "wait for it to be available (`waymark status {name} --watch`); the next template runs as a canary you can promote"
                    ),
                ),
                ManualAction::Abort => refuse(
                    format!("{first}, so there is no canary to abort"),
                    "to run another template change spec.template; to remove it delete the Release"
                        .into(),
                ),
                ManualAction::Retry => refuse(
                    format!("{first}, and nothing was rolled back"),
                    "retry restarts a rolled-back revision; there is nothing to do".into(),
                ),
            };
        }
        match action {
            ManualAction::Promote | ManualAction::PromoteFull => refuse(
                format!("no canary is in progress: stable {stable} runs the spec's template"),
                "to ship a new revision change spec.template; its canary can then be promoted"
                    .into(),
            ),
            ManualAction::Abort => refuse(
                format!("there is no canary to abort: stable {stable} runs the spec's template"),
                "to replace the stable change spec.template: the new revision runs as a canary"
                    .into(),
            ),
            ManualAction::Retry => match self.status.rolled_back_revision.as_deref() {
                Some(rolled_back) => refuse(
                    format!(
                        "revision {rolled_back} was rolled back, but the spec's template is no longer it (stable {stable} runs the spec's template)"
                    ),
                    format!(
                        "to try {rolled_back} again put its template back in spec.template, then run `waymark retry {name}`"
                    ),
                ),
                None => refuse(
                    format!("nothing was rolled back: stable {stable} runs the spec's template"),
                    "retry restarts a rolled-back revision; to ship a new one change spec.template"
                        .into(),
                ),
            },
        }
    }

    /// The spec has a new revision without a canary yet (maybe held by the error budget).
    fn pending(&self, action: ManualAction) -> Answer {
        let (name, revision) = (self.name, self.revision());
        let budget_policy = self
            .spec
            .analysis
            .as_ref()
            .is_some_and(|analysis| analysis.slo.budget.is_some());
        let waiting = if budget_policy {
            "the error-budget policy decides when it starts"
        } else {
            "the controller starts it on its next reconcile"
        };
        // A canary its analysis cannot judge does not start, even when asked to.
        let secret_missing = self.status.conditions.iter().any(|condition| {
            condition.type_ == super::conditions::PROMETHEUS_CREDENTIALS
                && condition.status == "False"
        });
        match action {
            ManualAction::Promote if secret_missing => refuse(
                format!(
                    "revision {revision} waits for its Prometheus Secret (see the PrometheusCredentials condition), so its canary cannot start"
                ),
                format!(
                    "create the Secret it names, or run `waymark promote {name} --full` to make it the stable without a canary and its analysis"
                ),
            ),
            ManualAction::Promote if budget_policy => Ok((
                Effect::StartDespiteBudget,
                format!("revision {revision} starts its canary despite the error-budget policy"),
            )),
            ManualAction::Promote => refuse(
                format!(
                    "revision {revision} has no canary yet ({waiting}), so there is no step to promote"
                ),
                format!(
                    "wait until its canary waits at a pause (`waymark status {name} --watch`), or run `waymark promote {name} --full` to make it the stable without a canary"
                ),
            ),
            ManualAction::PromoteFull => Ok((
                Effect::PromoteWithoutCanary,
                format!(
                    "revision {revision} becomes the stable without a canary, skipping its steps and analysis"
                ),
            )),
            ManualAction::Abort => refuse(
                format!("revision {revision} has no canary to abort yet ({waiting})"),
                format!(
                    "to keep it from running put the previous template back in spec.template (stable {} runs it)",
                    self.stable()
                ),
            ),
            ManualAction::Retry => refuse(
                format!("revision {revision} is new and waits to start; nothing was rolled back"),
                "retry restarts a rolled-back revision; there is nothing to do".into(),
            ),
        }
    }

    /// A canary of the spec's revision in its steps.
    fn canary(&self, action: ManualAction) -> Answer {
        let (name, revision) = (self.name, self.revision());
        let step = self.at.step_label();
        match action {
            ManualAction::Promote => {
                let index = usize::try_from(self.at.step.unwrap_or(0).max(0)).unwrap_or(0);
                if inconclusive_hold(self.spec, self.status, revision) {
                    let and_step = if index < self.at.steps {
                        format!(" and {step} ends without a passing analysis")
                    } else {
                        "; promotion still waits for a passing analysis".to_string()
                    };
                    return Ok((
                        Effect::ReleaseHold,
                        format!(
                            "the hold on inconclusive analysis of canary {revision} ends{and_step}"
                        ),
                    ));
                }
                if index < self.at.steps {
                    let next = if index + 1 < self.at.steps {
                        "the next step begins"
                    } else if self.spec.analysis.is_some() {
                        "it is promoted once an analysis passes"
                    } else {
                        "it is promoted"
                    };
                    return Ok((
                        Effect::FinishStep,
                        format!("{step} of canary {revision} ends; {next}"),
                    ));
                }
                let latest = self
                    .status
                    .analysis
                    .as_ref()
                    .filter(|analysis| analysis.revision.as_deref() == Some(revision))
                    .map_or_else(|| "none yet".to_string(), |a| a.verdict.to_string());
                refuse(
                    format!(
                        "canary {revision} has done all {} steps and waits for a passing analysis (latest: {latest}); promote ends a step or a hold, and none is left",
                        self.at.steps
                    ),
                    format!(
                        "`waymark promote {name} --full` promotes it without a passing analysis; `waymark abort {name}` rolls it back"
                    ),
                )
            }
            ManualAction::PromoteFull => Ok((
                Effect::SkipToPromotion,
                format!(
                    "canary {revision} skips its steps from {step} and the analysis gate: the stable takes its template"
                ),
            )),
            ManualAction::Abort => Ok((
                Effect::RollBack,
                format!(
                    "canary {revision} is rolled back from {step}: its traffic goes to the stable first, then its pods go"
                ),
            )),
            ManualAction::Retry => refuse(
                format!("canary {revision} is in progress ({step}); nothing was rolled back"),
                format!(
                    "retry restarts a rolled-back revision; `waymark abort {name}` rolls this canary back"
                ),
            ),
        }
    }

    /// The stable is taking the canary's template.
    fn promoting(&self, action: ManualAction) -> Answer {
        let (name, revision) = (self.name, self.revision());
        let go_back = "to go back, apply the previous template as a new revision (put it back in spec.template, for example by reverting the change in Git): it runs as a canary like any new revision";
        match action {
            ManualAction::Promote | ManualAction::PromoteFull => refuse(
                format!(
                    "canary {revision} is already being promoted: the stable takes its template, then all of the traffic"
                ),
                format!("nothing to do; `waymark status {name} --watch` shows it finish"),
            ),
            ManualAction::Abort => {
                let previous = self
                    .status
                    .history
                    .iter()
                    .find(|entry| entry.outcome == Outcome::Promoted && entry.revision != revision)
                    .map(|entry| format!(" (revision {})", entry.revision))
                    .unwrap_or_default();
                refuse(
                    format!(
                        "canary {revision} is being promoted: the stable Deployment already runs its template, and the previous template{previous} is not kept, so there is nothing to roll back to"
                    ),
                    go_back.into(),
                )
            }
            ManualAction::Retry => refuse(
                format!("canary {revision} is being promoted; nothing was rolled back"),
                go_back.into(),
            ),
        }
    }

    /// The spec's revision was rolled back and waits for a new template or a retry.
    fn rolled_back(&self, action: ManualAction) -> Answer {
        let (name, revision) = (self.name, self.revision());
        let how = history::latest_of(&self.status.history, revision)
            .map(|entry| format!(" ({})", entry.reason))
            .unwrap_or_default();
        match action {
            ManualAction::Promote => refuse(
                format!("revision {revision} was rolled back{how} and has no canary to promote"),
                format!(
                    "`waymark retry {name}` starts it again from step 1; or change spec.template to ship another revision"
                ),
            ),
            ManualAction::PromoteFull => refuse(
                format!("revision {revision} was rolled back{how} and has no canary to promote"),
                format!(
                    "`waymark retry {name}` starts it again from step 1 (then `waymark promote {name} --full` skips its steps); or change spec.template to ship another revision"
                ),
            ),
            ManualAction::Abort => refuse(
                format!(
                    "revision {revision} is already rolled back{how}: stable {} serves all traffic",
                    self.stable()
                ),
                format!(
                    "nothing to do; `waymark retry {name}` tries it again, a new spec.template ships another revision"
                ),
            ),
            ManualAction::Retry => Ok((
                Effect::Retry,
                format!("revision {revision} starts again from step 1 as a new canary"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::analysis::fold;
    use crate::api::{Phase, Verdict};
    use crate::rollout::fixtures::*;

    /// What the rule answers for one action.
    #[derive(Debug)]
    enum Expect {
        Acts(Effect),
        /// Refused: words of the reason, and of what to do instead.
        Refused(&'static str, &'static str),
    }
    use Expect::{Acts, Refused};

    fn entry(image: &str, outcome: Outcome, reason: &str) -> crate::api::HistoryEntry {
        history::entry(
            &revision_of(image),
            "PAY-142",
            outcome,
            None,
            Time(at(0)),
            reason,
            None,
        )
    }

    /// A release of `image` whose controller wrote `status`.
    fn release(builder: ReleaseBuilder, image: &str, status: ReleaseStatus) -> Release {
        builder.image(image).status(status).build()
    }

    fn stable_on_v1(phase: Phase) -> ReleaseStatus {
        ReleaseStatus {
            phase: Some(phase),
            stable_revision: Some(revision_of(V1)),
            history: vec![entry(V1, Outcome::Promoted, "Promoted")],
            ..ReleaseStatus::default()
        }
    }

    fn canary_of_v2(phase: Phase, step: i32) -> ReleaseStatus {
        ReleaseStatus {
            canary_revision: Some(revision_of(V2)),
            current_step: Some(step),
            ..stable_on_v1(phase)
        }
    }

    fn analysis_of_v2(verdict: Verdict, inconclusive_in_a_row: i32) -> ReleaseStatus {
        let mut folded = fold::fold(None, &run(V2, verdict, at(30)), true);
        folded.consecutive_inconclusive = inconclusive_in_a_row;
        ReleaseStatus {
            analysis: Some(folded),
            ..ReleaseStatus::default()
        }
    }

    /// Every stage a release can be in when someone types a command, with what each action
    /// gets: promote, promote --full, abort, retry.
    fn table() -> Vec<(&'static str, Release, [Expect; 4])> {
        let gateway = ReleaseBuilder::gateway;
        let mut never_reconciled = gateway().image(V2).build();
        never_reconciled.status = None;
        // Its stable not available yet, so not in the history yet.
        let mut first_release = stable_on_v1(Phase::Progressing);
        first_release.history = Vec::new();
        let mut first_healthy = stable_on_v1(Phase::Healthy);
        first_healthy.history = vec![entry(V1, Outcome::Promoted, "FirstRelease")];
        let steady_after_rollback = ReleaseStatus {
            rolled_back_revision: Some(revision_of(V2)),
            ..stable_on_v1(Phase::Healthy)
        };
        let frozen = ReleaseStatus {
            reason: Some("ErrorBudgetExhausted".into()),
            ..stable_on_v1(Phase::Paused)
        };
        let secret_missing = ReleaseStatus {
            reason: Some("PrometheusSecretMissing".into()),
            conditions: vec![k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: super::super::conditions::PROMETHEUS_CREDENTIALS.into(),
                status: "False".into(),
                reason: "PrometheusSecretMissing".into(),
                message: "Secret shop/prometheus-token, key token: not found".into(),
                last_transition_time: k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                    k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
                ),
                observed_generation: None,
            }],
            ..stable_on_v1(Phase::Degraded)
        };
        let held = ReleaseStatus {
            analysis: analysis_of_v2(Verdict::Inconclusive, 3).analysis,
            ..canary_of_v2(Phase::Paused, 1)
        };
        let waiting_for_analysis = ReleaseStatus {
            analysis: analysis_of_v2(Verdict::Inconclusive, 1).analysis,
            ..canary_of_v2(Phase::Progressing, 4)
        };
        let promoting = ReleaseStatus {
            stable_revision: Some(revision_of(V2)),
            ..canary_of_v2(Phase::Progressing, 4)
        };
        let mut rolled_back = ReleaseStatus {
            rolled_back_revision: Some(revision_of(V2)),
            ..stable_on_v1(Phase::RolledBack)
        };
        rolled_back
            .history
            .insert(0, entry(V2, Outcome::RolledBack, "AnalysisFailing"));
        let mut invalid = release(gateway(), V2, canary_of_v2(Phase::Paused, 3));
        invalid.metadata.name = Some("Checkout_v2".into());

        let go_back = "apply the previous template as a new revision";
        vec![
            (
                "never reconciled",
                never_reconciled,
                [
                    Refused("has not reconciled it yet", "`waymark status checkout`"),
                    Refused("has not reconciled it yet", "`waymark status checkout`"),
                    Refused("has not reconciled it yet", "`waymark status checkout`"),
                    Refused("has not reconciled it yet", "`waymark status checkout`"),
                ],
            ),
            (
                "first release rolling out",
                release(gateway(), V1, first_release),
                [
                    Refused("first release", "`waymark status checkout --watch`"),
                    Refused("first release", "`waymark status checkout --watch`"),
                    Refused("no canary to abort", "change spec.template"),
                    Refused("nothing was rolled back", "nothing to do"),
                ],
            ),
            (
                "first release healthy",
                release(gateway(), V1, first_healthy),
                [
                    Refused("first release", "`waymark status checkout --watch`"),
                    Refused("first release", "`waymark status checkout --watch`"),
                    Refused("no canary to abort", "change spec.template"),
                    Refused("nothing was rolled back", "nothing to do"),
                ],
            ),
            (
                "steady",
                release(gateway(), V1, stable_on_v1(Phase::Healthy)),
                [
                    Refused("no canary is in progress", "change spec.template"),
                    Refused("no canary is in progress", "change spec.template"),
                    Refused("no canary to abort", "change spec.template"),
                    Refused("nothing was rolled back", "change spec.template"),
                ],
            ),
            (
                "steady, an older revision rolled back",
                release(gateway(), V1, steady_after_rollback),
                [
                    Refused("no canary is in progress", "change spec.template"),
                    Refused("no canary is in progress", "change spec.template"),
                    Refused("no canary to abort", "change spec.template"),
                    Refused(
                        "was rolled back, but the spec's template is no longer it",
                        "put its template back in spec.template, then run `waymark retry checkout`",
                    ),
                ],
            ),
            (
                "pending, not reconciled yet",
                release(gateway(), V2, stable_on_v1(Phase::Healthy)),
                [
                    Refused("has no canary yet", "`waymark promote checkout --full`"),
                    Acts(Effect::PromoteWithoutCanary),
                    Refused("no canary to abort yet", "put the previous template back"),
                    Refused("nothing was rolled back", "nothing to do"),
                ],
            ),
            (
                "pending, waiting for its Prometheus Secret",
                release(gateway().budget(0.1), V2, secret_missing),
                [
                    Refused(
                        "waits for its Prometheus Secret",
                        "create the Secret it names, or run `waymark promote checkout --full`",
                    ),
                    Acts(Effect::PromoteWithoutCanary),
                    Refused("no canary to abort yet", "put the previous template back"),
                    Refused("nothing was rolled back", "nothing to do"),
                ],
            ),
            (
                "pending under an error-budget freeze",
                release(gateway().budget(0.1), V2, frozen),
                [
                    Acts(Effect::StartDespiteBudget),
                    Acts(Effect::PromoteWithoutCanary),
                    Refused(
                        "no canary to abort yet (the error-budget policy",
                        "put the previous template back",
                    ),
                    Refused("nothing was rolled back", "nothing to do"),
                ],
            ),
            (
                "canary of an older template, about to be replaced",
                release(gateway(), V3, canary_of_v2(Phase::Paused, 3)),
                [
                    Refused("has no canary yet", "`waymark promote checkout --full`"),
                    Acts(Effect::PromoteWithoutCanary),
                    Refused("no canary to abort yet", "put the previous template back"),
                    Refused("nothing was rolled back", "nothing to do"),
                ],
            ),
            (
                "canary at a pause",
                release(gateway(), V2, canary_of_v2(Phase::Paused, 3)),
                [
                    Acts(Effect::FinishStep),
                    Acts(Effect::SkipToPromotion),
                    Acts(Effect::RollBack),
                    Refused("is in progress (step 4/4)", "`waymark abort checkout`"),
                ],
            ),
            (
                "canary held by inconclusive analysis",
                release(gateway().analysis(), V2, held),
                [
                    Acts(Effect::ReleaseHold),
                    Acts(Effect::SkipToPromotion),
                    Acts(Effect::RollBack),
                    Refused("is in progress (step 2/4)", "`waymark abort checkout`"),
                ],
            ),
            (
                "canary done with its steps, waiting for analysis",
                release(gateway().analysis(), V2, waiting_for_analysis),
                [
                    Refused(
                        "has done all 4 steps and waits for a passing analysis (latest: Inconclusive)",
                        "`waymark promote checkout --full` promotes it without a passing analysis",
                    ),
                    Acts(Effect::SkipToPromotion),
                    Acts(Effect::RollBack),
                    Refused("is in progress", "`waymark abort checkout`"),
                ],
            ),
            (
                "promoting",
                release(gateway(), V2, promoting),
                [
                    Refused(
                        "already being promoted",
                        "`waymark status checkout --watch`",
                    ),
                    Refused(
                        "already being promoted",
                        "`waymark status checkout --watch`",
                    ),
                    Refused(
                        "is being promoted: the stable Deployment already runs its template, and the previous template (revision",
                        go_back,
                    ),
                    Refused("nothing was rolled back", go_back),
                ],
            ),
            (
                "rolled back",
                release(gateway(), V2, rolled_back),
                [
                    Refused(
                        "was rolled back (AnalysisFailing) and has no canary to promote",
                        "`waymark retry checkout` starts it again from step 1",
                    ),
                    Refused(
                        "was rolled back (AnalysisFailing) and has no canary to promote",
                        "`waymark retry checkout` starts it again from step 1 (then `waymark promote checkout --full` skips its steps)",
                    ),
                    Refused("already rolled back", "`waymark retry checkout`"),
                    Acts(Effect::Retry),
                ],
            ),
            (
                "invalid spec",
                invalid,
                [
                    Refused("spec is invalid", "fix that field"),
                    Refused("spec is invalid", "fix that field"),
                    Refused("spec is invalid", "fix that field"),
                    Refused("spec is invalid", "fix that field"),
                ],
            ),
        ]
    }

    const ACTIONS: [ManualAction; 4] = [
        ManualAction::Promote,
        ManualAction::PromoteFull,
        ManualAction::Abort,
        ManualAction::Retry,
    ];

    #[test]
    fn every_stage_and_action_is_accepted_with_an_effect_or_refused_with_what_to_do() {
        for (stage, release, expected) in table() {
            for (action, expect) in ACTIONS.into_iter().zip(expected) {
                let answer = judge(&release, action);
                match (&expect, &answer) {
                    (Acts(effect), Ok(accepted)) => {
                        assert_eq!(accepted.effect, *effect, "{stage}, {action:?}");
                        assert_eq!(accepted.action, action);
                        assert!(!accepted.what.is_empty(), "{stage}, {action:?}");
                    }
                    (Refused(why, instead), Err(refused)) => {
                        assert!(
                            refused.why.contains(why),
                            "{stage}, {action:?}: {:?} lacks {why:?}",
                            refused.why
                        );
                        assert!(
                            refused.instead.contains(instead),
                            "{stage}, {action:?}: {:?} lacks {instead:?}",
                            refused.instead
                        );
                    }
                    _ => panic!("{stage}, {action:?}: expected {expect:?}, got {answer:?}"),
                }
            }
        }
    }

    #[test]
    fn an_accepted_request_records_where_the_release_stood() {
        let release = release(
            ReleaseBuilder::gateway(),
            V2,
            canary_of_v2(Phase::Paused, 3),
        );
        let accepted = judge(&release, ManualAction::Promote).unwrap();
        let request = accepted.request("r1".into(), Time(at(5)), Some("sre".into()));
        assert_eq!(request.revision, Some(revision_of(V2)));
        assert_eq!(request.stage, Some(ReleaseStage::Canary));
        assert_eq!(request.step, Some(3));
        assert_eq!(stale(&request, &accepted.position), None);
    }

    #[test]
    fn a_request_is_stale_once_the_release_moved_past_what_it_recorded() {
        let canary_at = |step| Position {
            stage: ReleaseStage::Canary,
            revision: Some(revision_of(V2)),
            step: Some(step),
            steps: 4,
        };
        let promoting = Position {
            stage: ReleaseStage::Promoting,
            step: None,
            ..canary_at(0)
        };
        let written = |action, position: &Position| ManualRequest {
            id: "r".into(),
            action,
            revision: position.revision.clone(),
            stage: Some(position.stage),
            step: position.step,
            requested_at: Time(at(0)),
            requested_by: None,
        };
        let legacy = |action, revision: &str| ManualRequest {
            stage: None,
            step: None,
            revision: Some(revision.into()),
            ..written(action, &canary_at(0))
        };
        let v3 = Position {
            revision: Some(revision_of(V3)),
            ..canary_at(0)
        };
        let cases = [
            (
                "promote, same step",
                written(ManualAction::Promote, &canary_at(1)),
                canary_at(1),
                None,
            ),
            (
                "promote, the pause it ends is over",
                written(ManualAction::Promote, &canary_at(1)),
                canary_at(3),
                Some(
                    "written for canary ".to_string()
                        + &revision_of(V2)
                        + " at step 2/4, and now it is canary "
                        + &revision_of(V2)
                        + " at step 4/4",
                ),
            ),
            (
                "abort, another step",
                written(ManualAction::Abort, &canary_at(1)),
                canary_at(3),
                None,
            ),
            (
                "promote --full, another step",
                written(ManualAction::PromoteFull, &canary_at(1)),
                canary_at(3),
                None,
            ),
            (
                "abort, the promotion began",
                written(ManualAction::Abort, &canary_at(3)),
                promoting.clone(),
                Some(format!(
                    "and now it is canary {} being promoted",
                    revision_of(V2)
                )),
            ),
            (
                "abort, a new template",
                written(ManualAction::Abort, &canary_at(3)),
                v3.clone(),
                Some(format!(
                    "and now it is canary {} at step 1/4",
                    revision_of(V3)
                )),
            ),
            (
                "a request from before stage and step, same revision",
                legacy(ManualAction::Promote, &revision_of(V2)),
                canary_at(2),
                None,
            ),
            (
                "a request from before stage and step, another revision",
                legacy(ManualAction::Abort, &revision_of(V2)),
                v3,
                Some(format!("written for revision {}", revision_of(V2))),
            ),
        ];
        for (name, request, now, expected) in cases {
            let answer = stale(&request, &now);
            match expected {
                None => assert_eq!(answer, None, "{name}"),
                Some(words) => {
                    let answer = answer.unwrap_or_else(|| panic!("{name}: not stale"));
                    assert!(answer.starts_with("it is stale: "), "{name}: {answer}");
                    assert!(
                        answer.contains(&words),
                        "{name}: {answer:?} lacks {words:?}"
                    );
                }
            }
        }
    }

    /// Releases in every stage, reached by the controller's own decisions (not written by
    /// hand), in both traffic modes.
    fn reached() -> Vec<(&'static str, Sim)> {
        let paused_at_the_end = |builder: ReleaseBuilder| {
            let mut sim = Sim::canary_of(builder);
            sim.settle();
            sim.tick(120);
            sim.settle();
            assert_eq!(sim.status().reason.as_deref(), Some("CanaryPauseStep"));
            sim
        };
        let mut first_rolling_out = Sim::new(ReleaseBuilder::gateway().build());
        first_rolling_out.slow_pods = true;
        first_rolling_out.tick(0);
        let mut first_healthy = Sim::new(ReleaseBuilder::gateway().build());
        first_healthy.settle();
        let mut frozen = Sim::canary_of(ReleaseBuilder::gateway().budget(0.1));
        let mut budget_run = run(V2, Verdict::Passing, at(0));
        budget_run.error_budget_remaining = Some(0.0);
        frozen.observed.analysis = Some(budget_run);
        frozen.tick(0);
        let mut starting = Sim::canary_of(ReleaseBuilder::gateway());
        starting.slow_pods = true;
        starting.tick(0);
        let mut timed_pause = Sim::canary_of(ReleaseBuilder::gateway());
        timed_pause.settle();
        let mut held = Sim::canary_of(ReleaseBuilder::gateway().analysis());
        held.settle();
        for n in 1..=3 {
            held.observed.analysis = Some(run(V2, Verdict::Inconclusive, at(30 * n)));
            held.tick(30);
        }
        let mut waiting_for_analysis = Sim::canary_of(
            ReleaseBuilder::gateway()
                .analysis()
                .steps(vec![set_weight(20)]),
        );
        waiting_for_analysis.settle();
        let mut promoting = paused_at_the_end(ReleaseBuilder::gateway());
        promoting.slow_pods = true;
        promoting.request("go", ManualAction::PromoteFull);
        promoting.tick(0);
        let mut rolled_back = paused_at_the_end(ReleaseBuilder::gateway());
        rolled_back.request("stop", ManualAction::Abort);
        rolled_back.settle();
        let mut promoted = paused_at_the_end(ReleaseBuilder::gateway());
        promoted.request("go", ManualAction::Promote);
        promoted.settle();
        promoted.tick(60);
        promoted.settle();
        let mut superseded = paused_at_the_end(ReleaseBuilder::gateway());
        superseded.release.spec.template = template(V3);
        let states = vec![
            ("first release rolling out", first_rolling_out),
            ("first release healthy", first_healthy),
            ("pending under an error-budget freeze", frozen),
            ("canary starting", starting),
            ("canary in a timed pause", timed_pause),
            (
                "canary at an indefinite pause",
                paused_at_the_end(ReleaseBuilder::gateway()),
            ),
            (
                "replica split canary at an indefinite pause",
                paused_at_the_end(ReleaseBuilder::replica_split()),
            ),
            ("canary held by inconclusive analysis", held),
            (
                "canary waiting for a passing analysis",
                waiting_for_analysis,
            ),
            ("promoting", promoting),
            ("rolled back", rolled_back),
            ("steady after a promotion", promoted),
            ("canary replaced by a new template", superseded),
        ];
        for (name, sim) in &states {
            assert!(
                sim.status().request.is_none()
                    || sim.status().handled_request
                        == sim.status().request.as_ref().map(|r| r.id.clone()),
                "{name}: no request left to handle"
            );
        }
        states
    }

    fn ignored(decision: &crate::rollout::Decision) -> Vec<String> {
        notes(decision)
            .into_iter()
            .filter(|note| note.starts_with("RequestIgnored"))
            .collect()
    }

    /// The status that matters for what a request did: without the request fields and the
    /// timeline (where an accepted request is noted).
    fn outcome_of(status: &ReleaseStatus) -> ReleaseStatus {
        ReleaseStatus {
            request: None,
            handled_request: None,
            timeline: vec![],
            // The ready-pod count is refreshed by any status write, the request's included
            // (`rollout::scale`): it is not an outcome of the request.
            replicas: None,
            ..status.clone()
        }
    }

    /// What the controller did shows `effect`.
    fn shows(
        effect: Effect,
        before: &ReleaseStatus,
        after: &ReleaseStatus,
        spec_revision: &str,
    ) -> bool {
        match effect {
            Effect::RollBack => {
                after.phase == Some(Phase::RolledBack)
                    && after.history.first().map(|e| e.outcome) == Some(Outcome::Aborted)
            }
            Effect::Retry => {
                after.rolled_back_revision.is_none()
                    && after.canary_revision.as_deref() == Some(spec_revision)
            }
            Effect::PromoteWithoutCanary | Effect::SkipToPromotion => {
                after.stable_revision.as_deref() == Some(spec_revision)
                    && before.stable_revision.as_deref() != Some(spec_revision)
            }
            Effect::StartDespiteBudget => after.canary_revision.as_deref() == Some(spec_revision),
            Effect::ReleaseHold => after
                .analysis
                .as_ref()
                .is_some_and(|a| a.consecutive_inconclusive == 0),
            Effect::FinishStep => {
                after.current_step > before.current_step
                    || after.stable_revision.as_deref() == Some(spec_revision)
            }
        }
    }

    #[test]
    fn the_controller_acts_on_what_the_cli_accepts_and_ignores_what_it_refuses() {
        let mut effects_seen = std::collections::BTreeSet::new();
        let mut refusals = 0;
        for (state, sim) in reached() {
            let spec_revision = template_revision(&sim.release.spec.template);
            for action in ACTIONS {
                let case = format!("{state}, {}", action.verb());
                let before = sim.status().clone();
                let mut without = sim.clone();
                let untouched = without.tick(0);
                let mut with = sim.clone();
                match crate::cli::request::build_request(
                    &with.release,
                    action,
                    with.now,
                    Some("sre@example.com".into()),
                ) {
                    Ok(mut request) => {
                        request.id = "cli".into();
                        with.release.status.as_mut().unwrap().request = Some(request);
                        let decision = with.tick(0);
                        assert_eq!(ignored(&decision), Vec::<String>::new(), "{case}");
                        assert_eq!(
                            with.status().handled_request.as_deref(),
                            Some("cli"),
                            "{case}"
                        );
                        let effect = judge(&sim.release, action).unwrap().effect;
                        assert!(
                            shows(effect, &before, with.status(), &spec_revision),
                            "{case}: {effect:?} not done: {:?} {:?}",
                            with.status().phase,
                            with.status().message
                        );
                        assert_ne!(
                            outcome_of(with.status()),
                            outcome_of(&untouched.status),
                            "{case}: the request changed nothing"
                        );
                        effects_seen.insert(format!("{effect:?}"));
                    }
                    Err(refusal) => {
                        refusals += 1;
                        let text = refusal.to_string();
                        assert!(
                            text.starts_with(&format!("cannot {} shop/checkout: ", action.verb())),
                            "{case}: {text}"
                        );
                        let instead = &refusal.instead;
                        assert!(
                            ["`waymark ", "spec.template", "nothing to do"]
                                .iter()
                                .any(|what| instead.contains(what)),
                            "{case}: says what to do instead: {text}"
                        );
                        // The same request written by other means (kubectl, an older CLI):
                        // the controller ignores it, says why, and nothing moves.
                        let position = position(&sim.release.spec, sim.status());
                        with.release.status.as_mut().unwrap().request = Some(ManualRequest {
                            id: "by-hand".into(),
                            action,
                            revision: position.revision,
                            stage: None,
                            step: None,
                            requested_at: Time(with.now),
                            requested_by: None,
                        });
                        let decision = with.tick(0);
                        let ignored = ignored(&decision);
                        assert_eq!(ignored.len(), 1, "{case}: {:?}", notes(&decision));
                        assert!(
                            ignored[0].contains(&refusal.why),
                            "{case}: {ignored:?} vs {text}"
                        );
                        assert_eq!(
                            outcome_of(with.status()),
                            outcome_of(without.status()),
                            "{case}: an ignored request changes nothing"
                        );
                    }
                }
            }
        }
        assert_eq!(
            effects_seen.len(),
            7,
            "every effect exercised: {effects_seen:?}"
        );
        assert!(refusals > 20, "{refusals}");
    }
}
