//! The scale bench: N Releases on a real control plane, the controller as a separate process of
//! the release build, and what it costs the API server.
//!
//! ```sh
//! KUBEBUILDER_ASSETS=<dir with etcd, kube-apiserver, kube-controller-manager> \
//!     cargo bench --bench scale -- --releases 200 [--idle 60s] [--sample 10s] \
//!     [--canary-hour 0s] [--bad-every 20] [--json]
//! ```
//!
//! An hour-long run, as issue 23 asks (RSS every minute over an hour of canaries and an hour
//! of idle): `--releases 1000 --canary-hour 1h --idle 1h --sample 60s`. A quick one:
//! `--releases 50 --canary-hour 3m --idle 60s --sample 20s --bad-every 10`.
//!
//! `cargo bench` builds the `waymark` binary with the bench profile (release) and runs it as
//! `waymark controller`, authenticated as the `waymark-controller` ServiceAccount with the RBAC
//! of `config/rbac/` (or the binary `WAYMARK_SCALE_CONTROLLER` names: the image's static musl
//! build, to measure the allocator the image ships with). The bench then:
//! 1. measures the API server's own rate: N Deployments and N Services shaped like Waymark's
//!    children, created directly (bounded concurrency), in creates per second;
//! 2. creates N replica-split Releases (`setWeight 50`, then a 10 s pause; 2 replicas) and
//!    waits until all are Healthy (`StableAvailable`), while a fake kubelet marks their
//!    Deployments available;
//! 3. ships a new image and roadmap item to all N and waits until each has promoted (its
//!    stable revision is the new one, phase Healthy), then until the canaries are removed
//!    (`scaleDownDelay`, 30 s by default);
//! 4. with `--restart`: stops the controller and starts a new process over the N Releases,
//!    measured until it reconciled each once (what its start-up lists, or streams with
//!    `--watch-list`, and holds);
//! 5. with `--canary-hour D`: rounds of canaries back to back for D, each a new revision (an
//!    environment variable's value) and roadmap item to all N, the next once every Release
//!    promoted it and its canary is gone; the controller's resident set every `--sample`;
//! 6. waits an idle period (`--idle`, 60 s) in which nothing changes, the resident set every
//!    `--sample`;
//! 7. with `--bad-every K` (20 by default, 0 skips it; needs `prometheus`, else skipped with
//!    a note): the rollback wave. The tests' request counters and a real Prometheus (from
//!    `tests/common/`) serve 50 requests/s for `<name>-stable` without errors and for
//!    `<name>-canary` with 5% errors for every K-th Release, which gets an analysis (every
//!    10 s, burn windows 20 s and 10 s at most 14.4, failureLimit 2) by a spec patch; once
//!    Prometheus holds a full 20 s window, a new template goes to all N at once, until the
//!    good ones promoted and the bad ones are RolledBack.
//!
//! For each phase it reports the wall time, the time the API server would need for the
//! writes the phase needs at the measured baseline rate, the controller's own requests per
//! Release by verb and resource (from the API server's audit log, which records the
//! controller's ServiceAccount only), every client's requests (the API server's
//! `apiserver_request_total`), the controller's reconciles, and its peak resident memory.
//! Reaction times: template change → the canary's first weight (p50, p99) in the canary wave,
//! each canary-hour round and the rollback wave; in the rollback wave, for the bad ones, the
//! first failing analysis run (the controller's time in the status) → traffic back on the
//! stable (the bench's watch sees the canary Deployment at 0 replicas or phase RolledBack),
//! against the target p99 ≤ interval + 2 s. Resident-set lines (idle, canary hour) get a
//! verdict: flat only with a least-squares slope under 2 MiB/h and no sample more than 2 MiB
//! above the first settled one (idle: from its second sample, the first being taken as the
//! phase before it ends; canary hour: from the end of round 1, and again from the end of the
//! first round after which every Release's history holds its limit of entries, since the line
//! rises while the histories fill and only growth beyond that is a leak).
//!
//! Not part of `cargo test` as a bench: without cargo bench's `--bench` flag it runs only its
//! unit tests (`scale/checks.rs`, through libtest-mimic), so `cargo test --bench scale` checks
//! what it judges without starting a control plane.
//!
//! Everything shares the machine's cores (the control plane, the bench's clients, the
//! controller, and whatever else runs), so wall times are noisy; request counts are not.

#[allow(dead_code)] // shared with the e2e suite, which uses all of it
#[path = "../e2e/control_plane.rs"]
mod control_plane;

#[path = "scale/deployment_status.rs"]
mod deployment_status;
#[path = "../e2e/prepare.rs"]
mod prepare;

#[allow(dead_code)] // shared with the tests, which use all of it
#[path = "scale/common.rs"]
mod common;

#[path = "scale/checks.rs"]
mod checks;
#[path = "scale/cluster.rs"]
mod cluster;
#[path = "scale/controller.rs"]
mod controller;
#[path = "scale/judge.rs"]
mod judge;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/requests.rs"]
mod requests;
#[path = "scale/workload.rs"]
mod workload;

use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::jiff::Timestamp;
use kube::Client;

use waymark::api::Phase;
use waymark::rollout::history::HISTORY_LIMIT;

use cluster::Cluster;
use controller::Controller;
use report::{
    CanaryHour, Floor, Latencies, PhaseResult, Report, RollbackMeasured, RollbackWave, Round,
};
use requests::Counts;
use workload::{Kubelet, Releases};

/// Namespace of the baseline's Deployments and Services.
const BASELINE_NAMESPACE: &str = "scale-baseline";
/// Namespace of the Releases.
const RELEASE_NAMESPACE: &str = "scale-releases";
/// Writes a first release needs at the least: the stable Deployment, Service `<name>` (the
/// only one in replica-split mode), and one status write (Healthy).
const FIRST_RELEASE_WRITES: f64 = 3.0;
/// Writes a replica-split canary of 2 pods with `setWeight 50` and a pause needs at the least
/// up to its promotion: create the canary, scale the stable down, give the stable the new
/// template and scale the stable up (4), and a status write for each of canary started,
/// paused, promoting and promoted (4). The promoted canary runs the stable's revision, so it
/// is not scaled down first: it is deleted after `scaleDownDelay`, in the clean-up phase.
const CANARY_WRITES: f64 = 8.0;
/// The pause step of every Release.
const PAUSE: Duration = Duration::from_secs(10);
/// How long the rollback wave waits for Prometheus to hold a full 20 s window of the bad
/// Releases' request counters.
const WINDOW_DEADLINE: Duration = Duration::from_secs(90);
/// How often a wait looks at the Releases.
const POLL: Duration = Duration::from_millis(200);
/// How often a wait says how far it is.
const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// Flags after `cargo bench --bench scale --`.
#[derive(Parser, Debug)]
#[command(
    name = "scale",
    about = "Waymark's scale bench on a real control plane"
)]
struct Args {
    /// How many Releases.
    #[arg(long, env = "WAYMARK_SCALE_RELEASES", default_value_t = 50)]
    releases: usize,
    /// The idle period after the canaries are gone, in which nothing changes.
    #[arg(long, env = "WAYMARK_SCALE_IDLE", default_value = "60s")]
    idle: waymark::api::Duration,
    /// How often the controller's resident set is sampled in the idle phase and the canary
    /// hour (use 60s for hour-long runs).
    #[arg(long, default_value = "10s")]
    sample: waymark::api::Duration,
    /// After the clean-up: rounds of canaries back to back for this long (a new revision to
    /// all N, wait until promoted and the canaries gone, again). 0 skips the phase.
    #[arg(long, default_value = "0s")]
    canary_hour: waymark::api::Duration,
    /// After the idle phase: a rollback wave in which every K-th Release's canary burns its
    /// error budget (needs `prometheus`). 0 skips the phase.
    #[arg(long, default_value_t = 20)]
    bad_every: usize,
    /// Requests the bench keeps in flight when it creates or patches objects.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Longest wait for any one phase (default: 3 minutes plus 300 ms per Release).
    #[arg(long)]
    deadline: Option<waymark::api::Duration>,
    /// Turn on the API server's streaming lists (the `WatchList` feature gate, off by default
    /// in Kubernetes 1.33), which the controller's watches use where they are served.
    #[arg(long, env = "WAYMARK_SCALE_WATCH_LIST")]
    watch_list: bool,
    /// After the clean-up: stop the controller and start a new process over the N Releases
    /// that exist (an upgrade, a lost node), measured until it reconciled each once: its
    /// start-up lists (or, with `--watch-list`, streams) everything it caches.
    #[arg(long)]
    restart: bool,
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Set by `cargo bench`; without it the bench does not run (so `cargo test --benches`
    /// does not start a control plane) and its pure checks run instead.
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    // `cargo test --bench scale` (or `--benches`) runs the binary without cargo bench's
    // `--bench` flag, and perhaps with the test harness's own flags: the pure checks only.
    if !std::env::args().skip(1).any(|arg| arg == "--bench") {
        eprintln!(
            "scale: the bench not run (it starts a control plane and takes minutes): \
             `cargo bench --bench scale -- --releases N`; its pure checks:"
        );
        return checks::run();
    }
    let args = Args::parse();
    if args.sample.as_secs_f64() < 1.0 {
        eprintln!("scale: --sample must be at least 1s");
        return ExitCode::FAILURE;
    }
    if args.releases == 0 || args.concurrency == 0 {
        eprintln!("scale: --releases and --concurrency must be at least 1");
        return ExitCode::FAILURE;
    }
    // Before any runtime: the harness blocks on one of its own while it waits for /readyz.
    let cluster = match Cluster::start(args.watch_list) {
        Ok(cluster) => cluster,
        Err(error) => {
            eprintln!("scale: {error}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("scale: cannot build a tokio runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    // The bench future runs on this (the main) thread, so the controller it starts dies with
    // it (PR_SET_PDEATHSIG) if the bench is killed.
    let outcome = runtime.block_on(run(&args, &cluster));
    // The watches and the fake kubelet end with the runtime, before the control plane stops.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let code = match outcome {
        Ok(report) => {
            let table = report::table(&report);
            if args.json {
                eprintln!("{table}");
                println!("{}", report::json(&report));
            } else {
                println!("{table}");
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("scale: {error}");
            ExitCode::FAILURE
        }
    };
    drop(cluster);
    code
}

async fn run(args: &Args, cluster: &Cluster) -> Result<Report, String> {
    let n = args.releases;
    let deadline = args.deadline.as_ref().map_or_else(
        || Duration::from_secs(180) + Duration::from_millis(300) * n as u32,
        |deadline| Duration::from_secs_f64(deadline.as_secs_f64()),
    );
    let admin = cluster.prepare().await?;
    let version = admin
        .apiserver_version()
        .await
        .map_err(|error| format!("cannot read the API server's version: {error}"))?;
    cluster::create_namespace(&admin, BASELINE_NAMESPACE).await?;
    cluster::create_namespace(&admin, RELEASE_NAMESPACE).await?;

    eprintln!(
        "scale: baseline: {n} Deployments and {n} Services, {} at a time",
        args.concurrency
    );
    let baseline = workload::baseline(&admin, BASELINE_NAMESPACE, n, args.concurrency).await?;
    eprintln!(
        "scale: baseline: {} creates in {:.1}s = {:.0} creates/s",
        baseline.creates,
        baseline.elapsed.as_secs_f64(),
        baseline.rate()
    );

    let releases = Releases::watch(&admin, RELEASE_NAMESPACE, &workload::release_name(0));
    let kubelet = Kubelet::start(&admin, RELEASE_NAMESPACE);
    let kubeconfig = cluster.controller_kubeconfig(&admin).await?;
    let log = cluster.dir.path().join("controller.log");

    let mut run = Run {
        admin: admin.clone(),
        n,
        deadline,
        phases: Vec::new(),
        rounds_shipped: 0,
    };

    // Start-up: the controller lists and watches what it caches.
    let mark = run.mark(None).await?;
    let started = Instant::now();
    let mut controller = Controller::start(&kubeconfig, &log).await?;
    eprintln!(
        "scale: controller pid {} ready in {:.1}s",
        controller.pid(),
        started.elapsed().as_secs_f64()
    );
    run.finish("start-up", None, mark, &controller).await?;

    // First release: create N Releases, wait until every one is Healthy.
    let mark = run.mark(Some(&controller)).await?;
    workload::create_releases(&admin, RELEASE_NAMESPACE, n, args.concurrency).await?;
    run.wait(&mut controller, "first release: Healthy", || {
        releases.count(|_, seen| {
            seen.phase == Some(Phase::Healthy) && seen.reason.as_deref() == Some("StableAvailable")
        })
    })
    .await?;
    let floor = Floor::writes(FIRST_RELEASE_WRITES, Duration::ZERO);
    run.finish("first release", Some(floor), mark, &controller)
        .await?;

    // Canary wave: a new template for all N, wait until every one has promoted.
    let mark = run.mark(Some(&controller)).await?;
    let wave_from = Timestamp::now();
    let shipped = workload::ship(&admin, RELEASE_NAMESPACE, n, args.concurrency, 0).await?;
    run.wait(&mut controller, "canary wave: promoted", || {
        releases.count(|name, seen| {
            seen.phase == Some(Phase::Healthy)
                && seen.stable_revision.is_some()
                && seen.stable_revision.as_ref() == shipped.get(name).map(|s| &s.revision)
        })
    })
    .await?;
    let first_weight = report::Latencies::between(
        shipped
            .iter()
            .map(|(name, shipped)| (name.as_str(), shipped.at)),
        &releases.first_weights_since(wave_from),
    );
    let floor = Floor::writes(CANARY_WRITES, PAUSE);
    run.finish("canary wave", Some(floor), mark, &controller)
        .await?;

    // Clean-up: the canaries go after scaleDownDelay.
    let mark = run.mark(Some(&controller)).await?;
    run.wait(&mut controller, "clean-up: canaries removed", || {
        let left = kubelet.canaries();
        (
            n.saturating_sub(left),
            [("canary Deployments left".to_string(), left)].into(),
        )
    })
    .await?;
    run.finish("clean-up", None, mark, &controller).await?;

    // Warnings, peak RSS and scrapes of the controller stopped before the end, for the report.
    let mut earlier_warnings = Vec::new();
    let (mut earlier_peak, mut earlier_scrapes) = (0, (0, 0, 0));
    if args.restart {
        earlier_warnings = controller.warnings();
        earlier_peak = controller.memory().high_water_mark();
        earlier_scrapes = scrape_counts(&controller);
        // The new process's counters start at zero: a mark without a controller.
        let mark = run.mark(None).await?;
        let started = Instant::now();
        // Stop it (SIGTERM, its shutdown grace) off the runtime's workers.
        tokio::task::block_in_place(|| drop(controller));
        let log = cluster.dir.path().join("controller-restarted.log");
        controller = Controller::start(&kubeconfig, &log).await?;
        eprintln!(
            "scale: restart: controller pid {} ready in {:.1}s (the old one stopped)",
            controller.pid(),
            started.elapsed().as_secs_f64()
        );
        run.wait_reconciled(&mut controller, "restart: every Release reconciled once")
            .await?;
        run.finish("restart", None, mark, &controller).await?;
    }

    let sample = Duration::from_secs_f64(args.sample.as_secs_f64());
    let canary_hour = Duration::from_secs_f64(args.canary_hour.as_secs_f64());
    let mut hour = None;
    if !canary_hour.is_zero() {
        hour = Some(
            run.canary_hour(
                &mut controller,
                &releases,
                &kubelet,
                canary_hour,
                sample,
                args.concurrency,
            )
            .await?,
        );
    }

    // Idle: nothing changes.
    let idle = Duration::from_secs_f64(args.idle.as_secs_f64());
    eprintln!("scale: idle for {idle:?}");
    let mark = run.mark(Some(&controller)).await?;
    // The resident set every --sample: a line that grows while nothing changes is a leak.
    let line = controller.sample_rss(sample);
    while line.started().elapsed() < idle {
        tokio::time::sleep(POLL.min(idle.saturating_sub(line.started().elapsed()))).await;
        controller.check_running()?;
    }
    let idle_rss = line.stop();
    run.finish("idle", None, mark, &controller).await?;

    let rollback = if args.bad_every == 0 {
        RollbackWave::Skipped("`--bad-every 0`".into())
    } else {
        run.rollback_wave(
            &mut controller,
            &releases,
            &kubelet,
            args.bad_every,
            args.concurrency,
        )
        .await?
    };

    let peak_rss = controller.memory().high_water_mark().max(earlier_peak);
    let scrapes = scrape_counts(&controller);
    let scrapes = (
        scrapes.0 + earlier_scrapes.0,
        scrapes.1 + earlier_scrapes.1,
        scrapes.2.max(earlier_scrapes.2),
    );
    earlier_warnings.extend(controller.warnings());
    let warnings = earlier_warnings;
    let pid = controller.pid();
    // Stop it (SIGTERM, its shutdown grace) off the runtime's workers.
    tokio::task::block_in_place(|| drop(controller));

    // The API server closes a watch whose client does not keep up with its events.
    let slow_watchers = cluster
        .plane
        .log_tail("kube-apiserver", usize::MAX)
        .lines()
        .filter(|line| line.contains("Forcing") && line.contains("watcher close"))
        .map(str::to_string)
        .collect();

    // Now the audit log is complete: the controller's requests, by phase.
    let audited = requests::read_audit_log(&cluster.audit_log, &prepare::controller_user())?;
    for phase in &mut run.phases {
        phase.controller = requests::count_between(&audited, phase.from, phase.to);
    }
    if let Some(hour) = &mut hour {
        for round in &mut hour.rounds {
            round.controller = requests::count_between(&audited, round.from, round.to);
        }
    }
    Ok(Report {
        releases: n,
        apiserver_version: version.git_version,
        controller_pid: pid,
        concurrency: args.concurrency,
        baseline,
        phases: run.phases,
        peak_rss,
        scrapes,
        idle,
        warnings,
        traced: workload::release_name(0),
        trail: releases.trail(),
        status_writes: releases.status_writes(),
        slow_watchers,
        first_weight,
        idle_rss,
        sample,
        canary_hour: hour,
        rollback,
        watch_list: args.watch_list,
    })
}

/// The controller's periodic scrapes so far: (answered, failed, largest body in bytes).
fn scrape_counts(controller: &Controller) -> (u64, u64, u64) {
    let scrapes = controller.scrapes();
    (
        scrapes.answered.load(Ordering::Relaxed),
        scrapes.failed.load(Ordering::Relaxed),
        scrapes.largest.load(Ordering::Relaxed),
    )
}

/// The phases measured so far and what a phase needs to be measured.
struct Run {
    admin: Client,
    n: usize,
    deadline: Duration,
    phases: Vec<PhaseResult>,
    /// Versions shipped after the canary wave (round 0), each a new revision and roadmap item.
    rounds_shipped: u32,
}

/// Where a phase started.
struct Mark {
    from: Timestamp,
    started: Instant,
    apiserver: Counts,
    reconciles: (u64, u64),
    cpu: Duration,
}

impl Run {
    /// Start a phase: the clock, the API server's counters and the controller's.
    async fn mark(&self, controller: Option<&Controller>) -> Result<Mark, String> {
        if let Some(controller) = controller {
            controller.memory().take_peak();
        }
        let reconciles = match controller {
            Some(controller) => controller.reconciles().await?,
            None => (0, 0),
        };
        Ok(Mark {
            apiserver: apiserver_counts(&self.admin).await?,
            reconciles,
            cpu: controller.map_or(Duration::ZERO, Controller::cpu_time),
            from: Timestamp::now(),
            started: Instant::now(),
        })
    }

    /// End the phase begun at `mark`.
    async fn finish(
        &mut self,
        name: &'static str,
        floor: Option<Floor>,
        mark: Mark,
        controller: &Controller,
    ) -> Result<(), String> {
        let wall = mark.started.elapsed();
        let to = Timestamp::now();
        let peak_rss = controller.memory().take_peak();
        let cpu = controller.cpu_time().saturating_sub(mark.cpu);
        let reconciles = controller.reconciles().await?;
        let apiserver = apiserver_counts(&self.admin).await?;
        eprintln!(
            "scale: {name}: {:.1}s, {} reconciles",
            wall.as_secs_f64(),
            reconciles.0.saturating_sub(mark.reconciles.0)
        );
        self.phases.push(PhaseResult {
            name,
            wall,
            floor,
            from: mark.from,
            to,
            all_clients: mark.apiserver.delta(&apiserver),
            controller: Counts::default(),
            reconciles: reconciles.0.saturating_sub(mark.reconciles.0),
            reconcile_errors: reconciles.1.saturating_sub(mark.reconciles.1),
            peak_rss,
            cpu,
        });
        Ok(())
    }

    /// The canary hour: rounds of a new revision to all N, each until every Release promoted
    /// it and its canary is gone, started until `duration` has passed; the resident set every
    /// `sample` across it.
    async fn canary_hour(
        &mut self,
        controller: &mut Controller,
        releases: &Releases,
        kubelet: &Kubelet,
        duration: Duration,
        sample: Duration,
        concurrency: usize,
    ) -> Result<CanaryHour, String> {
        eprintln!("scale: canary hour: rounds for {duration:?}");
        let mark = self.mark(Some(controller)).await?;
        let line = controller.sample_rss(sample);
        let mut rounds = Vec::new();
        let mut settled = None;
        let mut history_full = None;
        while line.started().elapsed() < duration {
            self.rounds_shipped += 1;
            let number = self.rounds_shipped;
            let (from, started) = (Timestamp::now(), Instant::now());
            let shipped =
                workload::ship(&self.admin, RELEASE_NAMESPACE, self.n, concurrency, number).await?;
            let what = format!("canary hour, round {number}: promoted, canaries removed");
            self.wait(controller, &what, || {
                let (promoted, mut others) = releases.count(|name, seen| {
                    seen.phase == Some(Phase::Healthy)
                        && seen.stable_revision.is_some()
                        && seen.stable_revision.as_ref() == shipped.get(name).map(|s| &s.revision)
                });
                let left = kubelet.canaries();
                if left > 0 {
                    others.insert("canary Deployments left".into(), left);
                }
                (promoted.min(self.n.saturating_sub(left)), others)
            })
            .await?;
            let first_weight = Latencies::between(
                shipped
                    .iter()
                    .map(|(name, shipped)| (name.as_str(), shipped.at)),
                &releases.first_weights_since(from),
            );
            rounds.push(Round {
                from,
                to: Timestamp::now(),
                wall: started.elapsed(),
                first_weight,
                controller: Counts::default(),
                rss_at_end: controller.memory().current(),
            });
            settled.get_or_insert(line.started().elapsed());
            if history_full.is_none() {
                let (full, _) = releases.count(|_, seen| seen.history_len() >= HISTORY_LIMIT);
                if full == self.n {
                    history_full = Some(line.started().elapsed());
                }
            }
            eprintln!(
                "scale: canary hour: round {number} in {:.1}s",
                started.elapsed().as_secs_f64()
            );
        }
        let rss = line.stop();
        self.finish("canary hour", None, mark, controller).await?;
        Ok(CanaryHour {
            duration,
            rounds,
            rss,
            settled: settled.unwrap_or_default(),
            history_full,
        })
    }

    /// The rollback wave: every `bad_every`-th Release gets an analysis against a canary that
    /// burns its error budget, then a new template goes to all N at once; measured until the
    /// good ones promoted and the bad ones rolled back.
    async fn rollback_wave(
        &mut self,
        controller: &mut Controller,
        releases: &Releases,
        kubelet: &Kubelet,
        bad_every: usize,
        concurrency: usize,
    ) -> Result<RollbackWave, String> {
        let bad: Vec<String> = (0..self.n)
            .filter(|index| (index + 1) % bad_every == 0)
            .map(workload::release_name)
            .collect();
        let metrics = common::prometheus::MetricsServer::start()
            .await
            .map_err(|error| format!("rollback wave: cannot serve request counters: {error}"))?;
        for name in &bad {
            // 50 requests/s each; the canary fails 5%: a burn rate of 50 against 99.9%, far
            // over the limit of 14.4. The stable fails none.
            metrics.set_traffic(RELEASE_NAMESPACE, &format!("{name}-canary"), 50.0, 0.05);
            metrics.set_traffic(RELEASE_NAMESPACE, &format!("{name}-stable"), 50.0, 0.0);
        }
        let Some(prometheus) = common::prometheus::Prometheus::start(&[metrics.address()]).await
        else {
            return Ok(RollbackWave::Skipped(
                "no `prometheus` on PATH (nor WAYMARK_PROMETHEUS); install Debian's \
                 `prometheus` package"
                    .into(),
            ));
        };
        let interval: waymark::api::Duration = workload::ANALYSIS_INTERVAL
            .parse()
            .map_err(|error| format!("the bench's analysis interval: {error}"))?;
        let interval = Duration::from_secs_f64(interval.as_secs_f64());

        // The analysis, and a full window in Prometheus before the canaries start.
        eprintln!(
            "scale: rollback wave: {} bad Releases get an analysis",
            bad.len()
        );
        let mark = self.mark(Some(controller)).await?;
        workload::add_analysis(
            &self.admin,
            RELEASE_NAMESPACE,
            &bad,
            prometheus.address(),
            concurrency,
        )
        .await?;
        prometheus
            .wait_for_window(
                &format!(r#"http_requests_total{{namespace="{RELEASE_NAMESPACE}"}}"#),
                Duration::from_secs(20),
                WINDOW_DEADLINE,
            )
            .await
            .map_err(|error| format!("rollback wave: Prometheus holds no 20s window: {error}"))?;
        controller.check_running()?;
        self.finish("analysis added", None, mark, controller)
            .await?;

        // A new template to all N at once.
        let mark = self.mark(Some(controller)).await?;
        let from = Timestamp::now();
        self.rounds_shipped += 1;
        let round = self.rounds_shipped;
        let shipped =
            workload::ship(&self.admin, RELEASE_NAMESPACE, self.n, concurrency, round).await?;
        let is_bad: std::collections::HashSet<&str> = bad.iter().map(String::as_str).collect();
        self.wait(
            controller,
            "rollback wave: good ones promoted, bad ones RolledBack",
            || {
                releases.count(|name, seen| {
                    if is_bad.contains(name) {
                        seen.phase == Some(Phase::RolledBack)
                    } else {
                        seen.phase == Some(Phase::Healthy)
                            && seen.stable_revision.is_some()
                            && seen.stable_revision.as_ref()
                                == shipped.get(name).map(|s| &s.revision)
                    }
                })
            },
        )
        .await?;
        self.finish("rollback wave", None, mark, controller).await?;

        let first_weight = Latencies::between(
            shipped
                .iter()
                .map(|(name, shipped)| (name.as_str(), shipped.at)),
            &releases.first_weights_since(from),
        );
        let (emptied, rolled_back) = (
            kubelet.canaries_emptied_since(from),
            releases.rolled_back_since(from),
        );
        let mut ended_by_scale = 0;
        let restore = Latencies::of(bad.iter().map(|name| {
            let revision = &shipped.get(name)?.revision;
            let failed = judge::first_failing_run(&releases.status_of(name)?, revision)?;
            let back = match (emptied.get(name), rolled_back.get(name)) {
                (Some(scaled), Some(phase)) if phase < scaled => *phase,
                (Some(scaled), _) => {
                    ended_by_scale += 1;
                    *scaled
                }
                (None, phase) => *phase?,
            };
            Some(Duration::from_secs_f64(
                back.duration_since(failed).as_secs_f64().max(0.0),
            ))
        }));
        drop(prometheus);
        drop(metrics);
        Ok(RollbackWave::Measured(RollbackMeasured {
            bad_every,
            bad: bad.len(),
            interval,
            first_weight,
            restore,
            ended_by_scale,
        }))
    }

    /// Wait until `progress` counts all N Releases done, or fail after the deadline with what
    /// it saw last. `progress` returns the number done and the others by state.
    /// Wait until the controller has reconciled at least N times since it started (each
    /// Release once, at the least: its start-up reconciles every Release it lists).
    async fn wait_reconciled(&self, controller: &mut Controller, what: &str) -> Result<(), String> {
        let started = Instant::now();
        let mut said = Instant::now();
        loop {
            let (reconciles, _) = controller.reconciles().await?;
            if reconciles >= self.n as u64 {
                return Ok(());
            }
            controller.check_running()?;
            if started.elapsed() > self.deadline {
                return Err(format!(
                    "{what}: {reconciles}/{} reconciles after {:?}; the controller's last log \
                     lines:\n{}",
                    self.n,
                    self.deadline,
                    controller.log_tail(20)
                ));
            }
            if said.elapsed() >= PROGRESS_EVERY {
                eprintln!(
                    "scale: {what}: {reconciles}/{} after {:.0}s",
                    self.n,
                    started.elapsed().as_secs_f64()
                );
                said = Instant::now();
            }
            // Each look is a scrape of every series: not every POLL.
            tokio::time::sleep(PROGRESS_EVERY / 5).await;
        }
    }

    async fn wait(
        &self,
        controller: &mut Controller,
        what: &str,
        progress: impl Fn() -> (usize, std::collections::BTreeMap<String, usize>),
    ) -> Result<(), String> {
        let started = Instant::now();
        let mut said = Instant::now();
        loop {
            let (done, others) = progress();
            if done >= self.n {
                return Ok(());
            }
            controller.check_running()?;
            let describe = || {
                let others: Vec<String> = others
                    .iter()
                    .map(|(state, count)| format!("{count} {state}"))
                    .collect();
                format!("{done}/{} ({})", self.n, others.join(", "))
            };
            if started.elapsed() > self.deadline {
                return Err(format!(
                    "{what}: not done after {:?}: {}; the controller's last log lines:\n{}",
                    self.deadline,
                    describe(),
                    controller.log_tail(20)
                ));
            }
            if said.elapsed() >= PROGRESS_EVERY {
                eprintln!(
                    "scale: {what}: {} after {:.0}s",
                    describe(),
                    started.elapsed().as_secs_f64()
                );
                said = Instant::now();
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

/// The API server's `apiserver_request_total`, every client's requests so far.
async fn apiserver_counts(admin: &Client) -> Result<Counts, String> {
    let request = http::Request::get("/metrics")
        .body(Vec::new())
        .map_err(|error| error.to_string())?;
    let text = admin
        .request_text(request)
        .await
        .map_err(|error| format!("cannot read the API server's /metrics: {error}"))?;
    Ok(requests::parse_apiserver_metrics(&text))
}
