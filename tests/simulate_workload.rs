//! Workload parsing: every built-in parses; bad input is an error that names the line and the
//! field, and nothing is returned from a half-read file.

use hearth::simulate::builtin::BUILTINS;
use hearth::simulate::{parse, WorkloadError};

const CLUSTER: &str = r#"{"kind":"cluster","nodes":[{"name":"n1","zone":"a","builders":2,"cacheBudgetBytes":200e9}],"storeBytesPerSecond":250e6,"restoreOverheadSeconds":8}"#;
const BUILD: &str = r#"{"kind":"build","at":12.5,"namespace":"shop","key":"shop:feature-x","restoreKeys":["shop:main"],"mode":"ReadWrite","coldSeconds":600,"warmSeconds":40,"cacheBytes":8e9}"#;

fn with(lines: &[&str]) -> String {
    let mut text = format!("# a comment\n{CLUSTER}\n\n");
    for l in lines {
        text.push_str(l);
        text.push('\n');
    }
    text
}

fn field_error(text: &str) -> (usize, String, String) {
    match parse(text) {
        Err(WorkloadError::Field {
            line,
            field,
            problem,
        }) => (line, field, problem),
        other => panic!("expected a field error, got {other:?}"),
    }
}

#[test]
fn the_issue_example_parses() {
    let w = parse(&with(&[
        BUILD,
        r#"{"kind":"node-down","at":3600,"node":"n1"}"#,
        r#"{"kind":"node-up","at":5400,"node":"n1"}"#,
    ]))
    .expect("valid");
    assert_eq!(w.cluster.nodes.len(), 1);
    assert_eq!(w.cluster.nodes[0].cache_budget_bytes, 200_000_000_000);
    assert_eq!(w.builds.len(), 1);
    assert_eq!(w.builds[0].restore_keys, vec!["shop:main".to_string()]);
    assert_eq!(w.builds[0].fallback(), 40.0 + 0.3 * 560.0);
    assert_eq!(w.node_events.len(), 2);
    assert!(w.node_events[1].up && !w.node_events[0].up);
}

#[test]
fn every_builtin_parses() {
    for b in BUILTINS {
        let w = parse(b.text).unwrap_or_else(|e| panic!("{}: {e}", b.name));
        assert!(
            w.builds.len() > 1000,
            "{} is too small to say anything",
            b.name
        );
    }
}

#[test]
fn unknown_kind_names_line_and_field() {
    let (line, field, problem) = field_error(&with(&[BUILD, r#"{"kind":"rebuild","at":1}"#]));
    assert_eq!((line, field.as_str()), (5, "kind"));
    assert!(problem.contains("rebuild"), "{problem}");
}

#[test]
fn missing_field_names_line_and_field() {
    let no_key = BUILD.replace(r#""key":"shop:feature-x","#, "");
    assert_eq!(
        field_error(&with(&[&no_key])),
        (4, "key".to_string(), "missing".to_string())
    );
    let no_cold = BUILD.replace(r#""coldSeconds":600,"#, "");
    assert_eq!(field_error(&with(&[BUILD, &no_cold])).0, 5);
    let no_builders = CLUSTER.replace(r#""builders":2,"#, "");
    assert_eq!(field_error(&no_builders).1, "nodes[0].builders");
}

#[test]
fn negative_time_names_line_and_field() {
    let early = BUILD.replace(r#""at":12.5"#, r#""at":-1"#);
    let (line, field, problem) = field_error(&with(&[BUILD, BUILD, &early]));
    assert_eq!((line, field.as_str()), (6, "at"));
    assert!(problem.contains("negative"), "{problem}");
}

#[test]
fn unknown_node_names_line_and_field() {
    let (line, field, problem) = field_error(&with(&[
        BUILD,
        r#"{"kind":"node-down","at":10,"node":"n9"}"#,
    ]));
    assert_eq!((line, field.as_str()), (5, "node"));
    assert!(problem.contains("n9"), "{problem}");
}

#[test]
fn other_bad_values_are_refused() {
    let cases = [
        (BUILD.replace("ReadWrite", "Sometimes"), "mode"),
        (
            BUILD.replace(r#""warmSeconds":40"#, r#""warmSeconds":4000"#),
            "warmSeconds",
        ),
        (BUILD.replace(r#"["shop:main"]"#, "[3]"), "restoreKeys[0]"),
        (
            BUILD.replace(r#""cacheBytes":8e9"#, r#""cacheBytes":"big""#),
            "cacheBytes",
        ),
    ];
    for (line, field) in cases {
        assert_eq!(field_error(&with(&[&line])).1, field, "{line}");
    }
    let twice = CLUSTER.replace(
        r#"}],"#,
        r#"},{"name":"n1","builders":1,"cacheBudgetBytes":1}],"#,
    );
    assert_eq!(field_error(&twice).1, "nodes[1].name");
}

#[test]
fn structure_errors() {
    assert!(matches!(
        parse(&format!("{BUILD}\n{CLUSTER}")),
        Err(WorkloadError::NoCluster { line: 1 })
    ));
    assert!(matches!(parse("# nothing\n"), Err(WorkloadError::Empty)));
    assert!(matches!(
        parse(&with(&[BUILD, "{not json"])),
        Err(WorkloadError::Syntax { line: 5, .. })
    ));
    assert!(matches!(
        parse(&with(&["[1,2]"])),
        Err(WorkloadError::Syntax { line: 4, .. })
    ));
    assert_eq!(field_error(&with(&[CLUSTER])).1, "kind");
}

#[test]
fn an_error_late_in_the_file_returns_nothing() {
    let mut lines = vec![BUILD; 500];
    lines.push(r#"{"kind":"node-up","at":1,"node":"nowhere"}"#);
    assert!(parse(&with(&lines)).is_err());
}

#[test]
fn absurd_times_are_refused_naming_the_field() {
    for (field, from, to) in [
        ("at", r#""at":12.5"#, r#""at":1e300"#),
        (
            "coldSeconds",
            r#""coldSeconds":600"#,
            r#""coldSeconds":1e300"#,
        ),
    ] {
        let (line, got, problem) = field_error(&with(&[&BUILD.replace(from, to)]));
        assert_eq!((line, got.as_str()), (4, field));
        assert!(problem.contains("at most 1e9 seconds"), "{problem}");
    }
}

#[test]
fn a_byte_order_mark_is_skipped() {
    let text = format!("\u{feff}{}", with(&[BUILD]));
    assert_eq!(parse(&text).expect("a workload with a BOM").builds.len(), 1);
}
