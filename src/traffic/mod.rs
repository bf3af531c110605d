//! Traffic routing, pure: the arithmetic of both ways a canary gets its share.
//!
//! - [`gateway`]: the weights of a Gateway API HTTPRoute, read and edited as plain values (the
//!   controller reads the route from its watch cache and writes the edit).
//! - [`cohort`]: the cohort rules and mirror filters Waymark adds to that route for the
//!   `setHeaderRoute` and `setMirrorRoute` steps, and takes away again, as plain values.
//! - [`split`]: replica split (`spec.traffic.replicas`) has no router: Service `<name>` selects
//!   the pods of both roles, so the canary's share of traffic is its share of the pods, which
//!   the rollout core moves with scale actions.
//!
//! No I/O, no clock (`tests/architecture.rs` holds it).

pub mod cohort;
pub mod gateway;
pub mod split;
