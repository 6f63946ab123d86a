//! Controller errors, each with a category used as a bounded metrics label and in Warning
//! Events.

/// What can go wrong while reconciling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// Another writer changed the BuildCache first: re-plan, never double-claim.
    #[error("claim conflict on BuildCache {0}: re-planning")]
    ClaimConflict(String),
    /// The object cannot be acted on until the user changes it (reported in status).
    #[error("{0}")]
    InvalidSpec(String),
    /// A broken invariant: a bug, or state written by something other than the controller
    /// (the planner refusing its view, a phase without the status it needs).
    #[error("internal: {0}")]
    Internal(String),
}

impl Error {
    /// Bounded label for metrics and Events.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::ClaimConflict(_) => "conflict",
            Error::InvalidSpec(_) => "invalid_spec",
            Error::Internal(_) => "internal",
        }
    }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True for an API error with this HTTP status.
pub fn is_status(err: &kube::Error, code: u16) -> bool {
    matches!(err, kube::Error::Api(s) if s.code == code)
}

/// A delete (or any call) whose object is already gone counts as done.
pub fn ignore_missing<T>(r: std::result::Result<T, kube::Error>) -> Result<()> {
    match r {
        Err(e) if is_status(&e, 404) => Ok(()),
        other => other.map(|_| ()).map_err(Error::from),
    }
}
