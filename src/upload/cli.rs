//! `hearth receive`: the builder pod's side of an upload. Without `--stdin` it is the
//! receiver init container's main process (waits for the upload, exits 0 once the context is
//! in, non-zero with the reason when it fails or `--timeout` passes); with `--stdin` it is
//! the process `hearth build` execs in that container to stream the frame.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use super::receive::{receive_once, wait_for_upload, Expect};
use super::{is_sha256_hex, UploadError};

/// Flags of `hearth receive`.
#[derive(Clone, Debug, Args)]
pub struct ReceiveArgs {
    /// The receiver's directory (an emptyDir); the context lands in `DIR/context`.
    #[arg(long)]
    pub dir: PathBuf,
    /// Read one upload frame from stdin and reply on stdout (what `hearth build` execs).
    #[arg(long, conflicts_with_all = ["sha256", "size"])]
    pub stdin: bool,
    /// The sha256 of the tar to accept (`spec.source.upload.sha256`).
    #[arg(long, required_unless_present = "stdin")]
    pub sha256: Option<String>,
    /// Its size in bytes.
    #[arg(long, required_unless_present = "stdin")]
    pub size: Option<u64>,
    /// Longest wait for the upload (Go duration).
    #[arg(long, default_value = "10m")]
    pub timeout: String,
}

/// Runs `hearth receive`. Exit codes: 0 received, 1 refused or failed, 2 bad flags,
/// 3 timed out.
pub fn run(args: &ReceiveArgs) -> ExitCode {
    let timeout: Duration = match args.timeout.parse::<kube::core::Duration>() {
        Ok(d) if !d.is_negative() => d.into(),
        _ => {
            eprintln!("--timeout: {:?} is not a duration like 10m", args.timeout);
            return ExitCode::from(2);
        }
    };
    let result = if args.stdin {
        // Bound the exec'd process too: a sender that stalls must not hold it forever.
        let dir = args.dir.clone();
        std::thread::spawn(move || {
            std::thread::sleep(timeout);
            let err = Err(UploadError::Timeout(timeout));
            super::receive::record(&dir, &err);
            eprintln!("hearth receive: no complete upload within {timeout:?}");
            std::process::exit(3);
        });
        let stdin = std::io::stdin().lock();
        let mut stdout = std::io::stdout().lock();
        receive_once(stdin, &mut stdout, &args.dir).map(|r| {
            eprintln!(
                "hearth receive: {} entries, sha256 {} verified",
                r.entries, r.sha256
            )
        })
    } else {
        let (Some(sha256), Some(size)) = (args.sha256.clone(), args.size) else {
            eprintln!("--sha256 and --size are required without --stdin");
            return ExitCode::from(2);
        };
        if !is_sha256_hex(&sha256) {
            eprintln!("--sha256: {sha256:?} is not a lower-case hex sha256");
            return ExitCode::from(2);
        }
        eprintln!("hearth receive: waiting up to {timeout:?} for {size} bytes, sha256 {sha256}");
        wait_for_upload(
            &args.dir,
            &Expect { size, sha256 },
            timeout,
            Duration::from_millis(200),
        )
        .map(|()| eprintln!("hearth receive: context received"))
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e @ UploadError::Timeout(_)) => {
            eprintln!("hearth receive: {e}");
            ExitCode::from(3)
        }
        Err(e) => {
            eprintln!("hearth receive: {e}");
            ExitCode::from(1)
        }
    }
}
