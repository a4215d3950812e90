#!/usr/bin/env bash
# Install the system packages the tests and the container targets need, once, on a
# Debian or Ubuntu machine (`make setup` runs this). Quick when everything is present:
# every check is a `command -v`, and apt-get runs only for what is missing.
#
#   nats-server            the NATS-backed tests and `make up`
#   promtool (prometheus)  alert and recording rules; the Prometheus stand-in image
#   haproxy                `haproxy -c` on the compose proxy config
#   node (nodejs)          `node --check` on the MongoDB bootstrap scripts
#   tmux                   the terminal client's test drives examples/chat_cli.py in it
#   npm, chromium          `make js` (the TypeScript SDK and web app; Node >= 20) and the
#                          web app's browser tests (headless Chromium, no browser download)
#   podman, runc, mmdebstrap, uidmap, slirp4netns, netavark, aardvark-dns, catatonit
#                          `make images`, `make test-containers`, `podman kube play`
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
  [tmux]=tmux
  [npm]=npm
  [chromium]=chromium
  [podman]=podman
  [runc]=runc
  [mmdebstrap]=mmdebstrap
  [newuidmap]=uidmap
  [slirp4netns]=slirp4netns
  # podman's network backend with DNS, so containers find each other by service name
  # (the CNI plugins Debian installs by default have no name resolution)
  [/usr/lib/podman/netavark]=netavark
  [/usr/lib/podman/aardvark-dns]=aardvark-dns
  # the init of the pause container `podman kube play` builds for every pod
  [catatonit]=catatonit
)

missing=()
for command in "${!wanted[@]}"; do
  # Debian installs haproxy in /usr/sbin, which is not on every user's PATH; the
  # network helpers are absolute paths, which `command -v` checks for existence.
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
# the default container ulimits can exceed the host's hard limits, and netavark gives
# networks a DNS server. A file an administrator wrote is left alone when it has these
# settings; otherwise ours goes in a drop-in, which podman reads after the main file.
conf=/etc/containers/containers.conf
marker="# Written by Roomcast's tools/setup_system.sh"
settings="$marker
[containers]
default_ulimits = [\"nofile=10240:10240\", \"nproc=4096:4096\"]

[engine]
runtime = \"runc\"

[network]
network_backend = \"netavark\""
if [ ! -e "$conf" ] || { grep -qF "$marker" "$conf" && [ "$(cat "$conf")" != "$settings" ]; }; then
  as_root mkdir -p /etc/containers
  printf '%s\n' "$settings" | as_root tee "$conf" >/dev/null
  echo "wrote $conf"
elif ! grep -q '^runtime *= *"runc"' "$conf" || ! grep -q '^default_ulimits' "$conf" \
  || ! grep -q '^network_backend *= *"netavark"' "$conf"; then
  dropin=/etc/containers/containers.conf.d/50-roomcast.conf
  if [ ! -e "$dropin" ]; then
    as_root mkdir -p "$(dirname "$dropin")"
    printf '%s\n' "$settings" | as_root tee "$dropin" >/dev/null
    echo "wrote $dropin"
  fi
fi
