//! Tests of the buildx-spelled flags: what each sets in the spec, and what is refused.

use clap::Parser;

use super::*;
use crate::api::ImageBuildSpec;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    buildx: BuildxArgs,
}

fn applied(argv: &[&str]) -> Result<ImageBuildSpec, BadInput> {
    let cli = Cli::try_parse_from(std::iter::once("hearth").chain(argv.iter().copied()))
        .expect("flags parse");
    let mut spec = ImageBuildSpec::default();
    apply(&cli.buildx, &mut spec).map(|()| spec)
}

#[test]
fn annotations_attestations_and_caches_land_in_the_spec() {
    let s = applied(&[
        "--annotation",
        "org.opencontainers.image.source=https://github.com/acme/shop",
        "--annotation",
        "index:org.opencontainers.image.description=a=b",
        "--sbom",
        "--provenance=mode=max",
        "--cache-from",
        "type=registry,ref=r.io/shop/api:cache",
        "--cache-from",
        "r.io/shop/api:main-cache",
        "--cache-to",
        "type=registry,ref=r.io/shop/api:cache,mode=max",
        "--add-host",
        "pypi.internal:10.0.0.7",
        "--add-host",
        "v6:fd00::1",
        "--shm-size",
        "2g",
        "--ulimit",
        "nofile=1024:2048",
        "--ulimit",
        "nproc=512",
    ])
    .unwrap();
    assert_eq!(
        s.output.annotations["org.opencontainers.image.source"],
        "https://github.com/acme/shop"
    );
    assert_eq!(
        s.output.annotations["index:org.opencontainers.image.description"],
        "a=b"
    );
    assert!(s.output.attestations.sbom);
    assert_eq!(s.output.attestations.provenance.mode, ProvenanceMode::Max);
    let registry = s.cache.registry.unwrap();
    assert_eq!(
        registry.import_from,
        ["r.io/shop/api:cache", "r.io/shop/api:main-cache"]
    );
    let export = registry.export_to.unwrap();
    assert_eq!(
        (export.reference.as_str(), export.mode),
        ("r.io/shop/api:cache", ExportMode::Max)
    );
    assert_eq!(
        s.frontend_options["add-hosts"],
        "pypi.internal=10.0.0.7,v6=fd00::1"
    );
    assert_eq!(s.frontend_options["shm-size"], "2147483648");
    assert_eq!(s.frontend_options["ulimit"], "nofile=1024:2048,nproc=512");
}

#[test]
fn attestations_switch_off_as_in_buildx() {
    let s = applied(&["--provenance=false", "--sbom=false"]).unwrap();
    assert_eq!(
        s.output.attestations.provenance.mode,
        ProvenanceMode::Disabled
    );
    assert!(!s.output.attestations.sbom);
    let s = applied(&["--attest", "type=provenance,disabled=true"]).unwrap();
    assert_eq!(
        s.output.attestations.provenance.mode,
        ProvenanceMode::Disabled
    );
    let s = applied(&["--attest", "type=sbom"]).unwrap();
    assert!(s.output.attestations.sbom);
    // Nothing given: buildx's defaults, as the API's.
    let s = applied(&[]).unwrap();
    assert_eq!(s.output.attestations.provenance.mode, ProvenanceMode::Min);
    assert!(s.cache.registry.is_none() && s.frontend_options.is_empty());
}

#[test]
fn the_attestation_shorthands_take_their_value_after_an_equals_sign_only() {
    // As buildx: `--sbom DIR` must not read DIR as the flag's value.
    assert!(Cli::try_parse_from(["hearth", "--sbom", "true"]).is_err());
    let s = applied(&["--sbom", "--provenance"]).unwrap();
    assert!(s.output.attestations.sbom);
    assert_eq!(s.output.attestations.provenance.mode, ProvenanceMode::Min);
}

#[test]
fn what_hearth_does_not_take_is_refused_naming_the_flag() {
    for (argv, flag, says) in [
        (
            vec!["--cache-from", "type=gha"],
            "--cache-from",
            "only type=registry",
        ),
        (
            vec!["--cache-to", "type=registry,ref=r.io/a:c,compression=zstd"],
            "--cache-to",
            "compression=zstd is not supported",
        ),
        (
            vec!["--cache-from", "type=registry,ref=r.io/a:c,mode=max"],
            "--cache-from",
            "mode=max is not supported",
        ),
        (vec!["--cache-to", "type=registry"], "--cache-to", "no ref="),
        (
            vec!["--attest", "type=sbom,generator=x/y"],
            "--attest",
            "generator is not supported",
        ),
        (
            vec!["--attest", "type=vex"],
            "--attest",
            "is not provenance or sbom",
        ),
        (vec!["--sbom=yes"], "--sbom", "is not true or false"),
        (
            vec!["--provenance=mode=full"],
            "--provenance",
            "is not min or max",
        ),
        (vec!["--annotation", "novalue"], "--annotation", "KEY=VALUE"),
        (vec!["--add-host", "nohost"], "--add-host", "HOST:IP"),
        (vec!["--shm-size", "2 tb"], "--shm-size", "512m or 2g"),
    ] {
        let err = applied(&argv).unwrap_err();
        assert_eq!(err.flag, flag, "{argv:?}");
        assert!(err.message.contains(says), "{argv:?}: {err}");
    }
}
