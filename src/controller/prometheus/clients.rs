//! One Prometheus client per address, shared by every Release that queries it: connections are
//! reused across runs and Releases instead of being set up again each interval. Beside them, the
//! answers to error-budget queries, which look back over days and change slowly: asked again
//! only after a fraction of their period, not every interval.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Credentials;
use super::client::PrometheusClient;
use crate::analysis::{QueryFailure, QueryOutcome};
use crate::api::PrometheusSource;

/// What makes two clients interchangeable: the address, the timeout and the credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    address: String,
    timeout: std::time::Duration,
    bearer_token: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

/// The clients built so far, by address, timeout and credentials, and the budget answers.
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<Key, PrometheusClient>>,
    /// `(address, query)` to its answer and when it was given.
    budget_answers: Mutex<HashMap<(String, String), (QueryOutcome, Instant)>>,
}

/// How long an answer over a budget `period` stays good: 1/720 of the period (an hour for
/// 30 days), at least 30 s and at most an hour.
pub fn budget_answer_ttl(period: Duration) -> Duration {
    (period / 720).clamp(Duration::from_secs(30), Duration::from_secs(3600))
}

impl Clients {
    /// The client for `source` with `credentials`, built on first use.
    pub fn get(
        &self,
        source: &PrometheusSource,
        credentials: &Credentials,
    ) -> Result<PrometheusClient, QueryFailure> {
        let key = Key {
            address: source.address.clone(),
            timeout: source.timeout.as_std(),
            bearer_token: credentials.bearer_token.clone(),
            ca_pem: credentials.ca_pem.clone(),
        };
        if let Some(client) = self
            .clients
            .lock()
            .ok()
            .and_then(|clients| clients.get(&key).cloned())
        {
            return Ok(client);
        }
        let client = PrometheusClient::new(source, credentials)?;
        if let Ok(mut clients) = self.clients.lock() {
            clients.insert(key, client.clone());
        }
        Ok(client)
    }

    /// The answer to budget `query` at `address` given less than `ttl` ago.
    pub fn budget_answer(&self, address: &str, query: &str, ttl: Duration) -> Option<QueryOutcome> {
        let answers = self.budget_answers.lock().ok()?;
        answers
            .get(&(address.to_string(), query.to_string()))
            .filter(|(_, at)| at.elapsed() < ttl)
            .map(|(answer, _)| answer.clone())
    }

    /// Keep a budget answer (a failure is not kept: it is asked again next time), and drop the
    /// answers older than `ttl`.
    pub fn remember_budget_answer(
        &self,
        address: &str,
        query: &str,
        answer: &QueryOutcome,
        ttl: Duration,
    ) {
        if let QueryOutcome::Failed(_) = answer {
            return;
        }
        if let Ok(mut answers) = self.budget_answers.lock() {
            answers.retain(|_, (_, at)| at.elapsed() < ttl);
            answers.insert(
                (address.to_string(), query.to_string()),
                (answer.clone(), Instant::now()),
            );
        }
    }

    /// How many distinct clients exist.
    pub fn len(&self) -> usize {
        self.clients.lock().map_or(0, |clients| clients.len())
    }

    /// Whether no client was built yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(address: &str) -> PrometheusSource {
        PrometheusSource {
            address: address.into(),
            timeout: crate::api::Duration::from_secs(10),
            bearer_token_secret: None,
            ca_secret: None,
        }
    }

    #[test]
    fn releases_sharing_an_address_and_credentials_share_one_client() {
        let clients = Clients::default();
        let none = Credentials::default();
        clients
            .get(&source("http://prometheus:9090"), &none)
            .unwrap();
        clients
            .get(&source("http://prometheus:9090"), &none)
            .unwrap();
        assert_eq!(clients.len(), 1);
        clients.get(&source("http://thanos:9090"), &none).unwrap();
        let token = Credentials {
            bearer_token: Some("t".into()),
            ca_pem: None,
        };
        clients
            .get(&source("http://prometheus:9090"), &token)
            .unwrap();
        assert_eq!(
            clients.len(),
            3,
            "another address or token is another client"
        );
    }

    #[test]
    fn a_budget_answer_is_reused_for_a_fraction_of_its_period_and_a_failure_never() {
        assert_eq!(
            budget_answer_ttl(Duration::from_secs(30 * 86_400)),
            Duration::from_secs(3600)
        );
        assert_eq!(
            budget_answer_ttl(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
        let clients = Clients::default();
        let ttl = Duration::from_secs(60);
        clients.remember_budget_answer("http://p:9090", "errors", &QueryOutcome::Value(3.0), ttl);
        assert_eq!(
            clients.budget_answer("http://p:9090", "errors", ttl),
            Some(QueryOutcome::Value(3.0))
        );
        assert_eq!(
            clients.budget_answer("http://p:9090", "errors", Duration::ZERO),
            None,
            "expired"
        );
        assert_eq!(
            clients.budget_answer("http://thanos:9090", "errors", ttl),
            None,
            "per address"
        );
        let failed = QueryOutcome::Failed(QueryFailure::Setup {
            address: "http://p:9090".into(),
            reason: "down".into(),
        });
        clients.remember_budget_answer("http://p:9090", "total", &failed, ttl);
        assert_eq!(clients.budget_answer("http://p:9090", "total", ttl), None);
    }
}
