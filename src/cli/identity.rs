//! Who is asking, as the API server authenticates them: a `SelfSubjectReview`
//! (authentication.k8s.io/v1, Kubernetes 1.28 and later) returns the user the server sees
//! behind the kubeconfig's credentials — an OIDC e-mail, a service account — which is what a
//! manual request's `requestedBy` must record, not the local `$USER`.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use kube::Api;
use kube::api::PostParams;

use super::connect::Session;

/// The requester's name and, when it could not come from the API server, why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// The user name to record; `None` when neither the server nor the kubeconfig says.
    pub name: Option<String>,
    /// Set when `name` is not the API server's word, saying why.
    pub note: Option<String>,
}

/// Asks the API server who the session's credentials authenticate as. Falls back to the
/// kubeconfig's user name, with a note, when the server has no SelfSubjectReview API (before
/// 1.28) or refuses it.
pub async fn whoami(session: &Session) -> Identity {
    let api: Api<SelfSubjectReview> = Api::all(session.client.clone());
    let review = SelfSubjectReview::default();
    let fallback = |why: String| {
        let (name, recorded) = match &session.kubeconfig_user {
            Some(user) => (
                Some(user.clone()),
                format!("recording the kubeconfig user {user:?} as the requester"),
            ),
            None => (None, "recording no requester".to_string()),
        };
        Identity {
            name,
            note: Some(format!("{why}; {recorded}")),
        }
    };
    match api.create(&PostParams::default(), &review).await {
        Ok(answer) => {
            let username = answer
                .status
                .and_then(|status| status.user_info)
                .and_then(|user| user.username)
                .filter(|name| !name.is_empty());
            match username {
                Some(name) => Identity {
                    name: Some(name),
                    note: None,
                },
                None => fallback("the API server's SelfSubjectReview named no user".into()),
            }
        }
        Err(kube::Error::Api(status)) if status.code == 404 => fallback(
            "the API server has no SelfSubjectReview API (Kubernetes before 1.28), so it cannot say who you are".into(),
        ),
        Err(kube::Error::Api(status)) => fallback(format!(
            "the API server refused to say who you are ({} {})",
            status.code, status.message
        )),
        Err(error) => fallback(format!("cannot ask the API server who you are ({error})")),
    }
}
