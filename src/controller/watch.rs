//! Watches that come back within seconds of an API-server outage.
//!
//! kube-runtime's `default_backoff()` lets the wait between watch retries grow to half a minute
//! and more; after a control-plane upgrade that left the controller idle for minutes. Here every
//! watch failure drops the watch and starts a fresh one (a list, then a watch): after a
//! `410 Gone` at once (the watch only fell behind: a relist answers it), after any other
//! failure within [`WATCH_RETRY_CAP`], with jitter so that many controllers do not come back in
//! step. Each restart is counted by resource, the first failure of a streak and its end are
//! logged (a lasting failure again every [`REPEAT_LOG`]), and [`super::Health`] learns which
//! watch is down since when and why, for `/readyz`. A watch that comes back after a failure
//! wakes the controller: every Release is reconciled again, since the reconciles due during the
//! outage failed and a relist of unchanged Releases triggers nothing by itself.

use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use kube::runtime::watcher;
use tokio::sync::Notify;

use super::health::Health;
use super::metrics::Metrics;
pub use super::watched::{WATCH_RETRY_CAP, WATCH_RETRY_FIRST, Watched};

/// How often a watch that keeps failing is logged again.
pub const REPEAT_LOG: Duration = Duration::from_secs(60);
/// How long the controller waits for the other watches to come back before it reconciles every
/// Release after a recovery: the four watches of one outage relist within a second of each
/// other, and one round of reconciles is enough.
pub const RECOVERY_GATHER: Duration = Duration::from_millis(300);

/// How a watch failed, which decides how soon it is started again and what is said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    /// `410 Gone`: the watch fell too far behind (an API server restarted, etcd compacted). A
    /// relist answers it: no wait.
    Desync,
    /// `404`: the API server does not serve the resource; its CRD is missing.
    Missing,
    /// Anything else: retried with a capped backoff.
    Other {
        /// What happened, with the API server's or the connection's words.
        error: String,
        /// Whether the API server answered (a 403 or 5xx while it starts, say) rather than
        /// not being reached at all.
        answered: bool,
    },
}

impl Failure {
    /// Classify a watcher error.
    pub fn of(error: &watcher::Error) -> Failure {
        let status = match error {
            watcher::Error::WatchError(status) => Some(status.as_ref()),
            watcher::Error::InitialListFailed(kube::Error::Api(status))
            | watcher::Error::WatchStartFailed(kube::Error::Api(status))
            | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.as_ref()),
            _ => None,
        };
        match status.map(|status| status.code) {
            Some(410) => Failure::Desync,
            Some(404) => Failure::Missing,
            code => Failure::Other {
                error: with_sources(error),
                answered: code.is_some(),
            },
        }
    }

    /// Whether the API server answered this failure (anything but a connection failure).
    fn answered(&self) -> bool {
        match self {
            Failure::Desync | Failure::Missing => true,
            Failure::Other { answered, .. } => *answered,
        }
    }

    /// What is wrong with a watch of `resource`, in words.
    pub fn describe(&self, resource: Watched) -> String {
        match self {
            Failure::Desync => format!(
                "the {} watch fell behind the API server (410 Gone); relisting",
                resource.as_str()
            ),
            Failure::Missing => resource.missing_hint(),
            Failure::Other { error, .. } => {
                format!("the {} watch failed: {error}", resource.as_str())
            }
        }
    }
}

/// `error` and its sources, `: `-separated, without repeating a source its parent already
/// quoted: the words that say what happened ("Connection refused") are often the last.
pub fn with_sources(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let words = cause.to_string();
        if !text.contains(&words) {
            text.push_str(": ");
            text.push_str(&words);
        }
        source = cause.source();
    }
    text
}

/// The wait before attempt `failures` (1 for the first retry of a streak) after a failure that
/// is not a desync: [`WATCH_RETRY_FIRST`] doubled per failure up to [`WATCH_RETRY_CAP`], of
/// which the upper half is spread by `jitter` (a number in `[0, 1)`): at most the cap, at
/// least half of it.
pub fn retry_delay(failures: u32, jitter: f64) -> Duration {
    let doublings = failures.saturating_sub(1).min(16);
    let full = WATCH_RETRY_FIRST
        .saturating_mul(1 << doublings)
        .min(WATCH_RETRY_CAP);
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    full / 2 + (full / 2).mul_f64(jitter)
}

/// A number in `[0, 1)` that differs between calls and processes (std's randomly keyed hasher).
fn jitter() -> f64 {
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_nanos())
            .unwrap_or_default(),
    );
    // 53 bits: exactly representable.
    (hasher.finish() >> 11) as f64 / (1_u64 << 53) as f64
}

/// What the watch wrapper reports to: health, metrics and the recovery signal.
#[derive(Clone)]
pub struct Monitor {
    /// Which watches are down, for `/readyz`.
    pub health: Arc<Health>,
    /// `waymark_watch_restarts_total`.
    pub metrics: Arc<Metrics>,
    /// Notified when a watch is back after a failure.
    pub recovered: Arc<Notify>,
    /// How a fresh watch gets what exists: streamed, or listed where streaming is refused.
    pub initial_lists: InitialLists,
}

/// How every watch of the process gets the objects that exist before it watches for changes.
///
/// Streamed first (`sendInitialEvents`, the API server's watch-list): the API server sends the
/// objects one by one from its watch cache instead of building a whole list response, so a
/// restart at 10,000 Releases holds no list of them in the API server or in one response here.
/// An API server that refuses it (Kubernetes 1.27-1.33 unless the `WatchList` feature gate is
/// on: "sendInitialEvents is forbidden for watch unless the WatchList feature gate is enabled")
/// is answered once with a list then a watch, for every watch of the process from then on.
#[derive(Clone, Debug, Default)]
pub struct InitialLists {
    /// Set once the API server refused a streaming list.
    refused: Arc<std::sync::atomic::AtomicBool>,
}

impl InitialLists {
    /// `config` with the initial list strategy in force: streamed until refused.
    pub fn config(&self, config: watcher::Config) -> watcher::Config {
        if self.streaming() {
            config.streaming_lists()
        } else {
            config
        }
    }

    /// Whether watches start with a streaming list (none refused so far).
    pub fn streaming(&self) -> bool {
        !self.refused.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// If `error` is the API server refusing a streaming list, fall back to list-then-watch for
    /// every watch of the process and say so (once); true when it was.
    fn fall_back_if_refused(&self, resource: Watched, error: &watcher::Error) -> bool {
        let Some(answer) = streaming_list_refusal(error) else {
            return false;
        };
        if !self
            .refused
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::info!(
                resource = resource.as_str(),
                "the API server refuses streaming lists (sendInitialEvents; the WatchList feature \
                 gate is off): watches list, then watch, from now on. It answered: {answer}"
            );
        }
        true
    }
}

/// The API server's words when `error` is it refusing `sendInitialEvents` (a 4xx naming it).
pub fn streaming_list_refusal(error: &watcher::Error) -> Option<&str> {
    let status = match error {
        watcher::Error::WatchError(status) => Some(status.as_ref()),
        watcher::Error::WatchStartFailed(kube::Error::Api(status))
        | watcher::Error::WatchFailed(kube::Error::Api(status)) => Some(status.as_ref()),
        _ => None,
    };
    status
        .filter(|status| {
            (400..500).contains(&status.code) && status.message.contains("sendInitialEvents")
        })
        .map(|status| status.message.as_str())
}

/// A watch of `resource` made by `start` (a fresh `watcher(...)` each time), started again
/// after each failure as the module describes. Failures are reported to `monitor` and not
/// passed on: the caches and the controller see only events.
pub fn resilient<K, S, F>(
    resource: Watched,
    start: F,
    monitor: Monitor,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send
where
    K: Send + 'static,
    S: Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static,
    F: Fn() -> S + Send + 'static,
{
    struct State<S, F> {
        stream: std::pin::Pin<Box<S>>,
        start: F,
        streak: Option<Streak>,
        monitor: Monitor,
    }
    let state = State {
        stream: Box::pin(start()),
        start,
        streak: None,
        monitor,
    };
    futures::stream::unfold(state, move |mut state| async move {
        loop {
            match state.stream.next().await {
                Some(Ok(event)) => {
                    if matches!(event, watcher::Event::InitDone) {
                        state.monitor.health.watch_synced(resource);
                        if let Some(streak) = state.streak.take() {
                            streak.ended(resource);
                            state.monitor.recovered.notify_one();
                        }
                    }
                    return Some((Ok(event), state));
                }
                Some(Err(error)) => {
                    if state
                        .monitor
                        .initial_lists
                        .fall_back_if_refused(resource, &error)
                    {
                        // Not a failure of the watch: started again at once, listing first.
                        state.stream = Box::pin((state.start)());
                        continue;
                    }
                    let failure = Failure::of(&error);
                    let wait = state.streak.get_or_insert_with(Streak::new).failed(
                        resource,
                        &failure,
                        &state.monitor,
                    );
                    tokio::time::sleep(wait).await;
                    // A fresh watch: it lists first, so the caches hold the world as it is now
                    // and a resumed watch cannot leave the health unknowable.
                    state.stream = Box::pin((state.start)());
                }
                None => return None,
            }
        }
    })
}

/// A run of failures of one watch.
struct Streak {
    since: Instant,
    failures: u32,
    logged_at: Option<Instant>,
    last: Option<Failure>,
}

impl Streak {
    fn new() -> Streak {
        Streak {
            since: Instant::now(),
            failures: 0,
            logged_at: None,
            last: None,
        }
    }

    /// Report one failure; the wait before the watch starts again.
    fn failed(&mut self, resource: Watched, failure: &Failure, monitor: &Monitor) -> Duration {
        // The first answer after connection failures: the API server is back (and starting:
        // its authorizer may refuse for a second). Retry soon, as after a first failure.
        let back = failure.answered() && self.last.as_ref().is_some_and(|last| !last.answered());
        self.failures = if back {
            1
        } else {
            self.failures.saturating_add(1)
        };
        monitor.metrics.count_watch_restart(resource.as_str());
        let reason = failure.describe(resource);
        monitor
            .health
            .watch_failed(resource, self.since, failure == &Failure::Missing, &reason);
        let wait = match failure {
            Failure::Desync => Duration::ZERO,
            _ => retry_delay(self.failures, jitter()),
        };
        let changed = self.last.as_ref() != Some(failure);
        let due = self.logged_at.is_none_or(|at| at.elapsed() >= REPEAT_LOG);
        if changed || due {
            self.logged_at = Some(Instant::now());
            self.log(resource, failure, &reason, wait, monitor);
        }
        self.last = Some(failure.clone());
        wait
    }

    fn log(
        &self,
        resource: Watched,
        failure: &Failure,
        reason: &str,
        wait: Duration,
        monitor: &Monitor,
    ) {
        let down_for = format!("{:.1}s", self.since.elapsed().as_secs_f64());
        let resource = resource.as_str();
        match failure {
            // Routine: etcd compactions and API-server restarts do this.
            Failure::Desync => tracing::info!(resource, "{reason}"),
            // Without the Gateway API nothing is wrong until a Release names an HTTPRoute.
            Failure::Missing
                if resource == Watched::HttpRoutes.as_str()
                    && monitor.health.route_user().is_none() =>
            {
                tracing::info!(
                    resource,
                    "{reason} (no Release names an HTTPRoute yet: Releases with \
                     spec.traffic.gatewayAPI cannot run until it is)"
                );
            }
            Failure::Missing
                if resource == Watched::GrpcRoutes.as_str()
                    && monitor
                        .health
                        .route_user_of(crate::api::RouteKind::Grpc)
                        .is_none() =>
            {
                tracing::info!(
                    resource,
                    "{reason} (no Release names a GRPCRoute now: Releases with \
                     spec.traffic.gatewayAPI.grpcRoute cannot run until it is)"
                );
            }
            _ => tracing::warn!(
                resource,
                down_for,
                retry_in = ?wait,
                failures = self.failures,
                "{reason}"
            ),
        }
    }

    fn ended(self, resource: Watched) {
        let down_for = format!("{:.1}s", self.since.elapsed().as_secs_f64());
        if self.last != Some(Failure::Desync) || self.failures > 1 {
            tracing::info!(
                resource = resource.as_str(),
                down_for,
                failures = self.failures,
                "the {} watch is back: relisted; every Release is reconciled again",
                resource.as_str()
            );
        }
    }
}

/// One `()` per burst of recoveries, [`RECOVERY_GATHER`] after its first: the trigger that
/// makes the controller reconcile every Release after an outage.
pub fn recoveries(recovered: Arc<Notify>) -> impl Stream<Item = ()> + Send {
    futures::stream::unfold(recovered, |recovered| async move {
        recovered.notified().await;
        tokio::time::sleep(RECOVERY_GATHER).await;
        // A notice stored while gathering belongs to this burst: take it (a zero timeout still
        // polls the notice once).
        let _ = tokio::time::timeout(Duration::ZERO, recovered.notified()).await;
        Some(((), recovered))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::stream;
    use kube::core::Status;

    fn api(code: u16) -> kube::Error {
        kube::Error::Api(Status::failure("boom", "Test").with_code(code).boxed())
    }

    #[test]
    fn a_410_is_a_desync_and_a_404_a_missing_resource() {
        assert_eq!(
            Failure::of(&watcher::Error::WatchError(
                Status::failure("too old resource version", "Expired")
                    .with_code(410)
                    .boxed()
            )),
            Failure::Desync
        );
        assert_eq!(
            Failure::of(&watcher::Error::InitialListFailed(api(404))),
            Failure::Missing
        );
        assert_eq!(
            Failure::of(&watcher::Error::WatchStartFailed(api(404))),
            Failure::Missing
        );
        assert!(matches!(
            Failure::of(&watcher::Error::InitialListFailed(api(503))),
            Failure::Other { error, answered: true } if error.contains("boom")
        ));
        assert!(matches!(
            Failure::of(&watcher::Error::InitialListFailed(kube::Error::Service(
                "connection refused".into()
            ))),
            Failure::Other {
                answered: false,
                ..
            }
        ));
        assert!(matches!(
            Failure::of(&watcher::Error::NoResourceVersion),
            Failure::Other { .. }
        ));
    }

    #[test]
    fn a_missing_release_crd_says_how_to_install_it() {
        let text = Failure::Missing.describe(Watched::Releases);
        assert!(text.contains("releases.waymark.dev"), "{text}");
        assert!(
            text.contains("kubectl apply --server-side -f crds/"),
            "{text}"
        );
        let text = Failure::Missing.describe(Watched::HttpRoutes);
        assert!(
            text.contains("httproutes.gateway.networking.k8s.io"),
            "{text}"
        );
    }

    #[test]
    fn retries_grow_from_a_quarter_second_and_never_pass_the_cap() {
        // Without jitter: half of the full delay.
        let lowest: Vec<u128> = (1..=6).map(|n| retry_delay(n, 0.0).as_millis()).collect();
        assert_eq!(lowest, [125, 250, 500, 1000, 1000, 1000]);
        // With the most jitter: just under the full delay.
        let highest: Vec<u128> = (1..=6)
            .map(|n| retry_delay(n, 0.999_999).as_millis())
            .collect();
        assert_eq!(highest, [249, 499, 999, 1999, 1999, 1999]);
        for failures in [1, 5, 20, 1_000, u32::MAX] {
            for jitter in [0.0, 0.3, 0.999, 1.0, f64::NAN, -4.0, 17.0] {
                assert!(retry_delay(failures, jitter) <= WATCH_RETRY_CAP);
            }
        }
    }

    #[test]
    fn jitter_is_a_fraction_and_varies() {
        let draws: Vec<f64> = (0..64).map(|_| jitter()).collect();
        assert!(draws.iter().all(|j| (0.0..1.0).contains(j)), "{draws:?}");
        let first = draws[0];
        assert!(draws.iter().any(|j| *j != first), "{draws:?}");
    }

    fn monitor() -> Monitor {
        Monitor {
            health: Arc::new(Health::new(false)),
            metrics: Arc::new(Metrics::default()),
            recovered: Arc::new(Notify::new()),
            initial_lists: InitialLists::default(),
        }
    }

    type Item = Result<watcher::Event<u32>, watcher::Error>;

    /// A watch that replays `scripts` in turn, one per start, and counts its starts.
    fn scripted(
        scripts: Vec<Vec<Item>>,
    ) -> (
        impl Fn() -> stream::Iter<std::vec::IntoIter<Item>> + Send + 'static,
        Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let starts = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let scripts = Arc::new(std::sync::Mutex::new(scripts.into_iter()));
        let counted = starts.clone();
        let start = move || {
            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let next = scripts.lock().expect("scripts").next().unwrap_or_default();
            stream::iter(next)
        };
        (start, starts)
    }

    fn relist(objects: &[u32]) -> Vec<Item> {
        let mut events = vec![Ok(watcher::Event::Init)];
        events.extend(objects.iter().map(|o| Ok(watcher::Event::InitApply(*o))));
        events.push(Ok(watcher::Event::InitDone));
        events
    }

    #[tokio::test(start_paused = true)]
    async fn a_410_relists_at_once_and_the_controller_is_woken() {
        let mut first = relist(&[1]);
        first.push(Err(watcher::Error::WatchError(
            Status::failure("too old resource version", "Expired")
                .with_code(410)
                .boxed(),
        )));
        let (start, starts) = scripted(vec![first, relist(&[1, 2])]);
        let monitor = monitor();
        let began = tokio::time::Instant::now();
        let events: Vec<_> = resilient(Watched::Releases, start, monitor.clone())
            .collect()
            .await;
        assert_eq!(began.elapsed(), Duration::ZERO, "no backoff after a 410");
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 2);
        let applied: Vec<u32> = events
            .iter()
            .filter_map(|event| match event {
                Ok(watcher::Event::InitApply(object)) => Some(*object),
                _ => None,
            })
            .collect();
        assert_eq!(applied, [1, 1, 2], "the errors are not passed on");
        assert!(events.iter().all(Result::is_ok));
        // The recovery was signalled: a waiter is woken at once by the stored permit.
        tokio::time::timeout(Duration::from_millis(1), monitor.recovered.notified())
            .await
            .expect("a recovery notice");
        let text = monitor.metrics.encode().expect("metrics");
        assert!(
            text.contains(r#"waymark_watch_restarts_total{resource="releases"} 1"#),
            "{text}"
        );
    }

    /// What kube-apiserver 1.33 answers a streaming list with the WatchList gate off.
    fn watch_list_refused() -> Item {
        Err(watcher::Error::WatchStartFailed(kube::Error::Api(
            Status::failure(
                "ListOptions \"\" is invalid: sendInitialEvents: Forbidden: sendInitialEvents \
                 is forbidden for watch unless the WatchList feature gate is enabled",
                "Invalid",
            )
            .with_code(422)
            .boxed(),
        )))
    }

    #[test]
    fn watches_stream_their_initial_list_until_the_api_server_refuses() {
        let lists = InitialLists::default();
        assert_eq!(
            lists
                .config(watcher::Config::default())
                .initial_list_strategy,
            watcher::InitialListStrategy::StreamingList
        );
        let Err(refused) = watch_list_refused() else {
            unreachable!()
        };
        assert!(!lists.fall_back_if_refused(
            Watched::Releases,
            &watcher::Error::WatchStartFailed(api(422))
        ));
        assert!(lists.streaming(), "another 422 is no reason to fall back");
        assert!(lists.fall_back_if_refused(Watched::Releases, &refused));
        let shared = lists.clone();
        assert_eq!(
            shared
                .config(watcher::Config::default())
                .initial_list_strategy,
            watcher::InitialListStrategy::ListWatch,
            "every watch of the process lists from then on"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_streaming_list_is_listed_at_once_and_is_no_watch_failure() {
        let (start, starts) = scripted(vec![vec![watch_list_refused()], relist(&[1])]);
        let monitor = monitor();
        let began = tokio::time::Instant::now();
        let events: Vec<_> = resilient(Watched::Releases, start, monitor.clone())
            .collect()
            .await;
        assert_eq!(began.elapsed(), Duration::ZERO, "no backoff");
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(events.len(), 3, "Init, InitApply, InitDone: {events:?}");
        assert!(!monitor.initial_lists.streaming());
        let text = monitor.metrics.encode().expect("metrics");
        assert!(
            text.contains(r#"waymark_watch_restarts_total{resource="releases"} 0"#),
            "{text}"
        );
        assert!(
            monitor.health.watch_down_since(Watched::Releases).is_none(),
            "not shown as down"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_outage_is_retried_within_the_cap_and_shown_until_the_relist() {
        let refused = || {
            Err(watcher::Error::InitialListFailed(kube::Error::Service(
                "connection refused".into(),
            )))
        };
        let mut scripts = vec![relist(&[7])];
        scripts[0].push(Err(watcher::Error::WatchFailed(kube::Error::Service(
            "connection reset".into(),
        ))));
        // Ten failed starts in a row, then the API server answers.
        scripts.extend((0..10).map(|_| vec![refused()]));
        scripts.push(relist(&[7]));
        let (start, starts) = scripted(scripts);
        let monitor = monitor();
        let health = monitor.health.clone();
        let mut stream = Box::pin(resilient(Watched::Deployments, start, monitor.clone()));
        // The first list.
        for _ in 0..3 {
            stream.next().await;
        }
        assert!(health.watch_down_since(Watched::Deployments).is_none());
        let began = tokio::time::Instant::now();
        // Init of the relist that follows the outage.
        assert!(matches!(
            stream.next().await,
            Some(Ok(watcher::Event::Init))
        ));
        let waited = began.elapsed();
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 12);
        // Eleven waits, none above the cap, growing to it.
        assert!(waited <= WATCH_RETRY_CAP * 11, "{waited:?}");
        assert!(waited >= Duration::from_millis(125 + 250 + 500 + 1000 * 8));
        let down = health
            .watch_down_since(Watched::Deployments)
            .expect("down until the relist is done");
        assert!(down.1.contains("connection refused"), "{}", down.1);
        stream.next().await; // InitApply
        stream.next().await; // InitDone
        assert!(health.watch_down_since(Watched::Deployments).is_none());
        let text = monitor.metrics.encode().expect("metrics");
        assert!(
            text.contains(r#"waymark_watch_restarts_total{resource="deployments"} 11"#),
            "{text}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_first_answer_after_an_outage_is_retried_at_once_again() {
        let refused = || {
            Err(watcher::Error::InitialListFailed(kube::Error::Service(
                "connection refused".into(),
            )))
        };
        // Long refused: the waits reach the cap. Then the API server answers 403 while its
        // authorizer starts, and lists the next time.
        let mut scripts: Vec<Vec<Item>> = (0..8).map(|_| vec![refused()]).collect();
        scripts.push(vec![Err(watcher::Error::InitialListFailed(api(403)))]);
        scripts.push(relist(&[1]));
        let starts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let (start, _) = scripted(scripts);
        let timed = {
            let starts = starts.clone();
            move || {
                starts
                    .lock()
                    .expect("starts")
                    .push(tokio::time::Instant::now());
                start()
            }
        };
        let mut stream = Box::pin(resilient(Watched::Releases, timed, monitor()));
        assert!(matches!(
            stream.next().await,
            Some(Ok(watcher::Event::Init))
        ));
        let starts = starts.lock().expect("starts").clone();
        assert_eq!(starts.len(), 10);
        let gaps: Vec<Duration> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        // Before the answer: at the cap's level (at least half of it).
        assert!(gaps[7] >= WATCH_RETRY_CAP / 2, "{gaps:?}");
        // After the 403: the first delay again.
        assert!(gaps[8] <= retry_delay(1, 1.0), "{gaps:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn recoveries_of_one_outage_wake_the_controller_once() {
        let recovered = Arc::new(Notify::new());
        let mut wakes = Box::pin(recoveries(recovered.clone()));
        let notices = {
            let recovered = recovered.clone();
            tokio::spawn(async move {
                // Four watches relisting within the gathering window.
                for _ in 0..4 {
                    recovered.notify_one();
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        };
        let began = tokio::time::Instant::now();
        assert_eq!(wakes.next().await, Some(()));
        assert!(began.elapsed() <= RECOVERY_GATHER, "{:?}", began.elapsed());
        notices.await.expect("notices");
        assert!(
            tokio::time::timeout(Duration::from_secs(10), wakes.next())
                .await
                .is_err(),
            "one wake for the burst"
        );
        // A later outage wakes it again.
        recovered.notify_one();
        assert_eq!(wakes.next().await, Some(()));
    }
}
