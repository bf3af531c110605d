//! The transitions of a Release that notifications tell, by the names the configuration,
//! the metrics and the CloudEvents type use.

/// What happened to a Release that a person may want to hear about where they talk.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::Display,
    strum::EnumString,
    strum::IntoStaticStr,
)]
#[strum(serialize_all = "kebab-case")]
pub enum Transition {
    /// A new revision's canary was created.
    CanaryStarted,
    /// The canary reached a pause step without a duration: it waits for `waymark promote`.
    Paused,
    /// The canary's analysis turned Failing (once per revision).
    AnalysisFailing,
    /// The canary was rolled back (by analysis, its progress deadline, or `waymark abort`).
    RolledBack,
    /// The canary was promoted: the stable runs it.
    Promoted,
    /// The roadmap outcome of a promoted revision was measured.
    OutcomeMeasured,
}

impl Transition {
    /// Every transition, in the order of a canary's life.
    pub const ALL: [Transition; 6] = [
        Transition::CanaryStarted,
        Transition::Paused,
        Transition::AnalysisFailing,
        Transition::RolledBack,
        Transition::Promoted,
        Transition::OutcomeMeasured,
    ];

    /// The name in the configuration, metrics and CloudEvents type: `canary-started`, ...
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// Whether the transition ends the canary (its step and weight are the ones before).
    pub fn ends_the_canary(self) -> bool {
        matches!(self, Transition::RolledBack | Transition::Promoted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_names_round_trip() {
        for transition in Transition::ALL {
            assert_eq!(transition.as_str().parse::<Transition>(), Ok(transition));
        }
        assert_eq!(Transition::AnalysisFailing.as_str(), "analysis-failing");
    }
}
