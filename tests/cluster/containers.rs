//! The kubelet's pod sandbox: volumes mapped to host dirs (a PVC to its PV's dir, an emptyDir
//! to a dir of the pod, secret and projected-secret volumes to files written from the Secret,
//! with their `mode`/`defaultMode`)
//! and one container run: mount paths rewritten, the environment resolved, the process started
//! (or the builder's `buildkit` container played, or the upload receiver skipped) and recorded.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Container, Pod};
use kube::ResourceExt;
use tokio::sync::watch;

use super::buildkit;
use super::kubelet::{pv_of_claim, NodeAgent};
use super::record::Run;
use super::runtime::{self, ProcessSpec, Rewriter};

/// Label of a pod's role (see `src/controller/builders/labels.rs`).
const ROLE: &str = "hearth.dev/role";
/// The upload receiver init container of builder pods.
const RECEIVER: &str = "receive";

/// How a container ended.
pub struct Exit {
    pub code: i32,
    pub message: String,
    pub started: jiff::Timestamp,
    pub finished: jiff::Timestamp,
}

/// A secret, the (key, path, mode) items to write from it (all keys when None), and the
/// volume's default mode.
type SecretFiles = (String, Option<Vec<(String, String, Option<i32>)>>, i32);

/// Volume name -> (host dir, whether it is a PV).
pub type Volumes = BTreeMap<String, (PathBuf, bool)>;

/// The kubelet's file mode when a volume sets none.
const DEFAULT_MODE: i32 = 0o644;

fn items(
    items: &Option<Vec<k8s_openapi::api::core::v1::KeyToPath>>,
) -> Option<Vec<(String, String, Option<i32>)>> {
    items.as_ref().map(|i| {
        i.iter()
            .map(|k| (k.key.clone(), k.path.clone(), k.mode))
            .collect()
    })
}

pub async fn setup_volumes(
    agent: &NodeAgent,
    pod: &Pod,
    pod_dir: &Path,
) -> Result<Volumes, String> {
    let ns = pod.namespace().unwrap_or_default();
    let mut out = Volumes::new();
    for sub in ["logs", "termination", "home"] {
        std::fs::create_dir_all(pod_dir.join(sub)).map_err(|e| e.to_string())?;
    }
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        if let Some(source) = &v.persistent_volume_claim {
            let dir = pv_of_claim(&agent.client, &ns, &source.claim_name, None).await?;
            std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
            out.insert(v.name.clone(), (dir, true));
            continue;
        }
        let dir = pod_dir.join("volumes").join(&v.name);
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let mut files: Vec<SecretFiles> = Vec::new();
        if let Some(s) = &v.secret {
            files.push((
                s.secret_name.clone().unwrap_or_default(),
                items(&s.items),
                s.default_mode.unwrap_or(DEFAULT_MODE),
            ));
        }
        if let Some(p) = &v.projected {
            for source in p.sources.iter().flatten() {
                if let Some(s) = &source.secret {
                    files.push((
                        s.name.clone(),
                        items(&s.items),
                        p.default_mode.unwrap_or(DEFAULT_MODE),
                    ));
                }
            }
        }
        for (secret, items, default_mode) in files {
            let data = runtime::secret_data(&agent.client, &ns, &secret)
                .await
                .map_err(|e| e.to_string())?
                .unwrap_or_default();
            let entries = items
                .unwrap_or_else(|| data.keys().map(|k| (k.clone(), k.clone(), None)).collect());
            for (key, path, mode) in entries {
                if let Some(value) = data.get(&key) {
                    let file = dir.join(path);
                    if let Some(parent) = file.parent() {
                        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                    }
                    std::fs::write(&file, value).map_err(|e| e.to_string())?;
                    let mode = mode.unwrap_or(default_mode) as u32;
                    use std::os::unix::fs::PermissionsExt;
                    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(mode))
                        .map_err(|e| e.to_string())?;
                }
            }
        }
        out.insert(v.name.clone(), (dir, false));
    }
    Ok(out)
}

/// Runs (or plays) one container; records the run.
pub async fn run_container(
    agent: &NodeAgent,
    pod: &Pod,
    c: &Container,
    volumes: &Volumes,
    pod_dir: &Path,
    term: watch::Receiver<Option<Duration>>,
) -> Exit {
    let started = jiff::Timestamp::now();
    let role = pod.labels().get(ROLE).cloned();
    let is_build = role.as_deref() == Some("build");
    if is_build && c.name == RECEIVER {
        return Exit {
            code: 0,
            message: String::new(),
            started,
            finished: jiff::Timestamp::now(),
        };
    }
    let log = pod_dir.join("logs").join(format!("{}.log", c.name));
    let term_file = pod_dir.join("termination").join(&c.name);
    let _ = std::fs::write(&term_file, b"");
    let mut pairs = vec![(
        c.termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into()),
        term_file.to_string_lossy().into_owned(),
    )];
    let (mut pv_dirs, mut mounts) = (Vec::new(), Vec::new());
    for m in c.volume_mounts.iter().flatten() {
        let Some((dir, is_pv)) = volumes.get(&m.name) else {
            continue;
        };
        let host = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => dir.join(sub),
            None => dir.clone(),
        };
        let _ = std::fs::create_dir_all(&host);
        if *is_pv {
            pv_dirs.push(dir.clone());
        }
        mounts.push(host.clone());
        pairs.push((
            m.mount_path.trim_end_matches('/').to_string(),
            host.to_string_lossy().into_owned(),
        ));
    }
    let rw = Rewriter::new(pairs);
    let fail = |message: String| Exit {
        code: 128,
        message,
        started,
        finished: jiff::Timestamp::now(),
    };
    let env = match runtime::resolve_env(&agent.client, pod, c).await {
        Ok(env) => env,
        Err(e) => return fail(format!("CreateContainerConfigError: {e}")),
    };
    let mut env: Vec<(String, String)> = env.into_iter().map(|(k, v)| (k, rw.apply(&v))).collect();
    let bin_dir = agent
        .opts
        .hearth_bin
        .parent()
        .unwrap_or(Path::new("/"))
        .to_string_lossy()
        .into_owned();
    if !env.iter().any(|(k, _)| k == "PATH") {
        env.push((
            "PATH".into(),
            format!("{bin_dir}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
        ));
    }
    env.push((
        "HOME".into(),
        pod_dir.join("home").to_string_lossy().into_owned(),
    ));
    env.push(("HOSTNAME".into(), pod.name_any()));
    let args: Vec<String> = c.args.iter().flatten().map(|a| rw.apply(a)).collect();
    let index = agent.runs.start(Run {
        namespace: pod.namespace().unwrap_or_default(),
        pod: pod.name_any(),
        container: c.name.clone(),
        role,
        node: agent.node.clone(),
        pv_dirs,
        mounts,
        started: Instant::now(),
        ended: None,
        exit_code: None,
        message: String::new(),
    });
    let command = Command {
        agent,
        container: c,
        rw: &rw,
        args,
        env,
        pod_dir,
        log: &log,
    };
    let ran = if is_build && c.name == "buildkit" {
        play_buildkit(command, pod, term).await
    } else {
        command.run(term).await
    };
    let code = match ran {
        Ok(code) => code,
        Err(e) => {
            agent.runs.finish(index, 128, &e);
            return fail(e);
        }
    };
    let message = runtime::termination_message(
        &term_file,
        &log,
        c.termination_message_policy.as_deref(),
        code,
    );
    agent.runs.finish(index, code, &message);
    Exit {
        code,
        message,
        started,
        finished: jiff::Timestamp::now(),
    }
}

/// A container's command, ready to run as a process.
struct Command<'a> {
    agent: &'a NodeAgent,
    container: &'a Container,
    rw: &'a Rewriter,
    args: Vec<String>,
    env: Vec<(String, String)>,
    pod_dir: &'a Path,
    log: &'a Path,
}

impl Command<'_> {
    /// Runs `command` + `args` to the end; Err when it cannot start.
    async fn run(self, term: watch::Receiver<Option<Duration>>) -> Result<i32, String> {
        let Some(command) = self.container.command.clone() else {
            return Err("container has no command (image entrypoints are not modelled)".into());
        };
        let mut argv: Vec<String> = command.iter().map(|a| self.rw.apply(a)).collect();
        argv.extend(self.args);
        let cwd = self
            .container
            .working_dir
            .as_deref()
            .map(|w| PathBuf::from(self.rw.apply(w)))
            .unwrap_or_else(|| self.pod_dir.join("home"));
        let spec = ProcessSpec {
            node: self.agent.node.clone(),
            argv,
            env: self.env,
            cwd,
            log: self.log.to_path_buf(),
        };
        runtime::run_process(spec, &self.agent.procs, term).await
    }
}

/// The builder's `buildkit` container: buildkitd and buildctl played in-process (their output
/// kept apart), then the container's real script run as a process with a
/// `buildctl-daemonless.sh` on PATH that replays that output and exit status, so the script's
/// tee, redaction and termination message are the real ones. A terminated play is the
/// container's end.
async fn play_buildkit(
    mut command: Command<'_>,
    pod: &Pod,
    term: watch::Receiver<Option<Duration>>,
) -> Result<i32, String> {
    let played = command.pod_dir.join("buildctl.out");
    let play = buildkit::Play {
        args: command.args.clone(),
        env: command.env.clone(),
        log: played.clone(),
        seed: pod.uid().unwrap_or_default(),
    };
    let mut kill = term.clone();
    let fut = buildkit::play(&command.agent.opts.buildkit, play, term.clone());
    tokio::pin!(fut);
    let code = tokio::select! {
        code = &mut fut => code,
        grace = runtime::wait_term(&mut kill) => tokio::select! {
            code = &mut fut => code,
            _ = tokio::time::sleep(grace) => 137,
        },
    };
    if term.borrow().is_some() {
        let _ = std::fs::copy(&played, command.log);
        return Ok(code);
    }
    let bin = command.pod_dir.join("buildctl-bin");
    std::fs::create_dir_all(&bin).map_err(|e| e.to_string())?;
    let shim = bin.join("buildctl-daemonless.sh");
    std::fs::write(
        &shim,
        format!("#!/bin/sh\ncat '{}'\nexit {code}\n", played.display()),
    )
    .map_err(|e| e.to_string())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&shim, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| e.to_string())?;
    for (k, v) in command.env.iter_mut() {
        if k == "PATH" {
            *v = format!("{}:{v}", bin.display());
        }
    }
    command.run(term).await
}
