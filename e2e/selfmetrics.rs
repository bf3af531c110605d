//! The controller watches itself: what its own `/metrics` says after a real first release.

use serde_json::json;

use crate::fixtures::*;
use crate::support::Env;

/// The value of the first line of `text` that starts with `series` (name and labels as
/// written), or `None` when there is no such line.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series))
        .filter(|rest| rest.starts_with(' '))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

/// After a first release became Healthy on the real API server, the in-process controller's
/// `/metrics` reports its build, that it leads, the API requests it made by verb, resource and
/// code (with no name or namespace in a label), the process figures, and a zero for every
/// reconcile error kind that has not happened.
pub async fn the_controller_reports_its_build_leadership_api_requests_and_process(env: Env) {
    healthy_first_release(&env, "checkout", json!([{"setWeight": 50}])).await;
    let (code, text) = env.controller_http("/metrics").await;
    assert_eq!(code, 200, "{text}");

    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.contains(&format!(r#"waymark_build_info{{version="{version}""#)),
        "{text}"
    );
    assert_eq!(value(&text, "waymark_leader"), Some(1.0), "{text}");
    // The watches started, the Release was listed, the children were created, the status
    // written: each counted under its verb and resource with the API server's code.
    for series in [
        r#"waymark_kube_requests_total{verb="WATCH",resource="releases",code="200"}"#,
        r#"waymark_kube_requests_total{verb="LIST",resource="releases",code="200"}"#,
        r#"waymark_kube_requests_total{verb="POST",resource="deployments",code="201"}"#,
        r#"waymark_kube_request_duration_seconds_count{verb="POST",resource="deployments"}"#,
    ] {
        let count = value(&text, series).unwrap_or(0.0);
        assert!(count >= 1.0, "{series} is {count}: {text}");
    }
    let status_writes: f64 = text
        .lines()
        .filter(|line| {
            line.starts_with("waymark_kube_requests_total{")
                && line.contains(r#"resource="releases/status""#)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    assert!(
        status_writes >= 1.0,
        "the status writes are counted: {text}"
    );
    for line in text
        .lines()
        .filter(|line| line.starts_with("waymark_kube_request"))
    {
        assert!(
            !line.contains(&env.namespace) && !line.contains("checkout"),
            "no namespace or name in an API request label: {line}"
        );
    }
    for process in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_max_fds",
        "process_start_time_seconds",
    ] {
        let figure = value(&text, process).unwrap_or_else(|| panic!("no {process}: {text}"));
        assert!(figure > 0.0, "{process} {figure}");
    }
    assert_eq!(
        value(
            &text,
            r#"waymark_reconcile_errors_total{kind="refused_forbidden"}"#
        ),
        Some(0.0),
        "{text}"
    );
}
