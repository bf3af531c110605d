//! What the controller's Release cache holds per Release: the heap bytes of a decoded
//! `Release` against the compact `CachedRelease` the watch keeps, for a Release as the scale
//! bench writes it (one container) with the status a served Release has after its first canary,
//! and with ten history entries (a Release that has shipped ten revisions). Also the time a
//! reconcile spends decoding the cached Release.
//!
//! Run with `cargo bench --bench cache` (optionally `-- --releases N`). The bytes are counted by
//! a counting allocator around the system's: the live heap the objects hold, not RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde_json::json;
use waymark::api::Release;
use waymark::controller::cached::CachedRelease;

/// The system allocator, counting the bytes live.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; only a counter is added.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `alloc` is passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, pointer: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: the caller's contract for `dealloc` is passed on.
        unsafe { System.dealloc(pointer, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn argument(name: &str, default: usize) -> usize {
    let arguments: Vec<String> = std::env::args().collect();
    arguments
        .iter()
        .position(|argument| argument == name)
        .and_then(|index| arguments.get(index + 1))
        .and_then(|value| value.parse().ok())
        .unwrap_or(default)
}

/// Release `index` as the API server serves it after its first canary (the scale bench's
/// manifest, the status Waymark wrote), with `history` entries in its history (the newest
/// with its timeline, as the cache keeps them).
fn served(index: usize, history: usize) -> serde_json::Value {
    let name = format!("rel-{index:05}");
    let entry = |n: usize| {
        json!({
            "finishedAt": "2026-12-06T22:41:39Z", "startedAt": "2026-12-06T22:40:46Z",
            "message": format!("canary {n:010x} promoted; stable serves 100%"),
            "outcome": "Promoted", "reason": "Promoted", "revision": format!("{n:010x}"),
            "roadmapItem": format!("SCALE-R{n}")
        })
    };
    let mut entries: Vec<serde_json::Value> = (0..history).map(entry).collect();
    if let Some(newest) = entries.first_mut() {
        newest["timeline"] = json!([
            {"at": "2026-12-06T22:40:46Z", "kind": "CanaryCreated", "message": "canary 248e6dee41 created"},
            {"at": "2026-12-06T22:40:46Z", "kind": "CanaryAvailable"},
            {"at": "2026-12-06T22:41:28Z", "kind": "Step", "step": 1, "weight": 50}
        ]);
    }
    json!({
        "apiVersion": "waymark.dev/v1alpha1", "kind": "Release",
        "metadata": {
            "creationTimestamp": "2026-12-06T22:40:06Z", "generation": 2, "name": name,
            "namespace": "scale-releases", "resourceVersion": "27806",
            "uid": "604df9f7-ce64-469e-9a4c-01e543f16f97"
        },
        "spec": {
            "progressDeadline": "10m", "replicas": 2,
            "roadmap": {"item": "SCALE-2", "reworkWindow": "168h", "title": "Scale bench, a canary each"},
            "scaleDownDelay": "30s", "selector": {"matchLabels": {"app": name}},
            "service": {"port": 80},
            "steps": [{"setWeight": 50}, {"pause": {"duration": "10s"}}],
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"image": "nginx:1.28-alpine", "name": "app", "ports": [{"containerPort": 80}]}]}
            },
            "traffic": {"replicas": {}}
        },
        "status": {
            "canaryWeight": 0,
            "conditions": [
                {"lastTransitionTime": "2026-12-06T22:40:06Z", "message": "", "observedGeneration": 2, "reason": "SpecValid", "status": "True", "type": "SpecValid"},
                {"lastTransitionTime": "2026-12-06T22:40:37Z", "message": "every pod of the stable available", "observedGeneration": 2, "reason": "StableAvailable", "status": "True", "type": "Available"},
                {"lastTransitionTime": "2026-12-06T22:41:39Z", "message": "stable 248e6dee41 serves 100% (2 pods available)", "observedGeneration": 2, "reason": "StableAvailable", "status": "False", "type": "Progressing"}
            ],
            "history": entries,
            "message": "stable 248e6dee41 serves 100% (2 pods available)",
            "observedGeneration": 2, "phase": "Healthy", "promotedAt": "2026-12-06T22:41:39Z",
            "reason": "StableAvailable", "replicas": 2, "roadmapItem": "SCALE-2",
            "selector": format!("app={name},waymark.dev/release={name}"),
            "stableRevision": "248e6dee41", "stableRoadmapItem": "SCALE-2"
        }
    })
}

/// The live heap bytes per object that `make` keeps, over `count` objects.
fn bytes_each<T>(count: usize, make: impl Fn(usize) -> T) -> (usize, Vec<T>) {
    let mut kept = Vec::with_capacity(count);
    let before = LIVE.load(Ordering::Relaxed);
    for index in 0..count {
        kept.push(make(index));
    }
    let after = LIVE.load(Ordering::Relaxed);
    (after.saturating_sub(before) / count.max(1), kept)
}

fn main() {
    let count = argument("--releases", 1_000).max(1);
    println!("{count} Releases; heap bytes each (as the cache holds them, behind an Arc)");
    for history in [2, 10] {
        let manifests: Vec<serde_json::Value> =
            (0..count).map(|index| served(index, history)).collect();
        let json_bytes = serde_json::to_string(&manifests[0]).map_or(0, |text| text.len());
        let (decoded, releases) = bytes_each(count, |index| {
            Arc::new(serde_json::from_value::<Release>(manifests[index].clone()).ok())
        });
        let (cached, kept) = bytes_each(count, |index| {
            Arc::new(serde_json::from_value::<CachedRelease>(manifests[index].clone()).ok())
        });
        if releases.iter().any(|release| release.is_none())
            || kept.iter().any(|release| release.is_none())
        {
            eprintln!("the bench's Release does not decode");
            std::process::exit(1);
        }
        let started = Instant::now();
        let mut decodes = 0usize;
        for release in kept.iter().filter_map(|release| release.as_ref().as_ref()) {
            if release.release().is_ok() {
                decodes += 1;
            }
        }
        let per_decode = started.elapsed().as_secs_f64() * 1e6 / decodes.max(1) as f64;
        println!(
            "  {history:>2} history entries: {json_bytes} bytes of JSON; Release {decoded} B, \
             CachedRelease {cached} B ({:.0}% less); decoding one for a reconcile: {per_decode:.1} µs",
            100.0 * (1.0 - cached as f64 / decoded.max(1) as f64)
        );
        println!(
            "      at 10,000 Releases: {:.1} MiB against {:.1} MiB",
            cached as f64 * 10_000.0 / 1_048_576.0,
            decoded as f64 * 10_000.0 / 1_048_576.0
        );
    }
}
