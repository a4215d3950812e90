"""The gateway's one port: the multiplexer that tells WebSocket upgrades from REST, the
WebSocket handshake policy and the FastAPI app (docs/gateway.md, "One port")."""
