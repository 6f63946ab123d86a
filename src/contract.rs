//! The contract between the `hearth` CLI client (`hearth build`, `wait`, `logs`) and the
//! builder pod the controller makes: the names and paths both must agree on. The controller
//! builds the pod from them ([`crate::controller::builders`]); the client finds that pod,
//! execs `hearth receive` in its receiver container and streams the context to it
//! ([`crate::client`], [`crate::upload`]). A client and a controller of different versions
//! still work together only while these stay the same: treat each as a published interface.

/// Name of the receiver init container, the one `hearth build` execs into.
pub const RECEIVER_CONTAINER: &str = "receive";

/// The emptyDir an uploaded context arrives in (see [`crate::upload`]); the receiver moves the
/// verified context to [`context_dir`] only once it is whole.
pub const UPLOAD_DIR: &str = "/upload";

/// Role of the builder pod, in its name and its labels.
pub const BUILDER_ROLE: &str = "build";

/// Where the unpacked context ends up inside the receiver's directory.
pub fn context_dir(dir: &str) -> String {
    format!("{}/context", dir.trim_end_matches('/'))
}

/// With `source.upload.separateDockerfile`, the tar's directory holding the context
/// (and the Dockerfile's, [`UPLOAD_APART_DOCKERFILE`]): `hearth build -f` outside DIR.
pub const UPLOAD_APART_CONTEXT: &str = "context";
/// With `source.upload.separateDockerfile`, the tar's directory holding only the Dockerfile.
pub const UPLOAD_APART_DOCKERFILE: &str = "dockerfile";

/// Name of a child object: `<owner>-<role>-<attempt>`, shortened with a hash when the owner's
/// name is long (pod names must be DNS labels of at most 63 characters).
pub fn child_name(owner: &str, role: &str, attempt: i32) -> String {
    let suffix = format!("-{role}-{attempt}");
    if owner.len() + suffix.len() <= 63 {
        return format!("{owner}{suffix}");
    }
    let hash = &blake3::hash(owner.as_bytes()).to_hex()[..8];
    let keep = 63 - suffix.len() - hash.len() - 1;
    let head = owner[..keep].trim_end_matches(['-', '.']);
    format!("{head}-{hash}{suffix}")
}

/// Name of the builder pod of attempt `attempt` of ImageBuild `build`.
pub fn builder_pod_name(build: &str, attempt: i32) -> String {
    child_name(build, BUILDER_ROLE, attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_names_fit_dns_labels_and_stay_distinct() {
        assert_eq!(child_name("shop-api", "build", 1), "shop-api-build-1");
        assert_eq!(builder_pod_name("shop-api", 1), "shop-api-build-1");
        let long_a = format!("{}a", "x".repeat(70));
        let long_b = format!("{}b", "x".repeat(70));
        let (a, b) = (
            child_name(&long_a, "restore", 2),
            child_name(&long_b, "restore", 2),
        );
        assert!(a.len() <= 63 && b.len() <= 63, "{a} {b}");
        assert_ne!(a, b);
        assert!(a.ends_with("-restore-2"));
    }

    #[test]
    fn the_context_lands_under_the_upload_dir() {
        assert_eq!(context_dir(UPLOAD_DIR), "/upload/context");
        assert_eq!(context_dir("/x/"), "/x/context");
    }
}
