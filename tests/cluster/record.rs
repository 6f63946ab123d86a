//! What the nodes ran, for test assertions: one [`Run`] per container run (pod, role label,
//! node, the host dirs it mounted, start and end instants, exit code, termination message),
//! and the process groups still alive, so a dropped cluster leaves no process behind.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One container run on a node.
#[derive(Clone, Debug)]
pub struct Run {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Container name.
    pub container: String,
    /// The pod's `hearth.dev/role` label (`build`, `restore`, `save`, `gc`...).
    pub role: Option<String>,
    /// Node it ran on.
    pub node: String,
    /// Host dirs of the PV-backed volumes it mounted (replica PVCs).
    pub pv_dirs: Vec<PathBuf>,
    /// Host dirs of every volume it mounted.
    pub mounts: Vec<PathBuf>,
    /// When its process (or the played buildkitd) started.
    pub started: Instant,
    /// When it exited; None while it runs.
    pub ended: Option<Instant>,
    /// Exit code (128 + signal when killed).
    pub exit_code: Option<i32>,
    /// Its termination message.
    pub message: String,
}

/// Every container run of the cluster, shared by the kubelets.
#[derive(Clone, Default)]
pub struct Runs(Arc<Mutex<Vec<Run>>>);

impl Runs {
    /// Records a start; returns the run's index for [`Runs::finish`].
    pub fn start(&self, run: Run) -> usize {
        let mut runs = self.0.lock().unwrap();
        runs.push(run);
        runs.len() - 1
    }

    /// Records an end.
    pub fn finish(&self, index: usize, exit_code: i32, message: &str) {
        let mut runs = self.0.lock().unwrap();
        let run = &mut runs[index];
        if run.ended.is_none() {
            run.ended = Some(Instant::now());
            run.exit_code = Some(exit_code);
            run.message = message.to_string();
        }
    }

    /// Ends every unfinished run on a node (its processes were killed with it).
    pub fn kill_node(&self, node: &str) {
        let mut runs = self.0.lock().unwrap();
        for run in runs
            .iter_mut()
            .filter(|r| r.node == node && r.ended.is_none())
        {
            run.ended = Some(Instant::now());
            run.exit_code = Some(137);
        }
    }

    /// Every run so far, in start order.
    pub fn all(&self) -> Vec<Run> {
        self.0.lock().unwrap().clone()
    }

    /// The runs of pods with this role label.
    pub fn runs(&self, role: &str) -> Vec<Run> {
        self.all()
            .into_iter()
            .filter(|r| r.role.as_deref() == Some(role))
            .collect()
    }

    /// Every two runs that used the same PV dir at overlapping times (a run still going
    /// counts as ending now). There must be none: one volume, one user at a time.
    pub fn overlaps(&self) -> Vec<(Run, Run)> {
        let runs = self.all();
        let now = Instant::now();
        let mut out = Vec::new();
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                let shared = a.pv_dirs.iter().any(|d| b.pv_dirs.contains(d));
                let (a_end, b_end) = (a.ended.unwrap_or(now), b.ended.unwrap_or(now));
                if shared && a.started < b_end && b.started < a_end {
                    out.push((a.clone(), b.clone()));
                }
            }
        }
        out
    }

    /// A short table of the runs, for failure output.
    pub fn describe(&self, since: Instant) -> String {
        let mut out = String::new();
        for r in self.all() {
            let at = |t: Instant| t.saturating_duration_since(since).as_secs_f64();
            out.push_str(&format!(
                "  {:>7.2}s..{:<9} {}/{} [{}] role={} node={} exit={} pv={:?}\n",
                at(r.started),
                r.ended
                    .map(|e| format!("{:.2}s", at(e)))
                    .unwrap_or_else(|| "running".into()),
                r.pod,
                r.container,
                r.namespace,
                r.role.as_deref().unwrap_or("-"),
                r.node,
                r.exit_code
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.pv_dirs
                    .iter()
                    .map(|d| d
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned())
                    .collect::<Vec<_>>(),
            ));
        }
        out
    }
}

/// Process groups of running containers, by node.
#[derive(Clone, Default)]
pub struct Procs(Arc<Mutex<Vec<(String, i32)>>>);

impl Procs {
    /// A container's process group started on `node`.
    pub fn add(&self, node: &str, pgid: i32) {
        self.0.lock().unwrap().push((node.to_string(), pgid));
    }

    /// It exited.
    pub fn remove(&self, pgid: i32) {
        self.0.lock().unwrap().retain(|(_, p)| *p != pgid);
    }

    /// SIGKILLs the process groups of one node, or of every node.
    pub fn kill(&self, node: Option<&str>) {
        let mut procs = self.0.lock().unwrap();
        procs.retain(|(n, pgid)| {
            if node.is_some_and(|node| node != n) {
                return true;
            }
            if let Some(pid) = rustix::process::Pid::from_raw(*pgid) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
            false
        });
    }
}
