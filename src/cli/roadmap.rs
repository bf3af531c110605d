//! `waymark roadmap`: which items are live, rolling out or rolled back, and delivery per
//! roadmap horizon and kind of work, read from the Releases' `status.history` (no Prometheus).
//!
//! The figures, per group of finished revisions:
//! - **deliveries**: revisions that reached an outcome: promoted, rolled back or aborted (a
//!   revision superseded by a newer one before it finished delivered nothing and is left out);
//! - **share**: the group's deliveries over all deliveries of the summary;
//! - **change failure rate**: (rolled back + aborted) / deliveries;
//! - **median time to restore**: over rollbacks and aborts whose failing analysis was seen,
//!   from the first failing analysis to traffic back on the stable;
//! - **rework rate**: promotions of an item already promoted within its
//!   `spec.roadmap.reworkWindow` before (the history entry's `rework` flag) over promotions.
//!
//! Grouped per horizon, per kind and per roadmap item. Below the items, each item's outcome
//! (`spec.roadmap.outcome`) as its newest promoted revision recorded it.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;
use serde::Serialize;

use super::render::{RoadmapRow, roadmap_rows, roadmap_table};
use crate::analysis::format::format_period;
use crate::analysis::roadmap_outcome;
use crate::api::{Duration, HistoryEntry, Horizon, Outcome, OutcomeRecord, Release, RoadmapKind};

/// Delivery figures of one group (a horizon, a kind, or all).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryRow {
    /// `now`, `next`, `later`, `feature`, ..., `unset`, or `all`.
    pub group: String,
    /// Promoted + rolled back + aborted.
    pub deliveries: u32,
    /// The group's deliveries over all deliveries (0-1); `None` without any delivery.
    pub share: Option<f64>,
    /// Revisions promoted.
    pub promoted: u32,
    /// Revisions rolled back (analysis, progress deadline).
    pub rolled_back: u32,
    /// Revisions aborted by a person.
    pub aborted: u32,
    /// (rolled back + aborted) / deliveries (0-1); `None` without any delivery.
    pub change_failure_rate: Option<f64>,
    /// Median seconds from the first failing analysis to traffic back on the stable.
    pub median_time_to_restore_seconds: Option<f64>,
    /// Promotions that were rework (the item promoted before, within its rework window).
    pub rework: u32,
    /// rework / promoted (0-1); `None` without any promotion.
    pub rework_rate: Option<f64>,
}

/// Delivery per horizon and per kind since a moment.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliverySummary {
    /// Entries finished at or after this count (`None`: every entry in the histories).
    pub since: Option<Timestamp>,
    /// One row per horizon (`unset` only when some item has none).
    pub by_horizon: Vec<DeliveryRow>,
    /// One row per kind (`unset` only when some item has none).
    pub by_kind: Vec<DeliveryRow>,
    /// One row per roadmap item, in the items' order.
    pub by_item: Vec<DeliveryRow>,
    /// Every delivery.
    pub total: DeliveryRow,
    /// Each item's outcome as its newest promoted revision with one recorded it, per Release.
    pub outcomes: Vec<OutcomeRow>,
}

/// One roadmap item's outcome (`spec.roadmap.outcome`), as a promoted revision recorded it.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct OutcomeRow {
    /// Namespace of the Release.
    pub namespace: String,
    /// Name of the Release.
    pub release: String,
    /// The roadmap item.
    pub item: String,
    /// The item's title, when the spec still names the item and gives one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// The promoted revision.
    pub revision: String,
    /// When it was promoted.
    pub promoted_at: Timestamp,
    /// Whether it is still the stable revision.
    pub live: bool,
    /// The record: windows, numbers, change, verdict.
    pub outcome: OutcomeRecord,
    /// The line the table shows, e.g. `PAY-142 One-click checkout: live 9d;
    /// checkout-conversion +3.1% (goal +2%): met`.
    pub summary: String,
}

/// The outcome rows of `releases`: per Release and item, the newest promoted revision that
/// recorded an outcome, promoted at or after `since`.
pub fn outcome_rows(
    releases: &[Release],
    now: Timestamp,
    since: Option<Timestamp>,
) -> Vec<OutcomeRow> {
    let mut rows: Vec<OutcomeRow> = Vec::new();
    for release in releases {
        let Some(status) = &release.status else {
            continue;
        };
        let namespace = release.metadata.namespace.clone().unwrap_or_default();
        let name = release.metadata.name.clone().unwrap_or_default();
        for entry in &status.history {
            let Some(record) = &entry.roadmap_outcome else {
                continue;
            };
            if entry.outcome != Outcome::Promoted
                || since.is_some_and(|since| entry.finished_at.0 < since)
                || rows.iter().any(|row| {
                    row.namespace == namespace
                        && row.release == name
                        && row.item == entry.roadmap_item
                })
            {
                continue;
            }
            let title = (entry.roadmap_item == release.spec.roadmap.item)
                .then(|| release.spec.roadmap.title.clone())
                .flatten();
            let live = status.stable_revision.as_deref() == Some(entry.revision.as_str());
            let age = age(now, entry.finished_at.0);
            let state = if live {
                format!("live {age}")
            } else {
                format!("promoted {age} ago, since replaced")
            };
            let named = match &title {
                Some(title) => format!("{} {title}", entry.roadmap_item),
                None => entry.roadmap_item.clone(),
            };
            rows.push(OutcomeRow {
                namespace: namespace.clone(),
                release: name.clone(),
                item: entry.roadmap_item.clone(),
                title,
                revision: entry.revision.clone(),
                promoted_at: entry.finished_at.0,
                live,
                outcome: record.clone(),
                summary: format!("{named}: {state}; {}", roadmap_outcome::describe(record)),
            });
        }
    }
    rows
}

/// How long ago, in the largest whole unit: `9d`, `5h`, `12m`.
fn age(now: Timestamp, then: Timestamp) -> String {
    let seconds = now.duration_since(then).as_secs().max(0);
    match seconds {
        s if s >= 86_400 => format!("{}d", s / 86_400),
        s if s >= 3_600 => format!("{}h", s / 3_600),
        s => format!("{}m", s / 60),
    }
}

/// Summarises the histories of `releases`: the entries finished at or after `now − since`
/// (all of them without `since`).
pub fn delivery_summary(
    releases: &[Release],
    now: Timestamp,
    since: Option<Duration>,
) -> DeliverySummary {
    let now = super::render::to_the_second(now);
    let since = since.and_then(|since| now.checked_sub(since.as_signed()).ok());
    let entries: Vec<&HistoryEntry> = releases
        .iter()
        .filter_map(|release| release.status.as_ref())
        .flat_map(|status| status.history.iter())
        .filter(|entry| since.is_none_or(|since| entry.finished_at.0 >= since))
        .filter(|entry| entry.outcome != Outcome::Superseded)
        .collect();
    let all = entries.len() as u32;
    let row = |group: &str, members: Vec<&HistoryEntry>| {
        let count =
            |outcome: Outcome| members.iter().filter(|e| e.outcome == outcome).count() as u32;
        let (promoted, rolled_back, aborted) = (
            count(Outcome::Promoted),
            count(Outcome::RolledBack),
            count(Outcome::Aborted),
        );
        let deliveries = promoted + rolled_back + aborted;
        let ratio = |part: u32, whole: u32| (whole > 0).then(|| f64::from(part) / f64::from(whole));
        let mut restore: Vec<f64> = members
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::RolledBack | Outcome::Aborted))
            .filter_map(|e| {
                let detected = e.failure_detected_at.as_ref()?;
                Some(
                    e.finished_at
                        .0
                        .duration_since(detected.0)
                        .as_secs_f64()
                        .max(0.0),
                )
            })
            .collect();
        restore.sort_by(f64::total_cmp);
        let median = match restore.len() {
            0 => None,
            n if n % 2 == 1 => Some(restore[n / 2]),
            n => Some((restore[n / 2 - 1] + restore[n / 2]) / 2.0),
        };
        let rework = members
            .iter()
            .filter(|e| e.outcome == Outcome::Promoted && e.rework)
            .count() as u32;
        DeliveryRow {
            group: group.to_string(),
            deliveries,
            share: ratio(deliveries, all),
            promoted,
            rolled_back,
            aborted,
            change_failure_rate: ratio(rolled_back + aborted, deliveries),
            median_time_to_restore_seconds: median,
            rework,
            rework_rate: ratio(rework, promoted),
        }
    };
    // One row per value in order, then `unset` when some entry has none.
    let grouped = |names: Vec<&'static str>,
                   key: &dyn Fn(&HistoryEntry) -> Option<&'static str>| {
        let mut rows: Vec<DeliveryRow> = names
            .iter()
            .map(|name| {
                let members = entries
                    .iter()
                    .copied()
                    .filter(|e| key(e) == Some(*name))
                    .collect();
                row(name, members)
            })
            .collect();
        let unset: Vec<&HistoryEntry> = entries
            .iter()
            .copied()
            .filter(|e| key(e).is_none())
            .collect();
        if !unset.is_empty() {
            rows.push(row("unset", unset));
        }
        rows
    };
    let by_horizon = grouped(
        Horizon::ALL.iter().map(Horizon::as_str).collect(),
        &|e: &HistoryEntry| e.horizon.map(|h| h.as_str()),
    );
    let by_kind = grouped(
        RoadmapKind::ALL.iter().map(RoadmapKind::as_str).collect(),
        &|e: &HistoryEntry| e.kind.map(|k| k.as_str()),
    );
    let mut items: Vec<&str> = entries.iter().map(|e| e.roadmap_item.as_str()).collect();
    items.sort_unstable();
    items.dedup();
    let by_item = items
        .iter()
        .map(|item| {
            let members = entries
                .iter()
                .copied()
                .filter(|e| e.roadmap_item == *item)
                .collect();
            row(item, members)
        })
        .collect();
    DeliverySummary {
        since,
        by_horizon,
        by_kind,
        by_item,
        total: row("all", entries.clone()),
        outcomes: outcome_rows(releases, now, since),
    }
}

fn percent(value: Option<f64>) -> String {
    value.map_or("-".into(), |v| format!("{:.0}%", v * 100.0))
}

fn restore(seconds: Option<f64>) -> String {
    seconds.map_or("-".into(), |s| {
        Duration::from_secs(s.round() as u64).to_string()
    })
}

/// Columns of a delivery table after the group's.
pub const HEADERS: [&str; COLUMNS - 1] = [
    "DELIVERIES",
    "SHARE",
    "PROMOTED",
    "ROLLED BACK",
    "ABORTED",
    "CHANGE FAILURE RATE",
    "MEDIAN TIME TO RESTORE",
    "REWORK",
    "REWORK RATE",
];

/// Columns of a delivery table, the group's included.
pub const COLUMNS: usize = 10;

/// A delivery row as the cells the tables print: group, counts, rates, time to restore,
/// rework.
pub fn cells(row: &DeliveryRow) -> [String; COLUMNS] {
    [
        row.group.clone(),
        row.deliveries.to_string(),
        percent(row.share),
        row.promoted.to_string(),
        row.rolled_back.to_string(),
        row.aborted.to_string(),
        percent(row.change_failure_rate),
        restore(row.median_time_to_restore_seconds),
        row.rework.to_string(),
        percent(row.rework_rate),
    ]
}

fn since_line(summary: &DeliverySummary, since: Option<Duration>) -> String {
    match (summary.since, since) {
        (Some(at), Some(span)) => {
            format!(
                "Delivery since {at} (last {}), from status.history of each Release",
                format_period(span)
            )
        }
        _ => "Delivery over every entry of status.history".to_string(),
    }
}

fn aligned(out: &mut String, first: &str, rows: &[&DeliveryRow]) {
    let mut table: Vec<[String; COLUMNS]> = Vec::new();
    let mut header: [String; COLUMNS] = Default::default();
    header[0] = first.to_string();
    for (index, title) in HEADERS.iter().enumerate() {
        header[index + 1] = title.to_string();
    }
    table.push(header);
    table.extend(rows.iter().map(|row| cells(row)));
    let widths: Vec<usize> = (0..COLUMNS)
        .map(|column| {
            table
                .iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for row in &table {
        let mut line = String::new();
        for (column, cell) in row.iter().enumerate() {
            let _ = write!(line, "{cell:<width$}  ", width = widths[column]);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
}

/// The summary as aligned tables, one per horizon and per kind.
pub fn summary_table(summary: &DeliverySummary, since: Option<Duration>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}:\n", since_line(summary, since));
    let horizons: Vec<&DeliveryRow> = summary
        .by_horizon
        .iter()
        .chain(std::iter::once(&summary.total))
        .collect();
    aligned(&mut out, "HORIZON", &horizons);
    out.push('\n');
    let kinds: Vec<&DeliveryRow> = summary
        .by_kind
        .iter()
        .chain(std::iter::once(&summary.total))
        .collect();
    aligned(&mut out, "KIND", &kinds);
    out.push('\n');
    let items: Vec<&DeliveryRow> = summary.by_item.iter().collect();
    aligned(&mut out, "ITEM", &items);
    if !summary.outcomes.is_empty() {
        let _ = writeln!(
            out,
            "\nOutcomes (spec.roadmap.outcome, measured around each promotion):\n"
        );
        for row in &summary.outcomes {
            let _ = writeln!(out, "{}/{}  {}", row.namespace, row.release, row.summary);
        }
    }
    out
}

fn markdown_table(out: &mut String, first: &str, rows: &[&DeliveryRow]) {
    let titles: Vec<String> = std::iter::once(first.to_string())
        .chain(HEADERS.iter().map(|h| {
            let mut words: Vec<String> = h.split(' ').map(|w| w.to_lowercase()).collect();
            if let Some(first) = words.first_mut() {
                let mut chars = first.chars();
                *first = chars
                    .next()
                    .map(|c| c.to_uppercase().collect::<String>() + chars.as_str())
                    .unwrap_or_default();
            }
            words.join(" ")
        }))
        .collect();
    let _ = writeln!(out, "| {} |", titles.join(" | "));
    let _ = writeln!(out, "|{}", "---|".repeat(titles.len()));
    for row in rows {
        let mut cells = cells(row);
        if row.group == "all" {
            cells[0] = "**all**".into();
        }
        let _ = writeln!(out, "| {} |", cells.join(" | "));
    }
}

/// The items and the summary as Markdown, to paste into a roadmap review.
pub fn markdown(rows: &[RoadmapRow], summary: &DeliverySummary, since: Option<Duration>) -> String {
    let mut out = String::from(
        "## Roadmap items\n\n| Namespace | Release | Item | State | Revision | Title |\n|---|---|---|---|---|---|\n",
    );
    for row in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            row.namespace,
            row.release,
            row.item,
            row.state,
            row.revision,
            row.title.replace('|', "\\|")
        );
    }
    let _ = writeln!(
        out,
        "\n## {}\n\n### By horizon\n",
        since_line(summary, since)
    );
    let horizons: Vec<&DeliveryRow> = summary
        .by_horizon
        .iter()
        .chain(std::iter::once(&summary.total))
        .collect();
    markdown_table(&mut out, "Horizon", &horizons);
    let _ = writeln!(out, "\n### By kind\n");
    let kinds: Vec<&DeliveryRow> = summary
        .by_kind
        .iter()
        .chain(std::iter::once(&summary.total))
        .collect();
    markdown_table(&mut out, "Kind", &kinds);
    let _ = writeln!(out, "\n### By item\n");
    let items: Vec<&DeliveryRow> = summary.by_item.iter().collect();
    markdown_table(&mut out, "Item", &items);
    if !summary.outcomes.is_empty() {
        let _ = writeln!(out, "\n## Outcomes\n");
        for row in &summary.outcomes {
            let _ = writeln!(
                out,
                "- {}/{}: {}",
                row.namespace,
                row.release,
                row.summary.replace('|', "\\|")
            );
        }
    }
    out
}

/// The items table followed by the summary tables (`-o table`).
pub fn table(rows: &[RoadmapRow], summary: &DeliverySummary, since: Option<Duration>) -> String {
    format!("{}\n{}", roadmap_table(rows), summary_table(summary, since))
}

/// The items and the summary as one document (`-o json`, `-o yaml`).
pub fn document(rows: &[RoadmapRow], summary: &DeliverySummary) -> serde_json::Value {
    serde_json::json!({ "items": rows, "delivery": summary })
}

/// Everything `waymark roadmap` shows for `releases` at `now`.
pub fn view(
    releases: &[Release],
    now: Timestamp,
    since: Option<Duration>,
) -> (Vec<RoadmapRow>, DeliverySummary) {
    (
        roadmap_rows(releases),
        delivery_summary(releases, now, since),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::golden::assert_golden;

    fn releases() -> Vec<Release> {
        let text = include_str!("testdata/roadmap_releases.yaml");
        text.split("\n---\n")
            .map(|document| serde_saphyr::from_str(document).expect("a Release"))
            .collect()
    }

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    const MONTH: Duration = Duration::from_secs(30 * 86_400);

    fn group<'a>(rows: &'a [DeliveryRow], name: &str) -> &'a DeliveryRow {
        rows.iter().find(|row| row.group == name).unwrap()
    }

    #[test]
    fn a_clock_reading_with_nanoseconds_prints_the_period_start_to_the_second() {
        let now: Timestamp = "2026-11-21T12:00:00.123456789Z".parse().unwrap();
        let (rows, summary) = view(&releases(), now, Some(MONTH));
        let table = table(&rows, &summary, Some(MONTH));
        assert!(
            table.contains("Delivery since 2026-10-22T12:00:00Z (last 30d)"),
            "{table}"
        );
        let document = document(&rows, &summary);
        assert_eq!(document["delivery"]["since"], "2026-10-22T12:00:00Z");
        assert!(!markdown(&rows, &summary, Some(MONTH)).contains(".123"));
    }

    #[test]
    fn counts_outcomes_per_horizon_and_kind_within_the_period() {
        let summary = delivery_summary(&releases(), now(), Some(MONTH));
        // In the last 30 days: 10 finished, one superseded (left out), one older than 30 days.
        assert_eq!(summary.total.deliveries, 10);
        assert_eq!(
            (
                summary.total.promoted,
                summary.total.rolled_back,
                summary.total.aborted
            ),
            (6, 3, 1)
        );
        let now_row = group(&summary.by_horizon, "now");
        assert_eq!(
            (
                now_row.deliveries,
                now_row.promoted,
                now_row.rolled_back,
                now_row.aborted
            ),
            (5, 3, 1, 1)
        );
        assert_eq!(now_row.change_failure_rate, Some(0.4));
        assert!((now_row.share.unwrap() - 5.0 / 10.0).abs() < 1e-9);
        // Restores of 2m30s and 5m: the median is their mean.
        assert_eq!(now_row.median_time_to_restore_seconds, Some(225.0));
        let later = group(&summary.by_horizon, "later");
        assert_eq!(
            (later.deliveries, later.share, later.change_failure_rate),
            (0, Some(0.0), None)
        );
        assert_eq!(group(&summary.by_horizon, "unset").deliveries, 3);
        let security = group(&summary.by_kind, "security");
        assert_eq!((security.promoted, security.rolled_back), (1, 1));
        assert_eq!(
            security.median_time_to_restore_seconds, None,
            "a progress-deadline rollback has no failing analysis to restore from"
        );
        assert_eq!(
            group(&summary.by_kind, "experiment").median_time_to_restore_seconds,
            Some(300.0)
        );
    }

    #[test]
    fn without_a_period_every_entry_counts_and_without_any_there_are_no_rates() {
        let summary = delivery_summary(&releases(), now(), None);
        assert_eq!(summary.total.deliveries, 11);
        assert_eq!(summary.since, None);
        let empty = delivery_summary(&[], now(), Some(MONTH));
        assert_eq!(empty.total.deliveries, 0);
        assert_eq!(empty.total.change_failure_rate, None);
        assert!(empty.by_horizon.iter().all(|row| row.group != "unset"));
    }

    #[test]
    fn rework_is_counted_per_horizon_kind_and_item_over_promotions() {
        let summary = delivery_summary(&releases(), now(), Some(MONTH));
        // PAY-139 promoted on the 15th and again on the 18th: the second is rework.
        let item = group(&summary.by_item, "PAY-139");
        assert_eq!(
            (item.promoted, item.rework, item.rework_rate),
            (2, 1, Some(0.5))
        );
        let now_row = group(&summary.by_horizon, "now");
        assert_eq!((now_row.rework, now_row.rework_rate), (1, Some(1.0 / 3.0)));
        assert_eq!(group(&summary.by_kind, "feature").rework, 1);
        assert_eq!(group(&summary.by_kind, "debt").rework_rate, Some(0.0));
        assert_eq!(group(&summary.by_kind, "experiment").rework_rate, None);
        assert_eq!((summary.total.rework, summary.total.promoted), (1, 6));
    }

    #[test]
    fn each_items_newest_outcome_is_shown_with_how_long_it_is_live() {
        let summary = delivery_summary(&releases(), now(), Some(MONTH));
        let lines: Vec<&str> = summary
            .outcomes
            .iter()
            .map(|row| row.summary.as_str())
            .collect();
        assert_eq!(
            lines,
            [
                "PAY-139: live 3d; checkout-conversion +3.1% (goal +2%): met",
                "SEC-31: live 1d; ledger-p99-seconds (goal -0.05): baseline 0.42, after number due 7d after promotion",
            ]
        );
    }

    #[test]
    fn table_markdown_and_json_match_their_golden_files() {
        let (rows, summary) = view(&releases(), now(), Some(MONTH));
        assert_golden("roadmap.txt", &table(&rows, &summary, Some(MONTH)));
        assert_golden("roadmap.md", &markdown(&rows, &summary, Some(MONTH)));
        let json = serde_json::to_string_pretty(&document(&rows, &summary)).unwrap() + "\n";
        assert_golden("roadmap.json", &json);
    }
}
