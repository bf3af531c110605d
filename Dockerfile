# The Waymark controller image: a static (musl) binary on an empty base, run as a non-root user.
#
#   docker build -t waymark:0.1.0 .
#
# Add `--build-arg WAYMARK_GIT_COMMIT=$(git rev-parse --short HEAD)` to label
# waymark_build_info with the commit.
#
# The tag is the version in Cargo.toml, which is also the Helm chart's appVersion and the tag
# in config/manager/; tests/image.rs keeps them in step. The base images are named without a
# registry host: your container engine resolves them from the registry it is configured with.

# --- build: a statically linked binary for the build machine's architecture (amd64 or arm64).
FROM rust:1.95-slim-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends musl-tools ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
# The commit the image is built from, shown by waymark_build_info{git_commit} (empty: left out).
ARG WAYMARK_GIT_COMMIT=""
# Cargo.lock pins every dependency (--locked); the cache mounts keep the registry and the
# target directory between builds.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --target "$(uname -m)-unknown-linux-musl" --bin waymark \
    && cp "target/$(uname -m)-unknown-linux-musl/release/waymark" /waymark

# --- run: nothing but the binary and the CA bundle (for a Prometheus behind public TLS).
FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /waymark /usr/local/bin/waymark
# The distroless "nonroot" user: numeric, so Kubernetes can verify runAsNonRoot.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/waymark"]
# `docker run waymark:0.1.0` runs the operator; the chart and config/manager/ pass
# `controller` and its flags as args, which replace this CMD.
CMD ["controller"]
