//! The command line's errors, each saying what to do: which kubeconfig and context could not
//! reach a cluster, that the CRD is missing and how to install it, which permission the API
//! server refused, which namespace was searched.

use kube::core::Status;

use super::postmortem::PostmortemError;
use super::replay::ReplayError;
use super::request::Refusal;

/// What was used to reach the cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tried {
    /// The kubeconfig, as a person would name it (`~/.kube/config`, a path, in-cluster).
    pub kubeconfig: String,
    /// The context, when a kubeconfig was used.
    pub context: Option<String>,
    /// The API server's URL.
    pub server: String,
    /// `--request-timeout` as given, when it was: a request it ended says "timed out".
    pub request_timeout: Option<String>,
}

impl std::fmt::Display for Tried {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (kubeconfig {}", self.server, self.kubeconfig)?;
        if let Some(context) = &self.context {
            write!(f, ", context {context}")?;
        }
        if let Some(timeout) = &self.request_timeout {
            write!(f, ", --request-timeout {timeout}")?;
        }
        write!(f, ")")
    }
}

/// One API call, for the error message of its failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Call {
    /// The verb as RBAC names it: `get`, `list`, `watch`, `patch`, `create`.
    pub verb: &'static str,
    /// The resource as RBAC names it: `releases`, `releases/status`.
    pub resource: &'static str,
    /// The namespace, for namespaced calls.
    pub namespace: Option<String>,
    /// The object's name, for calls on one object.
    pub name: Option<String>,
    /// How the namespace was chosen, for "not found": `-n` or the context's default.
    pub namespace_from: NamespaceFrom,
}

impl Call {
    /// A call on the Release `name` in `namespace`.
    pub fn on_release(
        verb: &'static str,
        resource: &'static str,
        namespace: &str,
        name: &str,
        namespace_from: NamespaceFrom,
    ) -> Self {
        Call {
            verb,
            resource,
            namespace: Some(namespace.to_string()),
            name: Some(name.to_string()),
            namespace_from,
        }
    }
}

/// How a command's namespace was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceFrom {
    /// `-n NAMESPACE`.
    Flag,
    /// The kubeconfig context's default namespace.
    Context,
}

/// A refused call, as the API server worded it in its 403.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forbidden {
    /// Who the API server says asked (`alice`, `system:serviceaccount:ci:deployer`).
    pub user: Option<String>,
    /// The verb refused.
    pub verb: String,
    /// The resource refused, with its subresource (`releases/status`).
    pub resource: String,
    /// The API group (`waymark.dev`).
    pub group: String,
    /// The namespace, or `None` at the cluster scope.
    pub namespace: Option<String>,
}

impl Forbidden {
    /// Reads the API server's words: `User "alice" cannot patch resource "releases/status" in
    /// API group "waymark.dev" in the namespace "shop"`; falls back to `call` for the parts it
    /// cannot find.
    pub fn from_message(message: &str, call: &Call) -> Self {
        let quoted_after = |marker: &str| {
            let start = message.find(marker)? + marker.len();
            let end = message[start..].find('"')?;
            Some(message[start..start + end].to_string())
        };
        let verb = message
            .find("\" cannot ")
            .map(|start| &message[start + "\" cannot ".len()..])
            .and_then(|rest| rest.split_whitespace().next())
            .map(str::to_string);
        Forbidden {
            user: quoted_after("User \""),
            verb: verb.unwrap_or_else(|| call.verb.to_string()),
            resource: quoted_after("resource \"").unwrap_or_else(|| call.resource.to_string()),
            group: quoted_after("API group \"").unwrap_or_else(|| "waymark.dev".to_string()),
            namespace: if message.contains("at the cluster scope") {
                None
            } else {
                quoted_after("in the namespace \"").or_else(|| call.namespace.clone())
            },
        }
    }

    /// The `kubectl auth can-i` line that checks this permission.
    pub fn can_i(&self) -> String {
        let (resource, subresource) = match self.resource.split_once('/') {
            Some((resource, subresource)) => (resource, Some(subresource)),
            None => (self.resource.as_str(), None),
        };
        let qualified = if self.group.is_empty() {
            resource.to_string()
        } else {
            format!("{resource}.{}", self.group)
        };
        let mut line = format!("kubectl auth can-i {} {qualified}", self.verb);
        if let Some(subresource) = subresource {
            line.push_str(&format!(" --subresource={subresource}"));
        }
        match &self.namespace {
            Some(namespace) => line.push_str(&format!(" -n {namespace}")),
            None => line.push_str(" -A"),
        }
        line
    }
}

impl std::fmt::Display for Forbidden {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let who = self.user.as_deref().unwrap_or("you");
        let group = if self.group.is_empty() {
            String::new()
        } else {
            format!(" ({})", self.group)
        };
        let place = match &self.namespace {
            Some(namespace) => format!("in namespace {namespace}"),
            None => "at the cluster scope".to_string(),
        };
        write!(
            f,
            "forbidden: {who} may not {} {}{group} {place}; ask a cluster admin for a role that grants it (check with `{}`)",
            self.verb,
            self.resource,
            self.can_i()
        )
    }
}

/// Errors of the person-facing commands.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The kubeconfig (or in-cluster account) cannot be used.
    #[error("{what}: {reason}")]
    Config {
        /// What was being read.
        what: String,
        /// Why it failed and what to pass instead.
        reason: String,
    },
    /// No API server answered.
    #[error(
        "cannot reach the Kubernetes API server at {tried}: {reason}; check that the cluster is up (`kubectl cluster-info`), or choose another with --kubeconfig/--context"
    )]
    NoCluster {
        /// What was used.
        tried: Tried,
        /// The innermost cause.
        reason: String,
    },
    /// The Release CRD is not installed.
    #[error(
        "the Release CRD (releases.waymark.dev) is not installed on {server}: install it with `kubectl apply --server-side -f crds/` (or `waymark crd | kubectl apply --server-side -f -`)"
    )]
    CrdNotInstalled {
        /// The API server's URL.
        server: String,
    },
    /// The API server refused the call (403).
    #[error("{0}")]
    Forbidden(Forbidden),
    /// The API server did not accept the credentials (401).
    #[error(
        "the API server at {tried} did not accept your credentials ({message}): log in again or refresh the context's token"
    )]
    Unauthorized {
        /// What was used.
        tried: Tried,
        /// The API server's words.
        message: String,
    },
    /// The Release does not exist.
    #[error(
        "release {name} not found in namespace {namespace} ({from}); list Releases with `kubectl get releases -A`"
    )]
    NotFound {
        /// The namespace searched.
        namespace: String,
        /// The name asked for.
        name: String,
        /// How that namespace was chosen.
        from: &'static str,
    },
    /// The action is not allowed in the release's phase.
    #[error(transparent)]
    Refused(#[from] Refusal),
    /// Nothing to write a post-mortem about.
    #[error(transparent)]
    Postmortem(#[from] PostmortemError),
    /// A replay that cannot run.
    #[error(transparent)]
    Replay(#[from] ReplayError),
    /// The API server refused or failed a call for another reason.
    #[error("{what}: the API server answered {code}: {message}")]
    Api {
        /// The call, in words.
        what: String,
        /// The HTTP status.
        code: u16,
        /// The API server's words.
        message: String,
    },
    /// The output cannot be written (a closed pipe).
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// The innermost cause of an error chain: `connection refused`, `dns error: ...`.
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    current.to_string()
}

/// Turns a failed API call into an error that says what to do.
pub fn classify(error: kube::Error, call: &Call, tried: &Tried) -> CliError {
    match error {
        kube::Error::Api(status) => classify_status(&status, call, tried),
        other => CliError::NoCluster {
            tried: tried.clone(),
            reason: innermost(&other),
        },
    }
}

/// [`classify`] for an answer of the API server.
pub fn classify_status(status: &Status, call: &Call, tried: &Tried) -> CliError {
    let what = || {
        let target = match (&call.namespace, &call.name) {
            (Some(namespace), Some(name)) => format!(" {namespace}/{name}"),
            (Some(namespace), None) => format!(" in namespace {namespace}"),
            (None, Some(name)) => format!(" {name}"),
            (None, None) => String::new(),
        };
        format!("{} {}{target}", call.verb, call.resource)
    };
    match status.code {
        401 => CliError::Unauthorized {
            tried: tried.clone(),
            message: status.message.clone(),
        },
        403 => CliError::Forbidden(Forbidden::from_message(&status.message, call)),
        404 if call.resource.starts_with("releases") => {
            let names_the_object = status.reason == "NotFound"
                && status
                    .details
                    .as_ref()
                    .is_some_and(|details| !details.name.is_empty());
            match (&call.name, names_the_object) {
                (Some(name), true) => CliError::NotFound {
                    namespace: call.namespace.clone().unwrap_or_default(),
                    name: name.clone(),
                    from: match call.namespace_from {
                        NamespaceFrom::Flag => "given with -n",
                        NamespaceFrom::Context => {
                            "the kubeconfig context's default namespace; pass -n to search another"
                        }
                    },
                },
                _ => CliError::CrdNotInstalled {
                    server: tried.server.clone(),
                },
            }
        }
        code => CliError::Api {
            what: what(),
            code,
            message: status.message.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::response::StatusDetails;

    fn tried() -> Tried {
        Tried {
            kubeconfig: "~/.kube/config".into(),
            context: Some("kind-dev".into()),
            server: "https://127.0.0.1:6443/".into(),
            request_timeout: None,
        }
    }

    fn call(verb: &'static str, resource: &'static str, from: NamespaceFrom) -> Call {
        Call {
            verb,
            resource,
            namespace: Some("shop".into()),
            name: Some("checkout".into()),
            namespace_from: from,
        }
    }

    fn status(code: u16, reason: &str, message: &str, name: Option<&str>) -> Status {
        Status {
            status: None,
            code,
            message: message.into(),
            metadata: None,
            reason: reason.into(),
            details: name.map(|name| StatusDetails {
                name: name.into(),
                group: "waymark.dev".into(),
                kind: "releases".into(),
                uid: String::new(),
                causes: vec![],
                retry_after_seconds: 0,
            }),
        }
    }

    #[test]
    fn a_403_names_the_verb_resource_and_namespace_the_server_refused() {
        let message = r#"releases.waymark.dev "checkout" is forbidden: User "alice" cannot patch resource "releases/status" in API group "waymark.dev" in the namespace "shop""#;
        let error = classify_status(
            &status(403, "Forbidden", message, Some("checkout")),
            &call("patch", "releases/status", NamespaceFrom::Flag),
            &tried(),
        );
        assert_eq!(
            error.to_string(),
            "forbidden: alice may not patch releases/status (waymark.dev) in namespace shop; ask a cluster admin for a role that grants it (check with `kubectl auth can-i patch releases.waymark.dev --subresource=status -n shop`)"
        );
    }

    #[test]
    fn a_cluster_scoped_403_says_so() {
        let message = r#"releases.waymark.dev is forbidden: User "system:serviceaccount:ci:deployer" cannot list resource "releases" in API group "waymark.dev" at the cluster scope"#;
        let mut list = call("list", "releases", NamespaceFrom::Flag);
        list.namespace = None;
        list.name = None;
        let error = classify_status(&status(403, "Forbidden", message, None), &list, &tried());
        let text = error.to_string();
        assert!(
            text.starts_with(
                "forbidden: system:serviceaccount:ci:deployer may not list releases (waymark.dev) at the cluster scope"
            ),
            "{text}"
        );
        assert!(
            text.contains("`kubectl auth can-i list releases.waymark.dev -A`"),
            "{text}"
        );
    }

    #[test]
    fn a_403_in_other_words_falls_back_to_the_call() {
        let error = classify_status(
            &status(403, "Forbidden", "denied by a webhook", None),
            &call("get", "releases", NamespaceFrom::Flag),
            &tried(),
        );
        assert!(
            error
                .to_string()
                .starts_with("forbidden: you may not get releases (waymark.dev) in namespace shop"),
            "{error}"
        );
    }

    #[test]
    fn a_missing_release_names_the_namespace_searched_and_how_it_was_chosen() {
        let missing = status(
            404,
            "NotFound",
            r#"releases.waymark.dev "checkout" not found"#,
            Some("checkout"),
        );
        let error = classify_status(
            &missing,
            &call("get", "releases", NamespaceFrom::Context),
            &tried(),
        );
        assert_eq!(
            error.to_string(),
            "release checkout not found in namespace shop (the kubeconfig context's default namespace; pass -n to search another); list Releases with `kubectl get releases -A`"
        );
        let error = classify_status(
            &missing,
            &call("get", "releases", NamespaceFrom::Flag),
            &tried(),
        );
        assert!(error.to_string().contains("(given with -n)"), "{error}");
    }

    #[test]
    fn a_404_without_the_object_means_the_crd_is_missing() {
        // What kube makes of the API server's plain-text "404 page not found".
        let missing_type = status(
            404,
            "Failed to parse error data",
            "404 page not found",
            None,
        );
        let error = classify_status(
            &missing_type,
            &call("get", "releases", NamespaceFrom::Flag),
            &tried(),
        );
        assert_eq!(
            error.to_string(),
            "the Release CRD (releases.waymark.dev) is not installed on https://127.0.0.1:6443/: install it with `kubectl apply --server-side -f crds/` (or `waymark crd | kubectl apply --server-side -f -`)"
        );
    }

    #[test]
    fn an_unreachable_server_names_the_kubeconfig_and_context_tried() {
        let error = CliError::NoCluster {
            tried: tried(),
            reason: "Connection refused (os error 111)".into(),
        };
        assert_eq!(
            error.to_string(),
            "cannot reach the Kubernetes API server at https://127.0.0.1:6443/ (kubeconfig ~/.kube/config, context kind-dev): Connection refused (os error 111); check that the cluster is up (`kubectl cluster-info`), or choose another with --kubeconfig/--context"
        );
    }

    #[test]
    fn other_answers_quote_the_server() {
        let error = classify_status(
            &status(
                422,
                "Invalid",
                "status.request.action: Unsupported value",
                None,
            ),
            &call("patch", "releases/status", NamespaceFrom::Flag),
            &tried(),
        );
        assert_eq!(
            error.to_string(),
            "patch releases/status shop/checkout: the API server answered 422: status.request.action: Unsupported value"
        );
    }
}
