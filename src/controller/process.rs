//! The `process_*` metrics of the running controller, under the names the Go client
//! (client_golang) gives them, so dashboards and alerts written for any Go operator read ours.
//!
//! Read from `/proc/self` on every scrape. Written here rather than taken from a crate: the one
//! made for `prometheus-client` (`kubert-prometheus-process`) is built on an older
//! `prometheus-client` whose registry ours cannot hold, and reports its own start, not the
//! process's. Elsewhere than Linux the collector reports nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Clock ticks per second in `/proc`'s times. The kernel reports them in `USER_HZ`, which is
/// 100 on every architecture Linux supports today (the Go client's procfs assumes the same).
const TICKS_PER_SECOND: f64 = 100.0;

/// What one scrape reports of the process. Each figure is `None` when it could not be read.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ProcessFigures {
    /// User and system CPU time, seconds.
    pub cpu_seconds: Option<f64>,
    /// Resident set size, bytes.
    pub resident_memory_bytes: Option<u64>,
    /// Virtual memory size, bytes.
    pub virtual_memory_bytes: Option<u64>,
    /// Open file descriptors.
    pub open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub max_fds: Option<u64>,
    /// Seconds since the Unix epoch at which the process started.
    pub start_time_seconds: Option<f64>,
    /// OS threads.
    pub threads: Option<u64>,
}

/// From `/proc/self/stat`: (user + system CPU seconds, start time in seconds since boot).
/// The command name in parentheses may hold spaces and parentheses: fields are counted after
/// its last `)`.
pub fn parse_stat(stat: &str) -> Option<(f64, f64)> {
    let (_, after_name) = stat.rsplit_once(')')?;
    // After the name: field 3 (state) is at index 0, so field N is at index N - 3.
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
    let user = field(14)?;
    let system = field(15)?;
    let start = field(22)?;
    Some(((user + system) / TICKS_PER_SECOND, start / TICKS_PER_SECOND))
}

/// The value in bytes of a `kB` line of `/proc/self/status` (`VmRSS:   2084 kB`).
pub fn status_kilobytes(status: &str, key: &str) -> Option<u64> {
    let value = status_value(status, key)?;
    let kilobytes: u64 = value.strip_suffix("kB")?.trim().parse().ok()?;
    Some(kilobytes * 1024)
}

/// The number on a plain line of `/proc/self/status` (`Threads:  12`).
pub fn status_number(status: &str, key: &str) -> Option<u64> {
    status_value(status, key)?.parse().ok()
}

fn status_value<'a>(status: &'a str, key: &str) -> Option<&'a str> {
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == key).then(|| value.trim())
    })
}

/// The soft limit on open files from `/proc/self/limits`; `None` when unlimited.
pub fn max_open_files(limits: &str) -> Option<u64> {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max open files"))?;
    line.trim_start_matches("Max open files")
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// The boot time in seconds since the epoch, from `/proc/stat`'s `btime` line.
pub fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()
}

/// Reads the figures of this process now.
pub fn read_figures() -> ProcessFigures {
    let read = |path: &str| std::fs::read_to_string(path).ok();
    let stat = read("/proc/self/stat").as_deref().and_then(parse_stat);
    let status = read("/proc/self/status").unwrap_or_default();
    let boot = read("/proc/stat").as_deref().and_then(boot_time);
    ProcessFigures {
        cpu_seconds: stat.map(|(cpu, _)| cpu),
        resident_memory_bytes: status_kilobytes(&status, "VmRSS"),
        virtual_memory_bytes: status_kilobytes(&status, "VmSize"),
        open_fds: std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64),
        max_fds: read("/proc/self/limits")
            .as_deref()
            .and_then(max_open_files),
        start_time_seconds: stat
            .zip(boot)
            .map(|((_, since_boot), boot)| boot + since_boot),
        threads: status_number(&status, "Threads"),
    }
}

/// Reports [`read_figures`] on each scrape, without a prefix.
#[derive(Debug, Default)]
pub struct ProcessCollector;

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let figures = read_figures();
        if let Some(seconds) = figures.cpu_seconds {
            let counter = ConstCounter::new(seconds);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                counter.metric_type(),
            )?)?;
        }
        let gauges = [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                figures.resident_memory_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                figures.virtual_memory_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                figures.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                figures.max_fds,
            ),
            (
                "process_threads",
                "Number of OS threads in the process.",
                figures.threads,
            ),
        ];
        for (name, help, value) in gauges {
            let Some(value) = value else { continue };
            let gauge = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        if let Some(seconds) = figures.start_time_seconds {
            let gauge = ConstGauge::new(seconds);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_after_the_command_name_even_with_spaces_and_parentheses() {
        // utime 250, stime 50 ticks; started 1360569 ticks after boot.
        let stat = "31480 (tokio (rt) 1) S 31478 31478 25776 0 -1 4194304 102 0 0 0 250 50 0 0 \
                    20 0 1 0 1360569 3133440 412 18446744073709551615";
        assert_eq!(parse_stat(stat), Some((3.0, 13605.69)));
        assert_eq!(parse_stat("31480 (cut"), None);
        assert_eq!(parse_stat("31480 (short) S 1 2"), None);
    }

    #[test]
    fn status_lines_give_bytes_and_counts() {
        let status = "Name:\twaymark\nVmSize:\t    3892 kB\nVmRSS:\t    2084 kB\nThreads:\t7\n";
        assert_eq!(status_kilobytes(status, "VmRSS"), Some(2084 * 1024));
        assert_eq!(status_kilobytes(status, "VmSize"), Some(3892 * 1024));
        assert_eq!(status_number(status, "Threads"), Some(7));
        assert_eq!(status_kilobytes(status, "VmSwap"), None);
        assert_eq!(status_kilobytes(status, "Threads"), None, "not a kB line");
    }

    #[test]
    fn the_soft_open_files_limit_is_read_and_unlimited_is_none() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units     \n\
                      Max cpu time              unlimited            unlimited            seconds   \n\
                      Max open files            1024                 524288               files     \n";
        assert_eq!(max_open_files(limits), Some(1024));
        let unlimited =
            "Max open files            unlimited            unlimited            files\n";
        assert_eq!(max_open_files(unlimited), None);
    }

    #[test]
    fn boot_time_comes_from_the_btime_line() {
        let proc_stat = "cpu  1 2 3\nintr 5\nbtime 1796541179\nprocesses 9\n";
        assert_eq!(boot_time(proc_stat), Some(1_796_541_179.0));
        assert_eq!(boot_time("cpu 1 2 3\n"), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reports_every_figure_with_plausible_values() {
        let figures = read_figures();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        let start = figures.start_time_seconds.expect("start time");
        assert!(
            start <= now + 1.0 && start > now - 86_400.0 * 365.0,
            "{start} vs {now}"
        );
        assert!(figures.cpu_seconds.expect("cpu") >= 0.0);
        assert!(figures.resident_memory_bytes.expect("rss") > 1024 * 1024);
        assert!(
            figures.virtual_memory_bytes.expect("vsize") >= figures.resident_memory_bytes.unwrap()
        );
        let open = figures.open_fds.expect("open fds");
        assert!(open >= 3, "stdin, stdout, stderr at least: {open}");
        if let Some(max) = figures.max_fds {
            assert!(max >= open);
        }
        assert!(figures.threads.expect("threads") >= 1);
    }
}
