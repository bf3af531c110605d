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
