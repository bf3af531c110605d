//! The controller's errors, each with a metric label.

use crate::rollout::Refusal;

/// Everything that can go wrong in the shell.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// A Kubernetes API call failed. Boxed: `kube::Error` is large and every result carries it.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// The API server refused one of Waymark's writes (RBAC, validation, quota, an admission
    /// webhook), or the object belongs to someone else. Shown in the Release's status.
    #[error("{object}: {message}")]
    Refused {
        /// The object, e.g. `Deployment shop/checkout-canary`.
        object: String,
        /// CamelCase, for the condition's reason: `Forbidden`, `QuotaExceeded`, `Invalid`,
        /// `AdmissionDenied`, `Conflict`, `NotOwned`, `Rejected`.
        reason: &'static str,
        /// What the API server said, or why Waymark would not touch the object.
        message: String,
    },

    /// The API server refused to create `object` because the Release's namespace is being
    /// deleted. Nobody's to fix and nothing to retry: the namespace takes the Release with it.
    #[error("{object}: not created, its namespace is being deleted")]
    NamespaceTerminating {
        /// The object, e.g. `Service shop/checkout-stable`.
        object: String,
    },

    /// A Secret named in `spec.analysis.prometheus` is missing or lacks the key. The same
    /// words make the analysis run's Error and the `PrometheusCredentials` condition.
    #[error("Secret {namespace}/{name}, key {key} (named in {field}): {problem}")]
    Secret {
        /// The Release's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The key named.
        key: String,
        /// The spec field naming it.
        field: &'static str,
        /// What is wrong (missing, no such key, not UTF-8) and what to do.
        problem: String,
    },

    /// An object lacks a field the API server always sets (name, namespace, uid).
    #[error("object has no {0}")]
    MissingObjectKey(&'static str),

    /// A value could not be serialized for the API.
    #[error("cannot serialize {what}: {source}")]
    Serialize {
        /// What was being serialized.
        what: &'static str,
        /// Why it failed.
        source: serde_json::Error,
    },

    /// The Release kept in the cache (its spec and status as JSON this process wrote) could
    /// not be decoded: a bug, not something a manifest can cause.
    #[error("cannot decode the Release kept in the controller's cache: {source}")]
    CachedRelease {
        /// Why it failed.
        source: serde_json::Error,
    },

    /// The metrics and health server could not start.
    #[error("cannot serve metrics on {addr}: {source}")]
    Http {
        /// The address it tried to bind.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },

    /// A flag of `waymark controller` cannot be used as given.
    #[error("{message}")]
    Config {
        /// What is wrong and how to write it.
        message: String,
    },
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(Box::new(error))
    }
}

impl Error {
    /// The API server's refusal of a write to `object` as a [`Error::Refused`], or `None` when
    /// the error is not a refusal (a connection failure: retried, not reported as the user's
    /// to fix).
    pub fn refusal(object: String, error: &kube::Error) -> Option<Error> {
        let kube::Error::Api(status) = error else {
            return None;
        };
        if namespace_terminating(error) {
            return Some(Error::NamespaceTerminating { object });
        }
        let message = status.message.clone();
        let lower = message.to_ascii_lowercase();
        let reason = match status.code {
            _ if lower.contains("admission webhook") => "AdmissionDenied",
            403 if lower.contains("exceeded quota") => "QuotaExceeded",
            403 => "Forbidden",
            422 => "Invalid",
            409 => "Conflict",
            400 | 404 | 405 | 413 | 415 => "Rejected",
            _ => return None,
        };
        Some(Error::Refused {
            object,
            reason,
            message,
        })
    }

    /// The refusal as the rollout core reads it ([`crate::rollout::LastApply`]), when this
    /// error is one.
    pub fn as_refusal(&self) -> Option<Refusal> {
        match self {
            Error::Refused {
                object,
                reason,
                message,
            } => Some(Refusal {
                object: object.clone(),
                reason: (*reason).to_string(),
                message: message.clone(),
            }),
            _ => None,
        }
    }

    /// A short, stable label for the `waymark_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Refused { reason, .. } => match *reason {
                "Forbidden" => "refused_forbidden",
                "QuotaExceeded" => "refused_quota",
                "Invalid" => "refused_invalid",
                "AdmissionDenied" => "refused_admission",
                "Conflict" => "refused_conflict",
                "NotOwned" => "not_owned",
                _ => "refused",
            },
            Error::NamespaceTerminating { .. } => "namespace_terminating",
            Error::Secret { .. } => "secret",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Serialize { .. } => "serialize",
            Error::CachedRelease { .. } => "cached_release",
            Error::Http { .. } => "http",
            Error::Config { .. } => "config",
        }
    }
}

/// The cause the API server's NamespaceLifecycle admission gives when it refuses to create
/// anything in a namespace that is being deleted.
const NAMESPACE_TERMINATING_CAUSE: &str = "NamespaceTerminating";

/// Whether `error` is the API server refusing a create because the namespace is being deleted
/// (403, cause `NamespaceTerminating`; older servers only say so in the message). Such a
/// refusal means the namespace is going away, not that a write needs fixing or retrying.
pub fn namespace_terminating(error: &kube::Error) -> bool {
    let kube::Error::Api(status) = error else {
        return false;
    };
    status.code == 403
        && (status.details.as_ref().is_some_and(|details| {
            details
                .causes
                .iter()
                .any(|cause| cause.reason == NAMESPACE_TERMINATING_CAUSE)
        }) || status.message.contains("because it is being terminated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    /// A 403 as the API server sends it (its JSON body), with `causes` in its details.
    fn forbidden(message: &str, causes: &[&str]) -> kube::Error {
        let causes: Vec<serde_json::Value> = causes
            .iter()
            .map(|reason| serde_json::json!({"reason": reason, "field": "metadata.namespace"}))
            .collect();
        let body = serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "status": "Failure", "code": 403,
            "reason": "Forbidden", "message": message,
            "details": {"name": "hello-stable", "kind": "services", "causes": causes},
        });
        let status: Status = serde_json::from_value(body).expect("a Status");
        kube::Error::Api(status.boxed())
    }

    #[test]
    fn a_create_refused_in_a_terminating_namespace_is_the_namespace_going_away() {
        let terminating = "services \"hello-stable\" is forbidden: unable to create new content in namespace demo because it is being terminated";
        // (what the API server said, whether it is the namespace going away)
        let table = [
            (
                "cause and message",
                forbidden(terminating, &["NamespaceTerminating"]),
                true,
            ),
            ("the message alone", forbidden(terminating, &[]), true),
            (
                "the cause alone",
                forbidden("forbidden", &["NamespaceTerminating"]),
                true,
            ),
            (
                "RBAC",
                forbidden(
                    "services is forbidden: User \"system:serviceaccount:waymark:waymark\" cannot create resource \"services\"",
                    &[],
                ),
                false,
            ),
            (
                "a quota",
                forbidden("exceeded quota: pods, requested: pods=2", &[]),
                false,
            ),
            (
                "not a 403",
                kube::Error::Api(
                    Status::failure(terminating, "Conflict")
                        .with_code(409)
                        .boxed(),
                ),
                false,
            ),
        ];
        for (what, error, expected) in table {
            assert_eq!(namespace_terminating(&error), expected, "{what}");
            let classified = Error::refusal("Service demo/hello-stable".into(), &error)
                .expect("every 403 and 409 is a refusal of some kind");
            assert_eq!(
                matches!(classified, Error::NamespaceTerminating { .. }),
                expected,
                "{what}: {classified:?}"
            );
            // Not the user's to fix: no refusal for the status, its condition or an Event.
            assert_eq!(classified.as_refusal().is_none(), expected, "{what}");
        }
    }
}
