"""Client addresses: only trusted proxies may speak for a client."""

from __future__ import annotations

from roomcast.common.proxies import client_address, parse_networks

TRUSTED = parse_networks("10.0.0.0/8, 127.0.0.1")


def test_untrusted_peer_is_the_client_whatever_it_claims() -> None:
    assert client_address("203.0.113.9", ["1.2.3.4"], TRUSTED) == "203.0.113.9"


def test_trusted_peer_speaks_for_the_right_most_untrusted_hop() -> None:
    # the client wrote "6.6.6.6" itself; the proxy appended the real address
    chain = ["6.6.6.6, 198.51.100.7", "10.1.2.3"]
    assert client_address("127.0.0.1", chain, TRUSTED) == "198.51.100.7"


def test_all_trusted_chain_and_missing_peer() -> None:
    assert client_address("10.0.0.1", ["10.0.0.2"], TRUSTED) == "10.0.0.2"
    assert client_address("10.0.0.1", [], TRUSTED) == "10.0.0.1"
    assert client_address(None, ["1.1.1.1"], TRUSTED) == "unknown"
    assert client_address("127.0.0.1", ["x" * 500], TRUSTED) == "x" * 64
