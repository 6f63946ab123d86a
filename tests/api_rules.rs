//! The rules accept what they should: updates that are allowed, every image reference form
//! users write, and defaults filled in the way the API server fills them.

use hearth::api::check::check;
use hearth::api::{CacheMode, ImageBuild};
use serde_json::{json, Value};

fn build(spec: Value, status: Option<Value>) -> Value {
    let mut obj = json!({
        "apiVersion": "hearth.dev/v1alpha1",
        "kind": "ImageBuild",
        "metadata": {"name": "b", "namespace": "shop"},
        "spec": spec,
    });
    if let Some(status) = status {
        obj["status"] = status;
    }
    obj
}

fn spec_with_image(image: &str) -> Value {
    json!({"source": {"git": {"url": "https://github.com/acme/shop"}}, "output": {"image": image}})
}

fn violations(obj: &Value, old: Option<&Value>) -> Vec<String> {
    check(obj, old)
        .expect("known kind")
        .into_iter()
        .map(|v| v.to_string())
        .collect()
}

#[test]
fn image_references_users_write_are_accepted() {
    for image in [
        "registry.example.com/shop/api:main",
        "ghcr.io/acme/shop",
        "localhost:5000/app:dev",
        "registry:5000/team/app:v1.2.3",
        "123456789012.dkr.ecr.eu-west-1.amazonaws.com/shop/api:sha-3f2c1e9",
        "quay.io/acme/my_app__x/a-b--c:latest",
    ] {
        let v = violations(&build(spec_with_image(image), None), None);
        assert!(v.is_empty(), "{image}: {v:?}");
    }
    for image in [
        "api",
        "shop/api:latest",
        "registry.example.com/",
        "registry.example.com/a:tag with space",
    ] {
        let v = violations(&build(spec_with_image(image), None), None);
        assert!(
            v.iter().any(|m| m.starts_with("spec.output.image")),
            "{image} should be refused: {v:?}"
        );
    }
}

#[test]
fn spec_may_change_while_pending_and_cancel_may_be_set_any_time() {
    let old_spec = spec_with_image("registry.example.com/shop/api:1");
    let new_spec = spec_with_image("registry.example.com/shop/api:2");
    // No status yet, or Pending: any change is fine.
    for status in [None, Some(json!({"phase": "Pending"}))] {
        let old = build(old_spec.clone(), status.clone());
        let new = build(new_spec.clone(), status);
        assert!(violations(&new, Some(&old)).is_empty());
    }
    // Building: only cancel may change.
    let building = Some(json!({"phase": "Building"}));
    let old = build(old_spec.clone(), building.clone());
    let mut cancelled = old_spec.clone();
    cancelled["cancel"] = json!(true);
    assert!(violations(&build(cancelled, building.clone()), Some(&old)).is_empty());
    let v = violations(&build(new_spec, building.clone()), Some(&old));
    assert!(
        v.iter()
            .any(|m| m.starts_with("spec: immutable once the build has started")),
        "{v:?}"
    );
    // Adding an optional field is a change too.
    let mut with_target = old_spec.clone();
    with_target["target"] = json!("prod");
    let v = violations(&build(with_target, building.clone()), Some(&old));
    assert!(v.iter().any(|m| m.starts_with("spec: immutable")), "{v:?}");
    // Status-only updates (the controller's) pass.
    let done = build(old_spec, Some(json!({"phase": "Succeeded"})));
    assert!(violations(&done, Some(&old)).is_empty());
}

#[test]
fn defaults_are_filled_as_the_api_server_would() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/samples/imagebuild-minimal.yaml"
    ))
    .expect("minimal sample");
    let doc = hearth::cli::parse_documents(&text).expect("yaml").remove(0);
    let ib: ImageBuild = serde_json::from_value(doc).expect("deserialize");
    assert_eq!(ib.spec.dockerfile, "Dockerfile");
    assert_eq!(ib.spec.cache.mode, CacheMode::ReadWrite);
    assert!(ib.spec.output.push);
    assert_eq!(
        std::time::Duration::from(ib.spec.timeout),
        std::time::Duration::from_secs(3600)
    );
    assert_eq!(
        hearth::api::keys::cache_key(&ib.spec, "amd64"),
        "github.com/acme/shop:Dockerfile@amd64"
    );
}

#[test]
fn unknown_kinds_are_named() {
    let err =
        check(&json!({"apiVersion": "v1", "kind": "Pod"}), None).expect_err("not a Hearth kind");
    assert!(err.to_string().contains("v1/Pod"), "{err}");
}

#[test]
fn several_platforms_are_built_natively_unless_emulated_and_the_mode_is_immutable_once_started() {
    let platforms = |list: Value, mode: Option<&str>| {
        let mut spec = spec_with_image("registry.example.com/shop/api:1");
        spec["platforms"] = list;
        if let Some(mode) = mode {
            spec["platformMode"] = json!(mode);
        }
        spec
    };
    let two = json!(["linux/amd64", "linux/arm64"]);
    // Several platforms without a mode are built natively: accepted, as with Native or Emulate.
    for mode in [None, Some("Native"), Some("Emulate")] {
        let v = violations(&build(platforms(two.clone(), mode), None), None);
        assert!(v.is_empty(), "{mode:?}: {v:?}");
    }
    // Two platforms of one architecture cannot each have their own: refused natively only.
    let same = json!(["linux/arm/v6", "linux/arm/v7"]);
    for mode in [None, Some("Native")] {
        let v = violations(&build(platforms(same.clone(), mode), None), None);
        assert!(
            v.iter().any(|m| m.starts_with(
                "spec.platforms: with platformMode Native (the default) each platform is built on nodes of its own architecture"
            )),
            "{mode:?}: {v:?}"
        );
    }
    assert!(violations(&build(platforms(same, Some("Emulate")), None), None).is_empty());
    // A cacheRef (one BuildCache, one architecture's key) only with one platform or Emulate.
    let mut with_ref = platforms(two.clone(), None);
    with_ref["cache"] = json!({"cacheRef": "shop-main"});
    let v = violations(&build(with_ref.clone(), None), None);
    assert!(
        v.iter()
            .any(|m| m.starts_with("spec.cache.cacheRef: names one BuildCache")),
        "{v:?}"
    );
    with_ref["platformMode"] = json!("Emulate");
    assert!(violations(&build(with_ref, None), None).is_empty());
    // One platform, or none, needs no mode.
    let mut one = spec_with_image("registry.example.com/shop/api:1");
    one["platforms"] = json!(["linux/arm64"]);
    assert!(violations(&build(one, None), None).is_empty());
    // Dropping the mode of a started build is a change to its spec.
    let building = Some(json!({"phase": "Building"}));
    let emulated = platforms(json!(["linux/amd64"]), Some("Emulate"));
    let old = build(emulated.clone(), building.clone());
    let mut dropped = emulated;
    dropped.as_object_mut().unwrap().remove("platformMode");
    let v = violations(&build(dropped, building), Some(&old));
    assert!(v.iter().any(|m| m.starts_with("spec: immutable")), "{v:?}");
}

#[test]
fn pushing_by_digest_pushes_no_name() {
    let mut spec = spec_with_image("registry.example.com/shop/api");
    spec["output"]["pushByDigest"] = json!(true);
    assert!(violations(&build(spec.clone(), None), None).is_empty());
    for (field, value) in [("tags", json!(["1"])), ("push", json!(false))] {
        let mut bad = spec.clone();
        bad["output"][field] = value;
        let v = violations(&build(bad, None), None);
        assert!(
            v.iter()
                .any(|m| m.starts_with("spec.output.pushByDigest: pushes the image by digest only")),
            "{field}: {v:?}"
        );
    }
}

#[test]
fn output_cache_registry_and_frontend_options_are_immutable_once_started() {
    let old_spec = spec_with_image("registry.example.com/shop/api:1");
    let building = Some(json!({"phase": "Building"}));
    let old = build(old_spec.clone(), building.clone());
    let changes = [
        ("/output/tags", json!(["latest"])),
        ("/output/attestations", json!({"sbom": true})),
        (
            "/cache/registry",
            json!({"importFrom": ["registry.example.com/shop/api:cache"]}),
        ),
        ("/frontendOptions", json!({"shm-size": "1024"})),
    ];
    for (path, value) in changes {
        let mut spec = old_spec.clone();
        let (parent, field) = path.rsplit_once('/').unwrap();
        if spec.pointer(parent).is_none() {
            spec[&parent[1..]] = json!({});
        }
        spec.pointer_mut(parent).unwrap()[field] = value;
        let v = violations(&build(spec, building.clone()), Some(&old));
        assert!(
            v.iter().any(|m| m.starts_with("spec: immutable")),
            "{path}: {v:?}"
        );
    }
}

#[test]
fn untrusted_builds_may_import_a_registry_cache() {
    let mut spec = spec_with_image("registry.example.com/shop/api:1");
    spec["cache"] = json!({"mode": "ReadOnly", "registry": {"importFrom": ["registry.example.com/shop/api:cache"]}});
    assert!(violations(&build(spec, None), None).is_empty());
}

#[test]
fn retention_may_change_after_the_build_ended() {
    let spec = spec_with_image("registry.example.com/shop/api:1");
    let ended = Some(json!({"phase": "Succeeded"}));
    let old = build(spec.clone(), ended.clone());
    let mut kept = spec.clone();
    kept["retention"] = json!({"ttlAfterSucceeded": "720h"});
    let v = violations(&build(kept.clone(), ended.clone()), Some(&old));
    assert!(v.is_empty(), "{v:?}");
    // And back again, or removed.
    assert!(violations(&build(spec, ended.clone()), Some(&build(kept, ended))).is_empty());
}

#[test]
fn a_dockerfile_path_leaves_the_context_only_by_leading_dotdots_and_only_from_a_repository_or_volume(
) {
    let git = |dockerfile: &str| {
        build(
            json!({"source": {"git": {"url": "https://github.com/acme/shop", "subPath": "svc/api"}},
                   "dockerfile": dockerfile, "output": {"image": "r.io/a/b"}}),
            None,
        )
    };
    for ok in [
        "Dockerfile",
        "./docker/Dockerfile",
        "../Dockerfile",
        "../../docker/.api/Dockerfile",
        "..hidden/Dockerfile",
        "docker/..Dockerfile",
        "a//Dockerfile",
    ] {
        assert_eq!(violations(&git(ok), None), Vec::<String>::new(), "{ok}");
    }
    for refused in [
        "/Dockerfile",
        "docker/../Dockerfile",
        "../a/../../Dockerfile",
        "..",
        "../..",
        "docker/..",
    ] {
        let v = violations(&git(refused), None);
        assert!(
            v.len() == 1 && v[0].starts_with("spec.dockerfile: must be a relative path"),
            "{refused}: {v:?}"
        );
    }
    // Without a subdirectory (or with an upload or a tarball) there is nothing outside.
    let root = build(
        json!({"source": {"git": {"url": "https://github.com/acme/shop"}},
               "dockerfile": "../Dockerfile", "output": {"image": "r.io/a/b"}}),
        None,
    );
    let v = violations(&root, None);
    assert!(
        v.len() == 1 && v[0].starts_with("spec.dockerfile: a Dockerfile outside the context"),
        "{v:?}"
    );
    let pvc = build(
        json!({"source": {"context": {"pvc": {"claimName": "src", "path": "app"}}},
               "dockerfile": "../Dockerfile", "output": {"image": "r.io/a/b"}}),
        None,
    );
    assert_eq!(violations(&pvc, None), Vec::<String>::new());
}
