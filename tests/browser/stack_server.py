"""The whole Roomcast stack on free ports for the JavaScript tests (vitest's global setup
starts it; ``make js`` and ``make test`` run them).

It prints one JSON line, ``{"gateways": [...], "control": "http://..."}``, once every
part answered /readyz, and stops everything when its stdin closes (the parent exited)
or on SIGTERM. The control URL lets a test crash and restart a part, so reconnect tests
kill a real gateway: ``POST /kill/gateway-a``, ``POST /restart/gateway-a``.
"""

from __future__ import annotations

import json
import queue
import signal
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from roomcast.testing.stack import SERVICES, Stack, StackPorts

# bcrypt's minimum cost: registration and login take milliseconds instead of ~250 ms.
BCRYPT_TEST_COST = 4
# Every test user registers and logs in from 127.0.0.1; auth's per-address limits (10 per
# 30 s) are tested in services/auth, not here.
TEST_LIMITS = {
    "ROOMCAST_AUTH_LOGIN_RATE_LIMIT": "1000",
    "ROOMCAST_AUTH_REGISTER_RATE_LIMIT": "1000",
}
# A control request waits this long for the main thread to act (a restart includes the
# service's /readyz wait, a few seconds).
CONTROL_TIMEOUT_SECONDS = 60.0

Job = tuple[str, str, "queue.Queue[str]"]


def serve_control(jobs: queue.Queue[Job]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            parts = self.path.strip("/").split("/")
            if len(parts) != 2 or parts[0] not in ("kill", "restart") or parts[1] not in SERVICES:
                self.send_error(404)
                return
            done: queue.Queue[str] = queue.Queue()
            jobs.put((parts[0], parts[1], done))
            try:
                outcome = done.get(timeout=CONTROL_TIMEOUT_SECONDS)
            except queue.Empty:
                outcome = "timeout"
            body = outcome.encode()
            self.send_response(200 if outcome == "ok" else 500)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())

    def watch_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes the pipe or dies
        stopping.set()

    threading.Thread(target=watch_stdin, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="roomcast-js-") as state:
        stack = Stack(
            Path(state), StackPorts.free(), bcrypt_cost=BCRYPT_TEST_COST, extra_env=TEST_LIMITS
        )
        jobs: queue.Queue[Job] = queue.Queue()
        control = serve_control(jobs)
        try:
            stack.start()
            host, port = control.server_address[:2]
            info = {"gateways": stack.gateway_urls, "control": f"http://{host!s}:{port}"}
            print(json.dumps(info), flush=True)
            while not stopping.is_set():
                try:
                    action, name, done = jobs.get(timeout=0.2)
                except queue.Empty:
                    continue
                try:
                    if action == "kill":
                        stack.services[name].kill()
                    else:
                        stack.restart(name)
                    done.put("ok")
                except Exception as exc:  # report to the test, keep the stack up
                    done.put(f"{action} {name} failed: {exc!r}")
        finally:
            control.shutdown()
            stack.stop()


if __name__ == "__main__":
    main()
