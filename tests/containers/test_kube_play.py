"""The Kubernetes dev overlay run with `podman kube play` (kube_rewrite.py says what is
rewritten and why, kube_play.py plays it): the bootstrap runs from our image (the NATS
Job as a Pod, the MongoDB sidecar beside the stand-in), every container passes its
readiness probe, a second bootstrap run changes nothing, and users chat through the
two played gateways."""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from conftest import TAG, free_port, require_images, write_secrets
from e2e_helpers import eventually, new_user, open_socket
from kube_play import IGNORED_KINDS, UNPLAYED, KubePlay, render

pytestmark = pytest.mark.containers

# One bootstrap run in a container (a Python start and a few round trips), loaded machine.
BOOTSTRAP_TIMEOUT_SECONDS = 120


@pytest.fixture(scope="module")
def kube() -> Iterator[KubePlay]:
    require_images()
    directory = Path(tempfile.mkdtemp(prefix="roomcast-kube-"))
    key, _ = write_secrets(directory)
    play = KubePlay(tag=TAG, gateway_ports={"gateway-1": free_port(), "gateway-2": free_port()})
    try:
        play.create_network()
        documents = play.rewrite(render())
        passwords = {svc: secrets.token_hex(16) for svc in ("auth", "rooms", "history", "notifier")}
        # SecantusDB is the primary of its own set, not rs0: connect to it directly.
        urls = {
            svc: f"mongodb://roomcast-{svc}:{pw}@mongodb-0.mongodb:27017/roomcast_{svc}"
            "?directConnection=true&authSource=admin&w=majority"
            for svc, pw in passwords.items()
        }
        play.create_secrets(
            {
                "roomcast-auth-signing-key": {"signing-key.pem": key.read_text()},
                "roomcast-mongodb-urls": urls,
                "roomcast-mongodb-admin": {"username": "admin", "password": secrets.token_hex(16)},
                "roomcast-mongodb-users": {f"{s}-password": pw for s, pw in passwords.items()},
            },
            volume_secrets={"roomcast-auth-signing-key"},
        )
        play.play(documents, directory)
        play.wait_ready()
        yield play
    finally:
        play.down()
        shutil.rmtree(directory, ignore_errors=True)


def test_kube_play_ignores_only_kinds_validated_offline(kube: KubePlay) -> None:
    # Everything the harness leaves out is a kind kube play skips; tests/deploy checks
    # those offline (Services' selectors and ports, HPA, PDBs, policies, Ingress).
    assert set(kube.dropped) <= IGNORED_KINDS | {"Job", "Deployment"}
    assert kube.dropped["Job"] == ["roomcast-load"]
    assert set(kube.dropped.get("Deployment", [])) <= set(UNPLAYED)
    assert {"Service", "NetworkPolicy", "PodDisruptionBudget"} <= set(kube.dropped)


def test_bootstrap_ran_from_our_image_and_a_second_run_changes_nothing(kube: KubePlay) -> None:
    # The Job's Pod succeeded (wait_ready) with the bootstrap of our image; CHAT may
    # already exist (a gateway or history creates it at start), the bucket need not.
    assert "bootstrap nats: done" in kube.logs("nats-stream-replicas-bootstrap")
    mongo = kube.logs("mongodb-0-rs-init")
    assert "bootstrap mongo: administrator admin created" in mongo, mongo
    for service in ("auth", "rooms", "history"):
        assert f"bootstrap mongo: user roomcast-{service} created" in mongo, mongo

    # Again, in the sidecar with its settings, and as the Job would on its retry.
    again = subprocess.run(
        [
            "podman",
            "exec",
            "mongodb-0-rs-init",
            "python",
            "-m",
            "roomcast.common.bootstrap",
            "mongo",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=BOOTSTRAP_TIMEOUT_SECONDS,
    )
    assert again.returncode == 0, again.stderr
    assert "bootstrap mongo: done, 0 change(s)" in again.stdout
    nats_url = f"nats://{kube.address('nats-0')}:4222"
    again = subprocess.run(
        [
            "podman",
            "run",
            "--rm",
            "--network",
            kube.network,
            "--env",
            f"ROOMCAST_BOOTSTRAP_NATS_URL={nats_url}",
            "--entrypoint",
            "python",
            f"localhost/roomcast/gateway:{TAG}",
            "-m",
            "roomcast.common.bootstrap",
            "nats",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=BOOTSTRAP_TIMEOUT_SECONDS,
    )
    assert again.returncode == 0, again.stderr
    assert "bootstrap nats: done, 0 change(s)" in again.stdout


async def test_chat_through_both_played_gateways(kube: KubePlay) -> None:
    url_1, url_2 = (f"http://127.0.0.1:{kube.gateway_ports[g]}" for g in ("gateway-1", "gateway-2"))
    alice = await new_user(url_1, "alice")
    bob = await new_user(url_2, "bob")
    room = await alice.create_room("kube", visibility="public")
    await bob.join_room(room["id"])
    sa, _ = await open_socket([url_1], alice)
    sb, cb = await open_socket([url_2], bob)
    try:
        await sa.subscribe(room["id"])
        await sb.subscribe(room["id"])
        acks = [(await sa.send(room["id"], f"hello {i}")).seq for i in range(5)]
        await cb.wait_for(lambda: len(cb.seqs(room["id"])) >= 5, "bob got alice's 5 messages")
        assert cb.seqs(room["id"]) == acks
        assert [m.content for m in cb.messages] == [f"hello {i}" for i in range(5)]

        async def stored() -> bool:
            page = await bob.messages(room["id"], limit=10)
            return sorted(int(item["seq"]) for item in page["items"]) == acks

        await eventually(stored, "the history page holds the 5 messages")
    finally:
        await sa.close()
        await sb.close()
        await alice.aclose()
        await bob.aclose()
    async with httpx.AsyncClient(timeout=5) as client:
        for url in (url_1, url_2):
            assert (await client.get(f"{url}/readyz")).status_code == 200
