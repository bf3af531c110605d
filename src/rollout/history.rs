//! `status.history`: one entry per finished revision, newest first.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::HistoryEntry;

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

/// A history entry, for readability at the call sites.
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
    }
}
