"""Wall-clock time in milliseconds since the Unix epoch.

Every ``*_ms`` timestamp Roomcast stores or sends (a room's ``created_at_ms``, a
mute's ``muted_until_ms``, an event's ``at_ms``, slow mode's last send) is in this
unit, read from this one function, so services agree on it and a test can hand a
component another clock where the component takes one. Wall clock, not monotonic:
these times are compared across processes and machines (NTP-synchronised).
"""

from __future__ import annotations

import time


def now_ms() -> int:
    """The current wall-clock time, whole milliseconds since the Unix epoch."""
    return int(time.time() * 1000)
