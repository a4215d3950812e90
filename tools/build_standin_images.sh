#!/usr/bin/env bash
# Build the local stand-ins for the compose stack's infrastructure images (MongoDB as
# SecantusDB, NATS, Prometheus, HAProxy: deploy/standins/Dockerfile) on the same base as
# the Roomcast images. Cached: an image that exists is not rebuilt (`--force` rebuilds).
#
#   tools/build_standin_images.sh [--force]
set -euo pipefail
cd "$(dirname "$0")/.."

force=${1:-}
base=${BASE_IMAGE:-$(tools/build_base_image.sh)}
ca=/etc/ssl/certs/ca-certificates.crt
for target in mongo nats prometheus haproxy; do
  image=localhost/roomcast-standin-$target:dev
  if [ "$force" != "--force" ] && podman image exists "$image"; then
    continue
  fi
  start=$(date +%s)
  podman build --quiet --format=docker --network=host --volume "$ca:$ca:ro" \
    --build-arg "BASE_IMAGE=$base" --target "$target" \
    -t "$image" -f deploy/standins/Dockerfile . >/dev/null
  size=$(podman image inspect --format '{{.Size}}' "$image")
  echo "$image  $((size / 1000000)) MB  built in $(($(date +%s) - start)) s"
done
