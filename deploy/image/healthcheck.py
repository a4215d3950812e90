"""The image's HEALTHCHECK: GET /healthz of the service this image runs (liveness only).

One Dockerfile builds every image, so the port cannot be written into the
HEALTHCHECK line: the image records its service in ROOMCAST_SERVICE and this script
looks up the variable that moves that service's HTTP port. Readiness (/readyz) depends on
MongoDB and NATS and belongs to the orchestrator's routing, not to restarting a container.
Standard library only: it runs with the image's interpreter and nothing else.
"""

import os
import sys
import urllib.request

# service -> (the settings variable of its HTTP port, that setting's default)
HTTP_PORTS = {
    "auth": ("ROOMCAST_AUTH_PORT", "8081"),
    "rooms": ("ROOMCAST_ROOMS_HTTP_PORT", "8082"),
    "gateway": ("ROOMCAST_GATEWAY_PORT", "8080"),
    "history": ("ROOMCAST_HISTORY_PORT", "8083"),
    "notifier": ("ROOMCAST_NOTIFIER_PORT", "8084"),
}
# Below the HEALTHCHECK --timeout (3 s), so a hung service fails the probe cleanly.
TIMEOUT_SECONDS = 2


def main() -> int:
    variable, default = HTTP_PORTS[os.environ["ROOMCAST_SERVICE"]]
    url = f"http://127.0.0.1:{os.environ.get(variable, default)}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
            return 0 if response.status == 200 else 1
    except OSError as error:
        print(f"{url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
