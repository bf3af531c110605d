//! Delivery: a task apart from the reconciles, fed by a bounded queue, that posts each message
//! to its targets with bounded retries and backoff, and remembers which messages it took so
//! that one transition is sent once however often a reconcile tells it.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use tokio::time::Instant;

use super::config::{SecretKeyRef, Target};
use super::message::{Message, payload};

/// Messages waiting for the sender; a full queue drops (and counts) the newest instead of
/// making a reconcile wait.
pub const QUEUE_CAPACITY: usize = 256;
/// Message keys remembered for deduplication: far more than the transitions a controller sees
/// in the hours a repeat could come in (a reconcile retried, a restart of the watch).
pub const DEDUP_CAPACITY: usize = 8192;
/// Attempts per message and target, the first included.
pub const MAX_ATTEMPTS: u32 = 5;
/// The wait after the first failed attempt; doubled after each further one.
pub const FIRST_RETRY: Duration = Duration::from_secs(1);
/// The longest a message is tried for one target, waits included.
pub const DELIVERY_BUDGET: Duration = Duration::from_secs(60);
/// How long one attempt may take.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Deliveries in flight at once: a slow target must not hold the others back.
pub const CONCURRENT_DELIVERIES: usize = 8;

/// The keys of the messages taken, the oldest forgotten first once [`DEDUP_CAPACITY`] is
/// reached.
#[derive(Debug)]
pub struct Dedup {
    seen: HashSet<String>,
    order: VecDeque<String>,
    capacity: usize,
}

impl Dedup {
    /// A set remembering at most `capacity` keys.
    pub fn new(capacity: usize) -> Dedup {
        Dedup {
            seen: HashSet::new(),
            order: VecDeque::new(),
            capacity: capacity.max(1),
        }
    }

    /// True the first time `key` is offered (and remember it); false for a repeat.
    pub fn first_time(&mut self, key: &str) -> bool {
        if self.seen.contains(key) {
            return false;
        }
        if self.order.len() >= self.capacity
            && let Some(oldest) = self.order.pop_front()
        {
            self.seen.remove(&oldest);
        }
        self.seen.insert(key.to_string());
        self.order.push_back(key.to_string());
        true
    }

    /// Forget `key`: a message that could not be queued may be told again.
    pub fn forget(&mut self, key: &str) {
        if self.seen.remove(key) {
            self.order.retain(|seen| seen != key);
        }
    }
}

/// How one attempt ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Attempt {
    /// 2xx.
    Accepted,
    /// Another HTTP status.
    Status(u16),
    /// No answer (connection refused, timeout) or no URL (the Secret missing).
    NoAnswer(String),
}

impl Attempt {
    /// Words for the Release's condition and the log.
    pub fn describe(&self) -> String {
        match self {
            Attempt::Accepted => "accepted".into(),
            Attempt::Status(code) => format!("HTTP {code}"),
            Attempt::NoAnswer(why) => why.clone(),
        }
    }
}

/// After attempt number `attempt` (1-based) ended as `outcome`, `elapsed` since the first:
/// how long to wait before the next one, or `None` to stop. A 4xx other than 408 and 429 is
/// the receiver refusing this message (a wrong URL, a payload it does not take): trying again
/// cannot help. Everything else is retried with doubling waits, within [`MAX_ATTEMPTS`] and
/// [`DELIVERY_BUDGET`].
pub fn retry_after(attempt: u32, outcome: &Attempt, elapsed: Duration) -> Option<Duration> {
    let retryable = match outcome {
        Attempt::Accepted => false,
        Attempt::Status(code) => !(400..500).contains(code) || *code == 408 || *code == 429,
        Attempt::NoAnswer(_) => true,
    };
    if !retryable || attempt >= MAX_ATTEMPTS {
        return None;
    }
    let wait = FIRST_RETRY.saturating_mul(1 << (attempt - 1).min(16));
    (elapsed + wait <= DELIVERY_BUDGET).then_some(wait)
}

/// How a message ended for one target, after its retries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Delivered {
    /// The last attempt's outcome.
    pub last: Attempt,
    /// Attempts made.
    pub attempts: u32,
}

/// Posts messages; one per process.
#[derive(Clone)]
pub struct Poster {
    /// Reads the URL Secrets (in the configuration's namespace).
    pub client: Client,
    /// The HTTP client for the targets.
    pub http: reqwest::Client,
    /// The configuration's namespace.
    pub namespace: String,
}

impl Poster {
    /// A poster reading Secrets in `namespace`.
    pub fn new(client: Client, namespace: String) -> Result<Poster, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(ATTEMPT_TIMEOUT)
            .user_agent(concat!("waymark/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Poster {
            client,
            http,
            namespace,
        })
    }

    /// The URL in the Secret key `from`, read at each delivery so that a rotated URL is used
    /// at once.
    async fn url(&self, from: &SecretKeyRef) -> Result<String, String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let shown = format!("Secret {}/{} key {}", self.namespace, from.name, from.key);
        let secret = match secrets.get_opt(&from.name).await {
            Ok(Some(secret)) => secret,
            Ok(None) => return Err(format!("{shown}: the Secret is not found")),
            Err(error) => return Err(format!("{shown}: cannot be read: {error}")),
        };
        let value = secret
            .data
            .as_ref()
            .and_then(|data| data.get(&from.key))
            .map(|bytes| String::from_utf8_lossy(&bytes.0).trim().to_string())
            .or_else(|| {
                secret
                    .string_data
                    .as_ref()
                    .and_then(|data| data.get(&from.key))
                    .map(|value| value.trim().to_string())
            })
            .filter(|value| !value.is_empty());
        value.ok_or_else(|| format!("{shown}: the key is missing or empty"))
    }

    /// One attempt.
    async fn attempt(&self, target: &Target, message: &Message) -> Attempt {
        let url = match self.url(&target.url_from).await {
            Ok(url) => url,
            Err(why) => return Attempt::NoAnswer(why),
        };
        let payload = payload(target.kind, message, target.blocks);
        let body = match serde_json::to_vec(&payload.body) {
            Ok(body) => body,
            Err(error) => return Attempt::NoAnswer(format!("cannot encode the payload: {error}")),
        };
        match self
            .http
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, payload.content_type)
            .body(body)
            .send()
            .await
        {
            Ok(response) if response.status().is_success() => Attempt::Accepted,
            Ok(response) => Attempt::Status(response.status().as_u16()),
            // The error names the URL, which is a credential: say what failed, not where.
            Err(error) if error.is_timeout() => {
                Attempt::NoAnswer(format!("no answer within {ATTEMPT_TIMEOUT:?}"))
            }
            Err(error) if error.is_connect() => Attempt::NoAnswer("connection failed".into()),
            Err(_) => Attempt::NoAnswer("the request failed".into()),
        }
    }

    /// Deliver `message` to `target`, retrying as [`retry_after`] says.
    pub async fn deliver(&self, target: &Target, message: &Message) -> Delivered {
        let started = Instant::now();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = self.attempt(target, message).await;
            match retry_after(attempts, &outcome, started.elapsed()) {
                Some(wait) if outcome != Attempt::Accepted => {
                    tracing::debug!(
                        target_name = %target.name,
                        id = %message.id,
                        attempt = attempts,
                        outcome = %outcome.describe(),
                        retry_in = ?wait,
                        "notification not accepted yet"
                    );
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    return Delivered {
                        last: outcome,
                        attempts,
                    };
                }
            }
        }
    }
}

/// A shared handle on the poster, for the tasks that deliver.
pub type SharedPoster = Arc<Poster>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_is_taken_once_and_the_oldest_is_forgotten_first() {
        let mut dedup = Dedup::new(2);
        assert!(dedup.first_time("a"));
        assert!(!dedup.first_time("a"), "a repeat");
        assert!(dedup.first_time("b"));
        assert!(dedup.first_time("c"), "a third key pushes a out");
        assert!(!dedup.first_time("b"));
        assert!(dedup.first_time("a"), "forgotten");
        dedup.forget("a");
        assert!(dedup.first_time("a"), "forgotten on purpose");
    }

    #[test]
    fn retries_back_off_and_stop_where_trying_again_cannot_help() {
        let s = Duration::from_secs;
        let cases = [
            (1, Attempt::Status(500), s(0), Some(s(1))),
            (2, Attempt::Status(503), s(1), Some(s(2))),
            (
                3,
                Attempt::NoAnswer("connection failed".into()),
                s(3),
                Some(s(4)),
            ),
            (4, Attempt::Status(429), s(7), Some(s(8))),
            (1, Attempt::Status(408), s(0), Some(s(1))),
            // The last attempt.
            (MAX_ATTEMPTS, Attempt::Status(500), s(15), None),
            // The next wait would end past the budget.
            (2, Attempt::Status(500), s(59), None),
            // The receiver refuses the message itself.
            (1, Attempt::Status(400), s(0), None),
            (1, Attempt::Status(404), s(0), None),
            (1, Attempt::Accepted, s(0), None),
        ];
        for (attempt, outcome, elapsed, expected) in cases {
            assert_eq!(
                retry_after(attempt, &outcome, elapsed),
                expected,
                "attempt {attempt}, {outcome:?} after {elapsed:?}"
            );
        }
    }

    #[test]
    fn a_target_that_answers_500_twice_is_accepted_within_the_budget() {
        let mut elapsed = Duration::ZERO;
        let answers = [
            Attempt::Status(500),
            Attempt::Status(500),
            Attempt::Accepted,
        ];
        let mut attempts = 0;
        for (index, answer) in answers.iter().enumerate() {
            attempts = index as u32 + 1;
            match retry_after(attempts, answer, elapsed) {
                Some(wait) => elapsed += wait,
                None => break,
            }
        }
        assert_eq!(attempts, 3);
        assert_eq!(elapsed, Duration::from_secs(3));
    }
}
