//! The bench's judgements that need no cluster: whether a resident-set line is flat, and when
//! a rolled-back canary's first failing analysis ran, as the controller recorded it. Pure, so
//! `cargo test --bench scale` checks them (see `checks.rs`).

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use waymark::api::{ReleaseStatus, TimelineEntry, TimelineKind, Verdict};

/// A line growing faster than this (least-squares slope) is not flat: at 2 MiB an hour a
/// controller gains 1.4 GiB a month, the kind of leak issue 23 is about.
pub const MAX_SLOPE_MIB_PER_HOUR: f64 = 2.0;
/// A line whose highest sample is more than this above its first settled sample is not flat.
pub const MAX_SPREAD_MIB: f64 = 2.0;
/// Fewer settled samples than this cannot tell a slope from noise.
pub const MIN_SAMPLES: usize = 3;

const MIB: f64 = 1024.0 * 1024.0;

/// Whether a resident-set line held flat.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlatVerdict {
    /// Slope and spread both under their limits.
    Flat,
    /// The slope is at or over [`MAX_SLOPE_MIB_PER_HOUR`].
    Growing,
    /// The slope is under its limit but a sample rose more than [`MAX_SPREAD_MIB`] above the
    /// first settled one.
    Spread,
    /// Fewer than [`MIN_SAMPLES`] settled samples.
    TooFewSamples,
}

/// The flatness of a resident-set line after it settled.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Flatness {
    /// Samples at or after the settling time, the ones judged.
    pub samples: usize,
    /// When the judged samples begin (time into the phase).
    pub settled: Duration,
    /// The least-squares slope of the judged samples, in MiB per hour.
    pub slope_mib_per_hour: Option<f64>,
    /// The highest judged sample minus the first, in MiB.
    pub spread_mib: Option<f64>,
    /// The verdict against the limits.
    pub verdict: FlatVerdict,
}

/// Judge `samples` (time into the phase, bytes) from `settled` on: flat when the least-squares
/// slope is under [`MAX_SLOPE_MIB_PER_HOUR`] and no sample is more than [`MAX_SPREAD_MIB`]
/// above the first settled one.
pub fn flatness(samples: &[(Duration, u64)], settled: Duration) -> Flatness {
    let judged: Vec<(f64, f64)> = samples
        .iter()
        .filter(|(at, _)| *at >= settled)
        .map(|(at, bytes)| (at.as_secs_f64() / 3600.0, *bytes as f64 / MIB))
        .collect();
    let slope = least_squares_slope(&judged);
    let spread = judged.first().map(|(_, first)| {
        let highest = judged
            .iter()
            .map(|(_, mib)| *mib)
            .fold(f64::NEG_INFINITY, f64::max);
        highest - first
    });
    let verdict = match (slope, spread) {
        _ if judged.len() < MIN_SAMPLES => FlatVerdict::TooFewSamples,
        (Some(slope), _) if slope >= MAX_SLOPE_MIB_PER_HOUR => FlatVerdict::Growing,
        (_, Some(spread)) if spread > MAX_SPREAD_MIB => FlatVerdict::Spread,
        (Some(_), Some(_)) => FlatVerdict::Flat,
        _ => FlatVerdict::TooFewSamples,
    };
    Flatness {
        samples: judged.len(),
        settled,
        slope_mib_per_hour: slope,
        spread_mib: spread,
        verdict,
    }
}

/// The slope of the least-squares line through `points` (x, y), or `None` when the x values
/// do not vary.
fn least_squares_slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 2 {
        return None;
    }
    let count = points.len() as f64;
    let mean_x = points.iter().map(|(x, _)| x).sum::<f64>() / count;
    let mean_y = points.iter().map(|(_, y)| y).sum::<f64>() / count;
    let covariance: f64 = points
        .iter()
        .map(|(x, y)| (x - mean_x) * (y - mean_y))
        .sum();
    let variance: f64 = points.iter().map(|(x, _)| (x - mean_x).powi(2)).sum();
    (variance > 0.0).then(|| covariance / variance)
}

impl Flatness {
    /// One line for the report, the verdict first.
    pub fn text(&self) -> String {
        let numbers = match (self.slope_mib_per_hour, self.spread_mib) {
            (Some(slope), Some(spread)) => format!(
                "slope {slope:+.2} MiB/h (limit < {MAX_SLOPE_MIB_PER_HOUR}), highest minus first \
                 {spread:.2} MiB (limit ≤ {MAX_SPREAD_MIB})"
            ),
            _ => "no slope".to_string(),
        };
        let verdict = match self.verdict {
            FlatVerdict::Flat => "flat",
            FlatVerdict::Growing => "NOT FLAT (growing)",
            FlatVerdict::Spread => "NOT FLAT (a rise above the first sample)",
            FlatVerdict::TooFewSamples => "not judged (too few samples)",
        };
        format!(
            "{verdict}: {numbers}, over {} samples from {:.0} s on",
            self.samples,
            self.settled.as_secs_f64()
        )
    }
}

/// When the first failing analysis run of canary `revision` ran, as the controller recorded it
/// in `status`: the earliest `FirstFailure` (else unmerged `Analysis`) timeline entry with
/// verdict Failing, in the canary's timeline while it is the canary and in the revision's
/// history entry once it ended; else the history entry's `failureDetectedAt` (which an Error
/// streak may have begun); else the live analysis's `failingSince`. The controller writes
/// times in whole seconds (truncated), so a time from here is up to 1 s early.
pub fn first_failing_run(status: &ReleaseStatus, revision: &str) -> Option<Timestamp> {
    let history = status
        .history
        .iter()
        .find(|entry| entry.revision == revision);
    let live = (status.canary_revision.as_deref() == Some(revision)).then_some(&status.timeline);
    let entries = || {
        live.into_iter()
            .flatten()
            .chain(history.into_iter().flat_map(|entry| &entry.timeline))
    };
    let earliest = |wanted: fn(&TimelineEntry) -> bool| {
        entries()
            .filter(|entry| entry.verdict == Some(Verdict::Failing) && wanted(entry))
            .map(|entry| entry.at.0)
            .min()
    };
    earliest(|entry| entry.kind == TimelineKind::FirstFailure)
        // A merged entry's time is that of the first run merged into it, which may not have
        // failed: only single runs count.
        .or_else(|| {
            earliest(|entry| {
                entry.kind == TimelineKind::Analysis && entry.count.is_none_or(|count| count <= 1)
            })
        })
        .or_else(|| history.and_then(|entry| entry.failure_detected_at.as_ref().map(|at| at.0)))
        .or_else(|| {
            status
                .analysis
                .as_ref()
                .filter(|analysis| {
                    analysis.revision.as_deref() == Some(revision)
                        && analysis.verdict == Verdict::Failing
                })
                .and_then(|analysis| analysis.failing_since.as_ref().map(|at| at.0))
        })
}

/// The earliest of `times` at or after `since`.
pub fn earliest_since(times: &[Timestamp], since: Timestamp) -> Option<Timestamp> {
    times.iter().copied().filter(|at| *at >= since).min()
}
