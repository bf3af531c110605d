//! The bench's unit tests: what it judges without a cluster (quantiles, the flatness of a
//! resident-set line, the first failing analysis run in a status). The bench has no libtest
//! harness (`harness = false`), so `cargo test --bench scale` runs these through libtest-mimic
//! when cargo bench's `--bench` flag is absent.

use std::process::ExitCode;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use libtest_mimic::{Arguments, Failed, Trial};
use waymark::api::{
    AnalysisStatus, HistoryEntry, Outcome, ReleaseStatus, TimelineEntry, TimelineKind, Verdict,
};

use crate::judge::{FlatVerdict, earliest_since, first_failing_run, flatness};
use crate::report::{CanaryHour, Latencies, canary_hour_text};

/// Run the checks with the test harness's flags (filters, `--list`, ...).
pub fn run() -> ExitCode {
    let trials = vec![
        check("quantiles_are_nearest_rank", quantiles_are_nearest_rank),
        check(
            "latencies_count_releases_without_an_end",
            latencies_count_missing,
        ),
        check("a_level_line_is_flat", a_level_line_is_flat),
        check("a_slow_climb_is_growing", a_slow_climb_is_growing),
        check("one_jump_is_a_spread", one_jump_is_a_spread),
        check(
            "samples_before_settling_are_not_judged",
            before_settling_ignored,
        ),
        check("two_samples_are_too_few", two_samples_are_too_few),
        check(
            "first_failing_run_from_history",
            first_failing_run_from_history,
        ),
        check(
            "first_failing_run_skips_errors_and_passes",
            first_failing_skips_others,
        ),
        check(
            "first_failing_run_live_canary",
            first_failing_run_live_canary,
        ),
        check("first_failing_run_falls_back", first_failing_run_falls_back),
        check(
            "first_failing_run_other_revision",
            first_failing_run_other_revision,
        ),
        check("earliest_since_ignores_older", earliest_since_ignores_older),
        check(
            "the_canary_hour_is_judged_again_once_histories_are_full",
            canary_hour_judged_once_histories_full,
        ),
    ];
    libtest_mimic::run(&Arguments::from_args(), trials).exit_code()
}

fn check(name: &'static str, body: fn() -> Result<(), String>) -> Trial {
    Trial::test(name, move || body().map_err(Failed::from))
}

fn expect<T: PartialEq + std::fmt::Debug>(what: &str, got: T, want: T) -> Result<(), String> {
    if got == want {
        Ok(())
    } else {
        Err(format!("{what}: got {got:?}, want {want:?}"))
    }
}

fn secs(seconds: u64) -> Duration {
    Duration::from_secs(seconds)
}

fn at(seconds: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

const MIB: u64 = 1024 * 1024;

fn quantiles_are_nearest_rank() -> Result<(), String> {
    let latencies = Latencies::of((1..=100).rev().map(|s| Some(secs(s))));
    expect("p50 of 1..100 s", latencies.quantile(0.5), Some(secs(50)))?;
    expect("p99 of 1..100 s", latencies.quantile(0.99), Some(secs(99)))?;
    expect("p100", latencies.quantile(1.0), Some(secs(100)))?;
    let one = Latencies::of([Some(secs(7))].into_iter());
    expect("p99 of one", one.quantile(0.99), Some(secs(7)))?;
    expect("p50 of one", one.quantile(0.5), Some(secs(7)))?;
    let none = Latencies::of(std::iter::empty());
    expect("p99 of none", none.quantile(0.99), None)
}

fn latencies_count_missing() -> Result<(), String> {
    let latencies = Latencies::of([Some(secs(3)), None, Some(secs(1)), None].into_iter());
    expect("missing", latencies.missing(), 2)?;
    expect(
        "p99 of what was measured",
        latencies.quantile(0.99),
        Some(secs(3)),
    )
}

/// 200 MiB sampled every minute for an hour, wobbling by up to 0.5 MiB.
fn level_line() -> Vec<(Duration, u64)> {
    (0..=60)
        .map(|minute| (secs(minute * 60), 200 * MIB + (minute % 3) * MIB / 4))
        .collect()
}

fn a_level_line_is_flat() -> Result<(), String> {
    let judged = flatness(&level_line(), Duration::ZERO);
    expect("verdict", judged.verdict, FlatVerdict::Flat)?;
    expect("samples", judged.samples, 61)?;
    let slope = judged.slope_mib_per_hour.ok_or("no slope")?;
    if slope.abs() > 0.1 {
        return Err(format!("slope {slope} MiB/h of a level line"));
    }
    expect("spread", judged.spread_mib, Some(0.5))
}

fn a_slow_climb_is_growing() -> Result<(), String> {
    // 3 MiB an hour, 50 KiB a minute: every sample within 2 MiB of the first for 40 minutes.
    let climb: Vec<(Duration, u64)> = (0..=60)
        .map(|minute| {
            (
                secs(minute * 60),
                200 * MIB + minute * 50 * 1024 + (minute % 2) * 1024,
            )
        })
        .collect();
    let judged = flatness(&climb, Duration::ZERO);
    expect("verdict", judged.verdict, FlatVerdict::Growing)?;
    let slope = judged.slope_mib_per_hour.ok_or("no slope")?;
    if (slope - 2.93).abs() > 0.05 {
        return Err(format!("slope {slope} MiB/h, want about 2.93"));
    }
    Ok(())
}

fn one_jump_is_a_spread() -> Result<(), String> {
    let mut line = level_line();
    line[30].1 += 3 * MIB;
    let judged = flatness(&line, Duration::ZERO);
    expect("verdict", judged.verdict, FlatVerdict::Spread)
}

fn before_settling_ignored() -> Result<(), String> {
    // The first round fills the caches: 40 MiB in 5 minutes, then level.
    let mut line: Vec<(Duration, u64)> = (0..5)
        .map(|minute| (secs(minute * 60), (160 + minute * 8) * MIB))
        .collect();
    line.extend(
        level_line()
            .into_iter()
            .map(|(at, bytes)| (at + secs(300), bytes)),
    );
    expect(
        "judged from the start",
        flatness(&line, Duration::ZERO).verdict,
        FlatVerdict::Growing,
    )?;
    let judged = flatness(&line, secs(300));
    expect("judged once settled", judged.verdict, FlatVerdict::Flat)?;
    expect("samples once settled", judged.samples, 61)
}

fn canary_hour_judged_once_histories_full() -> Result<(), String> {
    // Round 1 ends at 2 minutes; the histories fill until minute 15 (1 MiB a minute), then
    // the line is level.
    let rss: Vec<(Duration, u64)> = (0..=60)
        .map(|minute| (secs(minute * 60), (50 + minute.min(15)) * MIB))
        .collect();
    let mut hour = CanaryHour {
        duration: secs(3600),
        rounds: Vec::new(),
        rss,
        settled: secs(120),
        history_full: Some(secs(900)),
    };
    let mut text = String::new();
    canary_hour_text(&mut text, 1000, secs(60), &hour);
    let verdicts: Vec<&str> = text
        .lines()
        .filter(|line| line.contains("samples from"))
        .collect();
    expect("verdict lines", verdicts.len(), 2)?;
    if !verdicts[0].trim_start().starts_with("NOT FLAT") {
        return Err(format!("from round 1 the filling shows: {text}"));
    }
    if !(verdicts[1].contains("history was full") && verdicts[1].contains("): flat: ")) {
        return Err(format!("level once the histories are full: {text}"));
    }

    hour.history_full = None;
    let mut text = String::new();
    canary_hour_text(&mut text, 1000, secs(60), &hour);
    if !text.contains("were not all full") {
        return Err(format!("says the histories never filled: {text}"));
    }
    Ok(())
}

fn two_samples_are_too_few() -> Result<(), String> {
    let line = [(secs(0), 100 * MIB), (secs(10), 100 * MIB)];
    expect(
        "verdict",
        flatness(&line, Duration::ZERO).verdict,
        FlatVerdict::TooFewSamples,
    )?;
    expect(
        "verdict of none",
        flatness(&[], Duration::ZERO).verdict,
        FlatVerdict::TooFewSamples,
    )
}

fn entry(seconds: i64, kind: TimelineKind, verdict: Option<Verdict>) -> TimelineEntry {
    TimelineEntry {
        at: Time(at(seconds)),
        kind,
        until: None,
        count: None,
        step: None,
        weight: None,
        from_step: None,
        from_weight: None,
        verdict,
        canary: None,
        stable: None,
        check: None,
        consecutive: None,
        limit: None,
        action: None,
        by: None,
        message: None,
    }
}

fn rolled_back(revision: &str, timeline: Vec<TimelineEntry>) -> HistoryEntry {
    HistoryEntry {
        revision: revision.into(),
        roadmap_item: "SCALE-R1".into(),
        outcome: Outcome::RolledBack,
        started_at: Some(Time(at(0))),
        finished_at: Time(at(30)),
        failure_detected_at: None,
        reason: "AnalysisFailed".into(),
        message: None,
        horizon: None,
        kind: None,
        timeline,
        roadmap_outcome: None,
        rework: false,
    }
}

fn first_failing_run_from_history() -> Result<(), String> {
    let status = ReleaseStatus {
        history: vec![rolled_back(
            "abc",
            vec![
                entry(2, TimelineKind::CanaryCreated, None),
                entry(5, TimelineKind::Step, None),
                entry(11, TimelineKind::FirstFailure, Some(Verdict::Failing)),
                entry(21, TimelineKind::Analysis, Some(Verdict::Failing)),
                entry(21, TimelineKind::TrafficOnStable, None),
            ],
        )],
        ..ReleaseStatus::default()
    };
    expect(
        "first failing",
        first_failing_run(&status, "abc"),
        Some(at(11)),
    )
}

fn first_failing_skips_others() -> Result<(), String> {
    // An Error streak's first run is a FirstFailure too, but Prometheus could not answer it;
    // a passing run came before. The first Failing run is the one at 31.
    let status = ReleaseStatus {
        history: vec![rolled_back(
            "abc",
            vec![
                entry(1, TimelineKind::Analysis, Some(Verdict::Passing)),
                entry(11, TimelineKind::FirstFailure, Some(Verdict::Error)),
                entry(31, TimelineKind::FirstFailure, Some(Verdict::Failing)),
                entry(41, TimelineKind::Analysis, Some(Verdict::Failing)),
            ],
        )],
        ..ReleaseStatus::default()
    };
    expect(
        "first failing",
        first_failing_run(&status, "abc"),
        Some(at(31)),
    )?;
    // Without a FirstFailure entry, a single failing run counts; a merged one does not.
    let mut merged = entry(5, TimelineKind::Analysis, Some(Verdict::Failing));
    merged.count = Some(3);
    let status = ReleaseStatus {
        history: vec![rolled_back(
            "abc",
            vec![
                merged,
                entry(25, TimelineKind::Analysis, Some(Verdict::Failing)),
            ],
        )],
        ..ReleaseStatus::default()
    };
    expect(
        "single failing run",
        first_failing_run(&status, "abc"),
        Some(at(25)),
    )
}

fn first_failing_run_live_canary() -> Result<(), String> {
    let status = ReleaseStatus {
        canary_revision: Some("abc".into()),
        timeline: vec![
            entry(3, TimelineKind::CanaryAvailable, None),
            entry(13, TimelineKind::FirstFailure, Some(Verdict::Failing)),
        ],
        ..ReleaseStatus::default()
    };
    expect(
        "live canary",
        first_failing_run(&status, "abc"),
        Some(at(13)),
    )?;
    let other = ReleaseStatus {
        canary_revision: Some("def".into()),
        ..status
    };
    expect(
        "another canary's timeline",
        first_failing_run(&other, "abc"),
        None,
    )
}

fn first_failing_run_falls_back() -> Result<(), String> {
    let mut history = rolled_back("abc", Vec::new());
    history.failure_detected_at = Some(Time(at(17)));
    let status = ReleaseStatus {
        history: vec![history],
        ..ReleaseStatus::default()
    };
    expect(
        "failureDetectedAt",
        first_failing_run(&status, "abc"),
        Some(at(17)),
    )?;
    let status = ReleaseStatus {
        analysis: Some(AnalysisStatus {
            verdict: Verdict::Failing,
            revision: Some("abc".into()),
            failing_since: Some(Time(at(9))),
            ..AnalysisStatus::default()
        }),
        ..ReleaseStatus::default()
    };
    expect(
        "failingSince",
        first_failing_run(&status, "abc"),
        Some(at(9)),
    )
}

fn first_failing_run_other_revision() -> Result<(), String> {
    let status = ReleaseStatus {
        history: vec![rolled_back(
            "old",
            vec![entry(
                11,
                TimelineKind::FirstFailure,
                Some(Verdict::Failing),
            )],
        )],
        ..ReleaseStatus::default()
    };
    expect(
        "another revision's history",
        first_failing_run(&status, "abc"),
        None,
    )
}

fn earliest_since_ignores_older() -> Result<(), String> {
    let times = [at(50), at(5), at(20), at(30)];
    expect("since 10", earliest_since(&times, at(10)), Some(at(20)))?;
    expect(
        "since 20 (inclusive)",
        earliest_since(&times, at(20)),
        Some(at(20)),
    )?;
    expect("since 60", earliest_since(&times, at(60)), None)
}
