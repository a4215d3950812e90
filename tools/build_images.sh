#!/usr/bin/env bash
# Build the Roomcast images (roomcast/<service>:$ROOMCAST_TAG) from the one
# Dockerfile, with podman or, where that is installed instead, docker.
#
#   tools/build_images.sh                  # all four
#   tools/build_images.sh gateway auth     # some
#
# BASE_IMAGE: the Dockerfile's default (the official python slim image) when set to
# "official"; unset, with podman on a machine without registry access, the local
# mmdebstrap base (tools/build_base_image.sh, built once and cached).
# The builder stage does not depend on SERVICE, so it is built once and reused.
set -euo pipefail
cd "$(dirname "$0")/.."

tag=${ROOMCAST_TAG:-dev}
services=("$@")
[ ${#services[@]} -gt 0 ] || services=(auth rooms history gateway notifier)

if command -v podman >/dev/null; then engine=podman; else engine=docker; fi

args=()
base=${BASE_IMAGE:-}
if [ -z "$base" ] && [ "$engine" = podman ]; then
  base=$(tools/build_base_image.sh)
fi
[ -z "$base" ] || [ "$base" = official ] || args+=(--build-arg "BASE_IMAGE=$base")
if [ "$engine" = podman ]; then
  # The builder reaches the package index through the host's network and CA bundle;
  # the docker image format keeps the HEALTHCHECK (OCI images have no such field).
  args+=(--network=host --format=docker)
  ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] && args+=(--volume "$ca:$ca:ro")
fi

for service in "${services[@]}"; do
  start=$(date +%s)
  "$engine" build --quiet "${args[@]}" --build-arg "SERVICE=$service" \
    -t "roomcast/$service:$tag" -f Dockerfile . >/dev/null
  size=$("$engine" image inspect --format '{{.Size}}' "roomcast/$service:$tag")
  echo "roomcast/$service:$tag  $((size / 1000000)) MB  built in $(($(date +%s) - start)) s"
done
