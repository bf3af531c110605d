//! The one line an SRE reads during an incident, and the number formats it uses.

use super::burn::{Shortfall, WindowOutcome};
use super::judge::{PairJudgement, RoleJudgement};
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

/// A burn rate as `21.3x`.
pub fn format_burn(burn: f64) -> String {
    format!("{burn:.1}x")
}

/// A request count with thousands separators: `4,812`.
pub fn format_count(count: f64) -> String {
    if !count.is_finite() {
        return format_number(count);
    }
    let digits = format!("{:.0}", count.abs());
    let mut grouped = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    if count < 0.0 && digits != "0" {
        format!("-{grouped}")
    } else {
        grouped
    }
}

/// A value with up to four significant digits and no trailing zeros (`0.25`, `14.4`, `1234`),
/// and NaN and infinities as Prometheus writes them.
pub fn format_number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".into();
    }
    if value.is_infinite() {
        return if value > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if value == 0.0 {
        return "0".into();
    }
    let magnitude = value.abs().log10().floor() as i32;
    let decimals = (3 - magnitude).clamp(0, 12) as usize;
    let text = format!("{value:.decimals$}");
    if text.contains('.') {
        text.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        text
    }
}

/// The time from `from` to `to` as people say it: `14m30s`, `-30s` when `to` is earlier.
pub fn format_span(from: k8s_openapi::jiff::Timestamp, to: k8s_openapi::jiff::Timestamp) -> String {
    let seconds = to.as_second() - from.as_second();
    let text = Duration::from_secs(seconds.unsigned_abs()).to_string();
    if seconds < 0 {
        format!("-{text}")
    } else {
        text
    }
}

/// An error ratio as a percentage, precise enough for SLOs of several nines: `5.00%`, `0.100%`.
pub fn format_percent(ratio: f64) -> String {
    let percent = ratio * 100.0;
    if percent == 0.0 {
        "0.00%".into()
    } else if percent.abs() >= 1.0 {
        format!("{percent:.2}%")
    } else {
        format!("{percent:.3}%")
    }
}

/// A budget fraction as a whole percentage: `75%`, `5,000%`.
fn format_percent_whole(fraction: f64) -> String {
    format!("{}%", format_count(fraction * 100.0))
}

/// A budget period in days when it is whole days (`30d`), as people say it.
pub fn format_period(period: Duration) -> String {
    let seconds = period.as_secs();
    if seconds >= 86_400 && seconds.is_multiple_of(86_400) && period.as_std().subsec_nanos() == 0 {
        format!("{}d", seconds / 86_400)
    } else {
        period.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_counts_with_thousands_separators() {
        assert_eq!(format_count(0.0), "0");
        assert_eq!(format_count(12.4), "12");
        assert_eq!(format_count(999.6), "1,000");
        assert_eq!(format_count(4_812.0), "4,812");
        assert_eq!(format_count(1_234_567.0), "1,234,567");
        assert_eq!(format_count(-4_000.0), "-4,000");
    }

    #[test]
    fn formats_numbers_briefly() {
        assert_eq!(format_number(14.4), "14.4");
        assert_eq!(format_number(2.0), "2");
        assert_eq!(format_number(0.25), "0.25");
        assert_eq!(format_number(0.1 + 0.2), "0.3");
        assert_eq!(format_number(0.000_123_46), "0.0001235");
        assert_eq!(format_number(123_456.0), "123456");
        assert_eq!(format_number(f64::NAN), "NaN");
        assert_eq!(format_number(f64::NEG_INFINITY), "-Inf");
    }

    #[test]
    fn formats_percentages_and_burns() {
        assert_eq!(format_percent(0.05), "5.00%");
        assert_eq!(format_percent(0.001), "0.100%");
        assert_eq!(format_percent(0.0), "0.00%");
        assert_eq!(format_burn(21.345), "21.3x");
        assert_eq!(format_percent_whole(0.734), "73%");
        assert_eq!(format_period(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_period(Duration::from_secs(90)), "1m30s");
        let at = |s: i64| k8s_openapi::jiff::Timestamp::from_second(s).unwrap();
        assert_eq!(format_span(at(0), at(870)), "14m30s");
        assert_eq!(format_span(at(30), at(0)), "-30s");
    }
}
