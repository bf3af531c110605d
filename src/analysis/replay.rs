//! Replay: the Release's analysis over a stretch of Prometheus history, as if a canary had run
//! then. Pure: the runs come in already judged (by [`super::judge::judge`], the same function
//! the controller's runs go through, fed by one instant of range queries), and this module
//! folds them into the consecutive-run counters (with the fold the rollout core uses, [`super::fold`]), applies
//! `failureLimit`, `errorLimit` and `inconclusiveLimit` ([`super::limits`]) and walks the
//! canary's steps to say when a rollback or a promotion would have happened.
//!
//! The walk follows the rules the README states for a canary: the canary starts (available)
//! at the first run; the steps up to its first `setWeight` above 0 move without evidence;
//! after that, a `setWeight` that would raise the weight, and the end of a timed pause, wait
//! for the latest run to be Passing (held); a timed pause ends `duration` after its step began,
//! when the controller wakes, or at the first passing run after that; a pause without duration
//! waits for `waymark promote`, which replay never assumes; `inconclusiveLimit` inconclusive
//! runs in a row hold the steps; after the last step the first Passing run promotes.

use k8s_openapi::jiff::Timestamp;

use super::AnalysisRun;
use super::fold::{failure_detail, fold};
use super::limits::{LimitReached, limit_reached};
use crate::api::{Analysis, AnalysisStatus, Step, Verdict};

/// The consecutive-run counters after one run.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Counters {
    /// Failing runs in a row.
    pub failures: i32,
    /// Inconclusive runs in a row.
    pub inconclusive: i32,
    /// Erroring runs in a row.
    pub errors: i32,
}

/// Something the canary would have done.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "event")]
pub enum ReplayEvent {
    /// A `setWeight` step took effect.
    WeightSet {
        /// When.
        at: Timestamp,
        /// The step, 1-based.
        step: usize,
        /// Percent of traffic on the canary from then on.
        weight: i32,
    },
    /// A timed pause ended.
    PauseEnded {
        /// When.
        at: Timestamp,
        /// The step, 1-based.
        step: usize,
    },
    /// A step waits at `weight` for a passing run: a `setWeight` that would raise the
    /// weight, or a timed pause whose time is up, while the latest run is not Passing.
    WeightHeld {
        /// When the hold began.
        at: Timestamp,
        /// The step, 1-based.
        step: usize,
        /// The weight the canary stays at.
        weight: i32,
        /// The verdict holding it.
        verdict: Verdict,
    },
    /// `inconclusiveLimit` inconclusive runs in a row hold the steps.
    InconclusiveHold {
        /// When the hold began.
        at: Timestamp,
        /// Why, with the count and the limit.
        message: String,
    },
    /// A pause without duration: the canary waits for `waymark promote` from here.
    WaitsForPromote {
        /// Since when.
        at: Timestamp,
        /// The step, 1-based.
        step: usize,
    },
    /// The canary would have been rolled back.
    RolledBack {
        /// When.
        at: Timestamp,
        /// `AnalysisFailing` or `AnalysisError`.
        reason: String,
        /// The message the Release's status would have shown.
        message: String,
    },
    /// The canary would have been promoted.
    Promoted {
        /// When.
        at: Timestamp,
    },
}

impl ReplayEvent {
    /// When it happened.
    pub fn at(&self) -> Timestamp {
        match self {
            ReplayEvent::WeightSet { at, .. }
            | ReplayEvent::PauseEnded { at, .. }
            | ReplayEvent::WeightHeld { at, .. }
            | ReplayEvent::InconclusiveHold { at, .. }
            | ReplayEvent::WaitsForPromote { at, .. }
            | ReplayEvent::RolledBack { at, .. }
            | ReplayEvent::Promoted { at } => *at,
        }
    }
}

/// One analysis run of the replay and where the canary stood after it.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayStep {
    /// The judged run.
    pub run: AnalysisRun,
    /// The counters after folding it.
    pub counters: Counters,
    /// The step in progress after it, 0-based (the number of steps once all are done).
    pub step: usize,
    /// Percent of traffic on the canary after it.
    pub weight: i32,
    /// What the canary did since the previous run, up to and including this one, in order.
    pub events: Vec<ReplayEvent>,
    /// True once the canary was rolled back or promoted at an earlier run: the run is shown
    /// for tuning, but no longer changes the outcome.
    pub after_outcome: bool,
}

/// How the replayed canary ends.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
#[serde(rename_all = "camelCase", tag = "outcome")]
pub enum ReplayOutcome {
    /// Rolled back by failureLimit or errorLimit.
    RolledBack {
        /// When.
        at: Timestamp,
        /// `AnalysisFailing` or `AnalysisError`.
        reason: String,
        /// The status message, with the failing numbers.
        message: String,
        /// When the run of failing (or erroring) verdicts that led to it began.
        #[serde(skip_serializing_if = "Option::is_none")]
        failing_since: Option<Timestamp>,
    },
    /// Promoted after its last step.
    Promoted {
        /// When.
        at: Timestamp,
    },
    /// Neither by the end of the replay: where it stood.
    Undecided {
        /// The step in progress, 0-based (the number of steps once all are done).
        step: usize,
        /// Percent of traffic on the canary.
        weight: i32,
        /// Why it had not moved on, in words.
        waiting_for: String,
    },
}

/// The replay: every run and the outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Replay {
    /// One entry per run, in time order.
    pub steps: Vec<ReplayStep>,
    /// How the canary ends.
    pub outcome: ReplayOutcome,
}

/// The canary's place in its steps while replaying.
struct Walk<'a> {
    steps: &'a [Step],
    step: usize,
    step_started: Timestamp,
    weight: i32,
    events: Vec<ReplayEvent>,
    outcome: Option<ReplayOutcome>,
    /// The step and kind of the last hold or wait announced, so each is announced once.
    announced: Option<(usize, &'static str)>,
}

impl Walk<'_> {
    fn announce(&mut self, kind: &'static str, event: ReplayEvent) {
        if self.announced != Some((self.step, kind)) {
            self.announced = Some((self.step, kind));
            self.events.push(event);
        }
    }

    /// The end of the timed pause in progress, if that is what the canary is in.
    fn pause_end(&self) -> Option<Timestamp> {
        let duration = self.steps.get(self.step)?.pause.as_ref()?.duration?;
        self.step_started.checked_add(duration.as_signed()).ok()
    }

    /// Whether the step in progress comes before any step has given the canary traffic (a
    /// weight above 0, a cohort or a mirror), so it needs no passing run to raise the weight,
    /// add a cohort or end its pause.
    fn before_first_traffic(&self) -> bool {
        self.steps[..self.step.min(self.steps.len())]
            .iter()
            .all(|step| !step.exposes_canary())
    }

    /// Moves through every step that can finish at `now` with `verdict` the latest.
    fn advance(&mut self, now: Timestamp, verdict: Verdict) {
        while self.outcome.is_none() {
            let Some(step) = self.steps.get(self.step) else {
                if verdict == Verdict::Passing {
                    self.events.push(ReplayEvent::Promoted { at: now });
                    self.outcome = Some(ReplayOutcome::Promoted { at: now });
                }
                return;
            };
            let number = self.step + 1;
            let evidence = verdict == Verdict::Passing || self.before_first_traffic();
            let held = ReplayEvent::WeightHeld {
                at: now,
                step: number,
                weight: self.weight,
                verdict,
            };
            if step.is_route_step() {
                // A cohort or mirror added is new exposure, held like a higher weight; the
                // weight itself does not move.
                if step.exposes_canary() && !evidence {
                    self.announce("held", held);
                    return;
                }
            } else if let Some(weight) = step.set_weight {
                let weight = weight.clamp(0, 100);
                if weight > self.weight && !evidence {
                    self.announce("held", held);
                    return;
                }
                self.weight = weight;
                self.events.push(ReplayEvent::WeightSet {
                    at: now,
                    step: number,
                    weight,
                });
            } else if let Some(pause) = &step.pause {
                match pause.duration {
                    Some(_) => match self.pause_end() {
                        Some(end) if end <= now && !evidence => {
                            self.announce("held", held);
                            return;
                        }
                        Some(end) if end <= now => {
                            self.events.push(ReplayEvent::PauseEnded {
                                at: now,
                                step: number,
                            });
                        }
                        _ => return,
                    },
                    None => {
                        let wait = ReplayEvent::WaitsForPromote {
                            at: now,
                            step: number,
                        };
                        self.announce("promote", wait);
                        return;
                    }
                }
            }
            self.step += 1;
            self.step_started = now;
        }
    }

    /// Finishes the timed pauses that end before `before`, each at its own end, as the
    /// controller wakes for them, with `verdict` the latest.
    fn advance_until(&mut self, before: Timestamp, verdict: Verdict) {
        while self.outcome.is_none() {
            match self.pause_end() {
                Some(end) if end < before => {
                    let step = self.step;
                    self.advance(end, verdict);
                    if self.step == step {
                        return;
                    }
                }
                _ => return,
            }
        }
    }

    fn waiting_for(
        &self,
        held_by: Option<LimitReached>,
        latest: Option<Verdict>,
        last_run: Option<Timestamp>,
    ) -> String {
        if let Some(limit) = held_by {
            return format!("held: {limit}");
        }
        match self.steps.get(self.step) {
            None => format!(
                "all steps done, waiting for a passing analysis (latest: {})",
                latest.map_or("none".to_string(), |v| v.to_string())
            ),
            Some(step) if step.set_weight.is_some() => format!(
                "step {} held at {}% while the latest analysis is {}",
                self.step + 1,
                self.weight,
                latest.map_or("none".to_string(), |v| v.to_string())
            ),
            Some(step) => match step.pause.as_ref().and_then(|pause| pause.duration) {
                Some(duration) if self.pause_end() <= last_run => format!(
                    "step {}: pause {duration} over, held at {}% while the latest analysis is {}",
                    self.step + 1,
                    self.weight,
                    latest.map_or("none".to_string(), |v| v.to_string())
                ),
                Some(duration) => format!("step {}: pause {duration} not over", self.step + 1),
                None => format!("step {}: waits for `waymark promote`", self.step + 1),
            },
        }
    }
}

/// Folds `runs` (judged, in time order) into a replay of the canary under `analysis`'s limits
/// and `steps`; see the module documentation for the walk.
pub fn replay(analysis: &Analysis, steps: &[Step], runs: Vec<AnalysisRun>) -> Replay {
    let start = runs.first().map_or(Timestamp::UNIX_EPOCH, |run| run.ran_at);
    let mut walk = Walk {
        steps,
        step: 0,
        step_started: start,
        weight: 0,
        events: Vec::new(),
        outcome: None,
        announced: None,
    };
    let mut status: Option<AnalysisStatus> = None;
    let mut held_by = None;
    let mut replayed = Vec::with_capacity(runs.len());
    for run in runs {
        // Between runs the controller wakes for the end of a timed pause and moves on with the
        // latest verdict, unless the inconclusive hold keeps the steps where they are.
        if let Some(latest) = status.as_ref().map(|s| s.verdict)
            && held_by.is_none()
        {
            walk.advance_until(run.ran_at, latest);
        }
        let after_outcome = walk.outcome.is_some();
        let folded = fold(status.as_ref(), &run, true);
        if !after_outcome {
            held_by = None;
            match limit_reached(&folded, analysis) {
                Some(limit) if limit.rolls_back() => {
                    let message = format!("{limit}: {}", failure_detail(&folded));
                    walk.events.push(ReplayEvent::RolledBack {
                        at: run.ran_at,
                        reason: limit.reason().to_string(),
                        message: message.clone(),
                    });
                    walk.outcome = Some(ReplayOutcome::RolledBack {
                        at: run.ran_at,
                        reason: limit.reason().to_string(),
                        message,
                        failing_since: folded.failing_since.as_ref().map(|t| t.0),
                    });
                }
                Some(limit) => {
                    held_by = Some(limit);
                    let hold = ReplayEvent::InconclusiveHold {
                        at: run.ran_at,
                        message: limit.to_string(),
                    };
                    walk.announce("inconclusive", hold);
                }
                None => walk.advance(run.ran_at, folded.verdict),
            }
        }
        replayed.push(ReplayStep {
            counters: Counters {
                failures: folded.consecutive_failures,
                inconclusive: folded.consecutive_inconclusive,
                errors: folded.consecutive_errors,
            },
            step: walk.step,
            weight: walk.weight,
            events: std::mem::take(&mut walk.events),
            after_outcome,
            run,
        });
        status = Some(folded);
    }
    let outcome = walk
        .outcome
        .clone()
        .unwrap_or_else(|| ReplayOutcome::Undecided {
            step: walk.step,
            weight: walk.weight,
            waiting_for: walk.waiting_for(
                held_by,
                status.as_ref().map(|s| s.verdict),
                status
                    .as_ref()
                    .and_then(|s| s.last_run_at.as_ref())
                    .map(|t| t.0),
            ),
        });
    Replay {
        steps: replayed,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::judge::error_run;

    fn analysis(failure: i32, inconclusive: i32, error: i32) -> Analysis {
        let mut analysis: Analysis = serde_saphyr::from_str(
            "{interval: 30s, prometheus: {address: 'http://p:9090'}, slo: {objective: 99.9, errorQuery: e, totalQuery: t, burnRates: [{long: 5m, short: 1m, max: 14.4}]}}",
        )
        .unwrap();
        analysis.failure_limit = failure;
        analysis.inconclusive_limit = inconclusive;
        analysis.error_limit = error;
        analysis
    }

    fn steps(yaml: &str) -> Vec<Step> {
        serde_saphyr::from_str(yaml).unwrap()
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    /// Runs every 30 seconds from `at(0)` with these verdicts (P, F, I, E).
    fn runs(verdicts: &str) -> Vec<AnalysisRun> {
        verdicts
            .chars()
            .enumerate()
            .map(|(index, letter)| {
                let verdict = match letter {
                    'P' => Verdict::Passing,
                    'F' => Verdict::Failing,
                    'I' => Verdict::Inconclusive,
                    _ => Verdict::Error,
                };
                let mut run = error_run(
                    format!("run {index}: {verdict}"),
                    Some("6f9c7d".into()),
                    at(30 * index as i64),
                );
                run.verdict = verdict;
                run
            })
            .collect()
    }

    fn events(replay: &Replay) -> Vec<String> {
        replay
            .steps
            .iter()
            .flat_map(|step| step.events.iter())
            .map(|event| {
                let offset = event.at().as_second() - at(0).as_second();
                match event {
                    ReplayEvent::WeightSet { step, weight, .. } => {
                        format!("+{offset}s step {step} weight {weight}")
                    }
                    ReplayEvent::PauseEnded { step, .. } => {
                        format!("+{offset}s step {step} pause over")
                    }
                    ReplayEvent::WeightHeld {
                        step,
                        weight,
                        verdict,
                        ..
                    } => {
                        format!("+{offset}s step {step} held at {weight} ({verdict})")
                    }
                    ReplayEvent::InconclusiveHold { .. } => format!("+{offset}s inconclusive hold"),
                    ReplayEvent::WaitsForPromote { step, .. } => {
                        format!("+{offset}s step {step} waits for promote")
                    }
                    ReplayEvent::RolledBack { reason, .. } => {
                        format!("+{offset}s rolled back {reason}")
                    }
                    ReplayEvent::Promoted { .. } => format!("+{offset}s promoted"),
                }
            })
            .collect()
    }

    #[test]
    fn consecutive_failures_reaching_the_limit_roll_back_at_that_run() {
        let replay = replay(
            &analysis(2, 6, 4),
            &steps("[{setWeight: 10}, {pause: {}}]"),
            runs("PPFPFFPP"),
        );
        let ReplayOutcome::RolledBack {
            at: when,
            reason,
            message,
            failing_since,
        } = &replay.outcome
        else {
            panic!("{:?}", replay.outcome);
        };
        // The lone failure at +60s is broken by a pass; the pair at +120s and +150s rolls back.
        assert_eq!(*when, at(150));
        assert_eq!(reason, "AnalysisFailing");
        assert!(
            message.starts_with("2 failing analyses in a row (failureLimit 2): run 5"),
            "{message}"
        );
        assert_eq!(*failing_since, Some(at(120)));
        let counters: Vec<i32> = replay.steps.iter().map(|s| s.counters.failures).collect();
        assert_eq!(counters, [0, 0, 1, 0, 1, 2, 0, 0]);
        assert!(replay.steps[6].after_outcome && !replay.steps[5].after_outcome);
        assert_eq!(
            events(&replay),
            [
                "+0s step 1 weight 10",
                "+0s step 2 waits for promote",
                "+150s rolled back AnalysisFailing"
            ]
        );
    }

    #[test]
    fn errors_roll_back_on_the_error_limit() {
        let replay = replay(&analysis(2, 6, 3), &steps("[{pause: {}}]"), runs("PEEFEEE"));
        // Failing breaks the error run: E E F E E E reaches 3 only at the last run.
        let ReplayOutcome::RolledBack {
            at: when, reason, ..
        } = &replay.outcome
        else {
            panic!("{:?}", replay.outcome);
        };
        assert_eq!((*when, reason.as_str()), (at(180), "AnalysisError"));
    }

    #[test]
    fn timed_pauses_end_on_time_and_a_passing_run_after_the_last_step_promotes() {
        // Pause 1m: ends at +60s between nothing (runs every 30s land on it), then setWeight 50,
        // then pause 45s ends at +105s, between runs; promoted there on the latest Passing.
        let replay = replay(
            &analysis(2, 6, 4),
            &steps(
                "[{setWeight: 10}, {pause: {duration: 1m}}, {setWeight: 50}, {pause: {duration: 45s}}]",
            ),
            runs("PPPPPP"),
        );
        assert_eq!(replay.outcome, ReplayOutcome::Promoted { at: at(105) });
        assert_eq!(
            events(&replay),
            [
                "+0s step 1 weight 10",
                "+60s step 2 pause over",
                "+60s step 3 weight 50",
                "+105s step 4 pause over",
                "+105s promoted"
            ]
        );
        assert_eq!(replay.steps[2].weight, 50);
        assert_eq!(replay.steps[0].weight, 10);
    }

    #[test]
    fn a_failing_run_holds_a_weight_increase_until_it_passes() {
        let replay = replay(
            &analysis(3, 6, 4),
            &steps("[{setWeight: 10}, {setWeight: 50}]"),
            runs("FFPP"),
        );
        // +0s: the first step is the canary's first traffic and needs no evidence; Failing
        // holds the raise to 50%; +30s still failing; +60s passes: the raise, and promotion on
        // the same passing run, as in the rollout core.
        assert_eq!(
            events(&replay),
            [
                "+0s step 1 weight 10",
                "+0s step 2 held at 10 (Failing)",
                "+60s step 2 weight 50",
                "+60s promoted"
            ]
        );
        assert_eq!(replay.outcome, ReplayOutcome::Promoted { at: at(60) });
    }

    #[test]
    fn a_cohort_added_after_the_first_traffic_is_held_until_a_run_passes() {
        let replay = replay(
            &analysis(3, 6, 4),
            &steps(
                "[{setHeaderRoute: {name: beta, match: {headers: [{name: x-canary, value: 'true'}]}}}, \
                  {setWeight: 10}]",
            ),
            runs("FFPP"),
        );
        // The cohort is the canary's first traffic: no evidence needed; the weight after it is
        // new exposure, held while Failing.
        assert_eq!(
            events(&replay),
            [
                "+0s step 2 held at 0 (Failing)",
                "+60s step 2 weight 10",
                "+60s promoted"
            ]
        );
        let replay = replay_of_cohort_after_weight();
        assert_eq!(
            events(&replay),
            [
                "+0s step 1 weight 10",
                "+0s step 2 held at 10 (Failing)",
                "+60s promoted"
            ]
        );
    }

    fn replay_of_cohort_after_weight() -> Replay {
        replay(
            &analysis(3, 6, 4),
            &steps(
                "[{setWeight: 10}, \
                  {setHeaderRoute: {name: beta, match: {headers: [{name: x-canary, value: 'true'}]}}}]",
            ),
            runs("FFPP"),
        )
    }

    #[test]
    fn inconclusive_runs_hold_the_steps_and_a_conclusive_run_releases_them() {
        let replay = replay(
            &analysis(2, 2, 4),
            &steps("[{setWeight: 10}, {pause: {duration: 30s}}, {setWeight: 20}]"),
            runs("IIIP"),
        );
        // +0s: first step; +30s: the pause is over (it ended at +30s, handled at that run's
        // advance) but two inconclusive runs hold; +60s still held; +90s passes: on, promoted.
        assert_eq!(
            events(&replay),
            [
                "+0s step 1 weight 10",
                "+30s inconclusive hold",
                "+90s step 2 pause over",
                "+90s step 3 weight 20",
                "+90s promoted"
            ]
        );
    }

    #[test]
    fn a_replay_that_ends_mid_steps_says_what_the_canary_waits_for() {
        let replay = replay(
            &analysis(2, 2, 4),
            &steps("[{setWeight: 10}, {pause: {}}]"),
            runs("PPP"),
        );
        assert_eq!(
            replay.outcome,
            ReplayOutcome::Undecided {
                step: 1,
                weight: 10,
                waiting_for: "step 2: waits for `waymark promote`".into()
            }
        );
        let held = replay_inconclusive();
        assert_eq!(
            held.outcome,
            ReplayOutcome::Undecided {
                step: 1,
                weight: 10,
                waiting_for:
                    "held: inconclusiveLimit 2 reached (the last 2 analyses were inconclusive)"
                        .into()
            }
        );
    }

    /// The first inconclusive run lets the first step through; the second holds the rest.
    fn replay_inconclusive() -> Replay {
        replay(
            &analysis(2, 2, 4),
            &steps("[{setWeight: 10}, {pause: {duration: 1m}}, {setWeight: 20}]"),
            runs("II"),
        )
    }

    #[test]
    fn an_empty_replay_is_undecided_at_the_start() {
        let replay = replay(&analysis(2, 6, 4), &steps("[{setWeight: 10}]"), Vec::new());
        assert!(replay.steps.is_empty());
        assert!(matches!(
            replay.outcome,
            ReplayOutcome::Undecided {
                step: 0,
                weight: 0,
                ..
            }
        ));
    }

    #[test]
    fn without_a_passing_run_no_raise_and_no_timed_pause_ends_after_the_first_traffic() {
        let steps = steps(
            "[{pause: {duration: 30s}}, {setWeight: 10}, {pause: {duration: 30s}}, {setWeight: 50}]",
        );
        struct Case {
            runs: &'static str,
            events: &'static [&'static str],
        }
        let cases = [
            // No data throughout: the pause at 0% and the first traffic go by; the pause at
            // 10% is over at +60s but never ends.
            Case {
                runs: "IIIIII",
                events: &[
                    "+30s step 1 pause over",
                    "+30s step 2 weight 10",
                    "+60s step 3 held at 10 (Inconclusive)",
                ],
            },
            // Errors, then a pass at +120s: the held pause ends there, and the raise with it.
            Case {
                runs: "PEEEPP",
                events: &[
                    "+30s step 1 pause over",
                    "+30s step 2 weight 10",
                    "+60s step 3 held at 10 (Error)",
                    "+120s step 3 pause over",
                    "+120s step 4 weight 50",
                    "+120s promoted",
                ],
            },
        ];
        for case in cases {
            let replay = replay(&analysis(2, 100, 100), &steps, runs(case.runs));
            assert_eq!(events(&replay), case.events, "{}", case.runs);
        }
        let held = replay(&analysis(2, 100, 100), &steps, runs("IIIIII"));
        assert_eq!(
            held.outcome,
            ReplayOutcome::Undecided {
                step: 2,
                weight: 10,
                waiting_for:
                    "step 3: pause 30s over, held at 10% while the latest analysis is Inconclusive"
                        .into()
            }
        );
    }
}
