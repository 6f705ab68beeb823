# The jdc image: the six binaries (jdc-template-watcher, jdc-tx-selector, jdc-declarator,
# jdc-metrics, jdc-top, jdc-sim-miner) on a small Debian runtime, run as a non-root user. No
# configuration or secret is baked in: compose.yaml mounts docker/jdc.toml read-only and the
# RPC password as a secret file.
#
#   docker build -t jdc:local .                      # pulls rust:1-bookworm and debian:bookworm-slim
#   docker build -t jdc:local \                      # no registry: the images of docker/base-images
#     --build-arg RUST_IMAGE=jdc/rust:bookworm --build-arg RUNTIME_IMAGE=jdc/debian:bookworm .
#
# Works with the legacy builder and with BuildKit (no BuildKit-only syntax: a cache mount would
# break the legacy builder, the only one usable where the docker CLI lacks buildx). Builds
# stay incremental through layers instead: the dependencies are compiled in a layer keyed on
# the Cargo manifests and Cargo.lock only (the "recipe" below), so a source change recompiles
# only the workspace's crates.
ARG RUST_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# --- recipe: the workspace's manifests with stub targets (changes only with the manifests) ---
FROM ${RUST_IMAGE} AS recipe
WORKDIR /src
COPY . .
RUN set -eu; mkdir -p /recipe; cp Cargo.toml Cargo.lock /recipe/; \
    for manifest in $(find . -name Cargo.toml -not -path './target/*' -not -path './Cargo.toml'); do \
      dir=$(dirname "$manifest"); mkdir -p "/recipe/$dir"; cp "$manifest" "/recipe/$dir/"; \
      for f in $(cd "$dir" && ls -d src/lib.rs src/main.rs src/bin/*.rs src/bin/*/main.rs \
                   benches/*.rs benches/*/main.rs tests/*.rs tests/*/main.rs examples/*.rs \
                   examples/*/main.rs 2>/dev/null); do \
        mkdir -p "$(dirname "/recipe/$dir/$f")"; \
        case "$f" in src/lib.rs) : > "/recipe/$dir/$f" ;; *) echo 'fn main() {}' > "/recipe/$dir/$f" ;; esac; \
      done; \
    done

# --- build ---------------------------------------------------------------------------------
FROM ${RUST_IMAGE} AS build
ARG BINS="jdc-template-watcher jdc-tx-selector jdc-declarator jdc-metrics jdc-top jdc-sim-miner"
WORKDIR /src
COPY --from=recipe /recipe/ ./
RUN cargo build --release --locked $(for b in $BINS; do printf -- '--bin %s ' "$b"; done)
COPY . .
# Sources copied after the stub build may be older than it: make cargo see them as changed.
RUN find . -path ./target -prune -o -name '*.rs' -exec touch {} + \
 && cargo build --release --locked $(for b in $BINS; do printf -- '--bin %s ' "$b"; done) \
 && mkdir -p /out \
 && for b in $BINS; do cp "target/release/$b" /out/; done

# --- runtime -------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE}
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/jdc --no-create-home jdc \
 && mkdir -p /var/lib/jdc/keys /etc/jdc \
 && chown -R jdc:jdc /var/lib/jdc \
 && chmod 0700 /var/lib/jdc/keys
COPY --from=build /out/ /usr/local/bin/
COPY docker/jdc-healthcheck /usr/local/bin/jdc-healthcheck
# The binaries need only libc, libm, libgcc_s and libstdc++ (the vendored libzmq of
# jdc-template-watcher), all in Debian's base: fail the build if the runtime image lacks one.
RUN if ldd /usr/local/bin/jdc-* | grep 'not found'; then exit 1; fi \
 && jdc-declarator --version
USER jdc
WORKDIR /var/lib/jdc
# 34255: SV2 mining and 3333: Stratum V1 (jdc-declarator); 9100: /metrics and /healthz (jdc-metrics);
# 28400-28402: the bus (compose network only).
EXPOSE 34255 3333 9100 28400 28401 28402
CMD ["jdc-declarator", "--help"]
