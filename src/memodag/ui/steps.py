"""A run's event log folded into what the UI shows: each step's state, and each node's.

Pure functions of ``Event`` lists: no storage, no web framework. A step's status is one of
``STEP_STATUSES``; a node (an op, or a mapped op with all its clones) gets counts per status and
one status for its colour (the most urgent of its steps').
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from memodag.storage.instance.records import Event

#: most urgent first: a node's colour is the first status any of its steps has
STEP_STATUSES = ("failed", "running", "retrying", "skipped", "success", "memoized")

_RUN_COUNT_NAMES = {"success": "executed", "memoized": "memoized", "failed": "failed"}


def node_of(step_key: str) -> str:
    """The node a step belongs to: ``clean[station_3]`` -> ``clean``."""
    return step_key.split("[", 1)[0]


def fold_steps(events: Iterable[Event]) -> dict[str, dict[str, Any]]:
    """One dict per step key, in the order steps first appear in the log.

    Keys: ``step_key``, ``node``, ``status``, ``attempts``, ``start`` and ``end`` (seconds since
    the epoch), ``duration`` (seconds, the last attempt), ``inputs`` and ``outputs`` (lists of
    ``{"name", "address"}``, the address as stored), ``error`` (message and traceback text).
    """
    steps: dict[str, dict[str, Any]] = {}
    for event in events:
        key = event.step_key
        if key is None:
            continue
        step = steps.get(key)
        if step is None:
            step = steps[key] = {
                "step_key": key,
                "node": node_of(key),
                "status": "running",
                "attempts": 0,
                "start": None,
                "end": None,
                "duration": None,
                "inputs": [],
                "outputs": [],
                "error": None,
            }
        _apply(step, event)
    return steps


def _apply(step: dict[str, Any], event: Event) -> None:
    kind = event.event_type.value
    data: Mapping[str, Any] = event.data or {}
    if kind == "STEP_START":
        step["attempts"] = max(step["attempts"], int(data.get("attempt", 0)) + 1)
        step["status"] = "running"
        step["start"] = step["start"] or event.timestamp
    elif kind in ("STEP_SUCCESS", "STEP_FAILURE"):
        step["status"] = "success" if kind == "STEP_SUCCESS" else "failed"
        step["duration"] = data.get("duration")
        step["end"] = event.timestamp
        if kind == "STEP_FAILURE":
            step["error"] = _error_text(event.message, data.get("error"))
    elif kind == "STEP_RETRY":
        step["status"] = "retrying"
        step["error"] = _error_text(event.message, data.get("error"))
    elif kind == "STEP_SKIPPED":
        step["status"] = "skipped"
        step["end"] = event.timestamp
        step["error"] = event.message or None
    elif kind == "STEP_MEMOIZED":
        step["status"] = "memoized"
        step["start"] = step["start"] or event.timestamp
        step["end"] = event.timestamp
        for name, address in _memoized_addresses(data.get("addresses")):
            step["outputs"].append({"name": name, "address": address})
    elif kind == "HANDLED_OUTPUT":
        address = data.get("address") or {}
        name = data.get("output") or address.get("output_name") or "result"
        step["outputs"].append({"name": name, "address": address})
    elif kind == "LOADED_INPUT":
        step["inputs"].append({"name": data.get("input") or "", "address": data.get("address")})


def _error_text(message: str, error: Any) -> str:
    """The failure's message, then its traceback when the event kept one."""
    if isinstance(error, Mapping):
        trace = error.get("traceback") or error.get("stack")
        if isinstance(trace, list):
            trace = "".join(str(t) for t in trace)
        text = str(error.get("message") or message or "")
        return f"{text}\n{trace}".strip() if trace else text
    return message or (str(error) if error else "")


def _memoized_addresses(addresses: Any) -> list[tuple[str, dict[str, Any]]]:
    """(output name, address) pairs of a STEP_MEMOIZED event: a list of address dicts, or a
    mapping name -> address."""
    if isinstance(addresses, Mapping):
        return [(str(k), dict(v)) for k, v in addresses.items() if isinstance(v, Mapping)]
    return [
        (str(a.get("output_name") or "result"), dict(a))
        for a in addresses or ()
        if isinstance(a, Mapping)
    ]


def fold_nodes(steps: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Steps grouped by node: ``{"node", "status", "counts", "steps"}`` (``steps``: how many;
    ``counts``: status -> number of steps). A mapped node's clones are one entry."""
    nodes: dict[str, dict[str, Any]] = {}
    for step in steps:
        node = nodes.setdefault(
            step["node"], {"node": step["node"], "status": None, "counts": {}, "steps": 0}
        )
        node["counts"][step["status"]] = node["counts"].get(step["status"], 0) + 1
        node["steps"] += 1
    for node in nodes.values():
        node["status"] = next((s for s in STEP_STATUSES if s in node["counts"]), "running")
    return nodes


def run_counts(steps: Iterable[Mapping[str, Any]]) -> dict[str, int]:
    """``executed``/``memoized``/``failed``/``skipped`` step counts of a run."""
    counts = {"executed": 0, "memoized": 0, "failed": 0, "skipped": 0}
    for step in steps:
        name = _RUN_COUNT_NAMES.get(step["status"], step["status"])
        if name in counts:
            counts[name] += 1
    return counts


def log_lines(events: Sequence[Event], start: int = 0) -> list[dict[str, Any]]:
    """The events from index ``start`` on as UI log lines: ``seq`` (the event's index in the
    run's log), ``time``, ``step_key``, ``kind`` (the event type), ``level`` (a LOG event's;
    ``ERROR`` for failures, ``INFO`` otherwise) and ``message``."""
    lines: list[dict[str, Any]] = []
    for seq in range(start, len(events)):
        event = events[seq]
        kind = event.event_type.value
        data = event.data or {}
        if kind == "LOG":
            level = str(data.get("level", "INFO"))
        elif kind in ("STEP_FAILURE", "RUN_FAILURE"):
            level = "ERROR"
        elif kind in ("STEP_RETRY", "STEP_SKIPPED", "RUN_CANCELED"):
            level = "WARNING"
        else:
            level = "INFO" if kind not in ("LOADED_INPUT", "HANDLED_OUTPUT") else "DEBUG"
        lines.append(
            {
                "seq": seq,
                "time": event.timestamp,
                "step_key": event.step_key,
                "kind": kind,
                "level": level,
                "message": event.message or _describe(kind, data),
            }
        )
    return lines


def _describe(kind: str, data: Mapping[str, Any]) -> str:
    address = data.get("address")
    if isinstance(address, Mapping):
        where = address.get("uri") or f"io manager '{address.get('io_manager_key')}'"
        name = data.get("input") or data.get("output") or address.get("output_name") or ""
        return f"{kind.lower().replace('_', ' ')} {name}: {where}"
    return kind.lower().replace("_", " ")
