//! Two lanes for reconciles, so that a bad canary is not judged behind a fleet-wide deploy.
//!
//! A deploy to thousands of Releases at once queues thousands of reconciles, each waiting on
//! the API server's answers to its writes. In one queue, a canary whose analysis is due (the
//! run that finds it failing, and the rollback in the same reconcile) waited behind all of
//! them: at 10,000 Releases its rollback took up to minutes. So the kube-runtime `Controller`
//! starts every due reconcile at once (its concurrency is unbounded), and each waits here for
//! a permit of its lane: [`Lane::Urgent`] when an analysis of the Release is due,
//! [`Lane::Routine`] for everything else (new canaries, steps, promotions, clean-ups), until
//! its analysis falls due while it waits. Each lane bounds its own reconciles in flight, so the
//! routine ones cannot take the urgent ones' slots.
//! A waiting reconcile holds only its shared cached Release; once it has a permit it works on
//! the Release the cache holds then (see `reconcile::reconcile_cached`).

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{Semaphore, SemaphorePermit};

use super::cached::CachedRelease;
use crate::rollout;

/// Reconciles in flight in the routine lane: more than the cores, since reconciles mostly wait
/// on the API server's answers to writes.
pub const ROUTINE_SLOTS: usize = 32;
/// Reconciles in flight in the urgent lane. An urgent reconcile runs one analysis (Prometheus
/// queries, bounded by `context::ANALYSIS_SLOTS` too) and a few writes.
pub const URGENT_SLOTS: usize = 16;

/// Which lane a reconcile waits in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lane {
    /// An analysis of the Release's canary (or of a revision waiting on its error budget) is
    /// due: the reconcile that may take a bad canary's traffic away.
    Urgent,
    /// Anything else. A routine reconcile of a Release whose analysis falls due while it waits
    /// moves to the urgent lane then (`urgent_in` from the start of its wait): the reconcile
    /// the analysis is due in cannot start while this one waits, one reconcile per Release.
    Routine {
        /// How long until an analysis is due, if one is wanted.
        urgent_in: Option<std::time::Duration>,
    },
}

impl Lane {
    /// The lane of a reconcile of `release` at `now`. A Release that does not decode (a bug,
    /// reported by the reconcile itself) goes in the routine lane.
    pub fn of(release: &CachedRelease, now: Timestamp) -> Lane {
        let due = release
            .release()
            .ok()
            .and_then(|release| rollout::next_analysis_at(&release));
        match due {
            Some(due) if due <= now => Lane::Urgent,
            Some(due) => Lane::Routine {
                urgent_in: std::time::Duration::try_from(due.duration_since(now)).ok(),
            },
            None => Lane::Routine { urgent_in: None },
        }
    }
}

/// The permits of both lanes.
#[derive(Debug)]
pub struct Lanes {
    urgent: Semaphore,
    routine: Semaphore,
}

impl Default for Lanes {
    fn default() -> Lanes {
        Lanes::new(URGENT_SLOTS, ROUTINE_SLOTS)
    }
}

impl Lanes {
    /// Lanes of `urgent` and `routine` slots.
    pub fn new(urgent: usize, routine: usize) -> Lanes {
        Lanes {
            urgent: Semaphore::new(urgent),
            routine: Semaphore::new(routine),
        }
    }

    /// Wait for a slot in `lane` (first come, first served within the lane); the slot is
    /// given back when the permit drops. `None` only if the lane were closed, which it never
    /// is: the reconcile then runs without one rather than never.
    pub async fn enter(&self, lane: Lane) -> Option<SemaphorePermit<'_>> {
        match lane {
            Lane::Urgent => self.urgent.acquire().await.ok(),
            Lane::Routine { urgent_in: None } => self.routine.acquire().await.ok(),
            // Whichever comes first: a routine slot, or the analysis falling due (then an
            // urgent slot). The losing wait is dropped, and gives its place in line back.
            Lane::Routine {
                urgent_in: Some(wait),
            } => tokio::select! {
                permit = self.routine.acquire() => permit.ok(),
                permit = async {
                    tokio::time::sleep(wait).await;
                    self.urgent.acquire().await
                } => permit.ok(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Release, Verdict};
    use crate::fixtures::ReleaseBuilder;
    use crate::rollout::fixtures::{Sim, V2, at, run};
    use std::time::Duration;

    fn cached(release: &Release) -> CachedRelease {
        CachedRelease::try_from(release.clone()).unwrap()
    }

    const NEVER_URGENT: Lane = Lane::Routine { urgent_in: None };

    #[test]
    fn a_reconcile_is_urgent_exactly_when_an_analysis_is_due() {
        let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
        // Healthy on V1, a new template: no canary step has started, nothing to judge.
        assert_eq!(Lane::of(&cached(&sim.release), sim.now), NEVER_URGENT);
        sim.settle();
        let release = sim.release.clone();
        let status = release.status.as_ref().unwrap();
        assert!(status.steps_started_at.is_some(), "the canary's steps run");
        let due = crate::rollout::next_analysis_at(&release).expect("an analysis is wanted");
        // Every second from the canary's start to a minute later: urgent once the analysis is
        // due, before that routine until the instant it falls due.
        let mut seen = (false, false);
        for second in 0..60 {
            let now = sim.now + Duration::from_secs(second);
            let lane = Lane::of(&cached(&release), now);
            if crate::rollout::analysis_due(&release, now) {
                assert_eq!(lane, Lane::Urgent, "{second} s");
                seen.0 = true;
            } else {
                let until_due = Duration::try_from(due.duration_since(now)).unwrap();
                assert_eq!(
                    lane,
                    Lane::Routine {
                        urgent_in: Some(until_due)
                    },
                    "{second} s"
                );
                seen.1 = true;
            }
        }
        assert_eq!(seen, (true, true), "both lanes met within a minute");

        // Judged and rolled back: nothing left to judge.
        sim.observed.analysis = Some(run(V2, Verdict::Failing, at(30)));
        sim.tick(30);
        sim.observed.analysis = Some(run(V2, Verdict::Failing, at(60)));
        sim.tick(30);
        sim.settle();
        assert_eq!(
            sim.release.status.as_ref().unwrap().canary_revision,
            None,
            "rolled back"
        );
        assert_eq!(
            Lane::of(&cached(&sim.release), sim.now + Duration::from_secs(3600)),
            NEVER_URGENT
        );

        // Without an analysis nothing is ever urgent.
        let mut plain = Sim::canary_of(ReleaseBuilder::gateway());
        plain.settle();
        for second in [0, 10, 30, 60, 600] {
            let now = plain.now + Duration::from_secs(second);
            assert_eq!(Lane::of(&cached(&plain.release), now), NEVER_URGENT);
        }
    }

    /// Whether `enter` is still waiting after the (paused) clock moved `by`.
    async fn waits<F: std::future::Future>(enter: std::pin::Pin<&mut F>, by: Duration) -> bool {
        tokio::time::timeout(by, enter).await.is_err()
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_reconcile_does_not_wait_for_routine_ones() {
        let lanes = Lanes::new(1, 2);
        let routine = (
            lanes.enter(NEVER_URGENT).await,
            lanes.enter(NEVER_URGENT).await,
        );
        assert!(routine.0.is_some() && routine.1.is_some());
        // The routine lane is full: another routine reconcile waits, for an hour if need be...
        let waiting = lanes.enter(NEVER_URGENT);
        tokio::pin!(waiting);
        assert!(waits(waiting.as_mut(), Duration::from_secs(3600)).await);
        // ...an urgent one does not.
        let urgent = lanes.enter(Lane::Urgent);
        tokio::pin!(urgent);
        assert!(!waits(urgent.as_mut(), Duration::from_millis(1)).await);
        // A routine slot given back lets the waiting one in.
        drop(routine.0);
        assert!(!waits(waiting.as_mut(), Duration::from_millis(1)).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_reconcile_turns_urgent_when_its_analysis_falls_due() {
        let lanes = Lanes::new(1, 1);
        let _routine = lanes.enter(NEVER_URGENT).await;
        let turns_urgent = lanes.enter(Lane::Routine {
            urgent_in: Some(Duration::from_secs(10)),
        });
        tokio::pin!(turns_urgent);
        // Behind a full routine lane until its analysis is due...
        assert!(waits(turns_urgent.as_mut(), Duration::from_millis(9_990)).await);
        // ...then in through the urgent lane.
        assert!(!waits(turns_urgent.as_mut(), Duration::from_millis(20)).await);
    }
}
