#!/usr/bin/env bash
# Build the local base image that `make images` uses where no container registry is
# reachable: Debian bookworm (minbase) with python3, venv support and CA certificates,
# made with mmdebstrap and imported into podman. Cached: nothing happens when the image
# already exists (`--force` rebuilds it). Users with registry access keep the official
# python slim image, the Dockerfile's default BASE_IMAGE.
#
#   tools/build_base_image.sh [--force]    # prints the image name
set -euo pipefail

image=${ROOMCAST_BASE_IMAGE:-localhost/roomcast-base:bookworm}

if [ "${1:-}" != "--force" ] && podman image exists "$image"; then
  echo "$image"
  exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# minbase: Essential packages and apt only; python3-venv brings ensurepip, so the
# builder stage can create a venv with pip. The merged-usr hook makes /bin etc. links
# without the usrmerge package (which would pull in 47 MB of perl); documentation, man
# pages and translations are left out (about 50 MB that a service never reads).
mmdebstrap --quiet --variant=minbase \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --include=python3,python3-venv,ca-certificates \
  bookworm "$work/base.tar" >&2
podman import --quiet \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV LANG=C.UTF-8" \
  "$work/base.tar" "$image" >/dev/null
echo "$image"
