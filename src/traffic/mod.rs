//! Traffic routing, pure: the arithmetic of both ways a canary gets its share.
//!
//! - [`gateway`]: the weights of a Gateway API route (HTTPRoute or GRPCRoute, through the
//!   [`route::WeightedRoute`] trait), read and edited as plain values (the controller reads the
//!   route from its watch cache and writes the edit).
//! - [`grpc`]: GRPCRoute rules of Waymark's own (a header cohort sent to the canary).
//! - [`features`]: what the route's GatewayClass supports, and what that means for session
//!   persistence.
//! - [`cohort`]: the cohort rules and mirror filters Waymark adds to an HTTPRoute for the
//!   `setHeaderRoute` and `setMirrorRoute` steps, and takes away again, as plain values.
//! - [`split`]: replica split (`spec.traffic.replicas`) has no router: Service `<name>` selects
//!   the pods of both roles, so the canary's share of traffic is its share of the pods, which
//!   the rollout core moves with scale actions.
//!
//! No I/O, no clock (`tests/architecture.rs` holds it).

pub mod cohort;
pub mod features;
pub mod gateway;
pub mod grpc;
pub mod route;
pub mod split;
