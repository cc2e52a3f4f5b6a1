# syntax=docker/dockerfile:1
# vecmem: build with the pinned toolchain, run as an unprivileged user on a
# slim Debian. The binary links only glibc and libgcc (both in the base).

FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY proto proto
COPY config config
COPY src src
# Declared in Cargo.toml ([[bench]]), so cargo wants it present.
COPY benches/hot_paths.rs benches/hot_paths.rs
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin vecmem \
 && cp target/release/vecmem /usr/local/bin/vecmem

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/vecmem --create-home vecmem \
 && mkdir -p /var/lib/vecmem/data \
 && chown -R vecmem:vecmem /var/lib/vecmem
COPY --from=build /usr/local/bin/vecmem /usr/local/bin/vecmem
USER vecmem
WORKDIR /var/lib/vecmem
ENV VECMEM__BACKEND__EMBEDDED__PATH=/var/lib/vecmem/data
VOLUME ["/var/lib/vecmem/data"]
# gRPC; HTTP (REST gateway, health, metrics)
EXPOSE 50051 8090
# `vecmem health` probes /health/ready on server.http_addr (https when
# server.tls is set, trusting exactly the server's certificate), exit 0 or 1.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 CMD ["vecmem", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["vecmem"]
CMD ["serve"]
