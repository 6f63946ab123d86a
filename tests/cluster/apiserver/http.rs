//! The HTTP face of the server: bearer-token check, discovery documents, the REST paths
//! (`/api/v1/...`, `/apis/<group>/<version>/...`, namespaced or not, with `status`, `log` and
//! `binding` subresources), query parameters and bodies, and errors as `Status` objects.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{header, Method, Request, Response};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{json, Value};

use super::exec;
use super::logs;
use super::registry::ResourceType;
use super::selectors::Selectors;
use super::store::{meta_str, ApiError, DeleteOptions, Deletion, Page, PatchKind};
use super::watch::{self, WatchParams};
use super::Shared;

pub type Body = UnsyncBoxBody<Bytes, Infallible>;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed_unsync()
}

fn json_response(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(serde_json::to_vec(v).expect("json")))
        .expect("response")
}

fn error(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.status())
}

fn not_found_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource",
    )
}

/// One request, parsed.
struct Call {
    method: Method,
    query: HashMap<String, String>,
    body: Bytes,
    content_type: String,
    manager: Option<String>,
}

impl Call {
    fn q(&self, k: &str) -> Option<&str> {
        self.query.get(k).map(String::as_str)
    }

    fn flag(&self, k: &str) -> bool {
        matches!(self.q(k), Some("true" | "1"))
    }

    fn json(&self) -> Result<Value, ApiError> {
        if self.body.is_empty() {
            return Ok(Value::Null);
        }
        if self.content_type.contains("yaml") {
            serde_yaml::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("invalid YAML body: {e}")))
        } else {
            serde_json::from_slice(&self.body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
        }
    }

    fn selectors(&self) -> Result<Selectors, ApiError> {
        Selectors::parse(self.q("labelSelector"), self.q("fieldSelector"))
            .map_err(ApiError::bad_request)
    }
}

/// Where a REST path points.
struct Target {
    rt: ResourceType,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

pub async fn handle(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    let expected = format!("Bearer {}", shared.token);
    let authorized = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        == Some(expected.as_str());
    if !authorized {
        return error(&ApiError::new(401, "Unauthorized", "Unauthorized"));
    }
    let latency = shared.state.lock().expect("state").latency;
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if req.uri().path().ends_with("/exec") && req.headers().contains_key(header::UPGRADE) {
        return match exec_upgrade(&shared, req) {
            Ok(r) => r,
            Err(e) => error(&e),
        };
    }
    let (parts, body) = req.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return error(&ApiError::bad_request(format!("reading the body: {e}"))),
    };
    let query = form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .filter(|(k, _)| !k.is_empty())
        .collect::<HashMap<_, _>>();
    let manager = query.get("fieldManager").cloned().or_else(|| {
        parts
            .headers
            .get(header::USER_AGENT)
            .and_then(|v| v.to_str().ok())
            .map(|ua| ua.split('/').next().unwrap_or(ua).to_string())
    });
    let call = Call {
        method: parts.method,
        query,
        body,
        content_type: parts
            .headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_string(),
        manager,
    };
    let path = parts.uri.path().trim_end_matches('/').to_string();
    match route(&shared, &call, &path) {
        Ok(r) => r,
        Err(e) => error(&e),
    }
}

fn route(shared: &Arc<Shared>, call: &Call, path: &str) -> Result<Response<Body>, ApiError> {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let get = call.method == Method::GET;
    let mut state = shared.state.lock().expect("state");
    let (group, version, rest) = match segs.as_slice() {
        ["version"] if get => {
            return Ok(json_response(
                200,
                &json!({
                    "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "hearth-fake",
                    "gitTreeState": "clean", "buildDate": "2025-04-23T00:00:00Z",
                    "goVersion": "go1.24.2", "compiler": "gc", "platform": "linux/amd64",
                }),
            ))
        }
        ["healthz" | "readyz" | "livez"] if get => {
            return Ok(Response::new(full("ok")));
        }
        ["api"] if get => {
            return Ok(json_response(
                200,
                &state.registry.api_versions(&shared.address),
            ))
        }
        ["apis"] if get => return Ok(json_response(200, &state.registry.group_list())),
        ["api", "v1"] if get => {
            let list = state
                .registry
                .resource_list("", "v1")
                .ok_or_else(not_found_path)?;
            return Ok(json_response(200, &list));
        }
        ["apis", group, version] if get => {
            let list = state
                .registry
                .resource_list(group, version)
                .ok_or_else(not_found_path)?;
            return Ok(json_response(200, &list));
        }
        ["api", "v1", rest @ ..] => ("", "v1", rest),
        ["apis", group, version, rest @ ..] => (*group, *version, rest),
        _ => return Err(not_found_path()),
    };
    let find = |plural: &str| state.registry.find(group, version, plural).cloned();
    let target = match rest {
        ["namespaces", ns, plural, tail @ ..] if find(plural).is_some_and(|t| t.namespaced) => {
            Target {
                rt: find(plural).expect("found"),
                namespace: Some(ns.to_string()),
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            }
        }
        [plural, tail @ ..] => {
            let rt = find(plural).ok_or_else(not_found_path)?;
            Target {
                rt,
                namespace: None,
                name: tail.first().map(|s| s.to_string()),
                sub: tail.get(1).map(|s| s.to_string()),
            }
        }
        [] => return Err(not_found_path()),
    };
    let rt = &target.rt;
    let ns = target.namespace.as_deref();
    if !rt.namespaced && ns.is_some() {
        return Err(not_found_path());
    }
    if rt.namespaced && ns.is_none() && (target.name.is_some() || call.method != Method::GET) {
        return Err(not_found_path());
    }
    let verb = match (&call.method, &target.name, target.sub.as_deref()) {
        (&Method::GET, None, _) if call.flag("watch") => "watch",
        (&Method::GET, None, _) => "list",
        (&Method::POST, None, _) => "create",
        (&Method::DELETE, None, _) => "deletecollection",
        (&Method::GET, Some(_), _) => "get",
        (&Method::PUT, Some(_), _) => "update",
        (&Method::PATCH, Some(_), _) => "patch",
        (&Method::DELETE, Some(_), None) => "delete",
        (&Method::POST, Some(_), Some("binding")) => "create",
        _ => {
            return Err(ApiError::new(
                405,
                "MethodNotAllowed",
                "the server does not allow this method on the requested resource",
            ))
        }
    };
    let is_pods = rt.group.is_empty() && rt.plural == "pods";
    let served_sub = match target.sub.as_deref() {
        None => true,
        Some("status") => rt.status,
        Some("log" | "binding") => is_pods,
        Some(_) => false,
    };
    if !served_sub {
        return Err(not_found_path());
    }
    let resource = match &target.sub {
        Some(sub) => format!("{}/{sub}", rt.qualified()),
        None => rt.qualified(),
    };
    if let Some(fault) = state.count(&resource, verb) {
        let name = target.name.clone().unwrap_or_default();
        return Err(match (fault.code, fault.refusal) {
            (_, Some((reason, message))) => ApiError::new(fault.code, &reason, message),
            (409, None) => ApiError::stale(rt, &name),
            (code, None) => ApiError::new(code, "InternalError", "injected failure (test fault)"),
        });
    }
    if call.q("dryRun").is_some() && verb != "watch" && verb != "list" && verb != "get" {
        // Better refused than silently written.
        return Err(ApiError::bad_request(
            "dryRun is not supported by the fake API server",
        ));
    }
    let manager = call.manager.as_deref();
    let rv_before = state.rv;
    let response = match (verb, target.name.as_deref(), target.sub.as_deref()) {
        ("watch", _, _) => {
            let params = WatchParams {
                namespace: target.namespace.clone(),
                selectors: call.selectors()?,
                resource_version: call.q("resourceVersion").map(str::to_string),
                bookmarks: call.flag("allowWatchBookmarks"),
                send_initial_events: call.flag("sendInitialEvents"),
                timeout: Duration::from_secs(
                    call.q("timeoutSeconds")
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(1800),
                ),
            };
            let stream = watch::start(shared.clone(), &mut state, rt.clone(), params)?;
            let body = StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b))));
            return Ok(Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "application/json")
                .body(body.boxed_unsync())
                .expect("response"));
        }
        ("list", _, _) => {
            let page = Page {
                limit: call.q("limit").and_then(|l| l.parse().ok()),
                continue_token: call.q("continue").map(str::to_string),
            };
            json_response(200, &state.list_page(rt, ns, &call.selectors()?, &page)?)
        }
        ("create", None, _) => json_response(201, &state.create(rt, ns, call.json()?, manager)?),
        ("create", Some(name), Some("binding")) if rt.group.is_empty() && rt.plural == "pods" => {
            json_response(201, &state.bind(rt, ns, name, &call.json()?)?)
        }
        ("get", Some(name), Some("log")) if rt.group.is_empty() && rt.plural == "pods" => {
            state.get(rt, ns, name)?;
            let ns = ns.unwrap_or("").to_string();
            let builder = Response::builder().header(header::CONTENT_TYPE, "text/plain");
            if call.flag("follow") {
                let container = call.q("container").unwrap_or("").to_string();
                let stream = logs::follow(shared.clone(), ns, name.to_string(), container);
                let body = StreamBody::new(stream.map(|b| Ok::<_, Infallible>(Frame::data(b))));
                return Ok(builder.body(body.boxed_unsync()).expect("response"));
            }
            builder
                .body(full(logs::text(
                    &state,
                    &ns,
                    name,
                    call.q("container").unwrap_or(""),
                )))
                .expect("response")
        }
        ("get", Some(name), None | Some("status")) => json_response(200, &state.get(rt, ns, name)?),
        ("update", Some(name), sub @ (None | Some("status"))) => json_response(
            200,
            &state.update(rt, ns, name, sub, call.json()?, manager)?,
        ),
        ("patch", Some(name), sub @ (None | Some("status"))) => {
            let kind = match call.content_type.as_str() {
                "application/merge-patch+json" => PatchKind::Merge,
                "application/strategic-merge-patch+json" => PatchKind::Strategic,
                "application/json-patch+json" => PatchKind::Json,
                "application/apply-patch+yaml" | "application/apply-patch+json" => {
                    if call.q("fieldManager").is_none() {
                        return Err(ApiError::bad_request(
                            "PatchOptions.meta.k8s.io \"\" is invalid: fieldManager: Required value: is required for apply patch",
                        ));
                    }
                    PatchKind::Apply {
                        force: call.flag("force"),
                    }
                }
                other => {
                    return Err(ApiError::new(
                        415,
                        "UnsupportedMediaType",
                        format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml (got {other})"),
                    ))
                }
            };
            json_response(
                200,
                &state.patch(rt, ns, name, sub, kind, call.json()?, manager)?,
            )
        }
        ("delete", Some(name), None) => {
            let opts = delete_options(call)?;
            match state.delete(rt, ns, name, &opts)? {
                Deletion::Remains(obj) => json_response(200, &obj),
                Deletion::Gone(obj) => json_response(200, &deleted_body(rt, &obj)),
            }
        }
        ("deletecollection", None, None) => {
            let opts = delete_options(call)?;
            let list = state.list(rt, ns, &call.selectors()?);
            let mut items = Vec::new();
            for obj in list["items"].as_array().into_iter().flatten() {
                let o_ns = meta_str(obj, "namespace").map(str::to_string);
                let name = meta_str(obj, "name").unwrap_or_default().to_string();
                match state.delete(rt, o_ns.as_deref(), &name, &opts)? {
                    Deletion::Remains(o) | Deletion::Gone(o) => items.push(o),
                }
            }
            let mut list = list;
            list["items"] = json!(items);
            list["metadata"]["resourceVersion"] = json!(state.rv.to_string());
            json_response(200, &list)
        }
        _ => return Err(not_found_path()),
    };
    if state.rv != rv_before {
        shared.changes.send_replace(state.rv);
    }
    Ok(response)
}

/// What DELETE answers when the object is gone: the object for pods and custom resources (as
/// the real server's stores do), a Success Status otherwise.
fn deleted_body(rt: &ResourceType, obj: &Value) -> Value {
    if rt.custom || (rt.group.is_empty() && rt.plural == "pods") {
        return obj.clone();
    }
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
        "details": {
            "name": meta_str(obj, "name"), "group": rt.group, "kind": rt.plural,
            "uid": meta_str(obj, "uid"),
        },
    })
}

fn delete_options(call: &Call) -> Result<DeleteOptions, ApiError> {
    let body = call.json()?;
    let grace_q = call
        .q("gracePeriodSeconds")
        .map(|g| {
            g.parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("invalid gracePeriodSeconds {g:?}")))
        })
        .transpose()?;
    Ok(DeleteOptions {
        grace_period_seconds: body
            .get("gracePeriodSeconds")
            .and_then(Value::as_i64)
            .or(grace_q),
        uid: body
            .pointer("/preconditions/uid")
            .and_then(Value::as_str)
            .map(str::to_string),
        resource_version: body
            .pointer("/preconditions/resourceVersion")
            .and_then(Value::as_str)
            .map(str::to_string),
    })
}

/// `GET pods/<name>/exec` with a WebSocket upgrade: answers 101 and serves the exec.
fn exec_upgrade(
    shared: &Arc<Shared>,
    mut req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let segs: Vec<String> = req
        .uri()
        .path()
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let ["api", "v1", "namespaces", ns, "pods", pod, "exec"] =
        segs.iter().map(String::as_str).collect::<Vec<_>>()[..]
    else {
        return Err(not_found_path());
    };
    let (ns, pod) = (ns.to_string(), pod.to_string());
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    let command: Vec<String> = query
        .iter()
        .filter(|(k, _)| k == "command")
        .map(|(_, v)| v.clone())
        .collect();
    let container = query
        .iter()
        .find(|(k, _)| k == "container")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let handler = {
        let mut state = shared.state.lock().expect("state");
        let rt = state
            .registry
            .find("", "v1", "pods")
            .cloned()
            .expect("pods are served");
        state.count("pods/exec", "create");
        state.get(&rt, Some(&ns), &pod)?;
        state.exec.clone().ok_or_else(|| {
            ApiError::bad_request("no exec handler is registered with the fake API server")
        })?
    };
    let key = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .ok_or_else(|| ApiError::bad_request("missing Sec-WebSocket-Key"))?
        .as_bytes()
        .to_vec();
    let offered = req
        .headers()
        .get(header::SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let protocol = if offered.contains("v5.channel.k8s.io") {
        "v5.channel.k8s.io"
    } else {
        "v4.channel.k8s.io"
    };
    let on_upgrade = hyper::upgrade::on(&mut req);
    let (stdin_tx, stdin) = tokio::sync::mpsc::unbounded_channel();
    let (stdout, _) = tokio::sync::mpsc::unbounded_channel();
    drop(stdin_tx);
    let request = exec::ExecRequest {
        namespace: ns,
        pod,
        container,
        command,
        stdin,
        stdout,
    };
    tokio::spawn(async move {
        if let Ok(upgraded) = on_upgrade.await {
            exec::serve(upgraded, handler, request).await;
        }
    });
    Ok(Response::builder()
        .status(101)
        .header(header::CONNECTION, "Upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key),
        )
        .header(header::SEC_WEBSOCKET_PROTOCOL, protocol)
        .body(full(Bytes::new()))
        .expect("response"))
}
