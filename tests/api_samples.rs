//! Every sample under `config/samples/` is accepted; every file under
//! `config/samples/invalid/` is refused for the reason its header states; every CEL rule of
//! the CRDs is exercised by at least one invalid sample.

use std::path::{Path, PathBuf};

use hearth::api::check::{all_crds, check, rule_messages, schema_of};
use hearth::cli::parse_documents;

fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

fn samples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config/samples")
}

#[test]
fn valid_samples_are_accepted_and_deserialize() {
    let files = yaml_files(&samples_dir());
    assert!(
        files.len() >= 3,
        "expected the minimal, full and BuildCache samples"
    );
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read sample");
        for doc in parse_documents(&text).expect("parse sample") {
            let violations = check(&doc, None).expect("known kind");
            assert!(violations.is_empty(), "{}: {violations:?}", file.display());
            match doc["kind"].as_str() {
                Some("ImageBuild") => {
                    serde_json::from_value::<hearth::api::ImageBuild>(doc)
                        .expect("ImageBuild deserializes");
                }
                Some("BuildCache") => {
                    serde_json::from_value::<hearth::api::BuildCache>(doc)
                        .expect("BuildCache deserializes");
                }
                other => panic!("{}: unexpected kind {other:?}", file.display()),
            }
        }
    }
}

struct Expectation {
    file: PathBuf,
    field: String,
    message: String,
    update: bool,
}

fn header(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|l| {
        l.strip_prefix(&format!("# {key}:"))
            .map(|v| v.trim().to_string())
    })
}

fn invalid_samples() -> Vec<(Expectation, Vec<serde_json::Value>)> {
    yaml_files(&samples_dir().join("invalid"))
        .into_iter()
        .map(|file| {
            let text = std::fs::read_to_string(&file).expect("read sample");
            let expectation = Expectation {
                field: header(&text, "expect-field")
                    .unwrap_or_else(|| panic!("{}: no '# expect-field:'", file.display())),
                message: header(&text, "expect")
                    .unwrap_or_else(|| panic!("{}: no '# expect:'", file.display())),
                update: header(&text, "update").is_some(),
                file,
            };
            assert!(
                header(&text, "reason").is_some(),
                "{}: no '# reason:'",
                expectation.file.display()
            );
            (expectation, parse_documents(&text).expect("parse sample"))
        })
        .collect()
}

#[test]
fn each_invalid_sample_is_refused_for_its_stated_reason() {
    let samples = invalid_samples();
    assert!(
        samples.len() >= 30,
        "found only {} invalid samples",
        samples.len()
    );
    for (exp, docs) in samples {
        let violations = if exp.update {
            assert_eq!(
                docs.len(),
                2,
                "{}: an update sample holds the stored object then the update",
                exp.file.display()
            );
            // The stored object itself must be valid, so the refusal comes from the transition.
            assert!(
                check(&docs[0], None).expect("kind").is_empty(),
                "{}: stored object invalid",
                exp.file.display()
            );
            assert!(
                check(&docs[1], None).expect("kind").is_empty(),
                "{}: update invalid even as a create",
                exp.file.display()
            );
            check(&docs[1], Some(&docs[0])).expect("kind")
        } else {
            assert_eq!(
                docs.len(),
                1,
                "{}: one object per invalid sample",
                exp.file.display()
            );
            check(&docs[0], None).expect("kind")
        };
        assert!(
            violations
                .iter()
                .any(|v| v.field == exp.field && v.message.contains(&exp.message)),
            "{}: expected {}: {:?}, got {violations:#?}",
            exp.file.display(),
            exp.field,
            exp.message
        );
    }
}

#[test]
fn every_cel_rule_has_an_invalid_sample() {
    let samples = invalid_samples();
    for crd in all_crds() {
        for message in rule_messages(&schema_of(&crd)) {
            assert!(
                samples
                    .iter()
                    .any(|(exp, _)| message.contains(&exp.message)),
                "{}: no invalid sample exercises the rule {message:?}",
                crd.spec.names.kind
            );
        }
    }
}
