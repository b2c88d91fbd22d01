"""When a lease (a step another run computes, a gc deleting) no longer holds: its holder's
process is gone, or, where that cannot be checked (another host), it has not said it is alive
for ``lease_timeout()`` seconds. Decides expiry only; taking and releasing a lease is the
instance's (``Instance.acquire_lease``), waiting for one the engine's.
"""

from __future__ import annotations

import os
import time

from memodag.storage.instance.records import Lease
from memodag.storage.liveness import process_alive

#: seconds without a heartbeat after which a lease of a process this machine cannot check
#: expires (``MEMODAG_LEASE_TIMEOUT`` overrides it)
LEASE_TIMEOUT_ENV = "MEMODAG_LEASE_TIMEOUT"
DEFAULT_LEASE_TIMEOUT = 300.0


def lease_timeout() -> float:
    """``$MEMODAG_LEASE_TIMEOUT`` (seconds) if set and positive, else 300."""
    try:
        value = float(os.environ.get(LEASE_TIMEOUT_ENV, ""))
    except ValueError:
        return DEFAULT_LEASE_TIMEOUT
    return value if value > 0 else DEFAULT_LEASE_TIMEOUT


def lease_expired(lease: Lease, now: float | None = None) -> bool:
    """Whether ``lease`` no longer holds: its process is gone (this host), or (another host)
    its last heartbeat is older than ``lease_timeout()``. A live process on this host holds it
    however long its step runs."""
    alive = process_alive(lease.process)
    if alive is not None:
        return not alive
    return (now if now is not None else time.time()) - lease.heartbeat_at > lease_timeout()
