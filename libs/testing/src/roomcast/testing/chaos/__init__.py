"""Fault injection for Roomcast: open-loop chat over raw WebSocket clients, accounted
independently of the SDK, while parts of a supervised stack are killed in turn.

- :mod:`.wsclient`: a raw protocol client (reconnects, resumes with ``since``, resends
  unacked sends with the same ``client_id``) that records everything in a ledger;
- :mod:`.ledger`: what was sent, acked and delivered, and the checks on it;
- :mod:`.faults`: the faults, the recovery measurements and their table;
- :mod:`.rest`: users, rooms and history pages through the public REST API;
- :mod:`.run`: a run (users, rooms, traffic, the schedule, the final checks).
"""
