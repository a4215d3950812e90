"""Trusted proxies and the client address behind them (``X-Forwarded-For``).

Only a peer in the configured trusted networks may speak for a client; a client's own
``X-Forwarded-For`` is never believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any

IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# Longest address kept from a header: an IPv6 address with a zone fits; anything longer
# is not an address and must not grow logs or rate-limiter keys.
MAX_ADDRESS_LENGTH = 64


def comma_list(value: Any) -> Any:
    """Settings helper: ``"a, b"`` from an environment variable → ``["a", "b"]``."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


def parse_networks(value: Any) -> Any:
    """Settings helper: a comma list (or list) of addresses/CIDRs → networks."""
    value = comma_list(value)
    if isinstance(value, list | tuple):
        return tuple(ipaddress.ip_network(str(v), strict=False) for v in value)
    return value


def is_trusted(address: str, trusted: Sequence[IpNetwork]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in trusted)


def forwarded_hops(headers: Sequence[str]) -> list[str]:
    """Every address of every ``X-Forwarded-For`` header, left to right."""
    return [hop.strip() for value in headers for hop in value.split(",") if hop.strip()]


def client_address(
    peer: str | None, forwarded_for: Sequence[str], trusted: Sequence[IpNetwork]
) -> str:
    """The address a request is accounted to.

    The TCP peer, unless the peer is a trusted proxy: then the right-most address of
    ``X-Forwarded-For`` that is not itself a trusted proxy (addresses to its left were
    written by the client and can be anything).
    """
    if not peer:
        return "unknown"
    if not trusted or not is_trusted(peer, trusted):
        return peer
    hops = forwarded_hops(forwarded_for)
    for hop in reversed(hops):
        if not is_trusted(hop, trusted):
            return hop[:MAX_ADDRESS_LENGTH]
    # Every hop is a trusted proxy: the left-most is the closest thing to a client.
    return hops[0][:MAX_ADDRESS_LENGTH] if hops else peer
