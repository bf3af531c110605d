//! `status.history`: one entry per finished revision, newest first.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{HistoryEntry, ReleaseStatus, Roadmap};

/// How many finished revisions the status keeps; older ones are in Events and metrics.
pub const HISTORY_LIMIT: usize = 10;

/// Put `entry` first and drop the oldest beyond [`HISTORY_LIMIT`].
pub fn record(history: &mut Vec<HistoryEntry>, entry: HistoryEntry) {
    history.insert(0, entry);
    history.truncate(HISTORY_LIMIT);
}

/// Whether the status has a stable but no finished revision at all: its first release, made
/// the stable directly, is recorded (`Promoted`, reason `FirstRelease`) only once that stable
/// is available, so until then it has no history entry.
pub fn first_release_unrecorded(status: &ReleaseStatus) -> bool {
    status.stable_revision.is_some() && status.history.is_empty()
}

/// The newest entry of `revision` (used to recover a rollback's
/// reason and message on later reconciles).
pub fn latest_of<'a>(history: &'a [HistoryEntry], revision: &str) -> Option<&'a HistoryEntry> {
    history.iter().find(|entry| entry.revision == revision)
}

/// A history entry, for readability at the call sites; the rollout core adds the horizon, kind
/// and timeline when it ends a canary.
pub fn entry(
    revision: &str,
    roadmap_item: &str,
    outcome: crate::api::Outcome,
    started_at: Option<Time>,
    finished_at: Time,
    reason: &str,
    message: Option<String>,
) -> HistoryEntry {
    HistoryEntry {
        revision: revision.to_string(),
        roadmap_item: roadmap_item.to_string(),
        outcome,
        started_at,
        finished_at,
        failure_detected_at: None,
        reason: reason.to_string(),
        message,
        horizon: None,
        kind: None,
        timeline: Vec::new(),
        roadmap_outcome: None,
        rework: false,
    }
}

/// Sets `status.roadmapHorizon` and `roadmapKind` for `status.roadmapItem`: the spec's when the
/// item is the spec's, else those its newest history entry recorded.
pub fn stamp_status_roadmap(status: &mut ReleaseStatus, roadmap: &Roadmap) {
    let (horizon, kind) = match status.roadmap_item.as_deref() {
        Some(item) if item == roadmap.item => (roadmap.horizon, roadmap.kind),
        Some(item) => status
            .history
            .iter()
            .find(|entry| entry.roadmap_item == item)
            .map_or((None, None), |entry| (entry.horizon, entry.kind)),
        None => (None, None),
    };
    status.roadmap_horizon = horizon;
    status.roadmap_kind = kind;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Horizon, Outcome, RoadmapKind};

    fn time(text: &str) -> Time {
        Time(text.parse().unwrap())
    }

    #[test]
    fn the_status_carries_the_horizon_and_kind_of_the_item_it_names() {
        let mut older = entry(
            "7a0b1c",
            "PAY-99",
            Outcome::Promoted,
            None,
            time("2026-11-21T10:00:00Z"),
            "Promoted",
            None,
        );
        older.horizon = Some(Horizon::Later);
        let roadmap = Roadmap {
            item: "PAY-142".into(),
            horizon: Some(Horizon::Now),
            kind: Some(RoadmapKind::Feature),
            ..Roadmap::default()
        };
        let mut status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            history: vec![older],
            ..ReleaseStatus::default()
        };
        stamp_status_roadmap(&mut status, &roadmap);
        assert_eq!(
            (status.roadmap_horizon, status.roadmap_kind),
            (Some(Horizon::Now), Some(RoadmapKind::Feature))
        );
        // The live item of an earlier revision keeps what its history entry recorded.
        status.roadmap_item = Some("PAY-99".into());
        stamp_status_roadmap(&mut status, &roadmap);
        assert_eq!(
            (status.roadmap_horizon, status.roadmap_kind),
            (Some(Horizon::Later), None)
        );
    }
}
