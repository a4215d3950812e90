"""The client-facing REST API (docs/api.md): routes relayed to auth, rooms and history
with the caller's own token, installed on the gateway's HTTP app by ``rest.api``."""
