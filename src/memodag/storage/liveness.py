"""Which process a run lives in, and whether that process is still alive.

A run records ``process_identity()`` in its RUN_START event; ``memodag gc`` asks
``process_alive`` before removing files a run never recorded, so it never touches a live run's.
``mark_dead_runs`` records such runs as DIED. Never signals a process.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

#: how often a run's driver records that it is alive (``Instance.record_heartbeat``): the one
#: heartbeat a run keeps; its leases live as long as it does (``versioning.leases``)
HEARTBEAT_SECONDS = 30.0
#: a run whose process this host cannot check, silent this long, is dead: found DIED, and its
#: leases taken over (``MEMODAG_HEARTBEAT_TIMEOUT`` overrides it)
HEARTBEAT_TIMEOUT_ENV = "MEMODAG_HEARTBEAT_TIMEOUT"
DEFAULT_HEARTBEAT_TIMEOUT = 4 * HEARTBEAT_SECONDS
#: the name memodag 0.x gave the lease timeout: still read when the new one is not set
_OLD_TIMEOUT_ENV = "MEMODAG_LEASE_TIMEOUT"


def heartbeat_timeout() -> float:
    """Seconds of silence after which a run on another host is dead: ``$MEMODAG_HEARTBEAT_TIMEOUT``
    (else ``$MEMODAG_LEASE_TIMEOUT``) if set and positive, else 120."""
    for name in (HEARTBEAT_TIMEOUT_ENV, _OLD_TIMEOUT_ENV):
        try:
            value = float(os.environ.get(name, ""))
        except ValueError:
            continue
        if value > 0:
            return value
    return DEFAULT_HEARTBEAT_TIMEOUT


def _hostname() -> str:
    # os.uname() is what gethostname() reads on POSIX; importing socket costs a run ~4 ms
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket

    return socket.gethostname()


def _stat_fields(pid: int) -> list[bytes] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: fields resume after the last ')'
    return stat[stat.rfind(b")") + 2 :].split()


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (Linux ``/proc``), or None."""
    fields = _stat_fields(pid)
    try:
        return int(fields[19]) if fields else None  # field 22 of the whole line
    except (IndexError, ValueError):
        return None


def _exited(pid: int) -> bool:
    """Whether ``pid`` has exited but not been reaped (a zombie, or dead): ``kill(pid, 0)`` still
    succeeds for it, and an init that never reaps keeps it so forever."""
    fields = _stat_fields(pid)
    return fields is not None and fields[:1] in ([b"Z"], [b"X"], [b"x"])


def process_identity() -> dict[str, Any]:
    """This process: host name, pid and (where ``/proc`` exists) its start time, which tells a
    reused pid from the process that recorded it."""
    pid = os.getpid()
    return {"host": _hostname(), "pid": pid, "pid_start": _start_ticks(pid)}


def process_alive(identity: Mapping[str, Any] | None) -> bool | None:
    """Whether the process ``identity`` describes still runs: True, False, or None when this
    machine cannot tell (another host, or nothing was recorded)."""
    if not identity or identity.get("host") != _hostname():
        return None
    pid = identity.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, owned by someone else
    if _exited(pid):
        return False
    recorded = identity.get("pid_start")
    if recorded is None:
        return True
    current = _start_ticks(pid)
    return current is None or current == recorded


def mark_dead_runs(instance: Any, runs: Iterable[Any]) -> set[str]:
    """Record as DIED every STARTED run in ``runs`` whose process is known to be gone (this host
    can tell: ``process_alive``; another host's run: a heartbeat older than
    ``heartbeat_timeout()``), with a RUN_FAILURE event saying so; return their ids. Runs on
    other hosts without a heartbeat, or recorded without a process, are left as they are."""
    from memodag.storage.instance.records import Event, EventType, RunStatus

    died: set[str] = set()
    timeout = heartbeat_timeout()
    for run in runs:
        if run.status is not RunStatus.STARTED:
            continue
        starts = instance.get_events(run.run_id, [EventType.RUN_START])
        identity = starts[0].data.get("process") if starts else None
        alive = process_alive(identity)
        if alive is None and run.heartbeat is not None:
            # another host: its heartbeat tells, once it is long overdue
            alive = time.time() - run.heartbeat < timeout
        if alive is not False:
            continue
        died.add(run.run_id)
        # it died some time after its last record: the best end time there is (all its
        # events are read once, when it is found dead)
        ended = max(
            (e.timestamp for e in instance.get_events(run.run_id)),
            default=run.start_time or 0.0,
        )
        if run.heartbeat is not None:
            ended = max(ended, run.heartbeat)
        who = identity or {}
        message = (
            f"run died: its process (pid {who.get('pid')} on {who.get('host')}) ended without "
            "recording how the run ended (killed, or its machine stopped or lost the instance)"
        )
        run.status, run.end_time = RunStatus.DIED, ended
        # a read-only instance: shown as DIED here, recorded by the next look that can write
        with contextlib.suppress(Exception):
            instance.store_events([Event(EventType.RUN_FAILURE, run.run_id, ended, None, message)])
            instance.update_run_status(run.run_id, RunStatus.DIED, ended)
    return died


@contextlib.contextmanager
def heartbeat(instance: Any, run_id: str, every: float | None = None) -> Iterator[None]:
    """Record ``run_id``'s heartbeat every ``every`` seconds (``HEARTBEAT_SECONDS``) until the
    block ends (the run's record holds the first), from a daemon thread: a run busy in one long step still says it is
    alive. A failed heartbeat is skipped; the run's own commits report storage errors."""
    interval = HEARTBEAT_SECONDS if every is None else every
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(interval):
            with contextlib.suppress(Exception):
                instance.record_heartbeat(run_id, time.time())

    thread = threading.Thread(target=beat, name=f"memodag-heartbeat-{run_id[:8]}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=5)
