//! Prometheus metrics of the controller, served on `/metrics`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use std::sync::atomic::AtomicU64;

use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{HistoryEntry, Outcome, Phase, ReleaseStatus};

mod exposition;

use exposition::{Exposition, Sharded};

/// Labels identifying one Release and the roadmap item it delivers.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReleaseLabels {
    /// The Release's namespace.
    pub namespace: Arc<str>,
    /// The Release's name.
    pub release: Arc<str>,
    /// The roadmap item in progress (or live).
    pub roadmap_item: Arc<str>,
}

/// [`ReleaseLabels`] plus the phase, for the one-hot phase gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PhaseLabels {
    /// The Release's namespace.
    pub namespace: Arc<str>,
    /// The Release's name.
    pub release: Arc<str>,
    /// The roadmap item in progress (or live).
    pub roadmap_item: Arc<str>,
    /// One of the phases.
    pub phase: &'static str,
}

/// [`ReleaseLabels`] plus the item's roadmap horizon and kind and how a revision's release
/// ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    /// The Release's namespace.
    pub namespace: Arc<str>,
    /// The Release's name.
    pub release: Arc<str>,
    /// The roadmap item the finished revision delivered.
    pub roadmap_item: Arc<str>,
    /// `now`, `next`, `later`, or empty when the spec set none.
    pub horizon: &'static str,
    /// `feature`, `debt`, `platform`, `security`, `experiment`, or empty when the spec set
    /// none.
    pub kind: &'static str,
    /// `promoted`, `rolled_back`, `aborted` or `superseded`.
    pub outcome: &'static str,
}

/// [`ReleaseLabels`] plus the role and window of one burn-rate figure.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BurnLabels {
    /// The Release's namespace.
    pub namespace: Arc<str>,
    /// The Release's name.
    pub release: Arc<str>,
    /// The roadmap item in progress (or live).
    pub roadmap_item: Arc<str>,
    /// `canary` or `stable`.
    pub role: &'static str,
    /// The window, e.g. `5m`.
    pub window: Arc<str>,
}

/// [`OutcomeLabels`] without the outcome, for the promotion-time and time-to-restore
/// histograms.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ItemLabels {
    /// The Release's namespace.
    pub namespace: Arc<str>,
    /// The Release's name.
    pub release: Arc<str>,
    /// The roadmap item the finished revision delivered.
    pub roadmap_item: Arc<str>,
    /// `now`, `next`, `later`, or empty.
    pub horizon: &'static str,
    /// `feature`, `debt`, `platform`, `security`, `experiment`, or empty.
    pub kind: &'static str,
}

/// [`ItemLabels`] plus a roadmap outcome's name and verdict, for the outcome change gauge.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeChangeLabels {
    /// The Release's namespace.
    pub namespace: Arc<str>,
    /// The Release's name.
    pub release: Arc<str>,
    /// The roadmap item the promoted revision delivered.
    pub roadmap_item: Arc<str>,
    /// `now`, `next`, `later`, or empty.
    pub horizon: &'static str,
    /// `feature`, `debt`, `platform`, `security`, `experiment`, or empty.
    pub kind: &'static str,
    /// `spec.roadmap.outcome.name`, e.g. `checkout-conversion`.
    pub outcome: Arc<str>,
    /// `met` or `not_met`.
    pub verdict: &'static str,
}

/// Label of the watch restart counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WatchLabels {
    /// The watched resource, plural: `releases`, `deployments`, `services`, `httproutes`.
    pub resource: String,
}

/// Labels of the notifications-sent counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotificationLabels {
    /// The target's name in the notification configuration.
    pub target: String,
    /// `canary-started`, `paused`, `analysis-failing`, `rolled-back`, `promoted`,
    /// `outcome-measured`.
    pub transition: String,
}

/// Label of the notification failure counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TargetLabels {
    /// The target's name in the notification configuration.
    pub target: String,
}

/// Label of the reconcile error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    /// [`super::Error::metric_label`].
    pub kind: String,
}

/// Labels of the Kubernetes API request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeRequestLabels {
    /// The API server's verb: `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`, `APPLY`,
    /// `DELETE`, `DELETECOLLECTION`.
    pub verb: String,
    /// The resource, plural, with its subresource: `deployments`, `releases/status`.
    pub resource: String,
    /// The HTTP status code, or `error` when no response came.
    pub code: String,
}

/// Labels of the Kubernetes API request latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KubeVerbLabels {
    /// As in [`KubeRequestLabels`].
    pub verb: String,
    /// As in [`KubeRequestLabels`].
    pub resource: String,
}

/// Every value [`super::Error::metric_label`] gives, and `undecodable_release`: the reconcile
/// error counter starts at 0 for each, so that `rate()` and `increase()` see the first error
/// of a kind (a series that appears with 1 has no increase to show).
pub const RECONCILE_ERROR_KINDS: [&str; 16] = [
    "kube",
    "refused_forbidden",
    "refused_quota",
    "refused_invalid",
    "refused_admission",
    "refused_conflict",
    "not_owned",
    "refused",
    "secret",
    "missing_object_key",
    "serialize",
    "cached_release",
    "http",
    "config",
    "undecodable_release",
    "namespace_terminating",
];

/// The labels of `waymark_build_info`: the version, and the commit when the build was given
/// one in `WAYMARK_GIT_COMMIT` (no build script runs git).
pub fn build_labels() -> Vec<(String, String)> {
    let mut labels = vec![("version".to_string(), env!("CARGO_PKG_VERSION").to_string())];
    if let Some(commit) = option_env!("WAYMARK_GIT_COMMIT").filter(|commit| !commit.is_empty()) {
        labels.push(("git_commit".to_string(), commit.to_string()));
    }
    labels
}

const PHASES: [Phase; 5] = [
    Phase::Healthy,
    Phase::Progressing,
    Phase::Paused,
    Phase::RolledBack,
    Phase::Degraded,
];

const OUTCOMES: [Outcome; 4] = [
    Outcome::Promoted,
    Outcome::RolledBack,
    Outcome::Aborted,
    Outcome::Superseded,
];

/// The controller's metrics and the registry that encodes them.
#[derive(Debug)]
pub struct Metrics {
    registry: Exposition,
    reconcile_duration: Histogram,
    reconcile_errors: Family<ErrorLabels, Counter>,
    watch_restarts: Family<WatchLabels, Counter>,
    leader: Gauge,
    kube_requests: Family<KubeRequestLabels, Counter>,
    kube_request_duration: Family<KubeVerbLabels, Histogram, fn() -> Histogram>,
    phase: Sharded<PhaseLabels, Gauge>,
    canary_weight: Sharded<ReleaseLabels, Gauge>,
    releases_finished: Sharded<OutcomeLabels, Counter>,
    burn_rate: Sharded<BurnLabels, Gauge<f64, AtomicU64>>,
    burn_rate_limit: Sharded<BurnLabels, Gauge<f64, AtomicU64>>,
    analysis_consecutive_errors: Sharded<ReleaseLabels, Gauge>,
    release_duration: Sharded<ItemLabels, Histogram, fn() -> Histogram>,
    time_to_restore: Sharded<ItemLabels, Histogram, fn() -> Histogram>,
    notifications_sent: Family<NotificationLabels, Counter>,
    notification_failures: Family<TargetLabels, Counter>,
    notifications_dropped: Counter,
    releases_rework: Sharded<ItemLabels, Counter>,
    roadmap_outcome_change: Sharded<OutcomeChangeLabels, Gauge<f64, AtomicU64>>,
    /// The outcome change series last set per (namespace, name), replaced on each update.
    outcome_series: Mutex<HashMap<ReleaseKey, Vec<OutcomeChangeLabels>>>,
    /// The burn-rate (and burn-rate limit) series last set per (namespace, name), removed before
    /// the next update so a window that is gone (or a new roadmap item) leaves no stale series.
    burn_series: Mutex<HashMap<ReleaseKey, Vec<BurnLabels>>>,
    /// The labels last used per (namespace, name), so a new roadmap item replaces the old
    /// series instead of leaving a stale one behind.
    current: Mutex<HashMap<ReleaseKey, ReleaseLabels>>,
    /// Per (namespace, name), the newest finished revision counted and every label set of the
    /// delivery families created for it, so each revision counts once and a deleted Release's
    /// series go with it.
    finished: Mutex<HashMap<ReleaseKey, Finished>>,
}

/// A Release's namespace and name. Every series of a Release shares these two strings (and
/// its roadmap item's) instead of holding copies: at 10,000 Releases the label strings were
/// most of the metric families' memory.
type ReleaseKey = (Arc<str>, Arc<str>);

fn release_key(namespace: &str, release: &str) -> ReleaseKey {
    (Arc::from(namespace), Arc::from(release))
}

/// How long the delivery series of a roadmap item stay after its canary ended (or after they
/// were last touched) when no canary of that item runs: Prometheus's default lookback, five
/// scrapes at its default one-minute interval, so every scraper reads their final values.
/// Prometheus keeps what it scraped, so `increase()` over any range still sees the outcome;
/// without the sweep every item a Release ever delivered would stay in each scrape. Kept
/// longer, they were most of the controller's memory in a fast run of canaries: every Release
/// held each item it finished within the period.
pub const DELIVERY_SERIES_KEPT: Duration = Duration::from_secs(5 * 60);
/// How often the controller sweeps the delivery series that are done with, scraped or not: a
/// controller nobody scrapes (no Prometheus yet, or one that is down) must not grow.
pub const DELIVERY_SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What was counted of one Release's finished revisions.
#[derive(Debug, Default)]
struct Finished {
    /// `(revision, finishedAt)` of the newest history entry counted.
    newest: Option<(String, Time)>,
    /// The roadmap item whose canary runs, per the status last observed.
    in_flight: Option<Arc<str>>,
    /// The delivery series created, per roadmap item.
    items: Vec<ItemSeries>,
}

/// The delivery series of one roadmap item of one Release.
#[derive(Debug)]
struct ItemSeries {
    roadmap_item: Arc<str>,
    /// Label sets created in the outcome counter family.
    outcomes: Vec<OutcomeLabels>,
    /// Label sets created in the promotion-time and time-to-restore families.
    histograms: Vec<ItemLabels>,
    /// When a series was last created or changed.
    touched: Instant,
    /// Whether the promotion-time histogram has an observation (a promoted revision).
    observed_duration: bool,
    /// Whether the time-to-restore histogram has an observation (a failed revision).
    observed_restore: bool,
}

impl Finished {
    fn item(&mut self, roadmap_item: &Arc<str>) -> &mut ItemSeries {
        let index = match self
            .items
            .iter()
            .position(|item| item.roadmap_item == *roadmap_item)
        {
            Some(index) => index,
            None => {
                self.items.push(ItemSeries {
                    roadmap_item: roadmap_item.clone(),
                    outcomes: Vec::new(),
                    histograms: Vec::new(),
                    touched: Instant::now(),
                    observed_duration: false,
                    observed_restore: false,
                });
                self.items.len() - 1
            }
        };
        let item = &mut self.items[index];
        item.touched = Instant::now();
        item
    }

    fn outcome(&mut self, labels: &OutcomeLabels) {
        let item = self.item(&labels.roadmap_item);
        if !item.outcomes.contains(labels) {
            item.outcomes.push(labels.clone());
        }
    }

    fn histograms(&mut self, labels: &ItemLabels) -> &mut ItemSeries {
        let item = self.item(&labels.roadmap_item);
        if !item.histograms.contains(labels) {
            item.histograms.push(labels.clone());
        }
        item
    }

    /// Take out the items whose series may go at `now`: no canary of theirs runs and they were
    /// last touched [`DELIVERY_SERIES_KEPT`] ago or more.
    fn expired(&mut self, now: Instant) -> Vec<ItemSeries> {
        let (expired, kept) = std::mem::take(&mut self.items)
            .into_iter()
            .partition(|item| {
                self.in_flight.as_deref() != Some(&*item.roadmap_item)
                    && now.saturating_duration_since(item.touched) >= DELIVERY_SERIES_KEPT
            });
        self.items = kept;
        expired
    }
}

impl Default for Metrics {
    fn default() -> Self {
        // The root carries the `process_*` metrics under their usual names; Waymark's own
        // live under the `waymark` prefix.
        let mut root = Registry::default();
        root.register_collector(Box::new(super::process::ProcessCollector));
        let mut registry = Exposition::new(root);
        let build_info = Family::<Vec<(String, String)>, Gauge>::default();
        build_info.get_or_create(&build_labels()).set(1);
        registry.register(
            "build_info",
            "1, labelled with the running controller's version (and commit when built with one)",
            build_info,
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this replica reconciles: it holds the leader Lease, or runs without --leader-elect; 0 on a standby",
            leader.clone(),
        );
        let kube_requests = Family::<KubeRequestLabels, Counter>::default();
        // Answers from a healthy API server take milliseconds; a struggling one, seconds.
        let kube_request_duration: Family<KubeVerbLabels, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| {
                Histogram::new([0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0])
            });
        registry.register(
            "kube_requests",
            "Requests to the Kubernetes API server by verb, resource and response code (error: no response)",
            kube_requests.clone(),
        );
        registry.register(
            "kube_request_duration_seconds",
            "Time from sending a request to the Kubernetes API server to its response head, by verb and resource",
            kube_request_duration.clone(),
        );
        let reconcile_duration = Histogram::new(exponential_buckets(0.01, 2.0, 12));
        let reconcile_errors = Family::<ErrorLabels, Counter>::default();
        // At 0 from the start, so that `rate()` and `increase()` see the first error.
        for kind in RECONCILE_ERROR_KINDS {
            let _zero = reconcile_errors.get_or_create(&ErrorLabels { kind: kind.into() });
        }
        let watch_restarts = Family::<WatchLabels, Counter>::default();
        // At 0 from the start, so that `rate()` and `increase()` see the first restart.
        for resource in super::watched::Watched::ALL {
            let _zero = watch_restarts.get_or_create(&WatchLabels {
                resource: resource.as_str().into(),
            });
        }
        let phase = Sharded::<PhaseLabels, Gauge>::default();
        let canary_weight = Sharded::<ReleaseLabels, Gauge>::default();
        let releases_finished = Sharded::<OutcomeLabels, Counter>::default();
        let burn_rate = Sharded::<BurnLabels, Gauge<f64, AtomicU64>>::default();
        let burn_rate_limit = Sharded::<BurnLabels, Gauge<f64, AtomicU64>>::default();
        let analysis_consecutive_errors = Sharded::<ReleaseLabels, Gauge>::default();
        // Six buckets each: these series exist per Release and roadmap item, so every bucket
        // costs a line per Release in each scrape.
        // 1 min, 4 min, 16 min, about 1 h, 4 h and 17 h: a revision's canary start to promotion.
        let release_duration: Sharded<ItemLabels, Histogram, fn() -> Histogram> =
            Sharded::new_with_constructor(|| Histogram::new(exponential_buckets(60.0, 4.0, 6)));
        // 10 s, 40 s, about 3 min, 11 min, 43 min and 3 h: first failing analysis to traffic
        // back on the stable.
        let time_to_restore: Sharded<ItemLabels, Histogram, fn() -> Histogram> =
            Sharded::new_with_constructor(|| Histogram::new(exponential_buckets(10.0, 4.0, 6)));
        registry.register(
            "reconcile_duration_seconds",
            "Time one reconcile of a Release takes",
            reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error kind",
            reconcile_errors.clone(),
        );
        registry.register(
            "watch_restarts",
            "Watches started again after a failure (API server unreachable, 410 Gone, CRD missing), by resource",
            watch_restarts.clone(),
        );
        registry.register_sharded(
            "release_phase",
            "1 for the phase each Release is in, 0 for the others",
            &phase,
        );
        registry.register_sharded(
            "release_canary_weight",
            "Percent of traffic on each Release's canary",
            &canary_weight,
        );
        registry.register_sharded(
            "releases_finished",
            "Revisions whose release ended, by outcome and roadmap item",
            &releases_finished,
        );
        registry.register_sharded(
            "release_burn_rate",
            "Error-budget burn rate of the latest analysis, per role and window",
            &burn_rate,
        );
        registry.register_sharded(
            "release_burn_rate_limit",
            "Burn rate above which the analysis fails (the spec's max), per role and window",
            &burn_rate_limit,
        );
        registry.register_sharded(
            "release_analysis_consecutive_errors",
            "Analysis runs in a row that Prometheus could not answer, for the canary under analysis",
            &analysis_consecutive_errors,
        );
        registry.register_sharded(
            "release_duration_seconds",
            "Time from a revision's canary start to its promotion, by roadmap item",
            &release_duration,
        );
        let releases_rework = Sharded::<ItemLabels, Counter>::default();
        let roadmap_outcome_change =
            Sharded::<OutcomeChangeLabels, Gauge<f64, AtomicU64>>::default();
        registry.register_sharded(
            "releases_rework",
            "Promoted revisions whose roadmap item was already promoted within spec.roadmap.reworkWindow (rework, the fifth delivery figure)",
            &releases_rework,
        );
        registry.register_sharded(
            "roadmap_outcome_change",
            "Change of each roadmap item's outcome number from before its canary to after its promotion: percent of the baseline when minChange is a percent, else absolute; newest measured revision per item",
            &roadmap_outcome_change,
        );
        registry.register_sharded(
            "time_to_restore_seconds",
            "Time from a canary's first failing analysis to its traffic back on the stable",
            &time_to_restore,
        );
        let notifications_sent = Family::<NotificationLabels, Counter>::default();
        let notification_failures = Family::<TargetLabels, Counter>::default();
        let notifications_dropped = Counter::default();
        registry.register(
            "notifications_sent",
            "Notifications a target accepted (2xx), by target and transition",
            notifications_sent.clone(),
        );
        registry.register(
            "notification_failures",
            "Notifications given up after their bounded retries, by target",
            notification_failures.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Notifications dropped because the sender's queue was full (a reconcile never waits for it)",
            notifications_dropped.clone(),
        );
        Metrics {
            registry,
            notifications_sent,
            notification_failures,
            notifications_dropped,
            reconcile_duration,
            reconcile_errors,
            watch_restarts,
            leader,
            kube_requests,
            kube_request_duration,
            phase,
            canary_weight,
            releases_finished,
            burn_rate,
            burn_rate_limit,
            analysis_consecutive_errors,
            release_duration,
            time_to_restore,
            releases_rework,
            roadmap_outcome_change,
            outcome_series: Mutex::new(HashMap::new()),
            burn_series: Mutex::new(HashMap::new()),
            current: Mutex::new(HashMap::new()),
            finished: Mutex::new(HashMap::new()),
        }
    }
}

impl Metrics {
    /// Record how long one reconcile took.
    pub fn observe_reconcile(&self, elapsed: Duration) {
        self.reconcile_duration.observe(elapsed.as_secs_f64());
    }

    /// Count a failed reconcile by kind.
    pub fn count_error(&self, kind: &str) {
        self.reconcile_errors
            .get_or_create(&ErrorLabels { kind: kind.into() })
            .inc();
    }

    /// Whether this replica reconciles (holds the leader Lease, or runs without leader
    /// election).
    pub fn set_leader(&self, leading: bool) {
        self.leader.set(i64::from(leading));
    }

    /// Count and time one request to the Kubernetes API server.
    pub fn observe_kube_request(&self, verb: &str, resource: &str, code: &str, elapsed: Duration) {
        self.kube_requests
            .get_or_create(&KubeRequestLabels {
                verb: verb.into(),
                resource: resource.into(),
                code: code.into(),
            })
            .inc();
        self.kube_request_duration
            .get_or_create(&KubeVerbLabels {
                verb: verb.into(),
                resource: resource.into(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// Count a watch started again after a failure.
    pub fn count_watch_restart(&self, resource: &str) {
        self.watch_restarts
            .get_or_create(&WatchLabels {
                resource: resource.into(),
            })
            .inc();
    }

    /// Count a notification `target` accepted.
    pub fn count_notification_sent(&self, target: &str, transition: &str) {
        self.notifications_sent
            .get_or_create(&NotificationLabels {
                target: target.into(),
                transition: transition.into(),
            })
            .inc();
    }

    /// Count a notification to `target` given up after its retries.
    pub fn count_notification_failure(&self, target: &str) {
        self.notification_failures
            .get_or_create(&TargetLabels {
                target: target.into(),
            })
            .inc();
    }

    /// Start the failure counter of each of `targets` at 0, so that `rate()` and `increase()`
    /// see a target's first failure.
    pub fn zero_notification_failures<'a>(&self, targets: impl IntoIterator<Item = &'a str>) {
        for target in targets {
            let _zero = self.notification_failures.get_or_create(&TargetLabels {
                target: target.into(),
            });
        }
    }

    /// Count a notification dropped on a full queue.
    pub fn count_notification_dropped(&self) {
        self.notifications_dropped.inc();
    }

    /// Update a Release's phase and weight gauges from the status just written (or kept), and
    /// count a revision whose release ended since `old`.
    pub fn observe_release(
        &self,
        namespace: &str,
        release: &str,
        old: Option<&ReleaseStatus>,
        new: &ReleaseStatus,
    ) {
        let roadmap_item = new.roadmap_item.as_deref().unwrap_or_default();
        let Ok(mut current) = self.current.lock() else {
            return;
        };
        // The strings the Release's series already share, when it has some.
        let (key, labels) = match current.get_key_value(&release_key(namespace, release)) {
            Some((key, previous)) => {
                let roadmap_item = if &*previous.roadmap_item == roadmap_item {
                    previous.roadmap_item.clone()
                } else {
                    Arc::from(roadmap_item)
                };
                let labels = ReleaseLabels {
                    namespace: key.0.clone(),
                    release: key.1.clone(),
                    roadmap_item,
                };
                (key.clone(), labels)
            }
            None => {
                let key = release_key(namespace, release);
                let labels = ReleaseLabels {
                    namespace: key.0.clone(),
                    release: key.1.clone(),
                    roadmap_item: Arc::from(roadmap_item),
                };
                (key, labels)
            }
        };
        if let Some(previous) = current.insert(key.clone(), labels.clone())
            && previous != labels
        {
            self.remove_release_gauges(&previous);
        }
        drop(current);
        self.canary_weight
            .get_or_create(&labels)
            .set(i64::from(new.canary_weight.unwrap_or(0)));
        for phase in PHASES {
            let value = i64::from(new.phase == Some(phase));
            self.phase
                .get_or_create(&phase_labels(&labels, phase))
                .set(value);
        }

        self.observe_burn_rates(&labels, new);
        self.observe_analysis_errors(&labels, new);
        self.observe_outcomes(&key, new);
        if new.canary_revision.is_some() {
            self.start_delivery_series(&labels, new);
        }
        if let Ok(mut finished) = self.finished.lock() {
            finished.entry(key.clone()).or_default().in_flight = new
                .canary_revision
                .as_ref()
                .map(|_| labels.roadmap_item.clone());
        }

        // Counted once per revision, keyed by revision and finish time: not by comparing with
        // the previous status, which a reconcile on a stale cache may show out of date.
        let key_of = |entry: &HistoryEntry| (entry.revision.clone(), entry.finished_at.clone());
        let Some(newest) = new.history.first() else {
            return;
        };
        let Ok(mut finished) = self.finished.lock() else {
            return;
        };
        let counted = finished.entry(key).or_default();
        let already = counted
            .newest
            .clone()
            .or_else(|| old.and_then(|old| old.history.first()).map(key_of));
        if already.as_ref() == Some(&key_of(newest)) {
            counted.newest = already;
            return;
        }
        counted.newest = Some(key_of(newest));
        self.record_finished(&labels, newest, counted);
    }

    fn observe_burn_rates(&self, labels: &ReleaseLabels, status: &ReleaseStatus) {
        // (labels, burn rate if measured, limit) per role and window.
        let mut series = Vec::new();
        if let Some(analysis) = &status.analysis {
            for (role, result) in [("canary", &analysis.canary), ("stable", &analysis.stable)] {
                for window in result.iter().flat_map(|result| result.windows.iter()) {
                    let burn_labels = BurnLabels {
                        namespace: labels.namespace.clone(),
                        release: labels.release.clone(),
                        roadmap_item: labels.roadmap_item.clone(),
                        role,
                        window: Arc::from(window.window.as_str()),
                    };
                    series.push((burn_labels, window.burn_rate, window.max));
                }
            }
        }
        let key = (labels.namespace.clone(), labels.release.clone());
        if let Ok(mut current) = self.burn_series.lock() {
            // Only the series the status no longer has go: the others are set in place, not
            // removed and made again on each reconcile.
            for stale in current.remove(&key).unwrap_or_default() {
                if !series.iter().any(|(labels, ..)| *labels == stale) {
                    self.burn_rate.remove(&stale);
                    self.burn_rate_limit.remove(&stale);
                }
            }
            for (burn_labels, burn_rate, limit) in &series {
                // No figure, no burn-rate series; the limit holds regardless.
                match burn_rate {
                    Some(burn_rate) => {
                        self.burn_rate.get_or_create(burn_labels).set(*burn_rate);
                    }
                    None => {
                        self.burn_rate.remove(burn_labels);
                    }
                }
                self.burn_rate_limit.get_or_create(burn_labels).set(*limit);
            }
            current.insert(key, series.into_iter().map(|(labels, ..)| labels).collect());
        }
    }

    /// The change of each item's newest measured outcome (Met or NotMet: an Inconclusive one
    /// has no number), replacing the series set before for the Release.
    fn observe_outcomes(&self, key: &ReleaseKey, status: &ReleaseStatus) {
        let mut series: Vec<(OutcomeChangeLabels, f64)> = Vec::new();
        for entry in &status.history {
            let Some(record) = &entry.roadmap_outcome else {
                continue;
            };
            let (Some(verdict), Some(change)) = (record.verdict, record.change) else {
                continue;
            };
            // Newest first: an item's older measurement is not exported beside its newest.
            if series.iter().any(|(labels, _)| {
                *labels.roadmap_item == *entry.roadmap_item && *labels.outcome == *record.name
            }) {
                continue;
            }
            series.push((
                OutcomeChangeLabels {
                    namespace: key.0.clone(),
                    release: key.1.clone(),
                    roadmap_item: Arc::from(entry.roadmap_item.as_str()),
                    horizon: entry.horizon.map_or("", |h| h.as_str()),
                    kind: entry.kind.map_or("", |k| k.as_str()),
                    outcome: Arc::from(record.name.as_str()),
                    verdict: verdict.label(),
                },
                change,
            ));
        }
        if let Ok(mut current) = self.outcome_series.lock() {
            for stale in current.remove(key).unwrap_or_default() {
                if !series.iter().any(|(labels, _)| *labels == stale) {
                    self.roadmap_outcome_change.remove(&stale);
                }
            }
            for (labels, change) in &series {
                self.roadmap_outcome_change
                    .get_or_create(labels)
                    .set(*change);
            }
            if !series.is_empty() {
                current.insert(
                    key.clone(),
                    series.into_iter().map(|(labels, _)| labels).collect(),
                );
            }
        }
    }

    /// Consecutive analysis errors of the canary being judged. Absent when no canary is under
    /// analysis: after a rollback or promotion the old count describes nothing that runs.
    fn observe_analysis_errors(&self, labels: &ReleaseLabels, status: &ReleaseStatus) {
        let under_analysis = status.analysis.as_ref().filter(|analysis| {
            status.canary_revision.is_some() && analysis.revision == status.canary_revision
        });
        match under_analysis {
            Some(analysis) => {
                self.analysis_consecutive_errors
                    .get_or_create(labels)
                    .set(i64::from(analysis.consecutive_errors));
            }
            None => {
                self.analysis_consecutive_errors.remove(labels);
            }
        }
    }

    /// Create the delivery series of the roadmap item in progress at zero, before its outcome.
    /// Prometheus's `increase()` cannot see the first increment of a series that appears with
    /// value 1, and most roadmap items finish exactly once: without the zero the dashboard's
    /// deployment frequency, change failure rate, promotion time and time to restore would miss
    /// them.
    /// The series carry the horizon and kind the status gives for the item (empty when unset),
    /// as the history entry of its outcome will.
    fn start_delivery_series(&self, labels: &ReleaseLabels, status: &ReleaseStatus) {
        let key = (labels.namespace.clone(), labels.release.clone());
        let Ok(mut finished) = self.finished.lock() else {
            return;
        };
        let horizon = status.roadmap_horizon.map_or("", |h| h.as_str());
        let kind = status.roadmap_kind.map_or("", |k| k.as_str());
        let item = ItemLabels {
            namespace: labels.namespace.clone(),
            release: labels.release.clone(),
            roadmap_item: labels.roadmap_item.clone(),
            horizon,
            kind,
        };
        let counted = finished.entry(key).or_default();
        counted.histograms(&item);
        for outcome in OUTCOMES {
            let outcome_labels = OutcomeLabels {
                namespace: labels.namespace.clone(),
                release: labels.release.clone(),
                roadmap_item: labels.roadmap_item.clone(),
                horizon,
                kind,
                outcome: outcome.metric_label(),
            };
            counted.outcome(&outcome_labels);
            // The guards only create the series; nothing is counted or observed.
            drop(self.releases_finished.get_or_create(&outcome_labels));
        }
        drop(self.release_duration.get_or_create(&item));
        drop(self.time_to_restore.get_or_create(&item));
        drop(self.releases_rework.get_or_create(&item));
    }

    fn remove_release_gauges(&self, labels: &ReleaseLabels) {
        self.canary_weight.remove(labels);
        self.analysis_consecutive_errors.remove(labels);
        for phase in PHASES {
            self.phase.remove(&phase_labels(labels, phase));
        }
    }

    /// Remove every series of a Release that no longer exists (or that this replica no longer
    /// reconciles), so that dashboards and alerts stop seeing its last phase; its delivery
    /// history lives on in the Release-independent sums Prometheus already scraped.
    pub fn forget_release(&self, namespace: &str, release: &str) {
        let key = release_key(namespace, release);
        let labels = self
            .current
            .lock()
            .ok()
            .and_then(|mut current| current.remove(&key));
        if let Some(labels) = labels {
            self.remove_release_gauges(&labels);
        }
        let outcome_series = self
            .outcome_series
            .lock()
            .ok()
            .and_then(|mut current| current.remove(&key));
        for stale in outcome_series.unwrap_or_default() {
            self.roadmap_outcome_change.remove(&stale);
        }
        let burn_series = self
            .burn_series
            .lock()
            .ok()
            .and_then(|mut current| current.remove(&key));
        for stale in burn_series.unwrap_or_default() {
            self.burn_rate.remove(&stale);
            self.burn_rate_limit.remove(&stale);
        }
        let finished = self
            .finished
            .lock()
            .ok()
            .and_then(|mut all| all.remove(&key));
        for item in finished.into_iter().flat_map(|finished| finished.items) {
            self.remove_delivery_series(item);
        }
    }

    fn remove_delivery_series(&self, item: ItemSeries) {
        for labels in item.outcomes {
            self.releases_finished.remove(&labels);
        }
        for labels in item.histograms {
            self.release_duration.remove(&labels);
            self.time_to_restore.remove(&labels);
            self.releases_rework.remove(&labels);
        }
    }

    /// Remove the delivery series of roadmap items that no canary runs for and that nothing
    /// touched for [`DELIVERY_SERIES_KEPT`] before `now`. Called before each scrape.
    pub fn sweep_delivery_series(&self, now: Instant) {
        let expired: Vec<ItemSeries> = match self.finished.lock() {
            Ok(mut finished) => finished
                .values_mut()
                .flat_map(|finished| finished.expired(now))
                .collect(),
            Err(_) => return,
        };
        for item in expired {
            self.remove_delivery_series(item);
        }
    }

    /// Sweep the delivery series every [`DELIVERY_SWEEP_EVERY`] until `stop` turns true, so
    /// that what a finished item leaves goes whether or not anything scrapes `/metrics`.
    pub async fn sweep_delivery_series_until(
        self: Arc<Self>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut every = tokio::time::interval(DELIVERY_SWEEP_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let stopped = super::stopped(stop);
        tokio::pin!(stopped);
        loop {
            tokio::select! {
                () = &mut stopped => return,
                _ = every.tick() => self.sweep_delivery_series(Instant::now()),
            }
        }
    }

    /// Remove the gauges of every Release: a replica that stops reconciling (it lost the leader
    /// Lease) must not keep reporting phases that the new leader now owns.
    pub fn forget_releases(&self) {
        let mut keys: Vec<ReleaseKey> = Vec::new();
        if let Ok(current) = self.current.lock() {
            keys.extend(current.keys().cloned());
        }
        if let Ok(current) = self.burn_series.lock() {
            keys.extend(current.keys().cloned());
        }
        if let Ok(current) = self.outcome_series.lock() {
            keys.extend(current.keys().cloned());
        }
        if let Ok(finished) = self.finished.lock() {
            keys.extend(finished.keys().cloned());
        }
        keys.sort();
        keys.dedup();
        for (namespace, release) in keys {
            self.forget_release(&namespace, &release);
        }
    }

    /// Count a finished revision and observe its delivery times (the DORA figures per item).
    fn record_finished(
        &self,
        release: &ReleaseLabels,
        finished: &HistoryEntry,
        counted: &mut Finished,
    ) {
        let horizon = finished.horizon.map_or("", |h| h.as_str());
        let kind = finished.kind.map_or("", |k| k.as_str());
        // The item's series were made at its canary's start: share their strings.
        let roadmap_item = counted
            .items
            .iter()
            .map(|item| &item.roadmap_item)
            .chain([&release.roadmap_item])
            .find(|item| ***item == *finished.roadmap_item)
            .cloned()
            .unwrap_or_else(|| Arc::from(finished.roadmap_item.as_str()));
        let labels = OutcomeLabels {
            namespace: release.namespace.clone(),
            release: release.release.clone(),
            roadmap_item: roadmap_item.clone(),
            horizon,
            kind,
            outcome: finished.outcome.metric_label(),
        };
        counted.outcome(&labels);
        self.releases_finished.get_or_create(&labels).inc();
        let item = ItemLabels {
            namespace: release.namespace.clone(),
            release: release.release.clone(),
            roadmap_item,
            horizon,
            kind,
        };
        let seconds_until_finished = |from: &Time| {
            finished
                .finished_at
                .0
                .duration_since(from.0)
                .as_secs_f64()
                .max(0.0)
        };
        if let Some(started_at) = &finished.started_at
            && finished.outcome == Outcome::Promoted
        {
            counted.histograms(&item).observed_duration = true;
            self.release_duration
                .get_or_create(&item)
                .observe(seconds_until_finished(started_at));
        }
        if finished.rework && finished.outcome == Outcome::Promoted {
            counted.histograms(&item);
            self.releases_rework.get_or_create(&item).inc();
        }
        if let Some(detected_at) = &finished.failure_detected_at
            && matches!(finished.outcome, Outcome::RolledBack | Outcome::Aborted)
        {
            counted.histograms(&item).observed_restore = true;
            self.time_to_restore
                .get_or_create(&item)
                .observe(seconds_until_finished(detected_at));
        }
        self.drop_zero_delivery_series(counted, &item.roadmap_item);
    }

    /// Once a revision of `roadmap_item` has finished and no canary of the item runs, remove
    /// the item's delivery series that are still at zero: the outcomes it did not have, and
    /// the promotion-time or time-to-restore histogram it did not observe. They were created
    /// at the canary's start only so that `increase()` would see a first outcome; once the
    /// outcome is counted they can never change, and they were most of a finished item's
    /// lines in each scrape (and of its memory) while it is kept. A later canary of the item
    /// creates them at zero again.
    fn drop_zero_delivery_series(&self, counted: &mut Finished, roadmap_item: &Arc<str>) {
        if counted.in_flight.as_deref() == Some(&**roadmap_item) {
            return;
        }
        let Some(item) = counted
            .items
            .iter_mut()
            .find(|item| item.roadmap_item == *roadmap_item)
        else {
            return;
        };
        item.outcomes.retain(|labels| {
            // The read guard goes before the removal takes the write lock.
            let zero = self
                .releases_finished
                .get(labels)
                .map(|counter| counter.get())
                == Some(0);
            if zero {
                self.releases_finished.remove(labels);
            }
            !zero
        });
        for labels in &item.histograms {
            if !item.observed_duration {
                self.release_duration.remove(labels);
            }
            if !item.observed_restore {
                self.time_to_restore.remove(labels);
            }
            if self
                .releases_rework
                .get(labels)
                .map(|counter| counter.get())
                == Some(0)
            {
                self.releases_rework.remove(labels);
            }
        }
    }

    /// The metrics in the Prometheus text exposition format, after sweeping the delivery series
    /// that are done with: every part of [`Self::encode_part`] in one string.
    pub fn encode(&self) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        let mut index = 0;
        while let Some(part) = self.encode_part(index) {
            text.push_str(&part?);
            index += 1;
        }
        Ok(text)
    }

    /// Part `index` of the exposition, `None` past the end: the process metrics (after the
    /// sweep of the delivery series that are done with), then one Waymark metric family a
    /// part (a per-Release family in a part per shard, after its description), then the EOF
    /// marker. A scrape is sent part by part, so it never holds the whole text (tens of MB at
    /// 10,000 Releases), nor a whole per-Release family.
    pub fn encode_part(&self, index: usize) -> Option<Result<String, std::fmt::Error>> {
        if index == 0 {
            self.sweep_delivery_series(Instant::now());
        }
        self.registry.encode_part(index)
    }
}

/// Forgets every Release's gauges when dropped: held by the running controller, so that the
/// gauges go when it stops (losing the leader Lease drops the controller future).
pub struct ForgetReleasesOnDrop(pub Arc<Metrics>);

impl Drop for ForgetReleasesOnDrop {
    fn drop(&mut self) {
        self.0.forget_releases();
    }
}

fn phase_labels(labels: &ReleaseLabels, phase: Phase) -> PhaseLabels {
    PhaseLabels {
        namespace: labels.namespace.clone(),
        release: labels.release.clone(),
        roadmap_item: labels.roadmap_item.clone(),
        phase: phase.as_str(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_of_known_labels_and_the_controllers_own_gauges_exist_before_any_event() {
        let text = Metrics::default().encode().unwrap();
        for kind in RECONCILE_ERROR_KINDS {
            let zero = format!(r#"waymark_reconcile_errors_total{{kind="{kind}"}} 0"#);
            assert!(text.contains(&zero), "{zero} missing from {text}");
        }
        for resource in ["releases", "deployments", "services", "httproutes"] {
            let zero = format!(r#"waymark_watch_restarts_total{{resource="{resource}"}} 0"#);
            assert!(text.contains(&zero), "{zero} missing from {text}");
        }
        let version = env!("CARGO_PKG_VERSION");
        assert!(
            text.contains(&format!(r#"waymark_build_info{{version="{version}""#)),
            "{text}"
        );
        assert!(
            text.contains("\nwaymark_leader 0\n"),
            "a standby until told: {text}"
        );
        assert!(
            text.contains("waymark_reconcile_duration_seconds_count 0"),
            "{text}"
        );
        // Under the Go client's names, without Waymark's prefix.
        #[cfg(target_os = "linux")]
        for process in [
            "\nprocess_cpu_seconds_total ",
            "\nprocess_resident_memory_bytes ",
            "\nprocess_open_fds ",
            "\nprocess_max_fds ",
            "\nprocess_start_time_seconds ",
        ] {
            assert!(text.contains(process), "{process} missing from {text}");
        }
        assert!(!text.contains("waymark_process_"), "{text}");
        assert!(text.ends_with("# EOF\n"), "one exposition: {text}");
    }

    #[test]
    fn the_leader_gauge_follows_what_it_is_told() {
        let metrics = Metrics::default();
        metrics.set_leader(true);
        assert!(metrics.encode().unwrap().contains("\nwaymark_leader 1\n"));
        metrics.set_leader(false);
        assert!(metrics.encode().unwrap().contains("\nwaymark_leader 0\n"));
    }

    /// Every kind of error the reconcile counts has its zero: a new variant fails to compile
    /// here until it is listed.
    #[test]
    fn every_error_kind_is_among_the_zero_initialised_kinds() {
        use super::super::Error;
        fn example(error: &Error) -> &'static str {
            match error {
                Error::Kube(_)
                | Error::Refused { .. }
                | Error::Secret { .. }
                | Error::MissingObjectKey(_)
                | Error::Serialize { .. }
                | Error::CachedRelease { .. }
                | Error::Http { .. }
                | Error::Config { .. }
                | Error::NamespaceTerminating { .. } => error.metric_label(),
            }
        }
        let refused = |reason: &'static str| Error::Refused {
            object: "Deployment shop/checkout".into(),
            reason,
            message: String::new(),
        };
        let mut errors = vec![
            Error::from(kube::Error::LinesCodecMaxLineLengthExceeded),
            Error::Secret {
                namespace: "shop".into(),
                name: "token".into(),
                key: "token".into(),
                field: "spec.analysis.prometheus",
                problem: String::new(),
            },
            Error::MissingObjectKey("name"),
            Error::Serialize {
                what: "status",
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            },
            Error::CachedRelease {
                source: serde_json::from_str::<u8>("x").unwrap_err(),
            },
            Error::Config {
                message: String::new(),
            },
            Error::Http {
                addr: "127.0.0.1:8080".parse().unwrap(),
                source: std::io::Error::other("in use"),
            },
            Error::NamespaceTerminating {
                object: "Service shop/checkout".into(),
            },
        ];
        for reason in [
            "Forbidden",
            "QuotaExceeded",
            "Invalid",
            "AdmissionDenied",
            "Conflict",
            "NotOwned",
            "Rejected",
        ] {
            errors.push(refused(reason));
        }
        let mut kinds: Vec<&str> = errors.iter().map(example).collect();
        kinds.push("undecodable_release");
        kinds.sort();
        let mut listed = RECONCILE_ERROR_KINDS.to_vec();
        listed.sort();
        assert_eq!(kinds, listed);
    }

    #[test]
    fn release_gauges_carry_namespace_release_and_roadmap_item() {
        let metrics = Metrics::default();
        let status = ReleaseStatus {
            phase: Some(Phase::Progressing),
            canary_weight: Some(50),
            roadmap_item: Some("PAY-142".into()),
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", None, &status);
        metrics.count_error("kube");
        metrics.observe_reconcile(Duration::from_millis(20));
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"waymark_release_canary_weight{namespace="shop",release="checkout",roadmap_item="PAY-142"} 50"#
            ),
            "{text}"
        );
        assert!(text.contains(
            r#"waymark_release_phase{namespace="shop",release="checkout",roadmap_item="PAY-142",phase="Progressing"} 1"#
        ));
        assert!(text.contains(r#"waymark_reconcile_errors_total{kind="kube"} 1"#));
        assert!(text.contains("waymark_reconcile_duration_seconds_count 1"));
    }

    #[test]
    fn burn_rates_are_exported_per_role_and_window_and_replaced_on_update() {
        use crate::api::{AnalysisStatus, RoleAnalysis, Verdict, WindowResult};
        let window = |name: &str, burn_rate: Option<f64>| WindowResult {
            window: name.into(),
            error_ratio: None,
            requests: None,
            burn_rate,
            max: 14.4,
            note: None,
            error_query: String::new(),
            total_query: String::new(),
        };
        let analysis = |windows: Vec<WindowResult>| AnalysisStatus {
            verdict: Verdict::Passing,
            canary: Some(RoleAnalysis {
                verdict: Verdict::Passing,
                service: "checkout-canary".into(),
                windows,
            }),
            ..Default::default()
        };
        let metrics = Metrics::default();
        let mut status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            analysis: Some(analysis(vec![window("5m", Some(0.8)), window("1m", None)])),
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"waymark_release_burn_rate{namespace="shop",release="checkout",roadmap_item="PAY-142",role="canary",window="5m"} 0.8"#
            ),
            "{text}"
        );
        assert!(
            !text
                .lines()
                .any(|line| line.starts_with("waymark_release_burn_rate{")
                    && line.contains(r#"window="1m""#)),
            "no figure, no series: {text}"
        );

        status.analysis = Some(analysis(vec![window("1m", Some(21.3))]));
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            !text.contains(r#"window="5m""#),
            "stale window removed: {text}"
        );
        assert!(
            text.contains(r#"role="canary",window="1m"} 21.3"#),
            "{text}"
        );
    }

    #[test]
    fn a_finished_rollback_records_its_time_to_restore_once_and_no_promotion_time() {
        use crate::api::HistoryEntry;
        let time = |text: &str| Time(text.parse().unwrap());
        let rolled_back = HistoryEntry {
            revision: "6f9c7d".into(),
            roadmap_item: "PAY-142".into(),
            outcome: Outcome::RolledBack,
            started_at: Some(time("2026-11-21T12:00:00Z")),
            finished_at: time("2026-11-21T12:10:00Z"),
            failure_detected_at: Some(time("2026-11-21T12:09:00Z")),
            reason: "AnalysisFailing".into(),
            message: None,
            horizon: Some(crate::api::Horizon::Now),
            kind: None,
            timeline: Vec::new(),
            roadmap_outcome: None,
            rework: false,
        };
        let status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            history: vec![rolled_back],
            ..ReleaseStatus::default()
        };
        let metrics = Metrics::default();
        metrics.observe_release("shop", "checkout", None, &status);
        // The same status again (a later reconcile) must not count the revision twice.
        metrics.observe_release("shop", "checkout", Some(&status), &status);
        let text = metrics.encode().unwrap();
        let labels =
            r#"namespace="shop",release="checkout",roadmap_item="PAY-142",horizon="now",kind="""#;
        for expected in [
            format!(r#"waymark_releases_finished_total{{{labels},outcome="rolled_back"}} 1"#),
            format!(r#"waymark_time_to_restore_seconds_sum{{{labels}}} 60.0"#),
            format!(r#"waymark_time_to_restore_seconds_count{{{labels}}} 1"#),
        ] {
            assert!(text.contains(&expected), "{expected} missing from {text}");
        }
        assert!(
            !text.contains("waymark_release_duration_seconds_count{"),
            "{text}"
        );
    }

    #[test]
    fn a_promotion_records_its_time_from_canary_start() {
        let status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            history: vec![HistoryEntry {
                started_at: Some(Time("2026-11-21T11:50:00Z".parse().unwrap())),
                ..finished("6f9c7d", "2026-11-21T12:10:00Z")
            }],
            ..ReleaseStatus::default()
        };
        let metrics = Metrics::default();
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        for expected in [
            format!("waymark_release_duration_seconds_sum{{{DELIVERY}}} 1200.0"),
            format!("waymark_release_duration_seconds_count{{{DELIVERY}}} 1"),
            format!(r#"waymark_release_duration_seconds_bucket{{le="3840.0",{DELIVERY}}} 1"#),
            format!(r#"waymark_release_duration_seconds_bucket{{le="960.0",{DELIVERY}}} 0"#),
        ] {
            assert!(text.contains(&expected), "{expected} missing from {text}");
        }
        assert!(
            !text.contains("waymark_time_to_restore_seconds_count{"),
            "{text}"
        );
    }

    #[test]
    fn a_new_roadmap_item_replaces_the_old_series() {
        let metrics = Metrics::default();
        let mut status = ReleaseStatus {
            roadmap_item: Some("PAY-1".into()),
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", None, &status);
        status.roadmap_item = Some("PAY-2".into());
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(!text.contains("PAY-1"), "{text}");
        assert!(text.contains("PAY-2"));
    }

    fn analysed_canary(
        consecutive_errors: i32,
        windows: Vec<crate::api::WindowResult>,
    ) -> ReleaseStatus {
        use crate::api::{AnalysisStatus, RoleAnalysis, Verdict};
        ReleaseStatus {
            phase: Some(Phase::Progressing),
            roadmap_item: Some("PAY-142".into()),
            canary_revision: Some("6f9c7d".into()),
            canary_weight: Some(10),
            analysis: Some(AnalysisStatus {
                verdict: if consecutive_errors > 0 {
                    Verdict::Error
                } else {
                    Verdict::Passing
                },
                revision: Some("6f9c7d".into()),
                canary: Some(RoleAnalysis {
                    verdict: Verdict::Passing,
                    service: "checkout-canary".into(),
                    windows,
                }),
                consecutive_errors,
                ..Default::default()
            }),
            ..ReleaseStatus::default()
        }
    }

    fn window(name: &str, burn_rate: Option<f64>, max: f64) -> crate::api::WindowResult {
        crate::api::WindowResult {
            window: name.into(),
            error_ratio: None,
            requests: None,
            burn_rate,
            max,
            note: None,
            error_query: String::new(),
            total_query: String::new(),
        }
    }

    const LABELS: &str = r#"namespace="shop",release="checkout",roadmap_item="PAY-142""#;
    /// The delivery series' labels: [`LABELS`] with the item's horizon and kind (unset here).
    const DELIVERY: &str =
        r#"namespace="shop",release="checkout",roadmap_item="PAY-142",horizon="",kind="""#;

    #[test]
    fn the_burn_rate_limit_is_exported_per_window_even_before_a_figure_exists() {
        let metrics = Metrics::default();
        let status = analysed_canary(
            0,
            vec![window("5m", Some(0.8), 14.4), window("1m", None, 14.4)],
        );
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        for expected in [
            format!(
                r#"waymark_release_burn_rate_limit{{{LABELS},role="canary",window="5m"}} 14.4"#
            ),
            format!(
                r#"waymark_release_burn_rate_limit{{{LABELS},role="canary",window="1m"}} 14.4"#
            ),
            format!(r#"waymark_release_burn_rate{{{LABELS},role="canary",window="5m"}} 0.8"#),
        ] {
            assert!(text.contains(&expected), "{expected} missing from {text}");
        }

        let status = analysed_canary(0, vec![window("30m", Some(2.0), 6.0)]);
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            !text.contains(r#"window="5m""#),
            "stale limit removed: {text}"
        );
        assert!(text.contains(&format!(
            r#"waymark_release_burn_rate_limit{{{LABELS},role="canary",window="30m"}} 6.0"#
        )));
    }

    #[test]
    fn a_window_kept_across_reconciles_is_updated_and_loses_its_figure_when_the_status_does() {
        let metrics = Metrics::default();
        let before = analysed_canary(
            0,
            vec![window("5m", Some(0.8), 14.4), window("1h", Some(0.2), 6.0)],
        );
        metrics.observe_release("shop", "checkout", None, &before);
        let after = analysed_canary(
            0,
            vec![window("5m", Some(3.5), 14.4), window("1h", None, 6.0)],
        );
        metrics.observe_release("shop", "checkout", Some(&before), &after);
        let text = metrics.encode().unwrap();
        let burn = |window: &str| {
            text.lines()
                .filter(|line| {
                    line.starts_with("waymark_release_burn_rate{")
                        && line.contains(&format!(r#"window="{window}""#))
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(
            burn("5m"),
            [format!(
                r#"waymark_release_burn_rate{{{LABELS},role="canary",window="5m"}} 3.5"#
            )],
            "{text}"
        );
        assert!(
            burn("1h").is_empty(),
            "no figure any more, no series: {text}"
        );
        assert!(
            text.contains(&format!(
                r#"waymark_release_burn_rate_limit{{{LABELS},role="canary",window="1h"}} 6.0"#
            )),
            "the limit stays: {text}"
        );
    }

    #[test]
    fn consecutive_analysis_errors_are_exported_only_while_the_canary_is_judged() {
        let metrics = Metrics::default();
        let mut status = analysed_canary(3, vec![]);
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(&format!(
                "waymark_release_analysis_consecutive_errors{{{LABELS}}} 3"
            )),
            "{text}"
        );

        // Rolled back: the analysis stays in the status, but no canary is judged any more.
        status.phase = Some(Phase::RolledBack);
        status.canary_revision = None;
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            !text.contains("waymark_release_analysis_consecutive_errors{"),
            "{text}"
        );
    }

    #[test]
    fn a_canary_in_progress_starts_its_delivery_series_at_zero() {
        let metrics = Metrics::default();
        metrics.observe_release("shop", "checkout", None, &analysed_canary(0, vec![]));
        let text = metrics.encode().unwrap();
        for outcome in ["promoted", "rolled_back", "aborted", "superseded"] {
            let counter =
                format!(r#"waymark_releases_finished_total{{{DELIVERY},outcome="{outcome}"}} 0"#);
            assert!(text.contains(&counter), "{counter} missing from {text}");
        }
        for zero_series in [
            "waymark_release_duration_seconds_count",
            "waymark_time_to_restore_seconds_count",
            "waymark_releases_rework_total",
        ] {
            let zero = format!("{zero_series}{{{DELIVERY}}} 0");
            assert!(text.contains(&zero), "{zero} missing from {text}");
        }
        // Per histogram six buckets, +Inf, sum and count; besides them only the one-hot phase,
        // the weight, the analysis errors and the rework counter: the lines each Release costs
        // a scrape.
        let lines = text
            .lines()
            .filter(|line| !line.starts_with('#') && line.contains(r#"release="checkout""#))
            .count();
        assert_eq!(lines, 5 + 1 + 1 + 4 + 1 + 2 * (6 + 1 + 2), "{text}");

        // With a horizon and kind the zeros carry them, as the outcome's entry will.
        let metrics = Metrics::default();
        let mut status = analysed_canary(0, vec![]);
        status.roadmap_horizon = Some(crate::api::Horizon::Next);
        status.roadmap_kind = Some(crate::api::RoadmapKind::Security);
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"waymark_releases_finished_total{namespace="shop",release="checkout",roadmap_item="PAY-142",horizon="next",kind="security",outcome="promoted"} 0"#),
            "{text}"
        );
    }

    #[test]
    fn a_forgotten_release_loses_every_series_and_the_others_keep_theirs() {
        let metrics = Arc::new(Metrics::default());
        let mut status = analysed_canary(1, vec![window("5m", Some(0.8), 14.4)]);
        status.history = vec![HistoryEntry {
            revision: "5d8b9c".into(),
            roadmap_item: "PAY-139".into(),
            outcome: Outcome::Promoted,
            started_at: None,
            finished_at: Time("2026-11-21T12:00:00Z".parse().unwrap()),
            failure_detected_at: None,
            reason: "Promoted".into(),
            message: None,
            horizon: None,
            kind: None,
            timeline: Vec::new(),
            roadmap_outcome: None,
            rework: false,
        }];
        metrics.observe_release("shop", "checkout", None, &status);
        metrics.observe_release("shop", "cart", None, &status);

        metrics.forget_release("shop", "checkout");
        let text = metrics.encode().unwrap();
        let gauges = [
            "waymark_release_phase{",
            "waymark_release_canary_weight{",
            "waymark_release_burn_rate{",
            "waymark_release_burn_rate_limit{",
            "waymark_release_analysis_consecutive_errors{",
        ];
        for gauge in gauges {
            assert!(
                !text
                    .lines()
                    .any(|line| line.starts_with(gauge) && line.contains(r#"release="checkout""#)),
                "{gauge} of the forgotten release is gone: {text}"
            );
            assert!(
                text.lines()
                    .any(|line| line.starts_with(gauge) && line.contains(r#"release="cart""#)),
                "{gauge} of the other release stays: {text}"
            );
        }
        // Its delivery series go too (Prometheus keeps what it scraped); the other's stay.
        assert!(
            !text
                .contains(r#"waymark_releases_finished_total{namespace="shop",release="checkout""#),
            "{text}"
        );
        assert!(text.contains(
            r#"waymark_releases_finished_total{namespace="shop",release="cart",roadmap_item="PAY-139",horizon="",kind="",outcome="promoted"} 1"#
        ));

        drop(ForgetReleasesOnDrop(metrics.clone()));
        let text = metrics.encode().unwrap();
        for gauge in gauges {
            assert!(
                !text.contains(gauge),
                "{gauge} left after forgetting all: {text}"
            );
        }
    }

    #[test]
    fn rework_is_counted_per_item_and_the_newest_outcome_change_is_exported() {
        use crate::api::{Goal, MinChange, OutcomeVerdict, RoadmapOutcome};
        let mut record = crate::rollout::outcome::record_for(&RoadmapOutcome {
            name: "checkout-conversion".into(),
            query: "q".into(),
            goal: Goal::Increase,
            baseline: crate::api::Duration::from_secs(30),
            after: crate::api::Duration::from_secs(20),
            min_change: MinChange::Percent(2.0),
        });
        let mut older = record.clone();
        older.change = Some(-1.0);
        older.verdict = Some(OutcomeVerdict::NotMet);
        record.change = Some(3.1);
        record.verdict = Some(OutcomeVerdict::Met);
        let status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            history: vec![
                HistoryEntry {
                    rework: true,
                    roadmap_outcome: Some(record),
                    ..finished("6f9c7d", "2026-11-21T12:10:00Z")
                },
                HistoryEntry {
                    roadmap_outcome: Some(older),
                    ..finished("5d8b9c", "2026-11-20T12:10:00Z")
                },
            ],
            ..ReleaseStatus::default()
        };
        let metrics = Metrics::default();
        metrics.observe_release("shop", "checkout", None, &status);
        let text = metrics.encode().unwrap();
        for expected in [
            format!("waymark_releases_rework_total{{{DELIVERY}}} 1"),
            format!(
                r#"waymark_roadmap_outcome_change{{{DELIVERY},outcome="checkout-conversion",verdict="met"}} 3.1"#
            ),
        ] {
            assert!(text.contains(&expected), "{expected} missing from {text}");
        }
        assert!(
            !text.contains(r#"verdict="not_met""#),
            "only the newest: {text}"
        );
        metrics.forget_release("shop", "checkout");
        let text = metrics.encode().unwrap();
        assert!(!text.contains("waymark_roadmap_outcome_change{"), "{text}");
    }

    fn finished(revision: &str, at: &str) -> crate::api::HistoryEntry {
        crate::api::HistoryEntry {
            revision: revision.into(),
            roadmap_item: "PAY-142".into(),
            outcome: Outcome::Promoted,
            started_at: None,
            finished_at: Time(at.parse().unwrap()),
            failure_detected_at: None,
            reason: "Promoted".into(),
            message: None,
            horizon: None,
            kind: None,
            timeline: Vec::new(),
            roadmap_outcome: None,
            rework: false,
        }
    }

    #[test]
    fn a_revision_is_counted_once_even_when_a_reconcile_sees_a_stale_status() {
        let metrics = Metrics::default();
        let before = ReleaseStatus::default();
        let after = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            history: vec![finished("6f9c7d", "2026-11-21T12:10:00Z")],
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", Some(&before), &after);
        // A later reconcile whose cached Release still predates that write.
        metrics.observe_release("shop", "checkout", Some(&before), &after);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"waymark_releases_finished_total{namespace="shop",release="checkout",roadmap_item="PAY-142",horizon="",kind="",outcome="promoted"} 1"#),
            "{text}"
        );
    }

    #[test]
    fn a_finished_items_delivery_series_go_once_kept_long_enough_and_are_not_counted_again() {
        let metrics = Metrics::default();
        let mut status = analysed_canary(0, vec![]);
        metrics.observe_release("shop", "checkout", None, &status);
        let promoted_at = Instant::now();
        status.canary_revision = None;
        status.phase = Some(Phase::Healthy);
        status.history = vec![finished("6f9c7d", "2026-11-21T12:10:00Z")];
        metrics.observe_release("shop", "checkout", None, &status);
        let counted =
            format!(r#"waymark_releases_finished_total{{{DELIVERY},outcome="promoted"}} 1"#);

        metrics.sweep_delivery_series(promoted_at);
        let text = metrics.encode().unwrap();
        assert!(text.contains(&counted), "{counted} missing from {text}");

        metrics.sweep_delivery_series(promoted_at + DELIVERY_SERIES_KEPT + Duration::from_secs(1));
        // Another reconcile of the same status: the revision was counted, nothing comes back.
        metrics.observe_release("shop", "checkout", None, &status);
        metrics.sweep_delivery_series(promoted_at + DELIVERY_SERIES_KEPT + Duration::from_secs(1));
        let text = metrics.encode().unwrap();
        for family in [
            "waymark_releases_finished_total{",
            "waymark_release_duration_seconds_count{",
            "waymark_time_to_restore_seconds_count{",
        ] {
            assert!(!text.contains(family), "{family} left in {text}");
        }
        assert!(
            text.contains(&format!(
                r#"waymark_release_phase{{{LABELS},phase="Healthy"}} 1"#
            )),
            "the Release's own gauges stay: {text}"
        );
    }

    /// Nothing scrapes this controller: the periodic sweep alone removes a finished item's
    /// series once kept long enough, and not before.
    #[tokio::test(start_paused = true)]
    async fn a_finished_items_series_go_unscraped_within_a_sweep_period_of_being_due() {
        let metrics = Arc::new(Metrics::default());
        let mut status = analysed_canary(0, vec![]);
        metrics.observe_release("shop", "checkout", None, &status);
        status.canary_revision = None;
        status.phase = Some(Phase::Healthy);
        status.history = vec![HistoryEntry {
            started_at: Some(Time("2026-11-21T12:00:00Z".parse().unwrap())),
            ..finished("6f9c7d", "2026-11-21T12:10:00Z")
        }];
        metrics.observe_release("shop", "checkout", None, &status);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let sweeper = tokio::spawn(metrics.clone().sweep_delivery_series_until(stop_rx));
        let counted = || {
            metrics
                .finished
                .lock()
                .unwrap()
                .values()
                .map(|finished| finished.items.len())
                .sum::<usize>()
        };
        let promoted_series = || {
            metrics
                .release_duration
                .get(&ItemLabels {
                    namespace: "shop".into(),
                    release: "checkout".into(),
                    roadmap_item: "PAY-142".into(),
                    horizon: "",
                    kind: "",
                })
                .is_some()
        };
        assert!(promoted_series(), "the promotion time was observed");

        tokio::time::sleep(DELIVERY_SERIES_KEPT - Duration::from_secs(1)).await;
        assert_eq!(counted(), 1, "kept until due");
        assert!(promoted_series());

        tokio::time::sleep(DELIVERY_SWEEP_EVERY + Duration::from_secs(1)).await;
        assert_eq!(counted(), 0, "swept within a period of being due");
        assert!(!promoted_series(), "its histogram went with it");

        stop_tx.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(1), sweeper)
            .await
            .expect("the sweep stops when told")
            .unwrap();
    }

    #[test]
    fn a_running_canarys_delivery_series_stay_however_long_it_runs() {
        let metrics = Metrics::default();
        let mut status = analysed_canary(0, vec![]);
        status.history = vec![HistoryEntry {
            roadmap_item: "PAY-139".into(),
            ..finished("5d8b9c", "2026-11-21T12:00:00Z")
        }];
        metrics.observe_release("shop", "checkout", None, &status);
        metrics.sweep_delivery_series(Instant::now() + 2 * DELIVERY_SERIES_KEPT);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(&format!(
                r#"waymark_releases_finished_total{{{DELIVERY},outcome="promoted"}} 0"#
            )),
            "the running item's zero stays: {text}"
        );
        assert!(
            !text.contains("PAY-139"),
            "the item finished before it goes: {text}"
        );
    }

    /// Every series of a Release holds the same namespace, name and roadmap item strings, and
    /// a later status of the same item reuses them: the series cost pointers, not copies.
    #[test]
    fn a_releases_series_share_one_copy_of_its_names() {
        let metrics = Metrics::default();
        let canary = analysed_canary(0, vec![]);
        metrics.observe_release("shop", "checkout", None, &canary);
        let first = metrics.current.lock().unwrap()[&release_key("shop", "checkout")].clone();
        let promoted = ReleaseStatus {
            phase: Some(Phase::Healthy),
            roadmap_item: Some("PAY-142".into()),
            history: vec![HistoryEntry {
                started_at: Some(Time("2026-11-21T12:00:00Z".parse().unwrap())),
                ..finished("6f9c7d", "2026-11-21T12:10:00Z")
            }],
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", Some(&canary), &promoted);
        let (key, labels) = {
            let current = metrics.current.lock().unwrap();
            let (key, labels) = current
                .get_key_value(&release_key("shop", "checkout"))
                .unwrap();
            (key.clone(), labels.clone())
        };
        assert!(Arc::ptr_eq(&first.roadmap_item, &labels.roadmap_item));
        assert!(Arc::ptr_eq(&key.0, &labels.namespace) && Arc::ptr_eq(&key.1, &labels.release));
        let finished = metrics.finished.lock().unwrap();
        let items = &finished[&key].items;
        assert_eq!(items.len(), 1, "one item: {items:?}");
        let shared = |namespace: &Arc<str>, release: &Arc<str>, item: &Arc<str>| {
            Arc::ptr_eq(namespace, &labels.namespace)
                && Arc::ptr_eq(release, &labels.release)
                && Arc::ptr_eq(item, &labels.roadmap_item)
        };
        // The promoted outcome: the zeros of the others went with the promotion.
        assert_eq!(items[0].outcomes.len(), 1);
        for outcome in &items[0].outcomes {
            assert!(
                shared(&outcome.namespace, &outcome.release, &outcome.roadmap_item),
                "{outcome:?}"
            );
        }
        assert!(!items[0].histograms.is_empty());
        for item in &items[0].histograms {
            assert!(
                shared(&item.namespace, &item.release, &item.roadmap_item),
                "{item:?}"
            );
        }
        drop(finished);
        // The promotion was counted under the shared labels, once.
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(r#"waymark_releases_finished_total{namespace="shop",release="checkout",roadmap_item="PAY-142",horizon="",kind="",outcome="promoted"} 1"#),
            "{text}"
        );
    }

    /// Once an item's revision finished, only the series its outcome moved stay for the
    /// scrape: the zeros created at its canary's start go, unless a canary of the same item
    /// runs again (then they stay, for `increase()` to see its outcome).
    #[test]
    fn a_finished_item_keeps_only_the_series_its_outcome_moved() {
        let metrics = Metrics::default();
        let canary = analysed_canary(0, vec![]);
        metrics.observe_release("shop", "checkout", None, &canary);
        let text = metrics.encode().unwrap();
        for zero in [
            format!(r#"waymark_releases_finished_total{{{DELIVERY},outcome="rolled_back"}} 0"#),
            format!(r#"waymark_time_to_restore_seconds_count{{{DELIVERY}}} 0"#),
            format!(r#"waymark_release_duration_seconds_count{{{DELIVERY}}} 0"#),
            format!(r#"waymark_releases_rework_total{{{DELIVERY}}} 0"#),
        ] {
            assert!(
                text.contains(&zero),
                "at zero while the canary runs: {zero} in {text}"
            );
        }

        let rolled_back = ReleaseStatus {
            phase: Some(Phase::RolledBack),
            roadmap_item: Some("PAY-142".into()),
            history: vec![HistoryEntry {
                outcome: Outcome::RolledBack,
                failure_detected_at: Some(Time("2026-11-21T12:09:00Z".parse().unwrap())),
                ..finished("6f9c7d", "2026-11-21T12:10:00Z")
            }],
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", Some(&canary), &rolled_back);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(&format!(
                r#"waymark_releases_finished_total{{{DELIVERY},outcome="rolled_back"}} 1"#
            )),
            "{text}"
        );
        assert!(
            text.contains(&format!(
                r#"waymark_time_to_restore_seconds_count{{{DELIVERY}}} 1"#
            )),
            "{text}"
        );
        for gone in [
            r#"outcome="promoted""#,
            r#"outcome="aborted""#,
            r#"outcome="superseded""#,
            "waymark_release_duration_seconds_count{",
            "waymark_releases_rework_total{",
        ] {
            assert!(
                !text.contains(gone),
                "a zero that can no longer move: {gone} in {text}"
            );
        }

        // A new canary of the same item: its zeros are back and stay when a superseded
        // revision of the item is counted while it runs.
        let mut again = analysed_canary(0, vec![]);
        again.canary_revision = Some("7a0d8e".into());
        again.history = vec![
            HistoryEntry {
                outcome: Outcome::Superseded,
                ..finished("6f9c7e", "2026-11-21T12:20:00Z")
            },
            rolled_back.history[0].clone(),
        ];
        metrics.observe_release("shop", "checkout", Some(&rolled_back), &again);
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(&format!(
                r#"waymark_releases_finished_total{{{DELIVERY},outcome="promoted"}} 0"#
            )),
            "the running canary's zero: {text}"
        );
        assert!(
            text.contains(&format!(
                r#"waymark_release_duration_seconds_count{{{DELIVERY}}} 0"#
            )),
            "{text}"
        );
    }

    #[test]
    fn a_deleted_releases_series_disappear() {
        let metrics = Metrics::default();
        let status = ReleaseStatus {
            roadmap_item: Some("PAY-142".into()),
            phase: Some(Phase::Healthy),
            history: vec![finished("6f9c7d", "2026-11-21T12:10:00Z")],
            ..ReleaseStatus::default()
        };
        metrics.observe_release("shop", "checkout", None, &status);
        metrics.observe_release("shop", "payments", None, &status);
        metrics.forget_release("shop", "checkout");
        let text = metrics.encode().unwrap();
        assert!(!text.contains(r#"release="checkout""#), "{text}");
        assert!(text.contains(r#"release="payments""#), "{text}");
    }
}
