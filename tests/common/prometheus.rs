//! A real Prometheus for tests, scraping request counters the test controls.
//!
//! Part of [`crate::common`]. It depends only on crates Waymark already has: tokio, axum,
//! tempfile, prometheus-http-query, rustls.
//!
//! - [`MetricsServer`] serves `/metrics` on a free 127.0.0.1 port with
//!   `http_requests_total{namespace,service,code}` counters. A background task adds
//!   `rate × elapsed` to each counter ten times a second; [`MetricsServer::set_rate`] sets the
//!   requests per second of one series at any time.
//! - [`Prometheus::start`] runs the `prometheus` binary ([`tools::prometheus`]) on a free
//!   127.0.0.1 port with a temporary data
//!   directory and `scrape_interval: 1s`, scraping the given targets, and waits until it is
//!   ready. The process is killed when the value is dropped.
//! - [`Prometheus::start_with_history`] first backfills an OpenMetrics text into the data
//!   directory with `promtool tsdb create-blocks-from openmetrics` ([`tools::promtool`]), then starts Prometheus on it without scraping anything, so a
//!   test can query a past it wrote itself.
//! - Waits are on conditions with deadlines ([`Prometheus::wait_for_window`]), never on sleeps
//!   that hope the data has arrived.
//!
//! When a binary is missing, `start` and `start_with_history` return `None` after
//! [`tools`] said why, so the test can skip — unless `CI=true`, where the test panics.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_http_query::response::Data;

use super::tools;

/// How often the counters grow: often enough that a 1s scrape sees a smooth rate.
const TICK: Duration = Duration::from_millis(100);

/// One series of `http_requests_total`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct SeriesKey {
    namespace: String,
    service: String,
    code: String,
}

#[derive(Clone, Copy, Debug, Default)]
struct Series {
    per_second: f64,
    total: f64,
}

type Counters = Arc<Mutex<BTreeMap<SeriesKey, Series>>>;

/// An in-process `/metrics` endpoint whose request counters grow at rates the test sets.
pub struct MetricsServer {
    address: SocketAddr,
    counters: Counters,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl MetricsServer {
    /// Starts the server on a free 127.0.0.1 port, and the task that grows the counters.
    pub async fn start() -> std::io::Result<Self> {
        let counters: Counters = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = listener.local_addr()?;
        let served = counters.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let counters = served.clone();
                async move {
                    (
                        [("content-type", "text/plain; version=0.0.4")],
                        exposition(&counters),
                    )
                }
            }),
        );
        let server = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let grown = counters.clone();
        let ticker = tokio::spawn(async move {
            let mut last = Instant::now();
            let mut interval = tokio::time::interval(TICK);
            loop {
                interval.tick().await;
                // Elapsed time rather than the nominal tick, so a busy machine that delays a
                // tick does not slow the rates down.
                let now = Instant::now();
                let elapsed = now.duration_since(last).as_secs_f64();
                last = now;
                let mut counters = grown.lock().unwrap_or_else(|e| e.into_inner());
                for series in counters.values_mut() {
                    series.total += series.per_second * elapsed;
                }
            }
        });
        Ok(Self {
            address,
            counters,
            tasks: vec![server, ticker],
        })
    }

    /// `host:port` for a Prometheus scrape config.
    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Sets how many requests per second the series `{namespace, service, code}` counts. The
    /// series appears (at 0) the first time it is set, so a rate of 0 still exports it.
    pub fn set_rate(&self, namespace: &str, service: &str, code: &str, per_second: f64) {
        let key = SeriesKey {
            namespace: namespace.into(),
            service: service.into(),
            code: code.into(),
        };
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.entry(key).or_default().per_second = per_second;
    }

    /// Sets a Service's traffic as requests per second and the fraction of them answered 500
    /// (the rest 200).
    pub fn set_traffic(&self, namespace: &str, service: &str, per_second: f64, error_ratio: f64) {
        self.set_rate(namespace, service, "200", per_second * (1.0 - error_ratio));
        self.set_rate(namespace, service, "500", per_second * error_ratio);
    }
}

impl Drop for MetricsServer {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// The Prometheus text format of the counters.
fn exposition(counters: &Counters) -> String {
    let counters = counters.lock().unwrap_or_else(|e| e.into_inner());
    let mut text = String::from(
        "# HELP http_requests_total Requests served.\n# TYPE http_requests_total counter\n",
    );
    for (key, series) in counters.iter() {
        text.push_str(&format!(
            "http_requests_total{{namespace=\"{}\",service=\"{}\",code=\"{}\"}} {}\n",
            label_value(&key.namespace),
            label_value(&key.service),
            label_value(&key.code),
            series.total
        ));
    }
    text
}

fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// A `prometheus` child process on a free loopback port, killed on drop.
pub struct Prometheus {
    child: Option<Child>,
    address: String,
    client: prometheus_http_query::Client,
    data: tempfile::TempDir,
}

impl Prometheus {
    /// Backfills `openmetrics` (an OpenMetrics text ending in `# EOF`) into a new data
    /// directory with promtool, starts Prometheus on it (scraping nothing) and waits until it
    /// is ready.
    ///
    /// Returns `None` when `prometheus` or `promtool` is missing outside CI (see [`tools`]);
    /// panics when one is missing with `CI=true`, or when promtool rejects the text.
    pub async fn start_with_history(openmetrics: &str) -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = tools::prometheus()?;
        let promtool = tools::promtool()?;
        let mut last_error = String::new();
        for _ in 0..3 {
            let data = tempfile::tempdir().expect("temp dir");
            let input = data.path().join("history.om");
            std::fs::write(&input, openmetrics).expect("write the OpenMetrics file");
            let output = Command::new(&promtool)
                .args(["tsdb", "create-blocks-from", "openmetrics"])
                .arg(&input)
                .arg(data.path().join("tsdb"))
                .output()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
            assert!(
                output.status.success(),
                "promtool rejected the history: {}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            match Self::try_start_in(&binary, &[], data).await {
                Ok(prometheus) => return Some(prometheus),
                Err(error) => last_error = error,
            }
        }
        panic!("Prometheus did not start: {last_error}");
    }

    /// Starts Prometheus scraping `targets` every second and waits until it is ready.
    ///
    /// Returns `None` when the binary is missing outside CI (see [`tools`]); panics when it is
    /// missing with `CI=true` or when Prometheus does not become ready in 20 seconds. Installs
    /// rustls's ring provider for the process, which the HTTP client needs.
    pub async fn start(targets: &[SocketAddr]) -> Option<Self> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let binary = tools::prometheus()?;
        // The port is chosen by binding and releasing it; another process may take it in
        // between, so a Prometheus that exits at once is retried on a new port.
        let mut last_error = String::new();
        for _ in 0..3 {
            match Self::try_start(&binary, targets).await {
                Ok(prometheus) => return Some(prometheus),
                Err(error) => last_error = error,
            }
        }
        panic!("Prometheus did not start: {last_error}");
    }

    async fn try_start(binary: &PathBuf, targets: &[SocketAddr]) -> Result<Self, String> {
        let data = tempfile::tempdir().map_err(|e| format!("temp dir: {e}"))?;
        Self::try_start_in(binary, targets, data).await
    }

    /// Starts Prometheus with its TSDB in `data/tsdb`, scraping `targets` (none: scrape
    /// nothing).
    async fn try_start_in(
        binary: &PathBuf,
        targets: &[SocketAddr],
        data: tempfile::TempDir,
    ) -> Result<Self, String> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .map_err(|e| format!("free port: {e}"))?
            .port();
        let targets: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let mut config = String::from(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n",
        );
        if !targets.is_empty() {
            config.push_str(&format!(
                "scrape_configs:\n- job_name: waymark-test\n  honor_labels: true\n  static_configs:\n  - targets: [{}]\n",
                targets.join(", ")
            ));
        }
        let config_path = data.path().join("prometheus.yml");
        std::fs::write(&config_path, config).map_err(|e| format!("config: {e}"))?;
        let log = std::fs::File::create(data.path().join("prometheus.log"))
            .map_err(|e| format!("log file: {e}"))?;
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("cannot run {}: {e}", binary.display()))?;
        let address = format!("http://127.0.0.1:{port}");
        let client = prometheus_http_query::Client::try_from(address.as_str())
            .map_err(|e| format!("client: {e}"))?;
        let mut prometheus = Self {
            child: Some(child),
            address,
            client,
            data,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let exited = match prometheus.child.as_mut() {
                Some(child) => child.try_wait().ok().flatten(),
                None => None,
            };
            if let Some(status) = exited {
                return Err(format!("exited with {status}: {}", prometheus.log_tail()));
            }
            if prometheus.client.is_server_ready().await.unwrap_or(false) {
                return Ok(prometheus);
            }
            if Instant::now() > deadline {
                return Err(format!("not ready after 20s: {}", prometheus.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The base URL, e.g. `http://127.0.0.1:41234`.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The last lines Prometheus logged, for failure messages.
    pub fn log_tail(&self) -> String {
        let log =
            std::fs::read_to_string(self.data.path().join("prometheus.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Runs an instant query and returns the sum of the result's samples (`None`: empty).
    pub async fn query(&self, query: &str) -> Result<Option<f64>, String> {
        let result = self
            .client
            .query(query)
            .get()
            .await
            .map_err(|e| e.to_string())?;
        Ok(match result.data() {
            Data::Vector(samples) if samples.is_empty() => None,
            Data::Vector(samples) => Some(samples.iter().map(|s| s.sample().value()).sum()),
            Data::Scalar(sample) => Some(sample.value()),
            Data::Matrix(_) => return Err("range vector".into()),
        })
    }

    /// The labels of every series `selector` matches now, the metric name under `__name__`.
    pub async fn series(&self, selector: &str) -> Result<Vec<HashMap<String, String>>, String> {
        let result = self
            .client
            .query(selector)
            .get()
            .await
            .map_err(|e| e.to_string())?;
        match result.data() {
            Data::Vector(samples) => Ok(samples.iter().map(|s| s.metric().clone()).collect()),
            other => Err(format!("`{selector}` is not an instant vector: {other:?}")),
        }
    }

    /// Polls `query` until `done` accepts its value, or fails after `timeout`.
    pub async fn wait_until(
        &self,
        query: &str,
        timeout: Duration,
        done: impl Fn(Option<f64>) -> bool,
    ) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        let mut last = Ok(None);
        while Instant::now() < deadline {
            last = self.query(query).await;
            if matches!(&last, Ok(value) if done(*value)) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        Err(format!(
            "`{query}` still {last:?} after {timeout:?}; Prometheus log: {}",
            self.log_tail()
        ))
    }

    /// Waits until every series matching `selector` has a sample per second since before the
    /// last `window` began, i.e. until `rate(...[window])` measures the whole window. (A series
    /// younger than the window gives a smaller rate, correctly: Prometheus does not
    /// extrapolate a counter back past its start.)
    pub async fn wait_for_window(
        &self,
        selector: &str,
        window: Duration,
        timeout: Duration,
    ) -> Result<(), String> {
        let range = window.as_secs() + 3;
        let needed = (window.as_secs() + 2) as f64;
        self.wait_until(
            &format!("min(count_over_time({selector}[{range}s]))"),
            timeout,
            |samples| samples.is_some_and(|samples| samples >= needed),
        )
        .await
    }

    /// Stops Prometheus now (the address then refuses connections).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        self.stop();
    }
}
