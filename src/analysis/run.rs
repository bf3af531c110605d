//! The I/O shell of one analysis run: plan the queries from the Release (pure), ask
//! Prometheus all of them at once, hand the answers to [`judge`].

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use super::client::{PrometheusClient, QueryOutcome};
use super::judge::{
    BudgetMeasurement, CheckMeasurement, Measurements, RoleMeasurement, WindowMeasurement,
    WindowQueries, error_run, judge,
};
use super::template::{QueryError, TemplateValues, render};
use super::{AnalysisRun, Clients, Credentials};
use crate::api::{Analysis, Check, Duration, Release, Role};

/// The queries of one role, one entry per distinct window.
#[derive(Clone, Debug, PartialEq)]
pub struct RolePlan {
    /// Canary or stable.
    pub role: Role,
    /// Its Service.
    pub service: String,
    /// Its windows' queries.
    pub windows: Vec<WindowQueries>,
}

/// Every query one run asks, resolved from the Release.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// The canary's queries; `None` when the Release has no canary.
    pub canary: Option<RolePlan>,
    /// The stable's queries.
    pub stable: RolePlan,
    /// Each check with its query resolved for the canary (none without a canary).
    pub checks: Vec<(Check, String)>,
    /// The budget period and the stable's queries over it, when `slo.budget` is set.
    pub budget: Option<(Duration, WindowQueries)>,
}

/// Resolves every query of `analysis` for `release`.
///
/// There is a canary when the status names a canary revision. Checks use the window of the
/// first `burnRates` pair's long window: it is the one the SLO already trusts to hold enough
/// samples, where the analysis `interval` may be shorter than a scrape interval or two.
pub fn plan(release: &Release, analysis: &Analysis) -> Result<Plan, QueryError> {
    let namespace = release.metadata.namespace.clone().unwrap_or_default();
    let name = release.metadata.name.clone().unwrap_or_default();
    let status = release.status.as_ref();
    let canary_revision = status.and_then(|status| status.canary_revision.clone());
    let stable_revision = status
        .and_then(|status| status.stable_revision.clone())
        .unwrap_or_default();
    let slo = &analysis.slo;

    let values = |role: Role, revision: &str, window: Duration| TemplateValues {
        namespace: namespace.clone(),
        release: name.clone(),
        role,
        revision: revision.to_string(),
        window,
    };
    let resolve = |field: &str, template: &str, values: &TemplateValues| {
        render(template, values).map_err(|error| QueryError {
            field: field.to_string(),
            error,
        })
    };
    let window_queries = |values: TemplateValues| -> Result<WindowQueries, QueryError> {
        Ok(WindowQueries {
            window: values.window,
            error_query: resolve("spec.analysis.slo.errorQuery", &slo.error_query, &values)?,
            total_query: resolve("spec.analysis.slo.totalQuery", &slo.total_query, &values)?,
        })
    };

    let mut windows: Vec<Duration> = Vec::new();
    for pair in &slo.burn_rates {
        for window in [pair.long, pair.short] {
            if !windows.contains(&window) {
                windows.push(window);
            }
        }
    }
    let role_plan = |role: Role, revision: &str| -> Result<RolePlan, QueryError> {
        Ok(RolePlan {
            role,
            service: role.child_name(&name),
            windows: windows
                .iter()
                .map(|window| window_queries(values(role, revision, *window)))
                .collect::<Result<_, _>>()?,
        })
    };

    let canary = canary_revision
        .as_deref()
        .map(|revision| role_plan(Role::Canary, revision))
        .transpose()?;
    let stable = role_plan(Role::Stable, &stable_revision)?;

    let check_window = slo
        .burn_rates
        .first()
        .map(|pair| pair.long)
        .unwrap_or(Duration::from_secs(300));
    let checks = match &canary_revision {
        Some(revision) => analysis
            .checks
            .iter()
            .enumerate()
            .map(|(index, check)| {
                let query = resolve(
                    &format!("spec.analysis.checks[{index}].query"),
                    &check.query,
                    &values(Role::Canary, revision, check_window),
                )?;
                Ok((check.clone(), query))
            })
            .collect::<Result<_, QueryError>>()?,
        None => Vec::new(),
    };

    let budget = slo
        .budget
        .as_ref()
        .map(|budget| {
            window_queries(values(Role::Stable, &stable_revision, budget.period))
                .map(|queries| (budget.period, queries))
        })
        .transpose()?;

    Ok(Plan {
        canary,
        stable,
        checks,
        budget,
    })
}

/// Asks Prometheus every query of `plan` concurrently and pairs each answer with its query.
///
/// When the client cannot even be built (bad CA bundle, bad token), every query gets that
/// failure, so the judgement and its summary take one path for all failures.
pub async fn measure(
    plan: &Plan,
    client: Result<&PrometheusClient, &super::client::QueryFailure>,
) -> Measurements {
    let mut queries: Vec<&str> = Vec::new();
    for role in plan.canary.iter().chain(std::iter::once(&plan.stable)) {
        for window in &role.windows {
            queries.push(&window.error_query);
            queries.push(&window.total_query);
        }
    }
    for (_, query) in &plan.checks {
        queries.push(query);
    }
    if let Some((_, window)) = &plan.budget {
        queries.push(&window.error_query);
        queries.push(&window.total_query);
    }

    let answers: Vec<QueryOutcome> = match client {
        Ok(client) => join_all(queries.iter().map(|query| client.instant(query))).await,
        Err(failure) => vec![QueryOutcome::Failed(failure.clone()); queries.len()],
    };
    let mut answers = answers.into_iter();
    // The answers come back in the order the queries were listed above; `NoData` for a missing
    // one cannot happen, and would be judged as missing data, never as a pass.
    let mut next = || answers.next().unwrap_or(QueryOutcome::NoData);

    let mut role_measurement = |role: &RolePlan| RoleMeasurement {
        role: role.role,
        service: role.service.clone(),
        windows: role
            .windows
            .iter()
            .map(|queries| WindowMeasurement {
                queries: queries.clone(),
                error: next(),
                total: next(),
            })
            .collect(),
    };
    let canary = plan.canary.as_ref().map(&mut role_measurement);
    let stable = role_measurement(&plan.stable);
    let checks = plan
        .checks
        .iter()
        .map(|(check, query)| CheckMeasurement {
            check: check.clone(),
            query: query.clone(),
            value: next(),
        })
        .collect();
    let budget = plan.budget.as_ref().map(|(period, _)| BudgetMeasurement {
        period: *period,
        error: next(),
        total: next(),
    });
    Measurements {
        canary,
        stable,
        checks,
        budget,
    }
}

/// One analysis run of `release`; see [`fn@super::run`].
pub async fn run(release: &Release, credentials: &Credentials, clients: &Clients) -> AnalysisRun {
    let revision = release
        .status
        .as_ref()
        .and_then(|status| status.canary_revision.clone());
    let Some(analysis) = &release.spec.analysis else {
        return error_run(
            "spec.analysis is not set: there is nothing to judge".into(),
            revision,
            Timestamp::now(),
        );
    };
    let plan = match plan(release, analysis) {
        Ok(plan) => plan,
        Err(error) => return error_run(error.to_string(), revision, Timestamp::now()),
    };
    let client = clients.get(&analysis.prometheus, credentials);
    let measurements = measure(&plan, client.as_ref()).await;
    judge(&analysis.slo, revision, &measurements, Timestamp::now())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReleaseStatus;

    fn release(canary_revision: Option<&str>) -> Release {
        let mut release: Release = serde_yaml::from_str(
            r#"
apiVersion: waymark.dev/v1alpha1
kind: Release
metadata: {name: checkout, namespace: shop}
spec:
  roadmap: {item: PAY-142}
  selector: {matchLabels: {app: checkout}}
  template: {metadata: {labels: {app: checkout}}}
  traffic: {replicas: {}}
  steps: [{setWeight: 10}]
  analysis:
    prometheus: {address: "http://prometheus:9090"}
    slo:
      objective: 99.9
      errorQuery: 'sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",code=~"5.."}[{{window}}]))'
      totalQuery: 'sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",revision="{{revision}}"}[{{window}}]))'
      burnRates: [{long: 5m, short: 1m, max: 14.4}, {long: 30m, short: 5m, max: 6}]
      budget: {period: 30d, freezeBelow: 0.1}
    checks:
    - {name: p99, query: 'q{role="{{role}}"}[{{window}}]', max: 0.25}
"#,
        )
        .unwrap();
        release.status = Some(ReleaseStatus {
            stable_revision: Some("5d8b9c".into()),
            canary_revision: canary_revision.map(Into::into),
            ..Default::default()
        });
        release
    }

    #[test]
    fn plans_each_distinct_window_once_per_role() {
        let release = release(Some("6f9c7d"));
        let plan = plan(&release, release.spec.analysis.as_ref().unwrap()).unwrap();
        let canary = plan.canary.unwrap();
        let windows: Vec<String> = canary
            .windows
            .iter()
            .map(|w| w.window.to_string())
            .collect();
        assert_eq!(windows, ["5m", "1m", "30m"]);
        assert_eq!(canary.service, "checkout-canary");
        assert_eq!(
            canary.windows[1].total_query,
            r#"sum(rate(http_requests_total{namespace="shop",service="checkout-canary",revision="6f9c7d"}[1m]))"#
        );
        assert_eq!(
            plan.stable.windows[0].total_query,
            r#"sum(rate(http_requests_total{namespace="shop",service="checkout-stable",revision="5d8b9c"}[5m]))"#
        );
        assert_eq!(plan.checks[0].1, r#"q{role="canary"}[5m]"#);
        let (period, budget) = plan.budget.unwrap();
        assert_eq!(period.to_string(), "720h");
        assert!(budget.error_query.contains("service=\"checkout-stable\""));
        assert!(budget.error_query.ends_with("[720h]))"));
    }

    #[test]
    fn without_a_canary_only_the_stable_and_budget_are_planned() {
        let release = release(None);
        let plan = plan(&release, release.spec.analysis.as_ref().unwrap()).unwrap();
        assert!(plan.canary.is_none());
        assert!(plan.checks.is_empty());
        assert!(plan.budget.is_some());
    }

    #[tokio::test]
    async fn an_unknown_placeholder_is_an_error_run_naming_the_field() {
        let mut release = release(Some("6f9c7d"));
        release.spec.analysis.as_mut().unwrap().checks[0].query = "q{pod=\"{{pod}}\"}".into();
        let result = run(&release, &Credentials::default(), &Clients::default()).await;
        assert_eq!(result.verdict, crate::api::Verdict::Error);
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
        let release = release(Some("6f9c7d"));
        let credentials = Credentials {
            bearer_token: None,
            ca_pem: Some(b"garbage".to_vec()),
        };
        let result = run(&release, &credentials, &Clients::default()).await;
        assert_eq!(result.verdict, crate::api::Verdict::Error);
        assert_eq!(
            result.summary,
            "cannot query Prometheus at http://prometheus:9090: the CA bundle from caSecret holds no certificate"
        );
    }
}
