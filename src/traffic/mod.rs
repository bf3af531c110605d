//! Traffic routing.
//!
//! - [`gateway`]: the weights of a Gateway API HTTPRoute, read from the controller's watch
//!   cache and written by server-side apply.
//! - Replica split (`spec.traffic.replicas`) has no router: Service `<name>` selects the pods of
//!   both roles, so the canary's share of traffic is its share of the pods, which the rollout
//!   core moves with scale actions ([`crate::rollout::split`]).

pub mod gateway;
