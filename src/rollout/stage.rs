//! Where a release stands, read from its status alone: its stage, and whether inconclusive runs
//! hold its canary. The decision and the manual-action rule ([`super::manual`]) read both the
//! same way, so what `waymark promote` is told matches what the controller does.

use crate::api::{ReleaseSpec, ReleaseStatus};

/// Where a release stands (the status records it in a manual request, so it is an API type).
pub use crate::api::ReleaseStage as Stage;

/// The stage of a status whose spec template has revision `spec_revision`.
pub fn stage(spec_revision: &str, status: &ReleaseStatus) -> Stage {
    let Some(stable) = status.stable_revision.as_deref() else {
        return Stage::FirstRelease;
    };
    if let Some(canary) = status.canary_revision.as_deref() {
        return if canary == stable {
            Stage::Promoting
        } else {
            Stage::Canary
        };
    }
    if stable == spec_revision {
        Stage::Steady
    } else if status.rolled_back_revision.as_deref() == Some(spec_revision) {
        Stage::RolledBack
    } else {
        Stage::Pending
    }
}

/// Whether `inconclusiveLimit` inconclusive runs in a row hold the canary of `canary`. A free
/// function so that the manual-action rule (what `waymark promote` does) reads the same hold.
pub fn inconclusive_hold(spec: &ReleaseSpec, status: &ReleaseStatus, canary: &str) -> bool {
    let Some(limit) = spec.analysis.as_ref().map(|a| a.inconclusive_limit) else {
        return false;
    };
    status
        .analysis
        .as_ref()
        .filter(|a| a.revision.as_deref() == Some(canary))
        .is_some_and(|a| a.consecutive_inconclusive >= limit.max(1))
}
