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

/// The newest entry of `revision` (used to recover a rollback's
/// reason and message on later reconciles).
pub fn latest_of<'a>(history: &'a [HistoryEntry], revision: &str) -> Option<&'a HistoryEntry> {
    history.iter().find(|entry| entry.revision == revision)
}

/// A history entry, for readability at the call sites. Its horizon and kind are set from the
/// spec by [`stamp_roadmap`] once the decision is made, and its timeline by whoever ends the
/// canary (`std::mem::take(&mut status.timeline)`).
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
    }
}

/// Sets the horizon and kind of `roadmap` on the entries of `history` that are not in
/// `before` and deliver `roadmap`'s item, leaving entries of other items alone (a revision
/// superseded by a new item keeps no tag rather than a wrong one).
pub fn stamp_roadmap(before: &[HistoryEntry], history: &mut [HistoryEntry], roadmap: &Roadmap) {
    for entry in history.iter_mut() {
        let new = !before
            .iter()
            .any(|old| old.revision == entry.revision && old.finished_at == entry.finished_at);
        if new && entry.roadmap_item == roadmap.item {
            entry.horizon = entry.horizon.or(roadmap.horizon);
            entry.kind = entry.kind.or(roadmap.kind);
        }
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
    fn new_entries_of_the_spec_item_get_its_horizon_and_kind() {
        let old = entry(
            "5d8b9c",
            "PAY-142",
            Outcome::Promoted,
            None,
            time("2026-11-20T09:00:00Z"),
            "Promoted",
            None,
        );
        let mut history = vec![old.clone()];
        record(
            &mut history,
            entry(
                "6f9c7d",
                "PAY-142",
                Outcome::RolledBack,
                None,
                time("2026-11-21T09:00:00Z"),
                "AnalysisFailing",
                None,
            ),
        );
        record(
            &mut history,
            entry(
                "7a0b1c",
                "PAY-99",
                Outcome::Superseded,
                None,
                time("2026-11-21T10:00:00Z"),
                "Superseded",
                None,
            ),
        );
        let roadmap = Roadmap {
            item: "PAY-142".into(),
            horizon: Some(Horizon::Now),
            kind: Some(RoadmapKind::Feature),
            ..Roadmap::default()
        };
        stamp_roadmap(&[old], &mut history, &roadmap);
        let tags: Vec<_> = history.iter().map(|e| (e.horizon, e.kind)).collect();
        let mut status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            history: history.clone(),
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
        assert_eq!((status.roadmap_horizon, status.roadmap_kind), (None, None));
        assert_eq!(
            tags,
            [
                (None, None),
                (Some(Horizon::Now), Some(RoadmapKind::Feature)),
                (None, None)
            ]
        );
    }
}
