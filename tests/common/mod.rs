//! Helpers shared by the integration tests and the e2e suite.
//!
//! Each test crate under `tests/` takes it with `mod common;`; the e2e suite, which lives in
//! its own directory, with `#[path = "../tests/common/mod.rs"] mod common;`. Every part
//! depends only on crates Waymark already has, dev-dependencies included.
//!
//! - [`tools`]: the `prometheus` and `promtool` programs, found one way, skipped one way.
//! - [`prometheus`]: a real Prometheus on a loopback port, and request counters for it to scrape.
//! - [`mutations`]: hostile Releases, each with the outcome it must have.
//! - [`argocd`]: Argo CD's health of a Release, as `config/argocd/health.lua` computes it.

// Each test crate uses a different part; the rest would warn as dead code in that crate.
#![allow(dead_code)]

pub mod argocd;
pub mod mutations;
pub mod prometheus;
pub mod tools;
