//! The person-facing commands: status, promote, abort, retry, roadmap.
//!
//! Manual actions are written to the Release's status subresource (`status.request`), never
//! to `spec`, so a Git-synced Release never drifts from Git.

#[cfg(test)]
mod golden;
pub mod postmortem;
pub mod render;
pub mod replay;
pub mod request;
pub mod roadmap;

use std::process::ExitCode;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::jiff::Timestamp;
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

use crate::api::{CLI_FIELD_MANAGER, ManualAction, Release};

/// A command for people (the operator itself runs with `waymark controller`).
#[derive(clap::Subcommand, Debug, Clone)]
pub enum Command {
    /// Show a release as a person reads it: phase, steps, weights, analysis, history.
    Status {
        /// Name of the Release.
        name: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Print again every time the release changes.
        #[arg(short, long)]
        watch: bool,
    },
    /// Finish the current step (or a hold) and go on; with --full, promote now.
    Promote {
        /// Name of the Release.
        name: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
        /// Skip the remaining steps and analysis gates.
        #[arg(long)]
        full: bool,
    },
    /// Roll the canary back now.
    Abort {
        /// Name of the Release.
        name: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Start a rolled-back revision again from the first step.
    Retry {
        /// Name of the Release.
        name: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long)]
        namespace: Option<String>,
    },
    /// Replay a Release's analysis over Prometheus history: each verdict with its numbers, and
    /// when the canary would have rolled back or been promoted.
    Replay(replay::ReplayArgs),
    /// List which roadmap items are live, rolling out or rolled back.
    Roadmap {
        /// Namespace (default: the kubeconfig context's).
        #[arg(short, long, conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// All namespaces.
        #[arg(short = 'A', long)]
        all_namespaces: bool,
    },
}

/// Errors of the person-facing commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// No usable kubeconfig or in-cluster account.
    #[error("cannot reach Kubernetes: {0}")]
    Connect(#[source] kube::Error),
    /// The Release does not exist.
    #[error("release {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    /// The action is not allowed in the release's phase.
    #[error(transparent)]
    Refused(#[from] request::Refusal),
    /// The API server refused or failed a call.
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
}

/// Run one command; the exit code says whether it succeeded.
pub async fn run(command: Command) -> ExitCode {
    if let Command::Replay(args) = &command {
        return match replay_command(args).await {
            Ok(text) => {
                print!("{text}");
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("error: {error}");
                ExitCode::FAILURE
            }
        };
    }
    let result = async {
        let client = Client::try_default().await.map_err(CliError::Connect)?;
        execute(client, command).await
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

/// `waymark replay`: reads the file, asks Prometheus, returns what to print.
pub async fn replay_command(args: &replay::ReplayArgs) -> Result<String, replay::ReplayError> {
    let text = std::fs::read_to_string(&args.file).map_err(|error| replay::ReplayError::Read {
        path: args.file.display().to_string(),
        reason: error.to_string(),
    })?;
    let prepared = replay::prepare(args, &text, Timestamp::now())?;
    let report = replay::fetch(prepared).await?;
    Ok(match args.output {
        replay::ReplayFormat::Text => replay::render_text(&report),
        replay::ReplayFormat::Json => format!(
            "{}\n",
            serde_json::to_string_pretty(&replay::render_json(&report)).unwrap_or_default()
        ),
    })
}

async fn execute(client: Client, command: Command) -> Result<(), CliError> {
    let default_namespace = client.default_namespace().to_string();
    let namespace_or_default =
        |namespace: Option<String>| namespace.unwrap_or_else(|| default_namespace.clone());
    match command {
        Command::Status {
            name,
            namespace,
            watch,
        } => {
            let namespace = namespace_or_default(namespace);
            if watch {
                watch_status(client, &namespace, &name).await
            } else {
                let release = get_release(&client, &namespace, &name).await?;
                print!("{}", render::status_text(&release));
                Ok(())
            }
        }
        Command::Promote {
            name,
            namespace,
            full,
        } => {
            let action = if full {
                ManualAction::PromoteFull
            } else {
                ManualAction::Promote
            };
            let message =
                request_action(&client, &namespace_or_default(namespace), &name, action).await?;
            println!("{message}");
            Ok(())
        }
        Command::Abort { name, namespace } => {
            let message = request_action(
                &client,
                &namespace_or_default(namespace),
                &name,
                ManualAction::Abort,
            )
            .await?;
            println!("{message}");
            Ok(())
        }
        Command::Retry { name, namespace } => {
            let message = request_action(
                &client,
                &namespace_or_default(namespace),
                &name,
                ManualAction::Retry,
            )
            .await?;
            println!("{message}");
            Ok(())
        }
        Command::Roadmap {
            namespace,
            all_namespaces,
        } => {
            let api: Api<Release> = if all_namespaces {
                Api::all(client)
            } else {
                Api::namespaced(client, &namespace_or_default(namespace))
            };
            let releases =
                api.list(&ListParams::default())
                    .await
                    .map_err(|source| CliError::Api {
                        what: "listing releases".into(),
                        source,
                    })?;
            print!(
                "{}",
                render::roadmap_table(&render::roadmap_rows(&releases.items))
            );
            Ok(())
        }
        Command::Replay(_) => Ok(()),
    }
}

async fn get_release(client: &Client, namespace: &str, name: &str) -> Result<Release, CliError> {
    let api: Api<Release> = Api::namespaced(client.clone(), namespace);
    api.get_opt(name)
        .await
        .map_err(|source| CliError::Api {
            what: format!("reading release {namespace}/{name}"),
            source,
        })?
        .ok_or_else(|| CliError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        })
}

/// Check that `action` makes sense for the release now, then write it to the status
/// subresource. Returns the confirmation to print.
pub async fn request_action(
    client: &Client,
    namespace: &str,
    name: &str,
    action: ManualAction,
) -> Result<String, CliError> {
    let release = get_release(client, namespace, name).await?;
    let requested_by = std::env::var("USER").ok().filter(|user| !user.is_empty());
    let request = request::build_request(&release, action, Timestamp::now(), requested_by)?;
    let api: Api<Release> = Api::namespaced(client.clone(), namespace);
    let params = PatchParams {
        field_manager: Some(CLI_FIELD_MANAGER.into()),
        ..Default::default()
    };
    api.patch_status(
        name,
        &params,
        &Patch::Merge(request::request_patch(&request)),
    )
    .await
    .map_err(|source| CliError::Api {
        what: format!(
            "writing the {} request to {namespace}/{name}",
            request::verb(action)
        ),
        source,
    })?;
    Ok(request::confirmation(&release, &request))
}

async fn watch_status(client: Client, namespace: &str, name: &str) -> Result<(), CliError> {
    // Fail fast with "not found" instead of waiting forever on a name with a typo.
    get_release(&client, namespace, name).await?;
    let api: Api<Release> = Api::namespaced(client, namespace);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut stream = watcher(api, config).applied_objects().boxed();
    while let Some(release) = stream.try_next().await.map_err(|error| CliError::Api {
        what: format!("watching release {namespace}/{name}"),
        source: kube::Error::Service(Box::new(error)),
    })? {
        println!("--- {} ---", Timestamp::now());
        print!("{}", render::status_text(&release));
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
        let value: serde_yaml::Value = serde_yaml::from_str(document).unwrap();
        let spec: ReleaseSpec = serde_yaml::from_value(value["spec"].clone()).unwrap();
        let mut release = Release::new("checkout", spec);
        release.metadata.namespace = Some("shop".into());
        release.status = Some(ReleaseStatus {
            phase: Some(phase),
            canary_revision: canary.map(Into::into),
            ..Default::default()
        });
        release
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Phase;
    use http::{Method, Request, Response};
    use kube::client::Body;

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    fn mock_client() -> (Client, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        (Client::new(service, "shop"), handle)
    }

    async fn answer_get(handle: &mut Handle, release: &Release) {
        let (request, send) = handle.next_request().await.expect("a GET");
        assert_eq!(request.method(), Method::GET);
        assert_eq!(
            request.uri().path(),
            "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout"
        );
        let body = serde_json::to_vec(release).unwrap();
        send.send_response(Response::builder().body(Body::from(body)).unwrap());
    }

    #[tokio::test]
    async fn promote_writes_only_the_request_to_the_status_subresource() {
        let (client, mut handle) = mock_client();
        let release = fixtures::release_in(Phase::Paused, Some("6f9c7d"));
        let server = tokio::spawn(async move {
            answer_get(&mut handle, &release).await;
            let (request, send) = handle.next_request().await.expect("a PATCH");
            assert_eq!(request.method(), Method::PATCH);
            assert_eq!(
                request.uri().path(),
                "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout/status"
            );
            assert_eq!(request.uri().query(), Some("&fieldManager=waymark-cli"));
            assert_eq!(
                request.headers().get("content-type").unwrap(),
                "application/merge-patch+json"
            );
            let body = request.into_body().collect_bytes().await.unwrap();
            let patch: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(patch["status"]["request"]["action"], "Promote");
            assert_eq!(patch["status"]["request"]["revision"], "6f9c7d");
            assert_eq!(patch["status"].as_object().unwrap().len(), 1);
            let mut updated = release.clone();
            updated.status.as_mut().unwrap().request =
                serde_json::from_value(patch["status"]["request"].clone()).unwrap();
            send.send_response(
                Response::builder()
                    .body(Body::from(serde_json::to_vec(&updated).unwrap()))
                    .unwrap(),
            );
        });
        let message = request_action(&client, "shop", "checkout", ManualAction::Promote)
            .await
            .unwrap();
        assert!(
            message.contains("promote requested for release checkout (revision 6f9c7d)"),
            "{message}"
        );
        assert!(message.contains("PAY-142"), "{message}");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn retry_on_a_healthy_release_is_refused_without_a_write() {
        let (client, mut handle) = mock_client();
        let release = fixtures::release_in(Phase::Healthy, None);
        let server = tokio::spawn(async move {
            answer_get(&mut handle, &release).await;
            handle
        });
        let error = request_action(&client, "shop", "checkout", ManualAction::Retry)
            .await
            .unwrap_err();
        assert!(matches!(error, CliError::Refused(_)), "{error}");
        assert!(
            error.to_string().contains("retry works after a rollback"),
            "{error}"
        );
        let mut handle = server.await.unwrap();
        drop(client);
        assert!(
            handle.next_request().await.is_none(),
            "no write after a refusal"
        );
    }

    #[tokio::test]
    async fn a_missing_release_is_reported_by_name() {
        let (client, mut handle) = mock_client();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a GET");
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "releases.waymark.dev \"checkout\" not found", "reason": "NotFound", "code": 404
            });
            send.send_response(
                Response::builder()
                    .status(404)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
        });
        let error = request_action(&client, "shop", "checkout", ManualAction::Abort)
            .await
            .unwrap_err();
        assert_eq!(error.to_string(), "release shop/checkout not found");
        server.await.unwrap();
    }
}
