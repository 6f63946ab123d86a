//! The `hearth simulate` subcommand: pick a workload (a built-in name or a file), replay it
//! under every strategy, print the table or `--json`.

use std::io::Write;
use std::process::ExitCode;

use super::builtin::{self, BUILTINS, DEFAULT};
use super::{parse, simulate_traced, Options, SimError};

/// Arguments of `hearth simulate`.
#[derive(Debug, clap::Args)]
pub struct SimulateArgs {
    /// A built-in workload name (see `--list`) or the path of a JSON Lines workload file.
    #[arg(long, default_value = DEFAULT)]
    pub workload: String,
    /// Seed of the build-time noise: the same seed gives the same result.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Spread of real build times around the workload's (log-normal sigma); 0 for none.
    #[arg(long, default_value_t = 0.1)]
    pub jitter: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write every build's outcome under every strategy to this file (JSON Lines:
    /// strategy, line, at, namespace, key, warmth, node, queuedSeconds, seconds,
    /// boundSeconds), to see which builds a strategy lost time on.
    #[arg(long, value_name = "PATH")]
    pub trace: Option<std::path::PathBuf>,
    /// List the built-in workloads and exit.
    #[arg(long)]
    pub list: bool,
}

/// Runs `hearth simulate`.
pub fn run(args: &SimulateArgs) -> anyhow::Result<ExitCode> {
    if args.list {
        for b in BUILTINS {
            println!("{:<14} {}", b.name, b.about);
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !(args.jitter.is_finite() && (0.0..=1.0).contains(&args.jitter)) {
        anyhow::bail!("--jitter must be between 0 and 1");
    }
    let text = match builtin::find(&args.workload) {
        Some(b) => b.text.to_string(),
        None => {
            let bytes = std::fs::read(&args.workload).map_err(|source| SimError::NotFound {
                name: args.workload.clone(),
                builtins: BUILTINS
                    .iter()
                    .map(|b| b.name)
                    .collect::<Vec<_>>()
                    .join(", "),
                source,
            })?;
            String::from_utf8(bytes).map_err(|e| {
                let bytes = e.as_bytes();
                let at = e.utf8_error().valid_up_to();
                let line = bytes[..at].iter().filter(|b| **b == b'\n').count() + 1;
                anyhow::anyhow!(
                    "{}: line {line}: not UTF-8 text (a binary file?); a workload is JSON lines",
                    args.workload
                )
            })?
        }
    };
    let workload = parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", args.workload))?;
    let opts = Options {
        seed: args.seed,
        jitter: args.jitter,
        ..Options::default()
    };
    let (report, trace) = simulate_traced(&args.workload, &workload, &opts)?;
    if let Some(path) = &args.trace {
        let file = std::fs::File::create(path)
            .map_err(|e| anyhow::anyhow!("--trace {}: {e}", path.display()))?;
        let mut out = std::io::BufWriter::new(file);
        super::report::write_trace(&mut out, &workload, &trace)
            .and_then(|()| out.flush())
            .map_err(|e| anyhow::anyhow!("--trace {}: {e}", path.display()))?;
    }
    let out = if args.json {
        serde_json::to_string_pretty(&report)? + "\n"
    } else {
        super::report::table(&report)
    };
    // A closed pipe (`| head`) is not an error worth a panic.
    match std::io::stdout().lock().write_all(out.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(ExitCode::SUCCESS),
    }
}
