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
        help.contains("Usage: kubectl waymark status [OPTIONS] <NAME>"),
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
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    let port = listener.local_addr().expect("an address").port();
    drop(listener);
    let dir = tempfile::tempdir().expect("temp dir");
    let kubeconfig = dir.path().join("config");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: dev\nclusters:\n- name: dev\n  cluster: {{server: \"https://127.0.0.1:{port}\"}}\ncontexts:\n- name: dev\n  context: {{cluster: dev, user: me}}\n- name: other\n  context: {{cluster: dev, user: me}}\nusers:\n- name: me\n  user: {{token: t}}\n"
        ),
    )
    .expect("write kubeconfig");
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
