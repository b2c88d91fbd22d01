"""Fewer garbage collections while a run is in progress: what the engine's bookkeeping costs.

A run allocates a handful of long-lived objects per step (its task, events, addresses, status),
and CPython's young-generation collection, triggered every 700 net allocations, traverses them
again and again: a third of a memoized rerun of 10,000 ops was spent there. While any run is in
progress in the process, the young-generation threshold is raised to ``RUN_THRESHOLD`` (never
lowered, never turned on when collection is off); the last run to end restores it, unless
something else changed it meanwhile. Reference counting still frees everything that is not in
a cycle at once. Owns only the interpreter's gc threshold; never calls ``gc.collect``.
"""

from __future__ import annotations

import contextlib
import gc
import threading
from collections.abc import Callable, Iterator
from functools import wraps
from typing import ParamSpec, TypeVar

__all__ = ["RUN_THRESHOLD", "fewer_collections", "with_fewer_collections"]

#: the young-generation threshold while a run is in progress (CPython's default is 700)
RUN_THRESHOLD = 10_000

_lock = threading.Lock()
_runs = 0
_saved: tuple[int, int, int] | None = None

P = ParamSpec("P")
T = TypeVar("T")


@contextlib.contextmanager
def fewer_collections() -> Iterator[None]:
    """Raise the young-generation threshold for the duration (nestable, thread-safe)."""
    global _runs, _saved
    with _lock:
        if _runs == 0:
            current = gc.get_threshold()
            # 0 means automatic collection is off: leave it so
            if 0 < current[0] < RUN_THRESHOLD:
                _saved = current
                gc.set_threshold(RUN_THRESHOLD, current[1], current[2])
        _runs += 1
    try:
        yield
    finally:
        with _lock:
            _runs -= 1
            if _runs == 0 and _saved is not None:
                if gc.get_threshold()[0] == RUN_THRESHOLD:
                    gc.set_threshold(*_saved)
                _saved = None


def with_fewer_collections(function: Callable[P, T]) -> Callable[P, T]:
    """``function`` run inside ``fewer_collections()``."""

    @wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        with fewer_collections():
            return function(*args, **kwargs)

    return wrapper
