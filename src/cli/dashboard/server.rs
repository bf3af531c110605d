//! The dashboard's HTTP side: what the watch has seen ([`Board`]), the axum routes that render
//! it, and the server-sent events that carry each change to open pages as HTML fragments.
//!
//! Routes: `/` the whole page; `/events` the live stream; `/assets/style.css` and
//! `/assets/live.js`, compiled into the binary. Everything is read-only: no route writes to
//! the cluster.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, RwLock};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use futures::{Stream, StreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::ResourceExt as _;
use tokio::sync::broadcast;

use super::view::{self, PageContext};
use crate::api::{Duration, Release};

/// The stylesheet, hand-written, served from the binary.
const STYLE_CSS: &str = include_str!("assets/style.css");
/// The few lines that apply the live fragments to the page.
const LIVE_JS: &str = include_str!("assets/live.js");

/// How many changes a slow page may fall behind before it gets everything again.
const UPDATES_BUFFERED: usize = 256;

/// What changed, as the watch tells the open pages.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A Release was created or changed.
    Applied {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// A Release was deleted.
    Deleted {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The watch started again or failed: every section may be stale.
    Everything,
}

/// The Releases as last seen, and the channel that tells open pages about changes.
pub struct Board {
    releases: RwLock<BTreeMap<(String, String), Release>>,
    watch_error: RwLock<Option<String>>,
    /// Each change's events, rendered once for every open page.
    changes: broadcast::Sender<Arc<Vec<Event>>>,
    scope: String,
    since: Option<Duration>,
    clock: fn() -> Timestamp,
}

impl Board {
    /// An empty board for Releases of `scope` (`namespace shop`, `all namespaces`), counting
    /// delivery over `since`, reading the time from `clock`.
    pub fn new(scope: String, since: Option<Duration>, clock: fn() -> Timestamp) -> Self {
        Self {
            releases: RwLock::new(BTreeMap::new()),
            watch_error: RwLock::new(None),
            changes: broadcast::channel(UPDATES_BUFFERED).0,
            scope,
            since,
            clock,
        }
    }

    fn key(release: &Release) -> (String, String) {
        (
            release.metadata.namespace.clone().unwrap_or_default(),
            release.metadata.name.clone().unwrap_or_default(),
        )
    }

    /// Record a created or changed Release and tell the open pages.
    pub fn apply(&self, release: Release) {
        let (namespace, name) = Self::key(&release);
        if let Ok(mut releases) = self.releases.write() {
            releases.insert((namespace.clone(), name.clone()), release);
        }
        self.tell(Change::Applied { namespace, name });
    }

    /// Forget a deleted Release and tell the open pages.
    pub fn delete(&self, release: &Release) {
        let (namespace, name) = Self::key(release);
        if let Ok(mut releases) = self.releases.write() {
            releases.remove(&(namespace.clone(), name.clone()));
        }
        self.tell(Change::Deleted { namespace, name });
    }

    /// Replace every Release with those a fresh list returned (a watch that started again).
    pub fn replace_all(&self, listed: Vec<Release>) {
        if let Ok(mut releases) = self.releases.write() {
            *releases = listed
                .into_iter()
                .map(|release| (Self::key(&release), release))
                .collect();
        }
        self.tell(Change::Everything);
    }

    /// Say why the watch is down (`Some`) or that it is back (`None`).
    pub fn set_watch_error(&self, error: Option<String>) {
        let changed = match self.watch_error.write() {
            Ok(mut current) if *current != error => {
                *current = error;
                true
            }
            _ => false,
        };
        if changed {
            self.tell(Change::Everything);
        }
    }

    /// Renders `change` once for the open pages; nothing when none is open.
    fn tell(&self, change: Change) {
        if self.changes.receiver_count() > 0 {
            // A page that closed since the count is no error.
            let _ = self.changes.send(Arc::new(self.events_for(&change)));
        }
    }

    fn releases(&self) -> Vec<Release> {
        self.releases
            .read()
            .map(|releases| releases.values().cloned().collect())
            .unwrap_or_default()
    }

    fn release(&self, namespace: &str, name: &str) -> Option<Release> {
        self.releases.read().ok().and_then(|releases| {
            releases
                .get(&(namespace.to_string(), name.to_string()))
                .cloned()
        })
    }

    fn context(&self) -> PageContext {
        PageContext {
            scope: self.scope.clone(),
            since: self.since,
            watch_error: self.watch_error.read().ok().and_then(|error| error.clone()),
        }
    }

    /// The whole page as it stands.
    pub fn page(&self) -> String {
        view::page(&self.releases(), &self.context(), (self.clock)())
    }

    /// The events that bring an open page up to date after `change`: the Release's section (or
    /// its removal), then the roadmap and the watch's state, which every change may move.
    pub fn events_for(&self, change: &Change) -> Vec<Event> {
        let now = (self.clock)();
        let releases = self.releases();
        let mut events = Vec::new();
        match change {
            Change::Applied { namespace, name } => match self.release(namespace, name) {
                Some(release) => events.push(fragment(&view::release_section(&release, now))),
                None => events.push(removal(namespace, name)),
            },
            Change::Deleted { namespace, name } => events.push(removal(namespace, name)),
            Change::Everything => {
                events.push(
                    Event::default().event("sections").data(
                        releases
                            .iter()
                            .map(|release| {
                                let namespace = release.metadata.namespace.as_deref();
                                view::section_id(namespace.unwrap_or_default(), &release.name_any())
                            })
                            .collect::<Vec<_>>()
                            .join(" "),
                    ),
                );
                events.extend(
                    releases
                        .iter()
                        .map(|release| fragment(&view::release_section(release, now))),
                );
            }
        }
        events.push(fragment(&view::roadmap_section(&releases, self.since, now)));
        events.push(fragment(&view::watch_state(
            self.context().watch_error.as_deref(),
        )));
        events
    }

    /// The live stream of one page: everything once (what changed between the page's render
    /// and this connection), then the events of each change. A page that fell behind the
    /// buffer gets everything again.
    pub fn events(self: Arc<Self>) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        let receiver = self.changes.subscribe();
        let first = self.events_for(&Change::Everything);
        let later = futures::stream::unfold((self, receiver), |(board, mut receiver)| async move {
            let events = match receiver.recv().await {
                Ok(events) => events.as_ref().clone(),
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    board.events_for(&Change::Everything)
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            Some((futures::stream::iter(events), (board, receiver)))
        });
        futures::stream::iter(first)
            .chain(later.flatten())
            .map(Ok::<Event, Infallible>)
    }
}

/// An HTML fragment that replaces the element with its id (or is added to the Releases).
fn fragment(html: &str) -> Event {
    Event::default().event("fragment").data(html.trim_end())
}

/// The removal of a deleted Release's section.
fn removal(namespace: &str, name: &str) -> Event {
    Event::default()
        .event("remove")
        .data(view::section_id(namespace, name))
}

/// The dashboard's routes over `board`.
pub fn router(board: Arc<Board>) -> Router {
    Router::new()
        .route("/", get(page))
        .route("/events", get(events))
        .route("/assets/style.css", get(style))
        .route("/assets/live.js", get(script))
        .layer(axum::middleware::from_fn(only_addressed_directly))
        .with_state(board)
}

/// Whether a request's `Host` is an address or `localhost` (with or without a port), or absent.
/// A web page elsewhere can point a name of its own at 127.0.0.1 (DNS rebinding) and read what
/// a loopback server answers; it cannot make the browser send an IP address as that name.
pub fn host_is_direct(host: Option<&str>) -> bool {
    let Some(host) = host else {
        return true;
    };
    let name = match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or_default(),
        None => match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        },
    };
    name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok()
}

async fn only_addressed_directly(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let host = request
        .headers()
        .get(header::HOST)
        .map(|value| value.to_str().unwrap_or("(not text)"));
    if host_is_direct(host) {
        return next.run(request).await;
    }
    (
        axum::http::StatusCode::FORBIDDEN,
        format!(
            "Host {} is not this dashboard's address: open it by its IP address or localhost \
             (other names are refused, so that no other site can read the page through one)\n",
            host.unwrap_or_default()
        ),
    )
        .into_response()
}

async fn page(State(board): State<Arc<Board>>) -> impl IntoResponse {
    ([(header::CACHE_CONTROL, "no-store")], Html(board.page()))
}

async fn events(State(board): State<Arc<Board>>) -> impl IntoResponse {
    Sse::new(board.events()).keep_alive(KeepAlive::default())
}

async fn style() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        STYLE_CSS,
    )
}

async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        LIVE_JS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use crate::cli::fixtures::canary_release;
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use futures::StreamExt;
    use tower::ServiceExt;

    fn fixed_clock() -> Timestamp {
        "2026-12-06T12:00:00Z".parse().unwrap()
    }

    fn board_with(releases: Vec<Release>) -> Arc<Board> {
        let board = Arc::new(Board::new("namespace shop".into(), None, fixed_clock));
        board.replace_all(releases);
        board
    }

    fn at_weight(weight: i32, step: i32) -> Release {
        let mut release = canary_release(Phase::Progressing, step);
        release.status.as_mut().unwrap().canary_weight = Some(weight);
        release
    }

    async fn get(board: Arc<Board>, path: &str) -> (StatusCode, String, String) {
        let response = router(board)
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            String::from_utf8(body.to_vec()).unwrap(),
        )
    }

    #[tokio::test]
    async fn the_page_shows_the_item_and_marks_the_current_step() {
        let (status, content_type, html) = get(board_with(vec![at_weight(10, 0)]), "/").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/html"), "{content_type}");
        assert!(html.contains("<th scope=\"row\">PAY-142</th><td>One-click checkout</td>"));
        assert!(html.contains(
            "<tr class=\"current\" aria-current=\"step\"><th scope=\"row\">1</th><td>setWeight 10%</td><td>current step</td></tr>"
        ));
        assert!(html.contains("id=\"release-shop-checkout\""));
    }

    #[test]
    fn only_addresses_and_localhost_are_direct_hosts() {
        for direct in [
            None,
            Some("127.0.0.1:3100"),
            Some("localhost:3100"),
            Some("LOCALHOST"),
            Some("[::1]:3100"),
            Some("[::1]"),
            Some("10.1.2.3"),
        ] {
            assert!(host_is_direct(direct), "{direct:?}");
        }
        for name in [
            Some("attacker.example:3100"),
            Some("localhost.attacker.example"),
            Some("127.0.0.1.nip.example"),
            Some("[evil]:3100"),
            Some(""),
        ] {
            assert!(!host_is_direct(name), "{name:?}");
        }
    }

    #[tokio::test]
    async fn a_request_by_another_name_is_refused() {
        let response = router(board_with(vec![at_weight(10, 0)]))
            .oneshot(
                Request::get("/")
                    .header(header::HOST, "rebound.example:3100")
                    .body(Body::empty())
                    .unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::FORBIDDEN);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let text = String::from_utf8(body.to_vec()).unwrap();
        assert!(text.contains("Host rebound.example:3100 is not this dashboard's address"));
        assert!(!text.contains("PAY-142"));
    }

    #[tokio::test]
    async fn the_page_escapes_a_script_in_a_title() {
        let mut release = at_weight(10, 0);
        release.spec.roadmap.title = Some("<script>steal()</script>".into());
        let (_, _, html) = get(board_with(vec![release]), "/").await;
        assert!(!html.contains("<script>steal()"));
        assert!(html.contains("&lt;script&gt;steal()&lt;/script&gt;"));
    }

    #[tokio::test]
    async fn the_stylesheet_and_script_are_served_from_the_binary() {
        let board = board_with(Vec::new());
        let (status, content_type, script) = get(board.clone(), "/assets/live.js").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/javascript"));
        assert!(script.contains("new EventSource(\"/events\")"));
        let (status, content_type, css) = get(board, "/assets/style.css").await;
        assert_eq!(status, StatusCode::OK);
        assert!(content_type.starts_with("text/css"));
        assert!(css.contains(":focus-visible"));
    }

    /// Reads the event stream until `wanted` has arrived, failing after a few seconds.
    async fn read_until(
        body: &mut (impl futures::Stream<Item = Result<axum::body::Bytes, axum::Error>> + Unpin),
        wanted: &str,
    ) -> String {
        let mut text = String::new();
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        while !text.contains(wanted) {
            let chunk = tokio::time::timeout_at(deadline, body.next())
                .await
                .unwrap_or_else(|_| panic!("no {wanted:?} in the stream; got:\n{text}"))
                .expect("the stream ended")
                .unwrap();
            text.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        text
    }

    #[tokio::test]
    async fn the_event_stream_sends_the_sections_then_each_change_as_a_fragment() {
        let board = board_with(vec![at_weight(10, 0)]);
        let response = router(board.clone())
            .oneshot(Request::get("/events").body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "text/event-stream"
        );
        let mut body = response.into_body().into_data_stream();
        let first = read_until(&mut body, "id=\"watch-state\"").await;
        assert!(first.contains("event: sections\ndata: release-shop-checkout\n"));
        assert!(first.contains(
            "event: fragment\ndata: <section class=\"release\" id=\"release-shop-checkout\""
        ));
        assert!(first.contains("10% of traffic"));
        assert!(first.contains("event: fragment\ndata: <section id=\"roadmap\""));

        board.apply(at_weight(50, 2));
        let changed = read_until(&mut body, "id=\"watch-state\"").await;
        assert!(changed.contains("50% of traffic"), "{changed}");
        assert!(
            changed.contains("rolling out (50%)"),
            "the roadmap follows: {changed}"
        );
        assert!(
            !changed.contains("event: sections"),
            "only what changed: {changed}"
        );

        board.delete(&at_weight(50, 2));
        let removed = read_until(&mut body, "id=\"watch-state\"").await;
        assert!(
            removed.contains("event: remove\ndata: release-shop-checkout\n"),
            "{removed}"
        );

        board.set_watch_error(Some("connection refused".into()));
        let down = read_until(&mut body, "connection refused").await;
        assert!(down.contains("Live updates stopped"), "{down}");
    }

    #[tokio::test]
    async fn a_page_that_falls_behind_gets_everything_again() {
        let board = board_with(vec![at_weight(10, 0)]);
        let mut events = Box::pin(board.clone().events());
        // The first render: sections, one Release, roadmap, watch state.
        for _ in 0..4 {
            let _first = events.next().await.unwrap().unwrap();
        }
        for _ in 0..UPDATES_BUFFERED + 10 {
            board.apply(at_weight(20, 0));
        }
        // Lagged: the next events are everything again, not 266 single changes.
        let next = format!("{:?}", events.next().await.unwrap().unwrap());
        assert!(next.contains("sections"), "{next}");
    }
}
