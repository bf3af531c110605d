//! The `Release` custom resource (`waymark.dev/v1alpha1`): its spec, status, schema and the
//! names every child object carries.

pub mod analysis_status;
pub mod crd;
pub mod duration;
pub mod outcome;
pub mod revision;
pub mod roadmap;
pub mod routes;
pub mod spec;
pub mod status;

pub use analysis_status::{
    AnalysisStatus, BaselineComparison, CheckResult, RoleAnalysis, Verdict, WindowResult,
};
pub use duration::{Duration, DurationError};
pub use outcome::{Goal, MinChange, OutcomeRecord, OutcomeVerdict, RoadmapOutcome};
pub use revision::template_revision;
pub use roadmap::{Horizon, RoadmapKind};
pub use routes::{
    ActiveCohort, ActiveMirror, HeaderRoute, MatchType, MirrorRoute, RouteAdditions, RouteMatch,
    ValueMatch,
};
pub use spec::{
    Analysis, BudgetPolicy, BurnRate, Check, GatewayApiTraffic, Pause, PrometheusSource, Release,
    ReleaseSpec, ReplicaTraffic, ResolvedPorts, Roadmap, RouteKind, STEPS_EMPTY, ScaleDown,
    SecretKeyRef, ServicePorts, SessionCookieConfig, SessionCookieLifetime, SessionPersistence,
    SessionPersistenceType, Slo, Step, Traffic, WorkloadRef,
};
pub use status::{
    HistoryEntry, ManualAction, ManualRequest, Outcome, Phase, ReleaseStage, ReleaseStatus,
    TimelineCheck, TimelineEntry, TimelineKind, TimelineWindow, WorkloadStatus,
};

/// Label naming the Release a child object belongs to.
pub const LABEL_RELEASE: &str = "waymark.dev/release";
/// Label naming the role of a child object: `stable` or `canary`.
pub const LABEL_ROLE: &str = "waymark.dev/role";
/// Label naming the template revision (hash) a child object runs.
pub const LABEL_REVISION: &str = "waymark.dev/revision";
/// Label naming the roadmap item a child object delivers.
pub const LABEL_ROADMAP_ITEM: &str = "waymark.dev/roadmap-item";
/// Label naming the roadmap horizon (`now`, `next`, `later`) of the item a child delivers.
pub const LABEL_ROADMAP_HORIZON: &str = "waymark.dev/roadmap-horizon";
/// Label naming the kind of work (`feature`, `debt`, ...) of the item a child delivers.
pub const LABEL_ROADMAP_KIND: &str = "waymark.dev/roadmap-kind";
/// Annotation with the roadmap item's title.
pub const ANNOTATION_ROADMAP_TITLE: &str = "waymark.dev/roadmap-title";
/// Annotation with the roadmap item's URL.
pub const ANNOTATION_ROADMAP_URL: &str = "waymark.dev/roadmap-url";
/// Annotation on an existing object that lets Waymark take it over as a child (`"true"`);
/// without it Waymark never touches an object it did not create.
pub const ANNOTATION_ADOPT: &str = "waymark.dev/adopt";
/// Annotation on a child Deployment: a hash of what Waymark applied (labels, annotations and
/// spec but the replica count), so an unchanged child is not written again.
pub const ANNOTATION_SPEC_HASH: &str = "waymark.dev/spec-hash";
/// Finalizer on a Release whose route (HTTPRoute or GRPCRoute) carries canary weight: deleting the
/// Release first gives the route back to the stable (see [`crate::rollout::deletion`]). A settled
/// Release has none.
pub const ROUTE_FINALIZER: &str = "waymark.dev/route";
/// Finalizer on a Release that has scaled down the Deployment its `spec.workloadRef` names:
/// deleting the Release (or removing the reference) first gives that Deployment back its
/// recorded replicas and waits for them to be available (see [`crate::rollout::workload`]).
pub const WORKLOAD_FINALIZER: &str = "waymark.dev/workload";
/// Field manager for every write Waymark's controller makes.
pub const FIELD_MANAGER: &str = "waymark";
/// Field manager for manual requests written by the CLI.
pub const CLI_FIELD_MANAGER: &str = "waymark-cli";

/// The role a child object plays.
#[derive(
    Clone,
    Copy,
    Debug,
    PartialEq,
    Eq,
    Hash,
    strum::Display,
    strum::IntoStaticStr,
    strum::VariantArray,
)]
#[strum(serialize_all = "lowercase")]
pub enum Role {
    /// Serves production traffic.
    Stable,
    /// The new revision under test.
    Canary,
}

impl Role {
    /// The label value and name suffix: `stable` or `canary`.
    pub fn as_str(&self) -> &'static str {
        self.into()
    }

    /// Name of this role's Deployment and Service for a Release named `release`.
    pub fn child_name(&self, release: &str) -> String {
        format!("{release}-{}", self.as_str())
    }
}

#[cfg(test)]
mod name_tests {
    //! The names each enum is written with (status, labels, messages, metrics) are pinned: the
    //! derived `as_str` and `Display` must give exactly what serde writes and what earlier
    //! releases wrote.

    use strum::VariantArray;

    use super::*;

    /// Each variant's name, checked the same through `as_str` (`Into<&str>`) and `Display`.
    fn names<T>() -> Vec<&'static str>
    where
        T: VariantArray + Copy + Into<&'static str> + std::fmt::Display,
    {
        T::VARIANTS
            .iter()
            .map(|variant| {
                let name: &'static str = (*variant).into();
                assert_eq!(variant.to_string(), name);
                name
            })
            .collect()
    }

    /// [`names`], and serde writes each the same.
    fn serialized_names<T>() -> Vec<&'static str>
    where
        T: VariantArray + Copy + Into<&'static str> + std::fmt::Display + serde::Serialize,
    {
        let names = names::<T>();
        for (variant, name) in T::VARIANTS.iter().zip(&names) {
            assert_eq!(serde_json::to_value(variant).unwrap(), *name);
        }
        names
    }

    #[test]
    fn enum_names_are_what_the_status_labels_and_messages_have_always_said() {
        assert_eq!(
            serialized_names::<Verdict>(),
            ["Passing", "Failing", "Inconclusive", "Error"]
        );
        assert_eq!(
            serialized_names::<Phase>(),
            ["Healthy", "Progressing", "Paused", "RolledBack", "Degraded"]
        );
        assert_eq!(
            serialized_names::<ReleaseStage>(),
            [
                "FirstRelease",
                "Steady",
                "Pending",
                "RolledBack",
                "Canary",
                "Promoting"
            ]
        );
        assert_eq!(serialized_names::<Horizon>(), ["now", "next", "later"]);
        assert_eq!(
            serialized_names::<RoadmapKind>(),
            ["feature", "debt", "platform", "security", "experiment"]
        );
        assert_eq!(names::<Role>(), ["stable", "canary"]);
        assert_eq!(Role::Canary.as_str(), "canary");
        assert_eq!(Phase::RolledBack.as_str(), "RolledBack");
    }
}
