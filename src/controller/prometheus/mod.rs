//! All of Waymark's Prometheus I/O: the HTTP client with its credentials ([`client`]), one
//! client per address shared by every Release ([`clients`]), and one analysis run: the pure
//! plan ([`crate::analysis::plan`]) asked of Prometheus concurrently, the answers handed to the
//! pure judgement ([`crate::analysis::judge`]).
//!
//! The controller's runs and the CLI's replay (range queries) both go through
//! [`PrometheusClient`]; nothing under `src/analysis/` talks to Prometheus.

pub mod client;
pub mod clients;

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use crate::analysis::judge::{Measurements, error_run, judge};
use crate::analysis::plan::{Plan, plan};
use crate::analysis::roadmap_outcome::{PendingMeasurement, render_query};
use crate::analysis::{AnalysisRun, QueryFailure, QueryOutcome};
use crate::api::Release;
use crate::rollout::outcome::OutcomeAnswer;

pub use client::PrometheusClient;
pub use clients::Clients;

/// Secrets resolved by the controller for one Release's Prometheus connection.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Credentials {
    /// Value of `spec.analysis.prometheus.bearerTokenSecret`, when set.
    pub bearer_token: Option<String>,
    /// PEM CA bundle from `spec.analysis.prometheus.caSecret`, when set.
    pub ca_pem: Option<Vec<u8>>,
}

/// Asks Prometheus every query of `plan` concurrently and pairs each answer with its query.
///
/// When the client cannot even be built (bad CA bundle, bad token), every query gets that
/// failure, so the judgement and its summary take one path for all failures.
pub async fn measure(
    plan: &Plan,
    client: Result<&PrometheusClient, &QueryFailure>,
) -> Measurements {
    let queries = plan.queries();
    let answers: Vec<QueryOutcome> = match client {
        Ok(client) => join_all(queries.iter().map(|query| client.instant(query))).await,
        Err(failure) => vec![QueryOutcome::Failed(failure.clone()); queries.len()],
    };
    plan.assemble(answers)
}

/// Run one analysis of `release` (canary and stable SLO windows, comparison, checks, budget),
/// recorded as run at `now` (the reconcile's instant, the one the core decides with).
///
/// Never fails: an unreachable Prometheus or an invalid query is an `Error` verdict whose
/// summary names the address and Prometheus's error text.
///
/// Queries of one run go to Prometheus concurrently, over the client `clients` keeps for the
/// address (connections are reused across runs and Releases).
pub async fn run(
    release: &Release,
    credentials: &Credentials,
    clients: &Clients,
    now: Timestamp,
) -> AnalysisRun {
    let revision = release
        .status
        .as_ref()
        .and_then(|status| status.canary_revision.clone());
    let Some(analysis) = &release.spec.analysis else {
        return error_run(
            "spec.analysis is not set: there is nothing to judge".into(),
            revision,
            now,
        );
    };
    let plan = match plan(release, analysis) {
        Ok(plan) => plan,
        Err(error) => return error_run(error.to_string(), revision, now),
    };
    let client = clients.get(&analysis.prometheus, credentials);
    let answers = match &client {
        Ok(client) => ask_reusing_budget(&plan, client, clients).await,
        Err(failure) => vec![QueryOutcome::Failed(failure.clone()); plan.queries().len()],
    };
    warn_failures(release, &answers);
    judge(&analysis.slo, revision, &plan.assemble(answers), now)
}

/// Ask Prometheus for each roadmap outcome measurement `due` lists: the outcome query with
/// `{{window}}` as the measurement's window, evaluated at the end of that window. The
/// Prometheus is `spec.analysis.prometheus` (the spec check requires it); without it, or with
/// credentials that cannot be read, every measurement fails with the reason, which the core
/// counts as an attempt.
pub async fn measure_outcomes(
    release: &Release,
    credentials: Result<&Credentials, String>,
    clients: &Clients,
    due: &[PendingMeasurement],
) -> Vec<OutcomeAnswer> {
    let namespace = release.metadata.namespace.as_deref().unwrap_or_default();
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let client = match (&release.spec.analysis, credentials) {
        (Some(analysis), Ok(credentials)) => clients.get(&analysis.prometheus, credentials),
        (Some(analysis), Err(reason)) => Err(QueryFailure::Setup {
            address: analysis.prometheus.address.clone(),
            reason,
        }),
        (None, _) => Err(QueryFailure::Setup {
            address: String::new(),
            reason: "spec.analysis.prometheus is not set: the outcome has no Prometheus to ask"
                .into(),
        }),
    };
    let answers: Vec<QueryOutcome> = join_all(due.iter().map(|pending| {
        let client = &client;
        async move {
            let query = match render_query(
                &pending.query,
                namespace,
                name,
                &pending.revision,
                pending.window,
            ) {
                Ok(query) => query,
                Err(error) => {
                    return QueryOutcome::Failed(QueryFailure::Setup {
                        address: String::new(),
                        reason: format!("spec.roadmap.outcome.query: {error}"),
                    });
                }
            };
            match client {
                Ok(client) => {
                    client
                        .instant_at(&query, Some(pending.evaluate_at.as_second()))
                        .await
                }
                Err(failure) => QueryOutcome::Failed(failure.clone()),
            }
        }
    }))
    .await;
    let subject = super::logs::Subject::of(release);
    due.iter()
        .zip(answers)
        .map(|(pending, answer)| {
            if let QueryOutcome::Failed(failure) = &answer {
                tracing::warn!(
                    namespace = %subject.namespace,
                    release = %subject.release,
                    revision = %pending.revision,
                    roadmap_item = %subject.roadmap_item,
                    "roadmap outcome query ({} number) failed: {failure}",
                    pending.measurement
                );
            }
            OutcomeAnswer {
                revision: pending.revision.clone(),
                finished_at: pending.finished_at,
                measurement: pending.measurement,
                answer,
            }
        })
        .collect()
}

/// One `warn` line per distinct failure among a run's answers, in Prometheus' or the HTTP
/// client's words: an unreachable Prometheus fails every query the same way and is told once
/// per run, not once per query.
fn warn_failures(release: &Release, answers: &[QueryOutcome]) {
    let mut told: Vec<&QueryFailure> = Vec::new();
    for answer in answers {
        if let QueryOutcome::Failed(failure) = answer
            && !told.contains(&failure)
        {
            told.push(failure);
        }
    }
    if told.is_empty() {
        return;
    }
    let subject = super::logs::Subject::of(release);
    for failure in told {
        tracing::warn!(
            namespace = %subject.namespace,
            release = %subject.release,
            revision = %subject.revision,
            roadmap_item = %subject.roadmap_item,
            "analysis query failed: {failure}"
        );
    }
}

/// The answers to every query of `plan`, the budget queries answered from `clients`' cache
/// while their answer is younger than a fraction of the budget period
/// ([`clients::budget_answer_ttl`]).
async fn ask_reusing_budget(
    plan: &Plan,
    client: &PrometheusClient,
    clients: &Clients,
) -> Vec<QueryOutcome> {
    let budget = plan.budget.as_ref().map(|(period, window)| {
        (
            clients::budget_answer_ttl(period.as_std()),
            [window.error_query.as_str(), window.total_query.as_str()],
        )
    });
    let address = client.address();
    join_all(plan.queries().into_iter().map(|query| async move {
        let Some((ttl, _)) = budget.filter(|(_, queries)| queries.contains(&query)) else {
            return client.instant(query).await;
        };
        if let Some(answer) = clients.budget_answer(address, query, ttl) {
            return answer;
        }
        let answer = client.instant(query).await;
        clients.remember_budget_answer(address, query, &answer, ttl);
        answer
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReleaseStatus;
    use crate::fixtures::{ReleaseBuilder, at};

    fn release() -> Release {
        let mut release = ReleaseBuilder::gateway().analysis().build();
        release.status = Some(ReleaseStatus {
            stable_revision: Some("5d8b9c".into()),
            canary_revision: Some("6f9c7d".into()),
            ..Default::default()
        });
        release
    }

    #[tokio::test]
    async fn an_unknown_placeholder_is_an_error_run_naming_the_field() {
        let mut release = release();
        let analysis = release.spec.analysis.as_mut().unwrap();
        analysis.checks = vec![crate::api::Check {
            name: "p99".into(),
            query: "q{pod=\"{{pod}}\"}".into(),
            max: Some(0.25),
            min: None,
        }];
        let result = run(
            &release,
            &Credentials::default(),
            &Clients::default(),
            at(0),
        )
        .await;
        assert_eq!(result.verdict, crate::api::Verdict::Error);
        assert_eq!(result.ran_at, at(0), "the reconcile's instant");
        assert!(
            result
                .summary
                .starts_with("spec.analysis.checks[0].query: unknown placeholder {{pod}}"),
            "{}",
            result.summary
        );
    }

    #[tokio::test]
    async fn an_unusable_ca_bundle_is_an_error_run() {
        let release = release();
        let credentials = Credentials {
            bearer_token: None,
            ca_pem: Some(b"garbage".to_vec()),
        };
        let result = run(&release, &credentials, &Clients::default(), at(0)).await;
        assert_eq!(result.verdict, crate::api::Verdict::Error);
        assert_eq!(
            result.summary,
            "cannot query Prometheus at http://prometheus.monitoring:9090: the CA bundle from caSecret holds no certificate"
        );
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_one_warn_line_per_run_in_the_clients_words() {
        use crate::controller::logs::{Captured, LogFormat};
        // A port nothing listens on: the connection is refused at once.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let mut release = release();
        release.spec.analysis.as_mut().unwrap().prometheus.address = address.clone();
        let (buffer, _guard) = Captured::start(LogFormat::Json);
        let result = run(
            &release,
            &Credentials::default(),
            &Clients::default(),
            at(0),
        )
        .await;
        assert_eq!(result.verdict, crate::api::Verdict::Error);
        let lines = buffer.json();
        assert_eq!(
            lines.len(),
            1,
            "one line for all the run's queries: {lines:#?}"
        );
        let line = &lines[0];
        assert_eq!(line["level"], "WARN");
        let message = line["message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!(
                "analysis query failed: Prometheus at {address} unreachable: "
            )) && message.len()
                > "analysis query failed: Prometheus at  unreachable: ".len() + address.len(),
            "{message}"
        );
        assert_eq!(
            (
                &line["namespace"],
                &line["release"],
                &line["revision"],
                &line["roadmap_item"]
            ),
            (
                &serde_json::json!("shop"),
                &serde_json::json!("checkout"),
                &serde_json::json!("6f9c7d"),
                &serde_json::json!("PAY-142")
            )
        );
    }
}
