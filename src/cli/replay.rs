//! `waymark replay`: a Release's analysis over Prometheus history, as if a canary had run then.
//!
//! The queries are the controller's own (same templates, same judge); the only difference is
//! where the numbers come from: one range query per query template over `--from`..`--to`
//! every `--step`, then each instant of those answers is judged like one instant-query run.
//!
//! [`prepare`] reads and checks everything a person typed (pure, tested without Prometheus);
//! [`fetch`] asks Prometheus and replays; [`render_text`] and [`render_json`] print the result.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use futures::future::join_all;
use k8s_openapi::jiff::Timestamp;

use crate::analysis::format::{format_number, format_period, format_span as span};
use crate::analysis::judge::judge;
use crate::analysis::plan::{Plan, RoleTarget, plan_for};
use crate::analysis::replay::{Replay, ReplayEvent, ReplayOutcome, replay};
use crate::analysis::roadmap_outcome;
use crate::analysis::template::placeholders;
use crate::analysis::{AnalysisRun, QueryError, QueryFailure, SampledSeries};
use crate::api::{Duration, OutcomeRecord, PrometheusSource, Release, template_revision};
use crate::controller::prometheus::{Credentials, PrometheusClient};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

/// Prometheus answers at most this many instants per series of one range query.
pub const MAX_INSTANTS: i64 = 11_000;

/// Arguments of `waymark replay`.
#[derive(clap::Args, Debug, Clone, PartialEq)]
pub struct ReplayArgs {
    /// The Release manifest (YAML; the first document of kind Release is used).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Base URL of the Prometheus holding the history, e.g. `http://prometheus.monitoring:9090`
    /// (replaces spec.analysis.prometheus.address).
    #[arg(long)]
    pub prometheus: String,
    /// Start: RFC 3339 (2026-11-21T10:00:00Z), `now`, or relative to now (-2h, now-90m).
    #[arg(long, allow_hyphen_values = true)]
    pub from: String,
    /// End, written like --from.
    #[arg(long, allow_hyphen_values = true, default_value = "now")]
    pub to: String,
    /// Time between replayed runs, in whole seconds (default: spec.analysis.interval).
    #[arg(long)]
    pub step: Option<Duration>,
    /// Who played the canary then: `service=NAME,revision=HASH` for `{{service}}` and
    /// `{{revision}}` (default: `<release>-canary` and the template's revision).
    #[arg(long)]
    pub canary_role_selector: Option<String>,
    /// Who played the stable then, written like --canary-role-selector (default:
    /// `<release>-stable` and status.stableRevision when the file has it).
    #[arg(long)]
    pub stable_role_selector: Option<String>,
    /// Namespace for `{{namespace}}` (default: the manifest's metadata.namespace).
    #[arg(short, long)]
    pub namespace: Option<String>,
    /// Output format.
    #[arg(short, long, value_enum, default_value_t = ReplayFormat::Text)]
    pub output: ReplayFormat,
    /// Text output: show only the runs where the verdict changes or the canary moves, and
    /// count the others.
    #[arg(long)]
    pub changes: bool,
}

/// How `waymark replay` prints.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReplayFormat {
    /// One line per run, then the outcome.
    Text,
    /// Everything, for scripts.
    Json,
}

/// Why a replay cannot run, naming the flag or field to fix.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ReplayError {
    /// The file cannot be read.
    #[error("cannot read -f {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
    /// The file is not YAML.
    #[error("-f {path} is not YAML: {reason}")]
    NotYaml {
        /// The file.
        path: String,
        /// The parser's reason.
        reason: String,
    },
    /// No document of the file is a Release.
    #[error("-f {path} holds no Release (apiVersion: waymark.dev/v1alpha1, kind: Release){found}")]
    NotARelease {
        /// The file.
        path: String,
        /// `; it holds: HTTPRoute, Service` or nothing.
        found: String,
    },
    /// The Release does not parse.
    #[error("-f {path}: the Release is not valid: {reason}")]
    InvalidRelease {
        /// The file.
        path: String,
        /// The field and what is wrong with it.
        reason: String,
    },
    /// No `spec.analysis`.
    #[error("-f {path}: spec.analysis is not set, so there is no analysis to replay")]
    NoAnalysis {
        /// The file.
        path: String,
    },
    /// No namespace for `{{namespace}}`.
    #[error("-f {path} sets no metadata.namespace: pass -n NAMESPACE")]
    NoNamespace {
        /// The file.
        path: String,
    },
    /// A time flag that cannot be read.
    #[error(
        "{flag} {value:?}: {reason}; write RFC 3339 (2026-11-21T10:00:00Z), `now`, or a time relative to now (-2h, now-90m)"
    )]
    Time {
        /// `--from` or `--to`.
        flag: &'static str,
        /// What was typed.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// `--from` not before `--to`.
    #[error("--from ({from}) must be before --to ({to})")]
    Order {
        /// The start.
        from: Timestamp,
        /// The end.
        to: Timestamp,
    },
    /// A step that Prometheus and the grid cannot use.
    #[error("--step {step}: {reason}")]
    Step {
        /// The step.
        step: Duration,
        /// What is wrong.
        reason: String,
    },
    /// A role selector that cannot be read.
    #[error("{flag} {value:?}: {reason}; write e.g. service=checkout-v2,revision=6f9c7d")]
    Selector {
        /// The flag.
        flag: &'static str,
        /// What was typed.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// A query needs `{{revision}}` for a role whose revision is unknown.
    #[error(
        "{field} uses {{{{revision}}}}, but the stable's revision is unknown (the file has no status.stableRevision): pass --stable-role-selector revision=HASH"
    )]
    UnknownRevision {
        /// The query's field.
        field: String,
    },
    /// A query template cannot be resolved.
    #[error("-f {path}: {error}")]
    Query {
        /// The file.
        path: String,
        /// The field and what is wrong.
        error: QueryError,
    },
    /// Prometheus cannot be asked at all (bad address).
    #[error("--prometheus: {0}")]
    Prometheus(QueryFailure),
    /// A range query failed.
    #[error("--prometheus: {what}: {failure}")]
    RangeQuery {
        /// Which query, e.g. `canary error query over 5m`.
        what: String,
        /// Why.
        failure: String,
    },
}

/// Everything a replay needs before talking to Prometheus, checked.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    /// The Release from the file.
    pub release: Release,
    /// Its namespace (the file's or `-n`).
    pub namespace: String,
    /// The first replayed instant.
    pub from: Timestamp,
    /// The last instant replayed is the last `from + k·step` not after this.
    pub to: Timestamp,
    /// Time between runs.
    pub step: Duration,
    /// `--prometheus`.
    pub prometheus: String,
    /// Who plays the canary.
    pub canary: RoleTarget,
    /// Who plays the stable.
    pub stable: RoleTarget,
    /// The resolved queries.
    pub plan: Plan,
}

impl Prepared {
    /// The replayed instants, Unix seconds.
    pub fn instants(&self) -> Vec<i64> {
        let step = self.step.as_secs() as i64;
        let (from, to) = (self.from.as_second(), self.to.as_second());
        (0..)
            .map(|k| from + k * step)
            .take_while(|at| *at <= to)
            .collect()
    }
}

/// Reads `--from`/`--to`: RFC 3339, `now`, `-2h` or `now-2h`.
pub fn parse_time(
    flag: &'static str,
    value: &str,
    now: Timestamp,
) -> Result<Timestamp, ReplayError> {
    let error = |reason: String| ReplayError::Time {
        flag,
        value: value.to_string(),
        reason,
    };
    let text = value.trim();
    let relative = text.strip_prefix("now").unwrap_or(text);
    if relative.is_empty() {
        return Ok(now);
    }
    if let Some(ago) = relative.strip_prefix('-') {
        let ago: Duration = ago
            .parse()
            .map_err(|e: crate::api::DurationError| error(e.to_string()))?;
        return now
            .checked_sub(ago.as_signed())
            .map_err(|e| error(e.to_string()));
    }
    text.parse::<Timestamp>()
        .map_err(|e| error(format!("not a time ({e})")))
}

/// Reads a role selector: `service=NAME,revision=HASH`, either part optional.
pub fn parse_selector(
    flag: &'static str,
    value: &str,
    defaults: RoleTarget,
) -> Result<RoleTarget, ReplayError> {
    let error = |reason: String| ReplayError::Selector {
        flag,
        value: value.to_string(),
        reason,
    };
    let mut target = defaults;
    for part in value.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((key, val)) = part.split_once('=') else {
            return Err(error(format!("{part:?} is not KEY=VALUE")));
        };
        let val = val.trim().trim_matches('"');
        if val.is_empty() {
            return Err(error(format!("{key} has an empty value")));
        }
        match key.trim() {
            "service" => target.service = Some(val.to_string()),
            "revision" => target.revision = val.to_string(),
            other => {
                return Err(error(format!(
                    "unknown key {other:?}; the keys are service and revision"
                )));
            }
        }
    }
    Ok(target)
}

/// The first Release of a (multi-document) YAML file.
///
/// Documents are split on `---` lines and each is read as plain YAML first; the Release is
/// then decoded from it with its path kept, so that a wrong field is reported by name
/// (`spec.analysis.slo.objective: invalid type ...`).
pub fn release_from_yaml(path: &Path, text: &str) -> Result<Release, ReplayError> {
    let shown = path.display().to_string();
    let mut found = Vec::new();
    let mut documents = vec![String::new()];
    for line in text.lines() {
        if line.trim_end() == "---" || line.starts_with("--- ") {
            documents.push(String::new());
        } else if let Some(document) = documents.last_mut() {
            document.push_str(line);
            document.push('\n');
        }
    }
    for document in &documents {
        let value: serde_json::Value =
            serde_saphyr::from_str(document).map_err(|e| ReplayError::NotYaml {
                path: shown.clone(),
                reason: e.to_string(),
            })?;
        if value.is_null() {
            continue;
        }
        let field = |name: &str| value.get(name).and_then(|v| v.as_str()).unwrap_or("");
        let (kind, api_version) = (field("kind"), field("apiVersion"));
        if kind == "Release" && api_version.starts_with("waymark.dev/") {
            return serde_path_to_error::deserialize(value).map_err(|e| {
                ReplayError::InvalidRelease {
                    path: shown.clone(),
                    reason: format!("{}: {}", e.path(), e.inner()),
                }
            });
        }
        found.push(if kind.is_empty() {
            "a document without kind".to_string()
        } else {
            kind.to_string()
        });
    }
    Err(ReplayError::NotARelease {
        path: shown,
        found: if found.is_empty() {
            "; it is empty".into()
        } else {
            format!("; it holds: {}", found.join(", "))
        },
    })
}

/// Checks the arguments and the file's text and resolves every query. Pure: `now` is the time
/// relative flags count from.
pub fn prepare(
    args: &ReplayArgs,
    file_text: &str,
    now: Timestamp,
) -> Result<Prepared, ReplayError> {
    let path = args.file.display().to_string();
    let release = release_from_yaml(&args.file, file_text)?;
    let Some(analysis) = release.spec.analysis.clone() else {
        return Err(ReplayError::NoAnalysis { path });
    };
    // The controller's own check: a query it would refuse (`SpecValid=False`) is refused here.
    crate::analysis::validate_queries(&analysis).map_err(|error| ReplayError::Query {
        path: path.clone(),
        error,
    })?;
    let namespace = args
        .namespace
        .clone()
        .or_else(|| release.metadata.namespace.clone())
        .ok_or_else(|| ReplayError::NoNamespace { path: path.clone() })?;
    let name = release.metadata.name.clone().unwrap_or_default();

    let from = parse_time("--from", &args.from, now)?;
    let to = parse_time("--to", &args.to, now)?;
    // Prometheus takes whole seconds; start and end on one so the grid and its answers line
    // up, and the report prints its range to the second.
    let from = super::render::to_the_second(from);
    let to = super::render::to_the_second(to);
    if from >= to {
        return Err(ReplayError::Order { from, to });
    }
    let step = args.step.unwrap_or(analysis.interval);
    let step_error = |reason: String| ReplayError::Step { step, reason };
    if step.as_secs() == 0 || step.as_std().subsec_nanos() != 0 {
        return Err(step_error(
            "must be a whole number of seconds, at least 1s".into(),
        ));
    }
    let instants = (to.as_second() - from.as_second()) / step.as_secs() as i64 + 1;
    if instants > MAX_INSTANTS {
        return Err(step_error(format!(
            "gives {instants} instants from --from to --to; Prometheus answers at most {MAX_INSTANTS} per query: use a larger --step or a shorter span"
        )));
    }

    let canary_default = RoleTarget {
        revision: template_revision(&release.spec.template),
        service: None,
    };
    let canary = match &args.canary_role_selector {
        Some(value) => parse_selector("--canary-role-selector", value, canary_default)?,
        None => canary_default,
    };
    let stable_default = RoleTarget {
        revision: release
            .status
            .as_ref()
            .and_then(|status| status.stable_revision.clone())
            .unwrap_or_default(),
        service: None,
    };
    let stable = match &args.stable_role_selector {
        Some(value) => parse_selector("--stable-role-selector", value, stable_default)?,
        None => stable_default,
    };
    if stable.revision.is_empty() {
        let slo = &analysis.slo;
        for (field, template) in [
            ("spec.analysis.slo.errorQuery", &slo.error_query),
            ("spec.analysis.slo.totalQuery", &slo.total_query),
        ] {
            if placeholders(template).iter().any(|name| name == "revision") {
                return Err(ReplayError::UnknownRevision {
                    field: field.into(),
                });
            }
        }
    }
    let plan = plan_for(&namespace, &name, &analysis, Some(&canary), &stable, false)
        .map_err(|error| ReplayError::Query { path, error })?;
    Ok(Prepared {
        release,
        namespace,
        from,
        to,
        step,
        prometheus: args.prometheus.clone(),
        canary,
        stable,
        plan,
    })
}

/// What each query of the plan is, for messages: `canary error query over 5m`.
fn query_names(plan: &Plan) -> Vec<String> {
    let mut names = Vec::new();
    for role in plan.canary.iter().chain(std::iter::once(&plan.stable)) {
        for window in &role.windows {
            names.push(format!("{} error query over {}", role.role, window.window));
            names.push(format!("{} total query over {}", role.role, window.window));
        }
    }
    for (check, _) in &plan.checks {
        names.push(format!("query of check {}", check.name));
    }
    names
}

/// The replay and what it ran on.
#[derive(Clone, Debug, PartialEq)]
pub struct ReplayReport {
    /// The checked inputs.
    pub prepared: Prepared,
    /// Distinct queries asked, one range query each.
    pub range_queries: usize,
    /// The replay.
    pub replay: Replay,
    /// `spec.roadmap.outcome` measured around the replayed promotion (the canary started at
    /// `--from`), when the spec has one and the replay promotes.
    pub roadmap_outcome: Option<OutcomeRecord>,
}

/// Asks Prometheus one range query per distinct query of the plan (concurrently), judges each
/// instant like a run, and replays the canary.
pub async fn fetch(prepared: Prepared) -> Result<ReplayReport, ReplayError> {
    let analysis =
        prepared
            .release
            .spec
            .analysis
            .clone()
            .ok_or_else(|| ReplayError::NoAnalysis {
                path: "the manifest".into(),
            })?;
    let source = PrometheusSource {
        address: prepared.prometheus.clone(),
        timeout: analysis.prometheus.timeout,
        bearer_token_secret: None,
        ca_secret: None,
    };
    let client =
        PrometheusClient::new(&source, &Credentials::default()).map_err(ReplayError::Prometheus)?;
    let queries: Vec<String> = prepared
        .plan
        .queries()
        .into_iter()
        .map(String::from)
        .collect();
    let names = query_names(&prepared.plan);
    let mut distinct: Vec<&str> = Vec::new();
    for query in &queries {
        if !distinct.contains(&query.as_str()) {
            distinct.push(query);
        }
    }
    let (start, end) = (prepared.from.as_second(), prepared.to.as_second());
    let step = prepared.step.as_secs_f64();
    let answers = join_all(
        distinct
            .iter()
            .map(|query| client.range(query, start, end, step)),
    )
    .await;
    let mut by_query: BTreeMap<&str, SampledSeries> = BTreeMap::new();
    for (query, answer) in distinct.iter().zip(answers) {
        match answer {
            Ok(series) => {
                by_query.insert(query, series);
            }
            Err(failure) => {
                let index = queries.iter().position(|q| q == query).unwrap_or(0);
                let what = names.get(index).cloned().unwrap_or_else(|| "query".into());
                return Err(match failure {
                    QueryFailure::Rejected { message, .. } => ReplayError::RangeQuery {
                        what: format!("Prometheus at {} rejected the {what}", prepared.prometheus),
                        failure: message,
                    },
                    other => ReplayError::Prometheus(other),
                });
            }
        }
    }
    let revision = Some(prepared.canary.revision.clone());
    let runs: Vec<AnalysisRun> = prepared
        .instants()
        .into_iter()
        .map(|at| {
            let answers = queries.iter().map(|query| {
                by_query
                    .get(query.as_str())
                    .map_or(crate::analysis::QueryOutcome::NoData, |series| {
                        series.at(at)
                    })
            });
            let measurements = prepared.plan.assemble(answers);
            let ran_at = Timestamp::from_second(at).unwrap_or(prepared.from);
            judge(&analysis.slo, revision.clone(), &measurements, ran_at)
        })
        .collect();
    let replayed = replay(&analysis, &prepared.release.spec.steps, runs);
    let roadmap_outcome =
        replay_roadmap_outcome(&prepared, &client, &replayed.outcome, Timestamp::now()).await;
    Ok(ReplayReport {
        prepared,
        range_queries: distinct.len(),
        replay: replayed,
        roadmap_outcome,
    })
}

/// `spec.roadmap.outcome` measured as the controller would have measured it had the replayed
/// canary (started at `--from`) been promoted when the replay says: the baseline at `--from`,
/// the after number at promotion + `after`. One try per number (a replay has no later
/// reconcile to retry in): a missing number is Inconclusive with the reason, and an after
/// window that has not ended by `now` is left unmeasured, saying so. `None` without an outcome
/// in the spec or a promotion in the replay.
async fn replay_roadmap_outcome(
    prepared: &Prepared,
    client: &PrometheusClient,
    outcome: &ReplayOutcome,
    now: Timestamp,
) -> Option<OutcomeRecord> {
    let spec = prepared.release.spec.roadmap.outcome.as_ref()?;
    let ReplayOutcome::Promoted { at } = outcome else {
        return None;
    };
    let mut entry = crate::rollout::history::entry(
        &prepared.canary.revision,
        &prepared.release.spec.roadmap.item,
        crate::api::Outcome::Promoted,
        Some(Time(prepared.from)),
        Time(*at),
        "Promoted",
        None,
    );
    entry.roadmap_outcome = Some(crate::rollout::outcome::record_for(spec));
    let name = prepared.release.metadata.name.clone().unwrap_or_default();
    while let Some(pending) = roadmap_outcome::pending(&entry) {
        let record = entry.roadmap_outcome.as_mut()?;
        if pending.evaluate_at > now {
            record.message = Some(format!(
                "the after window ends at {}, after now: run the replay again then",
                pending.evaluate_at
            ));
            break;
        }
        let answer = match roadmap_outcome::render_query(
            &pending.query,
            &prepared.namespace,
            &name,
            &pending.revision,
            pending.window,
        ) {
            Ok(query) => {
                client
                    .instant_at(&query, Some(pending.evaluate_at.as_second()))
                    .await
            }
            Err(error) => crate::analysis::QueryOutcome::Failed(QueryFailure::Setup {
                address: prepared.prometheus.clone(),
                reason: format!("spec.roadmap.outcome.query: {error}"),
            }),
        };
        roadmap_outcome::apply(record, pending.measurement, &answer, pending.evaluate_at);
        if record.verdict.is_none() && record.attempts.is_some() {
            record.verdict = Some(crate::api::OutcomeVerdict::Inconclusive);
        }
    }
    entry.roadmap_outcome
}

/// The replayed roadmap outcome in one line, with its numbers.
pub fn roadmap_outcome_text(record: &OutcomeRecord) -> String {
    let numbers = |value: Option<f64>| value.map_or_else(|| "-".to_string(), |v| v.to_string());
    let mut line = format!(
        "{}; baseline {} over {} before --from, after {} over {} after the promotion",
        roadmap_outcome::describe(record),
        numbers(record.baseline),
        format_period(record.baseline_window),
        numbers(record.after),
        format_period(record.after_window)
    );
    if let Some(message) = &record.message {
        let _ = write!(line, " ({message})");
    }
    line
}

fn step_label(step: usize, total: usize) -> String {
    if total == 0 {
        "-".into()
    } else if step >= total {
        "done".into()
    } else {
        format!("{}/{total}", step + 1)
    }
}

fn event_text(event: &ReplayEvent, from: Timestamp) -> String {
    let when = format!("{} (+{})", event.at(), span(from, event.at()));
    match event {
        ReplayEvent::WeightSet { step, weight, .. } => {
            format!("{when} step {step}: {weight}% of traffic on the canary")
        }
        ReplayEvent::PauseEnded { step, .. } => format!("{when} step {step}: pause over"),
        ReplayEvent::WeightHeld {
            step,
            weight,
            verdict,
            ..
        } => {
            format!("{when} step {step}: held at {weight}% while the latest analysis is {verdict}")
        }
        ReplayEvent::InconclusiveHold { message, .. } => format!("{when} held: {message}"),
        ReplayEvent::WaitsForPromote { step, .. } => {
            format!(
                "{when} step {step}: waits for `waymark promote` (replay never promotes for you)"
            )
        }
        // The first part of the status message; the outcome line below gives all of it.
        ReplayEvent::RolledBack {
            reason, message, ..
        } => format!(
            "{when} ROLLBACK ({reason}): {}",
            message.split("; ").next().unwrap_or_default()
        ),
        ReplayEvent::Promoted { .. } => {
            format!("{when} PROMOTION: all steps done and the analysis passes")
        }
    }
}

/// The outcome in one sentence.
pub fn outcome_text(report: &ReplayReport) -> String {
    let from = report.prepared.from;
    match &report.replay.outcome {
        ReplayOutcome::RolledBack {
            at,
            reason,
            message,
            failing_since,
        } => {
            let since = failing_since
                .map(|since| format!(", failing since {since} (+{})", span(from, since)))
                .unwrap_or_default();
            format!(
                "would have rolled back at {at}, {} after --from{since} ({reason}): {message}",
                span(from, *at)
            )
        }
        ReplayOutcome::Promoted { at } => {
            format!(
                "would have promoted at {at}, {} after --from",
                span(from, *at)
            )
        }
        ReplayOutcome::Undecided {
            step,
            weight,
            waiting_for,
        } => format!(
            "neither rolled back nor promoted by --to: step {} at {weight}%, {waiting_for}",
            step_label(*step, report.prepared.release.spec.steps.len())
        ),
    }
}

/// The replay as text: the inputs, one line per run with its numbers, the canary's moves
/// between them, and the outcome. With `changes`, only the first and last runs, the runs whose
/// verdict differs from the one before, and those with a move are shown; the others are
/// counted.
pub fn render_text(report: &ReplayReport, changes: bool) -> String {
    let prepared = &report.prepared;
    let release = &prepared.release;
    let name = release.metadata.name.as_deref().unwrap_or_default();
    let mut out = String::new();
    let analysis = release.spec.analysis.as_ref();
    let _ = writeln!(
        out,
        "Replay of {}/{name} ({}) against {}",
        prepared.namespace, release.spec.roadmap.item, prepared.prometheus
    );
    let _ = writeln!(
        out,
        "  {} to {} every {}: {} runs from {} range queries",
        prepared.from,
        prepared.to,
        prepared.step,
        report.replay.steps.len(),
        report.range_queries
    );
    let role = |target: &RoleTarget, service: &str| {
        let revision = if target.revision.is_empty() {
            "unknown"
        } else {
            &target.revision
        };
        format!("Service {service}, revision {revision}")
    };
    let canary_service = prepared
        .plan
        .canary
        .as_ref()
        .map_or("-", |c| c.service.as_str());
    let _ = writeln!(
        out,
        "  canary: {}; stable: {}",
        role(&prepared.canary, canary_service),
        role(&prepared.stable, &prepared.plan.stable.service)
    );
    if let Some(analysis) = analysis {
        let pairs: Vec<String> = analysis
            .slo
            .burn_rates
            .iter()
            .map(|pair| {
                format!(
                    "{}/{} above {}x",
                    pair.long,
                    pair.short,
                    format_number(pair.max)
                )
            })
            .collect();
        let _ = writeln!(
            out,
            "  rules: objective {}%, burn {}, minRequests {}, canary vs stable, {} checks; failureLimit {}, inconclusiveLimit {}, errorLimit {}",
            format_number(analysis.slo.objective),
            pairs.join(", "),
            analysis.slo.min_requests,
            analysis.checks.len(),
            analysis.failure_limit,
            analysis.inconclusive_limit,
            analysis.error_limit
        );
    }
    let total_steps = release.spec.steps.len();
    let limits = analysis.map_or((0, 0, 0), |a| {
        (a.failure_limit, a.inconclusive_limit, a.error_limit)
    });
    let _ = writeln!(
        out,
        "\n{:<20}  {:>8}  {:<4}  {:>6}  {:<12}  {:<5} {:<5} {:<5}  {:<12}  WHY",
        "TIME", "AFTER", "STEP", "WEIGHT", "VERDICT", "FAIL", "INC", "ERR", "BURN"
    );
    let mut shown_after = false;
    let mut hidden = 0;
    let last = report.replay.steps.len().saturating_sub(1);
    for (index, step) in report.replay.steps.iter().enumerate() {
        let previous = index.checked_sub(1).map(|i| &report.replay.steps[i]);
        let worth_showing = !changes
            || index == 0
            || index == last
            || !step.events.is_empty()
            || step.after_outcome != previous.is_some_and(|p| p.after_outcome)
            || previous.is_some_and(|p| p.run.verdict != step.run.verdict);
        if !worth_showing {
            hidden += 1;
            continue;
        }
        if hidden > 0 {
            let _ = writeln!(out, "  ... {hidden} more runs like the one above");
            hidden = 0;
        }
        if step.after_outcome && !shown_after {
            shown_after = true;
            let _ = writeln!(
                out,
                "  -- later runs, for tuning only: the outcome above stands --"
            );
        }
        let run = &step.run;
        let _ = writeln!(
            out,
            "{:<20}  {:>8}  {:<4}  {:>5}%  {:<12}  {:<5} {:<5} {:<5}  {:<12}  {}",
            run.ran_at.to_string(),
            span(prepared.from, run.ran_at),
            step_label(step.step, total_steps),
            step.weight,
            run.verdict.to_string(),
            format!("{}/{}", step.counters.failures, limits.0),
            format!("{}/{}", step.counters.inconclusive, limits.1),
            format!("{}/{}", step.counters.errors, limits.2),
            run.burn.as_deref().unwrap_or("-"),
            run.summary
        );
        for event in &step.events {
            let _ = writeln!(out, "  => {}", event_text(event, prepared.from));
        }
    }
    let _ = writeln!(out, "\nOutcome: {}", outcome_text(report));
    if let Some(record) = &report.roadmap_outcome {
        let _ = writeln!(out, "Roadmap outcome: {}", roadmap_outcome_text(record));
    }
    out
}

/// The replay as JSON: the inputs, every run with its windows, comparison and checks, and the
/// outcome.
pub fn render_json(report: &ReplayReport) -> serde_json::Value {
    let prepared = &report.prepared;
    let release = &prepared.release;
    let runs: Vec<serde_json::Value> = report
        .replay
        .steps
        .iter()
        .map(|step| {
            let run = &step.run;
            serde_json::json!({
                "at": run.ran_at,
                "afterSeconds": run.ran_at.as_second() - prepared.from.as_second(),
                "step": step.step,
                "weight": step.weight,
                "verdict": run.verdict,
                "consecutive": step.counters,
                "summary": run.summary,
                "burn": run.burn,
                "canary": run.canary,
                "stable": run.stable,
                "comparison": run.comparison,
                "checks": run.checks,
                "events": step.events,
                "afterOutcome": step.after_outcome,
            })
        })
        .collect();
    serde_json::json!({
        "release": release.metadata.name,
        "namespace": prepared.namespace,
        "roadmapItem": release.spec.roadmap.item,
        "prometheus": prepared.prometheus,
        "from": prepared.from,
        "to": prepared.to,
        "step": prepared.step.to_string(),
        "rangeQueries": report.range_queries,
        "canary": {
            "service": prepared.plan.canary.as_ref().map(|c| c.service.clone()),
            "revision": prepared.canary.revision,
        },
        "stable": {
            "service": prepared.plan.stable.service,
            "revision": prepared.stable.revision,
        },
        "runs": runs,
        "outcome": report.replay.outcome,
        "outcomeText": outcome_text(report),
        "roadmapOutcome": report.roadmap_outcome,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = include_str!("../../examples/checkout.yaml");

    fn now() -> Timestamp {
        "2026-11-21T12:00:00Z".parse().unwrap()
    }

    fn args() -> ReplayArgs {
        ReplayArgs {
            file: "release.yaml".into(),
            prometheus: "http://127.0.0.1:9090".into(),
            from: "-2h".into(),
            to: "now".into(),
            step: None,
            canary_role_selector: None,
            stable_role_selector: Some("revision=5d8b9c".into()),
            namespace: None,
            output: ReplayFormat::Text,
            changes: false,
        }
    }

    #[test]
    fn a_range_ending_now_is_printed_to_the_second() {
        let now: Timestamp = "2026-11-21T12:00:00.987654321Z".parse().unwrap();
        let prepared = prepare(&args(), FILE, now).unwrap();
        assert_eq!(prepared.to.to_string(), "2026-11-21T12:00:00Z");
        assert_eq!(prepared.from.to_string(), "2026-11-21T10:00:00Z");
    }

    #[test]
    fn times_are_rfc3339_now_or_relative_to_now() {
        assert_eq!(parse_time("--to", "now", now()).unwrap(), now());
        assert_eq!(
            parse_time("--from", "-2h", now()).unwrap(),
            "2026-11-21T10:00:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_time("--from", "now-90m", now()).unwrap(),
            "2026-11-21T10:30:00Z".parse::<Timestamp>().unwrap()
        );
        assert_eq!(
            parse_time("--from", "2026-11-20T08:00:00+01:00", now()).unwrap(),
            "2026-11-20T07:00:00Z".parse::<Timestamp>().unwrap()
        );
        let error = parse_time("--from", "yesterday", now())
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("--from \"yesterday\": not a time"),
            "{error}"
        );
        assert!(error.contains("RFC 3339"), "{error}");
    }

    #[test]
    fn prepares_the_example_with_the_interval_as_step_and_the_template_revision() {
        let prepared = prepare(&args(), FILE, now()).unwrap();
        assert_eq!(prepared.namespace, "shop");
        assert_eq!(prepared.step, Duration::from_secs(30));
        assert_eq!(prepared.instants().len(), 241);
        assert_eq!(
            prepared.canary.revision,
            template_revision(&prepared.release.spec.template)
        );
        let canary = prepared.plan.canary.as_ref().unwrap();
        assert_eq!(canary.service, "checkout-canary");
        assert!(
            prepared.plan.budget.is_none(),
            "the budget gates starts, it is not replayed"
        );
    }

    #[test]
    fn role_selectors_rename_the_service_and_set_the_revision() {
        let mut args = args();
        args.canary_role_selector = Some("service=checkout-v2, revision=abc123".into());
        let prepared = prepare(&args, FILE, now()).unwrap();
        let canary = prepared.plan.canary.as_ref().unwrap();
        assert_eq!(canary.service, "checkout-v2");
        assert!(
            canary.windows[0]
                .error_query
                .contains(r#"service="checkout-v2""#)
        );
        assert_eq!(prepared.canary.revision, "abc123");
        args.canary_role_selector = Some("pod=x".into());
        let error = prepare(&args, FILE, now()).unwrap_err().to_string();
        assert!(
            error.starts_with("--canary-role-selector \"pod=x\": unknown key \"pod\""),
            "{error}"
        );
    }

    #[test]
    fn bad_input_names_the_flag_or_field() {
        /// Changes the arguments or the file's text into a bad input.
        type Change = Box<dyn Fn(&mut ReplayArgs, &mut String)>;
        let cases: Vec<(Change, &str)> = vec![
            (
                Box::new(|a, _| a.from = "now".into()),
                "--from (2026-11-21T12:00:00Z) must be before --to (2026-11-21T12:00:00Z)",
            ),
            (
                Box::new(|a, _| a.step = Some(Duration::from_millis(1500))),
                "--step 1s500ms: must be a whole number of seconds",
            ),
            (
                Box::new(|a, _| {
                    a.step = Some(Duration::from_secs(1));
                    a.from = "-4h".into();
                }),
                "--step 1s: gives 14401 instants",
            ),
            (
                Box::new(|a, _| a.from = "-30d".into()),
                "Prometheus answers at most 11000 per query",
            ),
            (
                Box::new(|_, f| *f = "apiVersion: v1\nkind: ConfigMap\n".into()),
                "-f release.yaml holds no Release (apiVersion: waymark.dev/v1alpha1, kind: Release); it holds: ConfigMap",
            ),
            (
                Box::new(|_, f| *f = f.replace("  analysis:", "  unused:")),
                "-f release.yaml: spec.analysis is not set",
            ),
            (
                Box::new(|_, f| *f = f.replace("objective: 99.9", "objective: high")),
                "-f release.yaml: the Release is not valid: spec.analysis.slo.objective",
            ),
            (
                Box::new(|_, f| *f = f.replacen("}[{{window}}])))", "}[{{window}}]))", 1)),
                "-f release.yaml: spec.analysis.checks[0].query: not valid PromQL: unclosed left parenthesis",
            ),
            (
                Box::new(|_, f| *f = f.replacen("namespace: shop", "labels: {}", 1)),
                "-f release.yaml sets no metadata.namespace: pass -n NAMESPACE",
            ),
        ];
        for (change, expected) in cases {
            let mut args = args();
            let mut file = FILE.to_string();
            change(&mut args, &mut file);
            let error = prepare(&args, &file, now())
                .expect_err(expected)
                .to_string();
            assert!(error.contains(expected), "{error}\n  expected: {expected}");
        }
    }

    #[test]
    fn a_query_needing_the_unknown_stable_revision_says_which_flag_gives_it() {
        let mut args = args();
        args.stable_role_selector = None;
        let file = FILE.replace(
            "service=\"{{service}}\"}",
            "service=\"{{service}}\",revision=\"{{revision}}\"}",
        );
        assert_ne!(file, FILE, "the example's total query changed");
        let error = prepare(&args, &file, now()).unwrap_err().to_string();
        assert!(
            error.contains("uses {{revision}}, but the stable's revision is unknown"),
            "{error}"
        );
        assert!(
            error.ends_with("pass --stable-role-selector revision=HASH"),
            "{error}"
        );
    }
}
