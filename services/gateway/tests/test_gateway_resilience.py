"""Failure and limit scenarios, each on its own gateway processes: kill -9 and resume,
SIGTERM drain, a slow reader, a flood, retention truncation, a NATS outage."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import httpx
import orjson
import pytest
from gateway_testkit import (
    CuttableProxy,
    GatewayProc,
    OpenWs,
    Spawner,
    WsClient,
    assert_chain,
    base_env,
    make_user,
    raw_ws_connect,
    raw_ws_read_until_close,
    raw_ws_send,
    room_with,
)
from nats.aio.client import Client as NatsClient
from nats.js.errors import NotFoundError
from websockets.exceptions import InvalidStatus

from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms, JwksServer
from roomcast.testing.processes import NatsServer, free_port

pytestmark = pytest.mark.asyncio(loop_scope="session")

# Sends between two reads of the close counter (see the slow-reader test).
SENDS_PER_SCRAPE = 16

FAST = {
    "ROOMCAST_GATEWAY_RATE_LIMIT_PER_SECOND": "2000",
    "ROOMCAST_GATEWAY_RATE_LIMIT_BURST": "2000",
}


async def stream_payload(nc: NatsClient, seq: int) -> dict[str, Any] | None:
    try:
        msg = await nc.jetstream().get_msg("CHAT", seq=seq, direct=True)
    except NotFoundError:
        return None
    payload: dict[str, Any] = orjson.loads(msg.data or b"{}")
    payload["_subject"] = msg.subject
    return payload


class Sender:
    """Sends numbered messages one at a time (each after the previous ack); on a
    dropped connection it reconnects to ``fallback`` and resends the unacked one with
    the same client_id."""

    def __init__(self, client: WsClient, room: str, prefix: str, reopen: OpenWs) -> None:
        self.client = client
        self.reopen = reopen
        self.room = room
        self.prefix = prefix
        self.acks: dict[str, int] = {}

    async def run(self, count: int, fallback: str) -> None:
        n = 0
        while n < count:
            cid = f"{self.prefix}-{n}"
            try:
                ack = await self.client.send_text(self.room, f"msg {cid}", client_id=cid)
            except ConnectionError:
                assert self.client.user is not None
                self.client = await self.reopen(fallback, self.client.user)
                continue
            assert ack["type"] == "ack", ack
            self.acks[cid] = ack["seq"]
            n += 1


async def test_gateway_kill9_clients_resume_elsewhere_without_loss_or_duplicates(
    open_ws: OpenWs,
    gw_env: dict[str, str],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
    spawn: Spawner,
) -> None:
    doomed = await spawn({**gw_env, **FAST}, "gw-doomed")
    survivor = await spawn({**gw_env, **FAST}, "gw-survivor")
    users = [make_user(signer) for _ in range(4)]
    room = room_with(gw_rooms, *(user.id for user in users))
    s_doomed_user, s_surv_user, r_doomed_user, r_surv_user = users
    try:
        reader_doomed = await open_ws(doomed.ws_url, r_doomed_user)
        reader_surv = await open_ws(survivor.ws_url, r_surv_user)
        await reader_doomed.subscribe(room)
        await reader_surv.subscribe(room)
        senders = [
            Sender(await open_ws(doomed.ws_url, s_doomed_user), room, "d", open_ws),
            Sender(await open_ws(survivor.ws_url, s_surv_user), room, "s", open_ws),
        ]
        per_sender = 80
        sending = asyncio.gather(*(s.run(per_sender, survivor.ws_url) for s in senders))
        await reader_doomed.wait_messages(room, 30)
        doomed.kill()  # SIGKILL mid-flow
        await reader_doomed.wait_closed()
        # The reader resumes on the surviving gateway from the last seq it holds.
        before = reader_doomed.messages(room)
        resumed = await open_ws(survivor.ws_url, r_doomed_user)
        await resumed.subscribe(room, since=before[-1]["seq"])
        await sending
        acked = sorted(seq for s in senders for seq in s.acks.values())
        assert len(acked) == 2 * per_sender
        assert len(set(acked)) == len(acked)  # every client_id stored once
        total = 2 * per_sender
        after = await resumed.wait_messages(room, total - len(before), within=20)
        seen = [m["seq"] for m in before + after]
        assert sorted(seen) == acked, "lost or duplicated messages across the failover"
        assert_chain(before + after, start_prev=0)
        control = await reader_surv.wait_messages(room, total, within=20)
        assert [m["seq"] for m in control] == acked
        # And the stream holds each message once.
        all_acks = {**senders[0].acks, **senders[1].acks}
        assert len(all_acks) == total
        for cid, seq in all_acks.items():
            payload = await stream_payload(nc, seq)
            assert payload is not None
            assert payload["client_id"] == cid
    finally:
        doomed.kill()


async def test_gateway_sigterm_drains_with_1012_and_keeps_every_ack(
    open_ws: OpenWs,
    gw_env: dict[str, str],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
    spawn: Spawner,
) -> None:
    gw = await spawn({**gw_env, **FAST}, "gw-drain")
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    try:
        sender = await open_ws(gw.ws_url, alice)
        watcher = await open_ws(gw.ws_url, bob)
        await watcher.subscribe(room)
        await sender.send_text(room, "warm up")  # membership cached, stream warm
        for n in range(60):  # pipelined: many publishes in flight at SIGTERM
            await sender.send_json(
                {
                    "type": "send",
                    "room": room,
                    "client_id": f"c{n}",
                    "body": {"type": "text", "content": f"m{n}"},
                }
            )
        await sender.wait_until(lambda: any(f.get("type") == "ack" for f in sender.frames[1:]))
        gw.signal(signal.SIGTERM)
        for client in (sender, watcher):
            closed = await client.wait_closed()
            assert closed.code == 1012
        code = await asyncio.to_thread(gw.wait, 10)
        assert code == 0, gw.log_tail()
        acks = [f for f in sender.frames if f.get("type") == "ack"]
        assert len(acks) > 1
        for ack in acks:
            payload = await stream_payload(nc, ack["seq"])
            assert payload is not None, f"acked seq {ack['seq']} missing from the stream"
            assert payload["client_id"] == ack["client_id"]
            assert payload["_subject"] == f"chat.room.{room}"
        refused = [f for f in sender.frames if f.get("type") == "error"]
        assert all(f["code"] == "gateway_restarting" for f in refused), refused
    finally:
        await gw.astop()


async def test_gateway_slow_reader_is_closed_4009_without_slowing_others(
    open_ws: OpenWs,
    gw_env: dict[str, str],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    env = {
        **gw_env,
        **FAST,
        "ROOMCAST_GATEWAY_MAX_SEND_BUFFER_BYTES": str(128 * 1024),
        # The ceiling the record contract allows (chatrecord.MAX_TEXT_CHARS): big bodies
        # fill the kernel's buffers in a few hundred messages.
        "ROOMCAST_GATEWAY_MAX_BODY_CHARS": "16000",
    }
    gw = await spawn(env, "gw-slow")
    slow_user, fast_user, sender_user = (make_user(signer) for _ in range(3))
    room = room_with(gw_rooms, slow_user.id, fast_user.id, sender_user.id)
    sock = await asyncio.to_thread(raw_ws_connect, gw.gw_port)
    try:
        raw_ws_send(sock, {"type": "auth", "token": slow_user.token})
        raw_ws_send(sock, {"type": "subscribe", "room": room})
        fast = await open_ws(gw.ws_url, fast_user)
        await fast.subscribe(room)
        sender = await open_ws(gw.ws_url, sender_user)
        big = "x" * 16_000
        latencies = []
        count = 0
        # The slow socket never reads: kernel buffers fill, then the gateway's. The
        # close is read from the metrics every SENDS_PER_SCRAPE sends: a scrape costs
        # more than a send, and on a loaded machine a scrape per send made the test
        # outlive its timeout before the hundreds of sends the buffers take.
        while count % SENDS_PER_SCRAPE or (
            await gw.metric("roomcast_gateway_closes_total", 'code="4009"') < 1
        ):
            count += 1
            assert count < 4000, "the slow reader was never closed"
            started = time.monotonic()
            ack = await sender.send_text(room, big)
            await fast.expect(lambda f, seq=ack["seq"]: f.get("seq") == seq)
            latencies.append(time.monotonic() - started)
        # The fast reader kept receiving promptly while the slow one filled up.
        # (5 s: generous for a loaded 2-core machine; a blocked fan-out would never deliver.)
        assert max(latencies) < 5.0, max(latencies)
        ack = await sender.send_text(room, "after the slow one left")
        await fast.expect(lambda f: f.get("seq") == ack["seq"])
        code = await asyncio.to_thread(raw_ws_read_until_close, sock, 10.0)
        assert code == 4009
    finally:
        sock.close()
        await gw.astop()


async def test_gateway_flood_gets_rate_limited_then_closed_4008(
    open_ws: OpenWs, gw_env: dict[str, str], signer: TokenSigner, spawn: Spawner
) -> None:
    env = {
        **gw_env,
        "ROOMCAST_GATEWAY_RATE_LIMIT_PER_SECOND": "5",
        "ROOMCAST_GATEWAY_RATE_LIMIT_BURST": "10",
        "ROOMCAST_GATEWAY_RATE_LIMIT_MAX_VIOLATIONS": "5",
    }
    gw = await spawn(env, "gw-flood")
    try:
        client = await open_ws(gw.ws_url, make_user(signer))
        for _ in range(40):
            if client.closed:
                break
            await client.send_json({"type": "ping"})
        closed = await client.wait_closed()
        assert closed.code == 4008
        limited = [f for f in client.frames if f.get("code") == "rate_limited"]
        assert 1 <= len(limited) < 5
        pongs = [f for f in client.frames if f.get("type") == "pong"]
        # The burst (10) minus the auth frame, plus what refilled meanwhile (5/s).
        assert 9 <= len(pongs) <= 12
        assert await gw.metric("roomcast_gateway_rate_limited_total") >= 5
    finally:
        await gw.astop()


async def test_gateway_resume_after_retention_is_truncated(
    open_ws: OpenWs, gw_jwks: JwksServer, gw_rooms: FakeRooms, signer: TokenSigner, spawn: Spawner
) -> None:
    private_nats = NatsServer()
    private_nats.start()
    env = {
        **base_env(private_nats.url, gw_jwks.url, gw_rooms.target),
        **FAST,
        "ROOMCAST_GATEWAY_STREAM_MAX_MSGS_PER_SUBJECT": "5",
        "ROOMCAST_GATEWAY_MAX_REPLAY_MESSAGES": "3",
    }
    try:
        await truncation_scenario(open_ws, await spawn(env, "gw-retention"), gw_rooms, signer)
    finally:
        await spawn.stop_all()  # before its NATS goes away
        private_nats.cleanup()


async def truncation_scenario(
    open_ws: OpenWs, gw: GatewayProc, gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    alice, bob = make_user(signer), make_user(signer)
    room, noise = room_with(gw_rooms, alice.id, bob.id), room_with(gw_rooms, alice.id, bob.id)
    try:
        sender = await open_ws(gw.ws_url, alice)
        seqs = []
        for n in range(10):
            seqs.append((await sender.send_text(room, f"m{n}"))["seq"])
            await sender.send_text(noise, "noise")
        # The stream now keeps only the newest 5 of the room: seqs[5:].

        async def resume(since: int) -> tuple[dict[str, Any], list[dict[str, Any]], int]:
            """Subscribe with since; return subscribed, the replayed frames, and the
            seq of a sentinel sent afterwards (it marks the end of the replay)."""
            client = await open_ws(gw.ws_url, bob)
            subscribed = await client.subscribe(room, since=since)
            sentinel = (await sender.send_text(room, "sentinel"))["seq"]
            await client.expect(lambda f: f.get("seq") == sentinel)
            frames = [m for m in client.messages(room) if m["seq"] != sentinel]
            await client.close()
            return subscribed, frames, sentinel

        # since was purged: truncated; the stored messages, capped to the newest 3,
        # the first with its true prev.
        subscribed, frames, s1 = await resume(seqs[1])
        assert subscribed["truncated"] is True
        assert subscribed["seq"] == seqs[9]
        assert [m["seq"] for m in frames] == seqs[7:10]
        assert_chain(frames, start_prev=seqs[6])
        # since is stored but 4 newer > cap 3: the newest 3.
        subscribed, frames, s2 = await resume(seqs[6])
        assert subscribed["truncated"] is True
        assert [m["seq"] for m in frames] == [seqs[8], seqs[9], s1]
        assert_chain(frames, start_prev=seqs[7])
        # since is stored and few followed: the exact replay, not truncated.
        subscribed, frames, _ = await resume(seqs[9])
        assert "truncated" not in subscribed
        assert [m["seq"] for m in frames] == [s1, s2]
        assert_chain(frames, start_prev=seqs[9])
        # A since the room never had (a bogus or foreign seq) is truncated and hides
        # nothing newer.
        subscribed, frames, _ = await resume(seqs[9] + 1)  # a noise message's seq
        assert subscribed["truncated"] is True
    finally:
        await gw.astop()


async def test_gateway_repairs_what_it_missed_while_cut_off_from_nats(
    open_ws: OpenWs,
    gw_jwks: JwksServer,
    gw_rooms: FakeRooms,
    gw_nats: NatsServer,
    signer: TokenSigner,
    spawn: Spawner,
) -> None:
    proxy = CuttableProxy("127.0.0.1", gw_nats.port)
    await proxy.start()
    env = {
        **base_env(f"nats://127.0.0.1:{proxy.port}", gw_jwks.url, gw_rooms.target),
        **FAST,
    }
    alice, bob = make_user(signer), make_user(signer)
    room = room_with(gw_rooms, alice.id, bob.id)
    try:
        cut_gw = await spawn(env, "gw-cut")
        direct_gw = await spawn(
            {**base_env(gw_nats.url, gw_jwks.url, gw_rooms.target), **FAST}, "gw-direct"
        )
        reader = await open_ws(cut_gw.ws_url, bob)
        await reader.subscribe(room)
        sender = await open_ws(direct_gw.ws_url, alice)
        first = await sender.send_text(room, "before")
        await reader.wait_messages(room, 1)
        proxy.cut()  # the gateway loses NATS; NATS and the other gateway carry on
        missed = [(await sender.send_text(room, f"missed {n}"))["seq"] for n in range(3)]
        proxy.restore()
        got = await reader.wait_messages(room, 4, within=20)
        assert [m["seq"] for m in got] == [first["seq"], *missed]
        assert_chain(got, start_prev=0)
        live = await sender.send_text(room, "live again")
        await reader.expect(lambda f: f.get("seq") == live["seq"])
        assert len(reader.messages(room)) == 5
        assert await cut_gw.metric("roomcast_gateway_gap_repairs_total") >= 1
        assert await cut_gw.metric("roomcast_gateway_nats_reconnects_total") >= 1
    finally:
        await spawn.stop_all()
        await proxy.stop()


async def test_gateway_rejects_handshakes_before_nats_is_ready(
    open_ws: OpenWs, gw_jwks: JwksServer, gw_rooms: FakeRooms
) -> None:
    """/healthz answers at once; /readyz and the WebSocket wait for NATS."""
    nats_port = free_port()
    env = base_env(f"nats://127.0.0.1:{nats_port}", gw_jwks.url, gw_rooms.target)
    gw = GatewayProc(env, name="gw-early")
    gw.ready_url = None
    gw.port = gw.gw_port
    late_nats = NatsServer(port=nats_port)
    try:
        await gw.astart()  # "started" when the port accepts
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=5) as client:
            assert (await client.get("/healthz")).status_code == 200
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            assert ready.json()["error"]["code"] == "not_ready"
            with pytest.raises(InvalidStatus) as refused:
                await open_ws(gw.ws_url)
            assert refused.value.response.status_code == 503
            late_nats.start()
            loop = asyncio.get_running_loop()
            deadline = loop.time() + 20
            while (await client.get("/readyz")).status_code != 200:
                assert loop.time() < deadline, "gateway never became ready"
                await asyncio.sleep(0.05)
    finally:
        await gw.astop()
        late_nats.cleanup()


class LateJwks:
    """A JWKS endpoint that answers 503 until ``serve()``, counting requests."""

    def __init__(self, jwks: dict[str, Any]) -> None:
        self.body = orjson.dumps(jwks)
        self.serving = False
        self.requests = 0
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self._answer, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/.well-known/jwks.json"

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await reader.readuntil(b"\r\n\r\n"):
                self.requests += 1
                status, body = (b"200 OK", self.body) if self.serving else (b"503 X", b"{}")
                writer.write(
                    b"HTTP/1.1 " + status + b"\r\nContent-Type: application/json\r\n"
                    b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()


async def test_gateway_is_ready_only_once_it_has_the_signing_keys(
    gw_nats: NatsServer, gw_rooms: FakeRooms, signer: TokenSigner
) -> None:
    """A restarted gateway takes its sockets' reconnect burst the moment it is ready:
    it fetches auth's keys first, so no socket of the burst waits on that fetch."""
    jwks = LateJwks(signer.jwks())
    url = await jwks.start()
    gw = GatewayProc(base_env(gw_nats.url, url, gw_rooms.target), name="gw-keys")
    gw.ready_url = None
    gw.port = gw.gw_port
    try:
        await gw.astart()
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(base_url=gw.http_url, timeout=5) as client:
            deadline = loop.time() + 20
            while jwks.requests < 1:  # NATS is up and the keys were asked for
                assert loop.time() < deadline, "the gateway never asked auth for its keys"
                await asyncio.sleep(0.05)
            assert (await client.get("/readyz")).status_code == 503
            jwks.serving = True
            deadline = loop.time() + 20
            while (await client.get("/readyz")).status_code != 200:
                assert loop.time() < deadline, "gateway never became ready"
                await asyncio.sleep(0.05)
    finally:
        await gw.astop()
        await jwks.stop()
