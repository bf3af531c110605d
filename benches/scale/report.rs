//! What the bench prints: one table a reader can compare across runs, and the same as JSON.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use waymark::rollout::history::HISTORY_LIMIT;

use crate::judge::{Flatness, flatness};
use crate::prepare::controller_user;
use crate::requests::{Counts, Kind};
use crate::workload::{Baseline, StatusWrite, Version, changed_fields};

/// The least a phase needs: writes per Release at the baseline rate, plus a wait the spec
/// imposes (a pause step).
#[derive(Clone, Copy, Debug)]
pub struct Floor {
    /// Writes per Release.
    pub writes_per_release: f64,
    /// Time no controller can save.
    pub wait: Duration,
}

impl Floor {
    /// `writes_per_release` writes a Release, and `wait`.
    pub fn writes(writes_per_release: f64, wait: Duration) -> Floor {
        Floor {
            writes_per_release,
            wait,
        }
    }

    /// The floor's time for `releases` Releases at the baseline's rate.
    pub fn time(&self, releases: usize, baseline: &Baseline) -> Duration {
        let writes = self.writes_per_release * releases as f64;
        Duration::from_secs_f64(writes / baseline.rate()) + self.wait
    }
}

/// One measured phase.
pub struct PhaseResult {
    /// Its name.
    pub name: &'static str,
    /// From its start until its end condition held.
    pub wall: Duration,
    /// The least it needs, where the bench knows it.
    pub floor: Option<Floor>,
    /// When it started.
    pub from: Timestamp,
    /// When it ended.
    pub to: Timestamp,
    /// The controller's requests (audit log).
    pub controller: Counts,
    /// Every client's requests (`apiserver_request_total`).
    pub all_clients: Counts,
    /// The controller's reconciles.
    pub reconciles: u64,
    /// The controller's failed reconciles.
    pub reconcile_errors: u64,
    /// The controller's largest resident set sampled during the phase, in bytes.
    pub peak_rss: u64,
    /// CPU time the controller used during the phase.
    pub cpu: Duration,
}

/// Everything one run measured.
pub struct Report {
    /// N.
    pub releases: usize,
    /// The API server's version.
    pub apiserver_version: String,
    /// The controller's process id.
    pub controller_pid: u32,
    /// Requests the bench kept in flight.
    pub concurrency: usize,
    /// The API server's own rate.
    pub baseline: Baseline,
    /// The phases in order.
    pub phases: Vec<PhaseResult>,
    /// The controller's peak resident set over the run (VmHWM), in bytes.
    pub peak_rss: u64,
    /// The periodic scrapes of its `/metrics`: (answered, failed, largest body in bytes).
    pub scrapes: (u64, u64, u64),
    /// The idle period.
    pub idle: Duration,
    /// The controller's log lines at WARN or ERROR.
    pub warnings: Vec<String>,
    /// The Release whose versions were kept.
    pub traced: String,
    /// Its versions, as a watch saw them.
    pub trail: Vec<Version>,
    /// Every Release's status writes, as a watch saw them.
    pub status_writes: Vec<StatusWrite>,
    /// The API server's log lines about watches it closed because their client fell behind.
    pub slow_watchers: Vec<String>,
    /// From the bench's template change to the first status with canary weight, per Release.
    pub first_weight: Latencies,
    /// The controller's resident set during the idle phase: (time into it, bytes).
    pub idle_rss: Vec<(Duration, u64)>,
    /// How often the resident set was sampled in the idle phase and the canary hour.
    pub sample: Duration,
    /// The canary hour, when run.
    pub canary_hour: Option<CanaryHour>,
    /// The rollback wave.
    pub rollback: RollbackWave,
    /// Whether the API server served streaming lists (`--watch-list`).
    pub watch_list: bool,
}

/// Per-Release times from one event to another, sorted.
#[derive(Clone, Debug, Default)]
pub struct Latencies {
    /// The times measured, shortest first.
    sorted: Vec<Duration>,
    /// Releases with a start but no end seen.
    missing: usize,
}

/// The canary hour: rounds of canaries back to back, and the resident set across them.
pub struct CanaryHour {
    /// How long the bench started new rounds for (`--canary-hour`).
    pub duration: Duration,
    /// The rounds in order.
    pub rounds: Vec<Round>,
    /// The resident set every `--sample` across the phase: (time into it, bytes).
    pub rss: Vec<(Duration, u64)>,
    /// When the first round ended (time into the phase): the line is judged from there on.
    pub settled: Duration,
    /// When the first round ended after which every Release's history held its limit of
    /// entries (time into the phase), if one did: the line is judged again from there, since
    /// what grows before it is bounded state filling up, not a leak.
    pub history_full: Option<Duration>,
}

/// One round of the canary hour: a new revision to all N, until promoted and canaries gone.
pub struct Round {
    /// When the bench began shipping it.
    pub from: Timestamp,
    /// When every Release had promoted it and its canary was gone.
    pub to: Timestamp,
    /// From `from` to `to`.
    pub wall: Duration,
    /// Template change to the canary's first weight.
    pub first_weight: Latencies,
    /// The controller's requests in the round (audit log).
    pub controller: Counts,
    /// The controller's resident set when the round ended, in bytes.
    pub rss_at_end: u64,
}

/// The rollback wave: a fleet-wide deploy in which every K-th canary is bad.
pub enum RollbackWave {
    /// Not run (`--bad-every 0`, or no `prometheus`), and why.
    Skipped(String),
    /// Run.
    Measured(RollbackMeasured),
}

/// What the rollback wave measured.
pub struct RollbackMeasured {
    /// Every K-th Release was bad.
    pub bad_every: usize,
    /// How many were bad.
    pub bad: usize,
    /// The bad Releases' analysis interval.
    pub interval: Duration,
    /// Template change to the canary's first weight, over all N.
    pub first_weight: Latencies,
    /// For the bad Releases: the first failing analysis run (the controller's time in the
    /// status) to traffic back on the stable (the canary Deployment seen at 0 replicas or the
    /// phase seen RolledBack, whichever came first).
    pub restore: Latencies,
    /// Of the restores measured, those whose end was the canary Deployment seen at 0 (the
    /// others: phase RolledBack seen first).
    pub ended_by_scale: usize,
}

impl RollbackMeasured {
    /// The target for the p99 of [`RollbackMeasured::restore`]: one interval (the second
    /// failing run) plus 2 s.
    pub fn target(&self) -> Duration {
        self.interval + Duration::from_secs(2)
    }
}

impl Latencies {
    /// Each measured time; `None` for a Release whose start or end was not seen.
    pub fn of(times: impl Iterator<Item = Option<Duration>>) -> Latencies {
        let mut latencies = Latencies::default();
        for time in times {
            match time {
                Some(time) => latencies.sorted.push(time),
                None => latencies.missing += 1,
            }
        }
        latencies.sorted.sort();
        latencies
    }

    /// The time from each Release's start to its end (Releases without an end are counted
    /// as missing).
    pub fn between<'a>(
        starts: impl Iterator<Item = (&'a str, Timestamp)>,
        ends: &std::collections::HashMap<String, Timestamp>,
    ) -> Latencies {
        let mut latencies = Latencies::default();
        for (name, start) in starts {
            match ends.get(name) {
                Some(end) => latencies.sorted.push(Duration::from_secs_f64(
                    end.duration_since(start).as_secs_f64().max(0.0),
                )),
                None => latencies.missing += 1,
            }
        }
        latencies.sorted.sort();
        latencies
    }

    /// The `quantile` (0 to 1) by the nearest rank, or `None` without measurements.
    pub fn quantile(&self, quantile: f64) -> Option<Duration> {
        if self.sorted.is_empty() {
            return None;
        }
        let rank = (quantile * self.sorted.len() as f64).ceil() as usize;
        self.sorted
            .get(rank.clamp(1, self.sorted.len()) - 1)
            .copied()
    }

    /// How many Releases were measured.
    pub fn measured(&self) -> usize {
        self.sorted.len()
    }

    /// How many Releases had no measurement.
    pub fn missing(&self) -> usize {
        self.missing
    }

    fn json(&self) -> Value {
        json!({
            "p50": self.quantile(0.5).map(|d| d.as_secs_f64()),
            "p99": self.quantile(0.99).map(|d| d.as_secs_f64()),
            "max": self.sorted.last().map(|d| d.as_secs_f64()),
            "measured": self.sorted.len(),
            "missing": self.missing,
        })
    }

    fn text(&self, missing: &str) -> String {
        match (self.quantile(0.5), self.quantile(0.99), self.sorted.last()) {
            (Some(p50), Some(p99), Some(max)) => format!(
                "p50 {}, p99 {}, max {} ({} Releases{})",
                seconds(p50),
                seconds(p99),
                seconds(*max),
                self.sorted.len(),
                if self.missing > 0 {
                    format!(", {} {missing}", self.missing)
                } else {
                    String::new()
                }
            ),
            _ => "not measured".into(),
        }
    }
}

/// The targets of the requests per Release, by phase: a first release, and a canary of two
/// steps from its template change until the canary is gone (the canary wave and the clean-up).
const TARGETS: [(&str, &[&str], f64); 2] = [
    ("first release", &["first release"], 5.0),
    ("two-step canary", &["canary wave", "clean-up"], 12.0),
];

/// Phases whose requests are shown per Release; the others (start-up, restart, idle) in total.
fn per_release(phase: &PhaseResult) -> bool {
    !matches!(phase.name, "start-up" | "restart" | "idle")
}

fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

fn rate(count: u64, duration: Duration) -> f64 {
    count as f64 / duration.as_secs_f64().max(1e-9)
}

/// The results as Markdown tables.
pub fn table(report: &Report) -> String {
    let n = report.releases;
    let baseline = &report.baseline;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Waymark scale bench: N = {n} Releases (replica split, 2 replicas, setWeight 50 then a \
         10 s pause), kube-apiserver {}, controller pid {} (release build, as {}), bench \
         clients {} requests in flight. Every process shares the machine's cores: wall times \
         are noisy, request counts are not.",
        report.apiserver_version,
        report.controller_pid,
        controller_user(),
        report.concurrency
    );
    let _ = writeln!(
        out,
        "\nAPI server baseline: {n} Deployments + {n} Services created directly in {} = {:.0} \
         creates/s. Streaming lists (WatchList): {}.",
        seconds(baseline.elapsed),
        baseline.rate(),
        if report.watch_list {
            "served, the controller's watches stream"
        } else {
            "off (1.33's default), the controller's watches list then watch"
        }
    );

    let _ = writeln!(
        out,
        "\n| N | phase | wall | floor at baseline rate | wall / floor | controller's writes at \
         baseline rate | controller requests | per Release | per s | reconciles per Release | \
         reconcile errors | controller CPU | peak RSS |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for phase in &report.phases {
        let floor = phase.floor.map(|floor| floor.time(n, baseline));
        let floor_text = match (phase.floor, floor) {
            (Some(spec), Some(time)) if spec.wait > Duration::ZERO => format!(
                "{} ({:.0} writes/Release + {} pause)",
                seconds(time),
                spec.writes_per_release,
                seconds(spec.wait)
            ),
            (Some(spec), Some(time)) => {
                format!(
                    "{} ({:.0} writes/Release)",
                    seconds(time),
                    spec.writes_per_release
                )
            }
            _ => "-".into(),
        };
        let ratio = floor
            .map(|floor| format!("{:.2}", phase.wall.as_secs_f64() / floor.as_secs_f64()))
            .unwrap_or_else(|| "-".into());
        let writes = phase.controller.writes();
        let writes_time = if writes > 0 {
            format!(
                "{} ({writes} writes)",
                seconds(Duration::from_secs_f64(writes as f64 / baseline.rate()))
            )
        } else {
            "-".into()
        };
        let total = phase.controller.total();
        let _ = writeln!(
            out,
            "| {n} | {} | {} | {floor_text} | {ratio} | {writes_time} | {total} | {:.2} | {:.1} | \
             {:.2} | {} | {:.2} s | {} |",
            phase.name,
            seconds(phase.wall),
            total as f64 / n as f64,
            rate(total, phase.wall),
            phase.reconciles as f64 / n as f64,
            phase.reconcile_errors,
            phase.cpu.as_secs_f64(),
            mib(phase.peak_rss)
        );
    }
    let _ = writeln!(
        out,
        "\nController peak RSS over the run (VmHWM; with --restart, the larger of the two processes): {}.",
        mib(report.peak_rss)
    );
    let (answered, failed, largest) = report.scrapes;
    let _ = writeln!(
        out,
        "Its `/metrics` scraped every {:.0} s as a Prometheus would: {answered} scrapes answered, \
         {failed} failed, the largest {:.1} MB.",
        crate::controller::SCRAPE_EVERY.as_secs_f64(),
        largest as f64 / 1e6
    );

    let _ = writeln!(
        out,
        "\nThe controller's requests per Release, against the targets:\n| N | release's phase | \
         bench phases | requests per Release | of which writes | target |\n|---|---|---|---|---|---|"
    );
    for (name, phases, target) in TARGETS {
        let counted: Vec<&PhaseResult> = report
            .phases
            .iter()
            .filter(|phase| phases.contains(&phase.name))
            .collect();
        let total: u64 = counted.iter().map(|phase| phase.controller.total()).sum();
        let writes: u64 = counted.iter().map(|phase| phase.controller.writes()).sum();
        let _ = writeln!(
            out,
            "| {n} | {name} | {} | {:.2} | {:.2} | ≤ {target} |",
            phases.join(" + "),
            total as f64 / n as f64,
            writes as f64 / n as f64,
        );
    }
    let _ = writeln!(
        out,
        "\nFrom the template change (the bench's patch) to the first status with canary weight: \
         {}.",
        report.first_weight.text("never seen with weight")
    );
    let _ = writeln!(
        out,
        "\nResident set while idle, every {} (seconds into the idle phase, MiB): {}\n  {}",
        seconds(report.sample),
        rss_line(&report.idle_rss),
        flatness(&report.idle_rss, idle_settled(report)).text()
    );
    match &report.canary_hour {
        Some(hour) => canary_hour_text(&mut out, n, report.sample, hour),
        None => {
            let _ = writeln!(out, "\nCanary hour: not run (`--canary-hour 0`).");
        }
    }
    match &report.rollback {
        RollbackWave::Skipped(why) => {
            let _ = writeln!(out, "\nRollback wave: not run: {why}.");
        }
        RollbackWave::Measured(wave) => rollback_text(&mut out, n, wave),
    }

    // The controller's requests by kind, phase by phase.
    let kinds: BTreeSet<&Kind> = report
        .phases
        .iter()
        .flat_map(|phase| phase.controller.by_kind.keys())
        .collect();
    let _ = writeln!(
        out,
        "\nController requests by verb and resource (audit log, user {}; APPLY = server-side \
         apply, PATCH = other patches; WATCH counted when it starts). Per Release in the \
         phases with Releases moving, in total at start-up and idle:",
        controller_user()
    );
    let mut header = String::from("| request |");
    let mut rule = String::from("|---|");
    for phase in &report.phases {
        let unit = if per_release(phase) {
            "per Release".to_string()
        } else {
            format!("total, {}", seconds(phase.wall))
        };
        let _ = write!(header, " {} ({unit}) |", phase.name);
        rule.push_str("---|");
    }
    let _ = writeln!(out, "{header}\n{rule}");
    let cell = |phase: &PhaseResult, count: u64| -> String {
        if count == 0 {
            "".into()
        } else if per_release(phase) {
            format!("{:.2}", count as f64 / n as f64)
        } else {
            count.to_string()
        }
    };
    for kind in &kinds {
        let mut row = format!("| {kind} |");
        for phase in &report.phases {
            let count = phase.controller.by_kind.get(*kind).copied().unwrap_or(0);
            let _ = write!(row, " {} |", cell(phase, count));
        }
        let _ = writeln!(out, "{row}");
    }
    let refusals: BTreeSet<&(Kind, u16)> = report
        .phases
        .iter()
        .flat_map(|phase| phase.controller.refused.keys())
        .collect();
    for key in refusals {
        let mut row = format!("| of which {} answered {} |", key.0, key.1);
        for phase in &report.phases {
            let count = phase.controller.refused.get(key).copied().unwrap_or(0);
            let _ = write!(row, " {} |", cell(phase, count));
        }
        let _ = writeln!(out, "{row}");
    }
    let mut row = String::from("| all |");
    for phase in &report.phases {
        let _ = write!(row, " {} |", cell(phase, phase.controller.total()));
    }
    let _ = writeln!(out, "{row}");

    let _ = writeln!(
        out,
        "\nEvery client's requests other than WATCH (apiserver_request_total: the controller, \
         the bench's creators, watches and fake kubelet, kube-controller-manager, and the API \
         server's own IPAddress allocation for each new Service):"
    );
    let _ = writeln!(
        out,
        "| phase | requests | per s | the controller's | everyone else's |\n|---|---|---|---|---|"
    );
    for phase in &report.phases {
        let all = phase.all_clients.total() - watches(&phase.all_clients);
        let controller = phase.controller.total() - watches(&phase.controller);
        let _ = writeln!(
            out,
            "| {} | {all} | {:.1} | {controller} | {} |",
            phase.name,
            rate(all, phase.wall),
            all.saturating_sub(controller)
        );
    }

    let _ = writeln!(
        out,
        "\nStatus writes per Release by the reason written and the fields changed (every \
         Release, as the bench's watch saw them):"
    );
    for phase in report.phases.iter().filter(|phase| per_release(phase)) {
        let by_what = status_writes_between(&report.status_writes, phase);
        let total: u64 = by_what.values().sum();
        let _ = writeln!(
            out,
            "  {}: {:.2} per Release",
            phase.name,
            total as f64 / n as f64
        );
        let mut rows: Vec<(&str, u64)> = by_what.into_iter().collect();
        rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        for (what, count) in rows {
            let _ = writeln!(out, "    {:5.2}  {what}", count as f64 / n as f64);
        }
    }

    let _ = writeln!(
        out,
        "\nEvery version of Release {} as the bench's watch saw it (one line a write; seconds \
         from the start of the phase; [the status fields that write changed]):",
        report.traced
    );
    for phase in &report.phases {
        let versions: Vec<(usize, &Version)> = report
            .trail
            .iter()
            .enumerate()
            .filter(|(_, version)| version.at >= phase.from && version.at < phase.to)
            .collect();
        if versions.is_empty() {
            continue;
        }
        let _ = writeln!(out, "  {}:", phase.name);
        for (index, version) in versions {
            let offset = version.at.duration_since(phase.from).as_secs_f64();
            let changed = match index.checked_sub(1).map(|previous| &report.trail[previous]) {
                Some(previous) if previous.generation != version.generation => "spec".to_string(),
                Some(previous) => changed_fields(&previous.raw, &version.raw).join(", "),
                None => "created".to_string(),
            };
            let _ = writeln!(
                out,
                "    {offset:6.2}s gen {} [{changed}] {}",
                version.generation, version.status
            );
        }
    }
    let _ = writeln!(
        out,
        "\nWatches the API server closed because their client fell behind (any client): {}",
        report.slow_watchers.len()
    );
    for line in report.slow_watchers.iter().take(10) {
        let _ = writeln!(out, "    {line}");
    }
    if !report.warnings.is_empty() {
        let _ = writeln!(
            out,
            "\nThe controller logged {} warnings or errors; the first ones:",
            report.warnings.len()
        );
        for line in report.warnings.iter().take(10) {
            let _ = writeln!(out, "    {line}");
        }
    }
    out
}

/// The status writes seen during `phase`, counted by what they wrote.
fn status_writes_between<'a>(
    writes: &'a [StatusWrite],
    phase: &PhaseResult,
) -> BTreeMap<&'a str, u64> {
    let mut by_what = BTreeMap::new();
    for write in writes
        .iter()
        .filter(|write| write.at >= phase.from && write.at < phase.to)
    {
        *by_what.entry(write.what.as_str()).or_default() += 1;
    }
    by_what
}

/// The WATCH requests among `counts`.
fn watches(counts: &Counts) -> u64 {
    counts
        .by_kind
        .iter()
        .filter(|(kind, _)| kind.verb == "WATCH")
        .map(|(_, count)| count)
        .sum()
}

fn counts_json(counts: &Counts) -> Value {
    let by_kind: serde_json::Map<String, Value> = counts
        .by_kind
        .iter()
        .map(|(kind, count)| (kind.to_string(), json!(count)))
        .collect();
    let refused: serde_json::Map<String, Value> = counts
        .refused
        .iter()
        .map(|((kind, code), count)| (format!("{kind} {code}"), json!(count)))
        .collect();
    json!({"total": counts.total(), "writes": counts.writes(), "byKind": by_kind, "refused": refused})
}

/// The results as one JSON document.
pub fn json(report: &Report) -> Value {
    let n = report.releases;
    let phases: Vec<Value> = report
        .phases
        .iter()
        .map(|phase| {
            json!({
                "name": phase.name,
                "wallSeconds": phase.wall.as_secs_f64(),
                "floorSeconds": phase.floor.map(|floor| floor.time(n, &report.baseline).as_secs_f64()),
                "floorWritesPerRelease": phase.floor.map(|floor| floor.writes_per_release),
                "from": phase.from.to_string(),
                "to": phase.to.to_string(),
                "controller": counts_json(&phase.controller),
                "allClients": counts_json(&phase.all_clients),
                "reconciles": phase.reconciles,
                "reconcileErrors": phase.reconcile_errors,
                "peakRssBytes": phase.peak_rss,
                "controllerCpuSeconds": phase.cpu.as_secs_f64(),
                "statusWrites": status_writes_between(&report.status_writes, phase),
            })
        })
        .collect();
    json!({
        "releases": n,
        "apiserverVersion": report.apiserver_version,
        "controllerUser": controller_user(),
        "concurrency": report.concurrency,
        "baseline": {
            "creates": report.baseline.creates,
            "seconds": report.baseline.elapsed.as_secs_f64(),
            "createsPerSecond": report.baseline.rate(),
        },
        "idleSeconds": report.idle.as_secs_f64(),
        "peakRssBytes": report.peak_rss,
        "scrapes": {
            "everySeconds": crate::controller::SCRAPE_EVERY.as_secs_f64(),
            "answered": report.scrapes.0,
            "failed": report.scrapes.1,
            "largestBytes": report.scrapes.2,
        },
        "phases": phases,
        "controllerWarnings": report.warnings.len(),
        "slowWatchersClosed": report.slow_watchers.len(),
        "firstWeightSeconds": {
            "p50": report.first_weight.quantile(0.5).map(|d| d.as_secs_f64()),
            "p99": report.first_weight.quantile(0.99).map(|d| d.as_secs_f64()),
        },
        "rssSampleSeconds": report.sample.as_secs_f64(),
        "idleRss": rss_json(&report.idle_rss),
        "idleFlatness": flatness_json(&flatness(&report.idle_rss, idle_settled(report))),
        "canaryHour": report.canary_hour.as_ref().map(|hour| json!({
            "seconds": hour.duration.as_secs_f64(),
            "rounds": hour.rounds.iter().map(|round| json!({
                "from": round.from.to_string(),
                "to": round.to.to_string(),
                "wallSeconds": round.wall.as_secs_f64(),
                "firstWeightSeconds": round.first_weight.json(),
                "controller": counts_json(&round.controller),
                "requestsPerRelease": round.controller.total() as f64 / n as f64,
                "writesPerRelease": round.controller.writes() as f64 / n as f64,
                "rssBytesAtEnd": round.rss_at_end,
            })).collect::<Vec<_>>(),
            "rss": rss_json(&hour.rss),
            "settledSeconds": hour.settled.as_secs_f64(),
            "flatness": flatness_json(&flatness(&hour.rss, hour.settled)),
            "historyFullSeconds": hour.history_full.map(|at| at.as_secs_f64()),
            "flatnessOnceHistoryFull": hour
                .history_full
                .map(|at| flatness_json(&flatness(&hour.rss, at))),
        })),
        "rollbackWave": match &report.rollback {
            RollbackWave::Skipped(why) => json!({"skipped": why}),
            RollbackWave::Measured(wave) => json!({
                "badEvery": wave.bad_every,
                "bad": wave.bad,
                "intervalSeconds": wave.interval.as_secs_f64(),
                "firstWeightSeconds": wave.first_weight.json(),
                "restoreSeconds": wave.restore.json(),
                "restoreEndedByCanaryAtZero": wave.ended_by_scale,
                "restoreTargetP99Seconds": wave.target().as_secs_f64(),
                "restoreTargetMet": wave.restore.quantile(0.99).map(|p99| p99 <= wave.target()),
            }),
        },
        "traced": report.traced,
        "trail": report.trail.iter().map(|version| json!({
            "at": version.at.to_string(),
            "generation": version.generation,
            "status": version.status,
        })).collect::<Vec<_>>(),
    })
}

/// Where the idle line is judged from: one sample in, since the first sample is taken as the
/// phase before it ends (its last canaries just deleted, their events still arriving).
fn idle_settled(report: &Report) -> Duration {
    report.sample
}

/// `seconds MiB` pairs, one a sample.
fn rss_line(samples: &[(Duration, u64)]) -> String {
    let samples: Vec<String> = samples
        .iter()
        .map(|(at, bytes)| format!("{:.0}s {:.1}", at.as_secs_f64(), *bytes as f64 / 1048576.0))
        .collect();
    samples.join(", ")
}

fn rss_json(samples: &[(Duration, u64)]) -> Vec<Value> {
    samples
        .iter()
        .map(|(at, bytes)| json!([at.as_secs_f64(), bytes]))
        .collect()
}

fn flatness_json(flatness: &Flatness) -> Value {
    json!({
        "verdict": format!("{:?}", flatness.verdict),
        "samples": flatness.samples,
        "settledSeconds": flatness.settled.as_secs_f64(),
        "slopeMibPerHour": flatness.slope_mib_per_hour,
        "spreadMib": flatness.spread_mib,
        "maxSlopeMibPerHour": crate::judge::MAX_SLOPE_MIB_PER_HOUR,
        "maxSpreadMib": crate::judge::MAX_SPREAD_MIB,
    })
}

pub fn canary_hour_text(out: &mut String, n: usize, sample: Duration, hour: &CanaryHour) {
    let _ = writeln!(
        out,
        "\nCanary hour: {} rounds in {} (a new revision and roadmap item to all {n} each round, \
         the next once all promoted and their canaries are gone):\n| round | wall | first \
         weight p50 | p99 | controller requests per Release | of which writes | RSS at end |\n\
         |---|---|---|---|---|---|---|",
        hour.rounds.len(),
        seconds(hour.duration)
    );
    let mut total = 0;
    let mut writes = 0;
    for (index, round) in hour.rounds.iter().enumerate() {
        total += round.controller.total();
        writes += round.controller.writes();
        let quantile = |q: f64| {
            round
                .first_weight
                .quantile(q)
                .map_or_else(|| "-".to_string(), seconds)
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.2} | {:.2} | {} |",
            index + 1,
            seconds(round.wall),
            quantile(0.5),
            quantile(0.99),
            round.controller.total() as f64 / n as f64,
            round.controller.writes() as f64 / n as f64,
            mib(round.rss_at_end)
        );
    }
    let rounds = hour.rounds.len().max(1) as f64;
    let _ = writeln!(
        out,
        "Per Release per round, over all rounds: {:.2} requests, {:.2} writes.",
        total as f64 / n as f64 / rounds,
        writes as f64 / n as f64 / rounds
    );
    let _ = writeln!(
        out,
        "Resident set across the canary hour, every {} (seconds into the phase, MiB): {}\n  {}",
        seconds(sample),
        rss_line(&hour.rss),
        flatness(&hour.rss, hour.settled).text()
    );
    let _ = match hour.history_full {
        Some(at) => writeln!(
            out,
            "  Once every Release's history was full ({HISTORY_LIMIT} entries, {} into the \
             phase): {}",
            seconds(at),
            flatness(&hour.rss, at).text()
        ),
        None => writeln!(
            out,
            "  The histories were not all full ({HISTORY_LIMIT} entries) by the last round: \
             the line includes them filling up."
        ),
    };
}

fn rollback_text(out: &mut String, n: usize, wave: &RollbackMeasured) {
    let _ = writeln!(
        out,
        "\nRollback wave: a new template to all {n} at once; {} of them bad (every {}th: the \
         canary fails 5% of 50 requests/s against 99.9%, analysis every {}, failureLimit 2), \
         the others without analysis.",
        wave.bad,
        wave.bad_every,
        seconds(wave.interval)
    );
    let _ = writeln!(
        out,
        "  template change → canary's first weight, all {n}: {}",
        wave.first_weight.text("never seen with weight")
    );
    let verdict = match wave.restore.quantile(0.99) {
        Some(p99) if p99 <= wave.target() => "met",
        Some(_) => "MISSED",
        None => "not measured",
    };
    let _ = writeln!(
        out,
        "  first failing analysis run (the controller's time in the status, whole seconds, so up \
         to 1 s long) → traffic back on the stable (canary Deployment seen at 0 or phase \
         RolledBack, whichever first), the {} bad: {}; target p99 ≤ interval + 2 s = {}: \
         {verdict}. Ended by the canary seen at 0: {}, by the phase: {}.",
        wave.bad,
        wave.restore
            .text("without a failing run or a rollback seen"),
        seconds(wave.target()),
        wave.ended_by_scale,
        wave.restore.measured().saturating_sub(wave.ended_by_scale)
    );
}
