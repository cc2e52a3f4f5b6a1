# syntax=docker/dockerfile:1
# vecmem: build with the pinned toolchain, run as an unprivileged user on a
# slim Debian. The binary links only glibc and libgcc (both in the base).
#
# Stages: `chef` has the toolchain and cargo-chef; `planner` reduces the
# sources to a recipe of the dependency tree; `build` compiles the
# dependencies from that recipe in a layer of their own (reused until
# Cargo.toml or Cargo.lock change: the fat-LTO engine build takes ~20 min),
# then compiles vecmem itself.

FROM rust:1.95-bookworm AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS build
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --recipe-path recipe.json --bin vecmem
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY config config
COPY src src
# Declared in Cargo.toml ([[bench]]), so cargo wants it present.
COPY benches/hot_paths.rs benches/hot_paths.rs
RUN cargo build --release --locked --bin vecmem \
 && cp target/release/vecmem /usr/local/bin/vecmem

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/vecmem --create-home vecmem \
 && mkdir -p /var/lib/vecmem/data \
 && chown -R vecmem:vecmem /var/lib/vecmem
COPY --from=build /usr/local/bin/vecmem /usr/local/bin/vecmem
USER 10001:10001
WORKDIR /var/lib/vecmem
# Configuration is by environment only: compiled-in defaults plus VECMEM__*.
ENV VECMEM__BACKEND__EMBEDDED__PATH=/var/lib/vecmem/data
# Used by the embedded engine only; with backend.kind = "qdrant" it stays empty.
VOLUME ["/var/lib/vecmem/data"]
# gRPC; HTTP (REST gateway, health, metrics)
EXPOSE 50051 8090
# `vecmem health` probes /health/ready on server.http_addr (https when
# server.tls is set, trusting exactly the server's certificate), exit 0 or 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["vecmem", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["vecmem"]
CMD ["serve"]
