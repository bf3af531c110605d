//! What the bench does to the cluster: the API server's baseline (Deployments and Services
//! created directly), the Releases and their new version, a fake kubelet that marks Deployments
//! available, and a watch that counts Releases by state.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::{Value, json};

use k8s_openapi::jiff::Timestamp;
use waymark::api::{LABEL_RELEASE, LABEL_ROLE, Phase, Release, ReleaseStatus, template_revision};

use crate::cluster::BENCH_MANAGER;
use crate::deployment_status::{available_patch, reported_available};
use crate::judge::earliest_since;

/// Replicas of every Release and baseline Deployment.
const REPLICAS: i32 = 2;
/// Patches of Deployment status the fake kubelet has in flight at once.
const KUBELET_CONCURRENCY: usize = 16;
/// The label on the baseline's objects (not Waymark's: the controller never sees them).
const BASELINE_LABEL: &str = "waymark-scale-bench/baseline";

fn image(version: u8) -> &'static str {
    match version {
        1 => "nginx:1.27-alpine",
        _ => "nginx:1.28-alpine",
    }
}

fn container(version: u8) -> Value {
    json!({"name": "app", "image": image(version), "ports": [{"containerPort": 80}]})
}

/// The name of Release number `index`.
pub fn release_name(index: usize) -> String {
    format!("rel-{index:05}")
}

/// What the baseline measured: the API server creating Deployments and Services directly.
#[derive(Clone, Debug)]
pub struct Baseline {
    /// Objects created.
    pub creates: u64,
    /// From the first request to the last answer.
    pub elapsed: Duration,
}

impl Baseline {
    /// Creates per second.
    pub fn rate(&self) -> f64 {
        self.creates as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Create `count` Deployments and `count` Services shaped like Waymark's children (a
/// two-replica Deployment of one container, a Service selecting its pods) in `namespace`,
/// `concurrency` requests at a time, as fast as the API server takes them.
pub async fn baseline(
    client: &Client,
    namespace: &str,
    count: usize,
    concurrency: usize,
) -> Result<Baseline, String> {
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let services: Api<Service> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(BENCH_MANAGER.into()),
        ..PostParams::default()
    };
    let started = Instant::now();
    // Deployment i and Service i alternate, as a controller creating children would.
    futures::stream::iter(0..count * 2)
        .map(|job| {
            let (deployments, services, params) = (&deployments, &services, &params);
            async move {
                let name = format!("base-{:05}", job / 2);
                let labels = json!({"app": name, BASELINE_LABEL: "true"});
                if job % 2 == 0 {
                    let deployment: Deployment = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": labels},
                        "spec": {
                            "replicas": REPLICAS,
                            "selector": {"matchLabels": {"app": name}},
                            "template": {
                                "metadata": {"labels": labels},
                                "spec": {"containers": [container(1)]}
                            }
                        }
                    }))
                    .map_err(|error| format!("baseline Deployment: {error}"))?;
                    deployments
                        .create(params, &deployment)
                        .await
                        .map_err(|error| format!("cannot create Deployment {name}: {error}"))?;
                } else {
                    let service: Service = serde_json::from_value(json!({
                        "metadata": {"name": name, "labels": labels},
                        "spec": {
                            "selector": {"app": name},
                            "ports": [{"name": "http", "port": 80, "targetPort": 80}]
                        }
                    }))
                    .map_err(|error| format!("baseline Service: {error}"))?;
                    services
                        .create(params, &service)
                        .await
                        .map_err(|error| format!("cannot create Service {name}: {error}"))?;
                }
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await?;
    Ok(Baseline {
        creates: (count * 2) as u64,
        elapsed: started.elapsed(),
    })
}

/// Release `name` as a platform team writes it: two replicas split by pod counts (no router),
/// a 50% step, then a 10 s pause.
fn release(name: &str) -> Result<Release, String> {
    serde_json::from_value(json!({
        "apiVersion": "waymark.dev/v1alpha1",
        "kind": "Release",
        "metadata": {"name": name},
        "spec": {
            "roadmap": {"item": "SCALE-1", "title": "Scale bench, first release"},
            "replicas": REPLICAS,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [container(1)]}
            },
            "service": {"port": 80},
            "traffic": {"replicas": {}},
            "steps": [{"setWeight": 50}, {"pause": {"duration": "10s"}}]
        }
    }))
    .map_err(|error| format!("the bench's Release does not deserialize: {error}"))
}

/// Create Releases `0..count` in `namespace`, `concurrency` at a time.
pub async fn create_releases(
    client: &Client,
    namespace: &str,
    count: usize,
    concurrency: usize,
) -> Result<(), String> {
    let api: Api<Release> = Api::namespaced(client.clone(), namespace);
    let params = PostParams {
        field_manager: Some(BENCH_MANAGER.into()),
        ..PostParams::default()
    };
    futures::stream::iter(0..count)
        .map(|index| {
            let (api, params) = (&api, &params);
            async move {
                let name = release_name(index);
                api.create(params, &release(&name)?)
                    .await
                    .map_err(|error| format!("cannot create Release {name}: {error}"))?;
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// A Release shipped a new version: its new template revision and when the patch was sent.
pub struct Shipped {
    /// The new template's revision.
    pub revision: String,
    /// When the bench sent the patch.
    pub at: Timestamp,
}

/// Ship version `round` to Releases `0..count` as a merge patch of the spec: round 0 (the
/// canary wave) a new image and roadmap item; each later round the image with the round in an
/// environment variable, and a roadmap item of its own. Returns each Release's new template
/// revision and when the patch was sent.
pub async fn ship(
    client: &Client,
    namespace: &str,
    count: usize,
    concurrency: usize,
    round: u32,
) -> Result<HashMap<String, Shipped>, String> {
    let api: Api<Release> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(BENCH_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = if round == 0 {
        json!({"spec": {
            "roadmap": {"item": "SCALE-2", "title": "Scale bench, a canary each"},
            "template": {"spec": {"containers": [container(2)]}}
        }})
    } else {
        let mut container = container(2);
        container["env"] = json!([{"name": "SCALE_BENCH_ROUND", "value": round.to_string()}]);
        json!({"spec": {
            "roadmap": {"item": format!("SCALE-R{round}"), "title": "Scale bench, round after round"},
            "template": {"spec": {"containers": [container]}}
        }})
    };
    futures::stream::iter(0..count)
        .map(|index| {
            let (api, params, patch) = (&api, &params, &patch);
            async move {
                let name = release_name(index);
                let at = Timestamp::now();
                let patched = api
                    .patch(&name, params, &Patch::Merge(patch))
                    .await
                    .map_err(|error| format!("cannot ship Release {name}: {error}"))?;
                let revision = template_revision(&patched.spec.template);
                Ok::<_, String>((name, Shipped { revision, at }))
            }
        })
        .buffer_unordered(concurrency)
        .try_collect()
        .await
}

/// Give Releases `names` an analysis by a merge patch of their spec (no template change, so no
/// canary yet): every 10 s, a 99.9% objective judged by a burn rate of at most 14.4 over 20 s
/// and 10 s, at least 100 requests, rolled back after 2 failing runs, read from the Prometheus
/// at `address`.
pub async fn add_analysis(
    client: &Client,
    namespace: &str,
    names: &[String],
    address: &str,
    concurrency: usize,
) -> Result<(), String> {
    let api: Api<Release> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(BENCH_MANAGER.into()),
        ..PatchParams::default()
    };
    let patch = json!({"spec": {"analysis": {
        "interval": ANALYSIS_INTERVAL,
        "prometheus": {"address": address, "timeout": "2s"},
        "slo": {
            "objective": 99.9,
            "errorQuery": "sum(rate(http_requests_total{namespace=\"{{namespace}}\",service=\"{{service}}\",code=~\"5..\"}[{{window}}]))",
            "totalQuery": "sum(rate(http_requests_total{namespace=\"{{namespace}}\",service=\"{{service}}\"}[{{window}}]))",
            "burnRates": [{"long": "20s", "short": "10s", "max": 14.4}],
            "minRequests": 100
        },
        "failureLimit": 2,
        "inconclusiveLimit": 6,
        "errorLimit": 4
    }}});
    futures::stream::iter(names)
        .map(|name| {
            let (api, params, patch) = (&api, &params, &patch);
            async move {
                api.patch(name, params, &Patch::Merge(patch))
                    .await
                    .map_err(|error| format!("cannot give Release {name} an analysis: {error}"))?;
                Ok::<(), String>(())
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<()>()
        .await
}

/// The analysis interval [`add_analysis`] writes.
pub const ANALYSIS_INTERVAL: &str = "10s";

/// A Release's status as the bench counts it.
#[derive(Clone, Debug, Default)]
pub struct Seen {
    /// Its phase.
    pub phase: Option<Phase>,
    /// Its reason.
    pub reason: Option<String>,
    /// `status.stableRevision`.
    pub stable_revision: Option<String>,
    /// Whether `status.canaryWeight` is above 0.
    weighted: bool,
    /// The whole status, to tell what the next write changes.
    raw: Value,
}

impl Seen {
    /// How many entries `status.history` holds.
    pub fn history_len(&self) -> usize {
        self.raw
            .get("history")
            .and_then(Value::as_array)
            .map_or(0, Vec::len)
    }
}

/// A write of some Release's status, as the watch saw it.
#[derive(Clone, Debug)]
pub struct StatusWrite {
    /// When the watch saw it.
    pub at: Timestamp,
    /// The reason it wrote and the fields it changed: `StepPause [message, pauseUntil]`.
    pub what: String,
}

/// One version of the traced Release, as the watch saw it: what each write changed.
#[derive(Clone, Debug)]
pub struct Version {
    /// When the watch saw it.
    pub at: Timestamp,
    /// `metadata.generation` (a spec change bumps it).
    pub generation: i64,
    /// The status in one line: phase, reason, step, weight, message.
    pub status: String,
    /// The status as the API server returned it.
    pub raw: Value,
}

/// Every Release of a namespace as a watch last saw it, and every version of one of them.
#[derive(Clone, Default)]
pub struct Releases {
    seen: Arc<Mutex<HashMap<String, Seen>>>,
    trail: Arc<Mutex<Vec<Version>>>,
    writes: Arc<Mutex<Vec<StatusWrite>>>,
    /// When each Release's status went from no canary weight to some, every time it did.
    weight_starts: Arc<Mutex<HashMap<String, Vec<Timestamp>>>>,
    /// When each Release's status entered phase RolledBack, every time it did.
    rolled_back: Arc<Mutex<HashMap<String, Vec<Timestamp>>>>,
}

impl Releases {
    /// Watch the Releases of `namespace` (one WATCH, no polling) until the runtime ends, and
    /// keep every version of Release `traced`.
    pub fn watch(client: &Client, namespace: &str, traced: &str) -> Releases {
        let releases = Releases::default();
        let api: Api<Release> = Api::namespaced(client.clone(), namespace);
        let (seen, trail, writes, weight_starts, rolled_back) = (
            releases.seen.clone(),
            releases.trail.clone(),
            releases.writes.clone(),
            releases.weight_starts.clone(),
            releases.rolled_back.clone(),
        );
        let traced = traced.to_string();
        tokio::spawn(async move {
            let mut events = watcher(api, watcher::Config::default())
                .default_backoff()
                .boxed();
            while let Some(event) = events.next().await {
                let Ok(mut seen) = seen.lock() else { return };
                match event {
                    Ok(watcher::Event::Apply(release) | watcher::Event::InitApply(release)) => {
                        let name = release.name_any();
                        let status = release.status.clone().unwrap_or_default();
                        let raw = serde_json::to_value(&status).unwrap_or_default();
                        let at = Timestamp::now();
                        let had_weight = seen.get(&name).is_some_and(|seen| seen.weighted);
                        let weighted = status.canary_weight.is_some_and(|weight| weight > 0);
                        if weighted
                            && !had_weight
                            && let Ok(mut starts) = weight_starts.lock()
                        {
                            starts.entry(name.clone()).or_default().push(at);
                        }
                        let was_rolled_back = seen
                            .get(&name)
                            .is_some_and(|seen| seen.phase == Some(Phase::RolledBack));
                        if status.phase == Some(Phase::RolledBack)
                            && !was_rolled_back
                            && let Ok(mut rolled_back) = rolled_back.lock()
                        {
                            rolled_back.entry(name.clone()).or_default().push(at);
                        }
                        if name == traced
                            && let Ok(mut trail) = trail.lock()
                        {
                            trail.push(Version {
                                at,
                                generation: release.metadata.generation.unwrap_or(0),
                                status: describe(&status),
                                raw: raw.clone(),
                            });
                        }
                        // The first sight of a Release is its creation (or the initial list).
                        let before = seen.get(&name).map(|seen| seen.raw.clone());
                        if let Some(before) = before
                            && before != raw
                            && let Ok(mut writes) = writes.lock()
                        {
                            let changed = changed_fields(&before, &raw);
                            writes.push(StatusWrite {
                                at,
                                what: format!(
                                    "{} [{}]",
                                    status.reason.as_deref().unwrap_or("-"),
                                    changed.join(", ")
                                ),
                            });
                        }
                        seen.insert(
                            name,
                            Seen {
                                phase: status.phase,
                                reason: status.reason,
                                stable_revision: status.stable_revision,
                                weighted,
                                raw,
                            },
                        );
                    }
                    Ok(watcher::Event::Delete(release)) => {
                        seen.remove(&release.name_any());
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => {}
                }
            }
        });
        releases
    }

    /// The versions of the traced Release seen so far.
    pub fn trail(&self) -> Vec<Version> {
        self.trail
            .lock()
            .map(|trail| trail.clone())
            .unwrap_or_default()
    }

    /// When each Release's status first showed canary weight above 0 at or after `since`.
    pub fn first_weights_since(&self, since: Timestamp) -> HashMap<String, Timestamp> {
        earliest_of_each(&self.weight_starts, since)
    }

    /// When each Release's status first entered phase RolledBack at or after `since`.
    pub fn rolled_back_since(&self, since: Timestamp) -> HashMap<String, Timestamp> {
        earliest_of_each(&self.rolled_back, since)
    }

    /// Release `name`'s status as last seen.
    pub fn status_of(&self, name: &str) -> Option<ReleaseStatus> {
        let raw = self.seen.lock().ok()?.get(name)?.raw.clone();
        serde_json::from_value(raw).ok()
    }

    /// Every status write seen so far.
    pub fn status_writes(&self) -> Vec<StatusWrite> {
        self.writes
            .lock()
            .map(|writes| writes.clone())
            .unwrap_or_default()
    }

    /// How many Releases satisfy `done`, and the others counted by phase and reason.
    pub fn count(&self, done: impl Fn(&str, &Seen) -> bool) -> (usize, BTreeMap<String, usize>) {
        let Ok(seen) = self.seen.lock() else {
            return (0, BTreeMap::new());
        };
        let mut finished = 0;
        let mut others = BTreeMap::new();
        for (name, release) in seen.iter() {
            if done(name, release) {
                finished += 1;
            } else {
                let state = format!(
                    "{}/{}",
                    release
                        .phase
                        .map(|phase| phase.to_string())
                        .unwrap_or_else(|| "no status".into()),
                    release.reason.as_deref().unwrap_or("-")
                );
                *others.entry(state).or_default() += 1;
            }
        }
        (finished, others)
    }
}

/// For each name, the earliest of its times at or after `since`.
fn earliest_of_each(
    times: &Mutex<HashMap<String, Vec<Timestamp>>>,
    since: Timestamp,
) -> HashMap<String, Timestamp> {
    let Ok(times) = times.lock() else {
        return HashMap::new();
    };
    times
        .iter()
        .filter_map(|(name, times)| Some((name.clone(), earliest_since(times, since)?)))
        .collect()
}

/// The status fields that differ between `old` and `new` (conditions by type).
pub fn changed_fields(old: &Value, new: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let (old, new) = (
        old.as_object().unwrap_or(&empty),
        new.as_object().unwrap_or(&empty),
    );
    let mut keys: Vec<&String> = old.keys().chain(new.keys()).collect();
    keys.sort();
    keys.dedup();
    let mut changed = Vec::new();
    for key in keys {
        let (before, after) = (old.get(key), new.get(key));
        if before == after {
            continue;
        }
        if key == "conditions" {
            let by_type = |value: Option<&Value>| -> BTreeMap<String, Value> {
                value
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                    .map(|condition| {
                        let kind = condition["type"].as_str().unwrap_or("?").to_string();
                        (kind, condition.clone())
                    })
                    .collect()
            };
            let (before, after) = (by_type(before), by_type(after));
            let mut types: Vec<&String> = before.keys().chain(after.keys()).collect();
            types.sort();
            types.dedup();
            for kind in types {
                if before.get(kind) != after.get(kind) {
                    changed.push(format!("conditions[{kind}]"));
                }
            }
        } else {
            changed.push(key.clone());
        }
    }
    changed
}

/// A status in one line, as the trail shows it.
fn describe(status: &ReleaseStatus) -> String {
    let text = |value: &Option<String>| value.clone().unwrap_or_else(|| "-".into());
    let number = |value: Option<i32>| value.map_or_else(|| "-".into(), |value| value.to_string());
    format!(
        "{} {} step={} weight={} stable={} canary={}: {}",
        status
            .phase
            .map_or_else(|| "-".to_string(), |phase| phase.to_string()),
        text(&status.reason),
        number(status.current_step),
        number(status.canary_weight),
        text(&status.stable_revision),
        text(&status.canary_revision),
        text(&status.message)
    )
}

/// The fake kubelet: there are no nodes, so it marks each of Waymark's Deployments available
/// (observedGeneration, replicas, updated, ready and available all current) whenever its
/// status is not, as a kubelet and the Deployment controller would once the pods run.
#[derive(Clone, Default)]
pub struct Kubelet {
    known: Arc<Mutex<HashMap<String, Deployment>>>,
    /// When each Release's canary Deployment went from some replicas to 0, every time it did.
    canary_emptied: Arc<Mutex<HashMap<String, Vec<Timestamp>>>>,
}

impl Kubelet {
    /// Start it for the Deployments labelled `waymark.dev/release` in `namespace`.
    pub fn start(client: &Client, namespace: &str) -> Kubelet {
        let kubelet = Kubelet::default();
        let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
        let (queue, pending) = futures::channel::mpsc::unbounded::<String>();
        let queued: Arc<Mutex<HashSet<String>>> = Arc::default();
        {
            let known = kubelet.known.clone();
            let canary_emptied = kubelet.canary_emptied.clone();
            let queued = queued.clone();
            let api = api.clone();
            tokio::spawn(async move {
                let config = watcher::Config::default().labels(LABEL_RELEASE);
                let mut events = watcher(api, config).default_backoff().boxed();
                while let Some(event) = events.next().await {
                    let (Ok(mut known), Ok(mut queued)) = (known.lock(), queued.lock()) else {
                        return;
                    };
                    match event {
                        Ok(
                            watcher::Event::Apply(deployment)
                            | watcher::Event::InitApply(deployment),
                        ) => {
                            let name = deployment.name_any();
                            let emptied = canary_replicas(&deployment) == Some(0)
                                && known
                                    .get(&name)
                                    .and_then(canary_replicas)
                                    .is_some_and(|before| before > 0);
                            if emptied
                                && let Some(release) = deployment.labels().get(LABEL_RELEASE)
                                && let Ok(mut canary_emptied) = canary_emptied.lock()
                            {
                                canary_emptied
                                    .entry(release.clone())
                                    .or_default()
                                    .push(Timestamp::now());
                            }
                            let stale = deployment.metadata.deletion_timestamp.is_none()
                                && !reported_available(&deployment);
                            known.insert(name.clone(), deployment);
                            if stale && queued.insert(name.clone()) {
                                let _ = queue.unbounded_send(name);
                            }
                        }
                        Ok(watcher::Event::Delete(deployment)) => {
                            known.remove(&deployment.name_any());
                        }
                        Ok(watcher::Event::Init | watcher::Event::InitDone) | Err(_) => {}
                    }
                }
            });
        }
        let known = kubelet.known.clone();
        tokio::spawn(
            pending.for_each_concurrent(KUBELET_CONCURRENCY, move |name| {
                let (api, known, queued) = (api.clone(), known.clone(), queued.clone());
                async move {
                    if let Ok(mut queued) = queued.lock() {
                        queued.remove(&name);
                    }
                    // The newest version seen, not the one that was queued.
                    let current = known
                        .lock()
                        .ok()
                        .and_then(|known| known.get(&name).cloned());
                    let Some(deployment) = current else { return };
                    if reported_available(&deployment) {
                        return;
                    }
                    let patch = available_patch(&deployment);
                    match api
                        .patch_status(&name, &PatchParams::default(), &Patch::Merge(&patch))
                        .await
                    {
                        Ok(_) => {}
                        Err(kube::Error::Api(status)) if status.is_not_found() => {}
                        Err(error) => eprintln!("fake kubelet: Deployment {name}: {error}"),
                    }
                }
            }),
        );
        kubelet
    }

    /// When each Release's canary Deployment was first seen scaled from some replicas to 0
    /// at or after `since`.
    pub fn canaries_emptied_since(&self, since: Timestamp) -> HashMap<String, Timestamp> {
        earliest_of_each(&self.canary_emptied, since)
    }

    /// How many canary Deployments exist.
    pub fn canaries(&self) -> usize {
        self.known
            .lock()
            .map(|known| {
                known
                    .values()
                    .filter(|deployment| {
                        deployment
                            .labels()
                            .get(LABEL_ROLE)
                            .is_some_and(|role| role == "canary")
                    })
                    .count()
            })
            .unwrap_or(0)
    }
}

/// A canary Deployment's `spec.replicas` (`None` for any other Deployment).
fn canary_replicas(deployment: &Deployment) -> Option<i32> {
    let canary = deployment
        .labels()
        .get(LABEL_ROLE)
        .is_some_and(|role| role == "canary");
    canary.then(|| {
        deployment
            .spec
            .as_ref()
            .and_then(|spec| spec.replicas)
            .unwrap_or(1)
    })
}
