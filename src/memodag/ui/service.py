"""What the UI's JSON API answers, computed from the instance and the jobs it was given.

``UiService`` is read-only: it never records a run, an event or a dead run's end, and never
opens a file named by a client (only the config files named on the command line, re-read on
each job view so edits show on reload). Every method runs on the one thread the server gives
it (``server.py``), so the instance's connection is never shared across threads.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from memodag.errors import MemodagError
from memodag.storage.instance.records import Event, RunRecord, RunStatus
from memodag.ui.graph import events_graph, job_graph, job_outputs
from memodag.ui.steps import fold_nodes, fold_steps, log_lines, run_counts

#: a page of the runs list holds at most this many runs
MAX_PAGE = 200
#: at most this many steps of one node, and log lines of one run, are sent at once
MAX_STEPS = 200
MAX_LINES = 2000
MAX_BARS = 2000
#: finished runs whose folded log is kept in memory
_FINISHED_KEPT = 4


class NotFound(MemodagError):
    """A run or job the client asked for does not exist (the server answers 404)."""


class UiService:
    """The UI's read model.

    Args:
        open_instance: opens the instance, on the service's thread; None while there is none
            yet (asked again on each request, so the first run's instance shows up).
        jobs: the jobs loaded from ``-f``/``-m``, by name; their runs get the job's graph and
            the job page.
        config_files: the ``-c`` run config files, deep-merged in order for the job page.
    """

    def __init__(
        self,
        open_instance: Callable[[], Any],
        jobs: Mapping[str, Any] | None = None,
        config_files: Sequence[str] = (),
    ) -> None:
        self._open_instance = open_instance
        self._instance: Any = None
        self.jobs = dict(jobs or {})
        self.config_files = tuple(config_files)
        # a finished run's counts never change: kept so a page of runs reads each log once
        self._counts: dict[str, dict[str, int]] = {}
        self._finished: dict[str, tuple[RunRecord, list[Event], dict[str, dict[str, Any]]]] = {}

    @property
    def instance(self) -> Any:
        """The instance, or None while none exists (the UI never creates one)."""
        if self._instance is None:
            self._instance = self._open_instance()
        return self._instance

    def close(self) -> None:
        if self._instance is not None:
            self._instance.close()
            self._instance = None

    # -- runs -----------------------------------------------------------------------------

    def runs_page(
        self,
        job: str | None = None,
        status: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> dict[str, Any]:
        """A page of runs, newest first: ``{"runs", "offset", "limit", "has_more"}``; each run
        with its step counts (executed, memoized, failed, skipped)."""
        limit = max(1, min(limit, MAX_PAGE))
        offset = max(0, offset)
        wanted = None
        if status:
            try:
                wanted = RunStatus(status.upper())
            except ValueError:
                choices = ", ".join(s.value for s in RunStatus)
                raise NotFound(f"no run status '{status}' (statuses: {choices})") from None
        if self.instance is None:
            return {"runs": [], "offset": offset, "limit": limit, "has_more": False}
        # newest first by the indexed start_time; one more than the page tells if more follow
        records = self.instance.get_runs(offset + limit + 1, job or None, wanted)
        page = records[offset : offset + limit]
        return {
            "runs": [{**run_dict(r), "counts": self._run_counts(r)} for r in page],
            "offset": offset,
            "limit": limit,
            "has_more": len(records) > offset + limit,
        }

    def _run_counts(self, run: RunRecord) -> dict[str, int]:
        cached = self._counts.get(run.run_id)
        if cached is not None:
            return cached
        counts = run_counts(fold_steps(self.instance.get_events(run.run_id)).values())
        if run.status is not RunStatus.STARTED:
            self._counts[run.run_id] = counts
        return counts

    def run_detail(self, run_id: str) -> dict[str, Any]:
        """A run, its nodes with counts per status, its graph and how many events its log
        holds. Steps are not included (a fan-out may have 10,000): ``run_steps`` gives a
        node's."""
        record, events, steps = self._folded(run_id)
        job = self.jobs.get(record.job_name)
        graph = job_graph(job) if job is not None else events_graph(steps.values())
        return {
            "run": {**run_dict(record), "counts": run_counts(steps.values())},
            "reason": _run_reason(events),
            "nodes": fold_nodes(steps.values()),
            "graph": graph,
            "graph_from": "job" if job is not None else "events",
            "events": len(events),
        }

    def run_steps(self, run_id: str, node: str, limit: int = MAX_STEPS) -> dict[str, Any]:
        """The steps of one node of a run (a mapped node's clones: failed ones first, at most
        ``limit``), with their inputs, outputs, addresses, versions and errors."""
        _, _, steps = self._folded(run_id)
        mine = [s for s in steps.values() if s["node"] == node]
        mine.sort(key=lambda s: s["status"] != "failed")  # stable: log order otherwise
        return {"node": node, "total": len(mine), "steps": mine[: max(1, limit)]}

    def run_timeline(self, run_id: str, limit: int = MAX_BARS) -> dict[str, Any]:
        """One bar per step that started, ``[step_key, start, end, status]`` (seconds since the
        epoch; ``end`` None while it runs), by start time; at most ``limit``, the longest kept."""
        _, _, steps = self._folded(run_id)
        bars = [
            [s["step_key"], s["start"], s["end"], s["status"]]
            for s in steps.values()
            if s["start"] is not None
        ]
        total = len(bars)
        if total > limit:
            bars.sort(key=lambda b: -((b[2] or b[1]) - b[1]))
            bars = bars[:limit]
        bars.sort(key=lambda b: b[1])
        return {"total": total, "bars": bars}

    def run_events(self, run_id: str, start: int = 0, limit: int = MAX_LINES) -> dict[str, Any]:
        """The run's log from event ``start`` on (at most the last ``limit`` lines of it), its
        status, and its nodes' states (for the live view: a node's colour changes as its steps'
        events arrive)."""
        record, events, steps = self._folded(run_id)
        start = max(0, start, len(events) - max(1, limit))
        return {
            "status": record.status.value,
            "end_time": record.end_time,
            "first": start,
            "lines": log_lines(events, start),
            "next": len(events),
            "nodes": fold_nodes(steps.values()),
            "counts": run_counts(steps.values()),
        }

    def _folded(self, run_id: str) -> tuple[RunRecord, list[Event], dict[str, dict[str, Any]]]:
        """The run, its events and its steps; kept for the last few finished runs (their log
        never changes), so clicking through a 10,000-step run reads its log once."""
        record = self._run(run_id)
        cached = self._finished.get(record.run_id)
        if cached is not None:
            return cached
        events = self.instance.get_events(record.run_id)
        folded = (record, events, fold_steps(events))
        if record.status is not RunStatus.STARTED:
            self._finished[record.run_id] = folded
            while len(self._finished) > _FINISHED_KEPT:
                self._finished.pop(next(iter(self._finished)))
        return folded

    def run_status(self, run_id: str) -> str:
        return self._run(run_id).status.value

    def _run(self, run_id: str) -> RunRecord:
        if self.instance is None:
            raise NotFound(f"no run '{run_id}': there is no instance yet (a first run makes it)")
        record = self.instance.get_run(run_id)
        if record is None:
            raise NotFound(f"no run '{run_id}' in instance {self.instance.url}")
        return record

    # -- jobs -----------------------------------------------------------------------------

    def job_names(self) -> list[str]:
        return list(self.jobs)

    def job_view(self, name: str) -> dict[str, Any]:
        """The job's graph and, per node, each output's ``list_versions`` status and why (the
        ``explain`` text), for the command line's config files as they are now."""
        from memodag.engine.dry_run import list_versions

        job = self.jobs.get(name)
        if job is None:
            known = ", ".join(self.jobs) or "none (start `memodag ui` with -f FILE or -m MODULE)"
            raise NotFound(f"no job '{name}' loaded; jobs: {known}")
        if self.instance is not None:
            rows = list_versions(job, self._run_config(), self.instance, explain=True)
        else:
            from memodag.storage.instance import Instance

            # no instance yet: nothing is stored, and none is created to say so
            with Instance.ephemeral() as empty:
                rows = list_versions(job, self._run_config(), empty, explain=True)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row.status] = counts.get(row.status, 0) + 1
        return {
            "job": name,
            "config_files": list(self.config_files),
            "graph": job_graph(job),
            "nodes": job_outputs(rows),
            "counts": counts,
        }

    def _run_config(self) -> dict[str, Any]:
        if not self.config_files:
            return {}
        from memodag.plan.run_config import load_run_config_files

        return load_run_config_files(self.config_files)


def run_dict(run: RunRecord) -> dict[str, Any]:
    """A run as JSON: ids, job, status, times (seconds since the epoch), duration, tags."""
    from memodag.definitions.secrets import masked_config

    return {
        "run_id": run.run_id,
        "job_name": run.job_name,
        "status": run.status.value,
        "start_time": run.start_time,
        "end_time": run.end_time,
        "duration": run.duration,
        "parent_run_id": run.parent_run_id,
        "step_selection": run.step_selection,
        "tags": dict(run.tags),
        "run_config": masked_config(run.run_config),
    }


def _run_reason(events: Sequence[Event]) -> str:
    """Why a run failed or was canceled as a whole (it may have failed before any step ran)."""
    for event in reversed(events):
        if event.step_key is None and event.event_type.value in ("RUN_FAILURE", "RUN_CANCELED"):
            return event.message
    return ""
