//! The one line an SRE reads during an incident.

use super::burn::{PairJudgement, RoleJudgement, Shortfall, WindowOutcome};
use super::format::{
    format_burn, format_count, format_number, format_percent_whole, format_period,
};
use crate::api::{BaselineComparison, CheckResult, Duration, Verdict};

/// The run in one line, naming the cause of its verdict with numbers and limits:
/// `canary burns 21.3x of 14.4x over 5m and 1m (4,812 requests)`,
/// `canary has 12 requests in 1m, fewer than minRequests 100`,
/// `Prometheus at http://127.0.0.1:9090 unreachable: connection refused`.
pub(super) fn summarize(
    verdict: Verdict,
    canary: Option<&RoleJudgement>,
    stable: &RoleJudgement,
    comparison: &[BaselineComparison],
    checks: &[CheckResult],
    budget: Option<&(Duration, Result<f64, String>)>,
) -> String {
    let (subject, prefix) = match canary {
        Some(canary) => (canary, ""),
        None => (stable, "no canary, stable only: "),
    };
    let cause = match verdict {
        Verdict::Failing => failing_cause(subject, comparison, checks),
        Verdict::Error => error_cause(subject, comparison, checks),
        Verdict::Inconclusive => inconclusive_cause(subject, checks),
        Verdict::Passing => subject.hottest_pair().map(|pair| burn_line(subject, pair)),
    }
    .unwrap_or_else(|| format!("{} is {verdict}", subject.role));
    let budget = match budget {
        None => String::new(),
        Some((period, Ok(remaining))) if *remaining >= 0.0 => format!(
            "; error budget {} left over {}",
            format_percent_whole(*remaining),
            format_period(*period)
        ),
        Some((period, Ok(remaining))) => format!(
            "; error budget overspent: {} spent over {}",
            format_percent_whole(1.0 - remaining),
            format_period(*period)
        ),
        // When Prometheus is down the cause already says so; once is enough.
        Some((_, Err(reason))) if *reason == cause => String::new(),
        Some((_, Err(reason))) => format!("; no error budget figure: {reason}"),
    };
    format!("{prefix}{cause}{budget}")
}

fn burn_line(role: &RoleJudgement, pair: &PairJudgement) -> String {
    let burn = pair.burn.map(format_burn).unwrap_or_else(|| "?".into());
    let requests = pair
        .long_outcome
        .requests()
        .map(|requests| format!(" ({} requests)", format_count(requests)))
        .unwrap_or_default();
    format!(
        "{} burns {burn} of {}x over {} and {}{requests}",
        role.role,
        format_number(pair.max),
        pair.long,
        pair.short
    )
}

fn failing_cause(
    subject: &RoleJudgement,
    comparison: &[BaselineComparison],
    checks: &[CheckResult],
) -> Option<String> {
    let hottest_failing = subject
        .pairs
        .iter()
        .filter(|pair| pair.verdict == Verdict::Failing)
        .filter_map(|pair| Some((pair, pair.burn? / pair.max)))
        .max_by(|a, b| a.1.total_cmp(&b.1));
    if let Some((pair, _)) = hottest_failing {
        return Some(burn_line(subject, pair));
    }
    if let Some(comparison) = comparison.iter().find(|c| c.verdict == Verdict::Failing) {
        return Some(format!(
            "canary clearly worse than stable over {}: {}",
            comparison.window, comparison.detail
        ));
    }
    checks
        .iter()
        .find(|check| check.verdict == Verdict::Failing)
        .map(|check| {
            let value = check.value.unwrap_or(f64::NAN);
            let limit = match (check.max, check.min) {
                (Some(max), _) if value > max => format!("above max {}", format_number(max)),
                (_, Some(min)) => format!("below min {}", format_number(min)),
                _ => "outside its limits".into(),
            };
            format!("check {} is {}, {limit}", check.name, format_number(value))
        })
}

fn error_cause(
    subject: &RoleJudgement,
    comparison: &[BaselineComparison],
    checks: &[CheckResult],
) -> Option<String> {
    let window_failure = subject.pairs.iter().find_map(|pair| {
        [
            (pair.long, &pair.long_outcome),
            (pair.short, &pair.short_outcome),
        ]
        .into_iter()
        .find_map(|(window, outcome)| match outcome {
            WindowOutcome::Failed { failure, query } => {
                Some(failure.in_context(&format!("{} {query} query over {window}", subject.role)))
            }
            _ => None,
        })
    });
    window_failure
        .or_else(|| {
            comparison
                .iter()
                .find(|c| c.verdict == Verdict::Error)
                .map(|c| c.detail.clone())
        })
        .or_else(|| {
            checks
                .iter()
                .find(|check| check.verdict == Verdict::Error)
                .and_then(|check| check.note.clone())
        })
}

fn inconclusive_cause(subject: &RoleJudgement, checks: &[CheckResult]) -> Option<String> {
    let window_shortfall = subject.pairs.iter().find_map(|pair| {
        [
            (pair.long, &pair.long_outcome),
            (pair.short, &pair.short_outcome),
        ]
        .into_iter()
        .find_map(|(window, outcome)| match outcome {
            WindowOutcome::NoData { shortfall, .. } => {
                let verb = match shortfall {
                    Shortfall::TooFewRequests { .. } => " has",
                    _ => "",
                };
                Some(format!(
                    "{}{verb} {}",
                    subject.role,
                    shortfall.describe(window)
                ))
            }
            _ => None,
        })
    });
    window_shortfall.or_else(|| {
        checks
            .iter()
            .find(|check| check.verdict == Verdict::Inconclusive)
            .map(|check| {
                format!(
                    "check {}: {}",
                    check.name,
                    check.note.as_deref().unwrap_or("no value")
                )
            })
    })
}
