//! Counting API requests: everyone's from the API server's own `apiserver_request_total`, and
//! the controller's alone from the API server's audit log.
//!
//! `apiserver_request_total` has no label naming the client, so it cannot tell the controller
//! from the bench's own creators, fake kubelet and watches. The audit log can: the API server
//! runs with a policy that records, at level Metadata, only the requests of the controller's
//! ServiceAccount (the controller authenticates with a token of that account, so the policy's
//! `users` rule matches it; an impersonating client would be audited as the impersonator,
//! because the API server evaluates the policy before impersonation).

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use k8s_openapi::jiff::Timestamp;
use serde::Deserialize;

/// One kind of request: a verb on a resource (with its subresource).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Kind {
    /// `GET`, `LIST`, `WATCH`, `CREATE`, `APPLY` (server-side apply), `PATCH` (any other
    /// patch), `UPDATE`, `DELETE`.
    pub verb: String,
    /// `releases/status`, `deployments`, ...
    pub resource: String,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.verb, self.resource)
    }
}

/// Requests counted by kind, and those refused by kind and status code.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Counts {
    /// Every request, by kind.
    pub by_kind: BTreeMap<Kind, u64>,
    /// Requests answered with a status code of 400 or more, by kind and code.
    pub refused: BTreeMap<(Kind, u16), u64>,
}

impl Counts {
    /// All requests.
    pub fn total(&self) -> u64 {
        self.by_kind.values().sum()
    }

    /// Requests that change something (not GET, LIST or WATCH).
    pub fn writes(&self) -> u64 {
        self.by_kind
            .iter()
            .filter(|(kind, _)| !matches!(kind.verb.as_str(), "GET" | "LIST" | "WATCH"))
            .map(|(_, count)| count)
            .sum()
    }

    fn add(&mut self, kind: Kind, code: u16, count: u64) {
        if count == 0 {
            return;
        }
        if code >= 400 {
            *self.refused.entry((kind.clone(), code)).or_default() += count;
        }
        *self.by_kind.entry(kind).or_default() += count;
    }

    /// What `later` counted beyond `self` (both cumulative counters of the same server).
    pub fn delta(&self, later: &Counts) -> Counts {
        let mut delta = Counts::default();
        for (kind, count) in &later.by_kind {
            let before = self.by_kind.get(kind).copied().unwrap_or(0);
            delta.add(kind.clone(), 0, count.saturating_sub(before));
        }
        for (key, count) in &later.refused {
            let before = self.refused.get(key).copied().unwrap_or(0);
            let more = count.saturating_sub(before);
            if more > 0 {
                delta.refused.insert(key.clone(), more);
            }
        }
        delta
    }
}

/// `apiserver_request_total` from the API server's `/metrics` text, summed over the labels
/// this bench does not report (group, version, scope, component). Long-running requests
/// (WATCH) are counted when they end.
pub fn parse_apiserver_metrics(text: &str) -> Counts {
    let mut counts = Counts::default();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.rsplit_once("} ") else {
            continue;
        };
        let labels = parse_labels(labels);
        let label = |name: &str| labels.get(name).map(String::as_str).unwrap_or("");
        let Ok(value) = value.trim().parse::<f64>() else {
            continue;
        };
        // Counters are integers; the text format writes them as floats.
        let count = value.max(0.0).round() as u64;
        let resource = match (label("resource"), label("subresource")) {
            ("", _) => continue, // non-resource URLs: /readyz, /metrics, discovery
            (resource, "") => resource.to_string(),
            (resource, sub) => format!("{resource}/{sub}"),
        };
        let verb = match label("verb") {
            "POST" => "CREATE".to_string(),
            "PUT" => "UPDATE".to_string(),
            other => other.to_string(),
        };
        let code = label("code").parse().unwrap_or(0);
        counts.add(Kind { verb, resource }, code, count);
    }
    counts
}

/// `name="value",...` of one Prometheus text line (values with escaped quotes included).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((name, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((index, c)) = chars.next() {
            match c {
                '\\' => {
                    if let Some((_, escaped)) = chars.next() {
                        value.push(escaped);
                    }
                }
                '"' => {
                    end = index + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(name.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// The audit policy: the requests of `user`, at level Metadata (no bodies), each once
/// (`RequestReceived` omitted: a request is logged when answered, a WATCH also when its
/// stream starts); nothing of anyone else.
pub fn audit_policy(user: &str) -> String {
    format!(
        "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n\
         - level: Metadata\n  users: [\"{user}\"]\n- level: None\n"
    )
}

/// The `kube-apiserver` flags that write the audit log of `policy` to `log`.
pub fn audit_flags(policy: &Path, log: &Path) -> Vec<String> {
    vec![
        format!("--audit-policy-file={}", policy.display()),
        format!("--audit-log-path={}", log.display()),
        // One file for the whole run: the default rotates at 100 MB.
        "--audit-log-maxsize=1000000".into(),
        "--audit-log-format=json".into(),
        // Written as the request is answered, not in batches.
        "--audit-log-mode=blocking".into(),
    ]
}

/// One request of the audited user, when the API server received it.
#[derive(Clone, Debug)]
pub struct Audited {
    /// When the API server received the request.
    pub received: Timestamp,
    /// What it was.
    pub kind: Kind,
    /// The answer's status code.
    pub code: u16,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AuditEvent {
    #[serde(rename = "auditID")]
    audit_id: String,
    stage: String,
    verb: String,
    #[serde(rename = "requestURI")]
    request_uri: String,
    user: AuditUser,
    object_ref: Option<AuditObject>,
    response_status: Option<AuditStatus>,
    request_received_timestamp: String,
}

#[derive(Deserialize)]
struct AuditUser {
    username: Option<String>,
}

#[derive(Deserialize)]
struct AuditObject {
    resource: Option<String>,
    subresource: Option<String>,
}

#[derive(Deserialize)]
struct AuditStatus {
    code: Option<u16>,
}

/// Every request of `user` in the audit log at `path`, each counted once: a WATCH at its
/// first event (the stream started, or an error before it did), any other request when it
/// was answered.
pub fn read_audit_log(path: &PathBuf, user: &str) -> Result<Vec<Audited>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read the audit log {}: {error}", path.display()))?;
    let mut watches_seen = HashSet::new();
    let mut requests = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let event: AuditEvent = serde_json::from_str(line).map_err(|error| {
            format!(
                "line {} of the audit log {} is not an audit event: {error}",
                number + 1,
                path.display()
            )
        })?;
        if event.user.username.as_deref() != Some(user) {
            continue;
        }
        let counted = if event.verb == "watch" {
            watches_seen.insert(event.audit_id.clone())
        } else {
            event.stage == "ResponseComplete" || event.stage == "Panic"
        };
        if !counted {
            continue;
        }
        let Some(object) = event.object_ref else {
            continue; // non-resource URLs
        };
        let resource = match (object.resource, object.subresource) {
            (Some(resource), Some(sub)) if !sub.is_empty() => format!("{resource}/{sub}"),
            (Some(resource), _) => resource,
            (None, _) => continue,
        };
        let verb = match event.verb.as_str() {
            // `force` is valid only with server-side apply; Waymark always forces its applies.
            "patch" if event.request_uri.contains("force=true") => "APPLY".to_string(),
            verb => verb.to_ascii_uppercase(),
        };
        let received: Timestamp = event.request_received_timestamp.parse().map_err(|error| {
            format!(
                "line {} of the audit log: bad requestReceivedTimestamp {:?}: {error}",
                number + 1,
                event.request_received_timestamp
            )
        })?;
        requests.push(Audited {
            received,
            kind: Kind { verb, resource },
            code: event.response_status.and_then(|s| s.code).unwrap_or(0),
        });
    }
    Ok(requests)
}

/// The audited requests received in `[from, to)`.
pub fn count_between(requests: &[Audited], from: Timestamp, to: Timestamp) -> Counts {
    let mut counts = Counts::default();
    for request in requests
        .iter()
        .filter(|request| request.received >= from && request.received < to)
    {
        counts.add(request.kind.clone(), request.code, 1);
    }
    counts
}
