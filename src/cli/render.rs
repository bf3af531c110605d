//! What `waymark status` and `waymark roadmap` print: the release as a person reads it.

use std::fmt::Write;

use k8s_openapi::jiff::Timestamp;

use crate::api::{AnalysisStatus, Phase, Release, ReleaseSpec, ReleaseStatus, RoleAnalysis, Step};

/// What `waymark status` reads beside the Release: the clock, and the pods of the child
/// Deployments (counts that move while pods start, so the status does not hold them).
#[derive(Clone, Debug)]
pub struct Live {
    /// Now, for the time left in a pause.
    pub now: Option<Timestamp>,
    /// `role available/wanted` of each child Deployment found, or why they could not be read.
    pub pods: Result<Vec<PodCount>, String>,
}

impl Default for Live {
    fn default() -> Self {
        Self {
            now: None,
            pods: Ok(Vec::new()),
        }
    }
}

/// Pods of one child Deployment as its status reports them.
#[derive(Clone, Debug, PartialEq)]
pub struct PodCount {
    /// `stable` or `canary`.
    pub role: &'static str,
    /// `status.availableReplicas`.
    pub available: i32,
    /// `spec.replicas`.
    pub wanted: i32,
}

/// `at` without its fraction of a second: every time the CLI prints (RFC 3339, UTC) is to the
/// second, as the status' own times are, never a clock reading's nanoseconds.
pub fn to_the_second(at: Timestamp) -> Timestamp {
    Timestamp::from_second(at.as_second()).unwrap_or(at)
}

/// Render one Release for `waymark status`, with what was read live.
pub fn status_text(release: &Release, live: &Live) -> String {
    let mut out = String::new();
    let status = release.status.clone().unwrap_or_default();
    header_text(&mut out, release, &status, live);
    steps_text(&mut out, &release.spec, &status);
    if let Some(analysis) = &status.analysis {
        out.push('\n');
        analysis_text(&mut out, analysis, release.spec.analysis.as_ref());
    }
    conditions_text(&mut out, &status);
    history_text(&mut out, &status);
    out
}

/// Who the release is, where it stands, what runs, and what waits: one line each.
fn header_text(out: &mut String, release: &Release, status: &ReleaseStatus, live: &Live) {
    let namespace = release.metadata.namespace.as_deref().unwrap_or_default();
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let spec = &release.spec;
    let _ = writeln!(out, "Release:   {namespace}/{name}");
    let mut roadmap = spec.roadmap.tagged();
    if let Some(title) = &spec.roadmap.title {
        let _ = write!(roadmap, " — {title}");
    }
    if let Some(url) = &spec.roadmap.url {
        let _ = write!(roadmap, " <{url}>");
    }
    let _ = writeln!(out, "Roadmap:   {roadmap}");
    if let Some(objective) = &spec.roadmap.objective {
        let _ = writeln!(out, "Objective: {objective}");
    }
    let phase = status
        .phase
        .map_or("Unknown (not reconciled yet)".to_string(), |p| {
            p.to_string()
        });
    match &status.reason {
        Some(reason) => {
            let _ = writeln!(out, "Phase:     {phase} ({reason})");
        }
        None => {
            let _ = writeln!(out, "Phase:     {phase}");
        }
    }
    if let Some(message) = &status.message {
        let _ = writeln!(out, "Message:   {message}");
    }
    let stable = match (&status.stable_revision, &status.stable_roadmap_item) {
        (Some(revision), Some(item)) => format!("{revision} ({item})"),
        (Some(revision), None) => revision.clone(),
        _ => "none yet".to_string(),
    };
    let _ = writeln!(out, "Stable:    {stable}");
    if let Some(canary) = &status.canary_revision {
        let weight = status.canary_weight.unwrap_or(0);
        let _ = writeln!(
            out,
            "Canary:    {canary} ({}), {weight}% of traffic",
            spec.roadmap.item
        );
    }
    if !status.traffic.is_empty() {
        let _ = writeln!(out, "Routes:    {}", route_additions_text(&status.traffic));
    }
    match &live.pods {
        Ok(pods) if !pods.is_empty() => {
            let counts: Vec<String> = pods
                .iter()
                .map(|p| format!("{} {}/{} available", p.role, p.available, p.wanted))
                .collect();
            let _ = writeln!(out, "Pods:      {}", counts.join(", "));
        }
        Ok(_) => {}
        Err(why) => {
            let _ = writeln!(out, "Pods:      not read: {why}");
        }
    }
    if let Some(until) = status
        .pause_until
        .as_ref()
        .filter(|_| status.canary_revision.is_some())
    {
        let left = live.now.map(|now| {
            let seconds = (until.0.as_second() - now.as_second()).max(0);
            format!(
                " ({} left)",
                crate::api::Duration::from_secs(seconds.unsigned_abs())
            )
        });
        let _ = writeln!(
            out,
            "Pause:     until {}{}",
            to_the_second(until.0),
            left.unwrap_or_default()
        );
    }
    if let Some(request) = &status.request
        && status.handled_request.as_deref() != Some(request.id.as_str())
    {
        let _ = writeln!(
            out,
            "Pending:   {} requested at {}{}",
            crate::cli::request::verb(request.action),
            to_the_second(request.requested_at.0),
            request
                .requested_by
                .as_deref()
                .map(|who| format!(" by {who}"))
                .unwrap_or_default()
        );
    }
}

/// The steps, the current one marked.
fn steps_text(out: &mut String, spec: &ReleaseSpec, status: &ReleaseStatus) {
    let _ = writeln!(out, "\nSteps:");
    if spec.steps.is_empty() {
        let _ = writeln!(out, "  (none: a new revision is promoted once available)");
    }
    let current = status.canary_revision.as_ref().and(status.current_step);
    for (index, step) in spec.steps.iter().enumerate() {
        let marker = if current == Some(index as i32) {
            "->"
        } else {
            "  "
        };
        let _ = writeln!(out, "  {marker} {}. {}", index + 1, step_text(step));
    }
}

/// The standard conditions, one per line.
fn conditions_text(out: &mut String, status: &ReleaseStatus) {
    if !status.conditions.is_empty() {
        let _ = writeln!(out, "\nConditions:");
        for condition in &status.conditions {
            let _ = writeln!(
                out,
                "  {:<16} {:<6} {:<24} {}",
                condition.type_, condition.status, condition.reason, condition.message
            );
        }
    }
}

/// The finished revisions, newest first.
fn history_text(out: &mut String, status: &ReleaseStatus) {
    if !status.history.is_empty() {
        let _ = writeln!(out, "\nHistory (newest first):");
        for entry in &status.history {
            let _ = writeln!(
                out,
                "  {}  {:<12} {:<10} {}  {}{}",
                entry.revision,
                entry.roadmap_item,
                format!("{:?}", entry.outcome),
                to_the_second(entry.finished_at.0),
                entry.reason,
                entry
                    .message
                    .as_deref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            );
            if entry.rework {
                let _ = writeln!(
                    out,
                    "    rework: {} was promoted before within spec.roadmap.reworkWindow",
                    entry.roadmap_item
                );
            }
            if let Some(record) = &entry.roadmap_outcome {
                let _ = writeln!(
                    out,
                    "    outcome: {}",
                    crate::analysis::roadmap_outcome::describe(record)
                );
            }
        }
    }
}

/// One step in words (`setWeight 20%`, `pause 5m`, `setHeaderRoute beta (header x=1)`), as the
/// status and the dashboard show it.
pub fn step_text(step: &Step) -> String {
    if let Some(cohort) = &step.set_header_route {
        return match &cohort.route_match {
            Some(route_match) => format!(
                "setHeaderRoute {} ({})",
                cohort.name,
                route_match_text(route_match)
            ),
            None => format!("setHeaderRoute {} removed", cohort.name),
        };
    }
    if let Some(mirror) = &step.set_mirror_route {
        return match (mirror.percent, &mirror.route_match) {
            (Some(percent), None) => format!("setMirrorRoute {} {percent}%", mirror.name),
            (Some(percent), Some(route_match)) => format!(
                "setMirrorRoute {} {percent}% ({})",
                mirror.name,
                route_match_text(route_match)
            ),
            (None, _) => format!("setMirrorRoute {} removed", mirror.name),
        };
    }
    match (&step.set_weight, &step.pause) {
        (Some(weight), _) => format!("setWeight {weight}%"),
        (None, Some(pause)) => match &pause.duration {
            Some(duration) => format!("pause {duration}"),
            None => "pause until `waymark promote`".to_string(),
        },
        (None, None) => "(empty step)".to_string(),
    }
}

/// A match as people read it: `header x-canary=true, cookie beta~^y`, `~` for a regular
/// expression.
fn route_match_text(route_match: &crate::api::RouteMatch) -> String {
    let lists = [
        ("header", &route_match.headers),
        ("cookie", &route_match.cookies),
        ("query", &route_match.query_params),
    ];
    let mut parts = Vec::new();
    for (kind, values) in lists {
        for value in values {
            let operator = match value.match_type {
                crate::api::MatchType::Exact => "=",
                crate::api::MatchType::RegularExpression => "~",
            };
            parts.push(format!("{kind} {}{operator}{}", value.name, value.value));
        }
    }
    parts.join(", ")
}

/// The active cohorts and mirrors, with what each takes.
fn route_additions_text(additions: &crate::api::RouteAdditions) -> String {
    let cohorts = additions.cohorts.iter().map(|cohort| {
        format!(
            "cohort {} ({}) to the canary",
            cohort.name,
            route_match_text(&cohort.route_match)
        )
    });
    let mirrors = additions
        .mirrors
        .iter()
        .map(|mirror| match &mirror.route_match {
            Some(route_match) => format!(
                "mirror {} copying {}% ({}) to the canary",
                mirror.name,
                mirror.percent,
                route_match_text(route_match)
            ),
            None => format!(
                "mirror {} copying {}% to the canary",
                mirror.name, mirror.percent
            ),
        });
    cohorts.chain(mirrors).collect::<Vec<_>>().join("; ")
}

/// The last analysis with its numbers per role, window and check, as lines of text.
pub fn analysis_text(
    out: &mut String,
    analysis: &AnalysisStatus,
    spec: Option<&crate::api::Analysis>,
) {
    let at = analysis
        .last_run_at
        .as_ref()
        .map(|time| format!(" at {}", to_the_second(time.0)))
        .unwrap_or_default();
    let _ = writeln!(out, "Analysis:  {}{at}", analysis.verdict);
    if let Some(summary) = &analysis.summary {
        let _ = writeln!(out, "  {summary}");
    }
    let limits = spec.map(|spec| {
        (
            spec.failure_limit,
            spec.inconclusive_limit,
            spec.error_limit,
        )
    });
    match limits {
        Some((failure, inconclusive, error)) => {
            let _ = writeln!(
                out,
                "  in a row: {}/{failure} failing, {}/{inconclusive} inconclusive, {}/{error} errors",
                analysis.consecutive_failures,
                analysis.consecutive_inconclusive,
                analysis.consecutive_errors
            );
        }
        None => {
            let _ = writeln!(
                out,
                "  in a row: {} failing, {} inconclusive, {} errors",
                analysis.consecutive_failures,
                analysis.consecutive_inconclusive,
                analysis.consecutive_errors
            );
        }
    }
    for (role, result) in [("canary", &analysis.canary), ("stable", &analysis.stable)] {
        if let Some(result) = result {
            role_text(out, role, result);
        }
    }
    for comparison in &analysis.comparison {
        let _ = writeln!(
            out,
            "  canary vs stable over {}: {} — {}",
            comparison.window, comparison.verdict, comparison.detail
        );
    }
    if !analysis.checks.is_empty() {
        let _ = writeln!(out, "  checks:");
        for check in &analysis.checks {
            let value = check
                .value
                .map_or("no value".to_string(), |v| format!("{v:.4}"));
            let mut limits = Vec::new();
            if let Some(min) = check.min {
                limits.push(format!("min {min}"));
            }
            if let Some(max) = check.max {
                limits.push(format!("max {max}"));
            }
            let note = aside(check.note.as_deref(), " ");
            let _ = writeln!(
                out,
                "    {:<20} {value} against {}: {}{note}",
                check.name,
                limits.join(", "),
                check.verdict
            );
        }
    }
    if let Some(remaining) = analysis.error_budget_remaining {
        let _ = writeln!(out, "  error budget remaining: {:.1}%", remaining * 100.0);
    }
}

fn role_text(out: &mut String, role: &str, result: &RoleAnalysis) {
    let _ = writeln!(
        out,
        "  {role} (Service {}): {}",
        result.service, result.verdict
    );
    let _ = writeln!(
        out,
        "    {:<8} {:>12} {:>10} {:>9} {:>7}",
        "window", "error ratio", "requests", "burn", "limit"
    );
    for window in &result.windows {
        let ratio = window
            .error_ratio
            .map_or("-".to_string(), |r| format!("{:.3}%", r * 100.0));
        let requests = window
            .requests
            .map_or("-".to_string(), |r| format!("{r:.0}"));
        let burn = window
            .burn_rate
            .map_or("-".to_string(), |b| format!("{b:.1}x"));
        let note = aside(window.note.as_deref(), "  ");
        let _ = writeln!(
            out,
            "    {:<8} {ratio:>12} {requests:>10} {burn:>9} {:>6}x{note}",
            window.window, window.max
        );
    }
}

/// `note` in parentheses after `gap`, or nothing when there is no note.
fn aside(note: Option<&str>, gap: &str) -> String {
    note.map(|note| format!("{gap}({note})"))
        .unwrap_or_default()
}

/// One line of `waymark roadmap`.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoadmapRow {
    /// Namespace of the Release.
    pub namespace: String,
    /// Name of the Release.
    pub release: String,
    /// The roadmap item.
    pub item: String,
    /// `live`, `rolling out (n%)`, `paused`, `rolled back` or `degraded`.
    pub state: String,
    /// Template revision.
    pub revision: String,
    /// The item's title, when given.
    pub title: String,
}

/// Which roadmap items are live, rolling out or rolled back, one row per item and release.
pub fn roadmap_rows(releases: &[Release]) -> Vec<RoadmapRow> {
    let mut rows = Vec::new();
    for release in releases {
        let namespace = release.metadata.namespace.clone().unwrap_or_default();
        let name = release.metadata.name.clone().unwrap_or_default();
        let status = release.status.clone().unwrap_or_default();
        let spec_item = release.spec.roadmap.item.clone();
        let title = release.spec.roadmap.title.clone().unwrap_or_default();
        let row =
            |item: String, state: String, revision: Option<&String>, title: String| RoadmapRow {
                namespace: namespace.clone(),
                release: name.clone(),
                item,
                state,
                revision: revision.cloned().unwrap_or_else(|| "-".into()),
                title,
            };
        if let Some(stable) = &status.stable_revision {
            let live_item = status
                .stable_roadmap_item
                .clone()
                .unwrap_or_else(|| spec_item.clone());
            let live_title = if live_item == spec_item {
                title.clone()
            } else {
                String::new()
            };
            rows.push(row(live_item, "live".into(), Some(stable), live_title));
        }
        let canary_state = match status.phase {
            Some(Phase::Progressing) => Some(format!(
                "rolling out ({}%)",
                status.canary_weight.unwrap_or(0)
            )),
            Some(Phase::Paused) => Some(format!("paused ({}%)", status.canary_weight.unwrap_or(0))),
            Some(Phase::RolledBack) => Some("rolled back".to_string()),
            Some(Phase::Degraded) => Some("degraded".to_string()),
            Some(Phase::Healthy) | None => None,
        };
        let canary_revision = status
            .canary_revision
            .as_ref()
            .or(status.rolled_back_revision.as_ref());
        if let Some(state) = canary_state
            && (canary_revision.is_some() || status.stable_revision.is_none())
        {
            rows.push(row(
                spec_item.clone(),
                state,
                canary_revision,
                title.clone(),
            ));
        }
    }
    rows.sort_by(|a, b| (&a.namespace, &a.release).cmp(&(&b.namespace, &b.release)));
    rows
}

/// The rows as an aligned table with a header.
pub fn roadmap_table(rows: &[RoadmapRow]) -> String {
    let header = RoadmapRow {
        namespace: "NAMESPACE".into(),
        release: "RELEASE".into(),
        item: "ROADMAP ITEM".into(),
        state: "STATE".into(),
        revision: "REVISION".into(),
        title: "TITLE".into(),
    };
    let all: Vec<&RoadmapRow> = std::iter::once(&header).chain(rows).collect();
    let width =
        |field: fn(&RoadmapRow) -> &str| all.iter().map(|row| field(row).len()).max().unwrap_or(0);
    let widths = [
        width(|r| &r.namespace),
        width(|r| &r.release),
        width(|r| &r.item),
        width(|r| &r.state),
        width(|r| &r.revision),
    ];
    let mut out = String::new();
    for row in all {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:<w2$}  {:<w3$}  {:<w4$}  {}",
            row.namespace,
            row.release,
            row.item,
            row.state,
            row.revision,
            row.title,
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2],
            w3 = widths[3],
            w4 = widths[4],
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_from_the_status_print_to_the_second() {
        let mut release = crate::cli::fixtures::release_in(Phase::Paused, Some("6f9c7d"));
        let precise: Timestamp = "2026-12-06T11:00:00.123456789Z".parse().unwrap();
        let status = release.status.as_mut().unwrap();
        status.pause_until = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            precise,
        ));
        let text = status_text(&release, &Live::default());
        assert!(text.contains("until 2026-12-06T11:00:00Z"), "{text}");
        assert!(!text.contains(".123"), "{text}");
    }
    use crate::api::{AnalysisStatus, HistoryEntry, Outcome, RoleAnalysis, Verdict, WindowResult};
    use crate::cli::fixtures::release_in;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    #[test]
    fn status_shows_the_route_steps_and_the_active_cohorts_and_mirrors() {
        use crate::fixtures::{header_route, mirror_route, remove_cohort};
        let mut release = release_in(Phase::Progressing, Some("6f9c7d"));
        let steps = vec![
            header_route("beta", "x-canary", "true"),
            mirror_route("shadow", 20),
            remove_cohort("beta"),
        ];
        release.spec.steps = steps.clone();
        let status = release.status.as_mut().unwrap();
        status.current_step = Some(2);
        status.traffic = crate::api::RouteAdditions::after_steps(&steps[..2]);
        let text = status_text(&release, &Live::default());
        assert!(
            text.contains("1. setHeaderRoute beta (header x-canary=true)"),
            "{text}"
        );
        assert!(text.contains("2. setMirrorRoute shadow 20%"), "{text}");
        assert!(text.contains("-> 3. setHeaderRoute beta removed"), "{text}");
        assert!(
            text.contains(
                "Routes:    cohort beta (header x-canary=true) to the canary; mirror shadow \
                 copying 20% to the canary"
            ),
            "{text}"
        );
        release.status.as_mut().unwrap().traffic = Default::default();
        let text = status_text(&release, &Live::default());
        assert!(!text.contains("Routes:"), "{text}");
    }

    #[test]
    fn status_marks_the_current_step_and_shows_weight_and_revisions() {
        let mut release = release_in(Phase::Progressing, Some("6f9c7d"));
        let status = release.status.as_mut().unwrap();
        status.current_step = Some(2);
        status.canary_weight = Some(50);
        status.stable_revision = Some("5d8b9c".into());
        status.stable_roadmap_item = Some("PAY-139".into());
        status.reason = Some("AnalysisPassing".into());
        let text = status_text(&release, &Live::default());
        assert!(
            text.contains("Phase:     Progressing (AnalysisPassing)"),
            "{text}"
        );
        assert!(text.contains("Stable:    5d8b9c (PAY-139)"), "{text}");
        assert!(
            text.contains("Canary:    6f9c7d (PAY-142), 50% of traffic"),
            "{text}"
        );
        assert!(text.contains("  -> 3. setWeight 50%"), "{text}");
        assert!(text.contains("     1. setWeight 10%"), "{text}");
        assert!(text.contains("4. pause until `waymark promote`"), "{text}");
        assert!(text.contains("2. pause 2m"), "{text}");
        assert!(
            text.contains("Roadmap:   PAY-142 — One-click checkout"),
            "{text}"
        );
        release.spec.roadmap.horizon = Some(crate::api::Horizon::Now);
        release.spec.roadmap.kind = Some(crate::api::RoadmapKind::Feature);
        let text = status_text(&release, &Live::default());
        assert!(
            text.contains("Roadmap:   PAY-142 (now, feature) — One-click checkout"),
            "{text}"
        );
    }

    #[test]
    fn status_shows_live_pods_and_the_time_left_in_a_pause() {
        let mut release = release_in(Phase::Progressing, Some("6f9c7d"));
        let until: k8s_openapi::jiff::Timestamp = "2026-03-01T12:02:00Z".parse().unwrap();
        release.status.as_mut().unwrap().pause_until = Some(Time(until));
        let live = Live {
            now: Some("2026-03-01T12:00:30Z".parse().unwrap()),
            pods: Ok(vec![
                PodCount {
                    role: "stable",
                    available: 4,
                    wanted: 4,
                },
                PodCount {
                    role: "canary",
                    available: 1,
                    wanted: 2,
                },
            ]),
        };
        let text = status_text(&release, &live);
        assert!(
            text.contains("Pods:      stable 4/4 available, canary 1/2 available"),
            "{text}"
        );
        assert!(
            text.contains("Pause:     until 2026-03-01T12:02:00Z (1m30s left)"),
            "{text}"
        );

        // Past its end (the controller has not moved on yet): nothing left, never negative.
        let late = Live {
            now: Some("2026-03-01T12:05:00Z".parse().unwrap()),
            pods: Err("deployments is forbidden (Forbidden)".into()),
        };
        let text = status_text(&release, &late);
        assert!(text.contains("(0s left)"), "{text}");
        assert!(
            text.contains("Pods:      not read: deployments is forbidden (Forbidden)"),
            "{text}"
        );

        // No canary: a stale pauseUntil is not shown.
        let mut settled = release_in(Phase::Healthy, None);
        settled.status.as_mut().unwrap().pause_until = Some(Time(until));
        assert!(!status_text(&settled, &live).contains("Pause:"));
    }

    #[test]
    fn status_shows_each_window_with_value_and_limit() {
        let mut release = release_in(Phase::Progressing, Some("6f9c7d"));
        release.status.as_mut().unwrap().analysis = Some(AnalysisStatus {
            verdict: Verdict::Failing,
            last_run_at: Some(Time("2026-11-21T12:00:00Z".parse().unwrap())),
            revision: Some("6f9c7d".into()),
            summary: Some("canary burns 21.3x of 14.4x over 5m and 1m (4,812 requests)".into()),
            burn: Some("21.3x/14.4x".into()),
            canary: Some(RoleAnalysis {
                verdict: Verdict::Failing,
                service: "checkout-canary".into(),
                windows: vec![WindowResult {
                    window: "5m".into(),
                    error_ratio: Some(0.0213),
                    requests: Some(4812.0),
                    burn_rate: Some(21.3),
                    max: 14.4,
                    note: None,
                    error_query: "e".into(),
                    total_query: "t".into(),
                }],
            }),
            consecutive_failures: 1,
            error_budget_remaining: Some(0.73),
            ..Default::default()
        });
        let text = status_text(&release, &Live::default());
        assert!(
            text.contains("Analysis:  Failing at 2026-11-21T12:00:00Z"),
            "{text}"
        );
        assert!(text.contains("canary burns 21.3x of 14.4x"), "{text}");
        assert!(text.contains("1/2 failing"), "{text}");
        assert!(
            text.contains("canary (Service checkout-canary): Failing"),
            "{text}"
        );
        let window_line = text
            .lines()
            .find(|line| line.trim_start().starts_with("5m"))
            .unwrap();
        for expected in ["2.130%", "4812", "21.3x", "14.4x"] {
            assert!(window_line.contains(expected), "{window_line}");
        }
        assert!(text.contains("error budget remaining: 73.0%"), "{text}");
    }

    #[test]
    fn status_lists_history_newest_first_as_stored() {
        let mut release = release_in(Phase::Healthy, None);
        release.status.as_mut().unwrap().history = vec![HistoryEntry {
            revision: "5d8b9c".into(),
            roadmap_item: "PAY-139".into(),
            outcome: Outcome::RolledBack,
            started_at: None,
            finished_at: Time("2026-11-20T09:00:00Z".parse().unwrap()),
            failure_detected_at: None,
            reason: "AnalysisFailing".into(),
            message: Some("burn 21x of 14.4x".into()),
            horizon: None,
            kind: None,
            timeline: Vec::new(),
            roadmap_outcome: None,
            rework: false,
        }];
        let text = status_text(&release, &Live::default());
        let line = text.lines().find(|line| line.contains("5d8b9c")).unwrap();
        assert!(
            line.contains("PAY-139") && line.contains("RolledBack") && line.contains("burn 21x"),
            "{line}"
        );
        assert!(
            !text.contains("outcome:") && !text.contains("rework:"),
            "{text}"
        );
    }

    #[test]
    fn status_shows_a_promoted_revisions_outcome_and_rework_under_its_history_line() {
        use crate::api::{Goal, MinChange, OutcomeVerdict, RoadmapOutcome};
        let mut release = release_in(Phase::Healthy, None);
        let mut record = crate::rollout::outcome::record_for(&RoadmapOutcome {
            name: "checkout-conversion".into(),
            query: "q".into(),
            goal: Goal::Increase,
            baseline: crate::api::Duration::from_secs(7 * 86_400),
            after: crate::api::Duration::from_secs(7 * 86_400),
            min_change: MinChange::Percent(2.0),
        });
        record.change = Some(3.1);
        record.verdict = Some(OutcomeVerdict::Met);
        let mut entry = crate::rollout::history::entry(
            "6f9c7d",
            "PAY-142",
            Outcome::Promoted,
            None,
            Time("2026-11-20T09:00:00Z".parse().unwrap()),
            "Promoted",
            None,
        );
        entry.rework = true;
        entry.roadmap_outcome = Some(record);
        release.status.as_mut().unwrap().history = vec![entry];
        let text = status_text(&release, &Live::default());
        assert!(
            text.contains("    rework: PAY-142 was promoted before within spec.roadmap.reworkWindow\n    outcome: checkout-conversion +3.1% (goal +2%): met\n"),
            "{text}"
        );
    }

    #[test]
    fn roadmap_shows_live_rolling_out_and_rolled_back_items() {
        let mut healthy = release_in(Phase::Healthy, None);
        healthy.metadata.name = Some("api".into());
        healthy.status.as_mut().unwrap().stable_revision = Some("aaaaaa".into());
        healthy.status.as_mut().unwrap().stable_roadmap_item = Some("API-7".into());

        let mut rolling = release_in(Phase::Progressing, Some("6f9c7d"));
        rolling.status.as_mut().unwrap().stable_revision = Some("5d8b9c".into());
        rolling.status.as_mut().unwrap().stable_roadmap_item = Some("PAY-139".into());
        rolling.status.as_mut().unwrap().canary_weight = Some(10);

        let mut rolled_back = release_in(Phase::RolledBack, None);
        rolled_back.metadata.name = Some("search".into());
        rolled_back.spec.roadmap.item = "SRCH-9".into();
        rolled_back.status.as_mut().unwrap().stable_revision = Some("bbbbbb".into());
        rolled_back.status.as_mut().unwrap().stable_roadmap_item = Some("SRCH-8".into());
        rolled_back.status.as_mut().unwrap().rolled_back_revision = Some("cccccc".into());

        let rows = roadmap_rows(&[rolled_back, rolling, healthy]);
        let summary: Vec<(&str, &str, &str)> = rows
            .iter()
            .map(|row| (row.release.as_str(), row.item.as_str(), row.state.as_str()))
            .collect();
        assert_eq!(
            summary,
            [
                ("api", "API-7", "live"),
                ("checkout", "PAY-139", "live"),
                ("checkout", "PAY-142", "rolling out (10%)"),
                ("search", "SRCH-8", "live"),
                ("search", "SRCH-9", "rolled back"),
            ]
        );
        let table = roadmap_table(&rows);
        assert!(table.starts_with("NAMESPACE"), "{table}");
        assert_eq!(table.lines().count(), 6);
    }
}
