"""docker-compose.yml and its files: valid against the compose specification, resolved
by Compose itself (no engine needed for `config`), proxy/NATS/MongoDB configs accepted
by the real programs, and the env generator producing a key auth can load."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import DEPLOY, REPO, load_yaml_docs, run, tool

COMPOSE = REPO / "docker-compose.yml"
ROOMCAST = {"auth", "rooms", "history", "notifier", "gateway-1", "gateway-2"}


def compose_config(env_file: Path | None = None, **env: str) -> tuple[int, str, str]:
    args = [tool("docker-compose"), "-f", str(COMPOSE)]
    if env_file is not None:
        args += ["--env-file", str(env_file)]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ROOMCAST_", "COMPOSE_"))}
    result = run([*args, "config", "--format", "json"], env={**clean, **env}, cwd=REPO)
    return result.returncode, result.stdout, result.stderr


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The compose model as Compose resolves it (anchors merged, variables set)."""
    tmp = tmp_path_factory.mktemp("compose")
    key, password = tmp / "key.pem", tmp / "password"
    key.write_text("placeholder")
    password.write_text("placeholder")
    code, out, err = compose_config(
        ROOMCAST_SIGNING_KEY_FILE=str(key),
        ROOMCAST_GRAFANA_PASSWORD_FILE=str(password),
        ROOMCAST_NOTIFIER_SERVICE_PASSWORD="placeholder",
        ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY="placeholder",
    )
    assert code == 0, err
    return json.loads(out)  # type: ignore[no-any-return]


def test_validates_against_the_compose_spec_schema() -> None:
    result = run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE)]
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_schema_check_is_not_vacuous(tmp_path: Path) -> None:
    bad = tmp_path / "docker-compose.yml"
    bad.write_text("services:\n  web:\n    image: nginx\n    restart: sometimes\n    portz: [80]\n")
    result = run([tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(bad)])
    assert result.returncode != 0


def test_refuses_to_start_without_generated_secrets() -> None:
    code, _, err = compose_config()
    assert code != 0
    assert "run tools/gen_compose_env.sh first" in err


def test_services(model: dict[str, Any]) -> None:
    services = model["services"]
    expected = ROOMCAST | {
        "mongo",
        "mongo-init",
        "nats",
        "nats-exporter",
        "proxy",
        "prometheus",
        "grafana",
    }
    assert set(services) == expected
    for name in ROOMCAST:
        dockerfile = services[name]["build"]["dockerfile"]
        assert (REPO / dockerfile).is_file()
        assert Path(services[name]["build"]["context"]) == REPO


def test_roomcast_containers_are_hardened(model: dict[str, Any]) -> None:
    for name in ROOMCAST:
        service = model["services"][name]
        assert service["read_only"] is True, name
        assert service["user"] == "10001:10001", name
        assert any(t.startswith("/tmp") for t in service["tmpfs"]), name
        assert service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name


def test_only_loopback_ports_are_published(model: dict[str, Any]) -> None:
    published = {}
    for name, service in model["services"].items():
        for port in service.get("ports", []):
            assert port["host_ip"] == "127.0.0.1", f"{name} publishes {port} beyond this machine"
            published[name] = port["target"]
    assert published == {"proxy": 8080, "prometheus": 9090, "grafana": 3000}


def test_mongodb_is_a_replica_set(model: dict[str, Any]) -> None:
    mongo = model["services"]["mongo"]
    assert mongo["command"][:3] == ["mongod", "--replSet", "rs0"]
    init = model["services"]["mongo-init"]
    assert init["entrypoint"] == ["python", "-m", "roomcast.common.bootstrap", "mongo"]
    assert init["environment"]["ROOMCAST_BOOTSTRAP_MONGO_SET_NAME"] == "rs0"
    for name in ("auth", "rooms", "history"):
        service = model["services"][name]
        url = service["environment"][f"ROOMCAST_{name.upper()}_MONGO_URL"]
        assert "replicaSet=rs0" in url
        assert url.startswith("mongodb://mongo:27017/")
        assert service["depends_on"]["mongo-init"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["mongo"]["condition"] == "service_healthy"


def test_mongo_init_settings_are_real_settings(model: dict[str, Any]) -> None:
    """pydantic-settings ignores unknown variables: a misspelt one keeps the default."""
    from roomcast.common.bootstrap_settings import BootstrapSettings

    fields = {f"ROOMCAST_BOOTSTRAP_{f.upper()}" for f in BootstrapSettings.model_fields}
    assert set(model["services"]["mongo-init"]["environment"]) <= fields


def test_service_wiring(model: dict[str, Any]) -> None:
    env = {name: model["services"][name]["environment"] for name in ROOMCAST}
    jwks = "http://auth:8081/.well-known/jwks.json"
    assert env["auth"]["ROOMCAST_AUTH_SIGNING_KEY_FILE"] == "/run/secrets/auth_signing_key"
    assert model["services"]["auth"]["secrets"][0]["source"] == "auth_signing_key"
    assert env["rooms"]["ROOMCAST_ROOMS_GRPC_PORT"] == "50051"
    assert env["rooms"]["ROOMCAST_ROOMS_HTTP_PORT"] == "8082"
    assert env["rooms"]["ROOMCAST_ROOMS_JWKS_URL"] == jwks
    assert env["history"]["ROOMCAST_HISTORY_ROOMS_TARGET"] == "rooms:50051"
    assert env["history"]["ROOMCAST_HISTORY_JWKS_URL"] == jwks
    for name in ("gateway-1", "gateway-2"):
        gw = env[name]
        assert gw["ROOMCAST_GATEWAY_PORT"] == "8080"
        assert gw["ROOMCAST_GATEWAY_ROOMS_TARGET"] == "rooms:50051"
        assert gw["ROOMCAST_GATEWAY_AUTH_URL"] == "http://auth:8081"
        assert gw["ROOMCAST_GATEWAY_HISTORY_URL"] == "http://history:8083"
        assert gw["ROOMCAST_GATEWAY_JWKS_URL"] == jwks
        assert gw["ROOMCAST_GATEWAY_INSTANCE_NAME"] == name
    for name, variables in env.items():
        prefix = "ROOMCAST_GATEWAY_" if name.startswith("gateway") else f"ROOMCAST_{name.upper()}_"
        assert variables[prefix + "HOST"] == "0.0.0.0"
        assert all(v.startswith(prefix) for v in variables), f"{name}: foreign prefix"
        if name != "auth":
            assert variables[prefix + "NATS_URL"] == "nats://nats:4222"


def test_gateway_drain_fits_in_the_stop_grace_period(model: dict[str, Any]) -> None:
    for name in ("gateway-1", "gateway-2"):
        service = model["services"][name]
        drain = float(service["environment"]["ROOMCAST_GATEWAY_SHUTDOWN_GRACE_SECONDS"])
        grace = _seconds(service["stop_grace_period"])
        assert grace >= drain + 2, f"{name}: stop_grace_period {grace}s < drain {drain}s + margin"


def _seconds(value: str) -> float:
    units = {"s": 1, "m": 60}
    return float(value[:-1]) * units[value[-1]]


def test_haproxy_config_is_valid_and_balances_websockets(model: dict[str, Any]) -> None:
    config = DEPLOY / "compose" / "haproxy.cfg"
    result = run([tool("haproxy"), "-c", "-f", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ALERT]" not in result.stdout + result.stderr
    text = config.read_text()
    assert "balance leastconn" in text
    assert "timeout tunnel 1h" in text, "WebSockets outlive the HTTP timeouts"
    assert "uri /readyz" in text
    servers = {line.split()[1] for line in text.splitlines() if line.strip().startswith("server ")}
    assert servers == {"gateway-1", "gateway-2"} <= set(model["services"])
    mounts = [v["target"] for v in model["services"]["proxy"]["volumes"]]
    assert "/usr/local/etc/haproxy/haproxy.cfg" in mounts


def test_nats_config_is_valid_with_jetstream(model: dict[str, Any]) -> None:
    config = DEPLOY / "compose" / "nats.conf"
    result = run([tool("nats-server"), "-t", "-c", str(config)])
    assert result.returncode == 0, result.stdout + result.stderr
    assert "jetstream" in config.read_text()
    nats = model["services"]["nats"]
    assert nats["command"] == ["-c", "/etc/nats/nats.conf"]
    major, minor = (int(p) for p in nats["image"].split(":")[1].split(".")[:2])
    assert (major, minor) >= (2, 10), "JetStream features the services use need 2.10+"


def test_prometheus_scrapes_every_service(model: dict[str, Any]) -> None:
    (config,) = load_yaml_docs((DEPLOY / "observability" / "prometheus.yml").read_text())
    targets = {
        job["job_name"]: {t for sc in job["static_configs"] for t in sc["targets"]}
        for job in config["scrape_configs"]
    }
    assert targets["gateway"] == {"gateway-1:8080", "gateway-2:8080"}
    assert targets["auth"] == {"auth:8081"}
    assert targets["rooms"] == {"rooms:8082"}
    assert targets["history"] == {"history:8083"}
    for job, hosts in targets.items():
        for host in hosts:
            name = host.split(":")[0]
            assert name == "localhost" or name in model["services"], f"{job}: unknown host {name}"


def test_grafana_provisioning_matches_the_mounts(model: dict[str, Any]) -> None:
    grafana = model["services"]["grafana"]
    mounts = {v["target"]: v["source"] for v in grafana["volumes"]}
    provisioning = DEPLOY / "observability" / "grafana" / "provisioning"
    (providers,) = load_yaml_docs((provisioning / "dashboards" / "roomcast.yml").read_text())
    folder = providers["providers"][0]["options"]["path"]
    dashboard = folder + "/roomcast-dashboard.json"
    assert Path(mounts[dashboard]).name == "roomcast-dashboard.json"
    assert mounts["/etc/grafana/provisioning"] == str(provisioning)
    (datasources,) = load_yaml_docs((provisioning / "datasources" / "prometheus.yml").read_text())
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"


def test_gen_compose_env_creates_a_usable_environment(tmp_path: Path) -> None:
    """Run the generator in a scratch copy of the repository layout: it must create a
    key auth can load, a password, and a .env that Compose accepts; a second run keeps
    the key (rotating it would log everyone out), --force replaces it."""
    from roomcast.common.tokens import load_private_key

    (tmp_path / "tools").mkdir()
    script = tmp_path / "tools" / "gen_compose_env.sh"
    shutil.copy2(REPO / "tools" / "gen_compose_env.sh", script)
    env = {"PATH": os.environ["PATH"], "ROOMCAST_PYTHON": tool("python")}
    first = run([tool("bash"), str(script)], cwd=tmp_path, env=env)
    assert first.returncode == 0, first.stderr

    key = tmp_path / ".roomcast" / "compose" / "auth-signing-key.pem"
    load_private_key(key.read_bytes())  # an Ed25519 PKCS#8 PEM, or this raises
    assert stat.S_IMODE((tmp_path / ".roomcast" / "compose").stat().st_mode) == 0o700
    dotenv = dict(
        line.split("=", 1)
        for line in (tmp_path / ".env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert dotenv["ROOMCAST_SIGNING_KEY_FILE"] == ".roomcast/compose/auth-signing-key.pem"
    assert (tmp_path / dotenv["ROOMCAST_GRAFANA_PASSWORD_FILE"]).read_text().strip()
    # The notifier's secrets: a password its settings accept and a VAPID key it loads.
    from roomcast.notifier.webpush import load_vapid

    assert len(dotenv["ROOMCAST_NOTIFIER_SERVICE_PASSWORD"]) >= 12
    load_vapid(dotenv["ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY"])

    original = key.read_bytes()
    again = run([tool("bash"), str(script)], cwd=tmp_path, env=env)
    assert again.returncode == 0
    assert key.read_bytes() == original
    forced = run([tool("bash"), str(script), "--force"], cwd=tmp_path, env=env)
    assert forced.returncode == 0
    assert key.read_bytes() != original

    # Compose resolves the generated .env's paths against the project directory.
    absolute = tmp_path / "absolute.env"
    absolute.write_text(
        f"ROOMCAST_SIGNING_KEY_FILE={key}\n"
        f"ROOMCAST_GRAFANA_PASSWORD_FILE={tmp_path / dotenv['ROOMCAST_GRAFANA_PASSWORD_FILE']}\n"
        f"ROOMCAST_NOTIFIER_SERVICE_PASSWORD={dotenv['ROOMCAST_NOTIFIER_SERVICE_PASSWORD']}\n"
        f"ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY={dotenv['ROOMCAST_NOTIFIER_VAPID_PRIVATE_KEY']}\n"
    )
    code, out, err = compose_config(env_file=absolute)
    assert code == 0, err
    assert json.loads(out)["secrets"]["auth_signing_key"]["file"] == str(key)
