//! Waymark: progressive delivery for Kubernetes, judged by SLO error-budget burn rate and tied
//! to the roadmap item each release delivers.

pub mod analysis;
pub mod api;
pub mod cli;
pub mod controller;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod rollout;
pub mod traffic;
