//! The analysis gate: runs folded into the status, the limits that roll a canary back or hold
//! it, and the verdicts that keep its traffic from rising.

use std::time::Duration as StdDuration;

use k8s_openapi::jiff::Timestamp;

use super::{Decider, Stage, plus, stage, whole_second};
use crate::analysis::fold;
use crate::analysis::format::format_burn;
use crate::api::{Analysis, AnalysisStatus, Outcome, Release, ReleaseSpec, ReleaseStatus, Verdict};
use crate::rollout::stage::inconclusive_hold;
use crate::rollout::{Severity, timeline};

/// How far after `steps_started + interval` a Release's first analysis run comes: a fixed
/// share of a quarter of the interval, from a hash of the Release's namespace and name. Many
/// Releases shipped at once then query Prometheus spread over the interval instead of all at
/// the same second, and each keeps its own phase run after run.
pub(in crate::rollout) fn analysis_offset(release: &Release) -> StdDuration {
    let Some(analysis) = release.spec.analysis.as_ref() else {
        return StdDuration::ZERO;
    };
    let key = format!(
        "{}/{}",
        release.metadata.namespace.as_deref().unwrap_or_default(),
        release.metadata.name.as_deref().unwrap_or_default()
    );
    // FNV-1a: stable across processes and versions (std's hasher is not).
    let hash = key.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    let quarter_ms = u64::try_from(analysis.interval.as_std().as_millis() / 4).unwrap_or(u64::MAX);
    StdDuration::from_millis(hash % quarter_ms.max(1))
}

/// When the next analysis run is due, if one is wanted at all: every `interval` from the
/// canary's first step (plus the Release's [`analysis_offset`]) until promotion, and for a
/// pending revision under a budget policy whenever the budget figure is older than one interval.
pub(in crate::rollout) fn next_analysis_at(
    spec: &ReleaseSpec,
    spec_revision: &str,
    status: &ReleaseStatus,
    offset: StdDuration,
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
            match last {
                Some(last) => Some(plus(last, analysis.interval)),
                None => Some(
                    plus(started, analysis.interval)
                        .checked_add(
                            k8s_openapi::jiff::SignedDuration::try_from(offset).unwrap_or_default(),
                        )
                        .unwrap_or(Timestamp::MAX),
                ),
            }
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

/// A canary's verdict changed: the new verdict and the one before (`None`: its first), the
/// numbers it rests on (the highest burn against its limit, the error budget left) and the
/// run's summary, so that the log alone says why the canary moves on, waits or goes back.
fn verdict_note(
    revision: &str,
    before: Option<Verdict>,
    now: &AnalysisStatus,
    analysis: Option<&Analysis>,
) -> String {
    let was = before.map_or_else(|| "first run".to_string(), |v| format!("was {v}"));
    let burn = now
        .canary
        .iter()
        .flat_map(|role| role.windows.iter())
        .filter_map(|w| w.burn_rate.map(|burn| (burn, w.max, &w.window)))
        .max_by(|a, b| (a.0 / a.1).total_cmp(&(b.0 / b.1)))
        .map_or_else(
            || "burn unknown".to_string(),
            |(burn, max, window)| {
                format!(
                    "burn {} over {window} (limit {})",
                    format_burn(burn),
                    format_burn(max)
                )
            },
        );
    let policy = analysis.and_then(|a| a.slo.budget.as_ref());
    let budget = match (now.error_budget_remaining, policy) {
        (Some(left), Some(policy)) => format!(
            "error budget {:.0}% left (new revisions held below {:.0}%)",
            left * 100.0,
            policy.freeze_below * 100.0
        ),
        (Some(left), None) => format!("error budget {:.0}% left", left * 100.0),
        (None, Some(_)) => "error budget not known".to_string(),
        (None, None) => "no error-budget policy".to_string(),
    };
    let summary = now
        .summary
        .as_deref()
        .filter(|s| !s.is_empty())
        .map(|s| format!("; {s}"))
        .unwrap_or_default();
    format!(
        "analysis of canary {revision}: {} ({was}), {burn}, {budget}{summary}",
        now.verdict
    )
}

impl Decider<'_> {
    /// Fold this reconcile's analysis run into the status. A run of another revision than the
    /// one under judgement, an old run, and runs after promotion began are ignored.
    pub(super) fn fold_analysis(&mut self) {
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
        let folded = fold::fold(self.status.analysis.as_ref(), run, counting);
        if counting {
            // The first run of a failing (or erroring) streak keeps its queries for the
            // post-mortem, and so does the streak's first failing run when errors began it:
            // the post-mortem shows the values that went past their limits, not only a query
            // that could not be answered. The others are compact.
            let streak_starts =
                folded.failing_since.is_some() && folded.failing_since == folded.last_run_at;
            let first_failing_after_errors = folded.verdict == Verdict::Failing
                && !self.status.timeline.iter().any(|entry| {
                    entry.verdict == Some(Verdict::Failing)
                        && folded
                            .failing_since
                            .as_ref()
                            .is_some_and(|since| entry.at.0 >= since.0)
                });
            let entry = if streak_starts || first_failing_after_errors {
                timeline::first_failure(&folded, self.spec.analysis.as_ref())
            } else {
                timeline::analysis_run(&folded, self.spec.analysis.as_ref())
            };
            self.note(entry);
            let before = self
                .status
                .analysis
                .as_ref()
                .filter(|a| a.revision == folded.revision)
                .map(|a| a.verdict);
            if before != Some(folded.verdict) {
                let note = verdict_note(&current, before, &folded, self.spec.analysis.as_ref());
                self.narrate(Severity::Normal, "VerdictChanged", note);
            }
        }
        self.status.analysis = Some(folded);
    }

    /// Roll the canary back when `failureLimit` failing or `errorLimit` erroring runs came in a
    /// row; true when it did.
    pub(super) fn rolled_back_by_analysis(&mut self, revision: &str) -> bool {
        let Some(limits) = self.spec.analysis.as_ref() else {
            return false;
        };
        let (failure_limit, error_limit) = (limits.failure_limit.max(1), limits.error_limit.max(1));
        let Some(analysis) = self.analysis_of(revision) else {
            return false;
        };
        let (reason, message) = if analysis.consecutive_failures >= failure_limit {
            (
                "AnalysisFailing",
                format!(
                    "{} failing analyses in a row (failureLimit {failure_limit}): {}",
                    analysis.consecutive_failures,
                    fold::failure_detail(analysis)
                ),
            )
        } else if analysis.consecutive_errors >= error_limit {
            (
                "AnalysisError",
                format!(
                    "{} analysis errors in a row (errorLimit {error_limit}): {}",
                    analysis.consecutive_errors,
                    fold::failure_detail(analysis)
                ),
            )
        } else {
            return false;
        };
        self.rollback(Outcome::RolledBack, reason, message);
        true
    }

    /// Whether `inconclusiveLimit` inconclusive runs in a row hold the canary. The hold needs no
    /// state of its own: a run with another verdict resets the counter and so ends it (a
    /// passing one lets the canary go on; a failing or erroring one keeps it held by
    /// [`Self::evidence_missing`] and counts toward `failureLimit` or `errorLimit`).
    pub(super) fn inconclusive_hold(&self, canary: &str) -> bool {
        inconclusive_hold(self.spec, &self.status, canary)
    }

    /// Whether step `index` comes before any step has given the canary traffic. Up to and
    /// including its first step that exposes it (a `setWeight` above 0, a cohort or a mirror
    /// added), a canary has had no traffic to be judged by, so no analysis can have passed:
    /// those steps are the only ones that move without evidence.
    fn before_first_traffic(&self, index: usize) -> bool {
        self.spec.steps[..index.min(self.steps_len())]
            .iter()
            .all(|step| !step.exposes_canary())
    }

    /// Why step `index` may not raise the canary's traffic or pods, or end its timed pause, now;
    /// `None` when it may. With `spec.analysis`, once a step has given the canary traffic, that
    /// needs the latest run on the canary since its steps began to be Passing: missing data
    /// (Inconclusive), a failure and an error all hold the canary where it is. The words name
    /// the latest verdict and its summary, or that no run has come yet.
    pub(super) fn evidence_missing(&self, revision: &str, index: usize) -> Option<String> {
        self.spec.analysis.as_ref()?;
        if self.before_first_traffic(index) || self.passed_since_steps_began(revision) {
            return None;
        }
        Some(match self.latest_since_steps_began(revision) {
            Some(analysis) => match analysis.summary.as_deref().filter(|s| !s.is_empty()) {
                Some(summary) => format!("latest analysis {}: {summary}", analysis.verdict),
                None => format!("latest analysis {}", analysis.verdict),
            },
            None => match next_analysis_at(
                self.spec,
                &self.spec_revision,
                &self.status,
                self.analysis_offset,
            ) {
                Some(due) => format!(
                    "no analysis has run yet (the first is due at {})",
                    whole_second(due)
                ),
                None => "no analysis has run yet".to_string(),
            },
        })
    }

    /// The reason a canary held by [`Self::evidence_missing`] reports: the latest verdict, or
    /// `WaitingForAnalysis` before the first run.
    pub(super) fn evidence_reason(&self, revision: &str) -> String {
        self.latest_since_steps_began(revision).map_or_else(
            || "WaitingForAnalysis".to_string(),
            |a| format!("Analysis{}", a.verdict),
        )
    }

    /// The latest run on `revision`, if it came after the canary's steps began.
    fn latest_since_steps_began(&self, revision: &str) -> Option<&AnalysisStatus> {
        let started = self.status.steps_started_at.as_ref().map(|t| t.0);
        self.analysis_of(revision)
            .filter(|a| a.last_run_at.as_ref().map(|t| t.0) >= started)
    }

    /// Whether the latest run came after the canary's steps began and passed (the gate to
    /// every raise after the first traffic, and to promotion).
    pub(super) fn passed_since_steps_began(&self, revision: &str) -> bool {
        self.latest_since_steps_began(revision)
            .is_some_and(|a| a.verdict == Verdict::Passing)
    }

    /// `; <summary of the latest run>` for messages, or nothing.
    pub(super) fn analysis_summary(&self, revision: &str) -> String {
        self.analysis_of(revision)
            .and_then(|a| a.summary.as_deref())
            .filter(|s| !s.is_empty())
            .map(|s| format!("; {s}"))
            .unwrap_or_default()
    }
}
