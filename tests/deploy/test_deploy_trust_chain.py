"""The trust chain of every shipped deploy: auth sees the real client's address.

auth's login limits are per client address. A request reaches auth through a proxy
(HAProxy in compose, the ingress controller in Kubernetes) and a gateway; if a hop
trusts too little, every client gets the proxy's address and shares one login bucket;
if it trusts too much, a client picks its own address. For each shipped configuration
(the compose file as Compose renders it, each Kubernetes overlay as kustomize renders
it), the environment the gateway and auth containers get is loaded into the real
Settings classes, and a login is passed along the chain with the real code: the proxy's
X-Forwarded-For, the gateway's relay (rest_upstream.forward_for) and socket caps, and
auth's client_ip. A client that writes its own X-Forwarded-For is part of every case.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import COMPOSE_REQUIRED_SECRETS, REPO, configmap_data, run, tool
from starlette.requests import Request

from roomcast.auth.limits import client_ip
from roomcast.auth.settings import Settings as AuthSettings
from roomcast.gateway.realtime.socketcaps import SocketCaps
from roomcast.gateway.rest.upstream import forwarded_for
from roomcast.gateway.settings import Settings as GatewaySettings

CLIENT = "203.0.113.7"
# What a client may put in its own X-Forwarded-For to dodge its login bucket.
SPOOFED = "198.51.100.99"


@dataclass(frozen=True)
class Deploy:
    """One shipped configuration: the services' environment and where the hops are."""

    name: str
    gateway_env: dict[str, str]
    auth_env: dict[str, str]
    proxy: str  # the address the proxy connects to the gateway from
    gateway: str  # the address a gateway connects to auth from
    other: str  # another workload on the same network that is not in the chain
    proxy_appends: bool  # HAProxy appends to the client's header; ingress-nginx replaces it


def compose_deploy(tmp: Path) -> Deploy:
    key = tmp / "placeholder"
    key.write_text("placeholder")
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ROOMCAST_", "COMPOSE_"))}
    env = {
        **clean,
        "ROOMCAST_SIGNING_KEY_FILE": str(key),
        "ROOMCAST_GRAFANA_PASSWORD_FILE": str(key),
        **COMPOSE_REQUIRED_SECRETS,
    }
    result = run(
        [
            tool("docker-compose"),
            "-f",
            str(REPO / "docker-compose.yml"),
            "config",
            "--format",
            "json",
        ],
        env=env,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]

    def address(service: str) -> str:
        network = (services[service].get("networks") or {}).get("default") or {}
        assert "ipv4_address" in network, f"{service} has no fixed address to trust"
        return str(network["ipv4_address"])

    # Containers without a fixed address get one from the network's ip_range.
    subnet_prefix = address("proxy").rsplit(".", 1)[0]
    return Deploy(
        name="compose",
        gateway_env=dict(services["gateway-1"]["environment"]),
        auth_env=dict(services["auth"]["environment"]),
        proxy=address("proxy"),
        gateway=address("gateway-2"),
        other=f"{subnet_prefix}.200",
        proxy_appends=True,
    )


# The pod CIDR of the clusters the overlays are written for: kind and minikube (dev);
# prod ships the same example, to be replaced with the cluster's own.
POD_ADDRESSES = {"ingress": "10.244.3.17", "gateway": "10.244.1.5"}


def k8s_deploy(overlay: str, resources: list[dict[str, Any]]) -> Deploy:
    return Deploy(
        name=f"k8s-{overlay}",
        gateway_env=configmap_data(resources, "roomcast-gateway-config"),
        auth_env=configmap_data(resources, "roomcast-auth-config"),
        proxy=POD_ADDRESSES["ingress"],
        gateway=POD_ADDRESSES["gateway"],
        # A node, a VM or a peered network in another private range.
        other="172.20.0.9",
        proxy_appends=False,
    )


@pytest.fixture(params=["compose", "dev", "prod"])
def deploy(request: pytest.FixtureRequest, rendered: Any, tmp_path: Path) -> Deploy:
    if request.param == "compose":
        return compose_deploy(tmp_path)
    return k8s_deploy(request.param, rendered(request.param))


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """Exactly ``values`` as the ROOMCAST_* environment, as in the container."""
    saved = {k: v for k, v in os.environ.items() if k.startswith("ROOMCAST_")}
    for name in saved:
        del os.environ[name]
    os.environ.update({k: v for k, v in values.items() if k.startswith("ROOMCAST_")})
    try:
        yield
    finally:
        for name in [k for k in os.environ if k.startswith("ROOMCAST_")]:
            del os.environ[name]
        os.environ.update(saved)


def http_request(peer: str, forwarded: list[str]) -> Request:
    headers = [(b"x-forwarded-for", value.encode()) for value in forwarded]
    scope = {"type": "http", "method": "POST", "path": "/v1/auth/login", "headers": headers}
    return Request({**scope, "client": (peer, 40000), "query_string": b""})


def proxy_headers(deploy: Deploy, client: str, client_header: str | None) -> list[str]:
    """X-Forwarded-For as the proxy sends it to the gateway."""
    if deploy.proxy_appends:  # HAProxy "option forwardfor": one more header line
        return [*([client_header] if client_header else []), client]
    return [client]  # ingress-nginx default: $remote_addr replaces the client's header


def auth_sees(deploy: Deploy, client: str, client_header: str | None) -> str:
    """The address auth's limits use for a login sent by ``client``, hop by hop."""
    with environment(deploy.gateway_env):
        gateway = GatewaySettings()
    at_gateway = http_request(deploy.proxy, proxy_headers(deploy, client, client_header))
    relayed = forwarded_for(at_gateway, gateway.trusted_proxies)
    with environment(deploy.auth_env):
        auth = AuthSettings()
    return client_ip(deploy.gateway, [relayed], auth.trusted_proxies)


@pytest.mark.parametrize("client_header", [None, SPOOFED])
def test_auth_sees_the_real_client(deploy: Deploy, client_header: str | None) -> None:
    assert auth_sees(deploy, CLIENT, client_header) == CLIENT, deploy.name
    # two clients behind the same proxy do not share a login bucket
    assert auth_sees(deploy, "203.0.113.8", client_header) == "203.0.113.8"


def test_gateway_sockets_are_accounted_to_the_real_client(deploy: Deploy) -> None:
    with environment(deploy.gateway_env):
        settings = GatewaySettings()
    # the socket caps read the same setting as the REST relay (auth_sees above)
    caps = SocketCaps(per_address=1, per_user=1, trusted_proxies=settings.trusted_proxies)
    headers = proxy_headers(deploy, CLIENT, SPOOFED)
    assert caps.address_of(deploy.proxy, headers) == CLIENT
    # a client reaching the gateway without the proxy cannot pick its address
    assert caps.address_of(deploy.other, [SPOOFED]) == deploy.other


def test_auth_trusts_no_peer_outside_the_chain(deploy: Deploy) -> None:
    """A workload on the network that is neither a gateway nor the proxy (or a client
    that reached auth some other way) cannot name an address to auth."""
    with environment(deploy.auth_env):
        auth = AuthSettings()
    assert client_ip(deploy.other, [SPOOFED], auth.trusted_proxies) == deploy.other
