# syntax=docker/dockerfile:1
# Wallet & budget service image.
#   docker build -t wallet-service:dev .
#   docker run --rm -p 3003:3003 -e DATABASE_URL=... -e JWT_SECRET=... wallet-service:dev
# SQL migrations are embedded in the binary at compile time (refinery embed_migrations!), so the runtime
# image carries only the binary. Needs BuildKit (default since Docker 23) for the cache mounts.
#
# What it builds is what the tests run: the `wallet-service` binary of this workspace, default features,
# `--locked` to Cargo.lock, started as `wallet-service serve` (tests/api/helpers/service.rs); only the
# profile differs (release here, the dev profile in tests). scripts/validate-deploy.sh lints this file with
# hadolint and checkov; it is not built in CI (no Docker engine there).
#
# checkov:skip=CKV_DOCKER_2: No HEALTHCHECK: Kubernetes ignores it and probes /health and /ready itself (k8s/base/deployment.yaml), and the runtime image has no HTTP client to run one with.

############################ builder ############################
FROM rust:1.95-bookworm AS builder
WORKDIR /build

# build.rs installs the /docs viewer (swagger-ui-dist) from the npm registry with `npm ci` against
# web/package-lock.json and embeds its assets in the binary: the builder needs Node.js and npm, the runtime
# image does not.
# DL3008 (pin apt versions) is ignored with reason: Debian replaces a point release's packages in place, so a
# pinned version stops installing; the `bookworm` base image pins the release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends nodejs npm \
 && rm -rf /var/lib/apt/lists/*

# Only what the build needs (see .dockerignore, which whitelists Cargo.toml, Cargo.lock, build.rs, actors/,
# loadtest/ when present, src/, sql/, tests/, benches/, web/'s package files): copying the whole context lets an
# optional member be absent.
COPY . .

# Registry and target caches persist between builds; the binary is copied out of the cached target dir.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/build/target \
    cargo build --release --locked --bin wallet-service \
 && install -D -m 0755 target/release/wallet-service /out/wallet-service

############################ runtime ############################
FROM debian:bookworm-slim AS runtime

# DL3008 ignored as in the builder stage: these are data packages kept current within the base image's release.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tzdata \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 wallet \
 && useradd --system --uid 10001 --gid wallet --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin wallet

COPY --from=builder /out/wallet-service /usr/local/bin/wallet-service

# Numeric user so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001
ENV PORT=3003
EXPOSE 3003
# Liveness/readiness are Kubernetes probes on /health and /ready (see k8s/base/deployment.yaml). With
# METRICS_PORT set (k8s: 9090), /metrics moves to that port.
ENTRYPOINT ["/usr/local/bin/wallet-service"]
CMD ["serve"]
