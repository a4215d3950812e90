"""A minimal Prometheus endpoint for a local NATS server (``make up`` has no exporter).

    python deploy/observability/nats_probe.py --nats nats://127.0.0.1:4222 --listen 127.0.0.1:7777

prometheus-local.yml scrapes it as job ``nats``, so ``up{job="nats"}`` (the
RoomcastNatsServerDown alert) means what it means in production: NATS answers. The
probe talks the client protocol, not the monitoring port (``make up`` runs nats-server
without ``-m``). Each scrape makes one round trip (PING/PONG) and reads JetStream's
stream and consumer state; when NATS does not answer, the scrape fails with 503 and
Prometheus records ``up == 0``. docker-compose and Kubernetes use the official
prometheus-nats-exporter instead (job ``nats`` too).

Metrics (all gauges): ``nats_probe_rtt_seconds``, and per stream / durable consumer
``nats_jetstream_stream_messages``, ``nats_jetstream_stream_bytes``,
``nats_jetstream_consumer_pending_messages`` (not yet delivered),
``nats_jetstream_consumer_ack_pending_messages`` (delivered, not acknowledged),
``nats_jetstream_consumer_redelivered_messages``. Labels: ``stream``, ``consumer``.
Ephemeral consumers (the gateways' replays) are skipped: their names are random.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time

import nats
from nats.aio.client import Client

# A scrape must answer within Prometheus' scrape timeout (4 s in prometheus-local.yml,
# 1 s in the integration test); 0.8 s for NATS' answers leaves room for the rest.
NATS_TIMEOUT_SECONDS = 0.8
# Bytes of an HTTP request head read before giving up: a GET line and a few headers.
MAX_REQUEST_HEAD_BYTES = 8192
# A scraper sends its request at once; a connection silent this long is dropped.
REQUEST_TIMEOUT_SECONDS = 5.0
# Between connection attempts: NATS found again within a scrape or two once it is back.
RECONNECT_WAIT_SECONDS = 0.5


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


async def render(nc: Client) -> str:
    """The exposition text, or raises when NATS does not answer in time."""
    started = time.perf_counter()
    await asyncio.wait_for(nc.flush(), NATS_TIMEOUT_SECONDS)
    lines = [
        "# HELP nats_probe_rtt_seconds Round trip of one PING to the NATS server.",
        "# TYPE nats_probe_rtt_seconds gauge",
        f"nats_probe_rtt_seconds {time.perf_counter() - started:.6f}",
    ]
    jsm = nc.jsm()
    streams = await asyncio.wait_for(jsm.streams_info(), NATS_TIMEOUT_SECONDS)
    stream_rows: list[str] = []
    consumer_rows: dict[str, list[str]] = {"pending": [], "ack_pending": [], "redelivered": []}
    for info in streams:
        name = _label(info.config.name or "")
        stream_rows.append(
            f'nats_jetstream_stream_messages{{stream="{name}"}} {info.state.messages}'
        )
        stream_rows.append(f'nats_jetstream_stream_bytes{{stream="{name}"}} {info.state.bytes}')
        consumers = await asyncio.wait_for(
            jsm.consumers_info(info.config.name or ""), NATS_TIMEOUT_SECONDS
        )
        for consumer in consumers:
            if not consumer.config.durable_name:
                continue
            labels = f'stream="{name}",consumer="{_label(consumer.config.durable_name)}"'
            consumer_rows["pending"].append(f"{{{labels}}} {consumer.num_pending or 0}")
            consumer_rows["ack_pending"].append(f"{{{labels}}} {consumer.num_ack_pending or 0}")
            consumer_rows["redelivered"].append(f"{{{labels}}} {consumer.num_redelivered or 0}")
    lines += [
        "# TYPE nats_jetstream_stream_messages gauge",
        *[r for r in stream_rows if r.startswith("nats_jetstream_stream_messages")],
        "# TYPE nats_jetstream_stream_bytes gauge",
        *[r for r in stream_rows if r.startswith("nats_jetstream_stream_bytes")],
    ]
    for kind, rows in consumer_rows.items():
        metric = f"nats_jetstream_consumer_{kind}_messages"
        lines.append(f"# TYPE {metric} gauge")
        lines += [metric + row for row in rows]
    return "\n".join(lines) + "\n"


def _response(status: str, body: str, content_type: str = "text/plain") -> bytes:
    data = body.encode()
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + data


class Probe:
    """The NATS connection, made (and remade) in the background; scrapes never wait."""

    def __init__(self, nats_url: str) -> None:
        self.nats_url = nats_url
        self.nc: Client | None = None

    async def connect_forever(self) -> None:
        while self.nc is None:
            try:
                self.nc = await nats.connect(
                    self.nats_url,
                    name="roomcast-nats-probe",
                    connect_timeout=NATS_TIMEOUT_SECONDS,
                    allow_reconnect=True,
                    max_reconnect_attempts=-1,
                    reconnect_time_wait=RECONNECT_WAIT_SECONDS,
                )
            except Exception:  # not there yet: the scrapes say 503 meanwhile
                await asyncio.sleep(RECONNECT_WAIT_SECONDS)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT_SECONDS)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            writer.close()
            return
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1").split()
        path = request_line[1] if len(request_line) > 1 else ""
        nc = self.nc
        if path.split("?", 1)[0] != "/metrics":
            writer.write(_response("404 Not Found", "only /metrics here\n"))
        elif nc is None or not nc.is_connected:
            writer.write(_response("503 Service Unavailable", "NATS is not connected\n"))
        else:
            try:
                text = await render(nc)
            except Exception as exc:  # NATS timed out or refused: the scrape fails (up == 0)
                writer.write(
                    _response("503 Service Unavailable", f"NATS did not answer: {exc!r}\n")
                )
            else:
                writer.write(_response("200 OK", text, "text/plain; version=0.0.4; charset=utf-8"))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()


async def serve(nats_url: str, host: str, port: int) -> None:
    probe = Probe(nats_url)
    connecting = asyncio.create_task(probe.connect_forever())
    server = await asyncio.start_server(probe.handle, host, port, limit=MAX_REQUEST_HEAD_BYTES)
    async with server:
        await server.serve_forever()
    await connecting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nats", default="nats://127.0.0.1:4222")
    parser.add_argument("--listen", default="127.0.0.1:7777", help="host:port of /metrics")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.nats, host or "127.0.0.1", int(port)))


if __name__ == "__main__":
    main()
