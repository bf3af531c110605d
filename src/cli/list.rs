//! `waymark list` (and `waymark status` without a name): one line per Release, the way
//! `kubectl get` prints a table: where each stands, its step, weight and roadmap item.

use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;

use super::connect::KubeArgs;
use crate::api::Release;

/// `waymark list`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ListArgs {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// List the Releases of every namespace (adds a NAMESPACE column).
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// The column titles, NAMESPACE first when every namespace is listed.
const TITLES: [&str; 7] = [
    "NAMESPACE",
    "NAME",
    "PHASE",
    "STEP",
    "WEIGHT",
    "ROADMAP ITEM",
    "AGE",
];

/// The table `waymark list` prints for `releases` at `now`, sorted by namespace and name;
/// `all_namespaces` adds the NAMESPACE column. A value the status does not hold yet (a Release
/// the controller has not seen) is `-`.
pub fn table(releases: &[Release], now: Timestamp, all_namespaces: bool) -> String {
    let mut rows: Vec<[String; 7]> = releases.iter().map(|r| row(r, now)).collect();
    rows.sort_by(|a, b| (&a[0], &a[1]).cmp(&(&b[0], &b[1])));
    let header = TITLES.map(String::from);
    let first = usize::from(!all_namespaces);
    let all: Vec<&[String; 7]> = std::iter::once(&header).chain(&rows).collect();
    let widths: Vec<usize> = (0..TITLES.len())
        .map(|column| {
            all.iter()
                .map(|row| row[column].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in all {
        let mut line = String::new();
        for column in first..TITLES.len() {
            // Three spaces between columns, as kubectl's tables have.
            let _ = write!(line, "{:<width$}   ", row[column], width = widths[column]);
        }
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// What `waymark list` prints when there is no Release to show, as kubectl says it.
pub fn nothing_found(namespace: Option<&str>) -> String {
    match namespace {
        Some(namespace) => format!("No releases found in namespace {namespace}.\n"),
        None => "No releases found.\n".to_string(),
    }
}

/// One Release's cells, in [`TITLES`] order.
fn row(release: &Release, now: Timestamp) -> [String; 7] {
    let status = release.status.clone().unwrap_or_default();
    let dash = || "-".to_string();
    [
        release.metadata.namespace.clone().unwrap_or_else(dash),
        release.metadata.name.clone().unwrap_or_else(dash),
        status.phase.map_or_else(dash, |phase| phase.to_string()),
        status.step_progress.unwrap_or_else(dash),
        status
            .canary_weight
            .map_or_else(dash, |weight| weight.to_string()),
        status
            .roadmap_item
            .unwrap_or_else(|| release.spec.roadmap.item.clone()),
        release
            .metadata
            .creation_timestamp
            .as_ref()
            .map_or_else(dash, |created| age(created.0, now)),
    ]
}

/// How long ago `created` was, in kubectl's AGE style: the two largest units while they say
/// something a person reads at a glance (`90s`, `5m30s`, `45m`, `5h30m`, `36h`, `3d4h`,
/// `120d`, `2y10d`), one unit beyond.
pub fn age(created: Timestamp, now: Timestamp) -> String {
    let seconds = now.as_second() - created.as_second();
    if seconds < -1 {
        return "<invalid>".to_string();
    }
    let seconds = seconds.max(0);
    let (minutes, hours) = (seconds / 60, seconds / 3600);
    let days = hours / 24;
    let two = |big: i64, big_unit: &str, small: i64, small_unit: &str| {
        if small == 0 {
            format!("{big}{big_unit}")
        } else {
            format!("{big}{big_unit}{small}{small_unit}")
        }
    };
    match () {
        () if seconds < 120 => format!("{seconds}s"),
        () if minutes < 10 => two(minutes, "m", seconds % 60, "s"),
        () if minutes < 180 => format!("{minutes}m"),
        () if hours < 8 => two(hours, "h", minutes % 60, "m"),
        () if hours < 48 => format!("{hours}h"),
        () if hours < 24 * 8 => two(days, "d", hours % 24, "h"),
        () if days < 365 * 2 => format!("{days}d"),
        () if days < 365 * 8 => two(days / 365, "y", days % 365, "d"),
        () => format!("{}y", days / 365),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Phase, ReleaseStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn now() -> Timestamp {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    fn ago(seconds: i64) -> Timestamp {
        Timestamp::from_second(now().as_second() - seconds).unwrap()
    }

    fn release(namespace: &str, name: &str, age_seconds: i64, status: ReleaseStatus) -> Release {
        let mut release = crate::cli::fixtures::release_in(Phase::Healthy, None);
        release.metadata.namespace = Some(namespace.into());
        release.metadata.name = Some(name.into());
        release.metadata.creation_timestamp = Some(Time(ago(age_seconds)));
        release.status = Some(status);
        release
    }

    fn releases() -> Vec<Release> {
        vec![
            release(
                "shop",
                "search",
                3 * 86_400 + 4 * 3600,
                ReleaseStatus {
                    phase: Some(Phase::Healthy),
                    canary_weight: Some(0),
                    roadmap_item: Some("SRCH-8".into()),
                    ..Default::default()
                },
            ),
            release(
                "shop",
                "checkout",
                330,
                ReleaseStatus {
                    phase: Some(Phase::Progressing),
                    step_progress: Some("2/4".into()),
                    canary_weight: Some(20),
                    roadmap_item: Some("PAY-142".into()),
                    ..Default::default()
                },
            ),
            release("payments", "ledger", 45, ReleaseStatus::default()),
        ]
    }

    #[test]
    fn one_namespace_lists_name_phase_step_weight_item_and_age() {
        let shop: Vec<Release> = releases()
            .into_iter()
            .filter(|r| r.metadata.namespace.as_deref() == Some("shop"))
            .collect();
        assert_eq!(
            table(&shop, now(), false),
            "\
NAME       PHASE         STEP   WEIGHT   ROADMAP ITEM   AGE
checkout   Progressing   2/4    20       PAY-142        5m30s
search     Healthy       -      0        SRCH-8         3d4h
"
        );
    }

    #[test]
    fn all_namespaces_adds_the_namespace_column_and_sorts_by_it() {
        assert_eq!(
            table(&releases(), now(), true),
            "\
NAMESPACE   NAME       PHASE         STEP   WEIGHT   ROADMAP ITEM   AGE
payments    ledger     -             -      -        PAY-142        45s
shop        checkout   Progressing   2/4    20       PAY-142        5m30s
shop        search     Healthy       -      0        SRCH-8         3d4h
",
            "a Release the controller has not seen shows dashes and its spec's item"
        );
    }

    #[test]
    fn nothing_found_names_the_namespace_searched() {
        assert_eq!(
            nothing_found(Some("shop")),
            "No releases found in namespace shop.\n"
        );
        assert_eq!(nothing_found(None), "No releases found.\n");
    }

    #[test]
    fn ages_read_as_kubectl_prints_them() {
        for (seconds, expected) in [
            (0, "0s"),
            (119, "119s"),
            (120, "2m"),
            (330, "5m30s"),
            (600, "10m"),
            (179 * 60, "179m"),
            (3 * 3600, "3h"),
            (5 * 3600 + 30 * 60, "5h30m"),
            (36 * 3600, "36h"),
            (3 * 86_400 + 4 * 3600, "3d4h"),
            (120 * 86_400, "120d"),
            ((2 * 365 + 10) * 86_400, "2y10d"),
            (9 * 365 * 86_400, "9y"),
        ] {
            assert_eq!(age(ago(seconds), now()), expected, "{seconds}s");
        }
        assert_eq!(
            age(ago(-60), now()),
            "<invalid>",
            "a clock behind the server"
        );
    }
}
