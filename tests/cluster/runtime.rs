//! The test kubelet's container runtime: a container's `command` + `args` run as a real
//! process on the host, in its own process group, under an open-files limit of 1024 (soft,
//! as containerd sets it, and hard too, see [`OPEN_FILES`]), with an environment built only from the pod spec (plus PATH with the
//! real `hearth` binary's dir first, HOME and HOSTNAME). Every mount path, and
//! `/dev/termination-log`, is rewritten in the command, args, env and working dir to the host
//! path it maps to. Termination follows the kubelet: SIGTERM to the group, SIGKILL after the
//! grace period.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, Pod, Secret};
use kube::api::Api;
use kube::{Client, ResourceExt};
use tokio::sync::watch;

use super::record::Procs;

/// Open-files limit of every container process, soft and hard: many runtimes give a pod a
/// soft limit of 1024, and with the hard limit at 1024 too a process cannot raise its way out
/// (`hearth` raises soft to hard at start), so the suite tests that it needs few descriptors.
pub const OPEN_FILES: u64 = 1024;

/// Rewrites container paths (mount paths, the termination log) to host paths.
#[derive(Clone, Debug, Default)]
pub struct Rewriter(Vec<(String, String)>);

impl Rewriter {
    /// From (container path, host path) pairs.
    pub fn new(mut pairs: Vec<(String, String)>) -> Rewriter {
        pairs.sort_by(|a, b| b.0.len().cmp(&a.0.len()).then(a.0.cmp(&b.0)));
        Rewriter(pairs)
    }

    /// Replaces each container path that starts at a word boundary and ends at one (end,
    /// `/` or a character that cannot continue a path component) with its host path.
    pub fn apply(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let continues = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-');
        let mut out = String::with_capacity(text.len());
        let mut i = 0;
        'scan: while i < text.len() {
            if bytes[i] == b'/' && (i == 0 || !continues(bytes[i - 1])) {
                for (from, to) in &self.0 {
                    let end = i + from.len();
                    if text[i..].starts_with(from.as_str())
                        && (end == text.len() || !continues(bytes[end]))
                    {
                        out.push_str(to);
                        i = end;
                        continue 'scan;
                    }
                }
            }
            let ch = text[i..].chars().next().expect("char");
            out.push(ch);
            i += ch.len_utf8();
        }
        out
    }
}

/// Reads a Secret's keys as strings (None when it does not exist).
pub async fn secret_data(
    client: &Client,
    ns: &str,
    name: &str,
) -> kube::Result<Option<BTreeMap<String, Vec<u8>>>> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?;
    Ok(secret.map(|s| {
        let mut out: BTreeMap<String, Vec<u8>> = s
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, v.0))
            .collect();
        for (k, v) in s.string_data.unwrap_or_default() {
            out.insert(k, v.into_bytes());
        }
        out
    }))
}

/// A container's environment from its spec: `envFrom` secrets first, then `env` (values,
/// secret keys, a few fields), as the kubelet resolves them. Err says what is missing.
pub async fn resolve_env(
    client: &Client,
    pod: &Pod,
    container: &Container,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut env: Vec<(String, String)> = Vec::new();
    let set = |env: &mut Vec<(String, String)>, k: String, v: String| {
        env.retain(|(name, _)| *name != k);
        env.push((k, v));
    };
    for from in container.env_from.iter().flatten() {
        let Some(secret_ref) = &from.secret_ref else {
            continue;
        };
        match secret_data(client, &ns, &secret_ref.name).await {
            Ok(Some(data)) => {
                for (k, v) in data {
                    let key = format!("{}{k}", from.prefix.clone().unwrap_or_default());
                    set(&mut env, key, String::from_utf8_lossy(&v).into_owned());
                }
            }
            Ok(None) if secret_ref.optional == Some(true) => {}
            Ok(None) => return Err(format!("secret {:?} not found", secret_ref.name)),
            Err(e) => return Err(format!("reading secret {:?}: {e}", secret_ref.name)),
        }
    }
    for var in container.env.iter().flatten() {
        if let Some(value) = &var.value {
            set(&mut env, var.name.clone(), value.clone());
            continue;
        }
        let Some(from) = &var.value_from else {
            set(&mut env, var.name.clone(), String::new());
            continue;
        };
        if let Some(key_ref) = &from.secret_key_ref {
            let data = secret_data(client, &ns, &key_ref.name)
                .await
                .map_err(|e| format!("reading secret {:?}: {e}", key_ref.name))?;
            match data.and_then(|d| d.get(&key_ref.key).cloned()) {
                Some(v) => set(
                    &mut env,
                    var.name.clone(),
                    String::from_utf8_lossy(&v).into_owned(),
                ),
                None if key_ref.optional == Some(true) => {}
                None => {
                    return Err(format!(
                        "secret {:?} or its key {:?} not found",
                        key_ref.name, key_ref.key
                    ))
                }
            }
        } else if let Some(field) = &from.field_ref {
            let value = match field.field_path.as_str() {
                "metadata.name" => pod.name_any(),
                "metadata.namespace" => ns.clone(),
                "metadata.uid" => pod.uid().unwrap_or_default(),
                "spec.nodeName" => pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.node_name.clone())
                    .unwrap_or_default(),
                "status.podIP" | "status.hostIP" => "127.0.0.1".into(),
                other => return Err(format!("fieldRef {other} is not modelled")),
            };
            set(&mut env, var.name.clone(), value);
        } else {
            return Err(format!(
                "env {}: only values, secretKeyRef and fieldRef are modelled",
                var.name
            ));
        }
    }
    Ok(env)
}

/// Everything needed to run one container process.
pub struct ProcessSpec {
    /// Node it runs on (for the process registry).
    pub node: String,
    /// Command and args, rewritten.
    pub argv: Vec<String>,
    /// Environment, rewritten, PATH included.
    pub env: Vec<(String, String)>,
    /// Working directory on the host.
    pub cwd: PathBuf,
    /// stdout and stderr go here.
    pub log: PathBuf,
}

/// Waits until termination is requested; returns the grace period.
pub async fn wait_term(term: &mut watch::Receiver<Option<Duration>>) -> Duration {
    loop {
        if let Some(grace) = *term.borrow_and_update() {
            return grace;
        }
        if term.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

fn signal_group(pgid: i32, signal: rustix::process::Signal) {
    if let Some(pid) = rustix::process::Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(9)),
        Err(_) => 128 + 9,
    }
}

/// Runs a process to its end; on termination, SIGTERM then SIGKILL after the grace period.
pub async fn run_process(
    spec: ProcessSpec,
    procs: &Procs,
    mut term: watch::Receiver<Option<Duration>>,
) -> Result<i32, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&spec.log)
        .map_err(|e| format!("log file: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {OPEN_FILES} && exec \"$@\""))
        .arg("sh")
        .args(&spec.argv)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", spec.argv))?;
    let pgid = child.id().map(|p| p as i32).unwrap_or(0);
    procs.add(&spec.node, pgid);
    let code = tokio::select! {
        status = child.wait() => exit_code(status),
        grace = wait_term(&mut term) => {
            signal_group(pgid, rustix::process::Signal::TERM);
            tokio::select! {
                status = child.wait() => exit_code(status),
                _ = tokio::time::sleep(grace) => {
                    signal_group(pgid, rustix::process::Signal::KILL);
                    exit_code(child.wait().await)
                }
            }
        }
    };
    // Whatever the container left behind in its group goes with it.
    signal_group(pgid, rustix::process::Signal::KILL);
    procs.remove(pgid);
    Ok(code)
}

/// The termination message: the file's first 4096 bytes; with `FallbackToLogsOnError` and an
/// empty file after a failure, the log's last 80 lines, at most 2048 bytes.
pub fn termination_message(file: &Path, log: &Path, policy: Option<&str>, code: i32) -> String {
    let message = std::fs::read(file).unwrap_or_default();
    let message = String::from_utf8_lossy(&message[..message.len().min(4096)]).into_owned();
    if !message.is_empty() || code == 0 || policy != Some("FallbackToLogsOnError") {
        return message;
    }
    log_tail(log)
}

/// The last 80 lines of a log, at most 2048 bytes.
pub fn log_tail(log: &Path) -> String {
    let text = std::fs::read(log).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let mut tail = lines[lines.len().saturating_sub(80)..].join("\n");
    if tail.len() > 2048 {
        let mut cut = tail.len() - 2048;
        while !tail.is_char_boundary(cut) {
            cut += 1;
        }
        tail = tail[cut..].to_string();
    }
    tail
}
