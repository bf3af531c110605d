//! Notifications: the transitions the rollout core tells (a canary started, paused for
//! promote, failing, rolled back, promoted, an outcome measured), sent to the targets of a
//! cluster-wide configuration (a ConfigMap named by `--notifications-config`, watched, so an
//! edit applies without a restart) and to the targets a Release names in
//! `spec.roadmap.notify`.
//!
//! The parts that decide are pure: [`config`] (parsing and checking the ConfigMap), [`select`]
//! (which notes are transitions, which targets hear them), [`message`] (what is said, and the
//! webhook, Slack and CloudEvents payloads) and [`condition`] (the Release's
//! `NotificationsDelivered`). [`sender`] delivers, apart from the reconciles: a reconcile only
//! queues ([`Notifier::tell`], never waiting), and a full queue drops and counts.

pub mod condition;
pub mod config;
pub mod message;
pub mod select;
pub mod sender;
pub mod transition;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, ResourceExt};
use tokio::sync::{Notify, Semaphore, mpsc};

use crate::api::{Release, ReleaseStatus};
use crate::rollout::Decision;

use self::condition::Delivery;
use self::config::{NotificationConfig, Target};
use self::message::Message;
use self::sender::{Attempt, Dedup, Poster};
#[cfg(test)]
use self::transition::Transition;
use super::Metrics;

/// How long a failed watch of the configuration waits before it is tried again.
pub const CONFIG_WATCH_RETRY: Duration = Duration::from_secs(2);

/// Where the configuration is: `--notifications-config NAMESPACE/NAME`, or `NAME` in the
/// controller's own namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigLocation {
    /// The ConfigMap's namespace, where the URL Secrets are read too.
    pub namespace: String,
    /// The ConfigMap's name.
    pub name: String,
}

impl ConfigLocation {
    /// Read the flag's value; a bare name is in `own_namespace`.
    pub fn parse(value: &str, own_namespace: &str) -> Result<ConfigLocation, String> {
        let (namespace, name) = match value.split_once('/') {
            Some((namespace, name)) => (namespace, name),
            None => (own_namespace, value),
        };
        if namespace.is_empty() || name.is_empty() || name.contains('/') {
            return Err(format!(
                "--notifications-config {value:?}: write NAMESPACE/NAME or NAME (a ConfigMap in \
                 the controller's namespace)"
            ));
        }
        Ok(ConfigLocation {
            namespace: namespace.into(),
            name: name.into(),
        })
    }

    /// `namespace/name`.
    pub fn shown(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// The configuration as last read.
#[derive(Clone, Debug)]
enum ConfigState {
    /// Not read yet: nothing is judged or sent.
    Waiting,
    /// The ConfigMap is missing, or never parsed: no targets.
    Unusable,
    /// The configuration in force (the last one that parsed).
    Ready(Arc<NotificationConfig>),
}

/// A message queued for its targets.
struct Job {
    release: ObjectRef<Release>,
    message: Message,
    recipients: Vec<(Target, bool)>,
}

/// The process's notifier: the configuration in force, the queue, what was sent and how the
/// named targets' last deliveries ended.
pub struct Notifier {
    location: ConfigLocation,
    config: RwLock<ConfigState>,
    queue: mpsc::Sender<Job>,
    dedup: Mutex<Dedup>,
    /// Per Release naming targets, how the last delivery to each of them ended.
    deliveries: Mutex<HashMap<ObjectRef<Release>, BTreeMap<String, Delivery>>>,
    /// Asks the running controller to reconcile a Release (its condition changed).
    wake: Mutex<Option<mpsc::Sender<ObjectRef<Release>>>>,
    /// Tells the running controller that the configuration changed.
    config_changed: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Notifier {
    /// Start watching the configuration and delivering, until `stop` turns true.
    pub fn start(
        client: Client,
        location: ConfigLocation,
        metrics: Arc<Metrics>,
        stop: tokio::sync::watch::Receiver<bool>,
    ) -> Result<Arc<Notifier>, String> {
        let poster = Poster::new(client.clone(), location.namespace.clone())
            .map_err(|error| format!("cannot build the notification HTTP client: {error}"))?;
        let (queue, jobs) = mpsc::channel(sender::QUEUE_CAPACITY);
        let notifier = Arc::new(Notifier {
            location: location.clone(),
            config: RwLock::new(ConfigState::Waiting),
            queue,
            dedup: Mutex::new(Dedup::new(sender::DEDUP_CAPACITY)),
            deliveries: Mutex::default(),
            wake: Mutex::default(),
            config_changed: Arc::new(Notify::new()),
            metrics,
        });
        let configmaps: Api<ConfigMap> = Api::namespaced(client, &location.namespace);
        let watching = notifier.clone();
        let mut stopped = stop.clone();
        tokio::spawn(async move {
            tokio::select! {
                () = watching.watch_config(configmaps) => {}
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
        let delivering = Arc::downgrade(&notifier);
        let mut stopped = stop;
        tokio::spawn(async move {
            tokio::select! {
                () = deliver_jobs(jobs, poster, delivering) => {}
                _ = stopped.wait_for(|stop| *stop) => {}
            }
        });
        Ok(notifier)
    }

    /// Keep the configuration in step with the ConfigMap.
    async fn watch_config(&self, configmaps: Api<ConfigMap>) {
        let config =
            watcher::Config::default().fields(&format!("metadata.name={}", self.location.name));
        let mut events = watcher(configmaps, config).boxed();
        let mut found = false;
        let mut failing = false;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => found = false,
                Ok(watcher::Event::InitApply(configmap) | watcher::Event::Apply(configmap)) => {
                    found = true;
                    failing = false;
                    self.load(&configmap);
                }
                Ok(watcher::Event::InitDone) => {
                    failing = false;
                    if !found {
                        self.missing();
                    }
                }
                Ok(watcher::Event::Delete(_)) => self.missing(),
                Err(error) => {
                    if !failing {
                        tracing::warn!(
                            configmap = %self.location.shown(),
                            %error,
                            "cannot watch the notification configuration; retrying every {CONFIG_WATCH_RETRY:?}"
                        );
                    }
                    failing = true;
                    tokio::time::sleep(CONFIG_WATCH_RETRY).await;
                }
            }
        }
    }

    fn load(&self, configmap: &ConfigMap) {
        let source = self.location.shown();
        match config::parse(&source, configmap.data.as_ref()) {
            Ok(parsed) => {
                tracing::info!(
                    configmap = %source,
                    targets = %parsed.targets.iter().map(|t| t.name.as_str()).collect::<Vec<_>>().join(","),
                    "notification configuration loaded"
                );
                self.metrics
                    .zero_notification_failures(parsed.targets.iter().map(|t| t.name.as_str()));
                self.set(ConfigState::Ready(Arc::new(parsed)));
            }
            Err(error) => {
                // The last configuration that parsed stays in force: a typo must not silence
                // every channel.
                tracing::warn!(configmap = %source, "{error}; the previous configuration stays in force");
                if !matches!(self.state(), ConfigState::Ready(_)) {
                    self.set(ConfigState::Unusable);
                }
            }
        }
    }

    fn missing(&self) {
        tracing::warn!(
            configmap = %self.location.shown(),
            "the notification configuration ConfigMap is not found: nothing is sent until it is created"
        );
        self.set(ConfigState::Unusable);
    }

    fn set(&self, state: ConfigState) {
        if let Ok(mut config) = self.config.write() {
            *config = state;
        }
        self.config_changed.notify_one();
    }

    #[cfg(test)]
    fn state_config(&self) -> Arc<NotificationConfig> {
        match self.state() {
            ConfigState::Ready(config) => config,
            _ => Arc::default(),
        }
    }

    fn state(&self) -> ConfigState {
        self.config
            .read()
            .map(|state| state.clone())
            .unwrap_or(ConfigState::Waiting)
    }

    /// Reconcile requests for the running controller: a Release whose named targets' delivery
    /// changed. A new call replaces the previous stream (a new term as leader).
    pub fn wake_requests(&self) -> impl Stream<Item = ObjectRef<Release>> + Send + use<> {
        let (sender, receiver) = mpsc::channel(64);
        if let Ok(mut wake) = self.wake.lock() {
            *wake = Some(sender);
        }
        futures::stream::unfold(receiver, |mut receiver| async move {
            receiver.recv().await.map(|release| (release, receiver))
        })
    }

    /// One `()` each time the configuration changes: every Release's condition is judged again.
    pub fn config_changes(&self) -> impl Stream<Item = ()> + Send + use<> {
        futures::stream::unfold(self.config_changed.clone(), |changed| async move {
            changed.notified().await;
            Some(((), changed))
        })
    }

    /// Queue the transitions `decision` tells about `release` (as the reconcile read it) for
    /// their targets; never waits. Called once the decision's status is written.
    pub fn tell(&self, release: &Release, decision: &Decision, now: Timestamp) {
        let told = select::transitions(decision);
        if told.is_empty() {
            return;
        }
        let ConfigState::Ready(config) = self.state() else {
            return;
        };
        for (transition, note) in told {
            let recipients: Vec<(Target, bool)> = select::recipients(&config, release, transition)
                .into_iter()
                .map(|recipient| (recipient.target.clone(), recipient.named))
                .collect();
            if recipients.is_empty() {
                continue;
            }
            let message = message::build(release, &decision.status, transition, note, now);
            let first = self
                .dedup
                .lock()
                .map(|mut dedup| dedup.first_time(&message.id))
                .unwrap_or(true);
            if !first {
                continue;
            }
            let id = message.id.clone();
            let job = Job {
                release: ObjectRef::from_obj(release),
                message,
                recipients,
            };
            if self.queue.try_send(job).is_err() {
                self.metrics.count_notification_dropped();
                if let Ok(mut dedup) = self.dedup.lock() {
                    dedup.forget(&id);
                }
                tracing::warn!(
                    namespace = release.namespace().unwrap_or_default(),
                    release = release.name_any(),
                    %id,
                    "notification dropped: the sender's queue is full"
                );
            }
        }
    }

    /// Set `NotificationsDelivered` in `status` for `release`, from the configuration in force
    /// and the last deliveries to its named targets.
    pub fn set_condition(&self, release: &Release, status: &mut ReleaseStatus, now: Timestamp) {
        let named = &release.spec.roadmap.notify;
        let verdict = match self.state() {
            // Not read yet: judging now would name every target unknown for a moment.
            ConfigState::Waiting => None,
            state => {
                let config = match &state {
                    ConfigState::Ready(config) => Some(config.as_ref()),
                    _ => None,
                };
                let empty = NotificationConfig {
                    source: self.location.shown(),
                    targets: vec![],
                };
                let unknown = select::unknown_targets(Some(config.unwrap_or(&empty)), release);
                let last = self
                    .deliveries
                    .lock()
                    .ok()
                    .and_then(|deliveries| deliveries.get(&ObjectRef::from_obj(release)).cloned())
                    .unwrap_or_default();
                condition::verdict(named, &unknown, Some(&self.location.shown()), &last)
            }
        };
        condition::apply(status, named, verdict, release.metadata.generation, now);
    }

    /// Record how a delivery ended: metrics, a log line, and for a named target its Release's
    /// condition (reconciled again when it changes).
    fn finished(&self, job: &JobRef, target: &Target, named: bool, delivered: &sender::Delivered) {
        let message = &job.message;
        let outcome = match &delivered.last {
            Attempt::Accepted => {
                self.metrics
                    .count_notification_sent(&target.name, &message.transition);
                tracing::info!(
                    namespace = %message.namespace,
                    release = %message.release,
                    revision = %message.revision,
                    roadmap_item = %message.roadmap.item,
                    target_name = %target.name,
                    transition = %message.transition,
                    attempts = delivered.attempts,
                    "notification delivered"
                );
                Delivery::Delivered
            }
            failed => {
                self.metrics.count_notification_failure(&target.name);
                let why = format!(
                    "{} after {} attempt{}",
                    failed.describe(),
                    delivered.attempts,
                    if delivered.attempts == 1 { "" } else { "s" }
                );
                tracing::warn!(
                    namespace = %message.namespace,
                    release = %message.release,
                    revision = %message.revision,
                    roadmap_item = %message.roadmap.item,
                    target_name = %target.name,
                    transition = %message.transition,
                    "notification not delivered: {why}"
                );
                Delivery::Failed(why)
            }
        };
        if !named {
            return;
        }
        let changed = self.deliveries.lock().is_ok_and(|mut deliveries| {
            let last = deliveries.entry(job.release.clone()).or_default();
            last.insert(target.name.clone(), outcome.clone()) != Some(outcome)
        });
        if changed
            && let Ok(wake) = self.wake.lock()
            && let Some(wake) = wake.as_ref()
        {
            // Full: the controller is busy, and the next reconcile of the Release sees it.
            let _ = wake.try_send(job.release.clone());
        }
    }
}

/// A job shared by the deliveries to its targets.
type JobRef = Arc<JobShared>;

/// What the deliveries of one job share.
struct JobShared {
    release: ObjectRef<Release>,
    message: Message,
}

/// Take jobs off the queue and deliver each to its targets, at most
/// [`sender::CONCURRENT_DELIVERIES`] at once. Holds the notifier weakly: the jobs end with it.
async fn deliver_jobs(
    mut jobs: mpsc::Receiver<Job>,
    poster: Poster,
    notifier: std::sync::Weak<Notifier>,
) {
    let slots = Arc::new(Semaphore::new(sender::CONCURRENT_DELIVERIES));
    let poster = Arc::new(poster);
    while let Some(job) = jobs.recv().await {
        let shared = Arc::new(JobShared {
            release: job.release,
            message: job.message,
        });
        for (target, named) in job.recipients {
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let (poster, shared, notifier) = (poster.clone(), shared.clone(), notifier.clone());
            tokio::spawn(async move {
                let delivered = poster.deliver(&target, &shared.message).await;
                if let Some(notifier) = notifier.upgrade() {
                    notifier.finished(&shared, &target, named, &delivered);
                }
                drop(slot);
            });
        }
    }
}

/// `NotificationsDelivered` without a notifier (no `--notifications-config`): every name a
/// Release gives in `spec.roadmap.notify` is unknown.
pub fn set_condition_unconfigured(release: &Release, status: &mut ReleaseStatus, now: Timestamp) {
    let named = &release.spec.roadmap.notify;
    let unknown = select::unknown_targets(None, release);
    let verdict = condition::verdict(named, &unknown, None, &BTreeMap::new());
    condition::apply(status, named, verdict, release.metadata.generation, now);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::ReleaseBuilder;
    use crate::rollout::{Action, Audience, EventNote, NoteKind, Severity};

    /// A notifier with `config` in force whose queue holds `capacity` jobs, and that queue.
    fn notifier(config: &str, capacity: usize) -> (Notifier, mpsc::Receiver<Job>) {
        let (queue, jobs) = mpsc::channel(capacity);
        let location = ConfigLocation {
            namespace: "waymark-system".into(),
            name: "notifications".into(),
        };
        let parsed = config::parse_text(&location.shown(), config).unwrap();
        let notifier = Notifier {
            location,
            config: RwLock::new(ConfigState::Ready(Arc::new(parsed))),
            queue,
            dedup: Mutex::new(Dedup::new(16)),
            deliveries: Mutex::default(),
            wake: Mutex::default(),
            config_changed: Arc::new(Notify::new()),
            metrics: Arc::new(Metrics::default()),
        };
        (notifier, jobs)
    }

    const CONFIG: &str = "targets:
- name: everything
  type: webhook
  urlFrom: {secretKeyRef: {name: hooks, key: a}}
- name: team
  type: slack
  default: false
  urlFrom: {secretKeyRef: {name: hooks, key: b}}
";

    fn promoted() -> Decision {
        Decision {
            actions: vec![Action::Event(EventNote {
                severity: Severity::Normal,
                reason: "CanaryPromoted".into(),
                note: "PAY-142: canary 6f9c7d promoted".into(),
                audience: Audience::EventAndLog,
                kind: NoteKind::StateChange,
            })],
            status: ReleaseStatus::default(),
            requeue_after: None,
        }
    }

    fn now() -> Timestamp {
        "2026-12-06T14:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_transition_told_twice_is_queued_once_for_its_targets() {
        let (notifier, mut jobs) = notifier(CONFIG, 8);
        let mut release = ReleaseBuilder::gateway().build();
        release.metadata.uid = Some("u-1".into());
        release.spec.roadmap.notify = vec!["team".into()];
        notifier.tell(&release, &promoted(), now());
        notifier.tell(&release, &promoted(), now());
        let job = jobs.try_recv().expect("one job");
        assert_eq!(job.message.transition, "promoted");
        let targets: Vec<(&str, bool)> = job
            .recipients
            .iter()
            .map(|(target, named)| (target.name.as_str(), *named))
            .collect();
        assert_eq!(targets, [("everything", false), ("team", true)]);
        assert!(jobs.try_recv().is_err(), "the repeat is not queued");
    }

    #[test]
    fn a_full_queue_drops_counts_and_does_not_wait() {
        let (notifier, mut jobs) = notifier(CONFIG, 1);
        let mut first = ReleaseBuilder::gateway().build();
        first.metadata.uid = Some("u-1".into());
        let mut second = first.clone();
        second.metadata.uid = Some("u-2".into());
        notifier.tell(&first, &promoted(), now());
        // The queue is full: this returns at once, dropping and counting the message.
        notifier.tell(&second, &promoted(), now());
        let text = notifier.metrics.encode().unwrap();
        assert!(
            text.contains("\nwaymark_notifications_dropped_total 1\n"),
            "{text}"
        );
        assert_eq!(
            jobs.try_recv().unwrap().message.id,
            format!("u-1/{}/promoted", revision_of(&first))
        );
        // Dropped, not remembered: told again once there is room, it is queued.
        notifier.tell(&second, &promoted(), now());
        assert!(jobs.try_recv().is_ok());
    }

    fn revision_of(release: &Release) -> String {
        crate::api::template_revision(&release.spec.template)
    }

    #[test]
    fn a_named_targets_failure_and_recovery_show_in_the_condition_and_wake_the_release() {
        let (notifier, _jobs) = notifier(CONFIG, 8);
        let mut release = ReleaseBuilder::gateway().build();
        release.spec.roadmap.notify = vec!["team".into(), "gone".into()];
        let mut status = ReleaseStatus::default();
        notifier.set_condition(&release, &mut status, now());
        let condition = &status.conditions[0];
        assert_eq!(
            (
                condition.type_.as_str(),
                condition.status.as_str(),
                condition.reason.as_str()
            ),
            (
                "NotificationsDelivered",
                "False",
                "NotificationTargetUnknown"
            )
        );
        assert!(
            condition.message.contains("names gone"),
            "{}",
            condition.message
        );

        release.spec.roadmap.notify = vec!["team".into()];
        let mut wake = Box::pin(notifier.wake_requests());
        let job = Arc::new(JobShared {
            release: ObjectRef::from_obj(&release),
            message: message::build(
                &release,
                &ReleaseStatus::default(),
                Transition::Promoted,
                match &promoted().actions[0] {
                    Action::Event(note) => note,
                    _ => unreachable!(),
                },
                now(),
            ),
        });
        let team = notifier.state_config().target("team").unwrap().clone();
        let failed = sender::Delivered {
            last: Attempt::Status(500),
            attempts: 5,
        };
        notifier.finished(&job, &team, true, &failed);
        let woken = futures::executor::block_on(wake.next());
        assert_eq!(woken, Some(ObjectRef::from_obj(&release)));
        notifier.set_condition(&release, &mut status, now());
        let condition = &status.conditions[0];
        assert_eq!(condition.reason, "NotificationFailed");
        assert!(
            condition
                .message
                .contains("team: HTTP 500 after 5 attempts"),
            "{}",
            condition.message
        );
        let text = notifier.metrics.encode().unwrap();
        assert!(
            text.contains("waymark_notification_failures_total{target=\"team\"} 1"),
            "{text}"
        );

        notifier.finished(
            &job,
            &team,
            true,
            &sender::Delivered {
                last: Attempt::Accepted,
                attempts: 1,
            },
        );
        notifier.set_condition(&release, &mut status, now());
        assert_eq!(status.conditions[0].status, "True");
        assert_eq!(
            status.conditions[0].message,
            "the last notification was delivered to team"
        );
    }

    #[test]
    fn the_flag_takes_a_namespace_or_the_controllers_own() {
        assert_eq!(
            ConfigLocation::parse("ops/hooks", "waymark-system"),
            Ok(ConfigLocation {
                namespace: "ops".into(),
                name: "hooks".into()
            })
        );
        assert_eq!(
            ConfigLocation::parse("hooks", "waymark-system").map(|l| l.shown()),
            Ok("waymark-system/hooks".into())
        );
        for bad in ["", "/hooks", "ops/", "a/b/c"] {
            let error = ConfigLocation::parse(bad, "waymark-system").unwrap_err();
            assert!(error.contains("NAMESPACE/NAME"), "{bad}: {error}");
        }
    }
}
