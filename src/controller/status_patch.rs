//! The status write as a JSON patch (RFC 6902) of what changed, so the Release cache can leave
//! out the older history entries' timelines.
//!
//! A Release keeps up to ten finished revisions in `status.history`, each with the timeline of
//! its canary: most of a long-lived Release's bytes (a Release with ten timelines of analysed
//! canaries is about 240 KB), and nothing a decision reads. The cache keeps the newest entry
//! whole (a decision still adds to its timeline while the canary's pods go) and drops the
//! others' timelines ([`slim_history`]). A server-side apply of the whole status would then
//! remove those timelines from the object, since `history` is an atomic list; a JSON patch
//! only says what changed: the top-level fields that differ, each entry the decision put in
//! front of the history (with its timeline), the entries it pushed out, and the fields of a
//! kept entry that changed (a measured roadmap outcome). The first operation tests the
//! resourceVersion the decision was made on, so the patch never lands over a newer Release.

use serde_json::{Map, Value, json};

use crate::api::{HistoryEntry, ReleaseStatus};

/// Drop the timelines of all but the newest history entry: what the cache keeps.
pub fn slim_history(status: &mut ReleaseStatus) {
    for entry in status.history.iter_mut().skip(1) {
        entry.timeline = Vec::new();
    }
}

/// The JSON patch operations that turn `old` (as cached: see [`slim_history`]) into `new`,
/// leaving `request` (the CLI's) alone; empty when nothing differs. The caller puts the
/// resourceVersion test in front.
pub fn operations(old: Option<&ReleaseStatus>, new: &ReleaseStatus) -> Vec<Value> {
    let mut new_value = to_object(new);
    new_value.remove("request");
    let Some(old) = old else {
        return if new_value.is_empty() {
            Vec::new()
        } else {
            vec![json!({"op": "add", "path": "/status", "value": new_value})]
        };
    };
    let mut old_value = to_object(old);
    old_value.remove("request");
    old_value.remove("history");
    new_value.remove("history");
    let mut operations = field_operations("/status", &old_value, &new_value);
    operations.extend(history_operations(&old.history, &new.history));
    operations
}

/// The history's operations: entries put in front, entries pushed out, fields changed on kept
/// entries. A history that is not the old one with entries in front (which the rollout core
/// never makes) is written whole.
fn history_operations(old: &[HistoryEntry], new: &[HistoryEntry]) -> Vec<Value> {
    if old == new {
        return Vec::new();
    }
    if old.is_empty() {
        return vec![json!({"op": "add", "path": "/status/history", "value": new})];
    }
    let Some(added) = (0..=new.len()).find(|&added| {
        new[added..]
            .iter()
            .zip(old)
            .all(|(new, old)| same_revision(new, old))
    }) else {
        tracing::warn!(
            "the status history was rewritten, not added to: written whole, without the \
             timelines the cache does not hold"
        );
        return vec![json!({"op": "add", "path": "/status/history", "value": new})];
    };
    let mut operations = Vec::new();
    // The newest last, so each goes in at the front before the ones already put there.
    for entry in new[..added].iter().rev() {
        operations.push(json!({"op": "add", "path": "/status/history/0", "value": entry}));
    }
    let kept = new.len() - added;
    // Pushed out at the end: from the last index down, so each index still exists.
    for index in (new.len()..old.len() + added).rev() {
        operations.push(json!({"op": "remove", "path": format!("/status/history/{index}")}));
    }
    for (offset, (old_entry, new_entry)) in old.iter().zip(&new[added..]).take(kept).enumerate() {
        if old_entry == new_entry {
            continue;
        }
        let index = added + offset;
        if offset == 0 {
            // The newest old entry is cached whole: written whole.
            operations.push(json!({
                "op": "replace",
                "path": format!("/status/history/{index}"),
                "value": new_entry,
            }));
            continue;
        }
        // An older entry is cached without its timeline: only its other fields are written.
        let (mut old_fields, mut new_fields) = (to_object(old_entry), to_object(new_entry));
        old_fields.remove("timeline");
        new_fields.remove("timeline");
        operations.extend(field_operations(
            &format!("/status/history/{index}"),
            &old_fields,
            &new_fields,
        ));
    }
    operations
}

/// The operations that turn the object at `path` with `old`'s fields into one with `new`'s: a
/// field gone is removed, a field new or changed is added (which replaces it), in key order.
fn field_operations(path: &str, old: &Map<String, Value>, new: &Map<String, Value>) -> Vec<Value> {
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut operations = Vec::new();
    for key in keys {
        let field = format!("{path}/{}", pointer_escape(key));
        match (old.get(key), new.get(key)) {
            (Some(_), None) => operations.push(json!({"op": "remove", "path": field})),
            (old, Some(value)) if old != Some(value) => {
                operations.push(json!({"op": "add", "path": field, "value": value}));
            }
            _ => {}
        }
    }
    operations
}

/// Whether two entries record the same finished revision (the one may have gained fields
/// since, such as a measured outcome).
fn same_revision(a: &HistoryEntry, b: &HistoryEntry) -> bool {
    a.revision == b.revision && a.finished_at == b.finished_at && a.outcome == b.outcome
}

fn to_object<T: serde::Serialize>(value: &T) -> Map<String, Value> {
    match serde_json::to_value(value) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// A key as a JSON pointer segment (RFC 6901).
fn pointer_escape(key: &str) -> String {
    key.replace('~', "~0").replace('/', "~1")
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    use super::*;
    use crate::api::{Outcome, Phase};
    use crate::rollout::history::{HISTORY_LIMIT, record};
    use crate::rollout::timeline;

    fn at(seconds: i64) -> Time {
        Time(Timestamp::from_second(seconds).expect("a time"))
    }

    fn finished(revision: &str, when: i64) -> HistoryEntry {
        HistoryEntry {
            revision: revision.into(),
            roadmap_item: "PAY-1".into(),
            outcome: Outcome::Promoted,
            started_at: Some(at(when - 60)),
            finished_at: at(when),
            failure_detected_at: None,
            reason: "Promoted".into(),
            message: Some(format!("canary {revision} promoted")),
            horizon: None,
            kind: None,
            timeline: (0..3)
                .map(|step| timeline::step(at(when - 60 + step), step as i32 + 1, 10))
                .collect(),
            roadmap_outcome: None,
            rework: false,
        }
    }

    fn status_with(history: Vec<HistoryEntry>) -> ReleaseStatus {
        ReleaseStatus {
            phase: Some(Phase::Healthy),
            stable_revision: history.first().map(|entry| entry.revision.clone()),
            history,
            ..ReleaseStatus::default()
        }
    }

    /// The object as the API server holds it, with `operations` applied.
    fn applied(stored: &ReleaseStatus, operations: &[Value]) -> ReleaseStatus {
        let mut object = json!({"status": stored});
        let patch: json_patch::Patch =
            serde_json::from_value(Value::Array(operations.to_vec())).expect("a JSON patch");
        json_patch::patch(&mut object, &patch).expect("the patch applies");
        serde_json::from_value(object["status"].clone()).expect("a status")
    }

    /// The decision's writes, cache and API server side by side: the cache is slimmed, the
    /// decision works on it, the patch goes to the whole object.
    fn write(stored: &mut ReleaseStatus, decide: impl FnOnce(&mut ReleaseStatus)) {
        let mut cached = stored.clone();
        slim_history(&mut cached);
        let mut new = cached.clone();
        decide(&mut new);
        *stored = applied(stored, &operations(Some(&cached), &new));
    }

    #[test]
    fn the_cache_keeps_the_newest_entrys_timeline_only() {
        let mut status = status_with(vec![finished("b", 200), finished("a", 100)]);
        slim_history(&mut status);
        assert_eq!(status.history[0].timeline.len(), 3);
        assert!(status.history[1].timeline.is_empty());
    }

    #[test]
    fn nothing_changed_is_no_operation() {
        let mut status = status_with(vec![finished("b", 200), finished("a", 100)]);
        slim_history(&mut status);
        assert!(operations(Some(&status), &status.clone()).is_empty());
    }

    #[test]
    fn a_phase_change_is_one_operation_and_the_request_is_left_to_the_cli() {
        let old = status_with(vec![finished("a", 100)]);
        let mut new = old.clone();
        new.phase = Some(Phase::Progressing);
        new.canary_weight = Some(10);
        new.request = Some(crate::api::ManualRequest {
            id: "r".into(),
            action: crate::api::ManualAction::Promote,
            revision: None,
            stage: None,
            step: None,
            requested_at: at(1),
            requested_by: None,
        });
        assert_eq!(
            operations(Some(&old), &new),
            vec![
                json!({"op": "add", "path": "/status/canaryWeight", "value": 10}),
                json!({"op": "add", "path": "/status/phase", "value": "Progressing"}),
            ]
        );
        let mut back = new.clone();
        back.canary_weight = None;
        assert_eq!(
            operations(Some(&new), &back),
            vec![json!({"op": "remove", "path": "/status/canaryWeight"})]
        );
    }

    #[test]
    fn ten_canaries_keep_every_timeline_on_the_server_while_the_cache_holds_one() {
        let mut stored = status_with(vec![finished("r0", 100)]);
        for round in 1..=12 {
            write(&mut stored, |status| {
                record(
                    &mut status.history,
                    finished(&format!("r{round}"), 100 + round * 100),
                );
                status.stable_revision = Some(format!("r{round}"));
            });
        }
        assert_eq!(stored.history.len(), HISTORY_LIMIT);
        let revisions: Vec<&str> = stored.history.iter().map(|e| e.revision.as_str()).collect();
        assert_eq!(
            revisions,
            [
                "r12", "r11", "r10", "r9", "r8", "r7", "r6", "r5", "r4", "r3"
            ]
        );
        assert!(
            stored.history.iter().all(|entry| entry.timeline.len() == 3),
            "every entry keeps its timeline on the server"
        );
        assert_eq!(stored.stable_revision.as_deref(), Some("r12"));
    }

    #[test]
    fn an_outcome_measured_on_an_older_entry_keeps_its_timeline() {
        let mut stored = status_with(vec![
            finished("c", 300),
            finished("b", 200),
            finished("a", 100),
        ]);
        write(&mut stored, |status| {
            status.history[1].rework = true;
            status.history[1].message = None;
        });
        assert!(stored.history[1].rework);
        assert_eq!(stored.history[1].message, None);
        assert_eq!(stored.history[1].timeline.len(), 3, "its timeline stays");
        assert_eq!(stored.history[0], finished("c", 300));
        assert_eq!(stored.history[2], finished("a", 100));
    }

    #[test]
    fn the_newest_entry_gains_timeline_entries_after_its_canary() {
        let mut stored = status_with(vec![finished("b", 200), finished("a", 100)]);
        write(&mut stored, |status| {
            status.history[0]
                .timeline
                .push(timeline::canary_scaled_down(at(230)));
        });
        assert_eq!(stored.history[0].timeline.len(), 4);
        assert_eq!(stored.history[1].timeline.len(), 3);
    }

    #[test]
    fn a_first_status_and_a_first_history_entry_are_written_whole() {
        let new = status_with(vec![finished("a", 100)]);
        let operations = operations(None, &new);
        assert_eq!(operations.len(), 1);
        assert_eq!(applied(&ReleaseStatus::default(), &operations), new);
        let old = ReleaseStatus {
            phase: Some(Phase::Healthy),
            ..ReleaseStatus::default()
        };
        assert_eq!(applied(&old, &super::operations(Some(&old), &new)), new);
    }

    #[test]
    fn a_rewritten_history_is_written_whole() {
        let old = status_with(vec![finished("b", 200), finished("a", 100)]);
        let new = status_with(vec![finished("x", 300)]);
        assert_eq!(applied(&old, &operations(Some(&old), &new)), new);
    }
}
