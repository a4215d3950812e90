"""The Kubernetes dev overlay run with `podman kube play` (kube_rewrite.py says what is
rewritten and why, kube_play.py plays it): the bootstrap runs from our image (the NATS
Job as a Pod, the MongoDB sidecar beside the stand-in), every container passes its
readiness probe, a second bootstrap run changes nothing, users chat through the two
played gateways, and a DM lands in its recipient's inbox (the notifier, set up as
docs/deploy.md tells an operator: its Secret, then its service account registered
through a gateway, then listed in auth's service readers)."""

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
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from e2e_helpers import eventually, new_user, open_socket
from kube_play import IGNORED_KINDS, UNPLAYED, KubePlay, render

pytestmark = pytest.mark.containers

# One bootstrap run in a container (a Python start and a few round trips), loaded machine.
BOOTSTRAP_TIMEOUT_SECONDS = 120
# The notifier's service account (ROOMCAST_NOTIFIER_SERVICE_USERNAME in notifier.env).
NOTIFIER_ACCOUNT = "roomcast-notifier"
# One registration through a gateway (a bcrypt hash on a loaded machine).
REGISTER_TIMEOUT_SECONDS = 30
# Between two inbox reads: the inbox allows 120 reads per user a minute
# (ROOMCAST_NOTIFIER_API_RATE_*), so a 30 s wait polled every 0.5 s (60 reads) ends
# with the DM or with the deadline, never with a 429.
INBOX_POLL_SECONDS = 0.5


def vapid_private_key() -> str:
    """What `openssl ecparam -name prime256v1 -genkey -noout` writes (docs/deploy.md)."""
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return pem.decode()


def set_up_notifier_account(play: KubePlay, password: str, directory: Path) -> None:
    """docs/deploy.md's order: register the account through a gateway, *then* list it
    in auth's service readers (the other order lets anyone who registers the name first
    read every room). Before any message, so the notifier has not logged in yet."""
    url = f"http://127.0.0.1:{play.gateway_ports['gateway-1']}/v1/auth/register"
    body = {"username": NOTIFIER_ACCOUNT, "password": password}
    registered = httpx.post(url, json=body, timeout=REGISTER_TIMEOUT_SECONDS)
    assert registered.status_code == 201, registered.text
    play.replay_with_settings(
        "auth", {"ROOMCAST_AUTH_SERVICE_READER_USERNAMES": NOTIFIER_ACCOUNT}, directory
    )
    play.wait_ready()


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
        notifier_password = secrets.token_urlsafe(24)
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
                # No webhooks: the key is optional in the manifest, but the harness
                # makes every key the pods read.
                "roomcast-notifier-secrets": {
                    "service-password": notifier_password,
                    "vapid-private-key": vapid_private_key(),
                    "webhooks": "[]",
                },
            },
            volume_secrets={"roomcast-auth-signing-key"},
        )
        play.play(documents, directory)
        play.wait_ready()
        set_up_notifier_account(play, notifier_password, directory)
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
    for service in ("auth", "rooms", "history", "notifier"):
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


async def test_a_dm_reaches_the_recipients_inbox_through_the_played_notifier(
    kube: KubePlay,
) -> None:
    # The notifier reads CHAT with its own consumer, asks rooms who the DM's members
    # are as its service account, writes the inbox; the gateway relays GET
    # /v1/notifications to it.
    url_1, url_2 = (f"http://127.0.0.1:{kube.gateway_ports[g]}" for g in ("gateway-1", "gateway-2"))
    alice = await new_user(url_1, "alice")
    bob = await new_user(url_2, "bob")
    assert alice.user is not None
    assert bob.user is not None
    sa, _ = await open_socket([url_1], alice)
    try:
        dm = (await alice.open_dm(str(bob.user["id"])))["id"]
        await sa.subscribe(dm)
        sent = await sa.send(dm, "hello bob")

        async def in_inbox() -> bool:
            page = await bob.notifications(limit=10)
            return [(n["seq"], n["kind"]) for n in page["items"]] == [(sent.seq, "dm")]

        await eventually(
            in_inbox, "alice's DM in bob's inbox, read through gateway-2", poll=INBOX_POLL_SECONDS
        )
        page = await bob.notifications(limit=10)
        assert page["unread"] == 1
        assert page["items"][0]["preview"] == "hello bob"
        assert page["items"][0]["sender"]["id"] == alice.user["id"]
    finally:
        await sa.close()
        await alice.aclose()
        await bob.aclose()
