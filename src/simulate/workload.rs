//! Workloads: JSON Lines of `cluster`, `build`, `node-down` and `node-up` records (see
//! `docs/simulate.md`), parsed whole before anything is simulated. Every error names the line
//! and the field; blank lines and lines starting with `#` are skipped; unknown fields are
//! allowed so that users can keep their own columns.

use std::collections::HashMap;

use serde_json::{Map, Value};

use crate::api::CacheMode;

/// A node of the model cluster.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSpec {
    /// Node name.
    pub name: String,
    /// Zone.
    pub zone: String,
    /// Builds it runs at once.
    pub builders: u32,
    /// Bytes of cache it may keep.
    pub cache_budget_bytes: u64,
}

/// The `cluster` record.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterSpec {
    /// The nodes.
    pub nodes: Vec<NodeSpec>,
    /// Store (and registry) throughput.
    pub store_bytes_per_second: f64,
    /// Fixed cost of a restore.
    pub restore_overhead_seconds: f64,
}

/// A `build` record.
#[derive(Clone, Debug, PartialEq)]
pub struct BuildSpec {
    /// Line of the record in the workload file (1-based).
    pub line: usize,
    /// Submit time, seconds from the start of the workload.
    pub at: f64,
    /// Namespace.
    pub namespace: String,
    /// Cache key.
    pub key: String,
    /// Ordered fallback keys.
    pub restore_keys: Vec<String>,
    /// Cache mode.
    pub mode: CacheMode,
    /// Build time with no cache.
    pub cold_seconds: f64,
    /// Build time from the key's own cache.
    pub warm_seconds: f64,
    /// Build time from a restore key's cache, when known.
    pub fallback_seconds: Option<f64>,
    /// Size of the key's cache after the build.
    pub cache_bytes: u64,
    /// What buildx's sticky load balancing hashes (repository and context path); the key when
    /// absent.
    pub context: Option<String>,
}

impl BuildSpec {
    /// Build time when seeded from a restore key's cache.
    pub fn fallback(&self) -> f64 {
        self.fallback_seconds
            .unwrap_or(self.warm_seconds + 0.3 * (self.cold_seconds - self.warm_seconds))
    }
}

/// A `node-down` or `node-up` record.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct NodeEvent {
    /// When.
    pub at: f64,
    /// Index of the node in [`ClusterSpec::nodes`].
    pub node: usize,
    /// `true` for `node-up`.
    pub up: bool,
}

/// A whole workload, sorted by time.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// The model cluster.
    pub cluster: ClusterSpec,
    /// Builds, by submit time (stable for equal times).
    pub builds: Vec<BuildSpec>,
    /// Node events, by time.
    pub node_events: Vec<NodeEvent>,
}

/// What is wrong with a workload.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum WorkloadError {
    /// A line is not a JSON object.
    #[error("line {line}: not a JSON object: {message}")]
    Syntax {
        /// 1-based line number.
        line: usize,
        /// The parser's message.
        message: String,
    },
    /// A field is missing or has a bad value.
    #[error("line {line}: field `{field}`: {problem}")]
    Field {
        /// 1-based line number.
        line: usize,
        /// The field, as a JSON path from the record.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// No `cluster` record before the first other record.
    #[error("line {line}: the first record must be the `cluster` record")]
    NoCluster {
        /// Line of the first record.
        line: usize,
    },
    /// No record at all.
    #[error("the workload has no records")]
    Empty,
}

fn field_err(line: usize, field: &str, problem: impl Into<String>) -> WorkloadError {
    WorkloadError::Field {
        line,
        field: field.to_string(),
        problem: problem.into(),
    }
}

/// Reads fields of one record, naming line and field in every error.
struct Record<'a> {
    line: usize,
    obj: &'a Map<String, Value>,
    prefix: String,
}

impl<'a> Record<'a> {
    fn path(&self, field: &str) -> String {
        format!("{}{field}", self.prefix)
    }

    fn err(&self, field: &str, problem: impl Into<String>) -> WorkloadError {
        field_err(self.line, &self.path(field), problem)
    }

    fn opt_str(&self, field: &str) -> Result<Option<String>, WorkloadError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(_) => Err(self.err(field, "must be a non-empty string")),
        }
    }

    fn str(&self, field: &str) -> Result<String, WorkloadError> {
        self.opt_str(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn opt_num(&self, field: &str) -> Result<Option<f64>, WorkloadError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match v.as_f64() {
                Some(n) if n > MAX_SECONDS && (field == "at" || field.ends_with("Seconds")) => {
                    Err(self.err(
                        field,
                        format!("must be at most {MAX_SECONDS:e} seconds (got {n:e})"),
                    ))
                }
                Some(n) if n.is_finite() && n >= 0.0 => Ok(Some(n)),
                Some(n) if n < 0.0 => {
                    Err(self.err(field, format!("must not be negative (got {n})")))
                }
                _ => Err(self.err(field, "must be a number")),
            },
        }
    }

    fn num(&self, field: &str) -> Result<f64, WorkloadError> {
        self.opt_num(field)?
            .ok_or_else(|| self.err(field, "missing"))
    }

    fn bytes(&self, field: &str) -> Result<u64, WorkloadError> {
        let n = self.num(field)?;
        if n > 1e18 {
            return Err(self.err(field, "too large"));
        }
        Ok(n as u64)
    }

    fn array(&self, field: &str) -> Result<&'a [Value], WorkloadError> {
        match self.obj.get(field) {
            None | Some(Value::Null) => Ok(&[]),
            Some(Value::Array(a)) => Ok(a),
            Some(_) => Err(self.err(field, "must be an array")),
        }
    }
}

/// Longest time a workload may name (`at`, `*Seconds`): about 31 years; larger values are
/// typos that would only overflow the simulation.
pub const MAX_SECONDS: f64 = 1e9;

/// Parses a whole workload; nothing is returned from a half-read file. A leading UTF-8 byte
/// order mark (as some editors write) is skipped.
pub fn parse(text: &str) -> Result<Workload, WorkloadError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut cluster: Option<(ClusterSpec, HashMap<String, usize>)> = None;
    let mut builds = Vec::new();
    let mut node_events = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let value: Value = serde_json::from_str(trimmed).map_err(|e| WorkloadError::Syntax {
            line,
            message: e.to_string(),
        })?;
        let Value::Object(obj) = &value else {
            return Err(WorkloadError::Syntax {
                line,
                message: "expected an object".into(),
            });
        };
        let rec = Record {
            line,
            obj,
            prefix: String::new(),
        };
        let kind = rec.str("kind")?;
        match (kind.as_str(), &cluster) {
            ("cluster", None) => cluster = Some(parse_cluster(&rec)?),
            ("cluster", Some(_)) => return Err(rec.err("kind", "a second `cluster` record")),
            ("build" | "node-down" | "node-up", None) => {
                return Err(WorkloadError::NoCluster { line })
            }
            ("build", Some(_)) => builds.push(parse_build(&rec)?),
            ("node-down" | "node-up", Some((_, names))) => {
                let at = rec.num("at")?;
                let name = rec.str("node")?;
                let node = *names
                    .get(&name)
                    .ok_or_else(|| rec.err("node", format!("unknown node `{name}`")))?;
                node_events.push(NodeEvent {
                    at,
                    node,
                    up: kind == "node-up",
                });
            }
            (other, _) => {
                return Err(rec.err(
                    "kind",
                    format!(
                        "unknown kind `{other}` (expected cluster, build, node-down or node-up)"
                    ),
                ))
            }
        }
    }
    let (cluster, _) = cluster.ok_or(WorkloadError::Empty)?;
    builds.sort_by(|a: &BuildSpec, b| a.at.total_cmp(&b.at));
    node_events.sort_by(|a: &NodeEvent, b| a.at.total_cmp(&b.at));
    Ok(Workload {
        cluster,
        builds,
        node_events,
    })
}

fn parse_cluster(rec: &Record) -> Result<(ClusterSpec, HashMap<String, usize>), WorkloadError> {
    let mut nodes = Vec::new();
    let mut names = HashMap::new();
    let raw_nodes = rec.array("nodes")?;
    if raw_nodes.is_empty() {
        return Err(rec.err("nodes", "must list at least one node"));
    }
    for (i, v) in raw_nodes.iter().enumerate() {
        let Value::Object(obj) = v else {
            return Err(rec.err(&format!("nodes[{i}]"), "must be an object"));
        };
        let n = Record {
            line: rec.line,
            obj,
            prefix: format!("nodes[{i}]."),
        };
        let name = n.str("name")?;
        let builders = n.num("builders")?;
        if builders < 1.0 || builders.fract() != 0.0 || builders > 1024.0 {
            return Err(n.err("builders", "must be a whole number from 1 to 1024"));
        }
        if names.insert(name.clone(), nodes.len()).is_some() {
            return Err(n.err("name", format!("node `{name}` listed twice")));
        }
        nodes.push(NodeSpec {
            name,
            zone: n.opt_str("zone")?.unwrap_or_default(),
            builders: builders as u32,
            cache_budget_bytes: n.bytes("cacheBudgetBytes")?,
        });
    }
    let store_bytes_per_second = rec.num("storeBytesPerSecond")?;
    if store_bytes_per_second <= 0.0 {
        return Err(rec.err("storeBytesPerSecond", "must be positive"));
    }
    let restore_overhead_seconds = rec.opt_num("restoreOverheadSeconds")?.unwrap_or(0.0);
    Ok((
        ClusterSpec {
            nodes,
            store_bytes_per_second,
            restore_overhead_seconds,
        },
        names,
    ))
}

fn parse_build(rec: &Record) -> Result<BuildSpec, WorkloadError> {
    let at = rec.num("at")?;
    let key = rec.str("key")?;
    let mut restore_keys = Vec::new();
    for (i, v) in rec.array("restoreKeys")?.iter().enumerate() {
        match v {
            Value::String(s) if !s.is_empty() => restore_keys.push(s.clone()),
            _ => return Err(rec.err(&format!("restoreKeys[{i}]"), "must be a non-empty string")),
        }
    }
    let mode = match rec.opt_str("mode")?.as_deref() {
        None | Some("ReadWrite") => CacheMode::ReadWrite,
        Some("ReadOnly") => CacheMode::ReadOnly,
        Some("Disabled") => CacheMode::Disabled,
        Some(other) => {
            return Err(rec.err(
                "mode",
                format!("unknown mode `{other}` (ReadWrite, ReadOnly or Disabled)"),
            ))
        }
    };
    let cold_seconds = rec.num("coldSeconds")?;
    let warm_seconds = rec.num("warmSeconds")?;
    if warm_seconds > cold_seconds {
        return Err(rec.err("warmSeconds", "must not exceed coldSeconds"));
    }
    Ok(BuildSpec {
        line: rec.line,
        at,
        namespace: rec
            .opt_str("namespace")?
            .unwrap_or_else(|| "default".to_string()),
        key,
        restore_keys,
        mode,
        cold_seconds,
        warm_seconds,
        fallback_seconds: rec.opt_num("fallbackSeconds")?,
        cache_bytes: rec.bytes("cacheBytes")?,
        context: rec.opt_str("context")?,
    })
}
