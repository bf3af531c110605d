//! The person-facing commands: list, status, promote, abort, retry, roadmap, postmortem, replay,
//! dashboard.
//!
//! Manual actions are written to the Release's status subresource (`status.request`), never
//! to `spec`, so a Git-synced Release never drifts from Git. The binary also works as the
//! kubectl plugin `kubectl-waymark`.
//!
//! In-process callers (the e2e suite) use [`run`] with a client of their own; the binary's
//! `main` uses [`main`], which builds the client from `--kubeconfig` and `--context`, and
//! [`run_controller`] for `waymark controller`, which reaches the cluster the same way.

pub mod connect;
pub mod dashboard;
pub mod errors;
#[cfg(test)]
mod golden;
pub mod identity;
pub mod list;
pub mod postmortem;
pub mod render;
pub mod replay;
pub mod request;
pub mod roadmap;

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Api, Client};

use k8s_openapi::api::apps::v1::Deployment;

use crate::api::{CLI_FIELD_MANAGER, Duration, ManualAction, Release, Role};
pub use connect::{KubeArgs, Session};
pub use errors::CliError;
use errors::{Call, NamespaceFrom, classify};

/// A command for people (the operator itself runs with `waymark controller`).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// List the Releases of a namespace (or, with -A, of all): phase, step, weight, roadmap
    /// item and age.
    List(list::ListArgs),
    /// Show a release as a person reads it: phase, steps, weights, analysis, history; without
    /// a name, list the Releases as `waymark list` does.
    Status(StatusArgs),
    /// Finish the current step (or a hold) and go on; with --full, promote now.
    Promote(PromoteArgs),
    /// Roll the canary back now.
    Abort(ActionArgs),
    /// Start a rolled-back revision again from the first step.
    Retry(ActionArgs),
    /// Which roadmap items are live, rolling out or rolled back, and delivery per horizon and
    /// kind of work.
    Roadmap(RoadmapArgs),
    /// A blameless post-mortem draft of a rolled-back or aborted revision.
    Postmortem(PostmortemArgs),
    /// Replay a Release's analysis over Prometheus history: each verdict with its numbers, and
    /// when the canary would have rolled back or been promoted.
    Replay(replay::ReplayArgs),
    /// Serve a read-only web page of the roadmap's delivery and each Release, kept live by a
    /// watch (server-sent events), with your kubeconfig.
    Dashboard(dashboard::DashboardArgs),
}

/// `waymark controller`: the operator's flags and the cluster to run against.
#[derive(clap::Args, Debug, Clone)]
pub struct ControllerCommand {
    /// The operator's own flags.
    #[command(flatten)]
    pub controller: crate::controller::ControllerArgs,
    /// How log lines are written: `text`, or `json` (one object per line, with `namespace`,
    /// `release`, `revision` and `roadmap_item` as keys). `RUST_LOG` filters them.
    #[arg(long, value_enum, default_value_t, env = "WAYMARK_LOG_FORMAT")]
    pub log_format: crate::controller::logs::LogFormat,
    /// The cluster to run against, as every command takes it.
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// Run the operator until interrupted (Ctrl-C or SIGTERM), against the cluster `--kubeconfig`
/// and `--context` name, with the same rules as every other command: `$KUBECONFIG`,
/// `~/.kube/config`, then the in-cluster service account.
pub async fn run_controller(
    command: ControllerCommand,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    crate::controller::logs::init(command.log_format);
    let session = connect::connect(&command.kube).await?;
    tracing::info!(
        kubeconfig = %session.tried.kubeconfig,
        context = session.tried.context.as_deref().unwrap_or("-"),
        server = %session.tried.server,
        "connecting to the Kubernetes API server"
    );
    crate::controller::run_with_client(
        session.client,
        command.controller,
        crate::controller::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// `waymark status`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct StatusArgs {
    /// Name of the Release (without it, every Release of the namespace is listed).
    pub name: Option<String>,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// Without a name: list the Releases of every namespace.
    #[arg(short = 'A', long, conflicts_with_all = ["name", "watch"])]
    pub all_namespaces: bool,
    /// Redraw every time the release changes (a watch on that one object).
    #[arg(short, long, requires = "name")]
    pub watch: bool,
    /// Output format: the text view, or the Release object.
    #[arg(short, long, value_enum, default_value_t = StatusFormat::Text)]
    pub output: StatusFormat,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How `waymark status` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusFormat {
    /// The release as a person reads it.
    Text,
    /// The Release object as JSON.
    Json,
    /// The Release object as YAML.
    Yaml,
}

/// `waymark promote`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct PromoteArgs {
    /// Name of the Release.
    pub name: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Skip the remaining steps and analysis gates.
    #[arg(long)]
    pub full: bool,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `waymark abort` and `waymark retry`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ActionArgs {
    /// Name of the Release.
    pub name: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// `waymark roadmap`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct RoadmapArgs {
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long, conflicts_with = "all_namespaces")]
    pub namespace: Option<String>,
    /// All namespaces.
    #[arg(short = 'A', long)]
    pub all_namespaces: bool,
    /// Count the history entries finished within this span (e.g. 30d, 12w).
    #[arg(long, default_value = "30d")]
    pub since: Duration,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = RoadmapFormat::Table)]
    pub output: RoadmapFormat,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How `waymark roadmap` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoadmapFormat {
    /// Aligned tables.
    Table,
    /// Markdown, to paste into a review.
    Markdown,
    /// JSON.
    Json,
    /// YAML.
    Yaml,
}

/// `waymark postmortem`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct PostmortemArgs {
    /// Name of the Release.
    pub name: String,
    /// Namespace (default: the kubeconfig context's).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// The revision (template hash) to write about (default: the newest rolled back or
    /// aborted).
    #[arg(long)]
    pub revision: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = PostmortemFormat::Markdown)]
    pub output: PostmortemFormat,
    #[command(flatten)]
    pub kube: KubeArgs,
}

/// How `waymark postmortem` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PostmortemFormat {
    /// The draft, to paste into the team's post-mortem document.
    Markdown,
    /// The facts, for tools.
    Json,
}

impl Command {
    /// The connection flags of the command (`None` for replay, which needs no cluster).
    pub fn kube_args(&self) -> Option<&KubeArgs> {
        match self {
            Command::List(args) => Some(&args.kube),
            Command::Status(args) => Some(&args.kube),
            Command::Promote(args) => Some(&args.kube),
            Command::Abort(args) | Command::Retry(args) => Some(&args.kube),
            Command::Roadmap(args) => Some(&args.kube),
            Command::Postmortem(args) => Some(&args.kube),
            Command::Dashboard(args) => Some(&args.kube),
            Command::Replay(_) => None,
        }
    }
}

/// The name to show in usage: `kubectl waymark` when run as the kubectl plugin
/// `kubectl-waymark`, else `waymark`.
pub fn program_name(argv0: &str) -> &'static str {
    let file = std::path::Path::new(argv0)
        .file_stem()
        .and_then(|stem| stem.to_str())
        .unwrap_or_default();
    if file.starts_with("kubectl-") {
        "kubectl waymark"
    } else {
        "waymark"
    }
}

/// Runs one command for the binary: builds the client from the command's `--kubeconfig` and
/// `--context`, prints to stdout, prints an error to stderr; the exit code says whether it
/// succeeded.
pub async fn main(command: Command) -> ExitCode {
    let mut stdout = std::io::stdout();
    let result = async {
        match command.kube_args() {
            None => run_without_cluster(&command, &mut stdout).await,
            Some(kube) => {
                let mut session = connect::connect(kube).await?;
                session.terminal = std::io::stdout().is_terminal();
                run_in(&session, command, &mut stdout).await
            }
        }
    }
    .await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one command against `client`, writing what a person reads to `out`. For in-process
/// callers; the requester of a manual action is whoever the API server says `client` is.
pub async fn run(
    command: Command,
    client: Client,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    if command.kube_args().is_none() {
        return run_without_cluster(&command, out).await;
    }
    run_in(&Session::from_client(client), command, out).await
}

async fn run_without_cluster(
    command: &Command,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    if let Command::Replay(args) = command {
        let text = replay_command(args).await?;
        out.write_all(text.as_bytes())?;
    }
    Ok(())
}

/// `waymark replay`: reads the file, asks Prometheus, returns what to print.
pub async fn replay_command(args: &replay::ReplayArgs) -> Result<String, replay::ReplayError> {
    let text = std::fs::read_to_string(&args.file).map_err(|error| replay::ReplayError::Read {
        path: args.file.display().to_string(),
        reason: error.to_string(),
    })?;
    let prepared = replay::prepare(args, &text, now())?;
    let report = replay::fetch(prepared).await?;
    Ok(match args.output {
        replay::ReplayFormat::Text => replay::render_text(&report, args.changes),
        replay::ReplayFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&replay::render_json(&report)).unwrap_or_default()
        ),
    })
}

/// The namespace a command works in and how it was chosen.
fn namespace_of(session: &Session, flag: &Option<String>) -> (String, NamespaceFrom) {
    match flag {
        Some(namespace) => (namespace.clone(), NamespaceFrom::Flag),
        None => (
            session.client.default_namespace().to_string(),
            NamespaceFrom::Context,
        ),
    }
}

/// Runs one command in `session`.
pub async fn run_in(
    session: &Session,
    command: Command,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    match command {
        Command::List(args) => {
            let releases = list_releases(session, &args.namespace, args.all_namespaces).await?;
            out.write_all(list_output(&releases, StatusFormat::Text).as_bytes())?;
            Ok(())
        }
        Command::Status(args) => {
            let Some(name) = args.name else {
                let releases = list_releases(session, &args.namespace, args.all_namespaces).await?;
                out.write_all(list_output(&releases, args.output).as_bytes())?;
                return Ok(());
            };
            let (namespace, from) = namespace_of(session, &args.namespace);
            if args.watch {
                return watch_status(session, &namespace, from, &name, args.output, out).await;
            }
            let release = get_release(session, &namespace, from, &name).await?;
            let live = live_of(session, &namespace, &name, args.output).await;
            out.write_all(status_output(&release, args.output, &live).as_bytes())?;
            Ok(())
        }
        Command::Promote(args) => {
            let action = if args.full {
                ManualAction::PromoteFull
            } else {
                ManualAction::Promote
            };
            let (namespace, from) = namespace_of(session, &args.namespace);
            let message = request_action(session, &namespace, from, &args.name, action).await?;
            writeln!(out, "{message}")?;
            Ok(())
        }
        Command::Abort(args) => {
            let (namespace, from) = namespace_of(session, &args.namespace);
            let message =
                request_action(session, &namespace, from, &args.name, ManualAction::Abort).await?;
            writeln!(out, "{message}")?;
            Ok(())
        }
        Command::Retry(args) => {
            let (namespace, from) = namespace_of(session, &args.namespace);
            let message =
                request_action(session, &namespace, from, &args.name, ManualAction::Retry).await?;
            writeln!(out, "{message}")?;
            Ok(())
        }
        Command::Roadmap(args) => {
            let releases = list_releases(session, &args.namespace, args.all_namespaces).await?;
            let since = Some(args.since);
            let (rows, summary) = roadmap::view(&releases.items, now(), since);
            let text = match args.output {
                RoadmapFormat::Table => roadmap::table(&rows, &summary, since),
                RoadmapFormat::Markdown => roadmap::markdown(&rows, &summary, since),
                RoadmapFormat::Json => to_json(&roadmap::document(&rows, &summary)),
                RoadmapFormat::Yaml => to_yaml(&roadmap::document(&rows, &summary)),
            };
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Postmortem(args) => {
            let (namespace, from) = namespace_of(session, &args.namespace);
            let release = get_release(session, &namespace, from, &args.name).await?;
            let entry = postmortem::pick(&release, args.revision.as_deref())?;
            let findings = postmortem::findings(&release, entry);
            let text = match args.output {
                PostmortemFormat::Markdown => postmortem::markdown(&findings),
                PostmortemFormat::Json => to_json(&postmortem::json(&findings)),
            };
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Replay(args) => {
            let text = replay_command(&args).await?;
            out.write_all(text.as_bytes())?;
            Ok(())
        }
        Command::Dashboard(args) => dashboard::run(session, args, out).await,
    }
}

/// The clock, to the second: what the CLI prints and writes never carries nanoseconds.
fn now() -> Timestamp {
    render::to_the_second(Timestamp::now())
}

fn to_json(value: &impl serde::Serialize) -> String {
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

fn to_yaml(value: &impl serde::Serialize) -> String {
    serde_saphyr::to_string(value).unwrap_or_default()
}

/// The Releases of the namespace `namespace` names (the context's without it), or of every
/// namespace; and the namespace listed (`None` for all).
async fn list_releases(
    session: &Session,
    namespace: &Option<String>,
    all_namespaces: bool,
) -> Result<Listed, CliError> {
    let (namespace, from) = namespace_of(session, namespace);
    let (api, call_namespace): (Api<Release>, Option<String>) = if all_namespaces {
        (Api::all(session.client.clone()), None)
    } else {
        (
            Api::namespaced(session.client.clone(), &namespace),
            Some(namespace.clone()),
        )
    };
    let call = Call {
        verb: "list",
        resource: "releases",
        namespace: call_namespace.clone(),
        name: None,
        namespace_from: from,
    };
    let releases = api
        .list(&ListParams::default())
        .await
        .map_err(|error| classify(error, &call, &session.tried))?;
    Ok(Listed {
        items: releases.items,
        namespace: call_namespace,
    })
}

/// The Releases a list call returned and the namespace it listed (`None`: every namespace).
struct Listed {
    items: Vec<Release>,
    namespace: Option<String>,
}

/// What `waymark list` (and `waymark status` without a name) prints: the table, or the
/// Releases as a JSON or YAML list.
fn list_output(listed: &Listed, format: StatusFormat) -> String {
    match format {
        StatusFormat::Text if listed.items.is_empty() => {
            list::nothing_found(listed.namespace.as_deref())
        }
        StatusFormat::Text => list::table(&listed.items, now(), listed.namespace.is_none()),
        StatusFormat::Json => to_json(&release_list(&listed.items)),
        StatusFormat::Yaml => to_yaml(&release_list(&listed.items)),
    }
}

/// The Releases as the list object `kubectl get releases -o json` prints, so tools read
/// either the same way.
fn release_list(items: &[Release]) -> serde_json::Value {
    serde_json::json!({
        "apiVersion": "waymark.dev/v1alpha1",
        "kind": "ReleaseList",
        "items": items,
    })
}

/// What `waymark status` prints for `release` in `format` (the text shows `live` too).
pub fn status_output(release: &Release, format: StatusFormat, live: &render::Live) -> String {
    match format {
        StatusFormat::Text => render::status_text(release, live),
        StatusFormat::Json => to_json(release),
        StatusFormat::Yaml => to_yaml(release),
    }
}

/// The clock and the child Deployments' pods, for the text view (JSON and YAML print the
/// Release alone). A Deployment that cannot be read is said so, not an error: the Release is
/// what was asked for.
async fn live_of(
    session: &Session,
    namespace: &str,
    name: &str,
    format: StatusFormat,
) -> render::Live {
    if format != StatusFormat::Text {
        return render::Live::default();
    }
    let api: Api<Deployment> = Api::namespaced(session.client.clone(), namespace);
    let mut pods = Vec::new();
    let mut unread = None;
    for role in [Role::Stable, Role::Canary] {
        match api.get_opt(&role.child_name(name)).await {
            Ok(Some(deployment)) => pods.push(render::PodCount {
                role: role.as_str(),
                available: deployment
                    .status
                    .as_ref()
                    .and_then(|s| s.available_replicas)
                    .unwrap_or(0),
                wanted: deployment
                    .spec
                    .as_ref()
                    .and_then(|s| s.replicas)
                    .unwrap_or(1),
            }),
            Ok(None) => {}
            Err(error) => {
                unread = Some(match error {
                    kube::Error::Api(status) => format!("{} ({})", status.message, status.reason),
                    error => error.to_string(),
                });
                break;
            }
        }
    }
    render::Live {
        now: Some(now()),
        pods: unread.map_or(Ok(pods), Err),
    }
}

async fn get_release(
    session: &Session,
    namespace: &str,
    from: NamespaceFrom,
    name: &str,
) -> Result<Release, CliError> {
    let api: Api<Release> = Api::namespaced(session.client.clone(), namespace);
    let call = Call::on_release("get", "releases", namespace, name, from);
    api.get(name)
        .await
        .map_err(|error| classify(error, &call, &session.tried))
}

/// `release` with the pod template of the Deployment its `spec.workloadRef` names, as the
/// controller judges it (the rule of [`crate::rollout::manual`] needs the template). Unchanged
/// without a reference, or when the Deployment cannot be read or used: the rule then refuses,
/// as the controller acts on nothing until the reference is fixed.
async fn with_referenced_template(session: &Session, namespace: &str, release: Release) -> Release {
    use crate::rollout::workload::{self, ReferencedDeployment, WorkloadLookup};
    let Some(reference) = &release.spec.workload_ref else {
        return release;
    };
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(session.client.clone(), namespace);
    let lookup = match deployments.get_opt(&reference.name).await {
        Ok(Some(deployment)) => {
            let spec = deployment.spec.unwrap_or_default();
            WorkloadLookup::Found(Box::new(ReferencedDeployment {
                template: spec.template,
                replicas: spec.replicas.unwrap_or(1),
                ..ReferencedDeployment::default()
            }))
        }
        Ok(None) | Err(_) => WorkloadLookup::Missing,
    };
    match workload::resolve(&release, &lookup) {
        Ok(Some(resolved)) => resolved,
        Ok(None) | Err(_) => release,
    }
}

/// Checks that `action` makes sense for the release now, asks the API server who is asking,
/// then writes the request to the status subresource. Returns the confirmation to print.
pub async fn request_action(
    session: &Session,
    namespace: &str,
    from: NamespaceFrom,
    name: &str,
    action: ManualAction,
) -> Result<String, CliError> {
    let release = get_release(session, namespace, from, name).await?;
    let release = with_referenced_template(session, namespace, release).await;
    // Refuse before asking anything else: a refused request writes nothing.
    request::build_request(&release, action, Timestamp::now(), None)?;
    let identity = identity::whoami(session).await;
    // The clock's nanoseconds keep the request's id unique; `requestedAt` is written to the
    // second.
    let request = request::build_request(&release, action, Timestamp::now(), identity.name)?;
    let api: Api<Release> = Api::namespaced(session.client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(CLI_FIELD_MANAGER.into()),
        ..Default::default()
    };
    let call = Call::on_release("patch", "releases/status", namespace, name, from);
    api.patch_status(
        name,
        &params,
        &Patch::Merge(request::request_patch(&request)),
    )
    .await
    .map_err(|error| classify(error, &call, &session.tried))?;
    let mut message = request::confirmation(&release, &request);
    if let Some(note) = identity.note {
        message.push_str(&format!("\nnote: {note}"));
    }
    Ok(message)
}

/// The API server's error behind a failed watch, for [`classify`].
fn watch_failure(error: watcher::Error) -> kube::Error {
    match error {
        watcher::Error::InitialListFailed(error)
        | watcher::Error::WatchStartFailed(error)
        | watcher::Error::WatchFailed(error) => error,
        watcher::Error::WatchError(status) => kube::Error::Api(status),
        watcher::Error::NoResourceVersion => {
            kube::Error::Service("the API server gave no resourceVersion to watch from".into())
        }
    }
}

/// Prints the release, then again on every change, from a watch on that one object; a
/// terminal is redrawn in place. Ends when the Release is deleted.
async fn watch_status(
    session: &Session,
    namespace: &str,
    from: NamespaceFrom,
    name: &str,
    format: StatusFormat,
    out: &mut (dyn Write + Send),
) -> Result<(), CliError> {
    // Fail fast with "not found" instead of waiting forever on a name with a typo.
    get_release(session, namespace, from, name).await?;
    let api: Api<Release> = Api::namespaced(session.client.clone(), namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let call = Call::on_release("watch", "releases", namespace, name, from);
    let mut stream = watcher(api, config).boxed();
    while let Some(event) = stream
        .try_next()
        .await
        .map_err(|error| classify(watch_failure(error), &call, &session.tried))?
    {
        match event {
            watcher::Event::Apply(release) | watcher::Event::InitApply(release) => {
                if session.terminal {
                    // Home and clear: the new view replaces the old one.
                    write!(out, "\x1b[H\x1b[2J")?;
                } else {
                    writeln!(out, "--- {} ---", now())?;
                }
                let live = live_of(session, namespace, name, format).await;
                out.write_all(status_output(&release, format, &live).as_bytes())?;
                out.flush()?;
            }
            watcher::Event::Delete(_) => {
                writeln!(out, "release {namespace}/{name} was deleted")?;
                return Ok(());
            }
            watcher::Event::Init | watcher::Event::InitDone => {}
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod fixtures {
    use crate::api::{Phase, Release, ReleaseSpec, ReleaseStatus};

    /// The example checkout Release with the given phase and canary revision.
    pub fn release_in(phase: Phase, canary: Option<&str>) -> Release {
        let text = include_str!("../../examples/checkout.yaml");
        let document = text.split("\n---\n").next().unwrap_or_default();
        let value: serde_json::Value = serde_saphyr::from_str(document).unwrap();
        let spec: ReleaseSpec = serde_json::from_value(value["spec"].clone()).unwrap();
        let mut release = Release::new("checkout", spec);
        release.metadata.namespace = Some("shop".into());
        release.status = Some(ReleaseStatus {
            phase: Some(phase),
            canary_revision: canary.map(Into::into),
            ..Default::default()
        });
        release
    }

    /// The example Release settled on its template (stable `template_revision`, promoted from
    /// an earlier revision).
    pub fn healthy_release() -> Release {
        let mut release = release_in(Phase::Healthy, None);
        let revision = crate::api::template_revision(&release.spec.template);
        release.status.as_mut().unwrap().stable_revision = Some(revision);
        release
    }

    /// The example Release with a canary of its template at step `step` (0-based) against
    /// stable `5d8b9c`.
    pub fn canary_release(phase: Phase, step: i32) -> Release {
        let mut release = release_in(phase, None);
        let revision = crate::api::template_revision(&release.spec.template);
        let status = release.status.as_mut().unwrap();
        status.stable_revision = Some("5d8b9c".into());
        status.canary_revision = Some(revision);
        status.current_step = Some(step);
        release
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use http::{Method, Request, Response};
    use kube::client::Body;
    use serde_json::{Value, json};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;
    type Responder = tower_test::mock::SendResponse<Response<Body>>;

    const RELEASE_PATH: &str = "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout";
    const REVIEWS_PATH: &str = "/apis/authentication.k8s.io/v1/selfsubjectreviews";

    fn mock_client() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "shop"), handle)
    }

    fn respond(send: Responder, code: u16, body: &Value) {
        send.send_response(
            Response::builder()
                .status(code)
                .body(Body::from(serde_json::to_vec(body).unwrap()))
                .unwrap(),
        );
    }

    fn status_body(code: u16, reason: &str, message: &str, name: Option<&str>) -> Value {
        let mut status = json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure",
            "message": message, "reason": reason, "code": code
        });
        if let Some(name) = name {
            status["details"] = json!({"name": name, "group": "waymark.dev", "kind": "releases"});
        }
        status
    }

    async fn answer_get(handle: &mut Handle, release: &Release) {
        let (request, send) = handle.next_request().await.expect("a GET");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), RELEASE_PATH);
        respond(send, 200, &serde_json::to_value(release).unwrap());
    }

    /// Answers the SelfSubjectReview POST with `answer` (a review naming a user, or a Status).
    async fn answer_review(handle: &mut Handle, code: u16, answer: Value) {
        let (request, send) = handle.next_request().await.expect("a SelfSubjectReview");
        assert_eq!(request.method(), Method::POST);
        assert_eq!(request.uri().path(), REVIEWS_PATH);
        let body = request.into_body().collect_bytes().await.unwrap();
        let review: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(review["apiVersion"], "authentication.k8s.io/v1");
        assert_eq!(review["kind"], "SelfSubjectReview");
        respond(send, code, &answer);
    }

    fn review_of(user: &str) -> Value {
        json!({
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview",
            "metadata": {"creationTimestamp": null},
            "status": {"userInfo": {"username": user, "groups": ["system:authenticated"]}}
        })
    }

    /// Takes the status PATCH, checks where it goes and how, and returns its body.
    async fn take_status_patch(handle: &mut Handle, release: &Release) -> Value {
        let (request, send) = handle.next_request().await.expect("a PATCH");
        assert_eq!(request.method(), Method::PATCH);
        assert_eq!(request.uri().path(), format!("{RELEASE_PATH}/status"));
        assert_eq!(request.uri().query(), Some("&fieldManager=waymark-cli"));
        assert_eq!(
            request.headers().get("content-type").unwrap(),
            "application/merge-patch+json"
        );
        let body = request.into_body().collect_bytes().await.unwrap();
        let patch: Value = serde_json::from_slice(&body).unwrap();
        let mut updated = release.clone();
        updated.status.as_mut().unwrap().request =
            serde_json::from_value(patch["status"]["request"].clone()).unwrap();
        respond(send, 200, &serde_json::to_value(&updated).unwrap());
        patch
    }

    fn action(name: &str, namespace: Option<&str>) -> ActionArgs {
        ActionArgs {
            name: name.into(),
            namespace: namespace.map(Into::into),
            kube: KubeArgs::default(),
        }
    }

    async fn run_to_string(command: Command, client: Client) -> Result<String, CliError> {
        let mut out = Vec::new();
        run(command, client, &mut out).await?;
        Ok(String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn promote_records_the_user_the_api_server_authenticates_in_the_status_request() {
        let (client, mut handle) = mock_client();
        let release = fixtures::canary_release(Phase::Paused, 3);
        let canary = release
            .status
            .as_ref()
            .unwrap()
            .canary_revision
            .clone()
            .unwrap();
        let server = tokio::spawn(async move {
            answer_get(&mut handle, &release).await;
            answer_review(&mut handle, 201, review_of("alice@example.com")).await;
            take_status_patch(&mut handle, &release).await
        });
        let command = Command::Promote(PromoteArgs {
            name: "checkout".into(),
            namespace: None,
            full: false,
            kube: KubeArgs::default(),
        });
        let output = run_to_string(command, client).await.unwrap();
        let patch = server.await.unwrap();
        let status = patch["status"].as_object().unwrap();
        assert_eq!(
            status.keys().collect::<Vec<_>>(),
            ["request"],
            "only the request"
        );
        assert_eq!(status["request"]["action"], "Promote");
        assert_eq!(status["request"]["revision"], canary.as_str());
        assert_eq!(status["request"]["stage"], "Canary");
        assert_eq!(status["request"]["step"], 3);
        assert_eq!(status["request"]["requestedBy"], "alice@example.com");
        assert!(
            output.starts_with(&format!(
                "promote requested for release checkout (revision {canary}), roadmap item PAY-142: step 4/4 of canary {canary} ends"
            )),
            "{output}"
        );
        assert!(!output.contains("note:"), "{output}");
    }

    #[tokio::test]
    async fn without_self_subject_review_the_kubeconfig_user_is_recorded_with_a_note() {
        let (client, mut handle) = mock_client();
        let release = fixtures::canary_release(Phase::Progressing, 0);
        let server = tokio::spawn(async move {
            answer_get(&mut handle, &release).await;
            let missing = status_body(
                404,
                "NotFound",
                "the server could not find the requested resource",
                None,
            );
            answer_review(&mut handle, 404, missing).await;
            take_status_patch(&mut handle, &release).await
        });
        let mut session = Session::from_client(client);
        session.kubeconfig_user = Some("dev-admin".into());
        let mut out = Vec::new();
        run_in(
            &session,
            Command::Abort(action("checkout", Some("shop"))),
            &mut out,
        )
        .await
        .unwrap();
        let patch = server.await.unwrap();
        assert_eq!(patch["status"]["request"]["action"], "Abort");
        assert_eq!(patch["status"]["request"]["requestedBy"], "dev-admin");
        let output = String::from_utf8(out).unwrap();
        assert!(
            output.contains("note: the API server has no SelfSubjectReview API (Kubernetes before 1.28), so it cannot say who you are; recording the kubeconfig user \"dev-admin\" as the requester"),
            "{output}"
        );
    }

    #[tokio::test]
    async fn retry_on_a_healthy_release_is_refused_without_a_write() {
        let (client, mut handle) = mock_client();
        let release = fixtures::healthy_release();
        let server = tokio::spawn(async move {
            answer_get(&mut handle, &release).await;
            handle
        });
        let error = run_to_string(Command::Retry(action("checkout", None)), client)
            .await
            .unwrap_err();
        assert!(matches!(error, CliError::Refused(_)), "{error}");
        assert!(
            error
                .to_string()
                .contains("nothing was rolled back: stable "),
            "{error}"
        );
        let mut handle = server.await.unwrap();
        assert!(
            handle.next_request().await.is_none(),
            "no review and no write after a refusal"
        );
    }

    #[tokio::test]
    async fn a_missing_release_names_the_namespace_searched() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a GET");
            let body = status_body(
                404,
                "NotFound",
                "releases.waymark.dev \"checkout\" not found",
                Some("checkout"),
            );
            respond(send, 404, &body);
        });
        let error = run_to_string(Command::Abort(action("checkout", None)), client)
            .await
            .unwrap_err();
        assert_eq!(
            error.to_string(),
            "release checkout not found in namespace shop (the kubeconfig context's default namespace; pass -n to search another); list Releases with `kubectl get releases -A`"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_refused_status_write_names_the_permission() {
        let (client, mut handle) = mock_client();
        let release = fixtures::canary_release(Phase::Paused, 3);
        let server = tokio::spawn(async move {
            answer_get(&mut handle, &release).await;
            answer_review(&mut handle, 201, review_of("bob")).await;
            let (_, send) = handle.next_request().await.expect("a PATCH");
            let message = "releases.waymark.dev \"checkout\" is forbidden: User \"bob\" cannot patch resource \"releases/status\" in API group \"waymark.dev\" in the namespace \"shop\"";
            respond(
                send,
                403,
                &status_body(403, "Forbidden", message, Some("checkout")),
            );
        });
        let error = run_to_string(Command::Abort(action("checkout", Some("shop"))), client)
            .await
            .unwrap_err();
        assert!(
            error.to_string().starts_with(
                "forbidden: bob may not patch releases/status (waymark.dev) in namespace shop"
            ),
            "{error}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn roadmap_without_the_crd_says_how_to_install_it() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let (request, send) = handle.next_request().await.expect("a LIST");
            assert_eq!(request.uri().path(), "/apis/waymark.dev/v1alpha1/releases");
            send.send_response(
                Response::builder()
                    .status(404)
                    .body(Body::from(b"404 page not found".to_vec()))
                    .unwrap(),
            );
        });
        let command = Command::Roadmap(RoadmapArgs {
            namespace: None,
            all_namespaces: true,
            since: Duration::from_secs(30 * 86_400),
            output: RoadmapFormat::Json,
            kube: KubeArgs::default(),
        });
        let error = run_to_string(command, client).await.unwrap_err();
        assert!(
            error
                .to_string()
                .contains("install it with `kubectl apply --server-side -f crds/`"),
            "{error}"
        );
        server.await.unwrap();
    }

    #[tokio::test]
    async fn status_prints_the_release_as_json_or_yaml() {
        let release = fixtures::release_in(Phase::Paused, Some("6f9c7d"));
        for (format, parse) in [
            (
                StatusFormat::Json,
                (|text: &str| serde_json::from_str::<Release>(text).unwrap())
                    as fn(&str) -> Release,
            ),
            (StatusFormat::Yaml, |text: &str| {
                serde_saphyr::from_str::<Release>(text).unwrap()
            }),
        ] {
            let (client, mut handle) = mock_client();
            let served = release.clone();
            let server = tokio::spawn(async move { answer_get(&mut handle, &served).await });
            let command = Command::Status(StatusArgs {
                name: Some("checkout".into()),
                namespace: None,
                all_namespaces: false,
                watch: false,
                output: format,
                kube: KubeArgs::default(),
            });
            let text = run_to_string(command, client).await.unwrap();
            assert_eq!(parse(&text), release, "{format:?}");
            server.await.unwrap();
        }
    }

    #[tokio::test]
    async fn status_watch_redraws_on_each_watch_event_and_ends_when_the_release_is_deleted() {
        let (client, mut handle) = mock_client();
        let paused = fixtures::release_in(Phase::Paused, Some("6f9c7d"));
        let mut progressing = paused.clone();
        progressing.status.as_mut().unwrap().phase = Some(Phase::Progressing);
        let server = tokio::spawn(async move {
            answer_get(&mut handle, &paused).await;
            let mut seen = Vec::new();
            while let Some((request, send)) = handle.next_request().await {
                let query = request.uri().query().unwrap_or_default().to_string();
                assert_eq!(request.method(), Method::GET);
                // Each text view reads the child Deployments' pods live.
                let deployments = "/apis/apps/v1/namespaces/shop/deployments/";
                if let Some(child) = request.uri().path().strip_prefix(deployments) {
                    seen.push("pods");
                    if child == "checkout-stable" {
                        let stable = json!({
                            "apiVersion": "apps/v1", "kind": "Deployment",
                            "metadata": {"name": child, "namespace": "shop"},
                            "spec": {"replicas": 4, "selector": {}, "template": {}},
                            "status": {"availableReplicas": 3}
                        });
                        respond(send, 200, &stable);
                    } else {
                        respond(
                            send,
                            404,
                            &status_body(404, "NotFound", "not found", Some(child)),
                        );
                    }
                    continue;
                }
                assert_eq!(
                    request.uri().path(),
                    "/apis/waymark.dev/v1alpha1/namespaces/shop/releases"
                );
                assert!(
                    query.contains("fieldSelector=metadata.name%3Dcheckout"),
                    "{query}"
                );
                if query.contains("watch=true") {
                    seen.push("watch");
                    let mut moved = progressing.clone();
                    moved.metadata.resource_version = Some("3".into());
                    let lines = format!(
                        "{}\n{}\n",
                        json!({"type": "MODIFIED", "object": moved}),
                        json!({"type": "DELETED", "object": moved})
                    );
                    send.send_response(
                        Response::builder()
                            .body(Body::from(lines.into_bytes()))
                            .unwrap(),
                    );
                    continue;
                }
                seen.push("list");
                let mut listed = paused.clone();
                listed.metadata.resource_version = Some("2".into());
                let list = json!({
                    "apiVersion": "waymark.dev/v1alpha1", "kind": "ReleaseList",
                    "metadata": {"resourceVersion": "2"}, "items": [listed]
                });
                respond(send, 200, &list);
            }
            seen
        });
        let command = Command::Status(StatusArgs {
            name: Some("checkout".into()),
            namespace: None,
            all_namespaces: false,
            watch: true,
            output: StatusFormat::Text,
            kube: KubeArgs::default(),
        });
        let output = run_to_string(command, client).await.unwrap();
        assert_eq!(
            server.await.unwrap(),
            ["list", "pods", "pods", "watch", "pods", "pods"],
            "one list, then a watch (no polling); the pods of both children for each view"
        );
        let draws: Vec<&str> = output.split("--- ").skip(1).collect();
        assert_eq!(draws.len(), 2, "{output}");
        assert!(draws[0].contains("Phase:     Paused"), "{output}");
        assert!(
            draws[0].contains("Pods:      stable 3/4 available\n"),
            "{output}"
        );
        assert!(draws[1].contains("Phase:     Progressing"), "{output}");
        assert!(
            output.ends_with("release shop/checkout was deleted\n"),
            "{output}"
        );
    }

    /// Answers one LIST of Releases at `path` with `items`.
    async fn answer_list(handle: &mut Handle, path: &str, items: Vec<Release>) {
        let (request, send) = handle.next_request().await.expect("a LIST");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(request.uri().path(), path);
        let list = json!({
            "apiVersion": "waymark.dev/v1alpha1", "kind": "ReleaseList",
            "metadata": {"resourceVersion": "7"}, "items": items
        });
        respond(send, 200, &list);
    }

    #[tokio::test]
    async fn list_and_status_without_a_name_print_the_table_of_the_namespace_or_of_all() {
        let mut canary = fixtures::canary_release(Phase::Progressing, 1);
        canary.status.as_mut().unwrap().step_progress = Some("2/4".into());
        canary.status.as_mut().unwrap().canary_weight = Some(20);
        let mut other = fixtures::healthy_release();
        other.metadata.namespace = Some("payments".into());
        other.metadata.name = Some("ledger".into());
        let status = |all_namespaces| {
            Command::Status(StatusArgs {
                name: None,
                namespace: None,
                all_namespaces,
                watch: false,
                output: StatusFormat::Text,
                kube: KubeArgs::default(),
            })
        };
        let list = |all_namespaces| {
            Command::List(list::ListArgs {
                namespace: None,
                all_namespaces,
                kube: KubeArgs::default(),
            })
        };
        for (command, all) in [(list(false), false), (status(false), false)] {
            let (client, mut handle) = mock_client();
            let items = vec![canary.clone()];
            let server = tokio::spawn(async move {
                let path = "/apis/waymark.dev/v1alpha1/namespaces/shop/releases";
                answer_list(&mut handle, path, items).await;
            });
            let output = run_to_string(command, client).await.unwrap();
            server.await.unwrap();
            assert!(!all);
            let lines: Vec<&str> = output.lines().collect();
            assert_eq!(lines.len(), 2, "{output}");
            assert!(
                lines[0].starts_with("NAME       PHASE         STEP   WEIGHT   ROADMAP ITEM   AGE"),
                "{output}"
            );
            assert!(
                lines[1].starts_with("checkout   Progressing   2/4    20       PAY-142"),
                "{output}"
            );
        }
        for command in [list(true), status(true)] {
            let (client, mut handle) = mock_client();
            let items = vec![canary.clone(), other.clone()];
            let server = tokio::spawn(async move {
                answer_list(&mut handle, "/apis/waymark.dev/v1alpha1/releases", items).await;
            });
            let output = run_to_string(command, client).await.unwrap();
            server.await.unwrap();
            let names: Vec<String> = output
                .lines()
                .map(|line| {
                    line.split_whitespace()
                        .take(2)
                        .collect::<Vec<_>>()
                        .join(" ")
                })
                .collect();
            assert_eq!(
                names,
                ["NAMESPACE NAME", "payments ledger", "shop checkout"]
            );
        }
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let path = "/apis/waymark.dev/v1alpha1/namespaces/shop/releases";
            answer_list(&mut handle, path, vec![]).await;
        });
        let output = run_to_string(list(false), client).await.unwrap();
        server.await.unwrap();
        assert_eq!(output, "No releases found in namespace shop.\n");

        let (client, mut handle) = mock_client();
        let items = vec![canary.clone()];
        let server = tokio::spawn(async move {
            let path = "/apis/waymark.dev/v1alpha1/namespaces/shop/releases";
            answer_list(&mut handle, path, items).await;
        });
        let command = Command::Status(StatusArgs {
            name: None,
            namespace: None,
            all_namespaces: false,
            watch: false,
            output: StatusFormat::Json,
            kube: KubeArgs::default(),
        });
        let output = run_to_string(command, client).await.unwrap();
        server.await.unwrap();
        let document: Value = serde_json::from_str(&output).unwrap();
        assert_eq!(document["kind"], "ReleaseList");
        let listed: Vec<Release> = serde_json::from_value(document["items"].clone()).unwrap();
        assert_eq!(listed, [canary]);
    }

    #[test]
    fn status_watch_needs_a_name_and_all_namespaces_takes_none() {
        use clap::Parser;
        #[derive(clap::Parser, Debug)]
        struct Cli {
            #[command(subcommand)]
            command: Command,
        }
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("waymark").chain(args.iter().copied()))
        };
        let Command::Status(listed) = parse(&["status", "-A"]).unwrap().command else {
            panic!("status");
        };
        assert_eq!((listed.name, listed.all_namespaces), (None, true));
        assert!(parse(&["status", "--watch"]).is_err());
        assert!(parse(&["status", "checkout", "-A"]).is_err());
        assert!(parse(&["list", "-n", "shop", "-A"]).is_err());
        let Command::List(list) = parse(&["list", "--request-timeout=30s"]).unwrap().command else {
            panic!("list");
        };
        assert_eq!(
            list.kube.request_timeout,
            Some(connect::RequestTimeout(Some(
                std::time::Duration::from_secs(30)
            )))
        );
    }

    #[test]
    fn as_a_kubectl_plugin_the_usage_says_kubectl_waymark() {
        assert_eq!(
            program_name("/usr/local/bin/kubectl-waymark"),
            "kubectl waymark"
        );
        assert_eq!(program_name("kubectl-waymark.exe"), "kubectl waymark");
        assert_eq!(program_name("./target/debug/waymark"), "waymark");
    }
}
