//! The `hearth` binary: a thin clap front end over the library.

use std::process::ExitCode;

use clap::Parser;

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
