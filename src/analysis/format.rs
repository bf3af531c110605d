//! The number formats of every message about an analysis: burn rates, request counts,
//! values, percentages, spans and periods, as SREs write them.

use k8s_openapi::jiff::Timestamp;

use crate::api::Duration;

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
pub fn format_span(from: Timestamp, to: Timestamp) -> String {
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
pub fn format_percent_whole(fraction: f64) -> String {
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
        let at = |s: i64| Timestamp::from_second(s).unwrap();
        assert_eq!(format_span(at(0), at(870)), "14m30s");
        assert_eq!(format_span(at(30), at(0)), "-30s");
    }
}
