//! Publishing Kubernetes Events (`events.k8s.io/v1`) on Releases, with a small memory of what
//! was published so a repeat becomes a series on the first Event instead of a new Event.
//!
//! kube's own `Recorder` does the same, but it keeps every Event object it published (about
//! 940 bytes each) for six minutes in a map that never gives memory back: after a canary wave
//! over 1,000 Releases that was 17 MiB, a third of the controller's heap. This one remembers
//! per published Event only what a repeat needs (its key's hash, its name, its count, when it
//! was last seen: under 100 bytes), forgets it after the same six minutes, and shrinks its map
//! when it empties out. What goes to the API server is the same: a create, and for a repeat a
//! merge patch of `series`.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Reporter};
use kube::{Api, Client};

/// How long a published Event is remembered: a repeat within it is counted on that Event.
/// The same span as kube's `Recorder`, so `kubectl describe` reads as it always did.
const REMEMBER_FOR: Duration = Duration::from_secs(6 * 60);

/// How often the memory is swept of Events older than [`REMEMBER_FOR`]: sweeping on every
/// publish would walk the whole map for each Event of a wave.
const SWEEP_EVERY: Duration = Duration::from_secs(30);

/// What a repeat of a published Event needs.
#[derive(Clone, Debug)]
struct Published {
    /// The Event object's name (its namespace is the object's), to patch its series.
    name: Box<str>,
    /// How many times it was said (1 until the first repeat).
    count: i32,
    /// When it was last said, by the process's monotonic clock.
    last_seen: Instant,
}

#[derive(Debug, Default)]
struct Memory {
    published: HashMap<u64, Published>,
    swept_at: Option<Instant>,
}

impl Memory {
    /// Forget what is older than [`REMEMBER_FOR`], at most once per [`SWEEP_EVERY`], and give
    /// the map's memory back once most of it is empty.
    fn sweep(&mut self, now: Instant) {
        if self
            .swept_at
            .is_some_and(|at| now.duration_since(at) < SWEEP_EVERY)
        {
            return;
        }
        self.swept_at = Some(now);
        self.published
            .retain(|_, published| now.duration_since(published.last_seen) < REMEMBER_FOR);
        if self.published.capacity() > 64 && self.published.capacity() > 4 * self.published.len() {
            self.published.shrink_to(2 * self.published.len());
        }
    }
}

/// The process's Event publisher: clone it freely, the clones share one memory.
#[derive(Clone)]
pub struct EventRecorder {
    client: Client,
    controller: String,
    instance: String,
    memory: std::sync::Arc<Mutex<Memory>>,
}

impl EventRecorder {
    /// A publisher reporting as `reporter` (`reportingController`, `reportingInstance`).
    pub fn new(client: Client, reporter: Reporter) -> Self {
        let instance = reporter
            .instance
            .clone()
            .unwrap_or_else(|| reporter.controller.clone());
        Self {
            client,
            controller: reporter.controller,
            instance,
            memory: Default::default(),
        }
    }

    /// Publish `event` about `regarding`: a new Event, or, when the same type, reason and
    /// action were said about the same object within [`REMEMBER_FOR`], the next count of that
    /// Event's series.
    ///
    /// # Errors
    /// The API server's refusal of the create or the patch.
    pub async fn publish(&self, event: &Event, regarding: &ObjectReference) -> kube::Result<()> {
        let key = key(event, regarding);
        let now = Instant::now();
        let repeat = {
            let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
            memory.sweep(now);
            memory
                .published
                .get(&key)
                .filter(|published| now.duration_since(published.last_seen) < REMEMBER_FOR)
                .cloned()
        };
        let namespace = regarding.namespace.as_deref().unwrap_or("default");
        let events: Api<K8sEvent> = Api::namespaced(self.client.clone(), namespace);
        let published = match repeat {
            Some(published) => {
                let count = published.count + 1;
                let series = serde_json::json!({
                    "series": EventSeries {
                        count,
                        last_observed_time: MicroTime(Timestamp::now()),
                    }
                });
                match events
                    .patch(
                        &published.name,
                        &PatchParams::default(),
                        &Patch::Merge(&series),
                    )
                    .await
                {
                    Ok(_) => Published {
                        count,
                        last_seen: now,
                        ..published
                    },
                    // The API server let the Event expire (its TTL, an hour by default):
                    // say it anew.
                    Err(kube::Error::Api(status)) if status.code == 404 => {
                        self.create(&events, event, regarding, now).await?
                    }
                    Err(error) => return Err(error),
                }
            }
            None => self.create(&events, event, regarding, now).await?,
        };
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .published
            .insert(key, published);
        Ok(())
    }

    async fn create(
        &self,
        events: &Api<K8sEvent>,
        event: &Event,
        regarding: &ObjectReference,
        now: Instant,
    ) -> kube::Result<Published> {
        let body = self.event_object(event, regarding, Timestamp::now());
        let created = events.create(&PostParams::default(), &body).await?;
        Ok(Published {
            name: created
                .metadata
                .name
                .or(body.metadata.name)
                .unwrap_or_default()
                .into(),
            count: 1,
            last_seen: now,
        })
    }

    /// The Event object for a first telling, named like kubectl's and kube's
    /// (`<object>.<nanoseconds in hex>`).
    fn event_object(&self, event: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let object = regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            metadata: ObjectMeta {
                namespace: regarding.namespace.clone(),
                name: Some(format!("{object}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            action: Some(event.action.clone()),
            reason: Some(event.reason.clone()),
            note: event.note.clone(),
            type_: Some(
                match event.type_ {
                    EventType::Normal => "Normal",
                    EventType::Warning => "Warning",
                }
                .into(),
            ),
            event_time: Some(MicroTime(now)),
            regarding: Some(regarding.clone()),
            related: event.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            ..K8sEvent::default()
        }
    }

    /// How many published Events are remembered (for tests and the heap's accounting).
    pub fn remembered(&self) -> usize {
        self.memory
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .published
            .len()
    }
}

/// What makes two tellings the same Event: the object (by uid, and by kind, namespace and name
/// for an object without one), the type, the reason and the action. The note is not in it:
/// the action carries a hash of the note where the words matter (see `apply::publish`).
fn key(event: &Event, regarding: &ObjectReference) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    regarding.uid.hash(&mut hasher);
    regarding.api_version.hash(&mut hasher);
    regarding.kind.hash(&mut hasher);
    regarding.namespace.hash(&mut hasher);
    regarding.name.hash(&mut hasher);
    matches!(event.type_, EventType::Warning).hash(&mut hasher);
    event.reason.hash(&mut hasher);
    event.action.hash(&mut hasher);
    event
        .secondary
        .as_ref()
        .map(|related| (&related.uid, &related.kind, &related.name))
        .hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reference(name: &str, uid: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("waymark.dev/v1alpha1".into()),
            kind: Some("Release".into()),
            namespace: Some("shop".into()),
            name: Some(name.into()),
            uid: Some(uid.into()),
            ..ObjectReference::default()
        }
    }

    fn said(reason: &str, action: &str) -> Event {
        Event {
            type_: EventType::Normal,
            reason: reason.into(),
            action: action.into(),
            note: Some(format!("{reason} said")),
            secondary: None,
        }
    }

    #[test]
    fn the_same_words_about_the_same_object_are_one_event() {
        let checkout = reference("checkout", "u-1");
        assert_eq!(
            key(&said("StepCompleted", "a"), &checkout),
            key(&said("StepCompleted", "a"), &checkout)
        );
        assert_ne!(
            key(&said("StepCompleted", "a"), &checkout),
            key(&said("StepCompleted", "b"), &checkout),
            "another action"
        );
        assert_ne!(
            key(&said("StepCompleted", "a"), &checkout),
            key(&said("CanaryStarted", "a"), &checkout),
            "another reason"
        );
        assert_ne!(
            key(&said("StepCompleted", "a"), &checkout),
            key(&said("StepCompleted", "a"), &reference("checkout", "u-2")),
            "a Release of the same name made anew"
        );
        let mut warning = said("StepCompleted", "a");
        warning.type_ = EventType::Warning;
        assert_ne!(
            key(&said("StepCompleted", "a"), &checkout),
            key(&warning, &checkout),
            "another type"
        );
    }

    fn published(age: Duration, now: Instant) -> Published {
        Published {
            name: "checkout.1".into(),
            count: 1,
            last_seen: now - age,
        }
    }

    #[test]
    fn a_sweep_forgets_what_is_older_than_six_minutes_and_gives_memory_back() {
        let now = Instant::now() + Duration::from_secs(3600);
        let mut memory = Memory::default();
        for key in 0..10_000 {
            memory
                .published
                .insert(key, published(Duration::from_secs(400), now));
        }
        memory
            .published
            .insert(10_000, published(Duration::from_secs(10), now));
        let capacity = memory.published.capacity();
        memory.sweep(now);
        assert_eq!(memory.published.len(), 1, "only the recent one is kept");
        assert!(
            memory.published.capacity() < capacity / 100,
            "capacity {} after, {capacity} before",
            memory.published.capacity()
        );
    }

    #[test]
    fn sweeps_are_at_most_every_thirty_seconds() {
        let now = Instant::now() + Duration::from_secs(3600);
        let mut memory = Memory::default();
        memory.sweep(now);
        memory
            .published
            .insert(1, published(Duration::from_secs(400), now));
        memory.sweep(now + Duration::from_secs(10));
        assert_eq!(memory.published.len(), 1, "too soon for another sweep");
        memory.sweep(now + SWEEP_EVERY);
        assert!(memory.published.is_empty());
    }

    type Handle = tower_test::mock::Handle<
        http::Request<kube::client::Body>,
        http::Response<kube::client::Body>,
    >;

    fn recorder() -> (EventRecorder, Handle) {
        let (service, handle) = tower_test::mock::pair();
        let recorder = EventRecorder::new(
            Client::new(service, "default"),
            Reporter {
                controller: "waymark".into(),
                instance: None,
            },
        );
        (recorder, handle)
    }

    /// Answers the next request with `status` and `body`; returns its method, path and body.
    async fn answer(
        handle: &mut Handle,
        status: u16,
        body: serde_json::Value,
    ) -> (String, String, serde_json::Value) {
        let (request, send) = handle.next_request().await.expect("a request");
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let bytes = request
            .into_body()
            .collect_bytes()
            .await
            .expect("the request's body");
        let sent: serde_json::Value = serde_json::from_slice(&bytes).expect("JSON");
        let body = if body.is_null() { sent.clone() } else { body };
        send.send_response(
            http::Response::builder()
                .status(status)
                .body(kube::client::Body::from(
                    serde_json::to_vec(&body).expect("JSON"),
                ))
                .expect("a response"),
        );
        (method, path, sent)
    }

    /// Publish on a task of its own, so the test can answer its requests meanwhile.
    fn in_background(
        recorder: &EventRecorder,
        event: Event,
        regarding: &ObjectReference,
    ) -> tokio::task::JoinHandle<kube::Result<()>> {
        let (recorder, regarding) = (recorder.clone(), regarding.clone());
        tokio::spawn(async move { recorder.publish(&event, &regarding).await })
    }

    fn not_found() -> serde_json::Value {
        serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "reason": "NotFound", "code": 404, "message": "not found"})
    }

    #[tokio::test]
    async fn a_repeat_is_a_series_patch_and_an_expired_event_is_created_anew() {
        let (recorder, mut handle) = recorder();
        let checkout = reference("checkout", "u-1");

        let publish = in_background(
            &recorder,
            said("AnalysisRefused", "AnalysisRefused-1"),
            &checkout,
        );
        let (method, path, created) = answer(&mut handle, 201, serde_json::Value::Null).await;
        assert_eq!(
            (method.as_str(), path.as_str()),
            ("POST", "/apis/events.k8s.io/v1/namespaces/shop/events")
        );
        assert_eq!(created["reason"], "AnalysisRefused");
        assert_eq!(created["reportingController"], "waymark");
        assert_eq!(created["regarding"]["uid"], "u-1");
        publish.await.expect("joined").expect("published");
        let name = created["metadata"]["name"]
            .as_str()
            .expect("a name")
            .to_string();
        assert!(name.starts_with("checkout."), "{name}");
        assert_eq!(recorder.remembered(), 1);

        let publish = in_background(
            &recorder,
            said("AnalysisRefused", "AnalysisRefused-1"),
            &checkout,
        );
        let (method, path, patch) = answer(&mut handle, 200, created.clone()).await;
        assert_eq!(method, "PATCH");
        assert_eq!(
            path,
            format!("/apis/events.k8s.io/v1/namespaces/shop/events/{name}")
        );
        assert_eq!(patch["series"]["count"], 2, "{patch}");
        assert!(patch["series"]["lastObservedTime"].is_string(), "{patch}");
        assert_eq!(
            patch.as_object().map(|o| o.len()),
            Some(1),
            "only the series: {patch}"
        );
        publish.await.expect("joined").expect("published");

        // The API server let it expire: the third telling is a new Event.
        let publish = in_background(
            &recorder,
            said("AnalysisRefused", "AnalysisRefused-1"),
            &checkout,
        );
        let (method, _, patch) = answer(&mut handle, 404, not_found()).await;
        assert_eq!(
            (method.as_str(), patch["series"]["count"].as_i64()),
            ("PATCH", Some(3))
        );
        let (method, _, created_again) = answer(&mut handle, 201, serde_json::Value::Null).await;
        assert_eq!(method, "POST");
        assert_eq!(created_again["series"], serde_json::Value::Null);
        publish.await.expect("joined").expect("published");
        assert_eq!(recorder.remembered(), 1);

        // Other words are another Event.
        let publish = in_background(
            &recorder,
            said("StepCompleted", "StepCompleted-1"),
            &checkout,
        );
        let (method, _, _) = answer(&mut handle, 201, serde_json::Value::Null).await;
        assert_eq!(method, "POST");
        publish.await.expect("joined").expect("published");
        assert_eq!(recorder.remembered(), 2);
    }

    #[tokio::test]
    async fn a_refused_create_is_an_error_and_not_remembered() {
        let (recorder, mut handle) = recorder();
        let publish = in_background(
            &recorder,
            said("CanaryStarted", "x"),
            &reference("checkout", "u-1"),
        );
        answer(&mut handle, 404, not_found()).await;
        assert!(publish.await.expect("joined").is_err());
        assert_eq!(recorder.remembered(), 0);
    }

    #[tokio::test]
    async fn a_first_telling_is_named_after_the_object_and_reports_the_controller() {
        let (recorder, _handle) = recorder();
        let at = Timestamp::from_second(1_800_000_000).expect("a time");
        let object = recorder.event_object(
            &said("CanaryStarted", "CanaryStarted-1"),
            &reference("checkout", "u-1"),
            at,
        );
        assert_eq!(
            object.metadata.name.as_deref(),
            Some(format!("checkout.{:x}", at.as_nanosecond()).as_str())
        );
        assert_eq!(object.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(object.reporting_controller.as_deref(), Some("waymark"));
        assert_eq!(object.reporting_instance.as_deref(), Some("waymark"));
        assert_eq!(object.type_.as_deref(), Some("Normal"));
        assert_eq!(object.series, None);
    }
}
