//! PromQL query templates: the one place where `{{placeholders}}` are resolved, and where a
//! resolved query is parsed as PromQL when the spec is validated.
//!
//! Every value is escaped for the PromQL string literal it lands in, so a value can never end a
//! label matcher early and smuggle in PromQL of its own. Values are Kubernetes names, revision
//! hashes and durations today; the escaping keeps that safe if they ever come from elsewhere.

use std::collections::HashMap;
use std::sync::{LazyLock, Mutex};

use sha2::{Digest, Sha256};

use crate::api::{Analysis, Duration, Role};

/// The placeholders a query may use, in the order the error message lists them.
pub const PLACEHOLDERS: [&str; 6] = [
    "namespace",
    "release",
    "service",
    "role",
    "revision",
    "window",
];

/// The values placed into a query for one role and one window.
#[derive(Clone, Debug, PartialEq)]
pub struct TemplateValues {
    /// The Release's namespace.
    pub namespace: String,
    /// The Release's name.
    pub release: String,
    /// The role judged; `{{service}}` is its Service, `<release>-<role>` unless `service` says
    /// otherwise.
    pub role: Role,
    /// The Service playing the role when it is not `<release>-<role>` (replaying an incident
    /// whose canary ran under another name).
    pub service: Option<String>,
    /// The revision (template hash) that role runs; empty when unknown.
    pub revision: String,
    /// The range of `rate()` and friends, written as Prometheus reads it (`5m`, `1h30m`).
    pub window: Duration,
}

impl TemplateValues {
    fn get(&self, name: &str) -> Option<String> {
        match name {
            "namespace" => Some(self.namespace.clone()),
            "release" => Some(self.release.clone()),
            "service" => Some(
                self.service
                    .clone()
                    .unwrap_or_else(|| self.role.child_name(&self.release)),
            ),
            "role" => Some(self.role.as_str().to_string()),
            "revision" => Some(self.revision.clone()),
            "window" => Some(self.window.to_string()),
            _ => None,
        }
    }
}

/// Why a query template cannot be resolved.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// `{{name}}` is not one of [`PLACEHOLDERS`].
    #[error(
        "unknown placeholder {{{{{0}}}}}; known: {{{{namespace}}}}, {{{{release}}}}, {{{{service}}}}, {{{{role}}}}, {{{{revision}}}}, {{{{window}}}}"
    )]
    UnknownPlaceholder(String),
    /// `{{` without a matching `}}`.
    #[error("`{{{{` at character {0} has no closing `}}}}`")]
    Unclosed(usize),
    /// The query, its placeholders filled in, is not PromQL: the parser's own words.
    #[error(
        "not valid PromQL: {reason} (read with its placeholders filled in, {{{{window}}}} as {window}); fix the query"
    )]
    InvalidPromql {
        /// The window placed for `{{window}}` when the parser refused it.
        window: Duration,
        /// What the PromQL parser said.
        reason: String,
    },
    /// A value cannot be written inside a backtick (raw) string, which has no escapes.
    #[error(
        "{{{{{placeholder}}}}} is inside a `raw string` and its value {value:?} contains a backtick; use a \"quoted\" string"
    )]
    RawStringValue {
        /// The placeholder's name.
        placeholder: String,
        /// The value that does not fit.
        value: String,
    },
}

/// A query of `spec.analysis` that cannot be resolved, naming the field.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {error}")]
pub struct QueryError {
    /// The field's path, e.g. `spec.analysis.slo.errorQuery` or `spec.analysis.checks[0].query`.
    pub field: String,
    /// What is wrong with it.
    pub error: TemplateError,
}

/// Checks every query template of `analysis` without talking to Prometheus: each resolves,
/// and each parses as PromQL once resolved.
///
/// The controller calls this to set `SpecValid=False` with the message naming the field, so a
/// typo in a placeholder or in the PromQL is reported once, at apply time, before any canary
/// starts, instead of as an Error verdict on every run of a canary (and its rollback).
///
/// Each query is resolved with placeholder values for every window it is run with: each
/// burn-rate window and, for the SLO queries, the budget period. A query that parses but
/// matches no series is fine here: that is an Inconclusive run, judged when it runs.
///
/// Parsing takes about 100 µs a query and the spec is validated on every decision, while a
/// Release's queries change only with its spec (and Releases often share them): answers are
/// remembered by a digest of the templates and windows, at most [`VALIDATED_KEPT`] of them.
/// Pure from the outside: the answer depends on `analysis` alone.
pub fn validate_queries(analysis: &Analysis) -> Result<(), QueryError> {
    let windows = query_windows(analysis);
    let mut digest = Sha256::new();
    for template in query_templates(analysis) {
        digest.update((template.len() as u64).to_le_bytes());
        digest.update(template.as_bytes());
    }
    for window in &windows {
        digest.update(window.as_std().as_nanos().to_le_bytes());
    }
    let key: [u8; 32] = digest.finalize().into();
    if let Some(answer) = VALIDATED
        .lock()
        .ok()
        .and_then(|validated| validated.get(&key).cloned())
    {
        return answer;
    }
    let answer = resolve_and_parse(analysis, &windows);
    if let Ok(mut validated) = VALIDATED.lock() {
        if validated.len() >= VALIDATED_KEPT {
            validated.clear();
        }
        validated.insert(key, answer.clone());
    }
    answer
}

/// The windows the queries run with: each burn-rate window and the budget period, each once.
fn query_windows(analysis: &Analysis) -> Vec<Duration> {
    let slo = &analysis.slo;
    let mut windows: Vec<Duration> = Vec::new();
    let budget_period = slo.budget.as_ref().map(|budget| budget.period);
    for window in slo
        .burn_rates
        .iter()
        .flat_map(|pair| [pair.long, pair.short])
        .chain(budget_period)
    {
        if !windows.contains(&window) {
            windows.push(window);
        }
    }
    if windows.is_empty() {
        // No burn-rate pair (the schema requires one): still parse with a window.
        windows.push(Duration::from_secs(300));
    }
    windows
}

/// Every query template: `slo.errorQuery`, `slo.totalQuery`, then each check's, in the order
/// of [`query_field`].
fn query_templates(analysis: &Analysis) -> impl Iterator<Item = &String> {
    [&analysis.slo.error_query, &analysis.slo.total_query]
        .into_iter()
        .chain(analysis.checks.iter().map(|check| &check.query))
}

/// The field of the `index`-th template of [`query_templates`].
fn query_field(index: usize) -> String {
    match index {
        0 => "spec.analysis.slo.errorQuery".into(),
        1 => "spec.analysis.slo.totalQuery".into(),
        check => format!("spec.analysis.checks[{}].query", check - 2),
    }
}

/// [`validate_queries`] without its memory.
fn resolve_and_parse(analysis: &Analysis, windows: &[Duration]) -> Result<(), QueryError> {
    for (index, template) in query_templates(analysis).enumerate() {
        for window in windows {
            let probe = TemplateValues {
                namespace: "namespace".into(),
                release: "release".into(),
                role: Role::Canary,
                service: None,
                revision: "revision".into(),
                window: *window,
            };
            let query = render(template, &probe).map_err(|error| QueryError {
                field: query_field(index),
                error,
            })?;
            parse_promql(&query).map_err(|reason| QueryError {
                field: query_field(index),
                error: TemplateError::InvalidPromql {
                    window: *window,
                    reason,
                },
            })?;
        }
    }
    Ok(())
}

/// Whether `query` (resolved: no placeholders left) is PromQL, as a PromQL parser reads it;
/// the error is the parser's own words.
pub fn parse_promql(query: &str) -> Result<(), String> {
    promql_parser::parser::parse(query).map(|_| ())
}

/// How many answers [`validate_queries`] keeps.
pub const VALIDATED_KEPT: usize = 4096;

/// The answers of [`validate_queries`] by the SHA-256 of the templates and windows.
type ValidatedAnalyses = HashMap<[u8; 32], Result<(), QueryError>>;

/// Every answer [`validate_queries`] remembers.
static VALIDATED: LazyLock<Mutex<ValidatedAnalyses>> = LazyLock::new(Mutex::default);

/// The names of the placeholders `template` uses, in order of first use (`{{ window }}` counts
/// as `window`); an unclosed `{{` ends the scan.
pub fn placeholders(template: &str) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        let name = rest[start + 2..start + end].trim().to_string();
        if !names.contains(&name) {
            names.push(name);
        }
        rest = &rest[start + end + 2..];
    }
    names
}

/// Resolves the placeholders of `template` with `values`, each escaped for where it stands.
///
/// A placeholder inside `"..."` or `'...'` gets the escapes of that quote; outside any string
/// (e.g. `[{{window}}]`) it is escaped as for a double-quoted string, which leaves durations,
/// Kubernetes names and hashes unchanged. Spaces inside the braces are allowed: `{{ window }}`.
pub fn render(template: &str, values: &TemplateValues) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(template.len() + 32);
    // The PromQL string the scanner is in, if any: `"`, `'` or a backtick.
    let mut open_quote: Option<char> = None;
    let mut escaped = false;
    let mut rest = template;
    while !rest.is_empty() {
        if rest.starts_with("{{") {
            let position = template.len() - rest.len();
            let end = rest.find("}}").ok_or(TemplateError::Unclosed(position))?;
            let name = rest[2..end].trim();
            let value = values
                .get(name)
                .ok_or_else(|| TemplateError::UnknownPlaceholder(name.to_string()))?;
            match open_quote {
                Some('`') if value.contains('`') => {
                    return Err(TemplateError::RawStringValue {
                        placeholder: name.to_string(),
                        value,
                    });
                }
                Some('`') => out.push_str(&value),
                Some(quote) => out.push_str(&escape_string_literal(&value, quote)),
                None => out.push_str(&escape_string_literal(&value, '"')),
            }
            rest = &rest[end + 2..];
            continue;
        }
        let Some(character) = rest.chars().next() else {
            break;
        };
        match open_quote {
            // Raw strings have no escapes: only the closing backtick matters.
            Some('`') if character == '`' => open_quote = None,
            Some('`') => {}
            Some(_) if escaped => escaped = false,
            Some(_) if character == '\\' => escaped = true,
            Some(quote) if character == quote => open_quote = None,
            Some(_) => {}
            None if matches!(character, '"' | '\'' | '`') => open_quote = Some(character),
            None => {}
        }
        out.push(character);
        rest = &rest[character.len_utf8()..];
    }
    Ok(out)
}

/// Escapes `value` for a PromQL string literal opened with `quote` (`"` or `'`).
///
/// PromQL strings follow Go's rules: a backslash, the opening quote and control characters
/// (a raw newline ends the query's string with a lexer error) must be escaped. The other quote
/// is left alone because PromQL rejects `\'` inside `"..."` and `\"` inside `'...'`.
pub fn escape_string_literal(value: &str, quote: char) -> String {
    let mut out = String::with_capacity(value.len());
    for character in value.chars() {
        match character {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values() -> TemplateValues {
        TemplateValues {
            namespace: "shop".into(),
            release: "checkout".into(),
            role: Role::Canary,
            service: None,
            revision: "6f9c7d".into(),
            window: Duration::from_secs(300),
        }
    }

    #[test]
    fn escapes_backslashes_quotes_and_newlines() {
        assert_eq!(escape_string_literal(r#"a"b"#, '"'), r#"a\"b"#);
        assert_eq!(escape_string_literal(r"a\b", '"'), r"a\\b");
        assert_eq!(escape_string_literal("a\nb\r\tc", '"'), r"a\nb\r\tc");
        assert_eq!(escape_string_literal("a'b", '"'), "a'b");
        assert_eq!(escape_string_literal("a'b", '\''), r"a\'b");
        assert_eq!(escape_string_literal("a\"b", '\''), "a\"b");
        assert_eq!(escape_string_literal("bell\u{7}", '"'), r"bell\u0007");
        assert_eq!(escape_string_literal("ünïcode", '"'), "ünïcode");
    }

    #[test]
    fn resolves_every_placeholder() {
        let query = "x{ns=\"{{namespace}}\",rel=\"{{release}}\",svc=\"{{service}}\",role=\"{{role}}\",rev=\"{{revision}}\"}[{{window}}]";
        assert_eq!(
            render(query, &values()).unwrap(),
            "x{ns=\"shop\",rel=\"checkout\",svc=\"checkout-canary\",role=\"canary\",rev=\"6f9c7d\"}[5m]"
        );
        let stable = TemplateValues {
            role: Role::Stable,
            window: Duration::from_secs(5_400),
            ..values()
        };
        assert_eq!(
            render("{{ service }}/{{role}}[{{window}}]", &stable).unwrap(),
            "checkout-stable/stable[1h30m]"
        );
        let renamed = TemplateValues {
            service: Some("checkout-v2".into()),
            ..values()
        };
        assert_eq!(
            render("{{service}}/{{role}}", &renamed).unwrap(),
            "checkout-v2/canary"
        );
    }

    #[test]
    fn a_hostile_value_cannot_leave_its_string() {
        let hostile = TemplateValues {
            namespace: "shop\"} or vector(1) #\n\\".into(),
            ..values()
        };
        let query = render(r#"up{namespace="{{namespace}}"}"#, &hostile).unwrap();
        assert_eq!(query, r#"up{namespace="shop\"} or vector(1) #\n\\"}"#);
        let single = render("up{namespace='{{namespace}}'}", &hostile).unwrap();
        assert_eq!(single, r#"up{namespace='shop"} or vector(1) #\n\\'}"#);
    }

    #[test]
    fn tracks_quotes_and_escapes_in_the_template_itself() {
        // The escaped quote inside the first string must not end it, so the placeholder after
        // it is inside single quotes only.
        let query = r#"x{a="q\"'", b='{{namespace}}'}"#;
        let hostile = TemplateValues {
            namespace: "it's".into(),
            ..values()
        };
        assert_eq!(
            render(query, &hostile).unwrap(),
            r#"x{a="q\"'", b='it\'s'}"#
        );
        assert_eq!(
            render("x{a=`{{namespace}}`}", &values()).unwrap(),
            "x{a=`shop`}"
        );
        let backtick = TemplateValues {
            namespace: "a`b".into(),
            ..values()
        };
        assert!(matches!(
            render("x{a=`{{namespace}}`}", &backtick),
            Err(TemplateError::RawStringValue { .. })
        ));
    }

    #[test]
    fn lists_the_placeholders_a_template_uses() {
        assert_eq!(
            placeholders("x{a=\"{{ service }}\",r=\"{{revision}}\"}[{{window}}] / y[{{window}}]"),
            ["service", "revision", "window"]
        );
        assert!(placeholders("up").is_empty());
        assert_eq!(placeholders("{{role}} {{unclosed"), ["role"]);
    }

    #[test]
    fn an_unknown_placeholder_is_named() {
        let error = render(r#"up{pod="{{pod}}"}"#, &values()).unwrap_err();
        assert_eq!(error, TemplateError::UnknownPlaceholder("pod".into()));
        let message = error.to_string();
        assert!(
            message.starts_with("unknown placeholder {{pod}}; known: {{namespace}}"),
            "{message}"
        );
        assert_eq!(render("up{{", &values()), Err(TemplateError::Unclosed(2)));
    }

    #[test]
    fn validate_queries_names_the_field() {
        let mut analysis: Analysis = serde_saphyr::from_str(
            r#"
prometheus: {address: "http://prometheus:9090"}
slo:
  objective: 99.9
  errorQuery: 'sum(rate(x{service="{{service}}",code=~"5.."}[{{window}}]))'
  totalQuery: 'sum(rate(x{service="{{service}}"}[{{window}}]))'
  burnRates: [{long: 5m, short: 1m, max: 14.4}]
checks:
- {name: p99, query: 'histogram_quantile(0.99, x{service="{{service}}"})', max: 0.25}
"#,
        )
        .unwrap();
        assert_eq!(validate_queries(&analysis), Ok(()));

        analysis.slo.error_query = r#"x{pod="{{pod}}"}"#.into();
        let error = validate_queries(&analysis).unwrap_err();
        assert_eq!(error.field, "spec.analysis.slo.errorQuery");
        assert!(
            error
                .to_string()
                .starts_with("spec.analysis.slo.errorQuery: unknown placeholder {{pod}}"),
            "{error}"
        );

        analysis.slo.error_query = "x".into();
        analysis.checks[0].query = "x{{ node }}".into();
        let error = validate_queries(&analysis).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("spec.analysis.checks[0].query: unknown placeholder {{node}}"),
            "{error}"
        );
    }

    fn analysis_with(error_query: &str, total_query: &str, checks: &[&str]) -> Analysis {
        let mut analysis: Analysis = serde_saphyr::from_str(
            r#"
prometheus: {address: "http://prometheus:9090"}
slo:
  objective: 99.9
  errorQuery: x
  totalQuery: x
  burnRates: [{long: 5m, short: 1m, max: 14.4}]
"#,
        )
        .unwrap();
        analysis.slo.error_query = error_query.into();
        analysis.slo.total_query = total_query.into();
        analysis.checks = checks
            .iter()
            .enumerate()
            .map(|(index, query)| crate::api::Check {
                name: format!("check-{index}"),
                query: query.to_string(),
                max: Some(1.0),
                min: None,
            })
            .collect();
        analysis
    }

    const GOOD: &str = r#"sum(rate(http_requests_total{service="{{service}}"}[{{window}}]))"#;

    #[test]
    fn an_invalid_query_names_its_field_and_the_parsers_words() {
        let cases = [
            (
                analysis_with(
                    r#"sum(rate(x{service="{{service}}"}[{{window}}])"#,
                    GOOD,
                    &[],
                ),
                "spec.analysis.slo.errorQuery",
                "unclosed left parenthesis",
            ),
            (
                analysis_with(GOOD, r#"sum(rat(x[{{window}}]))"#, &[]),
                "spec.analysis.slo.totalQuery",
                "unknown function with name 'rat'",
            ),
            (
                analysis_with(GOOD, GOOD, &[GOOD, r#"rate(x{role="{{role}}"})"#]),
                "spec.analysis.checks[1].query",
                "expected type matrix in call to function 'rate', got vector",
            ),
            (
                analysis_with(GOOD, GOOD, &[r#"x{service={{service}}}"#]),
                "spec.analysis.checks[0].query",
                "unexpected character inside braces",
            ),
            (
                analysis_with(GOOD, GOOD, &["x[{{window}}] - 1"]),
                "spec.analysis.checks[0].query",
                "binary expression must contain only scalar and instant vector types",
            ),
            (
                analysis_with(GOOD, GOOD, &["sum(x) +"]),
                "spec.analysis.checks[0].query",
                "invalid promql query",
            ),
        ];
        for (analysis, field, words) in cases {
            let error = validate_queries(&analysis).unwrap_err();
            assert_eq!(error.field, field, "{error}");
            let message = error.to_string();
            assert!(
                message.starts_with(&format!("{field}: not valid PromQL: {words}")),
                "{message}"
            );
            assert!(
                message.ends_with("{{window}} as 5m); fix the query"),
                "{message}"
            );
        }
    }

    #[test]
    fn a_remembered_answer_is_the_one_computed() {
        let bad = analysis_with(GOOD, "sum(x", &[GOOD]);
        let first = validate_queries(&bad);
        assert!(first.is_err());
        assert_eq!(validate_queries(&bad), first);
        // Another analysis with the same templates but another window is its own entry.
        let mut other = bad.clone();
        other.slo.burn_rates[0].long = Duration::from_secs(600);
        assert_eq!(
            validate_queries(&other).unwrap_err().field,
            first.unwrap_err().field
        );
        // The same templates in other fields are not the same analysis.
        let swapped = analysis_with("sum(x", GOOD, &[GOOD]);
        assert_eq!(
            validate_queries(&swapped).unwrap_err().field,
            "spec.analysis.slo.errorQuery"
        );
        assert_eq!(
            validate_queries(&analysis_with(GOOD, GOOD, &[GOOD])),
            Ok(())
        );
    }

    #[test]
    fn a_query_that_parses_but_matches_nothing_is_valid() {
        // No such metric: Prometheus answers no series, an Inconclusive run, not a bad spec.
        let analysis = analysis_with(
            r#"sum(rate(no_such_metric_anywhere{service="{{service}}"}[{{window}}]))"#,
            GOOD,
            &[],
        );
        assert_eq!(validate_queries(&analysis), Ok(()));
    }

    /// The query forms the README, the example, the tests and PromQL users write: each must
    /// still pass, or a Release that works today would be refused.
    #[test]
    fn the_query_forms_in_use_parse() {
        let forms = [
            r#"sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",code=~"5.."}[{{window}}])) or vector(0)"#,
            r#"sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}"}[{{window}}]))"#,
            r#"histogram_quantile(0.99, sum by (le) (rate(http_request_duration_seconds_bucket{namespace="{{namespace}}",service="{{service}}"}[{{window}}])))"#,
            r#"sum(rate(http_requests_total{namespace="{{namespace}}",service="{{service}}",revision="{{revision}}"}[{{window}}]))"#,
            r#"q{role="{{role}}"}[{{window}}]"#,
            r#"histogram_quantile(0.99, x{service="{{service}}"})"#,
            r#"sum(rate(x{release='{{ release }}'}[{{ window }}]))"#,
            r#"x{a=`{{namespace}}`}"#,
            "q",
            "errors",
            r#"{"my.metric", service="{{service}}"}"#,
            r#"{__name__=~"http_.+"}"#,
            "sum(x) by (a) / ignoring(b) sum(y) by (a)",
            "a / on(b) group_left(c) d",
            "max_over_time(deriv(rate(x[1m])[{{window}}:1m])[5m:])",
            "x[{{window}}:] offset 1m @ start()",
            "histogram_quantile(0.9, rate(x[{{window}}])) > bool 0.5",
            "quantile_over_time(0.99, x[{{window}}])",
            "histogram_fraction(0, 0.2, rate(x[{{window}}]))",
            r#"label_replace(x, "dst", "$1", "src", "(.*)")"#,
            "limitk(2, x)",
            "clamp(x, 0, 1) # a comment",
            "1 - (sum(rate(a[{{window}}])) / sum(rate(b[{{window}}])))",
        ];
        for form in forms {
            let analysis = analysis_with(form, form, &[form]);
            assert_eq!(validate_queries(&analysis), Ok(()), "{form}");
        }
    }
}
