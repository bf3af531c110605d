//! Counts and times every request the controller makes to the Kubernetes API server, by verb,
//! resource and response code (`waymark_kube_requests_total`,
//! `waymark_kube_request_duration_seconds`): a tower layer around the controller's client.
//!
//! The resource is taken from the request path by position, never a name or namespace, so the
//! series stay few however many Releases there are.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Response, Uri, header};
use kube::Client;
use kube::client::Body;
use tower::{Layer, Service};

use super::metrics::Metrics;

/// The content type of a server-side apply patch.
const APPLY_PATCH: &str = "application/apply-patch+yaml";

/// The code recorded when no response came (connection refused, timeout, TLS).
pub const NO_RESPONSE: &str = "error";

/// The verb (the API server's own names: `GET`, `LIST`, `WATCH`, `POST`, `PUT`, `PATCH`,
/// `APPLY`, `DELETE`, `DELETECOLLECTION`) and the resource (plural, with `/subresource`;
/// `discovery` for the API group listings, `other` for paths outside `/api` and `/apis`) of a
/// request.
pub fn verb_and_resource(
    method: &Method,
    uri: &Uri,
    content_type: Option<&str>,
) -> (&'static str, String) {
    let segments: Vec<&str> = uri
        .path()
        .split('/')
        .filter(|segment| !segment.is_empty())
        .collect();
    // What follows /api/{version} or /apis/{group}/{version}.
    let rest = match segments.as_slice() {
        ["api", _version, rest @ ..] => rest,
        ["apis", _group, _version, rest @ ..] => rest,
        ["api" | "apis", ..] => &[][..],
        _ => return (verb(method, false, uri, content_type), "other".into()),
    };
    let (resource, named) = match rest {
        [] => ("discovery".to_string(), false),
        // A namespace itself: /namespaces/{name} and its status or finalize.
        ["namespaces"] => ("namespaces".to_string(), false),
        ["namespaces", _name] => ("namespaces".to_string(), true),
        ["namespaces", _name, sub @ ("status" | "finalize")] => (format!("namespaces/{sub}"), true),
        // Namespaced resources: /namespaces/{namespace}/{resource}[/{name}[/{subresource}]].
        ["namespaces", _namespace, resource] => (resource.to_string(), false),
        ["namespaces", _namespace, resource, _name] => (resource.to_string(), true),
        ["namespaces", _namespace, resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
        // Cluster-scoped resources, or a namespaced one listed across namespaces.
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    (verb(method, named, uri, content_type), resource)
}

fn verb(method: &Method, named: bool, uri: &Uri, content_type: Option<&str>) -> &'static str {
    let watch = uri.query().is_some_and(|query| {
        query
            .split('&')
            .any(|pair| pair == "watch=true" || pair == "watch=1")
    });
    match *method {
        Method::GET if watch => "WATCH",
        Method::GET if named => "GET",
        Method::GET => "LIST",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH if content_type.is_some_and(|kind| kind.starts_with(APPLY_PATCH)) => "APPLY",
        Method::PATCH => "PATCH",
        Method::DELETE if named => "DELETE",
        Method::DELETE => "DELETECOLLECTION",
        _ => "OTHER",
    }
}

/// Wraps a service so that each request is counted and timed in [`Metrics`].
#[derive(Clone)]
pub struct KubeRequestsLayer {
    metrics: Arc<Metrics>,
}

impl KubeRequestsLayer {
    /// A layer recording into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> KubeRequestsLayer {
        KubeRequestsLayer { metrics }
    }
}

impl<S> Layer<S> for KubeRequestsLayer {
    type Service = KubeRequests<S>;

    fn layer(&self, inner: S) -> KubeRequests<S> {
        KubeRequests {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

/// The service [`KubeRequestsLayer`] makes.
#[derive(Clone)]
pub struct KubeRequests<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl<S, RequestBody, ResponseBody> Service<Request<RequestBody>> for KubeRequests<S>
where
    S: Service<Request<RequestBody>, Response = Response<ResponseBody>>,
    S::Future: Send + 'static,
    S::Error: 'static,
    ResponseBody: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = BoxFuture<Result<S::Response, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok());
        let (verb, resource) = verb_and_resource(request.method(), request.uri(), content_type);
        let metrics = self.metrics.clone();
        let started = Instant::now();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await;
            let code = match &response {
                Ok(response) => response.status().as_u16().to_string(),
                Err(_) => NO_RESPONSE.to_string(),
            };
            // Until the response head: a watch is timed to its start, not its whole life.
            metrics.observe_kube_request(verb, &resource, &code, started.elapsed());
            response
        })
    }
}

/// A [`Client`] as a tower service, so that a layer can go around one already built.
#[derive(Clone)]
struct ClientService(Client);

impl Service<Request<Body>> for ClientService {
    type Response = Response<Body>;
    type Error = kube::Error;
    type Future = BoxFuture<Result<Response<Body>, kube::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let client = self.0.clone();
        Box::pin(async move { client.send(request).await })
    }
}

/// `client` with every request counted and timed in `metrics`. It wraps the client the
/// controller is given (built by the CLI's kubeconfig rules, or by the e2e suite), so the paths
/// it sees are the API's own, before any proxy prefix of the kubeconfig's server URL; the
/// errors come back as the same [`kube::Error`]s.
pub fn instrument(client: Client, metrics: Arc<Metrics>) -> Client {
    let default_namespace = client.default_namespace().to_string();
    let valid_until = *client.valid_until();
    let service = KubeRequestsLayer::new(metrics).layer(ClientService(client));
    Client::new(service, default_namespace).with_valid_until(valid_until)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::Deployment;
    use kube::Api;
    use kube::api::{Patch, PatchParams, WatchParams};

    fn classify(method: Method, uri: &str, content_type: Option<&str>) -> (&'static str, String) {
        verb_and_resource(&method, &uri.parse().unwrap(), content_type)
    }

    #[test]
    fn paths_map_to_verb_and_resource_without_names_or_namespaces() {
        let merge = Some("application/merge-patch+json");
        let apply = Some("application/apply-patch+yaml");
        for (method, uri, content_type, verb, resource) in [
            // A Release's status through server-side apply.
            (
                Method::PATCH,
                "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout/status?&force=true&fieldManager=waymark",
                apply,
                "APPLY",
                "releases/status",
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/shop/deployments/checkout-canary?fieldManager=waymark",
                apply,
                "APPLY",
                "deployments",
            ),
            (
                Method::PATCH,
                "/apis/waymark.dev/v1alpha1/namespaces/shop/releases/checkout",
                merge,
                "PATCH",
                "releases",
            ),
            // Watches, one namespace and all.
            (
                Method::GET,
                "/apis/apps/v1/namespaces/shop/deployments?&watch=true&timeoutSeconds=290&labelSelector=waymark.dev%2Frelease&allowWatchBookmarks=true&resourceVersion=4711",
                None,
                "WATCH",
                "deployments",
            ),
            (
                Method::GET,
                "/apis/waymark.dev/v1alpha1/releases?&watch=true&resourceVersion=1",
                None,
                "WATCH",
                "releases",
            ),
            // Lists with a query.
            (
                Method::GET,
                "/api/v1/services?&labelSelector=waymark.dev%2Frelease&limit=500",
                None,
                "LIST",
                "services",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/services?limit=500",
                None,
                "LIST",
                "services",
            ),
            (
                Method::GET,
                "/api/v1/namespaces/shop/secrets/prometheus-token",
                None,
                "GET",
                "secrets",
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/waymark-system/leases/waymark-controller",
                None,
                "PUT",
                "leases",
            ),
            (
                Method::POST,
                "/apis/events.k8s.io/v1/namespaces/shop/events",
                None,
                "POST",
                "events",
            ),
            (
                Method::DELETE,
                "/apis/apps/v1/namespaces/shop/deployments/checkout-canary",
                None,
                "DELETE",
                "deployments",
            ),
            (
                Method::DELETE,
                "/apis/apps/v1/namespaces/shop/deployments?labelSelector=a",
                None,
                "DELETECOLLECTION",
                "deployments",
            ),
            (
                Method::GET,
                "/apis/apps/v1/namespaces/shop/deployments/checkout/scale",
                None,
                "GET",
                "deployments/scale",
            ),
            // Namespaces themselves, and cluster-scoped objects.
            (
                Method::GET,
                "/api/v1/namespaces/shop",
                None,
                "GET",
                "namespaces",
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                "LIST",
                "namespaces",
            ),
            (
                Method::PUT,
                "/api/v1/namespaces/shop/finalize",
                None,
                "PUT",
                "namespaces/finalize",
            ),
            (
                Method::GET,
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/releases.waymark.dev",
                None,
                "GET",
                "customresourcedefinitions",
            ),
            (
                Method::PATCH,
                "/apis/apiextensions.k8s.io/v1/customresourcedefinitions/releases.waymark.dev/status",
                merge,
                "PATCH",
                "customresourcedefinitions/status",
            ),
            // Discovery and the rest.
            (
                Method::GET,
                "/apis/waymark.dev/v1alpha1",
                None,
                "LIST",
                "discovery",
            ),
            (Method::GET, "/apis", None, "LIST", "discovery"),
            (Method::GET, "/api", None, "LIST", "discovery"),
            (Method::GET, "/version", None, "LIST", "other"),
        ] {
            assert_eq!(
                classify(method.clone(), uri, content_type),
                (verb, resource.to_string()),
                "{method} {uri}"
            );
        }
    }

    #[test]
    fn a_watch_is_told_from_a_list_only_by_its_watch_parameter() {
        let uri = "/api/v1/namespaces/shop/services?watch=false";
        assert_eq!(classify(Method::GET, uri, None).0, "LIST");
        let uri = "/api/v1/namespaces/shop/services?watch=1";
        assert_eq!(classify(Method::GET, uri, None).0, "WATCH");
        let uri = "/api/v1/namespaces/shop/services?fieldSelector=metadata.name%3Dwatch%3Dtrue";
        assert_eq!(classify(Method::GET, uri, None).0, "LIST");
    }

    type MockHandle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    /// Deployments in `shop` through an instrumented client whose API server is a mock.
    fn instrumented_deployments() -> (Api<Deployment>, MockHandle, Arc<Metrics>) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let metrics = Arc::new(Metrics::default());
        let client = instrument(Client::new(service, "default"), metrics.clone());
        (Api::namespaced(client, "shop"), handle, metrics)
    }

    #[tokio::test]
    async fn requests_through_the_client_are_counted_by_verb_resource_and_code() {
        let (deployments, mut handle, metrics) = instrumented_deployments();

        let server = tokio::spawn(async move {
            // A GET answered 200, a server-side apply refused 403, a watch started.
            let (request, send) = handle.next_request().await.expect("a GET");
            assert_eq!(request.method(), Method::GET);
            let mut deployment = Deployment::default();
            deployment.metadata.name = Some("checkout".into());
            send.send_response(
                Response::builder()
                    .status(200)
                    .body(Body::from(serde_json::to_vec(&deployment).unwrap()))
                    .unwrap(),
            );
            let (request, send) = handle.next_request().await.expect("an apply");
            assert_eq!(request.method(), Method::PATCH);
            let status = serde_json::json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": "deployments.apps \"checkout\" is forbidden", "reason": "Forbidden",
                "code": 403
            });
            send.send_response(
                Response::builder()
                    .status(403)
                    .body(Body::from(serde_json::to_vec(&status).unwrap()))
                    .unwrap(),
            );
            let (request, send) = handle.next_request().await.expect("a watch");
            assert!(request.uri().query().unwrap().contains("watch=true"));
            send.send_response(Response::builder().status(200).body(Body::empty()).unwrap());
        });

        deployments
            .get("checkout")
            .await
            .expect("the GET is answered");
        let refused = deployments
            .patch(
                "checkout",
                &PatchParams::apply("waymark"),
                &Patch::Apply(serde_json::json!({})),
            )
            .await;
        assert!(refused.is_err(), "403 comes back as an error");
        let _stream = deployments
            .watch(&WatchParams::default(), "0")
            .await
            .expect("the watch starts");
        server.await.unwrap();

        let text = metrics.encode().unwrap();
        for expected in [
            r#"waymark_kube_requests_total{verb="GET",resource="deployments",code="200"} 1"#,
            r#"waymark_kube_requests_total{verb="APPLY",resource="deployments",code="403"} 1"#,
            r#"waymark_kube_requests_total{verb="WATCH",resource="deployments",code="200"} 1"#,
            r#"waymark_kube_request_duration_seconds_count{verb="GET",resource="deployments"} 1"#,
            r#"waymark_kube_request_duration_seconds_count{verb="APPLY",resource="deployments"} 1"#,
        ] {
            assert!(text.contains(expected), "{expected} missing from {text}");
        }
        assert!(
            !text.contains("checkout\""),
            "no object name in a label: {text}"
        );
        assert!(!text.contains("shop\""), "no namespace in a label: {text}");
    }

    #[tokio::test]
    async fn a_request_without_a_response_is_counted_with_the_code_error() {
        let (deployments, mut handle, metrics) = instrumented_deployments();
        let server = tokio::spawn(async move {
            let (_, send) = handle.next_request().await.expect("a GET");
            send.send_error(std::io::Error::other("connection refused"));
        });
        let error = deployments.get("checkout").await.expect_err("no answer");
        server.await.unwrap();
        assert!(error.to_string().contains("connection refused"), "{error}");
        let text = metrics.encode().unwrap();
        assert!(
            text.contains(
                r#"waymark_kube_requests_total{verb="GET",resource="deployments",code="error"} 1"#
            ),
            "{text}"
        );
    }
}
