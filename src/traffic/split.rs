//! Replica arithmetic: how many pods each role runs for a canary weight, out of the current
//! total.
//!
//! The total is `spec.replicas` as it is now: a person (`kubectl scale`) or a
//! HorizontalPodAutoscaler may change it through the scale subresource at any moment, also in
//! the middle of a canary step. The split follows it without touching the step or the weight:
//!
//! - **Replica split** ([`replica_split`]): the canary runs its weight's share of the total
//!   (rounded to the nearest pod, at least 1 while it has traffic), the stable the rest; the two
//!   always add up to the total. [`next_replica_scale`] moves from one split to another make
//!   before break: a side that grows grows first, and a side shrinks only once the other side
//!   is available. When the total changes, both sides move the same way (both grow, or both
//!   shrink), so both are scaled at once: no side loses a pod the other has not made up, and the
//!   share of pods stays the step's share.
//! - **HTTPRoute** ([`canary_size`]): the router sets the share, so the canary runs its traffic
//!   share of the total, rounded up, and at least 1 pod (so it is available before it gets
//!   traffic). The stable keeps the rest plus the pods the canary's share needs, that is the
//!   whole total, and never more: a rollback or a failing canary sends its traffic back to the
//!   stable at once, which must be able to carry it. So during a canary there run
//!   `total + ceil(total × weight / 100)` pods at most: the total plus the make-before-break surge.
//!   (Argo Rollouts' `dynamicStableScale` shrinks the stable to `total − canary` instead; Waymark
//!   does not, because its rollback moves traffic before pods.)
//!
//! `spec.replicas` is at least 1 (the schema refuses 0): a Release always serves. Scaling to
//! zero is deleting the Release, or a later feature.

/// Stable and canary pod counts for `weight` percent of traffic on the canary when the split is
/// made by pod counts (`traffic.replicas`): the canary's share of `total`, rounded to the
/// nearest pod.
///
/// The pair always adds up to `total` (never negative), so capacity neither surges nor drops.
/// A weight above 0 gets at least one canary pod, or it would send nothing; a weight below 100
/// keeps at least one stable pod when there are two or more, so the stable never stops serving
/// before promotion.
pub fn replica_split(total: i32, weight: i32) -> (i32, i32) {
    let total = total.max(0);
    let weight = weight.clamp(0, 100);
    if total == 0 || weight == 0 {
        return (total, 0);
    }
    if weight == 100 {
        return (0, total);
    }
    let rounded = (i64::from(total) * i64::from(weight) + 50) / 100;
    let mut canary = i32::try_from(rounded).unwrap_or(total).clamp(1, total);
    if canary == total && total >= 2 {
        canary = total - 1;
    }
    (total - canary, canary)
}

/// Canary pods for `weight` percent of traffic with a router (Gateway API): enough pods to
/// carry that share of `total` (rounded up), and at least one so it can become available
/// before it gets any traffic. The stable keeps all `total` pods until promotion, so a
/// rollback never lacks capacity.
pub fn canary_size(total: i32, weight: i32) -> i32 {
    let total = i64::from(total.max(1));
    let weight = i64::from(weight.clamp(0, 100));
    let needed = (total * weight + 99) / 100;
    i32::try_from(needed.max(1)).unwrap_or(i32::MAX)
}

/// What to scale to move a replica split from the pods each side has to the pods it should have,
/// make before break (see the module documentation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScaleMove {
    /// New replica count for the stable, when it changes now.
    pub stable: Option<i32>,
    /// New replica count for the canary, when it changes now.
    pub canary: Option<i32>,
    /// True when, after this move, every side has its target (nothing waits on availability).
    pub in_place: bool,
}

/// The next [`ScaleMove`] from `now` = (stable, canary) replica counts to `target`, given whether
/// each side has every pod available.
///
/// Sides that grow are scaled at once (both, when the total grew). A side shrinks only once the
/// other side is available (it carries what the shrinking side gave up); both shrink at once when
/// the total shrank and both are available.
pub fn next_replica_scale(
    now: (i32, i32),
    target: (i32, i32),
    stable_available: bool,
    canary_available: bool,
) -> ScaleMove {
    let (stable_now, canary_now) = now;
    let (stable_target, canary_target) = target;
    let mut step = ScaleMove::default();
    let growing = stable_target > stable_now || canary_target > canary_now;
    if canary_target > canary_now {
        step.canary = Some(canary_target);
    }
    if stable_target > stable_now {
        step.stable = Some(stable_target);
    }
    if growing {
        // Shrinking waits for what grows to be available (the next move, once it is).
        return step;
    }
    if stable_target < stable_now && canary_available {
        step.stable = Some(stable_target);
    }
    if canary_target < canary_now && stable_available {
        step.canary = Some(canary_target);
    }
    step.in_place = step.stable.unwrap_or(stable_now) == stable_target
        && step.canary.unwrap_or(canary_now) == canary_target;
    step
}

/// The traffic share, in percent rounded to the nearest, of `canary` pods out of `total`.
pub fn effective_weight(total: i32, canary: i32) -> i32 {
    if total <= 0 {
        return 0;
    }
    let canary = i64::from(canary.clamp(0, total));
    let total = i64::from(total);
    i32::try_from((canary * 100 + total / 2) / total).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::FileFailurePersistence;

    #[test]
    fn replica_split_table() {
        let cases = [
            // (total, weight, stable, canary)
            (4, 0, 4, 0),
            (4, 10, 3, 1),
            (4, 25, 3, 1),
            (4, 50, 2, 2),
            (4, 90, 1, 3),
            (4, 100, 0, 4),
            (10, 33, 7, 3),
            (10, 35, 6, 4),
            (1, 10, 0, 1),
            (1, 0, 1, 0),
            (2, 99, 1, 1),
            (3, 1, 2, 1),
        ];
        for (total, weight, stable, canary) in cases {
            assert_eq!(
                replica_split(total, weight),
                (stable, canary),
                "total {total} weight {weight}"
            );
        }
    }

    #[test]
    fn canary_size_rounds_up_and_keeps_one_pod() {
        assert_eq!(canary_size(4, 0), 1);
        assert_eq!(canary_size(4, 10), 1);
        assert_eq!(canary_size(4, 50), 2);
        assert_eq!(canary_size(4, 51), 3);
        assert_eq!(canary_size(4, 100), 4);
        assert_eq!(canary_size(10, 33), 4);
    }

    #[test]
    fn the_split_follows_the_total_at_the_same_weight() {
        // (total, weight, stable, canary): an HPA scaling 4 -> 8 -> 3 -> 10 at 25%.
        let cases = [
            (4, 25, 3, 1),
            (8, 25, 6, 2),
            (3, 25, 2, 1),
            (10, 25, 7, 3),
            (1, 25, 0, 1),
        ];
        for (total, weight, stable, canary) in cases {
            assert_eq!(replica_split(total, weight), (stable, canary), "{total}");
            // The share of pods is the step's weight within half a pod (one pod alone is 100%).
            let shown = effective_weight(total, canary);
            assert!(
                total < 2 || (shown - weight).abs() <= 50 / total + 1,
                "{total}: {shown}"
            );
        }
        // With a router the canary is its share of the total rounded up, the stable all of it.
        let cases = [
            (4, 25, 1),
            (8, 25, 2),
            (9, 25, 3),
            (8, 10, 1),
            (8, 0, 1),
            (100, 1, 1),
        ];
        for (total, weight, canary) in cases {
            assert_eq!(canary_size(total, weight), canary, "{total} at {weight}%");
        }
    }

    #[test]
    fn a_scale_change_mid_step_moves_both_sides_make_before_break() {
        let scale = |stable, canary, in_place| ScaleMove {
            stable,
            canary,
            in_place,
        };
        let cases = [
            // (what, now, target, stable available, canary available, move)
            (
                "in place",
                (3, 1),
                (3, 1),
                true,
                true,
                scale(None, None, true),
            ),
            (
                "total 4 -> 8: both grow at once",
                (3, 1),
                (6, 2),
                true,
                true,
                scale(Some(6), Some(2), false),
            ),
            (
                "growing, pods starting: nothing more",
                (6, 2),
                (6, 2),
                false,
                false,
                scale(None, None, true),
            ),
            (
                "total 8 -> 4: both shrink at once",
                (6, 2),
                (3, 1),
                true,
                true,
                scale(Some(3), Some(1), true),
            ),
            (
                "8 -> 4 while the canary starts: the canary shrinks",
                (6, 2),
                (3, 1),
                true,
                false,
                scale(None, Some(1), false),
            ),
            (
                "8 -> 4 while the stable starts: the stable shrinks",
                (6, 2),
                (3, 1),
                false,
                true,
                scale(Some(3), None, false),
            ),
            (
                "a step 25 -> 50 of 4: the canary grows first",
                (3, 1),
                (2, 2),
                true,
                true,
                scale(None, Some(2), false),
            ),
            (
                "then the stable shrinks once the canary is up",
                (3, 2),
                (2, 2),
                true,
                true,
                scale(Some(2), None, true),
            ),
            (
                "not before",
                (3, 2),
                (2, 2),
                true,
                false,
                scale(None, None, false),
            ),
            (
                "a step and a scale together: 25% of 4 -> 50% of 8",
                (3, 1),
                (4, 4),
                true,
                true,
                scale(Some(4), Some(4), false),
            ),
            (
                "back to the stable: it grows first",
                (2, 2),
                (4, 0),
                true,
                true,
                scale(Some(4), None, false),
            ),
            (
                "then the canary goes",
                (4, 2),
                (4, 0),
                true,
                true,
                scale(None, Some(0), true),
            ),
        ];
        for (what, now, target, stable_available, canary_available, expected) in cases {
            assert_eq!(
                next_replica_scale(now, target, stable_available, canary_available),
                expected,
                "{what}"
            );
        }
    }

    #[test]
    fn flip_flopping_totals_never_drop_a_side_below_what_serves() {
        // An HPA and a person disagree: 4, 8, 4, 8, 5 in a row at 25%, each seen before the
        // pods of the last one are up. Every move keeps each side at least at the pods it
        // has available, so capacity never drops under the smaller of the two splits.
        let mut now = replica_split(4, 25);
        for total in [8, 4, 8, 5] {
            let target = replica_split(total, 25);
            let step = next_replica_scale(now, target, false, false);
            let next = (step.stable.unwrap_or(now.0), step.canary.unwrap_or(now.1));
            assert!(
                next.0 >= now.0 && next.1 >= now.1,
                "{total}: nothing shrinks while pods start: {now:?} -> {next:?}"
            );
            now = next;
        }
        // Once everything is available, the last writer's split is reached.
        let step = next_replica_scale(now, replica_split(5, 25), true, true);
        let settled = (step.stable.unwrap_or(now.0), step.canary.unwrap_or(now.1));
        assert_eq!(settled, replica_split(5, 25));
        assert!(step.in_place);
    }

    #[test]
    fn effective_weight_is_the_pod_share() {
        assert_eq!(effective_weight(4, 1), 25);
        assert_eq!(effective_weight(3, 1), 33);
        assert_eq!(effective_weight(3, 2), 67);
        assert_eq!(effective_weight(0, 2), 0);
    }

    proptest! {
        // Failures are saved beside this file (`split.regressions`), not in a top-level folder.
        #![proptest_config(ProptestConfig {
            failure_persistence: Some(Box::new(FileFailurePersistence::WithSource("regressions"))),
            ..ProptestConfig::default()
        })]
        #[test]
        fn replica_split_keeps_the_total_and_a_canary_pod(total in 0i32..500, weight in -10i32..120) {
            let (stable, canary) = replica_split(total, weight);
            prop_assert_eq!(stable + canary, total);
            prop_assert!(stable >= 0 && canary >= 0);
            if weight > 0 && total > 0 {
                prop_assert!(canary >= 1);
            }
            if weight <= 0 {
                prop_assert_eq!(canary, 0);
            }
            if weight < 100 && total >= 2 {
                prop_assert!(stable >= 1);
            }
        }

        #[test]
        fn canary_size_covers_the_weight(total in 1i32..500, weight in 0i32..=100) {
            let size = canary_size(total, weight);
            prop_assert!(size >= 1 && size <= total);
            prop_assert!(i64::from(size) * 100 >= i64::from(total) * i64::from(weight));
        }
    }
}
