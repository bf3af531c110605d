//! Replica split: no router. Service `<name>` selects the pods of both roles, so the canary's
//! share of traffic is its share of the pods; the rollout core moves it with scale actions.

use crate::api::Release;
use crate::rollout::RouteState;

use super::{TrafficError, TrafficRouter};

/// The replica-split router: it has no traffic state of its own.
#[derive(Clone, Copy, Debug, Default)]
pub struct ReplicaRouter;

impl TrafficRouter for ReplicaRouter {
    async fn observe(&self, _release: &Release) -> Result<Option<RouteState>, TrafficError> {
        Ok(None)
    }

    async fn set_weight(
        &self,
        _release: &Release,
        _canary_weight: i32,
    ) -> Result<(), TrafficError> {
        // The core emits ScaleStable/ScaleCanary for the split; there is nothing else to write.
        Ok(())
    }
}
