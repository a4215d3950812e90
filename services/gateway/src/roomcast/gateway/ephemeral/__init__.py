"""What is never stored: presence, typing notices and read-receipt announcements,
exchanged between gateways on core NATS (``ephemeral.room.<id>``, ``presence.*``)."""
