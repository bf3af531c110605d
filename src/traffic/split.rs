//! Replica arithmetic: how many pods each role runs for a canary weight.

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
