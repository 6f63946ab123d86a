//! The Grafana dashboards (`charts/hearth/dashboards/*.json`) and the alert rules
//! (`config/prometheus/hearth-rules.yaml`, the chart's PrometheusRule as rendered by
//! `.ci/test-chart --update`) query only what the controller exposes: every expression parses
//! as PromQL, and every metric it names is in `Metrics::default().exposed_names()`, so renaming
//! a metric in `src/controller/metrics.rs` breaks this test until the queries follow.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use hearth::controller::metrics::Metrics;
use promql_parser::label::MatchOp;
use promql_parser::parser::{self, Expr, VectorSelector};
use promql_parser::util::{walk_expr, ExprVisitor};

/// Series that are not Hearth's but that queries may name: Prometheus's own scrape health.
const OTHER_SERIES: &[&str] = &["up"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every vector selector of an expression, those inside range selectors included.
#[derive(Default)]
struct Selectors(Vec<VectorSelector>);

impl ExprVisitor for Selectors {
    type Error = std::convert::Infallible;

    fn pre_visit(&mut self, expr: &Expr) -> Result<bool, Self::Error> {
        match expr {
            Expr::VectorSelector(vs) => self.0.push(vs.clone()),
            Expr::MatrixSelector(ms) => self.0.push(ms.vs.clone()),
            _ => {}
        }
        Ok(true)
    }
}

/// A query to check: where it comes from and its PromQL.
struct Query {
    origin: String,
    promql: String,
    /// Whether each selector must name the job (all but the query that lists the jobs).
    by_job: bool,
}

/// The selectors of a query, or why it does not parse.
fn selectors(query: &Query) -> Result<Vec<VectorSelector>, String> {
    let expr = parser::parse(&query.promql)
        .map_err(|e| format!("{}: does not parse: {e}\n  {}", query.origin, query.promql))?;
    let mut found = Selectors::default();
    let Ok(_) = walk_expr(&mut found, &expr);
    Ok(found.0)
}

/// The metric a selector names (`name{...}` or `{__name__="name"}`).
fn metric_name(vs: &VectorSelector) -> Option<String> {
    vs.name.clone().or_else(|| {
        vs.matchers
            .matchers
            .iter()
            .find(|m| m.name == "__name__" && m.op == MatchOp::Equal)
            .map(|m| m.value.clone())
    })
}

/// Grafana's variables replaced by values of the right kind, so the query is plain PromQL.
/// An unknown variable is an error: the dashboard would send it to Prometheus unreplaced.
fn grafana_to_promql(origin: &str, text: &str) -> Result<String, String> {
    let var = regex::Regex::new(r"\$\{?(\w+)(?::\w+)?\}?").expect("valid regex");
    let mut unknown = Vec::new();
    let out = var.replace_all(text, |c: &regex::Captures<'_>| match &c[1] {
        "__rate_interval" | "__interval" | "__range" | "window" => "5m".to_string(),
        "job" | "namespace" => "value".to_string(),
        other => {
            unknown.push(other.to_string());
            String::new()
        }
    });
    if unknown.is_empty() {
        Ok(out.into_owned())
    } else {
        Err(format!(
            "{origin}: unknown Grafana variables {unknown:?} in {text}"
        ))
    }
}

fn dashboard_files() -> Vec<PathBuf> {
    let dir = root().join("charts/hearth/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no dashboards in {}", dir.display());
    files
}

fn collect_panel_queries(file: &str, panels: &[serde_json::Value], out: &mut Vec<Query>) {
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("?");
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().unwrap_or_else(|| {
                panic!("{file}: panel {title:?} has a target without expr: {target}")
            });
            out.push(Query {
                origin: format!("{file}: panel {title:?} ({})", target["refId"]),
                promql: expr.to_string(),
                by_job: true,
            });
        }
        if let Some(inner) = panel["panels"].as_array() {
            collect_panel_queries(file, inner, out);
        }
    }
}

/// Every query of a dashboard: the panels' targets and the query variables' selectors
/// (`label_values(SELECTOR, label)`), Grafana's variables replaced.
fn dashboard_queries(path: &Path) -> Result<Vec<Query>, String> {
    let file = path.file_name().expect("file name").to_string_lossy();
    let text = std::fs::read_to_string(path).map_err(|e| format!("{file}: {e}"))?;
    let dash: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{file}: not JSON: {e}"))?;
    let mut raw = Vec::new();
    collect_panel_queries(
        &file,
        dash["panels"].as_array().unwrap_or(&Vec::new()),
        &mut raw,
    );
    let label_values = regex::Regex::new(r"^label_values\((.+),\s*\w+\)$").expect("valid regex");
    for var in dash["templating"]["list"].as_array().into_iter().flatten() {
        if var["type"] != "query" {
            continue;
        }
        let name = var["name"].as_str().unwrap_or("?");
        let q = var["query"]["query"]
            .as_str()
            .or(var["query"].as_str())
            .unwrap_or_default();
        let selector = label_values.captures(q).ok_or_else(|| {
            format!("{file}: variable {name}: expected label_values(SELECTOR, label), got {q:?}")
        })?;
        raw.push(Query {
            origin: format!("{file}: variable {name}"),
            promql: selector[1].to_string(),
            by_job: name != "job",
        });
    }
    raw.into_iter()
        .map(|q| {
            Ok(Query {
                promql: grafana_to_promql(&q.origin, &q.promql)?,
                ..q
            })
        })
        .collect()
}

/// The `expr` of every rule in the plain rules file.
fn rule_queries() -> Vec<Query> {
    let path = root().join("config/prometheus/hearth-rules.yaml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let rules: serde_yaml::Value = serde_yaml::from_str(&text).expect("rules file is YAML");
    let mut out = Vec::new();
    for group in rules["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"]
                .as_str()
                .or(rule["record"].as_str())
                .unwrap_or("?");
            out.push(Query {
                origin: format!("hearth-rules.yaml: {name}"),
                promql: rule["expr"].as_str().expect("expr").to_string(),
                by_job: true,
            });
        }
    }
    assert!(!out.is_empty(), "no rules in {}", path.display());
    out
}

/// Problems with these queries: parse errors, metrics the controller does not expose,
/// selectors without a `job` matcher. Also returns the metric names used.
fn check(queries: &[Query], known: &BTreeSet<String>) -> (Vec<String>, BTreeSet<String>) {
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for query in queries {
        let selectors = match selectors(query) {
            Ok(s) => s,
            Err(e) => {
                problems.push(e);
                continue;
            }
        };
        for vs in selectors {
            let Some(name) = metric_name(&vs) else {
                problems.push(format!(
                    "{}: a selector without a metric name",
                    query.origin
                ));
                continue;
            };
            if !known.contains(&name) && !OTHER_SERIES.contains(&name.as_str()) {
                problems.push(format!(
                    "{}: {name} is not a metric the controller exposes",
                    query.origin
                ));
            }
            if query.by_job && !vs.matchers.matchers.iter().any(|m| m.name == "job") {
                problems.push(format!(
                    "{}: {name} without a job matcher (another exporter's series would count)",
                    query.origin
                ));
            }
            used.insert(name);
        }
    }
    (problems, used)
}

fn exposed() -> BTreeSet<String> {
    Metrics::default().exposed_names().into_iter().collect()
}

#[test]
fn dashboard_queries_parse_and_name_only_exposed_metrics() {
    let known = exposed();
    let mut problems = Vec::new();
    let mut used = BTreeSet::new();
    for path in dashboard_files() {
        match dashboard_queries(&path) {
            Ok(queries) => {
                let (p, u) = check(&queries, &known);
                problems.extend(p);
                used.extend(u);
            }
            Err(e) => problems.push(e),
        }
    }
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    // Every family shows somewhere (a histogram through its buckets, a counter by its _total).
    let unshown: Vec<&String> = known
        .iter()
        .filter(|n| !n.ends_with("_sum") && !n.ends_with("_count"))
        .filter(|n| !used.contains(*n))
        .collect();
    assert!(
        unshown.is_empty(),
        "metrics on no dashboard panel: {unshown:?}"
    );
}

#[test]
fn alert_rules_parse_and_name_only_exposed_metrics() {
    let (problems, used) = check(&rule_queries(), &exposed());
    assert!(problems.is_empty(), "\n{}", problems.join("\n"));
    assert!(
        used.contains("up"),
        "the controller-down alert watches up: {used:?}"
    );
}

#[test]
fn a_renamed_or_misspelled_metric_is_caught() {
    let known = exposed();
    let query = |promql: &str| Query {
        origin: "test".into(),
        promql: promql.into(),
        by_job: true,
    };
    let (problems, _) = check(
        &[query(r#"sum(rate(hearth_build_total{job="x"}[5m]))"#)],
        &known,
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("hearth_build_total is not")),
        "{problems:?}"
    );
    let (problems, _) = check(&[query("max(hearth_leader)")], &known);
    assert!(
        problems.iter().any(|p| p.contains("without a job matcher")),
        "{problems:?}"
    );
    let (problems, _) = check(&[query("rate(hearth_builds_total{job=\"x\"}[5m]")], &known);
    assert!(
        problems.iter().any(|p| p.contains("does not parse")),
        "{problems:?}"
    );
    assert!(grafana_to_promql("test", "rate(x[$__rate_interval])").is_ok());
    assert!(grafana_to_promql("test", "rate(x{a=\"$nope\"}[5m])").is_err());
}
