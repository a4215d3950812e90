"""The shipped NATS servers fsync every message before acknowledging it.

Both nats.conf files (compose and the Kubernetes cluster component) must set
``sync_interval: always``; the NATS default (flush every 2 minutes) loses acknowledged
messages on a power cut. Checked with the real server: each file's ``jetstream`` block
runs in a nats-server 2.10+ on free ports, and the server's own /varz must report
``sync_always``. The production overlay's CHAT stream has 3 replicas, whichever service
creates it, and so do the key-value buckets beside it.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from deploy_helpers import DEPLOY, K8S, configmap_data, tool

from roomcast.testing.processes import ManagedProcess, free_port, port_accepts

CONFIGS = {
    "compose": DEPLOY / "compose" / "nats.conf",
    "k8s": K8S / "components" / "nats-cluster" / "nats.conf",
}
# nats-server starts in well under a second; a loaded 2-core runner takes longer.
START_SECONDS = 30.0


def jetstream_block(text: str) -> str:
    match = re.search(r"^jetstream \{\n(.*?)^\}", text, re.MULTILINE | re.DOTALL)
    assert match, "no jetstream block"
    return match.group(1)


def varz_jetstream(conf: Path, tmp: Path) -> dict[str, Any]:
    """Run the file's jetstream block (store in ``tmp``) and read the server's /varz."""
    block = re.sub(r"store_dir: .*", f"store_dir: {tmp / 'js'}", jetstream_block(conf.read_text()))
    port, monitor = free_port(), free_port()
    test_conf = tmp / "nats.conf"
    test_conf.write_text(
        f"listen: 127.0.0.1:{port}\nhttp: 127.0.0.1:{monitor}\njetstream {{\n{block}}}\n"
    )
    server = ManagedProcess("nats-durability", [tool("nats-server"), "-c", str(test_conf)])
    server.start()
    try:
        deadline = time.monotonic() + START_SECONDS
        while not port_accepts("127.0.0.1", monitor):
            assert server.check_alive(), server.log_tail()
            assert time.monotonic() < deadline, "nats-server did not start"
            time.sleep(0.05)
        with urllib.request.urlopen(f"http://127.0.0.1:{monitor}/varz", timeout=5) as response:
            varz = json.load(response)
        return dict(varz["jetstream"]["config"])
    finally:
        server.stop()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_server_fsyncs_before_acknowledging(name: str, tmp_path: Path) -> None:
    config = varz_jetstream(CONFIGS[name], tmp_path)
    assert config.get("sync_always") is True, config


def test_the_check_is_not_vacuous(tmp_path: Path) -> None:
    """The default configuration does not report sync_always."""
    default = tmp_path / "default.conf"
    default.write_text("jetstream {\n  store_dir: /data/jetstream\n}\n")
    assert "sync_always" not in varz_jetstream(default, tmp_path)


def test_prod_stream_has_three_replicas_whoever_creates_it(rendered: Any) -> None:
    resources = rendered("prod")
    for service in ("gateway", "history", "notifier"):
        data = configmap_data(resources, f"roomcast-{service}-config")
        assert data[f"ROOMCAST_{service.upper()}_STREAM_REPLICAS"] == "3", service


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_buckets_have_three_replicas_on_the_cluster(rendered: Any, overlay: str) -> None:
    """Both overlays run the 3-node cluster: revoked sessions, retention periods (rooms)
    and the slow-mode pace (the gateway's, sized by its stream setting) survive the loss
    of one node."""
    resources = rendered(overlay)
    settings = {
        "auth": "ROOMCAST_AUTH_REVOCATIONS_REPLICAS",
        "rooms": "ROOMCAST_ROOMS_RETENTION_BUCKET_REPLICAS",
        "gateway": "ROOMCAST_GATEWAY_STREAM_REPLICAS",
    }
    for service, name in settings.items():
        assert configmap_data(resources, f"roomcast-{service}-config").get(name) == "3", name


def test_base_leaves_the_default_of_one_replica(rendered: Any) -> None:
    """The 3-replica settings come with the cluster component only: a base applied with a
    single NATS server could not place 3 replicas and rooms would fail to make its bucket."""
    data = configmap_data(rendered("base"), "roomcast-rooms-config")
    assert "ROOMCAST_ROOMS_RETENTION_BUCKET_REPLICAS" not in data
