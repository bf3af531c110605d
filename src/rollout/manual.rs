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

use super::decide::{Stage, inconclusive_hold, stage};
use super::{history, validate};
use crate::api::{
    ManualAction, ManualRequest, Outcome, Release, ReleaseSpec, ReleaseStage, ReleaseStatus,
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
    /// `promote` on a canary held by `inconclusiveLimit`: the hold ends, the step stays.
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
        match action {
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
                if inconclusive_hold(self.spec, self.status, revision) {
                    return Ok((
                        Effect::ReleaseHold,
                        format!(
                            "the hold on inconclusive analysis of canary {revision} ends at {step}"
                        ),
                    ));
                }
                let index = usize::try_from(self.at.step.unwrap_or(0).max(0)).unwrap_or(0);
                if index < self.at.steps {
                    return Ok((
                        Effect::FinishStep,
                        format!("{step} of canary {revision} ends and the next step begins"),
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
        let go_back = "to go back, apply the previous template as a new revision (for example revert the template change in Git): it runs as a canary like any new revision";
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
