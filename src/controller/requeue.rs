//! When reconcilers look at an object again: one policy, with named durations, for every
//! controller. Children's changes (pods, Jobs) trigger a reconcile at once through the
//! watches; these are the safety nets and the back-offs.

use std::time::Duration;

use kube::runtime::controller::Action;

/// The next step of a lifecycle that just moved on.
pub const SOON: Duration = Duration::from_millis(100);
/// A CustomRun whose ImageBuild another reconcile is creating: read it again shortly.
pub const CREATED_ELSEWHERE: Duration = Duration::from_millis(500);
/// Shortest look-again before a CustomRun's timeout.
pub const DEADLINE_MIN: Duration = Duration::from_secs(1);
/// A claim (or any write) lost to a concurrent writer: look again almost at once.
pub const CLAIM_CONFLICT: Duration = Duration::from_millis(200);
/// A BuildCache status write lost to a concurrent writer.
pub const CACHE_CONFLICT: Duration = Duration::from_secs(1);
/// Children (pods, Jobs) still terminating over their grace period.
pub const LINGER: Duration = Duration::from_secs(2);
/// A build whose BuildCache is at `maxReplicas`, waiting for one of its replicas.
pub const AT_CAPACITY: Duration = Duration::from_secs(15);
/// A running maintenance Job of a BuildCache (its changes also wake the controller).
pub const FOLLOW: Duration = Duration::from_secs(15);
/// A running builder pod or snapshot Job of a build (watched: only a safety net).
pub const POLL: Duration = Duration::from_secs(30);
/// While a BuildCache is deleted, a failed forget is retried after this long.
pub const DELETE_RETRY: Duration = Duration::from_secs(30);
/// A BuildCache with nothing to do looks again after this long (time-based duties: idle
/// TTLs, snapshot intervals, gc).
pub const RESYNC: Duration = Duration::from_secs(60);
/// After an unexpected ImageBuild error.
pub const BUILD_ERROR: Duration = Duration::from_secs(5);
/// After an unexpected BuildCache error.
pub const CACHE_ERROR: Duration = Duration::from_secs(10);
/// Shortest and longest look-again while a build waits for the planner's chosen moment.
pub const WAIT_MIN: Duration = Duration::from_secs(5);
/// See [`WAIT_MIN`].
pub const WAIT_MAX: Duration = Duration::from_secs(30);

/// When a reconciler wants to look again: pure code returns this, the runtime turns it into an
/// [`Action`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Next {
    /// The lifecycle moved on: its next step right away ([`SOON`]).
    Soon,
    /// Children still terminating ([`LINGER`]).
    Linger,
    /// A watched child is running ([`POLL`]).
    Poll,
    /// The cache is at `maxReplicas` ([`AT_CAPACITY`]).
    AtCapacity,
    /// Waiting for a replica or a slot the planner expects in this many seconds (clamped to
    /// [`WAIT_MIN`]..[`WAIT_MAX`]).
    Wait(f64),
    /// Nothing to do until the object changes.
    Done,
}

impl Next {
    /// The runtime's action.
    pub fn action(self) -> Action {
        match self {
            Next::Soon => Action::requeue(SOON),
            Next::Linger => Action::requeue(LINGER),
            Next::Poll => Action::requeue(POLL),
            Next::AtCapacity => Action::requeue(AT_CAPACITY),
            Next::Wait(seconds) => Action::requeue(Duration::from_secs_f64(
                seconds.clamp(WAIT_MIN.as_secs_f64(), WAIT_MAX.as_secs_f64()),
            )),
            Next::Done => Action::await_change(),
        }
    }
}
