"""The harness starts real servers that answer their protocols."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import nats
import pytest
from pymongo import AsyncMongoClient

from roomcast.testing.processes import MongoServer, NatsServer, free_port


async def test_nats_server_has_jetstream(nats_server: NatsServer) -> None:
    nc = await nats.connect(nats_server.url)
    try:
        js = nc.jetstream()
        info = await js.account_info()
        assert info.limits is not None
    finally:
        await nc.close()


async def test_mongo_database_is_per_test(mongo_url: str, mongo_db_name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(mongo_url)
    try:
        await client[mongo_db_name].things.insert_one({"x": 1})
        assert await client[mongo_db_name].things.count_documents({}) == 1
    finally:
        await client.close()


def test_restartable_mongo_keeps_data(restartable_mongo: MongoServer) -> None:
    from pymongo import MongoClient

    def client() -> MongoClient[dict[str, Any]]:
        return MongoClient(restartable_mongo.url, serverSelectionTimeoutMS=2000)

    with client() as c:
        c.db.kept.insert_one({"k": 1})
    restartable_mongo.stop()
    assert not restartable_mongo.ping()
    restartable_mongo.start()
    with client() as c:
        assert c.db.kept.count_documents({}) == 1


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range() -> None:
    """An outgoing connection takes its source port from the ephemeral range, so a port
    handed out there can be gone before the server binds it."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    ports = [free_port() for _ in range(200)]
    assert len(set(ports)) == len(ports)
    assert all(10_000 <= port < low for port in ports), ports
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", port))


def test_test_workers_pick_ports_from_disjoint_shares(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each worker of a parallel test run only knows the ports it handed out itself:
    two workers drawing from the same range could give one port to two servers."""
    monkeypatch.setenv("PYTEST_XDIST_WORKER_COUNT", "2")
    picked: dict[str, set[int]] = {}
    for worker in ("gw0", "gw1"):
        monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
        picked[worker] = {free_port() for _ in range(100)}
    assert max(picked["gw0"]) < min(picked["gw1"])
