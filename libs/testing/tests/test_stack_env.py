"""The 3-node NATS variant of the test stack configures its services as the production
overlay's nats-cluster component does: every ``*_REPLICAS`` setting the component sets
is given to the same service, with the cluster's size, so the chaos run's cluster
variant tests what production runs (a revocation bucket with 1 replica would not
survive the node the chaos run kills)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from roomcast.testing.processes import MongoServer
from roomcast.testing.stack import Stack

ROOT = Path(__file__).resolve().parents[3]
COMPONENT = ROOT / "deploy" / "k8s" / "components" / "nats-cluster" / "kustomization.yaml"
# The stack's process standing for each service's config map (one gateway is enough:
# both get the same environment but their ports).
PROCESS_OF = {
    "roomcast-auth-config": "auth",
    "roomcast-rooms-config": "rooms",
    "roomcast-history-config": "history",
    "roomcast-gateway-config": "gateway-a",
    "roomcast-notifier-config": "notifier",
}


def production_replica_settings() -> dict[str, dict[str, str]]:
    """{stack process: {variable: value}} of the component's ``*_REPLICAS`` literals."""
    component: dict[str, Any] = yaml.safe_load(COMPONENT.read_text())
    found: dict[str, dict[str, str]] = {}
    for generator in component.get("configMapGenerator", []):
        for literal in generator.get("literals", []):
            name, _, value = str(literal).partition("=")
            if name.endswith("_REPLICAS"):
                found.setdefault(PROCESS_OF[generator["name"]], {})[name] = value
    return found


def test_the_cluster_stack_sets_every_replica_setting_of_the_production_cluster(
    tmp_path: Path,
) -> None:
    wanted = production_replica_settings()
    assert "ROOMCAST_AUTH_REVOCATIONS_REPLICAS" in wanted.get("auth", {}), wanted
    sizes = {value for settings in wanted.values() for value in settings.values()}
    assert len(sizes) == 1, f"the component's replica counts differ: {wanted}"
    stack = Stack(tmp_path, nats_nodes=int(sizes.pop()))
    # Built, not started: only their addresses go into the environment.
    stack.nats_cluster = stack._make_nats()
    stack.mongo = MongoServer()
    try:
        for process, settings in wanted.items():
            env = stack.service_env(process)
            assert {name: env.get(name) for name in settings} == settings, process
    finally:
        for node in stack.nats_cluster:
            node.cleanup()
        stack.mongo.cleanup()


def test_a_single_node_stack_asks_for_one_replica(tmp_path: Path) -> None:
    stack = Stack(tmp_path, nats_nodes=1)
    stack.nats_cluster = stack._make_nats()
    stack.mongo = MongoServer()
    try:
        assert stack.service_env("auth")["ROOMCAST_AUTH_REVOCATIONS_REPLICAS"] == "1"
        assert stack.service_env("gateway-a")["ROOMCAST_GATEWAY_STREAM_REPLICAS"] == "1"
    finally:
        for node in stack.nats_cluster:
            node.cleanup()
        stack.mongo.cleanup()
