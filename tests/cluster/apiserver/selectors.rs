//! Label and field selectors as the API server parses them from `labelSelector` and
//! `fieldSelector`: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k` for labels;
//! `path=v`, `path==v`, `path!=v` for fields, where a field is any dotted path into the object
//! (`metadata.name`, `spec.nodeName`, `status.phase`, `involvedObject.name`...), absent = "".

use serde_json::Value;

#[derive(Clone, Debug, PartialEq)]
enum Label {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

#[derive(Clone, Debug, PartialEq)]
struct Field {
    path: String,
    value: String,
    equal: bool,
}

/// A parsed pair of selectors; the empty selector matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Selectors {
    labels: Vec<Label>,
    fields: Vec<Field>,
}

/// Splits on commas that are not inside parentheses.
fn split_top(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut cur = String::new();
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(std::mem::take(&mut cur));
                continue;
            }
            _ => {}
        }
        cur.push(c);
    }
    out.push(cur);
    out.into_iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn set_values(rest: &str) -> Result<Vec<String>, String> {
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('(')
        .and_then(|r| r.strip_suffix(')'))
        .ok_or_else(|| format!("expected a parenthesised set, got {rest:?}"))?;
    Ok(inner
        .split(',')
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect())
}

fn parse_label(req: &str) -> Result<Label, String> {
    if let Some(key) = req.strip_prefix('!') {
        return Ok(Label::NotExists(key.trim().to_string()));
    }
    if let Some((k, v)) = req.split_once("!=") {
        return Ok(Label::NotEq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = req.split_once("==") {
        return Ok(Label::Eq(k.trim().into(), v.trim().into()));
    }
    if let Some((k, v)) = req.split_once('=') {
        return Ok(Label::Eq(k.trim().into(), v.trim().into()));
    }
    let mut words = req.splitn(2, char::is_whitespace);
    let key = words.next().unwrap_or_default().trim().to_string();
    match words.next().map(str::trim) {
        None => Ok(Label::Exists(key)),
        Some(rest) if rest.starts_with("notin") => {
            Ok(Label::NotIn(key, set_values(&rest["notin".len()..])?))
        }
        Some(rest) if rest.starts_with("in") => {
            Ok(Label::In(key, set_values(&rest["in".len()..])?))
        }
        Some(rest) => Err(format!("unable to parse requirement: {key} {rest}")),
    }
}

fn parse_field(req: &str) -> Result<Field, String> {
    let (path, value, equal) = if let Some((k, v)) = req.split_once("!=") {
        (k, v, false)
    } else if let Some((k, v)) = req.split_once("==") {
        (k, v, true)
    } else if let Some((k, v)) = req.split_once('=') {
        (k, v, true)
    } else {
        return Err(format!("invalid selector: {req:?}; can't understand"));
    };
    Ok(Field {
        path: path.trim().into(),
        value: value.trim().into(),
        equal,
    })
}

impl Selectors {
    /// Parses the two query parameters (either may be absent).
    pub fn parse(labels: Option<&str>, fields: Option<&str>) -> Result<Self, String> {
        Ok(Selectors {
            labels: split_top(labels.unwrap_or(""))
                .iter()
                .map(|r| parse_label(r))
                .collect::<Result<_, _>>()?,
            fields: split_top(fields.unwrap_or(""))
                .iter()
                .map(|r| parse_field(r))
                .collect::<Result<_, _>>()?,
        })
    }

    pub fn matches(&self, obj: &Value) -> bool {
        let labels = obj.pointer("/metadata/labels").and_then(Value::as_object);
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        let labels_ok = self.labels.iter().all(|req| match req {
            Label::Eq(k, v) => label(k) == Some(v.as_str()),
            Label::NotEq(k, v) => label(k) != Some(v.as_str()),
            Label::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            Label::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            Label::Exists(k) => label(k).is_some(),
            Label::NotExists(k) => label(k).is_none(),
        });
        labels_ok
            && self
                .fields
                .iter()
                .all(|f| (field_value(obj, &f.path) == f.value) == f.equal)
    }
}

/// The string value of a dotted field path; absent or null is "".
pub fn field_value(obj: &Value, path: &str) -> String {
    let mut cur = obj;
    for part in path.split('.') {
        match cur.get(part) {
            Some(v) => cur = v,
            None => return String::new(),
        }
    }
    match cur {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}
