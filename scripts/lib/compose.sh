# Shared by scripts/compose-demo and scripts/compose-smoke-test (sourced, not run): finding
# Docker and a compose tool, choosing where base images come from, and making secrets.
# Bash; the caller sets `set -euo pipefail`.

# Sets compose_cmd (an array: `docker compose` or `docker-compose`) and docker_server (the
# engine's version). Returns 1 with the reason in compose_missing when either is missing.
find_compose() {
  compose_missing=""
  if ! command -v docker >/dev/null 2>&1; then
    compose_missing="no docker command"; return 1
  fi
  if ! docker_server=$(docker version --format '{{.Server.Version}}' 2>/dev/null) \
     || [ -z "$docker_server" ]; then
    compose_missing="no Docker engine answers (docker version: $(docker version 2>&1 | tail -n 1))"
    return 1
  fi
  if docker compose version >/dev/null 2>&1; then
    compose_cmd=(docker compose)
  elif command -v docker-compose >/dev/null 2>&1 && docker-compose version >/dev/null 2>&1; then
    compose_cmd=(docker-compose)
  else
    compose_missing="Docker engine $docker_server answers, but neither \`docker compose\` nor \`docker-compose\` is installed"
    return 1
  fi
}

# BuildKit needs the buildx plugin in recent docker CLIs; without it, the legacy builder (our
# Dockerfiles need no BuildKit feature).
choose_builder() {
  if docker buildx version >/dev/null 2>&1; then
    export DOCKER_BUILDKIT=1 COMPOSE_DOCKER_CLI_BUILD=1
  else
    export DOCKER_BUILDKIT=0 COMPOSE_DOCKER_CLI_BUILD=0
  fi
}

# Prints where the base images come from: `local` (docker/base-images builds them from
# Debian's packages: for machines that cannot pull) or `hub` (Docker Hub). $1 overrides;
# otherwise hub when the engine can pull debian:bookworm-slim within 30 s, else local on a
# Debian host (which has the mirror debootstrap needs), else hub (the build then says what
# could not be pulled).
image_source() {
  if [ -n "${1:-}" ]; then echo "$1"; return; fi
  if docker image inspect debian:bookworm-slim >/dev/null 2>&1 \
     || timeout 30 docker pull -q debian:bookworm-slim >/dev/null 2>&1; then
    echo hub
  elif [ -f /etc/apt/sources.list.d/debian.sources ] \
       || grep -qs '^deb .*debian' /etc/apt/sources.list; then
    echo local
  else
    echo hub
  fi
}

# The compose variables that name the images docker/base-images builds (one per line,
# NAME=VALUE), for an env file or `export`.
local_image_settings() {
  echo "RUST_IMAGE=${RUST_IMAGE:-jdc/rust:bookworm}"
  echo "RUNTIME_IMAGE=${RUNTIME_IMAGE:-jdc/debian:bookworm}"
  echo "PYTHON_IMAGE=${PYTHON_IMAGE:-jdc/python:bookworm}"
  echo "IMAGE_BITCOIND=${IMAGE_BITCOIND:-jdc/bitcoind:bookworm}"
  echo "IMAGE_PROMETHEUS=${IMAGE_PROMETHEUS:-jdc/prometheus:bookworm}"
}

# make_secret FILE BYTES: FILE gets BYTES random bytes as hex unless it exists. Its folder is
# private (0700); the file is readable (0644) by the containers' non-root users.
make_secret() {
  local file=$1 bytes=$2
  mkdir -p "$(dirname "$file")"
  chmod 0700 "$(dirname "$file")"
  if [ ! -s "$file" ]; then
    od -An -tx1 -N"$bytes" /dev/urandom | tr -d ' \n' > "$file"
  fi
  chmod 0644 "$file"
}
