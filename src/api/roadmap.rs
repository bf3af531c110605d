//! The tags of a roadmap item that both the spec (what is delivered) and the status (what was
//! delivered, in the history) carry: its horizon and its kind of work.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The three horizons of a roadmap: what is being delivered now, next, and later.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum Horizon {
    /// Committed work of the current period.
    Now,
    /// Planned for the next period.
    Next,
    /// Exploration further out.
    Later,
}

impl Horizon {
    /// Every horizon, in roadmap order.
    pub const ALL: [Horizon; 3] = [Horizon::Now, Horizon::Next, Horizon::Later];

    /// The value as written in the spec and in labels: `now`, `next`, `later`.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}

/// The kind of work a roadmap item is, to see how delivery is balanced between them.
#[derive(
    JsonSchema,
    Serialize,
    Deserialize,
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[serde(rename_all = "lowercase")]
#[strum(serialize_all = "lowercase")]
pub enum RoadmapKind {
    /// New behaviour for users.
    Feature,
    /// Paying down technical debt.
    Debt,
    /// Platform and infrastructure work.
    Platform,
    /// Security fixes and hardening.
    Security,
    /// An experiment, expected to be rolled back or reshaped.
    Experiment,
}

impl RoadmapKind {
    /// Every kind, in the order of the summaries.
    pub const ALL: [RoadmapKind; 5] = [
        RoadmapKind::Feature,
        RoadmapKind::Debt,
        RoadmapKind::Platform,
        RoadmapKind::Security,
        RoadmapKind::Experiment,
    ];

    /// The value as written in the spec and in labels: `feature`, `debt`, ...
    pub fn as_str(&self) -> &'static str {
        self.into()
    }
}
