//! `hearth build`, `hearth wait` and `hearth logs`: the client for people and CI runners,
//! needing only a kubeconfig. Pure parts ([`args`]: flags to an ImageBuild; [`follow`]:
//! status to progress lines, exit codes and the outcome) apart from the loop that talks to
//! the API ([`session`]) and the real log and exec plumbing ([`kube_io`]).

pub mod args;
pub mod bad_input;
pub mod buildx;
pub mod follow;
pub mod kube_io;
pub mod session;
pub mod ui;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::StreamExt;
use kube::api::{Api, PostParams};
use kube::Client;

use self::args::{BuildArgs, LogsArgs, OutputFormat, UploadInfo, WaitArgs};
use self::bad_input::BadInput;
use self::follow::{outcome_json, render_outcome, Exit};
use self::session::{FollowOptions, Followed, LogSource, PendingUpload, Session, Uploader};
use self::ui::Ui;
use crate::api::image_build::dockerfile_from_context;
use crate::api::ImageBuild;

/// Reads an environment variable.
pub type GetEnv = Box<dyn Fn(&str) -> Option<String> + Send>;

/// What a command needs from the outside world; tests build one over the fake API.
pub struct Env {
    /// The API client.
    pub client: Client,
    /// Namespace when `-n` is not given.
    pub default_namespace: String,
    /// The builder's log.
    pub logs: Arc<dyn LogSource>,
    /// The context upload.
    pub uploader: Arc<dyn Uploader>,
    /// Output.
    pub ui: Box<dyn Ui>,
    /// Interrupts (Ctrl-C).
    pub signals: BoxStream<'static, ()>,
    /// How often status is read.
    pub poll: Duration,
    /// Random suffixes for build names.
    pub suffix: Box<dyn FnMut() -> String + Send>,
    /// Environment variables (for `--build-arg KEY`).
    pub getenv: GetEnv,
}

impl Env {
    /// The real thing: the kubeconfig's client, `pods/log`, `pods/exec`, Ctrl-C, stdio (a
    /// progress display when stderr is a terminal).
    pub async fn from_kubeconfig() -> Result<Env, kube::Error> {
        use std::io::IsTerminal;
        let client = Client::try_default().await?;
        let pods = Api::default_namespaced(client.clone());
        let ui: Box<dyn Ui> = if std::io::stderr().is_terminal() {
            Box::new(ui::TerminalUi::new())
        } else {
            Box::new(ui::PlainUi::stdio())
        };
        let signals = futures::stream::unfold((), |()| async {
            tokio::signal::ctrl_c().await.ok().map(|_| ((), ()))
        })
        .boxed();
        Ok(Env {
            default_namespace: client.default_namespace().to_string(),
            logs: Arc::new(kube_io::KubeLogs(pods.clone())),
            uploader: Arc::new(kube_io::KubeExec(pods)),
            client,
            ui,
            signals,
            poll: Duration::from_secs(1),
            suffix: Box::new(random_suffix),
            getenv: Box::new(|k| std::env::var(k).ok()),
        })
    }

    fn session(&self, namespace: &str) -> Session {
        // The real log source and uploader are bound to the default namespace's pods; a
        // different `-n` needs them rebound.
        Session {
            builds: Api::namespaced(self.client.clone(), namespace),
            pods: Api::namespaced(self.client.clone(), namespace),
            caches: Api::namespaced(self.client.clone(), namespace),
            logs: self.logs.clone(),
            uploader: self.uploader.clone(),
            poll: self.poll,
        }
    }

    /// `-n` when given, else the kubeconfig's namespace.
    pub fn namespace(&self, flag: Option<&str>) -> String {
        flag.unwrap_or(&self.default_namespace).to_string()
    }

    /// Rebinds the real log source and uploader to `namespace` (`-n`).
    pub fn for_namespace(&mut self, namespace: &str) {
        if namespace != self.default_namespace {
            let pods = Api::namespaced(self.client.clone(), namespace);
            self.logs = Arc::new(kube_io::KubeLogs(pods.clone()));
            self.uploader = Arc::new(kube_io::KubeExec(pods));
        }
    }
}

fn random_suffix() -> String {
    let seed = format!("{:?}{}", std::time::SystemTime::now(), std::process::id());
    let hash = blake3::hash(seed.as_bytes());
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    hash.as_bytes()[..5]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A failure before or outside the build itself, with its exit code.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// Bad input (exit 2).
    #[error(transparent)]
    BadInput(#[from] BadInput),
    /// The API (exit 1).
    #[error(transparent)]
    Client(#[from] session::ClientError),
    /// A local file (exit 1).
    #[error("{0}")]
    Io(String),
}

impl CommandError {
    /// The exit code.
    pub fn exit(&self) -> Exit {
        match self {
            CommandError::BadInput(_) => Exit::BadInput,
            _ => Exit::Failed,
        }
    }
}

/// The context directory, packed: its size, hash and origin, and where the tar is.
pub struct PackedContext {
    /// For the ImageBuild.
    pub info: UploadInfo,
    /// The tar (removed when dropped).
    pub tar: tempfile::NamedTempFile,
    /// Entries packed.
    pub entries: u64,
    /// Entries skipped (sockets, FIFOs, devices).
    pub skipped: Vec<PathBuf>,
}

/// Packs DIR for `hearth build`: checks DIR and the Dockerfile (`-f` is a path on this
/// machine, as with `docker build`: inside DIR it travels in the context, outside it apart
/// from it), and finds the origin.
pub fn pack_context(dir: &Path, file: Option<&Path>) -> Result<PackedContext, BadInput> {
    let root = dir
        .canonicalize()
        .ok()
        .filter(|d| d.is_dir())
        .ok_or_else(|| BadInput::new("DIR", format!("{} is not a directory", dir.display())))?;
    // Inside DIR: its path there. Outside: the file itself, sent apart.
    let (dockerfile, apart) = match file {
        Some(f) => {
            let abs = f.canonicalize().map_err(|_| {
                BadInput::new("-f/--file", format!("{} does not exist", f.display()))
            })?;
            match abs.strip_prefix(&root) {
                Ok(inside) => (inside.to_path_buf(), None),
                // Outside: its path from DIR, both taken from `/`, as the API spells one.
                Err(_) => {
                    let from_root =
                        |p: &Path| p.to_string_lossy().trim_start_matches('/').to_string();
                    let rel = dockerfile_from_context(&from_root(&root), &from_root(&abs))
                        .ok_or_else(|| {
                            BadInput::new("-f/--file", format!("{} names no file", f.display()))
                        })?;
                    (PathBuf::from(rel), Some(abs))
                }
            }
        }
        None => (PathBuf::from("Dockerfile"), None),
    };
    let path = apart.clone().unwrap_or_else(|| root.join(&dockerfile));
    if !path.is_file() {
        return Err(BadInput::new(
            "-f/--file",
            format!("no Dockerfile at {}", path.display()),
        ));
    }
    let dir_name = root
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".into());
    let (remote, prefix) = git_origin(&root);
    let origin = args::origin_for(remote.as_deref(), &prefix, &dir_name);
    let mut tar = tempfile::NamedTempFile::new()
        .map_err(|e| BadInput::new("DIR", format!("cannot create a temporary file: {e}")))?;
    let packed = match &apart {
        None => {
            crate::upload::pack::pack(&root, std::slice::from_ref(&dockerfile), tar.as_file_mut())
        }
        Some(file) => crate::upload::pack::pack_apart(&root, file, tar.as_file_mut()),
    }
    .map_err(|e| BadInput::new("DIR", e.to_string()))?;
    Ok(PackedContext {
        info: UploadInfo {
            size: packed.size,
            sha256: packed.sha256,
            origin,
            dockerfile: dockerfile.to_string_lossy().into_owned(),
            separate_dockerfile: apart.is_some(),
        },
        tar,
        entries: packed.entries,
        skipped: packed.skipped,
    })
}

/// The git remote `origin` of the checkout holding `dir`, and `dir`'s path inside it (no git
/// installed, or no checkout: none).
fn git_origin(dir: &Path) -> (Option<String>, String) {
    let git = |args: &[&str]| {
        std::process::Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match git(&["remote", "get-url", "origin"]) {
        Some(remote) if !remote.is_empty() => {
            let prefix = git(&["rev-parse", "--show-prefix"]).unwrap_or_default();
            (Some(remote), prefix)
        }
        _ => (None, String::new()),
    }
}

async fn create(
    session: &Session,
    mut ib: ImageBuild,
    namespace: &str,
    suffix: &mut (dyn FnMut() -> String + Send),
) -> Result<ImageBuild, CommandError> {
    ib.metadata.namespace = Some(namespace.to_string());
    let mut tries = 0;
    loop {
        ib.metadata.name = Some(args::build_name(&ib.spec.output.image, &suffix()));
        match session.builds.create(&PostParams::default(), &ib).await {
            Err(kube::Error::Api(e)) if e.code == 409 && tries < 3 => tries += 1,
            other => return other.map_err(|e| CommandError::Client(e.into())),
        }
    }
}

fn write_files(args: &BuildArgs, ib: &ImageBuild) -> Result<(), CommandError> {
    let digest = ib.status.as_ref().and_then(|s| s.image_digest.clone());
    if let (Some(path), Some(d)) = (&args.digest_file, &digest) {
        std::fs::write(path, d)
            .map_err(|e| CommandError::Io(format!("--digest-file {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.metadata_file {
        let text = serde_json::to_string_pretty(&outcome_json(ib)).unwrap_or_default();
        std::fs::write(path, text)
            .map_err(|e| CommandError::Io(format!("--metadata-file {}: {e}", path.display())))?;
    }
    Ok(())
}

fn report(ui: &mut dyn Ui, format: OutputFormat, followed: &Followed) {
    if let Some(note) = &followed.note {
        if followed.exit != Exit::Succeeded {
            ui.line(note);
        }
    }
    match format {
        OutputFormat::Json => {
            let mut v = outcome_json(&followed.build);
            v["exitCode"] = (followed.exit.code()).into();
            ui.result(&format!(
                "{}\n",
                serde_json::to_string_pretty(&v).unwrap_or_default()
            ));
        }
        OutputFormat::Text => ui.result(&render_outcome(&followed.build, &followed.log_tail)),
    }
}

/// `hearth build`: returns the exit code, having printed the outcome or the error.
pub async fn build(args: BuildArgs, mut env: Env) -> Exit {
    match build_inner(&args, &mut env).await {
        Ok(exit) => exit,
        Err(e) => {
            env.ui.line(&format!("error: {e}"));
            e.exit()
        }
    }
}

async fn build_inner(args: &BuildArgs, env: &mut Env) -> Result<Exit, CommandError> {
    if args.tags.is_empty() {
        return Err(BadInput::new("-t/--tag", "an image to build is required").into());
    }
    if args.git.is_some() && args.dir.is_some() {
        return Err(BadInput::new("--git", "give either a local DIR or --git, not both").into());
    }
    let packed = match &args.dir {
        Some(dir) => Some(pack_context(dir, args.file.as_deref())?),
        None => None,
    };
    let ib = args::image_build(args, packed.as_ref().map(|p| &p.info), &env.getenv)?;
    let namespace = env.namespace(args.namespace.as_deref());
    env.for_namespace(&namespace);
    let session = env.session(&namespace);
    let ib = create(&session, ib, &namespace, &mut *env.suffix).await?;
    let name = ib.metadata.name.clone().unwrap_or_default();
    env.ui
        .line(&format!("created imagebuild {namespace}/{name}"));
    if let Some(p) = &packed {
        env.ui.line(&format!(
            "context: {} entries, {}, sha256 {}{}",
            p.entries,
            follow::human_bytes(p.info.size),
            &p.info.sha256[..12],
            if p.skipped.is_empty() {
                String::new()
            } else {
                format!(" ({} sockets/FIFOs/devices skipped)", p.skipped.len())
            }
        ));
    }
    if args.no_wait && packed.is_none() {
        env.ui.result(&format!("{namespace}/{name}\n"));
        return Ok(Exit::Succeeded);
    }
    let timeout: Duration = ib.spec.timeout.into();
    let opts = FollowOptions {
        upload: packed.as_ref().map(|p| PendingUpload {
            tar: p.tar.path().to_path_buf(),
            size: p.info.size,
            sha256: p.info.sha256.clone(),
        }),
        logs: true,
        stop_after_upload: args.no_wait,
        deadline: Some(timeout + Duration::from_secs(60)),
        cancel_at_deadline: true,
        cancel_on_signal: true,
    };
    let signals = std::mem::replace(&mut env.signals, futures::stream::empty().boxed());
    let followed = session
        .follow(&name, opts, env.ui.as_mut(), signals)
        .await?;
    if args.no_wait && followed.exit == Exit::Succeeded {
        env.ui.result(&format!("{namespace}/{name}\n"));
        return Ok(Exit::Succeeded);
    }
    write_files(args, &followed.build)?;
    report(env.ui.as_mut(), args.output, &followed);
    Ok(followed.exit)
}

/// `hearth wait`: follows an existing build; exits at once on Failed or Cancelled.
pub async fn wait(args: WaitArgs, mut env: Env) -> Exit {
    let namespace = env.namespace(args.namespace.as_deref());
    let deadline = match args
        .timeout
        .as_deref()
        .map(|t| args::parse_duration("--timeout", t, 24 * 7))
    {
        Some(Err(e)) => {
            env.ui.line(&format!("error: {e}"));
            return Exit::BadInput;
        }
        Some(Ok(d)) => Some(d.into()),
        None => None,
    };
    let session = env.session(&namespace);
    let opts = FollowOptions {
        deadline,
        ..Default::default()
    };
    let signals = std::mem::replace(&mut env.signals, futures::stream::empty().boxed());
    match session
        .follow(&args.name, opts, env.ui.as_mut(), signals)
        .await
    {
        Ok(followed) => {
            report(env.ui.as_mut(), args.output, &followed);
            followed.exit
        }
        Err(e) => {
            env.ui.line(&format!("error: {e}"));
            Exit::Failed
        }
    }
}

/// `hearth logs`: prints the builder's log of the build's current attempt.
pub async fn logs(args: LogsArgs, mut env: Env) -> Exit {
    let namespace = env.namespace(args.namespace.as_deref());
    env.for_namespace(&namespace);
    let session = env.session(&namespace);
    let ib = match session.builds.get(&args.name).await {
        Ok(ib) => ib,
        Err(e) => {
            env.ui
                .line(&format!("error: imagebuild {namespace}/{}: {e}", args.name));
            return Exit::Failed;
        }
    };
    let pod = session::builder_pod_name(&ib);
    let mut lines = session
        .logs
        .lines(&pod, session::BUILDER_CONTAINER, args.follow);
    let mut any = false;
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) => {
                any = true;
                env.ui.result(&format!("{line}\n"));
            }
            Err(e) => {
                env.ui.line(&format!(
                    "error: log of {pod} (phase {:?}): {e}",
                    follow::phase(&ib)
                ));
                return Exit::Failed;
            }
        }
    }
    if !any {
        env.ui.line(&format!(
            "{pod}: no log yet (phase {:?})",
            follow::phase(&ib)
        ));
    }
    Exit::Succeeded
}
