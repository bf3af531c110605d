//! The scale bench: N Releases on a real control plane, the controller as a separate process of
//! the release build, and what it costs the API server.
//!
//! ```sh
//! KUBEBUILDER_ASSETS=<dir with etcd, kube-apiserver, kube-controller-manager> \
//!     cargo bench --bench scale -- --releases 200 [--idle 60s] [--json]
//! ```
//!
//! `cargo bench` builds the `waymark` binary with the bench profile (release) and runs it as
//! `waymark controller`, authenticated as the `waymark-controller` ServiceAccount with the RBAC
//! of `config/rbac/`. The bench then:
//! 1. measures the API server's own rate: N Deployments and N Services shaped like Waymark's
//!    children, created directly (bounded concurrency), in creates per second;
//! 2. creates N replica-split Releases (`setWeight 50`, then a 10 s pause; 2 replicas) and
//!    waits until all are Healthy (`StableAvailable`), while a fake kubelet marks their
//!    Deployments available;
//! 3. ships a new image and roadmap item to all N and waits until each has promoted (its
//!    stable revision is the new one, phase Healthy), then until the canaries are removed
//!    (`scaleDownDelay`, 30 s by default);
//! 4. waits an idle period (`--idle`, 60 s) in which nothing changes.
//!
//! For each phase it reports the wall time, the time the API server would need for the
//! writes the phase needs at the measured baseline rate, the controller's own requests per
//! Release by verb and resource (from the API server's audit log, which records the
//! controller's ServiceAccount only), every client's requests (the API server's
//! `apiserver_request_total`), the controller's reconciles, and its peak resident memory.
//!
//! Not part of `cargo test`: without cargo bench's `--bench` flag it only says how to run it.
//! Everything shares the machine's cores (the control plane, the bench's clients, the
//! controller, and whatever else runs), so wall times are noisy; request counts are not.

#[allow(dead_code)] // shared with the e2e suite, which uses all of it
#[path = "../e2e/control_plane.rs"]
mod control_plane;

#[path = "scale/deployment_status.rs"]
mod deployment_status;
#[path = "../e2e/prepare.rs"]
mod prepare;

#[path = "scale/cluster.rs"]
mod cluster;
#[path = "scale/controller.rs"]
mod controller;
#[path = "scale/report.rs"]
mod report;
#[path = "scale/requests.rs"]
mod requests;
#[path = "scale/workload.rs"]
mod workload;

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use k8s_openapi::jiff::Timestamp;
use kube::Client;

use waymark::api::Phase;

use cluster::Cluster;
use controller::Controller;
use report::{Floor, PhaseResult, Report};
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
/// How often the idle phase samples the controller's resident set.
const IDLE_SAMPLE: Duration = Duration::from_secs(10);
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
    /// Print the results as JSON on stdout (the table goes to stderr).
    #[arg(long)]
    json: bool,
    /// Set by `cargo bench`; without it the bench does not run (so `cargo test --benches`
    /// does not start a control plane).
    #[arg(long, hide = true)]
    bench: bool,
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    if !args.bench {
        eprintln!(
            "scale: not run (it starts a control plane and takes minutes): \
             `cargo bench --bench scale -- --releases N`"
        );
        return ExitCode::SUCCESS;
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
    let shipped = workload::ship(&admin, RELEASE_NAMESPACE, n, args.concurrency).await?;
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
        &releases.first_weights(),
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

    // Idle: nothing changes.
    let idle = Duration::from_secs_f64(args.idle.as_secs_f64());
    eprintln!("scale: idle for {idle:?}");
    let mark = run.mark(Some(&controller)).await?;
    // The resident set every IDLE_SAMPLE: a line that grows while nothing changes is a leak.
    let mut idle_rss = Vec::new();
    let idle_started = Instant::now();
    while idle_started.elapsed() < idle {
        idle_rss.push((idle_started.elapsed(), controller.memory().current()));
        tokio::time::sleep(IDLE_SAMPLE.min(idle.saturating_sub(idle_started.elapsed()))).await;
        controller.check_running()?;
    }
    idle_rss.push((idle_started.elapsed(), controller.memory().current()));
    run.finish("idle", None, mark, &controller).await?;

    let peak_rss = controller.memory().high_water_mark();
    let warnings = controller.warnings();
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
    Ok(Report {
        releases: n,
        apiserver_version: version.git_version,
        controller_pid: pid,
        concurrency: args.concurrency,
        baseline,
        phases: run.phases,
        peak_rss,
        idle,
        warnings,
        traced: workload::release_name(0),
        trail: releases.trail(),
        status_writes: releases.status_writes(),
        slow_watchers,
        first_weight,
        idle_rss,
        watch_list: args.watch_list,
    })
}

/// The phases measured so far and what a phase needs to be measured.
struct Run {
    admin: Client,
    n: usize,
    deadline: Duration,
    phases: Vec<PhaseResult>,
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

    /// Wait until `progress` counts all N Releases done, or fail after the deadline with what
    /// it saw last. `progress` returns the number done and the others by state.
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
