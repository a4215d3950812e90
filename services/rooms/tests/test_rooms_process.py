"""The real process: ``python -m roomcast.rooms``, configured by environment variables,
verifying tokens from a JWKS URL, stopped with SIGTERM."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from rooms_harness import IssueToken, new_user_id

from roomcast.common.grpcmeta import bearer_metadata
from roomcast.common.tokens import TokenSigner
from roomcast.common.verifier import build_verifier
from roomcast.rooms.settings import Settings
from roomcast.rpc.rooms.v1 import rooms_pb2 as pb
from roomcast.rpc.rooms.v1 import rooms_pb2_grpc as pb_grpc
from roomcast.testing.processes import MongoServer, ServiceProcess, free_port, wait_until


@pytest.fixture
def jwks_url(signer: TokenSigner) -> Iterator[str]:
    body = json.dumps(signer.jwks()).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def readyz(port: int) -> int:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=3).status_code
    except httpx.HTTPError:
        return 0


def test_process_serves_reports_readiness_and_stops_on_sigterm(
    restartable_mongo: MongoServer, nats_url: str, jwks_url: str, issue_token: IssueToken
) -> None:
    grpc_port, http_port = free_port(), free_port()
    proc = ServiceProcess(
        "rooms",
        {
            "ROOMCAST_ROOMS_MONGO_URL": restartable_mongo.url,
            "ROOMCAST_ROOMS_MONGO_DB": "rooms_process",
            "ROOMCAST_ROOMS_MONGO_TIMEOUT_MS": "1000",
            "ROOMCAST_ROOMS_NATS_URL": nats_url,
            "ROOMCAST_ROOMS_JWKS_URL": jwks_url,
            "ROOMCAST_ROOMS_GRPC_PORT": str(grpc_port),
            "ROOMCAST_ROOMS_HTTP_PORT": str(http_port),
        },
        ready_url=f"http://127.0.0.1:{http_port}/readyz",
    )
    proc.start()
    try:
        assert httpx.get(f"http://127.0.0.1:{http_port}/healthz", timeout=3).status_code == 200
        user_id = new_user_id()
        md = bearer_metadata(issue_token(user_id=user_id))
        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            stub = pb_grpc.RoomsStub(channel)
            room = stub.CreateRoom(
                pb.CreateRoomRequest(name="proc", visibility=pb.VISIBILITY_PUBLIC), metadata=md
            ).room
            assert room.owner_id == user_id
            check = stub.CheckMembership(pb.CheckMembershipRequest(room_id=room.id), metadata=md)
            assert (check.member, check.role) == (True, pb.ROLE_OWNER)
            health = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service="roomcast.rooms.v1.Rooms")
            )
            assert health.status == health_pb2.HealthCheckResponse.SERVING
        metrics = httpx.get(f"http://127.0.0.1:{http_port}/metrics", timeout=3).text
        assert 'roomcast_rooms_grpc_requests_total{code="OK",method="CreateRoom"} 1.0' in metrics
        assert 'roomcast_rooms_events_published_total{type="member_joined"} 1.0' in metrics
        # Readiness follows MongoDB.
        restartable_mongo.stop()
        wait_until(lambda: readyz(http_port) == 503, timeout=15, what="readyz 503")
        restartable_mongo.start()
        wait_until(lambda: readyz(http_port) == 200, timeout=15, what="readyz 200 again")
        proc.signal(signal.SIGTERM)
        assert proc.wait(20) == 0, proc.log_tail()
        assert "rooms stopped" in proc.log_path.read_text()
    finally:
        proc.stop()


async def test_static_jwks_file_is_dev_only_but_works(tmp_path: Path, signer: TokenSigner) -> None:
    path = tmp_path / "jwks.json"
    path.write_text(json.dumps(signer.jwks()))
    settings = Settings(jwks_file=str(path))
    verifier = build_verifier(settings, jwks_file=settings.jwks_file)
    token, _ = signer.issue_access(user_id="a" * 24, username="a", display_name="A")
    claims = await verifier.verify(token)
    assert claims.user_id == "a" * 24
