//! The `hearth` binary: a thin clap front end over the library.

use std::process::ExitCode;

use clap::Parser;

/// jemalloc: less fragmentation than glibc malloc for the controller's many small, long-lived
/// objects (see the Scale section of docs/operator.md).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() -> ExitCode {
    hearth::crypto::install();
    let cli = hearth::cli::Cli::parse();
    match hearth::cli::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {}", hearth::cli::report(&err));
            ExitCode::from(2)
        }
    }
}
