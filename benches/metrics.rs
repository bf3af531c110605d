//! What `/metrics` costs for N Releases: series lines and bytes of one scrape, the time to
//! encode it, and the process's resident memory before and after.
//!
//! Run with `cargo bench --bench metrics` (optionally `-- --releases N --items K`). Each Release
//! has delivered K roadmap items (all promoted) and has a canary of one more item running at
//! 50%, the state a Release spends most of a canary wave in.

use tokio::time::Instant;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use waymark::api::{HistoryEntry, Horizon, Outcome, Phase, ReleaseStatus, RoadmapKind};
use waymark::controller::Metrics;
use waymark::controller::metrics::DELIVERY_SERIES_KEPT;

/// Resident and peak resident memory of this process, in MiB (Linux's `/proc/self/status`).
fn memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|kib| kib.parse::<f64>().ok())
            .map_or(f64::NAN, |kib| kib / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

fn argument(name: &str, default: usize) -> usize {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

fn status(release: usize, items: usize, start: Timestamp) -> ReleaseStatus {
    let at = |minutes: i64| Time(start + SignedDuration::from_mins(minutes));
    let history = (0..items)
        .rev()
        .map(|item| HistoryEntry {
            revision: format!("{release:05}{item:05}"),
            roadmap_item: format!("ITEM-{item}"),
            outcome: Outcome::Promoted,
            started_at: Some(at(item as i64 * 60)),
            finished_at: at(item as i64 * 60 + 20),
            failure_detected_at: None,
            reason: "Promoted".into(),
            message: None,
            horizon: Some(Horizon::Now),
            kind: Some(RoadmapKind::Feature),
            timeline: Vec::new(),
            roadmap_outcome: None,
            rework: false,
        })
        .collect();
    ReleaseStatus {
        phase: Some(Phase::Progressing),
        roadmap_item: Some(format!("ITEM-{items}")),
        roadmap_horizon: Some(Horizon::Now),
        roadmap_kind: Some(RoadmapKind::Feature),
        canary_revision: Some(format!("{release:05}canary")),
        canary_weight: Some(50),
        history,
        ..ReleaseStatus::default()
    }
}

fn main() {
    let releases = argument("--releases", 1_000);
    let items = argument("--items", 1);
    let start: Timestamp = "2026-03-01T12:00:00Z"
        .parse()
        .unwrap_or(Timestamp::UNIX_EPOCH);
    let (rss_start, _) = memory();

    let metrics = Metrics::default();
    for release in 0..releases {
        let name = format!("rel-{release:05}");
        // Each past item was observed as it finished, then the current canary.
        for done in 0..=items {
            metrics.observe_release("bench", &name, None, &status(release, done, start));
        }
    }
    let (rss_built, _) = memory();

    println!(
        "Waymark metrics bench: {releases} Releases, each with {items} promoted roadmap item(s) \
         and a canary of one more at 50%"
    );
    println!(
        "| when | series lines per Release | bytes per scrape | largest part | encode (median of 5) | RSS before | RSS with series | RSS after 5 scrapes | peak RSS |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    scrape(&metrics, releases, "just after", rss_start, rss_built);
    // The finished items' series go once kept long enough; the running canary's stay.
    metrics.sweep_delivery_series(Instant::now() + DELIVERY_SERIES_KEPT);
    let (rss_swept, _) = memory();
    scrape(&metrics, releases, "once swept", rss_start, rss_swept);
}

/// Scrape five times as `/metrics` does, part by part (never the whole text at once), and
/// print a row: what one scrape sends, its largest part, and what the process took.
fn scrape(metrics: &Metrics, releases: usize, when: &str, rss_start: f64, rss_built: f64) {
    let mut times = Vec::new();
    let (mut bytes, mut largest, mut lines) = (0, 0, 0);
    for _ in 0..5 {
        let begun = Instant::now();
        (bytes, largest, lines) = (0, 0, 0);
        for index in 0.. {
            let Some(part) = metrics.encode_part(index) else {
                break;
            };
            let part = part.unwrap_or_else(|error| panic!("encoding the metrics failed: {error}"));
            bytes += part.len();
            largest = largest.max(part.len());
            lines += part
                .lines()
                .filter(|line| !line.starts_with('#') && line.contains("release=\""))
                .count();
        }
        times.push(begun.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let (rss_scraped, peak) = memory();
    println!(
        "| {when} | {:.1} | {:.1} MB | {:.2} MB | {:.0} ms | {rss_start:.1} MiB | {rss_built:.1} MiB | {rss_scraped:.1} MiB | {peak:.1} MiB |",
        lines as f64 / releases.max(1) as f64,
        bytes as f64 / 1e6,
        largest as f64 / 1e6,
        times[times.len() / 2],
    );
}
