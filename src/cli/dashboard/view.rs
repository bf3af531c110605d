//! The dashboard's HTML, rendered from plain values: the whole page, and the fragments the live
//! updates replace (one per Release, the roadmap, the watch's state). No I/O and no clock: the
//! caller passes `now`. Every string that comes from a Release goes through [`escape`].
//!
//! The figures are the ones `waymark roadmap`, `waymark status` and `waymark postmortem` print,
//! from the same functions; this module only lays them out as HTML.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use k8s_openapi::jiff::Timestamp;

use crate::analysis::format::format_period;
use crate::analysis::roadmap_outcome;
use crate::api::{Duration, HistoryEntry, Phase, Release};
use crate::cli::postmortem;
use crate::cli::render::{self, RoadmapRow, to_the_second};
use crate::cli::roadmap::{self, DeliveryRow, DeliverySummary};

/// What the whole page shows, besides the Releases.
#[derive(Clone, Debug, PartialEq)]
pub struct PageContext {
    /// Which Releases are shown, in words: `namespace shop` or `all namespaces`.
    pub scope: String,
    /// The span the delivery figures count (`None`: every history entry).
    pub since: Option<Duration>,
    /// Why the live watch is not running right now, if it is not.
    pub watch_error: Option<String>,
}

/// Text made safe for HTML content and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for character in text.chars() {
        match character {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            other => out.push(other),
        }
    }
    out
}

/// The `id` of a Release's section: namespaces and names are DNS labels, so this is unique and
/// needs no escaping beyond the usual.
pub fn section_id(namespace: &str, name: &str) -> String {
    format!("release-{namespace}-{name}")
}

/// The id of the roadmap section, which every change renders again.
pub const ROADMAP_ID: &str = "roadmap";
/// The id of the line that says whether the live watch runs.
pub const WATCH_STATE_ID: &str = "watch-state";

/// The whole page, for the first load, a refresh, and browsers without JavaScript.
pub fn page(releases: &[Release], context: &PageContext, now: Timestamp) -> String {
    let now = to_the_second(now);
    let mut out = String::from(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>Waymark: roadmap and releases</title>\n\
         <link rel=\"stylesheet\" href=\"/assets/style.css\">\n\
         <script src=\"/assets/live.js\" defer></script>\n</head>\n<body>\n\
         <a class=\"skip-link\" href=\"#main\">Skip to the roadmap and releases</a>\n<header>\n\
         <h1>Waymark</h1>\n",
    );
    let _ = writeln!(
        out,
        "<p>Releases in {}, as read at <time datetime=\"{now}\">{now}</time>. \
         <a href=\"/\">Refresh the page</a></p>",
        escape(&context.scope)
    );
    out.push_str(&watch_state(context.watch_error.as_deref()));
    out.push_str(
        "<p id=\"live-status\" class=\"live-status\" role=\"status\" aria-live=\"polite\">\
         <noscript>Live updates need JavaScript: use Refresh the page.</noscript></p>\n\
         </header>\n<main id=\"main\" tabindex=\"-1\">\n",
    );
    out.push_str(&roadmap_section(releases, context.since, now));
    out.push_str(
        "<section aria-labelledby=\"releases-heading\">\n<h2 id=\"releases-heading\">Releases</h2>\n\
         <div id=\"releases\">\n",
    );
    if releases.is_empty() {
        out.push_str("<p id=\"no-releases\">No Release here yet.</p>\n");
    }
    for release in releases {
        out.push_str(&release_section(release, now));
    }
    out.push_str("</div>\n</section>\n</main>\n</body>\n</html>\n");
    out
}

/// The line that says whether the page follows the cluster live, and why not.
pub fn watch_state(error: Option<&str>) -> String {
    match error {
        None => {
            format!("<p id=\"{WATCH_STATE_ID}\" class=\"watch-ok\">Following changes live.</p>\n")
        }
        Some(error) => format!(
            "<p id=\"{WATCH_STATE_ID}\" class=\"watch-down\"><strong>Live updates stopped:</strong> \
             {} (retrying; the figures may be old).</p>\n",
            escape(error)
        ),
    }
}

/// The roadmap: which items are live, rolling out or rolled back, then delivery per horizon,
/// kind and item, from the same figures as `waymark roadmap`.
pub fn roadmap_section(releases: &[Release], since: Option<Duration>, now: Timestamp) -> String {
    let (rows, summary) = roadmap::view(releases, now, since);
    let mut out = format!(
        "<section id=\"{ROADMAP_ID}\" aria-labelledby=\"roadmap-heading\">\n\
         <h2 id=\"roadmap-heading\">Roadmap</h2>\n"
    );
    items_table(&mut out, releases, &rows);
    let counted = match (summary.since, since) {
        (Some(at), Some(span)) => format!("finished since {at} (last {})", format_period(span)),
        _ => "over every history entry".to_string(),
    };
    let by_item = delivery_by_item(releases, now, since, &summary);
    // Groups without a delivery are left out: a page shows what happened, the CLI every group.
    let delivered = |row: &&DeliveryRow| row.deliveries > 0;
    out.push_str(
        "<p>Delivery (the DORA figures): horizons and kinds without a delivery are left out.</p>\n",
    );
    for (what, rows) in [
        (
            "horizon",
            summary
                .by_horizon
                .iter()
                .filter(delivered)
                .collect::<Vec<_>>(),
        ),
        ("kind", summary.by_kind.iter().filter(delivered).collect()),
        ("roadmap item", by_item.iter().collect()),
    ] {
        let mut rows = rows;
        rows.push(&summary.total);
        delivery_table(&mut out, what, &counted, &rows);
    }
    out.push_str("</section>\n");
    out
}

fn items_table(out: &mut String, releases: &[Release], rows: &[RoadmapRow]) {
    out.push_str(
        "<table class=\"items\">\n<caption>Roadmap items: live, rolling out, rolled back</caption>\n\
         <thead><tr><th scope=\"col\">Item</th><th scope=\"col\">Title</th>\
         <th scope=\"col\">State</th><th scope=\"col\">Horizon</th><th scope=\"col\">Kind</th>\
         <th scope=\"col\">Release</th><th scope=\"col\">Revision</th>\
         <th scope=\"col\">Outcome</th></tr></thead>\n<tbody>\n",
    );
    if rows.is_empty() {
        out.push_str("<tr><td colspan=\"8\">No roadmap item has a release yet.</td></tr>\n");
    }
    for row in rows {
        let release = releases.iter().find(|release| {
            release.metadata.namespace.as_deref() == Some(row.namespace.as_str())
                && release.metadata.name.as_deref() == Some(row.release.as_str())
        });
        let history = release
            .and_then(|release| release.status.as_ref())
            .map(|status| status.history.as_slice())
            .unwrap_or_default();
        let (horizon, kind) = match release {
            Some(release) if release.spec.roadmap.item == row.item => (
                release.spec.roadmap.horizon.map(|h| h.as_str()),
                release.spec.roadmap.kind.map(|k| k.as_str()),
            ),
            _ => history
                .iter()
                .find(|entry| entry.roadmap_item == row.item)
                .map_or((None, None), |entry| {
                    (
                        entry.horizon.map(|h| h.as_str()),
                        entry.kind.map(|k| k.as_str()),
                    )
                }),
        };
        let outcome = history
            .iter()
            .filter(|entry| entry.roadmap_item == row.item)
            .find_map(measured_outcome)
            .unwrap_or_else(|| "-".into());
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\">{}</th><td>{}</td><td class=\"state\">{}</td><td>{}</td>\
             <td>{}</td><td><a href=\"#{}\">{}/{}</a></td><td><code>{}</code></td><td>{}</td></tr>",
            escape(&row.item),
            escape(&row.title),
            escape(&row.state),
            horizon.unwrap_or("-"),
            kind.unwrap_or("-"),
            escape(&section_id(&row.namespace, &row.release)),
            escape(&row.namespace),
            escape(&row.release),
            escape(&row.revision),
            escape(&outcome),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

/// The delivery figures of each roadmap item (its history entries alone), with the share of
/// all deliveries of `summary`.
pub fn delivery_by_item(
    releases: &[Release],
    now: Timestamp,
    since: Option<Duration>,
    summary: &DeliverySummary,
) -> Vec<DeliveryRow> {
    let items: BTreeSet<&str> = releases
        .iter()
        .filter_map(|release| release.status.as_ref())
        .flat_map(|status| status.history.iter())
        .map(|entry| entry.roadmap_item.as_str())
        .collect();
    items
        .into_iter()
        .map(|item| {
            let only_item: Vec<Release> = releases
                .iter()
                .map(|release| {
                    let mut release = release.clone();
                    if let Some(status) = release.status.as_mut() {
                        status.history.retain(|entry| entry.roadmap_item == item);
                    }
                    release
                })
                .collect();
            let mut row = roadmap::delivery_summary(&only_item, now, since).total;
            row.group = item.to_string();
            row.share = (summary.total.deliveries > 0)
                .then(|| f64::from(row.deliveries) / f64::from(summary.total.deliveries));
            row
        })
        .filter(|row| row.deliveries > 0)
        .collect()
}

fn delivery_table(out: &mut String, what: &str, counted: &str, rows: &[&DeliveryRow]) {
    let _ = write!(
        out,
        "<table class=\"delivery\">\n<caption>Delivery by {what}, {}</caption>\n<thead><tr>\
         <th scope=\"col\">{}</th>",
        escape(counted),
        capitalised(what)
    );
    for title in roadmap::HEADERS.iter().filter(|title| !title.is_empty()) {
        let _ = write!(out, "<th scope=\"col\">{}</th>", capitalised(title));
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        let cells = roadmap::cells(row);
        let _ = write!(out, "<tr><th scope=\"row\">{}</th>", escape(&cells[0]));
        for cell in cells.iter().skip(1) {
            let _ = write!(out, "<td>{}</td>", escape(cell));
        }
        out.push_str("</tr>\n");
    }
    out.push_str("</tbody>\n</table>\n");
}

/// `CHANGE FAILURE RATE` and `roadmap item` as `Change failure rate` and `Roadmap item`.
fn capitalised(title: &str) -> String {
    let lower = title.to_lowercase();
    let mut characters = lower.chars();
    match characters.next() {
        Some(first) => first.to_uppercase().chain(characters).collect(),
        None => lower,
    }
}

/// The roadmap outcome a history entry carries, in words (`checkout-conversion +3.1% (goal
/// +2%): met`, or where its measurement stands), as `waymark roadmap` prints it.
pub fn measured_outcome(entry: &HistoryEntry) -> Option<String> {
    entry
        .roadmap_outcome
        .as_ref()
        .map(roadmap_outcome::describe)
}

/// The phase in words, with a class for its colour (the word is what carries the meaning).
fn phase_badge(phase: Option<Phase>) -> String {
    match phase {
        Some(phase) => format!(
            "<span class=\"phase phase-{}\">{}</span>",
            phase.as_str().to_lowercase(),
            phase_words(phase)
        ),
        None => "<span class=\"phase\">Unknown (not reconciled yet)</span>".into(),
    }
}

fn phase_words(phase: Phase) -> &'static str {
    match phase {
        Phase::Healthy => "Healthy",
        Phase::Progressing => "Progressing",
        Phase::Paused => "Paused",
        Phase::RolledBack => "Rolled back",
        Phase::Degraded => "Degraded",
    }
}

/// One sentence about where a Release stands, for the live region to announce.
pub fn summary(release: &Release) -> String {
    let namespace = release.metadata.namespace.as_deref().unwrap_or_default();
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let status = release.status.clone().unwrap_or_default();
    let phase = status.phase.map_or("not reconciled yet", phase_words);
    match &status.canary_revision {
        Some(_) => format!(
            "{namespace}/{name}: {phase}, canary at {}% of traffic",
            status.canary_weight.unwrap_or(0)
        ),
        None => format!("{namespace}/{name}: {phase}"),
    }
}

/// One Release: where it stands, its steps with the current one marked, the last analysis,
/// its history with the newest timeline, and the post-mortem draft of its newest rollback.
pub fn release_section(release: &Release, now: Timestamp) -> String {
    let namespace = release.metadata.namespace.as_deref().unwrap_or_default();
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let id = escape(&section_id(namespace, name));
    let status = release.status.clone().unwrap_or_default();
    let spec = &release.spec;
    let mut out = format!(
        "<section class=\"release\" id=\"{id}\" aria-labelledby=\"{id}-heading\" data-summary=\"{}\">\n\
         <h3 id=\"{id}-heading\">{}/{}</h3>\n<dl class=\"facts\">\n",
        escape(&summary(release)),
        escape(namespace),
        escape(name),
    );
    let mut item = format!("<strong>{}</strong>", escape(&spec.roadmap.tagged()));
    if let Some(title) = &spec.roadmap.title {
        let _ = write!(item, " {}", escape(title));
    }
    if let Some(url) = spec
        .roadmap
        .url
        .as_ref()
        .filter(|url| url.starts_with("https://") || url.starts_with("http://"))
    {
        let _ = write!(item, " (<a href=\"{}\">the item</a>)", escape(url));
    }
    fact(&mut out, "Roadmap item", &item);
    if let Some(objective) = &spec.roadmap.objective {
        fact(&mut out, "Objective", &escape(objective));
    }
    let mut phase = phase_badge(status.phase);
    if let Some(reason) = &status.reason {
        let _ = write!(phase, " ({})", escape(reason));
    }
    fact(&mut out, "Phase", &phase);
    if let Some(message) = &status.message {
        fact(&mut out, "Message", &escape(message));
    }
    let stable = match (&status.stable_revision, &status.stable_roadmap_item) {
        (Some(revision), Some(item)) => {
            format!("<code>{}</code> ({})", escape(revision), escape(item))
        }
        (Some(revision), None) => format!("<code>{}</code>", escape(revision)),
        _ => "none yet".into(),
    };
    fact(&mut out, "Stable", &stable);
    if let Some(canary) = &status.canary_revision {
        let weight = status.canary_weight.unwrap_or(0);
        fact(
            &mut out,
            "Canary",
            &format!(
                "<code>{}</code>, <strong class=\"weight\" data-weight=\"{weight}\">{weight}% of traffic</strong>",
                escape(canary)
            ),
        );
    }
    if let Some(until) = status
        .pause_until
        .as_ref()
        .filter(|_| status.canary_revision.is_some())
    {
        let until = to_the_second(until.0);
        let left = (until.as_second() - now.as_second()).max(0);
        fact(
            &mut out,
            "Pause",
            &format!(
                "until <time datetime=\"{until}\">{until}</time> ({} left when read)",
                Duration::from_secs(left.unsigned_abs())
            ),
        );
    }
    out.push_str("</dl>\n");
    steps_table(&mut out, release, &status);
    if let Some(analysis) = &status.analysis {
        let mut text = String::new();
        render::analysis_text(&mut text, analysis, spec.analysis.as_ref());
        let _ = write!(
            out,
            "<h4>Last analysis</h4>\n<pre class=\"analysis\">{}</pre>\n",
            escape(text.trim_end())
        );
    }
    history_table(&mut out, &status.history);
    if let Some(entry) = status
        .history
        .iter()
        .find(|entry| !entry.timeline.is_empty())
    {
        let _ = write!(
            out,
            "<details class=\"timeline\"><summary>Timeline of revision {}</summary>\n<ol>\n",
            escape(&entry.revision)
        );
        for event in &entry.timeline {
            let at = to_the_second(event.at.0);
            let _ = writeln!(
                out,
                "<li><time datetime=\"{at}\">{at}</time> {}</li>",
                escape(&postmortem::event_text(event))
            );
        }
        out.push_str("</ol>\n</details>\n");
    }
    if let Ok(entry) = postmortem::pick(release, None) {
        let draft = postmortem::markdown(&postmortem::findings(release, entry));
        let _ = write!(
            out,
            "<details class=\"postmortem\"><summary>Post-mortem draft of revision {} ({})</summary>\n\
             <pre>{}</pre>\n</details>\n",
            escape(&entry.revision),
            postmortem::outcome_words(entry.outcome),
            escape(draft.trim_end())
        );
    }
    out.push_str("</section>\n");
    out
}

fn fact(out: &mut String, term: &str, html: &str) {
    let _ = writeln!(out, "<dt>{term}</dt><dd>{html}</dd>");
}

fn steps_table(out: &mut String, release: &Release, status: &crate::api::ReleaseStatus) {
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let _ = write!(
        out,
        "<table class=\"steps\">\n<caption>Steps of {}</caption>\n<thead><tr><th scope=\"col\">Step</th>\
         <th scope=\"col\">What it does</th><th scope=\"col\">State</th></tr></thead>\n<tbody>\n",
        escape(name)
    );
    if release.spec.steps.is_empty() {
        out.push_str(
            "<tr><td colspan=\"3\">No steps: a new revision is promoted once available.</td></tr>\n",
        );
    }
    let current = status
        .canary_revision
        .as_ref()
        .and(status.current_step)
        .and_then(|step| usize::try_from(step).ok());
    for (index, step) in release.spec.steps.iter().enumerate() {
        let (attributes, state) = match current {
            Some(current) if index == current => {
                (" class=\"current\" aria-current=\"step\"", "current step")
            }
            Some(current) if index < current => (" class=\"done\"", "done"),
            Some(_) => ("", "to come"),
            None => ("", "-"),
        };
        let _ = writeln!(
            out,
            "<tr{attributes}><th scope=\"row\">{}</th><td>{}</td><td>{state}</td></tr>",
            index + 1,
            escape(&render::step_text(step))
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

fn history_table(out: &mut String, history: &[HistoryEntry]) {
    if history.is_empty() {
        return;
    }
    out.push_str(
        "<table class=\"history\">\n<caption>History, newest first</caption>\n<thead><tr>\
         <th scope=\"col\">Revision</th><th scope=\"col\">Item</th><th scope=\"col\">Result</th>\
         <th scope=\"col\">Finished</th><th scope=\"col\">Why</th>\
         <th scope=\"col\">Outcome measured</th></tr></thead>\n<tbody>\n",
    );
    for entry in history {
        let finished = to_the_second(entry.finished_at.0);
        let why = match &entry.message {
            Some(message) => format!("{}: {message}", entry.reason),
            None => entry.reason.clone(),
        };
        let _ = writeln!(
            out,
            "<tr><th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td>\
             <td><time datetime=\"{finished}\">{finished}</time></td><td>{}</td><td>{}</td></tr>",
            escape(&entry.revision),
            escape(&entry.roadmap_item),
            postmortem::outcome_words(entry.outcome),
            escape(&why),
            escape(&measured_outcome(entry).unwrap_or_else(|| "-".into())),
        );
    }
    out.push_str("</tbody>\n</table>\n");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::fixtures::canary_release;
    use crate::cli::postmortem::fixtures::rolled_back;

    fn now() -> Timestamp {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    fn context() -> PageContext {
        PageContext {
            scope: "namespace shop".into(),
            since: None,
            watch_error: None,
        }
    }

    /// The `<tr>` of the table row whose first cell is `number`.
    fn step_row(html: &str, number: usize) -> &str {
        let cell = format!("<th scope=\"row\">{number}</th>");
        let at = html.find(&cell).expect("the step's row");
        let start = html[..at].rfind("<tr").unwrap();
        let end = at + html[at..].find("</tr>").unwrap();
        &html[start..end]
    }

    #[test]
    fn a_canary_marks_its_current_step_with_words_and_aria_current() {
        let mut release = canary_release(Phase::Progressing, 2);
        release.status.as_mut().unwrap().canary_weight = Some(50);
        let html = release_section(&release, now());
        let current = step_row(&html, 3);
        assert!(current.contains("aria-current=\"step\""), "{current}");
        assert!(current.contains("setWeight 50%"), "{current}");
        assert!(current.contains("current step"), "{current}");
        for done in [1, 2] {
            assert!(step_row(&html, done).contains(">done<"));
            assert!(!step_row(&html, done).contains("aria-current"));
        }
        assert!(step_row(&html, 4).contains("to come"));
        assert_eq!(html.matches("aria-current").count(), 1);
        assert!(html.contains("50% of traffic"));
        assert!(html.contains("<span class=\"phase phase-progressing\">Progressing</span>"));
    }

    #[test]
    fn without_a_canary_no_step_is_marked() {
        let html = release_section(&crate::cli::fixtures::healthy_release(), now());
        assert!(!html.contains("aria-current"));
        assert!(!html.contains("of traffic"));
        assert!(html.contains(">Healthy<"));
    }

    #[test]
    fn user_strings_are_escaped_and_only_web_links_are_linked() {
        let mut release = canary_release(Phase::Progressing, 0);
        release.spec.roadmap.title = Some("<script>alert('x')</script> & co".into());
        release.spec.roadmap.url = Some("javascript:alert(1)".into());
        release.status.as_mut().unwrap().message = Some("\"quoted\" <b>".into());
        let html = page(&[release], &context(), now());
        assert!(!html.contains("<script>alert"), "a title became markup");
        assert!(html.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co"));
        assert!(html.contains("&quot;quoted&quot; &lt;b&gt;"));
        assert!(!html.contains("javascript:alert"));
        // The page's own script is the only one, and from the binary.
        assert_eq!(html.matches("<script").count(), 1);
    }

    #[test]
    fn the_roadmap_shows_each_item_with_horizon_kind_state_and_delivery_per_item() {
        let mut rolling = canary_release(Phase::Progressing, 0);
        rolling.metadata.name = Some("search".into());
        rolling.spec.roadmap.item = "SRCH-7".into();
        rolling.spec.roadmap.title = Some("Fuzzy search".into());
        rolling.status.as_mut().unwrap().canary_weight = Some(10);
        let releases = [rolled_back(), rolling];
        let html = roadmap_section(&releases, None, now());
        let rows_of = |item: &str| -> Vec<&str> {
            html.match_indices(&format!("<tr><th scope=\"row\">{item}</th><td>"))
                .map(|(at, _)| &html[at..at + html[at..].find("</tr>").unwrap()])
                .collect()
        };
        let rolled = rows_of("PAY-142")
            .into_iter()
            .find(|row| row.contains("rolled back"))
            .expect("PAY-142 rolled back");
        assert!(rolled.contains("<td>now</td><td>feature</td>"), "{rolled}");
        let rolling_out = rows_of("SRCH-7")
            .into_iter()
            .find(|row| row.contains("rolling out (10%)"))
            .expect("SRCH-7 rolling out");
        assert!(rolling_out.contains("Fuzzy search"));
        assert!(
            html.contains("<caption>Delivery by roadmap item, over every history entry</caption>")
        );
        // PAY-142's one delivery was rolled back: 100% change failure rate, restored in 31s.
        let by_item = &html[html.find("Delivery by roadmap item").unwrap()..];
        let pay = &by_item[by_item.find("<th scope=\"row\">PAY-142</th>").unwrap()..];
        let pay = &pay[..pay.find("</tr>").unwrap()];
        assert_eq!(
            pay,
            "<th scope=\"row\">PAY-142</th><td>1</td><td>100%</td><td>0</td><td>1</td><td>0</td><td>100%</td><td>31s</td><td>0</td><td>-</td>"
        );
        assert!(html.contains("<caption>Delivery by horizon"));
        assert!(html.contains("<caption>Delivery by kind"));
    }

    #[test]
    fn a_rolled_back_revision_shows_its_timeline_and_post_mortem_draft() {
        let html = release_section(&rolled_back(), now());
        assert!(html.contains("Post-mortem draft of revision 6f9c7d (rolled back)"));
        assert!(html.contains("Timeline of revision 6f9c7d"));
        assert!(
            html.contains(">Rolled back<"),
            "the phase is written in words"
        );
        let draft = postmortem::markdown(&postmortem::findings(
            &rolled_back(),
            &rolled_back().status.unwrap().history[0],
        ));
        assert!(html.contains(&escape(draft.trim_end())));
    }

    #[test]
    fn a_measured_outcome_is_shown_by_name_change_goal_and_verdict_when_present() {
        let mut entry = rolled_back().status.unwrap().history[0].clone();
        assert_eq!(measured_outcome(&entry), None);
        entry.roadmap_outcome = Some(
            serde_json::from_value(serde_json::json!({
                "name": "checkout-conversion",
                "query": "sum(rate(orders_total[{{window}}]))",
                "goal": "increase",
                "baselineWindow": "168h",
                "afterWindow": "168h",
                "minChange": "2%",
                "baseline": 0.03,
                "after": 0.031,
                "change": 3.3333,
                "verdict": "Met"
            }))
            .expect("an outcome record"),
        );
        assert_eq!(
            measured_outcome(&entry).as_deref(),
            Some("checkout-conversion +3.3% (goal +2%): met")
        );
    }

    #[test]
    fn the_page_has_a_skip_link_a_polite_live_region_and_a_refresh_link() {
        let html = page(&[], &context(), now());
        assert!(html.contains("<a class=\"skip-link\" href=\"#main\">"));
        assert!(html.contains("<main id=\"main\""));
        assert!(html.contains("aria-live=\"polite\""));
        assert!(html.contains("<a href=\"/\">Refresh the page</a>"));
        assert!(html.contains("No Release here yet."));
        assert!(html.contains("<html lang=\"en\">"));
    }

    #[test]
    fn a_failed_watch_is_said_on_the_page() {
        let context = PageContext {
            watch_error: Some("connection refused <x>".into()),
            ..context()
        };
        let html = page(&[], &context, now());
        assert!(html.contains("Live updates stopped:</strong> connection refused &lt;x&gt;"));
    }
}
