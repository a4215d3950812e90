"""Child processes that tests start and stop: servers and Roomcast services.

Readiness is always a condition polled with a deadline (a TCP connect, an HTTP 200, a
MongoDB ping), never a fixed sleep.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

# How long a server may take to come up on a loaded 2-core CI machine; SecantusDB opens
# WiredTiger (~1-2 s), a Python service imports its stack (~1-3 s).
START_TIMEOUT_SECONDS = 30.0
# Poll interval while waiting for readiness: fast enough not to add visible latency.
POLL_INTERVAL_SECONDS = 0.05


def _load_prctl() -> Callable[..., int] | None:
    # Resolved once in the parent: the child between fork and exec must not import or
    # take locks (other threads may hold them), only call an already-resolved function.
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6", use_errno=True).prctl
    except (OSError, AttributeError):
        return None


_PRCTL = _load_prctl()
_PR_SET_PDEATHSIG = 1


def _own_session() -> None:
    os.setsid()


def _die_with_parent() -> None:
    """Linux: SIGTERM the child when the process that started it dies, so a killed test
    run or launcher never leaves servers behind. Its own session: a terminal's Ctrl-C
    reaches only the launcher, which stops the children in order."""
    os.setsid()
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


# Set on a thread (``setattr(thread, OWNS_CHILDREN, True)``) that lives until the
# processes it starts are stopped (a supervisor's thread): they then get the death signal
# too, so a killed test run leaves no restarted server behind.
OWNS_CHILDREN = "roomcast_owns_children"


def owns_children(thread: threading.Thread) -> bool:
    return thread is threading.main_thread() or bool(getattr(thread, OWNS_CHILDREN, False))


# free_port hands out ports BELOW the kernel's ephemeral range. A port from bind(0)
# comes from that range, and between releasing it and the server binding it any
# outgoing connection of any process may take it as its source port (seen: auth
# failing to start with "address already in use"). Below the range only explicit binds
# take ports, and the bind check sees those. 10000 keeps clear of well-known ports.
FREE_PORT_FLOOR = 10_000
# The range below the ephemeral one must be wide enough for random picks to rarely
# meet; otherwise fall back to bind(0).
FREE_PORT_MIN_SPAN = 1_000
FREE_PORT_ATTEMPTS = 200
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_handed_out: set[int] = set()
_handed_out_lock = threading.Lock()
# Not the module-level random: hypothesis seeds that one inside property tests.
_port_random = random.SystemRandom()


def _ephemeral_low() -> int:
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def _port_range() -> tuple[int, int]:
    """Where this process picks ports: below the ephemeral range, and in a test run
    split across worker processes, only this worker's share of it, so two workers never
    hand out the same port (each only knows what it handed out itself)."""
    low, high = FREE_PORT_FLOOR, _ephemeral_low()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or "1")
    if count > 1 and worker.startswith("gw") and worker[2:].isdigit():
        share = (high - low) // count
        low += int(worker[2:]) * share
        high = low + share
    return low, high


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on, that no outgoing connection will take meanwhile, and
    that this process has not handed out before."""
    floor, ceiling = _port_range()
    if ceiling - floor >= FREE_PORT_MIN_SPAN:
        with _handed_out_lock:
            for _ in range(FREE_PORT_ATTEMPTS):
                port = _port_random.randrange(floor, ceiling)
                if port in _handed_out:
                    continue
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    try:
                        sock.bind((host, port))
                    except OSError:
                        continue
                _handed_out.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_accepts(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def wait_until(
    condition: Callable[[], bool], *, timeout: float, what: str, poll: float = POLL_INTERVAL_SECONDS
) -> None:
    """Poll ``condition`` until it is true, or raise ``TimeoutError`` naming ``what``."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}")
        time.sleep(poll)


class ManagedProcess:
    """A child process with its log in a file, stoppable by signal."""

    def __init__(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.log_path = Path(tempfile.mkstemp(prefix=f"roomcast-{name}-", suffix=".log")[1])

    def start(self) -> None:
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            # The death signal follows the *thread* that forked; only tie it to a thread
            # that outlives its children (see owns_children).
            preexec_fn=_die_with_parent
            if owns_children(threading.current_thread())
            else _own_session,
        )
        log.close()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def exit_code(self) -> int | None:
        """The return code of the last process (negative: killed by that signal)."""
        return self.proc.poll() if self.proc is not None else None

    def check_alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}:\n{self.log_tail()}"
            )
        return True

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal(self, sig: int) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL: the process gets no chance to clean up (a crash)."""
        self.signal(signal.SIGKILL)
        self.wait(10)

    def wait(self, timeout: float) -> int | None:
        if self.proc is None:
            return None
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 15.0) -> int | None:
        """SIGTERM, then SIGKILL if it has not exited within ``timeout``."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        self.proc.terminate()
        code = self.wait(timeout)
        if code is None:
            self.proc.kill()
            code = self.wait(5)
        return code


def nats_server_binary() -> str:
    """The nats-server under test: ``ROOMCAST_NATS_SERVER`` if set, else Debian's package,
    else the first on PATH."""
    configured = os.environ.get("ROOMCAST_NATS_SERVER")
    if configured:
        return configured
    if Path("/usr/bin/nats-server").exists():
        return "/usr/bin/nats-server"
    found = shutil.which("nats-server")
    if not found:
        raise RuntimeError(
            "nats-server not found: install Debian's nats-server or set ROOMCAST_NATS_SERVER"
        )
    return found


def nats_server_version(binary: str) -> str:
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, check=False)
    return (out.stdout or out.stderr).strip()


class NatsServer(ManagedProcess):
    """nats-server with JetStream on a private data directory, on loopback.

    With ``cluster_port`` and ``routes`` it is one node of a JetStream cluster (every
    node names all routes, its own included; nats-server ignores the route to itself).
    """

    def __init__(
        self,
        port: int | None = None,
        store_dir: str | None = None,
        *,
        name: str = "nats",
        cluster_port: int | None = None,
        routes: Sequence[str] = (),
        cluster_name: str = "roomcast",
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.store_dir = store_dir or tempfile.mkdtemp(prefix="roomcast-nats-")
        self.binary = nats_server_binary()
        argv = [self.binary, "-a", self.host, "-p", str(self.port), "-js", "-sd", self.store_dir]
        if cluster_port is not None:
            argv += [
                "-n",
                name,
                "--cluster_name",
                cluster_name,
                "--cluster",
                f"nats://{self.host}:{cluster_port}",
                "--routes",
                ",".join(routes),
            ]
        super().__init__(name, argv)

    @property
    def url(self) -> str:
        return f"nats://{self.host}:{self.port}"

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: self.check_alive() and port_accepts(self.host, self.port),
            timeout=START_TIMEOUT_SECONDS,
            what=f"nats-server on {self.port}",
        )

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.store_dir, ignore_errors=True)


def secantus_binary() -> str:
    configured = os.environ.get("ROOMCAST_SECANTUSD")
    if configured:
        return configured
    beside = Path(sys.executable).with_name("secantusd-py")
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if not found:
        raise RuntimeError("secantusd-py not found: pip install secantusdb")
    return found


class MongoServer(ManagedProcess):
    """SecantusDB (a MongoDB-wire server) in its own process, on loopback."""

    def __init__(self, port: int | None = None, storage_path: str | None = None) -> None:
        self.host = "127.0.0.1"
        self.port = port or free_port()
        self.storage_path = storage_path or tempfile.mkdtemp(prefix="roomcast-mongo-")
        super().__init__(
            "secantusdb",
            [
                secantus_binary(),
                "--host",
                self.host,
                "--port",
                str(self.port),
                "--storage-path",
                self.storage_path,
                "--log-level",
                "WARNING",
                # Tests don't need a big WiredTiger cache; keep the process small.
                "--cache-size",
                "256M",
            ],
        )

    @property
    def url(self) -> str:
        return f"mongodb://{self.host}:{self.port}/?directConnection=true"

    def ping(self) -> bool:
        from pymongo import MongoClient
        from pymongo.errors import PyMongoError

        client: MongoClient[dict[str, object]] = MongoClient(self.url, serverSelectionTimeoutMS=500)
        try:
            client.admin.command("ping")
            return True
        except PyMongoError:
            return False
        finally:
            client.close()

    def start(self) -> None:
        super().start()
        wait_until(
            lambda: self.check_alive() and port_accepts(self.host, self.port) and self.ping(),
            timeout=START_TIMEOUT_SECONDS,
            what=f"SecantusDB on {self.port}",
        )

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.storage_path, ignore_errors=True)


def http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


class ServiceProcess(ManagedProcess):
    """A Roomcast service run as ``python -m roomcast.<service>``, ready when
    ``ready_url`` answers 200 (or, for non-HTTP readiness, when ``port`` accepts)."""

    def __init__(
        self,
        service: str,
        env: dict[str, str],
        *,
        ready_url: str | None = None,
        port: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name or service, [sys.executable, "-m", f"roomcast.{service}"], env)
        self.ready_url = ready_url
        self.port = port

    def start(self) -> None:
        super().start()
        if self.ready_url is not None:
            url = self.ready_url
            wait_until(
                lambda: self.check_alive() and http_ok(url),
                timeout=START_TIMEOUT_SECONDS,
                what=f"{self.name} at {url}",
            )
        elif self.port is not None:
            port = self.port
            wait_until(
                lambda: self.check_alive() and port_accepts("127.0.0.1", port),
                timeout=START_TIMEOUT_SECONDS,
                what=f"{self.name} on {port}",
            )
