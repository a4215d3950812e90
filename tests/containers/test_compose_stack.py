"""docker-compose.yml run for real: the images `make images` built and the stand-ins
for the infrastructure images, under podman, reached only through the ports the stack
publishes on loopback. Users chat across both gateways and read the history; a gateway
container killed mid-chat loses nothing; Prometheus scrapes every service."""

from __future__ import annotations

import asyncio
import subprocess

import httpx
import pytest
from e2e_helpers import DELIVERY_DEADLINE_SECONDS, eventually, new_user, open_socket
from podman_stack import ComposeStack

from roomcast.client import Unavailable, Unreachable

pytestmark = pytest.mark.containers

# 15 sends/s: under the gateway's default per-connection limit of 20 frames/s.
SEND_INTERVAL_SECONDS = 1 / 15
# Prometheus scrapes every 15 s (deploy/observability/prometheus.yml); two intervals
# and the first scrape's jitter fit well within this.
SCRAPE_DEADLINE_SECONDS = 90.0
ROOMCAST_JOBS = {"auth": 1, "rooms": 1, "history": 1, "gateway": 2}


async def history_seqs(http: object, room: str) -> list[int]:
    seqs: list[int] = []
    before = None
    while True:
        page = await http.messages(room, before=before, limit=100)  # type: ignore[attr-defined]
        seqs += [int(item["seq"]) for item in page["items"]]
        before = page["next_before"]
        if before is None:
            return seqs


async def test_register_chat_on_both_gateways_and_read_history(
    compose_stack: ComposeStack,
) -> None:
    url_1, url_2 = compose_stack.gateway_urls
    # One user through HAProxy, the others on a chosen gateway each.
    alice = await new_user(compose_stack.proxy_url, "alice")
    bob = await new_user(url_2, "bob")
    room = await alice.create_room("containers", visibility="public")
    await bob.join_room(room["id"])
    sa, ca = await open_socket([url_1], alice)
    sb, cb = await open_socket([url_2], bob)
    try:
        for sock in (sa, sb):
            await sock.subscribe(room["id"])
        acks = await asyncio.gather(
            *(sa.send(room["id"], f"a{i}") for i in range(20)),
            *(sb.send(room["id"], f"b{i}") for i in range(20)),
        )
        acked = sorted(a.seq for a in acks)
        assert len(set(acked)) == 40
        for collector in (ca, cb):
            await collector.wait_for(lambda c=collector: len(c.seqs(room["id"])) >= 40, "all 40")
        assert ca.seqs(room["id"]) == cb.seqs(room["id"]) == acked
        bodies = sorted(str(m.body) for m in ca.messages)
        assert len(bodies) == 40

        async def stored() -> bool:
            return sorted(await history_seqs(bob, room["id"])) == acked

        await eventually(stored, "history holds every acknowledged message")
    finally:
        await sa.close()
        await sb.close()
        await alice.aclose()
        await bob.aclose()


async def test_gateway_container_killed_mid_chat_loses_nothing(
    compose_stack: ComposeStack,
) -> None:
    url_1, url_2 = compose_stack.gateway_urls
    # REST through HAProxy, as users reach it; each socket starts on gateway-1.
    sender_http = await new_user(compose_stack.proxy_url, "sender")
    reader_http = await new_user(compose_stack.proxy_url, "reader")
    room = await sender_http.create_room("resilient", visibility="public")
    await reader_http.join_room(room["id"])
    sender, _ = await open_socket([url_1, url_2], sender_http)
    reader, collected = await open_socket([url_1, url_2], reader_http)
    stack = compose_stack.stack
    try:
        await sender.subscribe(room["id"])
        await reader.subscribe(room["id"])
        acks: list[int] = []
        total = 90

        async def send_all() -> None:
            for i in range(total):
                acks.append((await sender.send(room["id"], f"m{i}")).seq)
                await asyncio.sleep(SEND_INTERVAL_SECONDS)

        sending = asyncio.create_task(send_all())
        await collected.wait_for(lambda: len(collected.messages) >= 15, "flow started")
        await asyncio.to_thread(stack.kill, "gateway-1")
        assert stack.state("gateway-1")["Status"] != "running"
        async with asyncio.timeout(60):
            await sending
        await collected.wait_for(lambda: len(collected.seqs(room["id"])) >= total, "all acked")
        received = collected.seqs(room["id"])
        assert len(acks) == total
        assert sorted(received) == sorted(set(received)), "a message arrived twice"
        assert set(acks) <= set(received), "an acknowledged message was lost"
        assert received == sorted(received), "order broken across the resume"
        assert reader.stats.gaps == 0
        assert reader.stats.reconnects >= 1
        assert sender.stats.reconnects >= 1

        last: list[object] = []

        async def stored() -> bool:
            try:
                seqs = await history_seqs(reader_http, room["id"])
            except (Unavailable, Unreachable) as error:
                last[:] = [error]
                return False  # HAProxy has not yet marked gateway-1 down
            last[:] = [sorted(set(acks) - set(seqs))]
            return set(acks) <= set(seqs)

        try:
            await eventually(stored, "history holds every acknowledged message")
        except TimeoutError:
            raise AssertionError(f"history incomplete: {last}") from None
    finally:
        await sender.close()
        await reader.close()
        await sender_http.aclose()
        await reader_http.aclose()
        # Bring gateway-1 back (same container, same settings) for the other tests.
        await asyncio.to_thread(restart, compose_stack, "gateway-1")


def restart(compose_stack: ComposeStack, service: str) -> None:
    stack = compose_stack.stack
    subprocess.run(["podman", "start", stack.container(service)], check=True, timeout=60)
    stack.wait_for(service, "service_healthy")


async def test_prometheus_scrapes_every_service(compose_stack: ComposeStack) -> None:
    async with httpx.AsyncClient(base_url=compose_stack.prometheus_url, timeout=10) as client:

        async def all_up() -> bool:
            response = await client.get("/api/v1/targets", params={"state": "active"})
            if response.status_code != 200:
                return False
            up: dict[str, int] = {}
            for target in response.json()["data"]["activeTargets"]:
                if target["health"] == "up":
                    job = target["labels"]["job"]
                    up[job] = up.get(job, 0) + 1
            return all(up.get(job, 0) >= n for job, n in ROOMCAST_JOBS.items())

        async with asyncio.timeout(SCRAPE_DEADLINE_SECONDS):
            while not await all_up():  # noqa: ASYNC110 - another process's state
                await asyncio.sleep(1)
        # The scraped series are the services' own metrics, not only `up`.
        for job in ROOMCAST_JOBS:
            response = await client.get(
                "/api/v1/query",
                params={"query": f'count({{job="{job}", __name__=~"roomcast_.+"}})'},
            )
            result = response.json()["data"]["result"]
            assert result, f"no roomcast_* series scraped from {job}"
            assert int(result[0]["value"][1]) > 0


def test_containers_run_as_non_root_on_a_read_only_root(compose_stack: ComposeStack) -> None:
    stack = compose_stack.stack
    for service in ("auth", "rooms", "history", "gateway-2"):
        probe = subprocess.run(
            [
                "podman",
                "exec",
                stack.container(service),
                "python",
                "-c",
                "import os\ntry:\n    open('/opt/written', 'w')\nexcept OSError as e:\n"
                "    print(os.getuid(), e.errno)",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=DELIVERY_DEADLINE_SECONDS,
        )
        assert probe.stdout.split() == ["10001", "30"], (service, probe.stdout, probe.stderr)
