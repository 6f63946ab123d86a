//! `cargo bench --bench snapshot -- [--size 1GiB] [--workdir DIR]`: starts the tests' S3
//! server (s3s-fs, with its GetObject reading in one piece: `FastGet`) on 127.0.0.1, runs
//! `hearth snapshot bench` against it with the release `hearth` binary, and stops the
//! server. Any `hearth snapshot bench` flag may follow `--`.

#[path = "../tests/snapshot_support/mod.rs"]
mod snapshot_support;

use clap::Parser;

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    bench: hearth::snapshot::bench::BenchArgs,
}

fn main() -> anyhow::Result<()> {
    let server_rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = server_rt.block_on(snapshot_support::S3Server::start_fast_get());
    let mut args = vec!["bench".to_string(), "--store".into(), server.url()];
    args.extend([
        "--s3-endpoint".into(),
        server.endpoint.clone(),
        "--s3-path-style".into(),
    ]);
    args.extend(["--exe".into(), env!("CARGO_BIN_EXE_hearth").into()]);
    // `cargo bench` passes `--bench`; the benchmark needs no such flag.
    args.extend(std::env::args().skip(1).filter(|a| a != "--bench"));
    let cli = Cli::parse_from(args);
    let result = hearth::snapshot::bench::run(&cli.bench);
    drop(server);
    drop(server_rt);
    result.map(|_| ())
}
