"""The committed gRPC code matches proto/: `make proto` was run after the last change."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
GENERATED = ROOT / "libs/rpc/src/roomcast/rpc/rooms/v1"


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    env_path = str(Path(sys.executable).parent)
    subprocess.run(
        ["bash", str(ROOT / "tools/gen_proto.sh"), str(tmp_path)],
        check=True,
        cwd=ROOT,
        env={"PYTHON": sys.executable, "PATH": f"{env_path}:/usr/bin:/bin"},
    )
    fresh = tmp_path / "roomcast/rpc/rooms/v1"
    names = ["rooms_pb2.py", "rooms_pb2.pyi", "rooms_pb2_grpc.py", "rooms_pb2_grpc.pyi"]
    stale = [n for n in names if (fresh / n).read_text() != (GENERATED / n).read_text()]
    assert not stale, f"generated code is stale, run `make proto`: {stale}"
