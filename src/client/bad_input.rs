//! A refused flag of a client command, naming the flag to fix (exit code 2).

/// A refused flag: exit code 2.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{flag}: {message}")]
pub struct BadInput {
    /// The flag (or argument) to fix, as the user typed it (`-t/--tag`).
    pub flag: String,
    /// What is wrong.
    pub message: String,
}

impl BadInput {
    /// A refusal of `flag`.
    pub fn new(flag: &str, message: impl Into<String>) -> BadInput {
        BadInput {
            flag: flag.into(),
            message: message.into(),
        }
    }
}
