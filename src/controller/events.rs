//! Kubernetes Events, the same way from every reconciler: best effort (a failure is logged,
//! never fails a reconcile).

use kube::runtime::events::{Event, EventType};
use tracing::warn;

use super::context::Context;

/// Longest note the API accepts (events.k8s.io/v1 rejects longer ones).
pub const NOTE_LIMIT_BYTES: usize = 1024;

/// `note` cut to [`NOTE_LIMIT_BYTES`] at a character boundary.
fn bounded(mut note: String) -> String {
    if note.len() > NOTE_LIMIT_BYTES {
        let mut at = NOTE_LIMIT_BYTES;
        while !note.is_char_boundary(at) {
            at -= 1;
        }
        note.truncate(at);
    }
    note
}

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
        note: Some(bounded(note)),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &object.object_ref(&())).await {
        warn!(error = %e, "could not publish event");
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn notes_are_cut_to_the_api_limit_at_a_character_boundary() {
        let note = super::bounded("é".repeat(1000));
        assert!(note.len() <= super::NOTE_LIMIT_BYTES && note.len() > 1000);
        assert_eq!(super::bounded("short".into()), "short");
    }
}
