# The hearth image: one binary for the controller (`hearth controller`) and the snapshot
# restore/save Jobs (`hearth snapshot ...`).
#   docker build -t ghcr.io/hearth-dev/hearth:dev .
# The controller runs as a non-root user (the chart sets it too); the snapshot Jobs override
# it to root with the few capabilities that keep numeric ownership (docs/install.md).

ARG RUST_VERSION=1.95
FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between local rebuilds; the binary is copied
# out because the target dir does not outlive this step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin hearth \
    && install -D -m 0755 target/release/hearth /out/hearth

FROM docker.io/library/debian:bookworm-slim
# ca-certificates: the snapshot Jobs talk to S3 over TLS.
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/hearth /usr/local/bin/hearth
USER 65532:65532
ENTRYPOINT ["/usr/local/bin/hearth"]
CMD ["--help"]
