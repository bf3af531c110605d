//! The controller under test: `waymark controller` of the release build as a process of its
//! own, its resident memory sampled from `/proc`, its `/metrics` scraped the way a Prometheus
//! would, and read for the number of reconciles.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::control_plane;

/// How often the controller's memory is sampled.
const SAMPLE_EVERY: Duration = Duration::from_millis(100);
/// How often the controller's `/metrics` is scraped, as a Prometheus would (a common interval):
/// each scrape encodes every series, which costs memory and time a real deployment pays too.
pub const SCRAPE_EVERY: Duration = Duration::from_secs(30);
/// How long the controller may take to sync its caches.
const READY_DEADLINE: Duration = Duration::from_secs(60);
/// How long a stopping controller may take before it is killed (its own grace is 10 s).
const STOP_DEADLINE: Duration = Duration::from_secs(15);

/// The `waymark` binary cargo built for this bench (the `bench` profile, which is `release`),
/// or the one `WAYMARK_SCALE_CONTROLLER` names: the image's static musl build, say, whose
/// allocator is musl's and not glibc's (`cargo build --release --target
/// x86_64-unknown-linux-musl --bin waymark`).
pub fn binary() -> PathBuf {
    std::env::var_os("WAYMARK_SCALE_CONTROLLER").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_waymark")),
        PathBuf::from,
    )
}

/// A running `waymark controller`; stopped (SIGTERM, then SIGKILL) when dropped.
pub struct Controller {
    child: Child,
    metrics_addr: String,
    log: PathBuf,
    http: reqwest::Client,
    memory: Arc<Memory>,
    sampling: Arc<AtomicBool>,
    scrapes: Arc<Scrapes>,
    scraper: Option<tokio::task::JoinHandle<()>>,
}

/// What the periodic scrapes of `/metrics` saw.
#[derive(Default)]
pub struct Scrapes {
    /// Scrapes answered in full.
    pub answered: AtomicU64,
    /// Scrapes that failed (no answer, an error status or a broken body).
    pub failed: AtomicU64,
    /// The largest body, in bytes.
    pub largest: AtomicU64,
}

/// Resident memory of the controller, in bytes.
#[derive(Default)]
pub struct Memory {
    /// The largest VmRSS sampled since [`Memory::take_peak`] was last called.
    peak_since_mark: AtomicU64,
    /// The kernel's high-water mark of the resident set (VmHWM).
    high_water_mark: AtomicU64,
    /// The latest VmRSS sampled.
    current: AtomicU64,
}

impl Memory {
    /// The largest resident set sampled since the last call (the phase that just ended).
    pub fn take_peak(&self) -> u64 {
        self.peak_since_mark.swap(0, Ordering::Relaxed)
    }

    /// The resident set as last sampled (at most [`SAMPLE_EVERY`] old).
    pub fn current(&self) -> u64 {
        self.current.load(Ordering::Relaxed)
    }

    /// The kernel's high-water mark for the process's resident set (VmHWM): its peak RSS.
    pub fn high_water_mark(&self) -> u64 {
        self.high_water_mark.load(Ordering::Relaxed)
    }
}

impl Controller {
    /// Start `waymark controller` with `kubeconfig`, serving its metrics on a free loopback
    /// port, its log in `log`, and wait until it reports its caches synced (`/readyz`).
    pub async fn start(kubeconfig: &Path, log: &Path) -> Result<Controller, String> {
        let binary = binary();
        if !binary.is_file() {
            return Err(format!(
                "{} does not exist: run the bench with `cargo bench --bench scale`, which builds \
                 it, or name a built one in WAYMARK_SCALE_CONTROLLER",
                binary.display()
            ));
        }
        let metrics_addr = format!("127.0.0.1:{}", control_plane::free_port()?);
        let log_file = std::fs::File::create(log)
            .map_err(|error| format!("cannot create {}: {error}", log.display()))?;
        let err_file = log_file
            .try_clone()
            .map_err(|error| format!("cannot share {}: {error}", log.display()))?;
        let mut command = Command::new(&binary);
        command
            .args(["controller", "--metrics-addr", &metrics_addr])
            // Nothing of the bench's environment: the kubeconfig and the log level only.
            .env_clear()
            .env("KUBECONFIG", kubeconfig)
            .env(
                "RUST_LOG",
                std::env::var("WAYMARK_SCALE_LOG").unwrap_or_else(|_| "info".into()),
            )
            // Where a controller built with `--features dhat-heap` writes its heap profile.
            .envs(std::env::var_os("WAYMARK_DHAT_FILE").map(|file| ("WAYMARK_DHAT_FILE", file)))
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file);
        // A killed bench leaves no controller behind (it is started from the main thread).
        control_plane::die_with_parent(&mut command);
        let child = command
            .spawn()
            .map_err(|error| format!("cannot start {}: {error}", binary.display()))?;
        let memory = Arc::new(Memory::default());
        let sampling = Arc::new(AtomicBool::new(true));
        spawn_sampler(child.id(), memory.clone(), sampling.clone());
        let mut controller = Controller {
            child,
            metrics_addr,
            log: log.to_path_buf(),
            http: reqwest::Client::new(),
            memory,
            sampling,
            scrapes: Arc::default(),
            scraper: None,
        };
        controller.wait_until_ready().await?;
        controller.scraper = Some(controller.spawn_scraper());
        Ok(controller)
    }

    /// Scrape `/metrics` every [`SCRAPE_EVERY`] until dropped.
    fn spawn_scraper(&self) -> tokio::task::JoinHandle<()> {
        let (http, scrapes) = (self.http.clone(), self.scrapes.clone());
        let url = format!("http://{}/metrics", self.metrics_addr);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(SCRAPE_EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let body = match http.get(&url).send().await {
                    Ok(response) if response.status().is_success() => response.bytes().await,
                    _ => {
                        scrapes.failed.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                };
                match body {
                    Ok(body) => {
                        scrapes.answered.fetch_add(1, Ordering::Relaxed);
                        scrapes
                            .largest
                            .fetch_max(body.len() as u64, Ordering::Relaxed);
                    }
                    Err(_) => {
                        scrapes.failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        })
    }

    /// What the periodic scrapes saw so far.
    pub fn scrapes(&self) -> &Scrapes {
        &self.scrapes
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its resident memory samples.
    pub fn memory(&self) -> &Memory {
        &self.memory
    }

    /// Start sampling its resident set every `every` (the first sample now) until
    /// [`RssLine::stop`].
    pub fn sample_rss(&self, every: Duration) -> RssLine {
        let samples: Arc<std::sync::Mutex<Vec<(Duration, u64)>>> = Arc::default();
        let started = Instant::now();
        let (memory, kept) = (self.memory.clone(), samples.clone());
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            // A late tick (a busy machine) is taken late, not made up for with a burst.
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                if let Ok(mut kept) = kept.lock() {
                    kept.push((started.elapsed(), memory.current()));
                }
            }
        });
        RssLine {
            samples,
            started,
            memory: self.memory.clone(),
            task,
        }
    }

    async fn wait_until_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + READY_DEADLINE;
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!(
                    "the controller exited ({status}) before it was ready: {}",
                    self.log_tail(20)
                ));
            }
            let url = format!("http://{}/readyz", self.metrics_addr);
            if let Ok(response) = self.http.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "the controller did not report ready within {READY_DEADLINE:?}: {}",
                    self.log_tail(20)
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// CPU time it has used so far (user and system), from `/proc/<pid>/stat`.
    pub fn cpu_time(&self) -> Duration {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())) else {
            return Duration::ZERO;
        };
        // The command name (field 2) may hold spaces: count fields after its closing paren.
        let Some((_, after_name)) = stat.rsplit_once(')') else {
            return Duration::ZERO;
        };
        let fields: Vec<&str> = after_name.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&index| {
                fields
                    .get(index)
                    .and_then(|field| field.parse::<u64>().ok())
            })
            .sum();
        // SAFETY: sysconf only reads a configuration value.
        let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let per_second = u64::try_from(per_second)
            .ok()
            .filter(|&t| t > 0)
            .unwrap_or(100);
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    }

    /// Its own counters: `(reconciles, reconcile errors)` so far.
    pub async fn reconciles(&self) -> Result<(u64, u64), String> {
        let url = format!("http://{}/metrics", self.metrics_addr);
        let text = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|error| format!("cannot read the controller's metrics: {error}"))?
            .text()
            .await
            .map_err(|error| format!("cannot read the controller's metrics: {error}"))?;
        let sum = |prefix: &str| -> u64 {
            text.lines()
                .filter(|line| line.starts_with(prefix))
                .filter_map(|line| line.rsplit_once(' '))
                .filter_map(|(_, value)| value.trim().parse::<f64>().ok())
                .map(|value| value.max(0.0).round() as u64)
                .sum()
        };
        Ok((
            sum("waymark_reconcile_duration_seconds_count"),
            sum("waymark_reconcile_errors_total"),
        ))
    }

    /// Whether the process still runs; its log tail if not.
    pub fn check_running(&mut self) -> Result<(), String> {
        match self.child.try_wait() {
            Ok(Some(status)) => Err(format!(
                "the controller exited ({status}): {}",
                self.log_tail(20)
            )),
            _ => Ok(()),
        }
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Lines of its log at WARN or ERROR level.
    pub fn warnings(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("WARN") || line.contains("ERROR"))
            .map(str::to_string)
            .collect()
    }
}

/// The controller's resident set sampled at a fixed period (see [`Controller::sample_rss`]).
pub struct RssLine {
    samples: Arc<std::sync::Mutex<Vec<(Duration, u64)>>>,
    started: Instant,
    memory: Arc<Memory>,
    task: tokio::task::JoinHandle<()>,
}

impl RssLine {
    /// When sampling began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Stop sampling; the samples (time since the start, bytes), with a last one now unless
    /// the last tick was less than a second ago.
    pub fn stop(self) -> Vec<(Duration, u64)> {
        self.task.abort();
        let mut samples = self
            .samples
            .lock()
            .map(|samples| samples.clone())
            .unwrap_or_default();
        let now = self.started.elapsed();
        if samples
            .last()
            .is_none_or(|(at, _)| now.saturating_sub(*at) >= Duration::from_secs(1))
        {
            samples.push((now, self.memory.current()));
        }
        samples
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        self.sampling.store(false, Ordering::Relaxed);
        if let Some(scraper) = self.scraper.take() {
            scraper.abort();
        }
        control_plane::stop(&mut self.child, STOP_DEADLINE);
    }
}

/// Sample `/proc/<pid>/status` every [`SAMPLE_EVERY`] until `sampling` turns false or the
/// process is gone.
fn spawn_sampler(pid: u32, memory: Arc<Memory>, sampling: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let path = format!("/proc/{pid}/status");
        while sampling.load(Ordering::Relaxed) {
            let Ok(text) = std::fs::read_to_string(&path) else {
                return;
            };
            if let Some(rss) = status_bytes(&text, "VmRSS:") {
                memory.peak_since_mark.fetch_max(rss, Ordering::Relaxed);
                memory.current.store(rss, Ordering::Relaxed);
            }
            if let Some(hwm) = status_bytes(&text, "VmHWM:") {
                memory.high_water_mark.fetch_max(hwm, Ordering::Relaxed);
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    });
}

/// A `Vm...:   1234 kB` line of `/proc/<pid>/status`, in bytes.
fn status_bytes(text: &str, field: &str) -> Option<u64> {
    let line = text.lines().find(|line| line.starts_with(field))?;
    let kilobytes: u64 = line[field.len()..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kilobytes * 1024)
}
