//! Kubernetes Events, the same way from every reconciler: best effort (a failure is logged,
//! never fails a reconcile).

use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::context::Context;

/// Publishes an Event about `object`.
pub async fn publish<K: kube::Resource<DynamicType = ()>>(
    ctx: &Context,
    object: &K,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}
