# One image for both of the original's services: `blobprox serve` (the default command) and
# `blobprox keygen -p /.keys`. See docker-compose.yaml for how the two are run.
#
#   docker build -t blobprox:latest .                      # compiles inside the build (rust image)
#   cargo build --release && docker build --target prebuilt -t blobprox:latest .
#                                                           # copies the binary built on this host
#
# Both base images are build arguments, so the image builds where no registry can be reached:
# scripts/docker-test.sh makes RUNTIME_IMAGE with debootstrap and `docker import`. A binary built
# on the host needs a runtime base with the host's glibc or newer (Debian 12 or later here).
#
# No `# syntax=` line: it makes BuildKit fetch its Dockerfile frontend from a registry first.

# Cargo.toml says edition 2024 / rust-version 1.85; 1.95 is the toolchain the project is tested with.
ARG RUST_IMAGE=rust:1.95-slim-bookworm
# debian:bookworm-slim matches the glibc the binary is linked against in the build stage.
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---- runtime base: everything but the binary -----------------------------------------------------
# Why not distroless: the compose healthcheck needs a client inside the container, and distroless
# has neither a shell nor curl. curl (roughly 10 MB with its libraries) keeps the check a plain
# HTTP GET of /healthz. ca-certificates is needed for TLS to Azure Storage and Entra ID.
FROM ${RUNTIME_IMAGE} AS runtime-base

LABEL org.opencontainers.image.title="blobprox" \
      org.opencontainers.image.description="An encrypting HTTP proxy in front of Azure Blob Storage" \
      org.opencontainers.image.licenses="Apache-2.0"

# The unprivileged user the proxy runs as. Set them to the owner of the host directories that are
# bind-mounted into the container (the key directory must be writable by keygen and readable by
# serve; the private key file is mode 0600).
ARG UID=10001
ARG GID=10001

# A base that already has curl and the CA certificates (as the debootstrap one does) needs no
# package index, and so no network. Not version-pinned: Debian replaces package versions on
# security updates, so a pin breaks the build instead of picking up the fix.
# hadolint ignore=DL3008
RUN if ! command -v curl >/dev/null || [ ! -e /etc/ssl/certs/ca-certificates.crt ]; then \
        apt-get update \
        && apt-get install -y --no-install-recommends ca-certificates curl \
        && rm -rf /var/lib/apt/lists/*; \
    fi

# getent: a UID/GID that already exists in the base image (e.g. GID 100, "users") is reused.
RUN (getent group "${GID}" >/dev/null || groupadd --gid "${GID}" blobprox) \
    && (getent passwd "${UID}" >/dev/null \
        || useradd --uid "${UID}" --gid "${GID}" --no-create-home --home-dir /nonexistent \
                   --shell /usr/sbin/nologin blobprox) \
    && mkdir -p /.keys \
    && chown "${UID}:${GID}" /.keys \
    && chmod 0700 /.keys

# PROD=true: JSON logs, and missing keys or API_KEY stop the start with a one-line error.
# The storage service principal is read from STORAGE_CREDS (default /.secrets/creds.json).
ENV HOST=0.0.0.0 \
    PORT=8082 \
    PROD=true \
    KEY_VAULT_PATH=/.keys

USER ${UID}:${GID}
EXPOSE 8082

# No HEALTHCHECK here: the same image also runs the one-shot `keygen` and `credentials`
# commands, so the check lives on the serving service in docker-compose.yaml
# (curl -fsS http://127.0.0.1:8082/healthz). With plain `docker run`, add
# --health-cmd 'curl -fsS http://127.0.0.1:8082/healthz'.
# blobprox handles SIGTERM itself (it drains transfers for SHUTDOWN_GRACE_SECS), so it can be
# PID 1 without an init.
ENTRYPOINT ["blobprox"]
CMD ["serve"]

# ---- prebuilt: the binary built on the host --------------------------------------------------------
# Before the build stage, so that the classic builder (which runs every stage up to --target)
# never needs the rust image for it. .dockerignore lets only these binaries out of target/.
FROM runtime-base AS prebuilt
ARG BINARY=target/release/blobprox
COPY ${BINARY} /usr/local/bin/blobprox

# ---- build: compile inside the image ---------------------------------------------------------------
FROM ${RUST_IMAGE} AS build

# The slim image already has gcc and libc6-dev, which is all the C code needs: aws-lc-sys builds
# with its `cc` builder (no cmake; its build log says "Building with: CC") and mimalloc is plain C.
WORKDIR /src

# Dependencies first, in their own layer: build them against a dummy crate so that editing src/
# does not rebuild the dependency tree.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
    && echo 'fn main() {}' > src/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src

# The real sources. COPY keeps the files' old timestamps, which can be older than the dummy build:
# touch them so that cargo rebuilds the crate instead of shipping the dummy binary.
COPY src ./src
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked \
    && cp target/release/blobprox /usr/local/bin/blobprox

# ---- runtime (the default target): the binary compiled above ---------------------------------------
FROM runtime-base AS runtime
COPY --from=build /usr/local/bin/blobprox /usr/local/bin/blobprox
