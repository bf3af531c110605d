//! The tests' real Prometheus and the request counters it scrapes (`tests/common/`), for the
//! rollback wave; `prometheus.rs` finds its binary through its sibling `tools.rs`.

#[path = "../../tests/common/prometheus.rs"]
pub mod prometheus;
#[path = "../../tests/common/tools.rs"]
pub mod tools;
