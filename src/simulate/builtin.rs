//! The built-in workloads: files under `config/workloads/`, embedded in the binary so that
//! `hearth simulate --workload NAME` works anywhere, and copyable as a start for your own.

/// A built-in workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Builtin {
    /// Name for `--workload`.
    pub name: &'static str,
    /// One line on what it models.
    pub about: &'static str,
    /// The JSON Lines text.
    pub text: &'static str,
}

/// The workload `hearth simulate` replays with no arguments.
pub const DEFAULT: &str = "branch-heavy";

macro_rules! builtin {
    ($name:literal, $about:literal) => {
        Builtin {
            name: $name,
            about: $about,
            text: include_str!(concat!("../../config/workloads/", $name, ".jsonl")),
        }
    };
}

/// Every built-in workload.
pub const BUILTINS: &[Builtin] = &[
    builtin!(
        "monorepo",
        "one repository, many Dockerfiles: each merge rebuilds the services it touches"
    ),
    builtin!(
        "many-repos",
        "many small repositories, one Dockerfile each, popularity long-tailed"
    ),
    builtin!(
        "branch-heavy",
        "feature branches whose first builds fall back to main's cache"
    ),
    builtin!(
        "merge-burst",
        "a release merge rebuilds every service of a monorepo at once"
    ),
    builtin!(
        "node-churn",
        "spot nodes going down and coming back under steady CI traffic"
    ),
];

/// The built-in workload named `name`.
pub fn find(name: &str) -> Option<&'static Builtin> {
    BUILTINS.iter().find(|b| b.name == name)
}
