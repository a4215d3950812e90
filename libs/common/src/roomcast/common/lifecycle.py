"""Process lifecycle: uvloop, signal handling, graceful shutdown of uvicorn servers."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Callable, Coroutine, Generator
from typing import Any

import uvicorn


def run(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop (the event loop every Roomcast process uses)."""
    import uvloop

    uvloop.run(main())


def stop_event_on_signals() -> asyncio.Event:
    """An event set on SIGTERM or SIGINT (the first one; a second SIGINT still stops)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


class _ServerWithoutSignals(uvicorn.Server):
    """uvicorn would install its own SIGTERM/SIGINT handlers; the process owns them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def uvicorn_server(app: Any, host: str, port: int, *, grace_seconds: float) -> uvicorn.Server:
    """A uvicorn server that leaves signal handling to us (we own the shutdown order)."""
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=int(grace_seconds),
        # Clients behind a balancer keep connections open; 30 s is above typical
        # balancer idle timeouts (e.g. 60 s would outlive a restart needlessly).
        timeout_keep_alive=30,
        # Client addresses from X-Forwarded-For are trusted only by our own explicit
        # trusted-proxy settings, never implicitly because the peer is 127.0.0.1.
        proxy_headers=False,
    )
    return _ServerWithoutSignals(config)


async def serve_until_stopped(server: uvicorn.Server, stop: asyncio.Event) -> None:
    """Serve until ``stop`` is set, then shut down gracefully."""
    task = asyncio.create_task(server.serve())
    stopper = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait({task, stopper}, return_when=asyncio.FIRST_COMPLETED)
    if stopper in done:
        server.should_exit = True
        await task
    else:
        stopper.cancel()
        task.result()
