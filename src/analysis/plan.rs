//! The plan of one analysis run: every query it asks, resolved from the Release, and the
//! pairing of their answers with the queries, whoever asked them (the controller's instant
//! queries, or one instant of replay's range queries). Asking is the shell's
//! (`controller::prometheus`).

use super::judge::{
    BudgetMeasurement, CheckMeasurement, Measurements, RoleMeasurement, WindowMeasurement,
    WindowQueries,
};
use super::outcome::QueryOutcome;
use super::template::{QueryError, TemplateValues, render};
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

/// Who plays one role in the queries: the values of `{{revision}}` and `{{service}}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoleTarget {
    /// The revision (template hash) the role runs; empty when unknown.
    pub revision: String,
    /// The Service, when it is not `<release>-<role>`.
    pub service: Option<String>,
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
    let canary = status
        .and_then(|status| status.canary_revision.clone())
        .map(|revision| RoleTarget {
            revision,
            service: None,
        });
    let stable = RoleTarget {
        revision: status
            .and_then(|status| status.stable_revision.clone())
            .unwrap_or_default(),
        service: None,
    };
    plan_for(&namespace, &name, analysis, canary.as_ref(), &stable, true)
}

/// Resolves every query of `analysis` for the Release `name` in `namespace`, with `canary`
/// (when there is one) and `stable` playing the roles; the budget queries only when
/// `with_budget`.
///
/// [`plan`] is this for a Release as the controller sees it; replay calls it with the roles a
/// person names and without the budget, which gates the start of a canary rather than judging
/// one.
pub fn plan_for(
    namespace: &str,
    name: &str,
    analysis: &Analysis,
    canary: Option<&RoleTarget>,
    stable: &RoleTarget,
    with_budget: bool,
) -> Result<Plan, QueryError> {
    let slo = &analysis.slo;
    let values = |role: Role, target: &RoleTarget, window: Duration| TemplateValues {
        namespace: namespace.to_string(),
        release: name.to_string(),
        role,
        service: target.service.clone(),
        revision: target.revision.clone(),
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
    let role_plan = |role: Role, target: &RoleTarget| -> Result<RolePlan, QueryError> {
        Ok(RolePlan {
            role,
            service: target
                .service
                .clone()
                .unwrap_or_else(|| role.child_name(name)),
            windows: windows
                .iter()
                .map(|window| window_queries(values(role, target, *window)))
                .collect::<Result<_, _>>()?,
        })
    };

    let canary_plan = canary
        .map(|target| role_plan(Role::Canary, target))
        .transpose()?;
    let stable_plan = role_plan(Role::Stable, stable)?;

    let check_window = slo
        .burn_rates
        .first()
        .map(|pair| pair.long)
        .unwrap_or(Duration::from_secs(300));
    let checks = match canary {
        Some(target) => analysis
            .checks
            .iter()
            .enumerate()
            .map(|(index, check)| {
                let query = resolve(
                    &format!("spec.analysis.checks[{index}].query"),
                    &check.query,
                    &values(Role::Canary, target, check_window),
                )?;
                Ok((check.clone(), query))
            })
            .collect::<Result<_, QueryError>>()?,
        None => Vec::new(),
    };

    let budget = slo
        .budget
        .as_ref()
        .filter(|_| with_budget)
        .map(|budget| {
            window_queries(values(Role::Stable, stable, budget.period))
                .map(|queries| (budget.period, queries))
        })
        .transpose()?;

    Ok(Plan {
        canary: canary_plan,
        stable: stable_plan,
        checks,
        budget,
    })
}

impl Plan {
    /// Every query of the plan, in the order [`Plan::assemble`] expects their answers.
    pub fn queries(&self) -> Vec<&str> {
        let mut queries: Vec<&str> = Vec::new();
        for role in self.canary.iter().chain(std::iter::once(&self.stable)) {
            for window in &role.windows {
                queries.push(&window.error_query);
                queries.push(&window.total_query);
            }
        }
        for (_, query) in &self.checks {
            queries.push(query);
        }
        if let Some((_, window)) = &self.budget {
            queries.push(&window.error_query);
            queries.push(&window.total_query);
        }
        queries
    }

    /// Pairs each query of [`Plan::queries`] with its answer, in that order, whether the
    /// answers came from instant queries (a run) or from one instant of range queries (replay).
    ///
    /// A missing answer cannot happen when the caller answered every query; if it does it is
    /// `NoData`, judged as missing data and never as a pass.
    pub fn assemble(&self, answers: impl IntoIterator<Item = QueryOutcome>) -> Measurements {
        let mut answers = answers.into_iter();
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
        let canary = self.canary.as_ref().map(&mut role_measurement);
        let stable = role_measurement(&self.stable);
        let checks = self
            .checks
            .iter()
            .map(|(check, query)| CheckMeasurement {
                check: check.clone(),
                query: query.clone(),
                value: next(),
            })
            .collect();
        let budget = self.budget.as_ref().map(|(period, _)| BudgetMeasurement {
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::ReleaseStatus;

    fn release(canary_revision: Option<&str>) -> Release {
        let mut release: Release = serde_saphyr::from_str(
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
}
