//! Which cloud provider serves a registry host, and which registries of a build to log in to.
//! Pure: no I/O.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// A cloud identity `hearth registry-login` can turn into registry credentials.
#[derive(
    Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum,
)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Amazon ECR, with the pod's AWS identity (IRSA, EKS Pod Identity, environment).
    Ecr,
    /// Google Artifact Registry and Container Registry, with the GKE Workload Identity of the
    /// pod (the metadata server's access token).
    Gcp,
}

impl Provider {
    /// The name in the operator config and on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Ecr => "ecr",
            Provider::Gcp => "gcp",
        }
    }
}

/// A registry host a provider serves, with what its token request needs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Registry {
    /// `<account>.dkr.ecr[-fips].<region>.amazonaws.com[.cn]`.
    Ecr {
        /// The AWS account id (12 digits).
        account: String,
        /// The region, from the host.
        region: String,
        /// A FIPS endpoint (`dkr.ecr-fips`): the token comes from ECR's FIPS endpoint too.
        fips: bool,
    },
    /// `gcr.io`, `<region>.gcr.io`, `<location>-docker.pkg.dev`.
    Gcp,
}

impl Registry {
    /// The provider that serves it.
    pub fn provider(&self) -> Provider {
        match self {
            Registry::Ecr { .. } => Provider::Ecr,
            Registry::Gcp => Provider::Gcp,
        }
    }
}

/// The registry `host` is, when a provider serves it (case-insensitive; no port).
pub fn classify(host: &str) -> Option<Registry> {
    let host = host.to_ascii_lowercase();
    if let Some(registry) = ecr(&host) {
        return Some(registry);
    }
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    };
    let gcp = host == "gcr.io"
        || host.strip_suffix(".gcr.io").is_some_and(label)
        || host
            .strip_suffix("-docker.pkg.dev")
            .is_some_and(|location| label(location) && !location.ends_with('-'));
    gcp.then_some(Registry::Gcp)
}

/// `<12 digits>.dkr.ecr(-fips)?.<region>.amazonaws.com(.cn)?`
fn ecr(host: &str) -> Option<Registry> {
    let rest = host
        .strip_suffix(".amazonaws.com")
        .or_else(|| host.strip_suffix(".amazonaws.com.cn"))?;
    let (account, rest) = rest.split_once('.')?;
    let (fips, region) = if let Some(region) = rest.strip_prefix("dkr.ecr-fips.") {
        (true, region)
    } else {
        (false, rest.strip_prefix("dkr.ecr.")?)
    };
    let account_ok = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
    // A region: lower-case letters and digits in dash-separated parts (us-east-1, cn-north-1,
    // us-gov-west-1), at least two parts.
    let region_ok = region.split('-').count() >= 2
        && region.split('-').all(|part| {
            !part.is_empty()
                && part
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        });
    (account_ok && region_ok).then(|| Registry::Ecr {
        account: account.to_string(),
        region: region.to_string(),
        fips,
    })
}

/// The registry host of an image reference, as docker reads it: the part before the first
/// `/` when it looks like a host (has a `.` or `:`, or is `localhost`), else Docker Hub.
pub fn registry_host(reference: &str) -> &str {
    match reference.split_once('/') {
        Some((first, _)) if first.contains(['.', ':']) || first == "localhost" => first,
        _ => "docker.io",
    }
}

/// The `hosts` served by one of `providers`, lower-case, sorted and without repeats.
pub fn login_hosts<'a>(
    hosts: impl IntoIterator<Item = &'a str>,
    providers: &[Provider],
) -> Vec<String> {
    hosts
        .into_iter()
        .filter(|host| classify(host).is_some_and(|r| providers.contains(&r.provider())))
        .map(str::to_ascii_lowercase)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ecr_at(account: &str, region: &str, fips: bool) -> Option<Registry> {
        Some(Registry::Ecr {
            account: account.into(),
            region: region.into(),
            fips,
        })
    }

    #[test]
    fn ecr_hosts_give_their_region() {
        let acct = "123456789012";
        assert_eq!(
            classify("123456789012.dkr.ecr.eu-west-1.amazonaws.com"),
            ecr_at(acct, "eu-west-1", false)
        );
        assert_eq!(
            classify("123456789012.dkr.ecr-fips.us-gov-west-1.amazonaws.com"),
            ecr_at(acct, "us-gov-west-1", true)
        );
        assert_eq!(
            classify("123456789012.DKR.ECR.cn-north-1.amazonaws.com.cn"),
            ecr_at(acct, "cn-north-1", false)
        );
        for not_ecr in [
            "12345678901.dkr.ecr.us-east-1.amazonaws.com",
            "1234567890123.dkr.ecr.us-east-1.amazonaws.com",
            "12345678901x.dkr.ecr.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.amazonaws.com",
            "123456789012.dkr.ecr.us_east_1.amazonaws.com",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com.evil.io",
            "123456789012.dkr.ecr.us-east-1.amazonaws.com:443",
            "public.ecr.aws",
            "123456789012.s3.us-east-1.amazonaws.com",
            "123456789012.dkr.ecr.us..east.amazonaws.com",
        ] {
            assert_eq!(classify(not_ecr), None, "{not_ecr}");
        }
    }

    #[test]
    fn gcp_hosts() {
        for host in [
            "gcr.io",
            "eu.gcr.io",
            "us-docker.pkg.dev",
            "europe-west1-docker.pkg.dev",
        ] {
            assert_eq!(classify(host), Some(Registry::Gcp), "{host}");
        }
        for host in [
            "evilgcr.io",
            "gcr.io.evil.io",
            "a.b.gcr.io",
            "-docker.pkg.dev",
            "docker.pkg.dev",
            "x.y-docker.pkg.dev",
            "ghcr.io",
        ] {
            assert_eq!(classify(host), None, "{host}");
        }
    }

    #[test]
    fn hosts_of_references() {
        assert_eq!(registry_host("ghcr.io/a/b:1"), "ghcr.io");
        assert_eq!(registry_host("localhost/a"), "localhost");
        assert_eq!(
            registry_host("127.0.0.1:5000/a@sha256:00"),
            "127.0.0.1:5000"
        );
        assert_eq!(registry_host("library/alpine"), "docker.io");
        assert_eq!(registry_host("alpine"), "docker.io");
        let refs = [
            "123456789012.dkr.ecr.us-east-1.amazonaws.com/app:1",
            "123456789012.DKR.ecr.us-east-1.amazonaws.com/app:cache",
            "europe-docker.pkg.dev/p/r/app:1",
            "ghcr.io/acme/app:1",
        ]
        .map(registry_host);
        assert_eq!(
            login_hosts(refs, &[Provider::Ecr]),
            ["123456789012.dkr.ecr.us-east-1.amazonaws.com"]
        );
        assert_eq!(
            login_hosts(refs, &[Provider::Gcp, Provider::Ecr]),
            [
                "123456789012.dkr.ecr.us-east-1.amazonaws.com",
                "europe-docker.pkg.dev"
            ]
        );
        assert!(login_hosts(refs, &[]).is_empty());
    }
}
