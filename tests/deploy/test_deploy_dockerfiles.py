"""The one Dockerfile of the four images: hadolint-clean, multi-stage with wheels built
in the builder, non-root, read-only-ready, health-checked, and buildable from the build
context .dockerignore lets through. tests/containers builds and runs the images."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import sys
import threading
import tomllib
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from deploy_helpers import REPO, SERVICES, run, tool

# The port each image's HEALTHCHECK probes (/healthz), and the variable that moves it.
HEALTH_PORTS = {
    "auth": ("ROOMCAST_AUTH_PORT", "8081"),
    "rooms": ("ROOMCAST_ROOMS_HTTP_PORT", "8082"),
    "gateway": ("ROOMCAST_GATEWAY_PORT", "8080"),
    "history": ("ROOMCAST_HISTORY_PORT", "8083"),
    "notifier": ("ROOMCAST_NOTIFIER_PORT", "8084"),
}
EXPOSED = {
    "auth": {"8081"},
    "rooms": {"50051", "8082"},
    "gateway": {"8080"},
    "history": {"8083"},
    "notifier": {"8084"},
}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, rest = full.partition(" ")
        result.append((keyword.upper(), rest.strip()))
    return result


def stages(path: Path) -> list[list[tuple[str, str]]]:
    out: list[list[tuple[str, str]]] = []
    for keyword, rest in instructions(path):
        if keyword == "FROM":
            out.append([])
        if out:  # ARGs before the first FROM belong to no stage
            out[-1].append((keyword, rest))
    return out


DOCKERFILE = REPO / "Dockerfile"
HEALTHCHECK_SCRIPT = REPO / "deploy" / "image" / "healthcheck.py"


def build_args(path: Path) -> dict[str, str | None]:
    """ARG name -> default (None when the build must pass it)."""
    args: dict[str, str | None] = {}
    for keyword, rest in instructions(path):
        if keyword == "ARG":
            name, sep, default = rest.partition("=")
            args[name] = default if sep else None
    return args


def test_hadolint_passes() -> None:
    hadolint = tool("hadolint")
    result = run([hadolint, "--failure-threshold", "style", str(DOCKERFILE)])
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = run([tool("hadolint"), str(bad)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag
    assert "DL3013" in result.stdout  # unpinned pip package


def test_one_dockerfile_for_every_service() -> None:
    leftovers = sorted(str(p.relative_to(REPO)) for p in REPO.glob("services/*/Dockerfile"))
    assert not leftovers, f"the images are built from the top-level Dockerfile: {leftovers}"
    args = build_args(DOCKERFILE)
    assert args.get("SERVICE", "missing") is None, "ARG SERVICE without a default"
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", args.get("BASE_IMAGE") or ""), (
        "BASE_IMAGE defaults to a pinned official python:3.11.x-slim image"
    )


def test_multi_stage_wheels_non_root() -> None:
    parts = stages(DOCKERFILE)
    assert len(parts) >= 2, "a builder stage and a final stage"
    builder, final = parts[0], parts[-1]
    assert builder[0][1].split()[0] == "${BASE_IMAGE}"
    assert final[0][1].split()[0] == "${BASE_IMAGE}", (
        "both stages must use the same base (the venv links into it)"
    )

    builder_runs = " ".join(rest for kw, rest in builder if kw == "RUN")
    assert "-m venv /opt/venv" in builder_runs
    assert re.search(r"pip wheel .*--wheel-dir /wheels -c constraints\.txt \.(\s|$)", builder_runs)
    assert re.search(r"pip install .*--no-index --find-links /wheels", builder_runs), (
        "the venv is installed from the wheels the builder built, nothing else"
    )

    copies = [rest for kw, rest in final if kw == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies), copies
    assert not any(kw == "RUN" and "pip" in rest for kw, rest in final)

    users = [rest for kw, rest in final if kw == "USER"]
    assert users, "the final stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric UID (runAsNonRoot can only check a number)"
    assert int(uid) > 0, "non-root UID"
    assert not gid or (gid.isdigit() and int(gid) > 0)


def test_runtime_settings() -> None:
    final = stages(DOCKERFILE)[-1]
    env = " ".join(rest for kw, rest in final if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the root filesystem is read-only"
    assert "PATH=/opt/venv/bin:" in env
    assert "ROOMCAST_SERVICE=${SERVICE}" in env, "the health check reads it"
    exposed = {p.split("/")[0] for kw, rest in final if kw == "EXPOSE" for p in rest.split()}
    for service in SERVICES:
        assert f"ROOMCAST_{service.upper()}_HOST=0.0.0.0" in env, "bind all interfaces"
        assert EXPOSED[service] <= exposed, service
    assert ("STOPSIGNAL", "SIGTERM") in final

    entrypoints = [rest for kw, rest in final if kw == "ENTRYPOINT"]
    assert entrypoints == ['["roomcast-service"]'], "exec form: the service is PID 1"
    runs = " ".join(rest for kw, rest in final if kw == "RUN")
    assert '/opt/venv/bin/roomcast-${SERVICE}" /usr/local/bin/roomcast-service' in runs
    scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
    for service in SERVICES:
        assert scripts[f"roomcast-{service}"] == f"roomcast.{service}.__main__:main"


def test_healthcheck_runs_the_script() -> None:
    final = stages(DOCKERFILE)[-1]
    checks = [rest for kw, rest in final if kw == "HEALTHCHECK"]
    assert len(checks) == 1
    _, _, command = checks[0].partition("CMD ")
    argv = json.loads(command)  # exec form: a JSON array, no shell in between
    assert argv == ["python", "/opt/roomcast/healthcheck.py"]
    copies = [rest for kw, rest in final if kw == "COPY"]
    assert "deploy/image/healthcheck.py /opt/roomcast/healthcheck.py" in copies


class _Health(BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:
        self.send_response(self.status if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize("status", [200, 503])
def test_healthcheck_script_probes_the_service_port(service: str, status: int) -> None:
    """The script exits 0 only when /healthz on the service's own port answers 200."""
    handler = type("Handler", (_Health,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        variable, _ = HEALTH_PORTS[service]
        env = {"ROOMCAST_SERVICE": service, variable: str(server.server_address[1])}
        result = run([sys.executable, str(HEALTHCHECK_SCRIPT)], env=env, timeout=30)
        assert result.returncode == (0 if status == 200 else 1), result.stderr
        # Another service's variable does not move this service's probe.
        others = {v for s, (v, _) in HEALTH_PORTS.items() if s != service}
        moved = {"ROOMCAST_SERVICE": service} | dict.fromkeys(others, env[variable])
        moved[variable] = "1"  # nothing listens on port 1
        assert run([sys.executable, str(HEALTHCHECK_SCRIPT)], env=moved).returncode == 1
    finally:
        server.shutdown()
        server.server_close()


def _copy_sources(path: Path) -> list[str]:
    sources: list[str] = []
    for keyword, rest in instructions(path):
        if keyword == "COPY" and not rest.startswith("--from"):
            sources.extend(rest.split()[:-1])
    return sources


def _dockerignore() -> list[str]:
    lines = (REPO / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def _ignored(relative: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; "!" re-includes."""
    ignored = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        body = pattern[1:] if negate else pattern
        body = body.rstrip("/")
        if body == "**":
            matched = True
        elif body.startswith("**/"):
            tail = body[3:]
            parts = relative.split("/")
            matched = any(fnmatch.fnmatch(part, tail) for part in parts)
        else:
            matched = relative == body or relative.startswith(body + "/")
        if matched:
            ignored = not negate
    return ignored


def _package_dirs() -> list[str]:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    return list(pyproject["tool"]["setuptools"]["package-dir"].values())


def test_dockerignore_denies_local_state_and_secrets() -> None:
    patterns = _dockerignore()
    assert patterns[0] == "**", "deny everything first, then allow what the images need"
    for path in (".env", ".roomcast/compose/auth-signing-key.pem", ".venv/bin/python", ".git/HEAD"):
        assert _ignored(path, patterns), f"{path} must never reach the build context"
    assert _ignored("services/gateway/tests/test_x.py", patterns)


def test_build_context_has_every_package() -> None:
    """Every package directory pyproject.toml names is COPY'd and not dockerignored."""
    sources = _copy_sources(DOCKERFILE)
    patterns = _dockerignore()
    for source in sources:
        assert (REPO / source).exists(), f"COPY {source}: missing from the repository"
        assert not _ignored(source, patterns), f"COPY {source}: excluded by .dockerignore"
    for package_dir in _package_dirs():
        assert any(
            package_dir == s or package_dir.startswith(s.rstrip("/") + "/") for s in sources
        ), f"{package_dir} (pyproject package-dir) is not copied into the builder"
        assert not _ignored(package_dir + "/__init__.py", patterns), (
            f"{package_dir} is dockerignored"
        )


def test_wheel_builds_from_the_build_context(tmp_path: Path) -> None:
    """What the builder stage does, minus the network: build the distribution from
    exactly the files the Dockerfile copies (after .dockerignore)."""
    context = tmp_path / "context"
    patterns = _dockerignore()
    for source in _copy_sources(DOCKERFILE):
        origin = REPO / source
        files = [origin] if origin.is_file() else [p for p in origin.rglob("*") if p.is_file()]
        for file in files:
            relative = file.relative_to(REPO).as_posix()
            if _ignored(relative, patterns):
                continue
            target = context / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(file, target)
    pip = [tool("python"), "-m", "pip"]
    result = run(
        [
            *pip,
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path / "dist"),
            ".",
        ],
        cwd=context,
        timeout=300,
    )
    assert result.returncode == 0, f"building the wheel failed:\n{result.stdout}\n{result.stderr}"
    (wheel,) = (tmp_path / "dist").glob("roomcast-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = archive.read(entry_points).decode()
    for service in SERVICES:
        assert f"roomcast/{service}/__init__.py" in names
        assert f"roomcast-{service} = roomcast.{service}.__main__:main" in scripts
