//! The controller's errors, each with a metric label.

use crate::traffic::TrafficError;

/// Everything that can go wrong in the shell.
#[derive(thiserror::Error, Debug)]
pub enum Error {
    /// A Kubernetes API call failed. Boxed: `kube::Error` is large and every result carries it.
    #[error("Kubernetes API call failed: {0}")]
    Kube(#[source] Box<kube::Error>),

    /// The traffic router could not read or write the route.
    #[error(transparent)]
    Traffic(#[from] TrafficError),

    /// The spec is invalid in a way the schema cannot catch.
    #[error("{field}: {message}")]
    InvalidSpec {
        /// The offending field, e.g. `spec.selector`.
        field: String,
        /// What is wrong and how to fix it.
        message: String,
    },

    /// A Secret named in `spec.analysis.prometheus` is missing or lacks the key.
    #[error("Secret {namespace}/{name} (named in {field}): {problem}")]
    Secret {
        /// The Release's namespace.
        namespace: String,
        /// The Secret's name.
        name: String,
        /// The spec field naming it.
        field: &'static str,
        /// What is wrong: missing, no such key, not UTF-8.
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

    /// The metrics and health server could not start.
    #[error("cannot serve metrics on {addr}: {source}")]
    Http {
        /// The address it tried to bind.
        addr: std::net::SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
}

impl From<kube::Error> for Error {
    fn from(error: kube::Error) -> Self {
        Error::Kube(Box::new(error))
    }
}

impl Error {
    /// A short, stable label for the `waymark_reconcile_errors_total` metric.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Traffic(error) => error.metric_label(),
            Error::InvalidSpec { .. } => "invalid_spec",
            Error::Secret { .. } => "secret",
            Error::MissingObjectKey(_) => "missing_object_key",
            Error::Serialize { .. } => "serialize",
            Error::Http { .. } => "http",
        }
    }
}
