"""The services' Dockerfiles: hadolint-clean, multi-stage, non-root, read-only-ready,
health-checked, and buildable from the build context .dockerignore lets through."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import tomllib
import zipfile
from pathlib import Path

import pytest
from deploy_helpers import REPO, SERVICES, run, tool

# The port each image's HEALTHCHECK probes (/healthz), and the variable that moves it.
HEALTH_PORTS = {
    "auth": ("ROOMCAST_AUTH_PORT", "8081"),
    "rooms": ("ROOMCAST_ROOMS_HTTP_PORT", "8082"),
    "gateway": ("ROOMCAST_GATEWAY_PORT", "8080"),
    "history": ("ROOMCAST_HISTORY_PORT", "8083"),
}
EXPOSED = {"auth": {"8081"}, "rooms": {"50051", "8082"}, "gateway": {"8080"}, "history": {"8083"}}


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
        out[-1].append((keyword, rest))
    return out


def dockerfile(service: str) -> Path:
    return REPO / "services" / service / "Dockerfile"


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_passes(service: str) -> None:
    hadolint = tool("hadolint")
    result = run([hadolint, "--failure-threshold", "style", str(dockerfile(service))])
    assert result.returncode == 0, f"hadolint findings:\n{result.stdout}{result.stderr}"


def test_hadolint_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\n")
    result = run([tool("hadolint"), str(bad)])
    assert result.returncode != 0
    assert "DL3007" in result.stdout  # "latest" tag
    assert "DL3013" in result.stdout  # unpinned pip package


@pytest.mark.parametrize("service", SERVICES)
def test_multi_stage_pinned_non_root(service: str) -> None:
    parts = stages(dockerfile(service))
    assert len(parts) >= 2, "a builder stage and a final stage"
    builder, final = parts[0], parts[-1]
    base = builder[0][1].split()[0]
    assert final[0][1].split()[0] == base, (
        "both stages must use the same base (the venv links into it)"
    )
    assert re.fullmatch(r"python:3\.11\.\d+-slim(-[a-z]+)?", base), (
        f"pin python:3.11.x-slim: {base}"
    )

    builder_runs = " ".join(rest for kw, rest in builder if kw == "RUN")
    assert re.search(r"pip install .*-c constraints\.txt .*\.(\s|$)", builder_runs + " ")
    assert "python -m venv /opt/venv" in builder_runs

    copies = [rest for kw, rest in final if kw == "COPY"]
    assert any(c.startswith("--from=builder /opt/venv") for c in copies), copies
    assert not any(kw == "RUN" and "pip install" in rest for kw, rest in final)

    users = [rest for kw, rest in final if kw == "USER"]
    assert users, "the final stage must switch to a non-root user"
    uid, _, gid = users[-1].partition(":")
    assert uid.isdigit(), "numeric UID (runAsNonRoot can only check a number)"
    assert int(uid) > 0, "non-root UID"
    assert not gid or (gid.isdigit() and int(gid) > 0)


@pytest.mark.parametrize("service", SERVICES)
def test_runtime_settings(service: str) -> None:
    final = stages(dockerfile(service))[-1]
    env = " ".join(rest for kw, rest in final if kw == "ENV")
    assert "PYTHONDONTWRITEBYTECODE=1" in env, "the root filesystem is read-only"
    assert f"ROOMCAST_{service.upper()}_HOST=0.0.0.0" in env, "bind all interfaces in a container"
    assert "PATH=/opt/venv/bin:" in env

    exposed = {p.split("/")[0] for kw, rest in final if kw == "EXPOSE" for p in rest.split()}
    assert exposed == EXPOSED[service]
    assert ("STOPSIGNAL", "SIGTERM") in final

    entrypoints = [rest for kw, rest in final if kw == "ENTRYPOINT"]
    assert entrypoints == [f'["python", "-m", "roomcast.{service}"]'], "exec form, python -m"


@pytest.mark.parametrize("service", SERVICES)
def test_healthcheck_probes_healthz(service: str) -> None:
    final = stages(dockerfile(service))[-1]
    checks = [rest for kw, rest in final if kw == "HEALTHCHECK"]
    assert len(checks) == 1
    _, _, command = checks[0].partition("CMD ")
    argv = json.loads(command)  # exec form: a JSON array, no shell in between
    assert argv[:2] == ["python", "-c"], "a Python one-liner: the slim image has no curl"
    code = argv[2]
    compile(code, "HEALTHCHECK", "exec")  # valid Python
    variable, default = HEALTH_PORTS[service]
    assert "urllib.request.urlopen" in code
    assert "/healthz" in code
    assert f"'{variable}', '{default}'" in code, f"probe {variable} (default {default})"
    assert default in EXPOSED[service]


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


@pytest.mark.parametrize("service", SERVICES)
def test_build_context_has_every_package(service: str) -> None:
    """Every package directory pyproject.toml names is COPY'd and not dockerignored."""
    sources = _copy_sources(dockerfile(service))
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
    for source in _copy_sources(dockerfile("gateway")):
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
