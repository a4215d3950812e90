"""One-shot, idempotent bootstrap of the infrastructure Roomcast runs on, in Python, so
it runs from the Roomcast images themselves (no ``mongosh``, no ``nats`` CLI):

- :mod:`.streams`: the JetStream stream ``CHAT`` and the KV bucket of revoked sessions,
  created when missing and raised to the wanted replica count;
- :mod:`.replicaset`: the MongoDB replica set initiated when it is not, a writable
  primary awaited, the administrator created through the localhost exception and one
  user per service created or brought to the current password.

Every step first reads the current state and changes only what differs, so running it
again (a Job retried, a pod restarted) reports no change. A state it must not repair on
its own (a ``CHAT`` stream with other subjects or storage) is a
:class:`~.errors.BootstrapConflict` naming each difference.

    python -m roomcast.common.bootstrap nats     # ROOMCAST_BOOTSTRAP_NATS_URL, ...
    python -m roomcast.common.bootstrap mongo    # ROOMCAST_BOOTSTRAP_MONGO_ADDRESS, ...

docs/deploy.md ("Bootstrap") lists the settings and where each deployment runs it.
"""
