//! The binary as a person runs it: as the kubectl plugin `kubectl-waymark`, and against a
//! kubeconfig whose cluster does not answer.

use std::process::Command;

fn waymark() -> &'static str {
    env!("CARGO_BIN_EXE_waymark")
}

#[cfg(unix)]
#[test]
fn installed_as_kubectl_waymark_its_usage_says_kubectl_waymark() {
    let dir = tempfile::tempdir().expect("temp dir");
    let plugin = dir.path().join("kubectl-waymark");
    std::os::unix::fs::symlink(waymark(), &plugin).expect("symlink");
    let output = Command::new(&plugin)
        .args(["status", "--help"])
        .output()
        .expect("run kubectl-waymark");
    assert!(output.status.success());
    let help = String::from_utf8_lossy(&output.stdout);
    assert!(
        help.contains("Usage: kubectl waymark status [OPTIONS] [NAME]"),
        "{help}"
    );
    for flag in [
        "--kubeconfig",
        "--context",
        "--namespace",
        "--output",
        "--watch",
    ] {
        assert!(help.contains(flag), "{flag} missing from {help}");
    }
}

#[test]
fn an_unreachable_cluster_names_the_kubeconfig_and_context_tried_and_fails() {
    let port = free_port();
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_for(dir.path(), port);
    let output = Command::new(waymark())
        .args([
            "abort",
            "checkout",
            "-n",
            "shop",
            "--context",
            "other",
            "--kubeconfig",
        ])
        .arg(&kubeconfig)
        .output()
        .expect("run waymark");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach the Kubernetes API server at https://127.0.0.1:{port}/ (kubeconfig {}, context other): ",
            kubeconfig.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--kubeconfig/--context"), "{stderr}");
}

/// A kubeconfig with contexts `dev` and `other`, both for an API server on `port` of loopback.
fn kubeconfig_for(dir: &std::path::Path, port: u16) -> std::path::PathBuf {
    let kubeconfig = dir.join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: \"https://127.0.0.1:{port}\"}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me}}\n- name: other\n  context: {{cluster: dev, user: me}}\nusers:\n- name: me\n  user: {{token: t}}\n"
        ),
    )
    .expect("write kubeconfig");
    kubeconfig
}

fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("an address").port()
}

#[test]
fn the_controller_takes_kubeconfig_and_context_like_every_command() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_for(dir.path(), free_port());
    let output = Command::new(waymark())
        .args(["controller", "--context", "nope", "--kubeconfig"])
        .arg(&kubeconfig)
        .output()
        .expect("run waymark");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "cannot use kubeconfig {}, context nope",
            kubeconfig.display()
        )),
        "{stderr}"
    );
}

/// GET `path` on loopback `port`: the status code and body, or `None` when nothing answers.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let code = response.split_whitespace().nth(1)?.parse().ok()?;
    let body = response.split_once("\r\n\r\n")?.1.to_string();
    Some((code, body))
}

#[test]
fn a_controller_whose_api_server_does_not_answer_is_not_ready_and_says_why() {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = kubeconfig_for(dir.path(), free_port());
    let metrics = free_port();
    let mut controller = Command::new(waymark())
        .args(["controller", "--context", "other", "--metrics-addr"])
        .arg(format!("127.0.0.1:{metrics}"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start the controller");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut last = None;
    let answer = loop {
        last = http_get(metrics, "/readyz").or(last);
        match &last {
            Some((503, body)) if body.contains("watch has been down") => break last.clone(),
            _ if std::time::Instant::now() > deadline => break None,
            _ => std::thread::sleep(std::time::Duration::from_millis(100)),
        }
    };
    let _ = controller.kill();
    let _ = controller.wait();
    let (_, body) = answer.unwrap_or_else(|| panic!("/readyz never said why: {last:?}"));
    assert!(body.starts_with("not ready: "), "{body}");
    assert!(
        body.contains("the releases watch has been down for"),
        "{body}"
    );
    assert!(body.contains("Connection refused"), "{body}");
}

/// The calls a stand-in API server saw: `METHOD path` and the body.
type Calls = std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// A stand-in API server on a loopback port: answers `GET` of Release shop/checkout with
/// `release`, a status `PATCH` with it too, and anything else (the SelfSubjectReview) with 404.
/// Returns its address and the calls it saw, as `METHOD path` and the body.
fn api_server(release: serde_json::Value) -> (String, Calls) {
    use std::io::{BufRead, BufReader, Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    let calls = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = calls.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let seen = seen.clone();
            let release = release.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream.try_clone().expect("a stream"));
                let mut writer = stream;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let mut parts = line.split_whitespace();
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let mut length = 0;
                    loop {
                        let mut header = String::new();
                        reader.read_line(&mut header).unwrap_or(0);
                        if header.trim().is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).expect("the body");
                    let release_path =
                        "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout";
                    let (code, answer) = if path.starts_with(release_path) {
                        (200, release.to_string())
                    } else {
                        (
                            404,
                            r#"{"kind":"Status","apiVersion":"v1","status":"Failure","reason":"NotFound","code":404,"message":"not found"}"#.to_string(),
                        )
                    };
                    seen.lock().expect("the calls").push((
                        format!("{method} {}", path.split('?').next().unwrap_or_default()),
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    let reply = format!(
                        "HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{answer}",
                        answer.len()
                    );
                    if writer.write_all(reply.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (address, calls)
}

/// The example checkout Release with a canary of its template at its last step; with
/// `promoting`, the stable already runs the canary's template (a promotion in progress).
fn checkout_with_canary(promoting: bool) -> serde_json::Value {
    let text = std::fs::read_to_string("examples/checkout.yaml").expect("the example");
    let document = text.split("\n---\n").next().unwrap_or_default();
    let mut release: waymark::api::Release =
        serde_saphyr::from_str(document).expect("the example Release");
    let canary = waymark::api::template_revision(&release.spec.template);
    release.status = Some(waymark::api::ReleaseStatus {
        phase: Some(if promoting {
            waymark::api::Phase::Progressing
        } else {
            waymark::api::Phase::Paused
        }),
        stable_revision: Some(if promoting {
            canary.clone()
        } else {
            "5d8b9c0a1e".into()
        }),
        canary_revision: Some(canary),
        current_step: Some(3),
        ..Default::default()
    });
    serde_json::to_value(&release).expect("JSON")
}

fn waymark_against(address: &str, args: &[&str]) -> std::process::Output {
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: \"{address}\"}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me, namespace: shop}}\nusers:\n- name: me\n  user: {{token: t}}\n"
        ),
    )
    .expect("write kubeconfig");
    Command::new(waymark())
        .args(args)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .output()
        .expect("run waymark")
}

#[test]
fn abort_during_a_promotion_exits_non_zero_says_what_to_do_and_writes_nothing() {
    let (address, calls) = api_server(checkout_with_canary(true));
    let output = waymark_against(&address, &["abort", "checkout"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.starts_with("error: cannot abort shop/checkout: canary ")
            && stderr.contains("is being promoted"),
        "{stderr}"
    );
    assert!(
        stderr.contains("apply the previous template as a new revision"),
        "{stderr}"
    );
    assert!(output.stdout.is_empty());
    let calls = calls.lock().expect("the calls");
    assert_eq!(
        calls
            .iter()
            .map(|(call, _)| call.as_str())
            .collect::<Vec<_>>(),
        ["GET /apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout"],
        "read, then nothing written"
    );
}

#[test]
fn promote_at_a_pause_exits_zero_and_writes_where_the_release_stood() {
    let (address, calls) = api_server(checkout_with_canary(false));
    let output = waymark_against(&address, &["promote", "checkout"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("promote requested for release checkout (revision ")
            && stdout.contains("step 4/4 of canary"),
        "{stdout}"
    );
    let calls = calls.lock().expect("the calls");
    let (_, patch) = calls
        .iter()
        .find(|(call, _)| call.starts_with("PATCH"))
        .expect("a status PATCH");
    let patch: serde_json::Value = serde_json::from_str(patch).expect("JSON");
    assert_eq!(patch["status"]["request"]["action"], "Promote");
    assert_eq!(patch["status"]["request"]["stage"], "Canary");
    assert_eq!(patch["status"]["request"]["step"], 3);
}

#[test]
fn every_command_that_reaches_the_api_server_takes_request_timeout() {
    for command in [
        "list",
        "status",
        "promote",
        "abort",
        "retry",
        "roadmap",
        "postmortem",
        "dashboard",
        "controller",
    ] {
        let output = Command::new(waymark())
            .args([command, "--help"])
            .output()
            .expect("run waymark");
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(
            help.contains("--request-timeout <DURATION>"),
            "{command}: {help}"
        );
    }
}

#[test]
fn a_bad_request_timeout_is_refused_before_any_call_and_says_what_to_write() {
    let output = Command::new(waymark())
        .args(["list", "-n", "shop", "--request-timeout=soon"])
        .output()
        .expect("run waymark");
    assert_eq!(output.status.code(), Some(2), "a usage error");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("invalid value 'soon' for '--request-timeout <DURATION>'")
            && stderr.contains("write a duration with a unit such as 30s, 2m or 1h (or a whole number of seconds), or 0 for no timeout"),
        "{stderr}"
    );
}

/// An API server that accepts connections and never answers: without a request timeout the
/// client would wait as long as the connection lasts.
#[test]
fn the_request_timeout_ends_a_request_the_api_server_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            // Keep every connection open, read nothing, answer nothing.
            held.extend(stream.ok());
        }
    });
    let started = std::time::Instant::now();
    let output = waymark_against(&address, &["list", "--request-timeout=1s"]);
    let elapsed = started.elapsed();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        elapsed >= std::time::Duration::from_secs(1) && elapsed < std::time::Duration::from_secs(8),
        "ended after {elapsed:?}: {stderr}"
    );
    assert!(
        stderr.starts_with(&format!(
            "error: cannot reach the Kubernetes API server at {address}/ (kubeconfig "
        )) && stderr.contains(", --request-timeout 1s): "),
        "names the timeout that ended it: {stderr}"
    );
}
