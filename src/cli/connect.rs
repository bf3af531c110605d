//! Reaching the cluster the way kubectl does: `--kubeconfig`, `--context`, else `$KUBECONFIG`,
//! `~/.kube/config`, else the in-cluster service account; and remembering what was tried, so
//! that an unreachable cluster is reported with the kubeconfig, context and server.

use std::path::PathBuf;

use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::errors::{CliError, Tried};

/// How to reach the cluster; every command that talks to Kubernetes takes these.
#[derive(clap::Args, Debug, Clone, Default, PartialEq, Eq)]
pub struct KubeArgs {
    /// Path to the kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then the
    /// in-cluster service account).
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current context).
    #[arg(long)]
    pub context: Option<String>,
}

/// A connection to the cluster and what a message about it needs.
#[derive(Clone)]
pub struct Session {
    /// The client.
    pub client: Client,
    /// What was used to reach the cluster, for error messages.
    pub tried: Tried,
    /// The kubeconfig user of the context, the requester's name of last resort when the API
    /// server cannot say who is asking.
    pub kubeconfig_user: Option<String>,
    /// Whether the output is a terminal (then `status --watch` redraws in place).
    pub terminal: bool,
}

impl Session {
    /// A session over a client built elsewhere (tests, in-process callers).
    pub fn from_client(client: Client) -> Self {
        Self {
            client,
            tried: Tried {
                kubeconfig: "the client given by the caller".into(),
                context: None,
                server: "the API server".into(),
            },
            kubeconfig_user: None,
            terminal: false,
        }
    }
}

/// Where kubeconfig would be read from without `--kubeconfig`, as a person would say it.
fn default_kubeconfig() -> String {
    match std::env::var("KUBECONFIG") {
        Ok(paths) if !paths.is_empty() => format!("$KUBECONFIG ({paths})"),
        _ => "~/.kube/config".into(),
    }
}

/// Builds the client `args` ask for, without contacting the API server yet (the first call
/// tells whether it is reachable, and its error says what was tried).
pub async fn connect(args: &KubeArgs) -> Result<Session, CliError> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        cluster: None,
        user: None,
    };
    let (kubeconfig, source) = match &args.kubeconfig {
        Some(path) => {
            let shown = path.display().to_string();
            let kubeconfig = Kubeconfig::read_from(path).map_err(|error| CliError::Config {
                what: format!("cannot read --kubeconfig {shown}"),
                reason: error.to_string(),
            })?;
            (Some(kubeconfig), shown)
        }
        None => (Kubeconfig::read().ok(), default_kubeconfig()),
    };
    let Some(kubeconfig) = kubeconfig else {
        if let Some(context) = &args.context {
            return Err(CliError::Config {
                what: format!("no kubeconfig at {source} to take --context {context} from"),
                reason: "pass --kubeconfig PATH".into(),
            });
        }
        let config = Config::incluster().map_err(|error| CliError::Config {
            what: format!("no kubeconfig at {source}, and not inside a cluster"),
            reason: format!("{error}; pass --kubeconfig PATH or set KUBECONFIG"),
        })?;
        return session(config, "the in-cluster service account".into(), None, None);
    };
    let context = args
        .context
        .clone()
        .or_else(|| kubeconfig.current_context.clone());
    let user = context.as_ref().and_then(|name| {
        kubeconfig
            .contexts
            .iter()
            .find(|named| &named.name == name)
            .and_then(|named| named.context.as_ref())
            .and_then(|context| context.user.clone())
    });
    let config = Config::from_custom_kubeconfig(kubeconfig, &options)
        .await
        .map_err(|error| CliError::Config {
            what: format!(
                "cannot use kubeconfig {source}{}",
                context
                    .as_deref()
                    .map(|c| format!(", context {c}"))
                    .unwrap_or_default()
            ),
            reason: error.to_string(),
        })?;
    session(config, source, context, user)
}

fn session(
    mut config: Config,
    kubeconfig: String,
    context: Option<String>,
    kubeconfig_user: Option<String>,
) -> Result<Session, CliError> {
    // A person waits at the prompt: say "unreachable" after seconds, not minutes.
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    let tried = Tried {
        kubeconfig,
        context,
        server: config.cluster_url.to_string(),
    };
    let client = Client::try_from(config).map_err(|error| CliError::NoCluster {
        tried: tried.clone(),
        reason: error.to_string(),
    })?;
    Ok(Session {
        client,
        tried,
        kubeconfig_user,
        terminal: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const KUBECONFIG: &str = r#"
apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev
  cluster: {server: "https://127.0.0.1:1"}
- name: prod
  cluster: {server: "https://127.0.0.1:2"}
contexts:
- name: dev
  context: {cluster: dev, user: dev-admin, namespace: shop}
- name: prod
  context: {cluster: prod, user: prod-reader}
users:
- name: dev-admin
  user: {token: abc}
- name: prod-reader
  user: {token: def}
"#;

    fn kubeconfig_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), KUBECONFIG).unwrap();
        file
    }

    #[tokio::test]
    async fn the_kubeconfig_and_context_given_are_the_ones_used_and_remembered() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let file = kubeconfig_file();
        let session = connect(&KubeArgs {
            kubeconfig: Some(file.path().into()),
            context: Some("prod".into()),
        })
        .await
        .unwrap();
        assert_eq!(session.tried.context.as_deref(), Some("prod"));
        assert_eq!(session.tried.server, "https://127.0.0.1:2/");
        assert_eq!(session.tried.kubeconfig, file.path().display().to_string());
        assert_eq!(session.kubeconfig_user.as_deref(), Some("prod-reader"));
        assert_eq!(session.client.default_namespace(), "default");

        let current = connect(&KubeArgs {
            kubeconfig: Some(file.path().into()),
            context: None,
        })
        .await
        .unwrap();
        assert_eq!(current.tried.context.as_deref(), Some("dev"));
        assert_eq!(current.client.default_namespace(), "shop");
    }

    #[tokio::test]
    async fn an_unknown_context_or_missing_file_says_what_was_tried() {
        let file = kubeconfig_file();
        let error = connect(&KubeArgs {
            kubeconfig: Some(file.path().into()),
            context: Some("staging".into()),
        })
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(error.contains("context staging"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing");
        let error = connect(&KubeArgs {
            kubeconfig: Some(missing.clone()),
            context: None,
        })
        .await
        .err()
        .unwrap()
        .to_string();
        assert!(
            error.starts_with(&format!("cannot read --kubeconfig {}", missing.display())),
            "{error}"
        );
    }
}
