//! Traffic routers: Gateway API HTTPRoute weights and replica split.
