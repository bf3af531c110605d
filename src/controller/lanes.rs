//! Two lanes for reconciles, so that a bad canary is not judged behind a fleet-wide deploy.
//!
//! A deploy to thousands of Releases at once queues thousands of reconciles, each waiting on
//! the API server's answers to its writes. In one queue, a canary whose analysis is due (the
//! run that finds it failing, and the rollback in the same reconcile) waited behind all of
//! them: at 10,000 Releases its rollback took up to minutes. So the kube-runtime `Controller`
//! starts every due reconcile at once (its concurrency is unbounded), and each waits here for
//! a permit of its lane: [`Lane::Urgent`] when an analysis of the Release is due,
//! [`Lane::Routine`] for everything else (new canaries, steps, promotions, clean-ups). Each lane
//! bounds its own reconciles in flight, so the routine ones cannot take the urgent ones' slots.
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
    /// Anything else.
    Routine,
}

impl Lane {
    /// The lane of a reconcile of `release` at `now`. A Release that does not decode (a bug,
    /// reported by the reconcile itself) goes in the routine lane.
    pub fn of(release: &CachedRelease, now: Timestamp) -> Lane {
        match release.release() {
            Ok(release) if rollout::analysis_due(&release, now) => Lane::Urgent,
            _ => Lane::Routine,
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
        let semaphore = match lane {
            Lane::Urgent => &self.urgent,
            Lane::Routine => &self.routine,
        };
        semaphore.acquire().await.ok()
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

    #[test]
    fn a_reconcile_is_urgent_exactly_when_an_analysis_is_due() {
        let mut sim = Sim::canary_of(ReleaseBuilder::gateway().analysis());
        // Healthy on V1, a new template: no canary step has started, nothing to judge.
        assert_eq!(Lane::of(&cached(&sim.release), sim.now), Lane::Routine);
        sim.settle();
        let release = sim.release.clone();
        let status = release.status.as_ref().unwrap();
        assert!(status.steps_started_at.is_some(), "the canary's steps run");
        // Every instant from the canary's start to a minute later: urgent exactly when the
        // pure core says an analysis is due.
        let mut seen = (false, false);
        for second in 0..60 {
            let now = sim.now + Duration::from_secs(second);
            let due = crate::rollout::analysis_due(&release, now);
            assert_eq!(Lane::of(&cached(&release), now) == Lane::Urgent, due);
            seen = (seen.0 || due, seen.1 || !due);
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
            Lane::Routine
        );

        // Without an analysis nothing is ever urgent.
        let mut plain = Sim::canary_of(ReleaseBuilder::gateway());
        plain.tick(0);
        for second in [0, 10, 30, 60, 600] {
            let now = plain.now + Duration::from_secs(second);
            assert_eq!(Lane::of(&cached(&plain.release), now), Lane::Routine);
        }
    }

    #[tokio::test]
    async fn an_urgent_reconcile_does_not_wait_for_routine_ones() {
        let lanes = Lanes::new(1, 2);
        let routine = (
            lanes.enter(Lane::Routine).await,
            lanes.enter(Lane::Routine).await,
        );
        assert!(routine.0.is_some() && routine.1.is_some());
        // The routine lane is full: another routine reconcile waits...
        let waiting = lanes.enter(Lane::Routine);
        tokio::pin!(waiting);
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut waiting)
                .await
                .is_err(),
            "a third routine reconcile waits"
        );
        // ...an urgent one does not.
        let urgent = tokio::time::timeout(Duration::from_secs(5), lanes.enter(Lane::Urgent))
            .await
            .expect("an urgent reconcile goes past a full routine lane");
        assert!(urgent.is_some());
        // A routine slot given back lets the waiting one in.
        drop(routine.0);
        assert!(
            tokio::time::timeout(Duration::from_secs(5), waiting)
                .await
                .expect("a slot given back is taken")
                .is_some()
        );
    }
}
