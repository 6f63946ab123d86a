//! The rendered `buildkitd.toml` (exactly), and bad settings refused naming the field.

use super::*;

const PEM: &str =
    "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUQ==\n-----END CERTIFICATE-----\n";

fn settings(yaml: &str) -> BuildkitdSettings {
    serde_yaml::from_str(yaml).expect("settings")
}

#[test]
fn registries_render_as_buildkits_registry_tables() {
    let s = settings(&format!(
        r#"
registries:
  - host: docker.io
    mirrors: [mirror.corp:5000, mirror.gcr.io]
  - host: registry.registry.svc:5000
    http: true
  - host: registry.internal
    insecure: true
    ca: {PEM:?}
"#
    ));
    assert_eq!(s.check(), Ok(()));
    let rendered = s.render("/tmp/hearth/buildkitd").expect("rendered");
    assert_eq!(rendered.config.path, "/tmp/hearth/buildkitd/buildkitd.toml");
    assert_eq!(
        rendered.config.content,
        r#"# Rendered by Hearth from its operator config (buildkitd.registries).

[registry."docker.io"]
  mirrors = ["mirror.corp:5000", "mirror.gcr.io"]

[registry."registry.registry.svc:5000"]
  http = true

[registry."registry.internal"]
  insecure = true
  ca = ["/tmp/hearth/buildkitd/ca-2.pem"]
"#
    );
    assert_eq!(
        rendered.cas,
        [(
            2,
            RenderedFile {
                path: "/tmp/hearth/buildkitd/ca-2.pem".into(),
                content: PEM.into()
            }
        )]
    );
    assert_eq!(BuildkitdSettings::default().render("/x"), None);
}

#[test]
fn toml_strings_are_escaped() {
    assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    assert_eq!(quote("a\nb"), r#""a\u000Ab""#);
}

#[test]
fn bad_settings_name_the_field() {
    let big = format!("{PEM}{}", "x".repeat(MAX_CA_BYTES));
    let many: Vec<String> = (0..=MAX_REGISTRIES)
        .map(|i| format!("- host: r{i}.example.com"))
        .collect();
    for (yaml, says) in [
        ("registries: [{host: 'https://docker.io'}]", "registries[0].host: expected a registry host[:port]"),
        ("registries: [{host: ''}]", "registries[0].host"),
        ("registries: [{host: 'r:port'}]", "registries[0].host"),
        ("registries: [{host: r.io}, {host: r.io}]", "registries[1].host: \"r.io\" is configured twice"),
        ("registries: [{host: r.io, mirrors: ['http://m.io']}]", "registries[0] (r.io).mirrors: expected host[:port][/path] without a scheme, got \"http://m.io\""),
        ("registries: [{host: r.io, mirrors: ['m.io/a b']}]", "registries[0] (r.io).mirrors"),
        ("registries: [{host: r.io, ca: 'not a pem'}]", "registries[0] (r.io).ca: expected PEM certificates"),
    ] {
        let err = settings(yaml).check().unwrap_err();
        assert!(err.contains(says), "{yaml}: {err}");
    }
    let err = settings(&format!("registries: [{{host: r.io, ca: {big:?}}}]"))
        .check()
        .unwrap_err();
    assert!(
        err.contains("registries[0] (r.io).ca: at most 65536 bytes"),
        "{err}"
    );
    let err = settings(&format!("registries:\n{}", many.join("\n")))
        .check()
        .unwrap_err();
    assert!(err.contains("at most 64 registries"), "{err}");
    for host in [
        "docker.io",
        "registry.internal:5000",
        "10.0.0.7:5000",
        "[fd00::1]:5000",
        "localhost",
    ] {
        assert!(is_host(host), "{host}");
    }
}
