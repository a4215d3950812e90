#!/usr/bin/env bash
# Regenerate the Python gRPC code from proto/ into libs/rpc (import name roomcast.rpc.*).
# The proto package stays roomcast.rooms.v1 (the wire name of the service); the virtual
# include path maps it under roomcast/rpc so the generated imports say roomcast.rpc.rooms.v1.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-libs/rpc/src}
py=${PYTHON:-python}
"$py" -m grpc_tools.protoc \
  -Iroomcast/rpc=proto/roomcast \
  --python_out="$out" --grpc_python_out="$out" --mypy_out="$out" --mypy_grpc_out="$out" \
  roomcast/rpc/rooms/v1/rooms.proto
