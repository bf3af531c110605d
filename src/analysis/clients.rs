//! One Prometheus client per address, shared by every Release that queries it: connections are
//! reused across runs and Releases instead of being set up again each interval.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::api::PrometheusSource;

use super::Credentials;
use super::client::PrometheusClient;
use super::outcome::QueryFailure;

/// What makes two clients interchangeable: the address, the timeout and the credentials.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    address: String,
    timeout: std::time::Duration,
    bearer_token: Option<String>,
    ca_pem: Option<Vec<u8>>,
}

/// The clients built so far, by address, timeout and credentials.
#[derive(Default)]
pub struct Clients {
    clients: Mutex<HashMap<Key, PrometheusClient>>,
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
    use crate::api::Duration;

    fn source(address: &str) -> PrometheusSource {
        PrometheusSource {
            address: address.into(),
            timeout: Duration::from_secs(10),
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
}
