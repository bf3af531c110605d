//! The Prometheus HTTP client: instant queries, each answered by one number, no data, or a
//! failure worded for the person reading the Release's status.

use prometheus_http_query::response::Data;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};

use super::Credentials;
use crate::analysis::{QueryFailure, QueryOutcome, SampledSeries};
use crate::api::{Duration, PrometheusSource};

/// A client for one Release's Prometheus, built per analysis run.
///
/// Each run builds its own client (no shared state, no locks), so the runs of different
/// Releases never wait on each other; the cost is one connection setup per run and interval.
#[derive(Clone)]
pub struct PrometheusClient {
    client: prometheus_http_query::Client,
    address: String,
    timeout: Duration,
}

impl std::fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusClient")
            .field("address", &self.address)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl PrometheusClient {
    /// A client for `source` with the resolved `credentials`.
    ///
    /// A CA bundle replaces the system roots rather than adding to them: whoever pins a CA for
    /// Prometheus means "trust this CA", and it keeps the client independent of the image's
    /// certificate store.
    pub fn new(source: &PrometheusSource, credentials: &Credentials) -> Result<Self, QueryFailure> {
        let address = source.address.clone();
        let setup = |reason: String| QueryFailure::Setup {
            address: address.clone(),
            reason,
        };
        // reqwest panics when it builds TLS settings and no rustls provider is installed;
        // `main` installs ring first, this keeps tests and other callers safe too. An Err only
        // says one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let mut builder = reqwest::Client::builder()
            .timeout(source.timeout.as_std())
            .connect_timeout(source.timeout.as_std());
        if let Some(token) = &credentials.bearer_token {
            // Secrets written with `echo` end in a newline, which is no part of the token.
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
                .map_err(|_| {
                    setup(
                        "the bearer token from bearerTokenSecret contains characters not allowed in an HTTP header".into(),
                    )
                })?;
            value.set_sensitive(true);
            let mut headers = HeaderMap::new();
            headers.insert(AUTHORIZATION, value);
            builder = builder.default_headers(headers);
        }
        if let Some(pem) = &credentials.ca_pem {
            let certificates = reqwest::Certificate::from_pem_bundle(pem).map_err(|error| {
                setup(format!(
                    "the CA bundle from caSecret is not valid PEM: {error}"
                ))
            })?;
            if certificates.is_empty() {
                return Err(setup(
                    "the CA bundle from caSecret holds no certificate".into(),
                ));
            }
            builder = builder.tls_certs_only(certificates);
        }
        let http = builder.build().map_err(|error| {
            setup(format!(
                "cannot build the HTTP client: {}",
                innermost(&error)
            ))
        })?;
        let client = prometheus_http_query::Client::from(http, &source.address)
            .map_err(|error| setup(format!("invalid address: {error}")))?;
        Ok(Self {
            client,
            address,
            timeout: source.timeout,
        })
    }

    /// `spec.analysis.prometheus.address`, for messages.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Runs one instant query at Prometheus's current time.
    ///
    /// Sent as a POST so that long queries fit regardless of URL limits, with Prometheus's own
    /// evaluation timeout set to ours so that it stops working when we stop waiting.
    pub async fn instant(&self, query: &str) -> QueryOutcome {
        self.instant_at(query, None).await
    }

    /// Runs one instant query evaluated at `at` (Unix seconds), or at Prometheus's current time
    /// without one: how a roadmap outcome is measured at the end of a window in the past.
    pub async fn instant_at(&self, query: &str, at: Option<i64>) -> QueryOutcome {
        let timeout_millis = i64::try_from(self.timeout.as_std().as_millis()).unwrap_or(i64::MAX);
        let mut request = self.client.query(query).timeout(timeout_millis);
        if let Some(at) = at {
            request = request.at(at);
        }
        let answer = request.post().await;
        match answer {
            Ok(result) => match result.data() {
                Data::Vector(samples) if samples.is_empty() => QueryOutcome::NoData,
                Data::Vector(samples) => {
                    QueryOutcome::Value(samples.iter().map(|series| series.sample().value()).sum())
                }
                Data::Scalar(sample) => QueryOutcome::Value(sample.value()),
                Data::Matrix(_) => QueryOutcome::Failed(QueryFailure::BadResponse {
                    address: self.address.clone(),
                    reason: "the query returns a range vector; it must return an instant vector or a scalar".into(),
                }),
            },
            Err(error) => QueryOutcome::Failed(self.classify(error)),
        }
    }

    /// Runs one range query from `start` to `end` (Unix seconds, inclusive) every
    /// `step_seconds`, and sums the series per instant, as [`PrometheusClient::instant`] sums
    /// a vector.
    ///
    /// Used by replay: one range query per query template instead of one instant query per
    /// template and instant. Prometheus answers at most 11,000 instants per series; the caller
    /// checks the span first.
    pub async fn range(
        &self,
        query: &str,
        start: i64,
        end: i64,
        step_seconds: f64,
    ) -> Result<SampledSeries, QueryFailure> {
        let timeout_millis = i64::try_from(self.timeout.as_std().as_millis()).unwrap_or(i64::MAX);
        let answer = self
            .client
            .query_range(query, start, end, step_seconds)
            .timeout(timeout_millis)
            .post()
            .await
            .map_err(|error| self.classify(error))?;
        match answer.data() {
            Data::Matrix(series) => {
                let mut sampled = SampledSeries::default();
                for one in series {
                    for sample in one.samples() {
                        sampled.add(sample.timestamp().round() as i64, sample.value());
                    }
                }
                Ok(sampled)
            }
            _ => Err(QueryFailure::BadResponse {
                address: self.address.clone(),
                reason: "a range query did not return a matrix".into(),
            }),
        }
    }

    fn classify(&self, error: prometheus_http_query::Error) -> QueryFailure {
        let address = self.address.clone();
        match error {
            prometheus_http_query::Error::Prometheus(error) => QueryFailure::Rejected {
                address,
                message: error.to_string(),
            },
            prometheus_http_query::Error::Client(error) => {
                let Some(source) = error.inner() else {
                    return QueryFailure::BadResponse {
                        address,
                        reason: error.to_string(),
                    };
                };
                if source.is_timeout() {
                    QueryFailure::TimedOut {
                        address,
                        timeout: self.timeout,
                    }
                } else if source.is_connect() {
                    QueryFailure::Unreachable {
                        address,
                        reason: innermost(source),
                    }
                } else if let Some(status) = source.status() {
                    let hint = match status.as_u16() {
                        401 | 403 => "; check bearerTokenSecret",
                        404 => "; check that the address is the Prometheus base URL",
                        _ => "",
                    };
                    QueryFailure::BadResponse {
                        address,
                        reason: format!("HTTP {status}{hint}"),
                    }
                } else if source.is_request() || source.is_body() {
                    QueryFailure::Unreachable {
                        address,
                        reason: innermost(source),
                    }
                } else {
                    QueryFailure::BadResponse {
                        address,
                        reason: format!("{error}: {}", innermost(source)),
                    }
                }
            }
            other => QueryFailure::BadResponse {
                address,
                reason: other.to_string(),
            },
        }
    }
}

/// The innermost cause of an error chain, which is where the useful words are (`connection
/// refused`, `invalid peer certificate: UnknownIssuer`); reqwest's outer layers only say
/// "error sending request".
fn innermost(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(source) = current.source() {
        current = source;
    }
    match current.downcast_ref::<std::io::Error>() {
        Some(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused".into()
        }
        _ => current.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(address: &str) -> PrometheusSource {
        PrometheusSource {
            address: address.into(),
            timeout: Duration::from_secs(2),
            bearer_token_secret: None,
            ca_secret: None,
        }
    }

    #[test]
    fn rejected_queries_name_the_query_and_keep_prometheus_text() {
        let failure = QueryFailure::Rejected {
            address: "http://prometheus:9090".into(),
            message: "bad_data: 1:10: parse error: unexpected \"[\"".into(),
        };
        assert_eq!(
            failure.in_context("canary error query over 5m"),
            "Prometheus at http://prometheus:9090 rejected the canary error query over 5m: bad_data: 1:10: parse error: unexpected \"[\""
        );
        let unreachable = QueryFailure::Unreachable {
            address: "http://127.0.0.1:9090".into(),
            reason: "connection refused".into(),
        };
        assert_eq!(
            unreachable.in_context("anything"),
            "Prometheus at http://127.0.0.1:9090 unreachable: connection refused"
        );
    }

    #[test]
    fn unusable_credentials_are_setup_failures() {
        let bad_token = Credentials {
            bearer_token: Some("to\u{0}ken".into()),
            ca_pem: None,
        };
        let error = PrometheusClient::new(&source("http://prometheus:9090"), &bad_token)
            .unwrap_err()
            .to_string();
        assert!(error.contains("bearer token"), "{error}");

        let no_certificate = Credentials {
            bearer_token: None,
            ca_pem: Some(b"not a certificate".to_vec()),
        };
        let error = PrometheusClient::new(&source("https://prometheus:9090"), &no_certificate)
            .unwrap_err()
            .to_string();
        assert!(error.contains("caSecret"), "{error}");

        let token = Credentials {
            bearer_token: Some("secret\n".into()),
            ca_pem: None,
        };
        assert!(PrometheusClient::new(&source("http://prometheus:9090"), &token).is_ok());
    }

    /// A self-signed CA certificate, test data only (its key was thrown away).
    const TEST_CA: &str = "-----BEGIN CERTIFICATE-----\nMIIBizCCATGgAwIBAgIUA9tmLRbkodM8gHiV2ciCZXhE54MwCgYIKoZIzj0EAwIw\nGjEYMBYGA1UEAwwPd2F5bWFyay10ZXN0LWNhMCAXDTI2MTEyMTIwMzA1NVoYDzIx\nMjYxMDI4MjAzMDU1WjAaMRgwFgYDVQQDDA93YXltYXJrLXRlc3QtY2EwWTATBgcq\nhkjOPQIBBggqhkjOPQMBBwNCAAQc3ob2UmKCItxDfNlEolHbBepWlkf9SSLR7nCe\nKx2VbgB0+sjIQGxL0GRtUJYl6wExqnYepFqtys4fcVs0hEPfo1MwUTAdBgNVHQ4E\nFgQUtD0yz/1XzPGf3L3hYN3i87Mr7RgwHwYDVR0jBBgwFoAUtD0yz/1XzPGf3L3h\nYN3i87Mr7RgwDwYDVR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNIADBFAiEA/+oC\nCNN3nsnt4KOVybH+Rz9ZRf/hicNhNYSv2oeZ1msCIDyZoseTwOiOnaOfLDskb1lM\nRehD/490x4lch58d5DGI\n-----END CERTIFICATE-----\n";

    #[test]
    fn a_valid_ca_bundle_builds_a_client() {
        let credentials = Credentials {
            bearer_token: None,
            ca_pem: Some(TEST_CA.as_bytes().to_vec()),
        };
        assert!(PrometheusClient::new(&source("https://prometheus:9090"), &credentials).is_ok());
    }

    /// Serves `/api/v1/query` with `status` and `body` after `delay`, recording the
    /// Authorization header of each request. Returns the base URL.
    async fn fake_prometheus(
        status: u16,
        content_type: &'static str,
        body: &'static str,
        delay: std::time::Duration,
        seen: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    ) -> String {
        let app = axum::Router::new().route(
            "/api/v1/query",
            axum::routing::post(move |headers: axum::http::HeaderMap| {
                let seen = seen.clone();
                async move {
                    let authorization = headers
                        .get("authorization")
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    seen.lock().unwrap().push(authorization);
                    tokio::time::sleep(delay).await;
                    (
                        axum::http::StatusCode::from_u16(status).unwrap(),
                        [("content-type", content_type)],
                        body,
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        address
    }

    #[tokio::test]
    async fn sends_the_bearer_token_and_sums_the_vector() {
        let seen = std::sync::Arc::default();
        let address = fake_prometheus(
            200,
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[
                {"metric":{"code":"500"},"value":[1700000000,"2.5"]},
                {"metric":{"code":"503"},"value":[1700000000,"0.5"]}]}}"#,
            std::time::Duration::ZERO,
            std::sync::Arc::clone(&seen),
        )
        .await;
        let credentials = Credentials {
            bearer_token: Some("s3cret\n".into()),
            ca_pem: None,
        };
        let client = PrometheusClient::new(&source(&address), &credentials).unwrap();
        assert_eq!(client.instant("up").await, QueryOutcome::Value(3.0));
        assert_eq!(seen.lock().unwrap().as_slice(), ["Bearer s3cret"]);
    }

    #[tokio::test]
    async fn a_range_query_sums_series_per_instant() {
        let app = axum::Router::new().route(
            "/api/v1/query_range",
            axum::routing::post(|body: String| async move {
                assert!(body.contains("start=1700000000"), "{body}");
                assert!(body.contains("end=1700000060"), "{body}");
                assert!(body.contains("step=30"), "{body}");
                (
                    [("content-type", "application/json")],
                    r#"{"status":"success","data":{"resultType":"matrix","result":[
                        {"metric":{"code":"500"},"values":[[1700000000,"1"],[1700000030,"2"]]},
                        {"metric":{"code":"503"},"values":[[1700000030,"0.5"]]}]}}"#,
                )
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        let client = PrometheusClient::new(&source(&address), &Credentials::default()).unwrap();
        let series = client
            .range("up", 1_700_000_000, 1_700_000_060, 30.0)
            .await
            .unwrap();
        assert_eq!(series.at(1_700_000_000), QueryOutcome::Value(1.0));
        assert_eq!(series.at(1_700_000_030), QueryOutcome::Value(2.5));
        assert_eq!(series.at(1_700_000_060), QueryOutcome::NoData);
    }

    #[tokio::test]
    async fn an_empty_vector_is_no_data() {
        let address = fake_prometheus(
            200,
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            std::time::Duration::ZERO,
            std::sync::Arc::default(),
        )
        .await;
        let client = PrometheusClient::new(&source(&address), &Credentials::default()).unwrap();
        assert_eq!(client.instant("up").await, QueryOutcome::NoData);
    }

    #[tokio::test]
    async fn a_slow_prometheus_times_out_with_the_limit() {
        let address = fake_prometheus(
            200,
            "application/json",
            r#"{"status":"success","data":{"resultType":"vector","result":[]}}"#,
            std::time::Duration::from_secs(5),
            std::sync::Arc::default(),
        )
        .await;
        let mut slow = source(&address);
        slow.timeout = Duration::from_millis(300);
        let client = PrometheusClient::new(&slow, &Credentials::default()).unwrap();
        let QueryOutcome::Failed(failure) = client.instant("up").await else {
            panic!("expected a failure");
        };
        assert_eq!(
            failure.to_string(),
            format!("Prometheus at {address} did not answer within 300ms")
        );
    }

    #[tokio::test]
    async fn an_unauthorized_answer_says_to_check_the_token() {
        let address = fake_prometheus(
            401,
            "text/plain",
            "Unauthorized",
            std::time::Duration::ZERO,
            std::sync::Arc::default(),
        )
        .await;
        let client = PrometheusClient::new(&source(&address), &Credentials::default()).unwrap();
        let QueryOutcome::Failed(failure) = client.instant("up").await else {
            panic!("expected a failure");
        };
        assert_eq!(
            failure.in_context("canary error query over 5m"),
            format!(
                "Prometheus at {address} gave an unusable answer to the canary error query over 5m: HTTP 401 Unauthorized; check bearerTokenSecret"
            )
        );
    }

    #[tokio::test]
    async fn a_closed_port_is_unreachable_with_the_address() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let client = PrometheusClient::new(&source(&address), &Credentials::default()).unwrap();
        let outcome = client.instant("up").await;
        assert_eq!(
            outcome,
            QueryOutcome::Failed(QueryFailure::Unreachable {
                address: address.clone(),
                reason: "connection refused".into()
            })
        );
    }
}
