"""When a lease (a step another run computes, a gc deleting) no longer holds: its holder's
process is gone, or, where that cannot be checked (another host), its run has not said it is
alive for ``heartbeat_timeout()`` seconds. A lease has no heartbeat of its own: the instance
reads it with its holder run's (``runs.heartbeat``, ``storage.liveness``), so one timeout decides
both when a run is found dead and when its leases are taken over. Decides expiry only; taking and
releasing a lease is the instance's (``Instance.acquire_lease``), waiting for one the engine's.
"""

from __future__ import annotations

import time

from memodag.storage.instance.records import Lease
from memodag.storage.liveness import heartbeat_timeout, process_alive


def lease_expired(lease: Lease, now: float | None = None) -> bool:
    """Whether ``lease`` no longer holds: its process is gone (this host), or (another host)
    its holder's last heartbeat is older than ``heartbeat_timeout()``. A live process on this
    host holds it however long its step runs; so does one elsewhere whose run keeps beating."""
    alive = process_alive(lease.process)
    if alive is not None:
        return not alive
    return (now if now is not None else time.time()) - lease.heartbeat_at > heartbeat_timeout()
