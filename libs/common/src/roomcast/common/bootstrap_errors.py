"""What the bootstrap refuses to do. The command line maps each to a one-line message
and exit status 1 (a Kubernetes Job then retries, a compose dependency fails)."""

from __future__ import annotations


class BootstrapError(Exception):
    """The infrastructure could not be brought to the wanted state."""


class NotReachable(BootstrapError):
    """The server did not answer (or did not become ready) within the deadline."""


class BootstrapConflict(BootstrapError):
    """Something already exists with a configuration the bootstrap must not overwrite
    (another application's stream under our name, or a storage type that cannot change).
    The message lists every differing field as ``field: have X, want Y``."""
