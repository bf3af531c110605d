//! `waymark controller --log-format json`: the binary writes one JSON object per line, the
//! event's fields as top-level keys (the lines about Releases, with `namespace`, `release`,
//! `revision` and `roadmap_item`, are pinned in the controller's own tests).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn waymark() -> &'static str {
    env!("CARGO_BIN_EXE_waymark")
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}

/// The controller's stderr lines up to and including the first that contains `until` (or all
/// it wrote within 30 seconds), started with `args` against an API server that does not answer.
fn controller_lines(args: &[&str], until: &str) -> Vec<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: \"https://127.0.0.1:{}\"}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me}}\nusers:\n- name: me\n  user: {{token: t}}\n",
            free_port()
        ),
    )
    .expect("write kubeconfig");
    let mut controller = Command::new(waymark())
        .arg("controller")
        .args(args)
        .arg("--metrics-addr")
        .arg(format!("127.0.0.1:{}", free_port()))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env_remove("RUST_LOG")
        .env_remove("WAYMARK_LOG_FORMAT")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the controller");
    let stderr = controller.stderr.take().expect("stderr piped");
    let (send, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if send.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut read = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match lines.recv_timeout(left) {
            Ok(line) => {
                let done = line.contains(until);
                read.push(line);
                if done {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    let _ = controller.kill();
    let _ = controller.wait();
    read
}

#[test]
fn log_format_json_writes_one_flat_json_object_per_line() {
    let lines = controller_lines(&["--log-format", "json"], "serving /metrics");
    assert!(
        lines.iter().any(|line| line.contains("serving /metrics")),
        "the controller got as far as serving its metrics: {lines:#?}"
    );
    for line in &lines {
        let object: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|error| panic!("not a JSON object ({error}): {line}"));
        assert!(object["level"].is_string(), "{line}");
        assert!(object["timestamp"].is_string(), "{line}");
        assert!(
            object["message"].is_string() && object.get("fields").is_none(),
            "the event's fields are keys of the line itself: {line}"
        );
    }
    let serving = lines
        .iter()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .find(|line| line["message"] == "serving /metrics, /healthz and /readyz")
        .expect("the serving line");
    assert!(serving["addr"].is_string(), "{serving}");
}

#[test]
fn text_is_the_default_log_format() {
    let lines = controller_lines(&[], "serving /metrics");
    let serving = lines
        .iter()
        .find(|line| line.contains("serving /metrics"))
        .unwrap_or_else(|| panic!("{lines:#?}"));
    assert!(
        serde_json::from_str::<serde_json::Value>(serving).is_err(),
        "{serving}"
    );
    assert!(serving.contains(" INFO "), "{serving}");
    assert!(
        !serving.contains('\u{1b}'),
        "no colour codes off a terminal: {serving}"
    );
}

#[test]
fn an_unknown_log_format_is_refused_naming_the_ones_there_are() {
    let output = Command::new(waymark())
        .args(["controller", "--log-format", "xml"])
        .output()
        .expect("run waymark");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid value 'xml' for '--log-format <LOG_FORMAT>'")
            && stderr.contains("[possible values: text, json]"),
        "{stderr}"
    );
}
