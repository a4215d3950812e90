#!/usr/bin/env bash
# Install the system packages the tests and the container targets need, once, on a
# Debian or Ubuntu machine (`make setup` runs this). Quick when everything is present:
# every check is a `command -v`, and apt-get runs only for what is missing.
#
#   nats-server            the NATS-backed tests and `make up`
#   promtool (prometheus)  alert and recording rules; the Prometheus stand-in image
#   haproxy                `haproxy -c` on the compose proxy config
#   node (nodejs)          `node --check` on the MongoDB bootstrap scripts
#   podman, runc, mmdebstrap, uidmap, slirp4netns
#                          `make images`, `make test-containers`, `make test-kube`
#
# It also writes the container engine settings these targets rely on (runc as the
# runtime, ulimits within the host's hard limits) when they are missing.
set -euo pipefail

# command -> Debian package providing it
declare -A wanted=(
  [nats-server]=nats-server
  [promtool]=prometheus
  [haproxy]=haproxy
  [node]=nodejs
  [podman]=podman
  [runc]=runc
  [mmdebstrap]=mmdebstrap
  [newuidmap]=uidmap
  [slirp4netns]=slirp4netns
)

missing=()
for command in "${!wanted[@]}"; do
  # Debian installs haproxy in /usr/sbin, which is not on every user's PATH.
  command -v "$command" >/dev/null || [ -x "/usr/sbin/$command" ] || missing+=("${wanted[$command]}")
done

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

if [ ${#missing[@]} -gt 0 ]; then
  if ! command -v apt-get >/dev/null || { [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null; }; then
    echo "missing system packages: ${missing[*]} (install them with your package manager)" >&2
    exit 1
  fi
  echo "installing: ${missing[*]}"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Podman's settings: the default runtime (crun) fails on hosts with hybrid cgroups,
# and the default container ulimits can exceed the host's hard limits. A file an
# administrator already wrote is left alone when it has both settings; otherwise ours
# goes in a drop-in, which podman reads after the main file.
conf=/etc/containers/containers.conf
settings='[containers]
default_ulimits = ["nofile=10240:10240", "nproc=4096:4096"]

[engine]
runtime = "runc"'
if [ ! -e "$conf" ]; then
  as_root mkdir -p /etc/containers
  printf '%s\n' "$settings" | as_root tee "$conf" >/dev/null
  echo "wrote $conf"
elif ! grep -q '^runtime *= *"runc"' "$conf" || ! grep -q '^default_ulimits' "$conf"; then
  dropin=/etc/containers/containers.conf.d/50-roomcast.conf
  if [ ! -e "$dropin" ]; then
    as_root mkdir -p "$(dirname "$dropin")"
    printf '%s\n' "$settings" | as_root tee "$dropin" >/dev/null
    echo "wrote $dropin"
  fi
fi
