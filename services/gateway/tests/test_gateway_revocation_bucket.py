"""A session revoked only in the ROOMCAST_REVOKED bucket (auth's core-NATS event missed,
e.g. during a reconnect) still closes its sockets on every gateway within a second and
is refused on REST: the gateways follow the shared revocation list
(roomcast.common.revocations), written here exactly as auth writes it."""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
from gateway_testkit import GatewayProc, OpenWs, make_user, room_with
from nats.aio.client import Client as NatsClient

from roomcast.common.revocations import BUCKET, revocation_value
from roomcast.common.tokens import TokenSigner
from roomcast.testing.fakes import FakeRooms

pytestmark = pytest.mark.asyncio(loop_scope="session")

# The contract: a revoked session is refused everywhere within a second.
REVOCATION_DEADLINE_SECONDS = 1.0
# auth's bucket age: the default access-token lifetime plus the verifiers' leeway.
BUCKET_TTL_SECONDS = 930.0


async def test_a_bucket_only_revocation_closes_sockets_and_refuses_rest(
    open_ws: OpenWs,
    cluster: list[GatewayProc],
    gw_rooms: FakeRooms,
    signer: TokenSigner,
    nc: NatsClient,
) -> None:
    sid = uuid.uuid4().hex
    bob = make_user(signer, session_id=sid)
    room = room_with(gw_rooms, bob.id)
    sockets = [await open_ws(gateway.ws_url, bob) for gateway in cluster]
    for client in sockets:
        await client.subscribe(room)
    async with httpx.AsyncClient(timeout=5) as http:
        # Before: the token is accepted (the rooms stand-in implements only
        # CheckMembership, so the relayed GetRoom then answers 503; the real stack's
        # 200 is in tests/e2e/test_e2e_revocation.py).
        for gateway in cluster:
            accepted = await http.get(
                f"{gateway.http_url}/v1/rooms/{room}",
                headers={"Authorization": f"Bearer {bob.token}"},
            )
            assert accepted.status_code == 503, accepted.text

        kv = await nc.jetstream().create_key_value(bucket=BUCKET, ttl=BUCKET_TTL_SECONDS, history=1)
        written = time.monotonic()
        await kv.put(sid, revocation_value(bob.id, "logout"))
        for client in sockets:
            assert (await client.wait_closed()).code == 4001
        assert time.monotonic() - written < REVOCATION_DEADLINE_SECONDS
        for gateway in cluster:
            refused = await http.get(
                f"{gateway.http_url}/v1/rooms/{room}",
                headers={"Authorization": f"Bearer {bob.token}"},
            )
            assert refused.status_code == 401, refused.text
            assert refused.json()["error"]["code"] == "session_revoked"
    # Nor does the token open a new socket on any gateway (the verifier refuses it).
    for gateway in cluster:
        reopened = await open_ws(gateway.ws_url)
        await reopened.send_json({"type": "auth", "token": bob.token})
        error = await reopened.expect_type("error")
        assert error["code"] == "session_revoked", error
        assert (await reopened.wait_closed()).code == 4001
