"""The WebSocket side: sockets, their frames, the CHAT stream, the live fan-out per
room, edits and deletes, membership checks and the events that end subscriptions."""
