//! Ordering verdicts: which one a run reports when its parts disagree.

use crate::api::Verdict;

/// How bad a verdict is: Failing > Error > Inconclusive > Passing.
///
/// Failing outranks Error because a broken canary that also has one failed query is still a
/// broken canary and should roll back on the failure count, not wait for the error count.
pub fn severity(verdict: Verdict) -> u8 {
    match verdict {
        Verdict::Passing => 0,
        Verdict::Inconclusive => 1,
        Verdict::Error => 2,
        Verdict::Failing => 3,
    }
}

/// The worst of `verdicts`; Passing when there are none.
pub fn worst(verdicts: impl IntoIterator<Item = Verdict>) -> Verdict {
    verdicts
        .into_iter()
        .max_by_key(|verdict| severity(*verdict))
        .unwrap_or(Verdict::Passing)
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::*;

    #[test]
    fn failing_beats_error_beats_inconclusive_beats_passing() {
        assert_eq!(worst([Passing, Inconclusive, Error, Failing]), Failing);
        assert_eq!(worst([Failing, Error]), Failing);
        assert_eq!(worst([Inconclusive, Error, Passing]), Error);
        assert_eq!(worst([Passing, Inconclusive]), Inconclusive);
        assert_eq!(worst([Passing, Passing]), Passing);
        assert_eq!(worst([]), Passing);
    }
}
