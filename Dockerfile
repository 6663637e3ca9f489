# The one host image: the release `host` binary, every service's component, their migrations and
# the container manifests. The services are the manifests in deploy/manifests (one `<name>.toml`
# each, running the component `<name>`): the RUN steps below read their names from there, and
# this file names none. Which component a container runs is configuration: HOST_CONFIG names a
# manifest (/app/manifests/<name>.toml), and HOST_<SECTION>__<KEY> variables override any of its
# settings. Secrets (database URLs, AMQP_URL, HOST_ADMIN_TOKEN) come from the environment.
# Build: docker build -t wasm-platform/host .

# Rust, the wasm32-wasip2 target and cargo-chef, which caches the dependencies in a layer of
# their own: a change to the project's code rebuilds only the project's crates.
FROM rust:1.95-bookworm AS chef
RUN rustup target add wasm32-wasip2 \
    && cargo install cargo-chef --locked --version 0.1.77
WORKDIR /src

# The recipe: the workspace's manifests and lock file, which alone decide the dependencies.
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY --from=planner /src/recipe.json recipe.json
# The services' names, for `-p <name>` and for what the final stage copies.
COPY deploy/manifests deploy/manifests
RUN set -- \
    && for manifest in deploy/manifests/*.toml; do name=${manifest##*/}; set -- "$@" -p "${name%.toml}"; done \
    && cargo chef cook --locked --release -p host --recipe-path recipe.json \
    && cargo chef cook --locked --profile component --target wasm32-wasip2 "$@" --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY wit wit
COPY contracts contracts
COPY components components
COPY host host
# Then each service's .wasm (Cargo writes `-` in a crate's name as `_`) into /out/components and
# its migrations into /out/migrations/<name>, which the final stage copies whole.
RUN set -- \
    && for manifest in deploy/manifests/*.toml; do name=${manifest##*/}; set -- "$@" -p "${name%.toml}"; done \
    && cargo build --locked --release -p host \
    && cargo build --locked --profile component --target wasm32-wasip2 "$@" \
    && mkdir -p /out/components /out/migrations \
    && for manifest in deploy/manifests/*.toml; do \
        name=${manifest##*/}; name=${name%.toml}; \
        cp "target/wasm32-wasip2/component/${name//-/_}.wasm" /out/components/ \
            && cp -R "components/$name/migrations" "/out/migrations/$name" \
            || exit 1; \
    done

# What runs: glibc and libgcc, no shell, no compiler; the distroless `nonroot` user (uid 65532,
# numeric so that a platform can see it is not root).
FROM gcr.io/distroless/cc-debian12:nonroot
WORKDIR /app
COPY --from=builder /src/target/release/host /app/host
COPY --from=builder /out/components /app/components
COPY --from=builder /out/migrations /app/migrations
COPY deploy/manifests /app/manifests
# Amazon RDS's CA bundle, which signs no certificate the system trusts: a database URL names it
# with sslrootcert for sslmode=verify-full (see infra/). Fetched when the image is built.
ADD --chmod=0444 https://truststore.pki.rds.amazonaws.com/global/global-bundle.pem /app/certs/rds-global-bundle.pem
USER 65532:65532
# HTTP (through the gateway) and the admin API (metrics, hot swap; needs HOST_ADMIN_TOKEN).
EXPOSE 8000 9000
# `host probe` asks this container's own /health, on the port of the manifest's http.listen.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/app/host", "probe"]
ENTRYPOINT ["/app/host"]
