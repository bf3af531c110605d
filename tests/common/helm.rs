//! The real `helm`, for the tests of the chart in `charts/waymark`: `helm template` renders it,
//! `helm lint --strict` lints it and the e2e suite installs it. There is no second
//! implementation of Helm in the tests: what they check is what `helm install` sends.
//!
//! The binary is `WAYMARK_HELM` or `helm` on the PATH; `.ci/run` installs the pinned release
//! ([`PINNED_VERSION`]) when it is missing. Without one, [`helm_or_skip`] makes a test print
//! `SKIPPED` and why, or fail under `CI=true`, where the chart must be tested.
//!
//! Include it with `#[path = "common/helm.rs"] mod helm;` (the e2e suite:
//! `#[path = "../tests/common/helm.rs"]`). Values are given as YAML text, as in a values file.

#![allow(dead_code)] // Each including test crate uses a different part.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

/// The Helm release `.ci/run` installs, and the one CI must test with.
pub const PINNED_VERSION: &str = "v4.1.4";
/// The Helm release name the tests render as.
pub const RELEASE_NAME: &str = "waymark";
/// The namespace the tests render into.
pub const RELEASE_NAMESPACE: &str = "waymark-system";

/// The chart's directory.
pub fn chart_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/waymark")
}

/// A `helm` binary that answered `helm version`.
#[derive(Clone, Debug)]
pub struct Helm {
    binary: PathBuf,
    /// What `helm version --short` printed, e.g. `v4.1.4+g05fa379`.
    pub version: String,
}

/// The `helm` to test with, found once per test binary: `Err` says why there is none.
pub fn find_helm() -> Result<Helm, String> {
    static FOUND: OnceLock<Result<Helm, String>> = OnceLock::new();
    FOUND.get_or_init(locate).clone()
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true")
}

fn locate() -> Result<Helm, String> {
    let binary = match std::env::var_os("WAYMARK_HELM").filter(|value| !value.is_empty()) {
        Some(binary) => PathBuf::from(binary),
        None => std::env::var_os("PATH")
            .into_iter()
            .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
            .map(|dir| dir.join("helm"))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                format!(
                    "no `helm` on the PATH and WAYMARK_HELM is not set; `.ci/run` installs Helm \
                     {PINNED_VERSION}"
                )
            })?,
    };
    let output = Command::new(&binary)
        .args(["version", "--short"])
        .output()
        .map_err(|error| format!("cannot run {}: {error}", binary.display()))?;
    if !output.status.success() {
        return Err(format!(
            "`{} version` failed: {}",
            binary.display(),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    let pinned = version == PINNED_VERSION || version.starts_with(&format!("{PINNED_VERSION}+"));
    if !pinned {
        if in_ci() {
            return Err(format!(
                "{} is Helm {version}, not the pinned {PINNED_VERSION} (.ci/run installs it)",
                binary.display()
            ));
        }
        let _ = writeln!(
            std::io::stderr(),
            "note: testing the chart with Helm {version} ({}), not the pinned {PINNED_VERSION}",
            binary.display()
        );
    }
    Ok(Helm { binary, version })
}

/// The `helm` to test with; `None` (after printing `SKIPPED <test>` and why) when there is
/// none. Under `CI=true` a missing or unpinned `helm` fails the test instead.
pub fn helm_or_skip() -> Option<Helm> {
    // libtest runs each test on a thread named after it.
    let current = std::thread::current();
    let test = current.name().unwrap_or("a chart test");
    match find_helm() {
        Ok(helm) => Some(helm),
        Err(reason) if in_ci() => panic!("{test}: {reason} (CI=true: the chart must be tested)"),
        Err(reason) => {
            // Past libtest's capture (which takes only `eprintln!`), so that a skip is seen.
            let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
            None
        }
    }
}

impl Helm {
    /// A `helm` command with `args`, ready to run.
    pub fn command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(&self.binary);
        command.args(args);
        command
    }

    /// Run `helm <args>` with `values` (YAML) on its standard input, for `-f -`.
    pub fn run_with_values(&self, args: &[&str], values: &str) -> Result<Output, String> {
        let mut child = self
            .command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|error| format!("cannot run helm: {error}"))?;
        child
            .stdin
            .take()
            .expect("a piped stdin")
            .write_all(values.as_bytes())
            .map_err(|error| format!("cannot write the values to helm: {error}"))?;
        child
            .wait_with_output()
            .map_err(|error| format!("helm did not finish: {error}"))
    }

    /// Every document `helm template` renders for `values` (YAML, merged over `values.yaml` as
    /// `-f` merges them) and the `--set` arguments in `sets`, as release `release` in
    /// `namespace`. `Err` holds Helm's error: a value the schema refuses, a `fail`, or
    /// rendered text that is not YAML.
    pub fn template_as(
        &self,
        release: &str,
        namespace: &str,
        values: &str,
        sets: &[&str],
    ) -> Result<Vec<Value>, String> {
        let chart = chart_dir();
        let chart = chart.to_str().expect("a UTF-8 checkout path");
        let mut args = vec!["template", release, chart, "--namespace", namespace];
        args.extend(["--values", "-"]);
        for set in sets {
            args.extend(["--set", set]);
        }
        let output = self.run_with_values(&args, values)?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        let text = String::from_utf8(output.stdout).map_err(|error| error.to_string())?;
        parse_documents(&text)
    }

    /// [`Helm::template_as`] as release `waymark` in `waymark-system`, panicking on an error.
    pub fn render(&self, values: &str) -> Vec<Value> {
        self.template_as(RELEASE_NAME, RELEASE_NAMESPACE, values, &[])
            .unwrap_or_else(|error| panic!("helm template refuses {values:?}: {error}"))
    }

    /// `helm lint --strict` of the chart with `values`: `Ok` with its report when clean.
    pub fn lint_strict(&self, values: &str) -> Result<String, String> {
        let chart = chart_dir();
        let chart = chart.to_str().expect("a UTF-8 checkout path");
        let output = self.run_with_values(&["lint", "--strict", chart, "--values", "-"], values)?;
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        if output.status.success() {
            Ok(report)
        } else {
            Err(report)
        }
    }
}

/// The YAML documents of `text` (Helm's output), empty ones left out; `Err` names the
/// document that is not YAML.
pub fn parse_documents(text: &str) -> Result<Vec<Value>, String> {
    let documents = serde_saphyr::from_multiple::<Value>(text)
        .map_err(|error| format!("helm rendered invalid YAML: {error}\n{text}"))?;
    Ok(documents
        .into_iter()
        .filter(|value| !value.is_null())
        .collect())
}
