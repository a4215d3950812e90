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
# The customize hook then deletes what nothing in an image uses: glibc's iconv modules
# (gconv, 8 MB: Python's codecs are its own, and the images run in C.UTF-8), the
# stdlib's test support, lib2to3 and pydoc's help topics, bash completions, apt's
# package caches and lists (rebuilt by the next `apt-get update`), and install logs.
# The stdlib's own bytecode stays: with a read-only root filesystem it could never be
# written, so every start would compile the stdlib again. apt and ensurepip stay too:
# the stand-ins install Debian packages, and the builder stage makes a venv with pip.
mmdebstrap --quiet --variant=minbase \
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --customize-hook='rm -rf "$1"/usr/lib/x86_64-linux-gnu/gconv "$1"/usr/lib/python3.11/test \
    "$1"/usr/lib/python3.11/lib2to3 "$1"/usr/lib/python3.11/pydoc_data \
    "$1"/usr/share/bash-completion "$1"/var/cache/apt/*.bin "$1"/var/cache/debconf/*-old \
    "$1"/var/lib/apt/lists/* "$1"/var/log/*.log "$1"/var/log/apt/*' \
  --include=python3,python3-venv,ca-certificates \
  bookworm "$work/base.tar" >&2
podman import --quiet \
  --change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
  --change "ENV LANG=C.UTF-8" \
  "$work/base.tar" "$image" >/dev/null
echo "$image"
