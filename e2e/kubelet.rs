//! A simulated node for the suite's control plane, which has no scheduler and no kubelet: the
//! real Deployment and ReplicaSet controllers create pods, and this module does what a
//! scheduler and a kubelet would do with the pods of one namespace.
//!
//! It registers a Node (Ready, with capacity), binds each pending pod to it through the
//! `pods/binding` subresource as a scheduler does, and after a short delay (varied per pod)
//! reports it Running with a pod IP of its own and Ready, or Running and not Ready while the
//! walk holds pods unready ([`Controls::set_pods_become_ready`]). A pod being deleted is removed
//! after the same kind of delay, as a kubelet does once its containers have stopped. From the
//! pods the Deployment controller computes each Deployment's status (surge, observedGeneration
//! lag, its Progressing condition) and the EndpointSlice controller fills the Services'
//! EndpointSlices: Waymark reads what a real cluster would show it.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::hash::{Hash, Hasher};
use std::ops::Range;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// How long a pod takes to start (and a deleted one to stop) unless the walk says otherwise:
/// short, so that walks stay fast, and varied per pod, so that pods of one ReplicaSet do not
/// all turn Ready in the same instant.
pub const DEFAULT_START_DELAY: Range<Duration> =
    Duration::from_millis(100)..Duration::from_millis(600);
/// How long a failed write waits before it is tried again (the API server may be restarting).
const RETRY: Duration = Duration::from_millis(500);

/// What the walk can change while its node runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Whether pods that start from now on (and those held unready so far) become Ready.
    pub ready: bool,
    /// The range each pod's start (and stop) delay is taken from.
    pub start_delay: Range<Duration>,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            ready: true,
            start_delay: DEFAULT_START_DELAY,
        }
    }
}

/// The walk's handle on its node.
#[derive(Clone)]
pub struct Controls {
    settings: watch::Sender<Settings>,
}

impl Controls {
    /// Controls with the default settings, and the receiver the node runs on.
    pub fn new() -> (Controls, watch::Receiver<Settings>) {
        let (settings, receiver) = watch::channel(Settings::default());
        (Controls { settings }, receiver)
    }

    /// Whether pods become Ready once started (on by default). Off, new pods start but stay
    /// not Ready (as with a failing readiness probe) and pods already Ready stay so; on again,
    /// the pods held unready become Ready.
    pub fn set_pods_become_ready(&self, ready: bool) {
        self.settings.send_modify(|settings| settings.ready = ready);
    }

    /// The range each pod's start delay is taken from from now on.
    pub fn set_start_delay(&self, delay: Range<Duration>) {
        self.settings
            .send_modify(|settings| settings.start_delay = delay);
    }
}

/// What the node does next for a pod, as a scheduler and a kubelet would.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PodAction {
    /// Bind the pending pod to the node (the scheduler's part).
    Bind,
    /// Start the pod: Running with a pod IP, Ready when `ready`.
    Start { ready: bool },
    /// The pod's readiness probe passes now: make it Ready.
    BecomeReady,
    /// The pod is being deleted and its containers have stopped: remove it.
    Remove,
}

/// What the node on `node` does next for `pod`, or `None` when the pod needs nothing of it
/// (another node's, or already as it should be). `ready`: whether pods become Ready now.
pub fn next_action(pod: &Pod, node: &str, ready: bool) -> Option<PodAction> {
    let bound_to = pod.spec.as_ref().and_then(|spec| spec.node_name.as_deref());
    if pod.metadata.deletion_timestamp.is_some() {
        // An unbound pod is removed by the API server at once; a bound one waits for its node.
        return (bound_to == Some(node)).then_some(PodAction::Remove);
    }
    match bound_to {
        None => return Some(PodAction::Bind),
        Some(other) if other != node => return None,
        Some(_) => {}
    }
    let status = pod.status.as_ref();
    let started = status.and_then(|status| status.pod_ip.as_ref()).is_some();
    if !started {
        return Some(PodAction::Start { ready });
    }
    (ready && !is_ready(pod)).then_some(PodAction::BecomeReady)
}

/// Whether the pod's `Ready` condition is true.
pub fn is_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|status| status.conditions.as_ref())
        .into_iter()
        .flatten()
        .any(|condition| condition.type_ == "Ready" && condition.status == "True")
}

/// A fresh address for a pod or a node, in 10.64.0.0/10: every pod of a run gets its own, and
/// none is the network's or the broadcast address of a /24.
pub fn next_address() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let host = n % 254 + 1;
    let rest = n / 254;
    format!("10.{}.{}.{host}", 64 + (rest / 256) % 64, rest % 256)
}

/// The delay of `pod` within `range`: spread over the range by its uid, the same each time.
pub fn delay_of(pod: &Pod, range: &Range<Duration>) -> Duration {
    let span = range.end.saturating_sub(range.start);
    if span.is_zero() {
        return range.start;
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    pod.metadata.uid.hash(&mut hasher);
    let span_ms = u64::try_from(span.as_millis()).unwrap_or(u64::MAX).max(1);
    range.start + Duration::from_millis(hasher.finish() % span_ms)
}

/// A simulated node: its name and address.
#[derive(Clone, Debug)]
pub struct SimulatedNode {
    /// The Node object's name.
    pub name: String,
    /// Its InternalIP, the pods' `hostIP`.
    pub address: String,
    /// The address given to each pod (by uid): a pod keeps it, even when the node acts on an
    /// older copy of it.
    pod_addresses: Arc<Mutex<HashMap<String, String>>>,
}

impl SimulatedNode {
    /// Register Node `name` with the API server: Ready, with room for far more pods than a walk
    /// makes.
    pub async fn register(client: &Client, name: &str) -> Result<SimulatedNode, String> {
        let node = SimulatedNode {
            name: name.to_string(),
            address: next_address(),
            pod_addresses: Arc::default(),
        };
        let nodes: Api<Node> = Api::all(client.clone());
        let object: Node = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": name,
                "labels": {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "waymark.dev/e2e": "true",
                },
            },
        }))
        .map_err(|error| format!("the simulated Node does not deserialize: {error}"))?;
        nodes
            .create(&PostParams::default(), &object)
            .await
            .map_err(|error| format!("cannot register Node {name}: {error}"))?;
        let now = Timestamp::now().to_string();
        let capacity = json!({"cpu": "64", "memory": "256Gi", "pods": "500"});
        let status = json!({"status": {
            "capacity": capacity,
            "allocatable": capacity,
            "addresses": [
                {"type": "InternalIP", "address": node.address},
                {"type": "Hostname", "address": name},
            ],
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "simulated by the Waymark e2e suite",
                "lastHeartbeatTime": now,
                "lastTransitionTime": now,
            }],
        }});
        nodes
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await
            .map_err(|error| format!("cannot report Node {name} Ready: {error}"))?;
        Ok(node)
    }

    /// Remove the Node object.
    pub async fn unregister(&self, client: &Client) {
        let nodes: Api<Node> = Api::all(client.clone());
        if let Err(error) = nodes.delete(&self.name, &DeleteParams::default()).await {
            eprintln!("cannot remove Node {}: {error}", self.name);
        }
    }

    /// Act as the scheduler and kubelet of this node for the pods of `namespace`, until the
    /// future is dropped (which also drops every delayed action in flight).
    pub async fn run(
        self,
        client: Client,
        namespace: String,
        mut settings: watch::Receiver<Settings>,
    ) {
        let pods: Api<Pod> = Api::namespaced(client, &namespace);
        // Back within a second of an API-server restart (a walk restarts one): the controller's
        // timing is measured, not the simulated node's.
        let mut events = watcher(pods.clone(), watcher::Config::default())
            .backoff(QuickRetry)
            .boxed();
        let mut known: BTreeMap<String, Pod> = BTreeMap::new();
        // Pods (by uid) with an action in flight: one at a time per pod.
        let mut busy: HashSet<String> = HashSet::new();
        let mut in_flight: JoinSet<(String, String, Done)> = JoinSet::new();
        loop {
            tokio::select! {
                event = events.next() => match event {
                    Some(Ok(watcher::Event::Apply(pod) | watcher::Event::InitApply(pod))) => {
                        known.insert(pod.name_any(), pod);
                    }
                    Some(Ok(watcher::Event::Delete(pod))) => {
                        known.remove(&pod.name_any());
                    }
                    Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) | Some(Err(_)) => {
                        continue
                    }
                    None => return,
                },
                changed = settings.changed() => if changed.is_err() { return },
                Some(done) = in_flight.join_next() => {
                    let Ok((name, uid, done)) = done else { continue };
                    busy.remove(&uid);
                    match done {
                        Done::Updated(pod) => { known.insert(name, *pod); }
                        Done::Bound => {
                            if let Some(spec) = known.get_mut(&name).and_then(|p| p.spec.as_mut()) {
                                spec.node_name = Some(self.name.clone());
                            }
                        }
                        Done::Removed => { known.remove(&name); }
                        Done::Nothing => {}
                    }
                }
            }
            let now = settings.borrow().clone();
            for pod in known.values() {
                let uid = pod.uid().unwrap_or_default();
                if busy.contains(&uid) {
                    continue;
                }
                let Some(action) = next_action(pod, &self.name, now.ready) else {
                    continue;
                };
                busy.insert(uid.clone());
                let delay = match action {
                    PodAction::Bind => Duration::ZERO,
                    _ => delay_of(pod, &now.start_delay),
                };
                let (node, pods, pod, settings) =
                    (self.clone(), pods.clone(), pod.clone(), settings.clone());
                in_flight.spawn(async move {
                    tokio::time::sleep(delay).await;
                    let done = node.act(&pods, &pod, &action, &settings).await;
                    (pod.name_any(), uid, done)
                });
            }
        }
    }

    /// Carry out `action` on `pod`, retrying while the API server does not answer.
    async fn act(
        &self,
        pods: &Api<Pod>,
        pod: &Pod,
        action: &PodAction,
        settings: &watch::Receiver<Settings>,
    ) -> Done {
        let name = pod.name_any();
        loop {
            let result = match action {
                PodAction::Bind => self.bind(pods, pod).await.map(|()| Done::Bound),
                PodAction::Start { .. } | PodAction::BecomeReady => {
                    // Whether it is Ready is decided when it starts, not when it was scheduled.
                    let ready = settings.borrow().ready;
                    let address = self.address_of(pod);
                    let status = pod_status(pod, &self.address, &address, ready, Timestamp::now());
                    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
                        .await
                        .map(|pod| Done::Updated(Box::new(pod)))
                }
                PodAction::Remove => {
                    let params = DeleteParams {
                        grace_period_seconds: Some(0),
                        preconditions: Some(Preconditions {
                            uid: pod.uid(),
                            resource_version: None,
                        }),
                        ..DeleteParams::default()
                    };
                    pods.delete(&name, &params).await.map(|_| Done::Removed)
                }
            };
            match result {
                Ok(done) => return done,
                // Gone, already bound, or replaced by a pod of the same name: nothing to do.
                Err(kube::Error::Api(status))
                    if status.is_not_found() || status.code == 409 || status.code == 422 =>
                {
                    return Done::Nothing;
                }
                Err(error) => {
                    eprintln!(
                        "simulated node {}: {action:?} pod {name}: {error}",
                        self.name
                    );
                    tokio::time::sleep(RETRY).await;
                }
            }
        }
    }

    /// The pod's address: the one it was given, or a new one.
    fn address_of(&self, pod: &Pod) -> String {
        let reported = pod.status.as_ref().and_then(|status| status.pod_ip.clone());
        let mut given = self.pod_addresses.lock().expect("pod addresses lock");
        given
            .entry(pod.uid().unwrap_or_default())
            .or_insert_with(|| reported.unwrap_or_else(next_address))
            .clone()
    }

    async fn bind(&self, pods: &Api<Pod>, pod: &Pod) -> Result<(), kube::Error> {
        let binding = json!({
            "apiVersion": "v1",
            "kind": "Binding",
            "metadata": {"name": pod.name_any(), "uid": pod.uid()},
            "target": {"apiVersion": "v1", "kind": "Node", "name": self.name},
        });
        pods.create_subresource::<_, Value>(
            "binding",
            &pod.name_any(),
            &PostParams::default(),
            &binding,
        )
        .await
        .map(|_| ())
    }
}

/// What an action left of its pod, for the node's own copy.
enum Done {
    Updated(Box<Pod>),
    Bound,
    Removed,
    Nothing,
}

/// The status a kubelet reports for `pod` started on a node at `host_ip`: Running at `pod_ip`,
/// its containers running, and Ready when `ready`.
pub fn pod_status(pod: &Pod, host_ip: &str, pod_ip: &str, ready: bool, now: Timestamp) -> Value {
    let status = pod.status.clone().unwrap_or_default();
    let now = now.to_string();
    let started = status
        .start_time
        .as_ref()
        .map_or_else(|| now.clone(), |time| time.0.to_string());
    let ready_text = if ready { "True" } else { "False" };
    // Keep a condition's transition time when its status does not change.
    let transition = |type_: &str, value: &str| {
        status
            .conditions
            .iter()
            .flatten()
            .find(|condition| condition.type_ == type_ && condition.status == value)
            .and_then(|condition| condition.last_transition_time.as_ref())
            .map_or_else(|| now.clone(), |time| time.0.to_string())
    };
    let condition = |type_: &str, value: &str| {
        let mut condition = json!({
            "type": type_,
            "status": value,
            "lastTransitionTime": transition(type_, value),
        });
        if value == "False" {
            condition["reason"] = json!("ReadinessProbeFailing");
            condition["message"] = json!("held unready by the e2e walk");
        }
        condition
    };
    let containers: Vec<Value> = pod
        .spec
        .iter()
        .flat_map(|spec| spec.containers.iter())
        .map(|container| {
            json!({
                "name": container.name,
                "image": container.image.clone().unwrap_or_default(),
                "imageID": "",
                "ready": ready,
                "started": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": started}},
            })
        })
        .collect();
    json!({"status": {
        "phase": "Running",
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "podIP": pod_ip,
        "podIPs": [{"ip": pod_ip}],
        "startTime": started,
        "conditions": [
            condition("PodReadyToStartContainers", "True"),
            condition("Initialized", "True"),
            condition("ContainersReady", ready_text),
            condition("Ready", ready_text),
            condition("PodScheduled", "True"),
        ],
        "containerStatuses": containers,
    }})
}

/// Retry a failed watch of the harness after half a second, always.
pub struct QuickRetry;

impl Iterator for QuickRetry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        Some(RETRY)
    }
}

impl kube::runtime::utils::Backoff for QuickRetry {
    fn reset(&mut self) {}
}

/// The node's decisions, table-driven (run by the harness without a cluster).
pub fn decisions_follow_the_pod_lifecycle() {
    let pod = |node: Option<&str>, ip: Option<&str>, ready: Option<bool>, deleting: bool| {
        let mut pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "uid": "u"},
            "spec": {"containers": [{"name": "app"}]},
        }))
        .expect("a pod");
        if let Some(spec) = pod.spec.as_mut() {
            spec.node_name = node.map(String::from);
        }
        if deleting {
            pod.metadata.deletion_timestamp = Some(
                k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(Timestamp::now()),
            );
        }
        let conditions = ready.map(
            |ready| json!([{"type": "Ready", "status": if ready { "True" } else { "False" }}]),
        );
        pod.status = Some(
            serde_json::from_value(json!({"podIP": ip, "conditions": conditions}))
                .expect("a status"),
        );
        pod
    };
    let mine = Some("n1");
    let cases = [
        // (what, pod, pods become ready, expected)
        (
            "pending: bind",
            pod(None, None, None, false),
            true,
            Some(PodAction::Bind),
        ),
        (
            "pending, held unready: bind all the same",
            pod(None, None, None, false),
            false,
            Some(PodAction::Bind),
        ),
        (
            "another node's",
            pod(Some("n2"), None, None, false),
            true,
            None,
        ),
        (
            "bound: start Ready",
            pod(mine, None, None, false),
            true,
            Some(PodAction::Start { ready: true }),
        ),
        (
            "bound, held: start unready",
            pod(mine, None, None, false),
            false,
            Some(PodAction::Start { ready: false }),
        ),
        (
            "held unready, released",
            pod(mine, Some("10.64.0.1"), Some(false), false),
            true,
            Some(PodAction::BecomeReady),
        ),
        (
            "held unready, still held",
            pod(mine, Some("10.64.0.1"), Some(false), false),
            false,
            None,
        ),
        (
            "Ready: nothing",
            pod(mine, Some("10.64.0.1"), Some(true), false),
            true,
            None,
        ),
        (
            "Ready, new pods held: stays Ready",
            pod(mine, Some("10.64.0.1"), Some(true), false),
            false,
            None,
        ),
        (
            "deleted on this node: remove",
            pod(mine, Some("10.64.0.1"), Some(true), true),
            true,
            Some(PodAction::Remove),
        ),
        (
            "deleted, unbound: the API server's",
            pod(None, None, None, true),
            true,
            None,
        ),
        (
            "deleted on another node",
            pod(Some("n2"), None, None, true),
            true,
            None,
        ),
    ];
    for (what, pod, ready, expected) in cases {
        assert_eq!(next_action(&pod, "n1", ready), expected, "{what}");
    }
}

/// Every pod gets an address of its own, in 10.64.0.0/10, never a /24's first or last.
pub fn every_pod_gets_an_address_of_its_own() {
    let addresses: Vec<String> = (0..2_000).map(|_| next_address()).collect();
    let distinct: HashSet<&String> = addresses.iter().collect();
    assert_eq!(distinct.len(), addresses.len(), "all distinct");
    for address in &addresses {
        let octets: Vec<u8> = address
            .split('.')
            .map(|octet| octet.parse().expect("an octet"))
            .collect();
        assert_eq!(octets[0], 10, "{address}");
        assert!((64..128).contains(&octets[1]), "{address}");
        assert!(octets[3] != 0 && octets[3] != 255, "{address}");
    }
}

/// The start delay stays within its range and differs between pods.
pub fn start_delays_vary_within_their_range() {
    let range = Duration::from_millis(100)..Duration::from_millis(600);
    let delays: Vec<Duration> = (0..50)
        .map(|i| {
            let pod: Pod = serde_json::from_value(json!({"metadata": {"uid": format!("uid-{i}")}}))
                .expect("a pod");
            delay_of(&pod, &range)
        })
        .collect();
    assert!(
        delays.iter().all(|delay| range.contains(delay)),
        "{delays:?}"
    );
    let distinct: HashSet<&Duration> = delays.iter().collect();
    assert!(distinct.len() > 10, "varied: {delays:?}");
    let fixed = Duration::from_secs(1)..Duration::from_secs(1);
    assert_eq!(delay_of(&Pod::default(), &fixed), Duration::from_secs(1));
}
