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
    /// How long to wait for each API server request before giving up, as kubectl's flag:
    /// a duration with a unit (30s, 2m, 1h), a whole number of seconds, or 0 for no timeout.
    /// It bounds connecting, sending and each wait for an answer, so `status --watch` ends
    /// when the Release stays unchanged that long (default: 10s to connect, no limit after).
    #[arg(long, value_name = "DURATION", value_parser = RequestTimeout::parse)]
    pub request_timeout: Option<RequestTimeout>,
}

/// `--request-timeout`: `None` inside is "0", no timeout at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestTimeout(pub Option<std::time::Duration>);

impl std::fmt::Display for RequestTimeout {
    /// `0`, or the duration in Go form (`1s`, `1m30s`, `500ms`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            None => write!(f, "0"),
            Some(duration) => write!(
                f,
                "{}",
                crate::api::Duration::from_millis(
                    duration.as_millis().try_into().unwrap_or(u64::MAX)
                )
            ),
        }
    }
}

impl RequestTimeout {
    /// Reads the flag as kubectl does: `0` (no timeout), a whole number of seconds, or a Go
    /// duration: numbers with units `h`, `m`, `s`, `ms`, `us`, `ns`, e.g. `30s`, `1m30s`,
    /// `1.5h`. The error says what to write.
    pub fn parse(text: &str) -> Result<Self, String> {
        let refuse = |why: &str| {
            format!(
                "{why}: write a duration with a unit such as 30s, 2m or 1h (or a whole number of \
                 seconds), or 0 for no timeout"
            )
        };
        let text = text.trim();
        if text.is_empty() {
            return Err(refuse("the timeout is empty"));
        }
        if text.starts_with('-') {
            return Err(refuse("the timeout is negative"));
        }
        if let Ok(seconds) = text.parse::<u64>() {
            return Ok(Self(
                (seconds > 0).then(|| std::time::Duration::from_secs(seconds)),
            ));
        }
        let mut total = 0f64;
        let mut rest = text;
        while !rest.is_empty() {
            let number_end = rest
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .ok_or_else(|| refuse(&format!("{text:?} has a number without a unit")))?;
            let (number, after) = rest.split_at(number_end);
            let value: f64 = number
                .parse()
                .map_err(|_| refuse(&format!("{text:?} is not a duration")))?;
            let unit_end = after
                .find(|c: char| c.is_ascii_digit() || c == '.')
                .unwrap_or(after.len());
            let (unit, next) = after.split_at(unit_end);
            let seconds_per_unit = match unit {
                "h" => 3600.0,
                "m" => 60.0,
                "s" => 1.0,
                "ms" => 1e-3,
                "us" | "µs" => 1e-6,
                "ns" => 1e-9,
                _ => return Err(refuse(&format!("{text:?} has the unknown unit {unit:?}"))),
            };
            total += value * seconds_per_unit;
            rest = next;
        }
        if !total.is_finite() || total > 1e9 {
            return Err(refuse(&format!("{text:?} is too long")));
        }
        Ok(Self(
            (total > 0.0).then(|| std::time::Duration::from_secs_f64(total)),
        ))
    }

    /// Sets the client's timeouts: each of connecting, sending and waiting for an answer gets
    /// the whole duration (kubectl bounds the request as a whole; the client has no such
    /// limit, and these three are what a request waits on); `0` lifts all three.
    pub fn apply(self, config: &mut Config) {
        config.connect_timeout = self.0;
        config.read_timeout = self.0;
        config.write_timeout = self.0;
    }
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
                request_timeout: None,
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
        return session(
            config,
            args.request_timeout,
            "the in-cluster service account".into(),
            None,
            None,
        );
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
    session(config, args.request_timeout, source, context, user)
}

fn session(
    mut config: Config,
    request_timeout: Option<RequestTimeout>,
    kubeconfig: String,
    context: Option<String>,
    kubeconfig_user: Option<String>,
) -> Result<Session, CliError> {
    // A person waits at the prompt: say "unreachable" after seconds, not minutes.
    config.connect_timeout = Some(std::time::Duration::from_secs(10));
    if let Some(timeout) = request_timeout {
        timeout.apply(&mut config);
    }
    let tried = Tried {
        kubeconfig,
        context,
        server: config.cluster_url.to_string(),
        request_timeout: request_timeout.map(|timeout| timeout.to_string()),
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
            request_timeout: None,
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
            request_timeout: None,
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
            request_timeout: None,
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
            request_timeout: None,
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

    #[test]
    fn request_timeouts_are_read_as_kubectl_reads_them() {
        let seconds = |s: f64| Ok(RequestTimeout(Some(std::time::Duration::from_secs_f64(s))));
        for (text, expected) in [
            ("30s", seconds(30.0)),
            ("2m", seconds(120.0)),
            ("1h", seconds(3600.0)),
            ("1m30s", seconds(90.0)),
            ("1.5s", seconds(1.5)),
            ("500ms", seconds(0.5)),
            ("45", seconds(45.0)),
            ("0", Ok(RequestTimeout(None))),
            ("0s", Ok(RequestTimeout(None))),
        ] {
            assert_eq!(RequestTimeout::parse(text), expected, "{text}");
        }
    }

    #[test]
    fn a_bad_request_timeout_says_what_to_write() {
        for (text, why) in [
            ("abc", "\"abc\" is not a duration"),
            ("1.5", "\"1.5\" has a number without a unit"),
            ("1m30", "\"1m30\" has a number without a unit"),
            ("30x", "\"30x\" has the unknown unit \"x\""),
            ("-5s", "the timeout is negative"),
            ("", "the timeout is empty"),
        ] {
            let error = RequestTimeout::parse(text).unwrap_err();
            assert!(error.starts_with(why), "{text}: {error}");
            assert!(
                error.ends_with("write a duration with a unit such as 30s, 2m or 1h (or a whole number of seconds), or 0 for no timeout"),
                "{error}"
            );
        }
    }

    #[test]
    fn the_request_timeout_bounds_connecting_sending_and_waiting_and_zero_lifts_them() {
        let mut config = Config::new("https://127.0.0.1:1".parse().unwrap());
        RequestTimeout::parse("30s").unwrap().apply(&mut config);
        let thirty = Some(std::time::Duration::from_secs(30));
        assert_eq!(
            (
                config.connect_timeout,
                config.read_timeout,
                config.write_timeout
            ),
            (thirty, thirty, thirty)
        );
        RequestTimeout::parse("0").unwrap().apply(&mut config);
        assert_eq!(
            (
                config.connect_timeout,
                config.read_timeout,
                config.write_timeout
            ),
            (None, None, None)
        );
    }
}
