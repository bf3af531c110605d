//! The container image: the Dockerfile builds the binary Cargo.toml declares, with a Rust new
//! enough for the crate, into a non-root image whose entrypoint the manifests' args complete;
//! and the image name and tag are the same in the chart, the kustomize base and the README.
//!
//! No container engine runs in this test environment, so `docker build` itself is not run
//! here; these checks are what can be verified without one.

use std::path::Path;

use serde_json::Value;

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

/// The `[[bin]]` targets of Cargo.toml (cargo hands a test its package's version and
/// rust-version as `CARGO_PKG_*`, but not its targets).
fn binaries() -> Vec<String> {
    #[derive(serde::Deserialize)]
    struct Manifest {
        #[serde(default)]
        bin: Vec<Binary>,
    }
    #[derive(serde::Deserialize)]
    struct Binary {
        name: String,
    }
    let manifest: Manifest = toml::from_str(&read("Cargo.toml")).expect("Cargo.toml is TOML");
    manifest.bin.into_iter().map(|binary| binary.name).collect()
}

/// One instruction of the Dockerfile, continuation lines joined.
///
/// Read line by line on purpose: a Dockerfile is a list of lines, one instruction each, with
/// `#` comments and a trailing `\` to continue, and that is all these checks lean on. The Rust
/// Dockerfile parser (`dockerfile-parser`) was not taken: it does not know BuildKit's
/// `RUN --mount` flags, which this Dockerfile uses (it reads them as part of the shell
/// command), and it depends on long-superseded crates (snafu 0.6, lazy_static); no container
/// engine runs in CI to parse it for us. Heredocs, parser directives and `ARG` substitution are not
/// read: [`every_instruction_is_one_the_checks_know`] fails on an instruction new to it.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    arguments: String,
}

/// The instructions the checks below know. `ARG` is known as long as no other instruction
/// substitutes it: the build's `RUN` sees it as an environment variable only.
const KNOWN: [&str; 9] = [
    "ARG",
    "FROM",
    "RUN",
    "WORKDIR",
    "COPY",
    "USER",
    "EXPOSE",
    "ENTRYPOINT",
    "CMD",
];

fn dockerfile() -> Vec<Instruction> {
    let mut instructions = Vec::new();
    let mut pending = String::new();
    for line in read("Dockerfile").lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if let Some(continued) = trimmed.strip_suffix('\\') {
            pending.push_str(continued);
            pending.push(' ');
            continue;
        }
        pending.push_str(trimmed);
        let (keyword, arguments) = pending
            .split_once(char::is_whitespace)
            .unwrap_or((pending.as_str(), ""));
        instructions.push(Instruction {
            keyword: keyword.to_uppercase(),
            arguments: arguments.trim().to_string(),
        });
        pending.clear();
    }
    assert!(
        pending.is_empty(),
        "the Dockerfile ends in a continued line"
    );
    instructions
}

/// The instructions of each stage, by the stage's base image.
fn stages() -> Vec<(String, Vec<Instruction>)> {
    let mut stages: Vec<(String, Vec<Instruction>)> = Vec::new();
    for instruction in dockerfile() {
        if instruction.keyword == "FROM" {
            stages.push((instruction.arguments.clone(), Vec::new()));
        } else {
            stages
                .last_mut()
                .expect("the Dockerfile starts with FROM")
                .1
                .push(instruction);
        }
    }
    stages
}

fn exec_form(arguments: &str) -> Vec<String> {
    serde_json::from_str(arguments)
        .unwrap_or_else(|error| panic!("not the exec (JSON) form: {arguments}: {error}"))
}

/// `major.minor` as numbers.
fn version(text: &str) -> (u32, u32) {
    let mut parts = text.split('.').map(|part| part.parse::<u32>().unwrap());
    (parts.next().unwrap(), parts.next().unwrap_or(0))
}

#[test]
fn every_instruction_is_one_the_checks_know() {
    for instruction in dockerfile() {
        assert!(
            !instruction.arguments.contains('$') || instruction.keyword == "RUN",
            "the Dockerfile's {} substitutes a variable, which the reader does not: {}",
            instruction.keyword,
            instruction.arguments
        );
        assert!(
            KNOWN.contains(&instruction.keyword.as_str()),
            "the Dockerfile's {} is new to tests/image.rs: check how its reader takes it",
            instruction.keyword
        );
    }
}

#[test]
fn the_builder_has_a_rust_at_least_as_new_as_the_crate_needs() {
    let stages = stages();
    let (builder, _) = &stages[0];
    let image = builder.split_whitespace().next().unwrap();
    let tag = image
        .strip_prefix("rust:")
        .unwrap_or_else(|| panic!("the build stage uses the rust image, not {image}"));
    let builder_rust = tag.split('-').next().unwrap();
    let needed = env!("CARGO_PKG_RUST_VERSION");
    assert!(
        version(builder_rust) >= version(needed),
        "builder Rust {builder_rust} is older than rust-version {needed}"
    );
}

#[test]
fn the_build_stage_makes_a_static_release_binary_of_the_declared_bin() {
    assert_eq!(binaries(), ["waymark"]);
    let stages = stages();
    let build: Vec<_> = stages[0]
        .1
        .iter()
        .filter(|instruction| {
            instruction.keyword == "RUN" && instruction.arguments.contains("cargo build")
        })
        .collect();
    assert_eq!(build.len(), 1, "one cargo build");
    let command = &build[0].arguments;
    for needed in [
        "--release",
        "--locked",
        "--bin waymark",
        "-unknown-linux-musl",
    ] {
        assert!(
            command.contains(needed),
            "cargo build lacks {needed}: {command}"
        );
    }
    assert!(
        command.contains("release/waymark"),
        "the binary is copied out of the build cache: {command}"
    );
    let target_added = stages[0].1.iter().any(|instruction| {
        instruction.keyword == "RUN"
            && instruction
                .arguments
                .contains("rustup target add \"$(uname -m)-unknown-linux-musl\"")
    });
    assert!(target_added, "the musl target is installed in the builder");
    assert!(
        command.contains("--target \"$(uname -m)-unknown-linux-musl\""),
        "builds for the target it installed: {command}"
    );
}

#[test]
fn the_final_stage_is_minimal_non_root_and_runs_waymark_controller() {
    let stages = stages();
    let (base, instructions) = stages.last().unwrap();
    assert_eq!(base, "scratch", "nothing but the binary and the CA bundle");
    let last = |keyword: &str| {
        instructions
            .iter()
            .rev()
            .find(|instruction| instruction.keyword == keyword)
            .unwrap_or_else(|| panic!("no {keyword} in the final stage"))
            .arguments
            .clone()
    };
    let user = last("USER");
    let uid: u32 = user
        .split(':')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("USER {user} must be numeric for runAsNonRoot"));
    assert_ne!(uid, 0, "not root");
    let gid: u32 = user.split(':').nth(1).expect("a group").parse().unwrap();
    assert_ne!(gid, 0, "not the root group");

    let entrypoint = exec_form(&last("ENTRYPOINT"));
    let command = exec_form(&last("CMD"));
    assert_eq!(
        entrypoint.len(),
        1,
        "the bare binary: manifests' args choose the subcommand"
    );
    assert!(entrypoint[0].ends_with("/waymark"), "{entrypoint:?}");
    assert_eq!(command, ["controller"]);
    let copies_binary = instructions.iter().any(|instruction| {
        instruction.keyword == "COPY"
            && instruction.arguments.starts_with("--from=build")
            && instruction.arguments.ends_with(&entrypoint[0])
    });
    assert!(
        copies_binary,
        "the entrypoint is the binary copied from the build stage"
    );
    assert!(
        last("EXPOSE").split_whitespace().any(|port| port == "8080"),
        "the default --metrics-addr port"
    );
}

#[test]
fn base_images_are_named_without_a_registry_host() {
    for (base, _) in stages() {
        let image = base.split_whitespace().next().unwrap();
        if let Some((first, _)) = image.split_once('/') {
            assert!(
                !first.contains('.') && !first.contains(':') && first != "localhost",
                "{image} names a registry host"
            );
        }
    }
}

#[test]
fn the_manifests_start_the_controller_subcommand_of_the_image() {
    // Kubernetes `args` replace the image's CMD and keep its ENTRYPOINT, so the manifests'
    // args must start with the subcommand the CMD would have given.
    let manager: Value = serde_saphyr::from_str(&read("config/manager/manager.yaml")).unwrap();
    let container = &manager["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["args"][0], "controller");
    assert!(
        container["command"].is_null(),
        "the image's entrypoint is used"
    );
    let chart = read("charts/waymark/templates/deployment.yaml");
    assert!(
        chart.contains("args:\n            - controller\n"),
        "the chart's args start with controller"
    );
    assert!(
        !chart.contains("command:"),
        "the chart uses the image's entrypoint"
    );
}

#[test]
fn the_image_name_and_tag_agree_everywhere() {
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("waymark:{version}");

    let chart: Value = serde_saphyr::from_str(&read("charts/waymark/Chart.yaml")).unwrap();
    assert_eq!(
        chart["appVersion"], version,
        "chart appVersion = crate version"
    );
    let values: Value = serde_saphyr::from_str(&read("charts/waymark/values.yaml")).unwrap();
    assert_eq!(values["image"]["repository"], "waymark");
    assert_eq!(values["image"]["tag"], "", "the tag defaults to appVersion");

    let manager = read("config/manager/manager.yaml");
    assert!(
        manager.contains(&format!("image: {image}\n")),
        "config/manager uses {image}"
    );

    let build = format!("docker build -t {image} .");
    assert!(
        read("README.md").contains(&build),
        "the README says `{build}`"
    );
    assert!(
        read("Dockerfile").contains(&build),
        "the Dockerfile says `{build}`"
    );
}

#[test]
fn the_build_context_leaves_out_build_output_and_history() {
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.trim_end_matches('/').to_string())
        .collect();
    for needed in ["target", ".git"] {
        assert!(
            ignored.iter().any(|entry| entry == needed),
            "{needed} not ignored"
        );
    }
    for kept in [
        "src",
        "Cargo.toml",
        "Cargo.lock",
        "benches",
        "e2e",
        "examples",
    ] {
        assert!(
            !ignored.iter().any(|entry| entry == kept),
            "Cargo needs {kept} to build"
        );
    }
}
