"""What ``list-versions``/``explain`` say about a dry run's walk: one row per output, and why.

This module turns the state a dry run of the engine leaves (``engine.dry_run``: which steps were
found stored, which would run, which fan-outs' pieces are unknown) into rows, and explains each
output to be recomputed against what the index holds for the closest recipe. It decides nothing
about what runs (that is the engine's walk) and never touches storage beyond the memoizer's
index look-ups.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from memodag.plan.dynamic import gathers, step_key_for
from memodag.plan.plan import ExecutionPlan, ExecutionStep
from memodag.storage.instance.records import IndexEntry
from memodag.storage.io_manager import INLINE, IOManager
from memodag.versioning.memoize import LOST, IndexMemoizer
from memodag.versioning.resolve import AUTO_PENDING, is_auto_version

STORED = "stored"
TO_BE_RECOMPUTED = "to-be-recomputed"
#: an early-cutoff upstream re-runs: whether this step runs depends on the data it yields
DEPENDS_ON_DATA = "depends-on-data"
UNVERSIONED = "unversioned"
#: what list-versions says of a lazy task whose version is its frame's content
DECIDED_AT_RUN_TIME = "decided at run time (content hash)"
#: what list-versions says of a stored inline table (docs/tables.md, "Inline hand-over")
INLINE_NOTE = "inline: recomputed if a consumer runs"
#: the run will not start it: an output it needs is not yielded at the stored version
SKIPPED = "skipped"

STATUSES = (STORED, TO_BE_RECOMPUTED, DEPENDS_ON_DATA, UNVERSIONED, SKIPPED)

# the engine's step statuses (engine.engine.StepStatus), as this layer sees them
_RAN = "success"
_MEMOIZED = "memoized"


@dataclass(frozen=True)
class OutputVersion:
    """One row of ``list-versions``: an output, its version, and whether it is stored.

    ``reasons`` (filled by ``explain=True``) say why an output is to be recomputed: what changed
    against the stored version whose recipe is closest to the current one. ``step_key`` is the
    step the output belongs to (``op[*]`` for clones whose pieces are not known yet).
    """

    step_output: str
    version: str | None
    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)
    step_key: str = ""
    #: where users find a stored output its URI does not name plainly (a table:
    #: ``duckdb:<file>#<schema>.<table>``), from ``IOManager.location``; else None
    location: str | None = None

    def to_dict(self) -> dict[str, Any]:
        found = {
            "step_output": self.step_output,
            "step": self.step_key,
            "version": self.version,
            "status": self.status,
            "reasons": list(self.reasons),
        }
        if self.location is not None:
            found["location"] = self.location
        return found


@dataclass(frozen=True)
class WalkState:
    """What a dry run of the engine leaves behind (see ``engine.dry_run``)."""

    steps: Mapping[str, ExecutionStep]
    status: Mapping[str, str]
    unexpanded: Sequence[tuple[str, str]]
    data_pending: Collection[str]
    pending_outputs: Collection[tuple[str, str]]
    #: steps left waiting when the walk ended (on pieces nobody could tell)
    unfinished: Collection[str] = ()
    #: ``(step key, output)`` of lazy tasks -> what evaluating the body told (``dry_run.LazyVersion``)
    lazy: Mapping[tuple[str, str], Any] = field(default_factory=dict)
    #: AUTO_VERSION steps whose plan waits on an input not stored yet (no version yet)
    auto_pending: Collection[str] = ()


def report_rows(
    plan: ExecutionPlan, state: WalkState, memoizer: IndexMemoizer, explain: bool
) -> list[OutputVersion]:
    """Rows for every output the walk met, then for what waits on unknown pieces."""
    rows: list[OutputVersion] = []
    waiting: list[str] = []
    for key, step in state.steps.items():
        status = state.status.get(key)
        outs = step.op_def.outs
        if status == _MEMOIZED:
            versions = memoizer.versions(step) or {}
            rows.extend(
                OutputVersion(
                    f"{key}.{name}",
                    versions.get(name),
                    STORED,
                    _inline_note(step, name, memoizer),
                    key,
                    _location(memoizer, step, name),
                )
                for name in outs
            )
        elif status == _RAN:
            rows.extend(_would_run(step, state, memoizer, explain))
        else:
            waiting.append(key)
    waiting, skipped = _split_waiting(state, waiting)
    for key in skipped:
        rows.extend(
            OutputVersion(
                f"{key}.{name}",
                None,
                SKIPPED,
                ("an output it needs is not yielded at the stored version (optional output)",),
                key,
            )
            for name in state.steps[key].op_def.outs
        )
    pending_from = _pending_fan_outs(state)
    pending_status = DEPENDS_ON_DATA if any(pending_from.values()) else TO_BE_RECOMPUTED
    why = (
        "depends on a dynamic output not yet produced ("
        + ", ".join(f"{s}.{o}" for s, o in pending_from)
        + "): its pieces are known when that step runs"
    )
    for key in waiting:
        rows.extend(
            OutputVersion(f"{key}.{name}", None, pending_status, (why,), key)
            for name in state.steps[key].op_def.outs
        )
    rows.extend(_unexpanded_rows(plan, state, pending_from, waiting))
    # nodes below a fan-out that itself waits (it never ran, so it left no "unexpanded" mark)
    met = {row.step_key.split("[", 1)[0] for row in rows}
    for node in plan.nodes.values():
        if node.path in met:
            continue
        depth = len(node.mapped_over)
        key = f"{node.path}[{','.join('*' * depth)}]" if depth else node.path
        rows.extend(
            OutputVersion(f"{key}.{name}", None, pending_status, (why,), key)
            for name in node.op_def.outs
        )
    return rows


def _location(memoizer: IndexMemoizer, step: ExecutionStep, name: str) -> str | None:
    """Where users find the stored output, if its io manager says it (a table store)."""
    manager = memoizer.io_managers.get(step.op_def.outs[name].io_manager_key)
    if manager is None or type(manager).location is IOManager.location:
        return None  # one look-up per output spared for managers that say nothing
    entry = memoizer.stored_entry(step, name)
    return manager.location(entry.address) if entry is not None else None


def _split_waiting(state: WalkState, waiting: list[str]) -> tuple[list[str], list[str]]:
    """Steps not decided by the walk: those waiting (directly or through an upstream) on pieces
    not known yet, and those the run skips because an optional output is not yielded."""
    pending = set(state.unfinished)
    changed = True
    while changed:
        changed = False
        for key in waiting:
            if key not in pending and state.steps[key].upstream_step_keys & pending:
                pending.add(key)
                changed = True
    return [k for k in waiting if k in pending], [k for k in waiting if k not in pending]


def _would_run(
    step: ExecutionStep, state: WalkState, memoizer: IndexMemoizer, explain: bool
) -> list[OutputVersion]:
    key = step.key
    versions = memoizer.versions(step)
    if key in state.auto_pending:
        why = (
            f"the plan of op '{step.op_def.name}' (AUTO_VERSION) is built once its inputs are "
            "stored: its version is known when the run stores them"
        )
        return [
            OutputVersion(f"{key}.{name}", None, TO_BE_RECOMPUTED, (why,) if explain else (), key)
            for name in step.op_def.outs
        ]
    if versions is None:
        auto_sources = sorted(
            {
                f"{h.step_key}.{h.output_name}"
                for spec in step.inputs
                for h in spec.upstream
                if h.step_key in state.auto_pending
            }
        )
        if auto_sources:
            why = (
                f"input from {', '.join(auto_sources[:3])}, an AUTO_VERSION op whose plan is "
                "built once its own inputs are stored: its version is known then"
            )
            return [
                OutputVersion(
                    f"{key}.{name}", None, TO_BE_RECOMPUTED, (why,) if explain else (), key
                )
                for name in step.op_def.outs
            ]
        if key in state.data_pending:
            sources = sorted(
                {
                    f"{h.step_key}.{h.output_name}"
                    for spec in step.inputs
                    for h in spec.upstream
                    if (h.step_key, h.output_name) in state.pending_outputs
                }
            )
            why = (
                f"input from {', '.join(sources[:3])}, which re-runs with early cutoff: this step "
                "re-runs only if that data changes"
            )
            status = DEPENDS_ON_DATA
        else:
            why = _unversioned_reason(step, memoizer)
            status = UNVERSIONED
        return [
            OutputVersion(f"{key}.{name}", None, status, (why,) if explain else (), key)
            for name in step.op_def.outs
        ]
    if any((key, name) in state.lazy for name in step.op_def.outs):
        return _lazy_rows(step, state, memoizer, explain)
    return [
        OutputVersion(
            f"{key}.{name}",
            versions[name],
            TO_BE_RECOMPUTED,
            tuple(explain_output(step, name, versions[name], memoizer)) if explain else (),
            key,
        )
        for name in step.op_def.outs
    ]


def _lazy_rows(
    step: ExecutionStep, state: WalkState, memoizer: IndexMemoizer, explain: bool
) -> list[OutputVersion]:
    """A lazy task's outputs: the version its body's query has (stored or to be executed), or
    decided at run time (a frame's content)."""
    rows = []
    for name in step.op_def.outs:
        lazy = state.lazy.get((step.key, name))
        if lazy is None or lazy.version is None:
            why = lazy.why if lazy is not None else "the body could not be evaluated"
            rows.append(
                OutputVersion(f"{step.key}.{name}", None, DEPENDS_ON_DATA, (why,), step.key)
            )
            continue
        status = STORED if lazy.stored else TO_BE_RECOMPUTED
        why = "a lazy task: the table of its query's version is not stored yet"
        rows.append(
            OutputVersion(
                f"{step.key}.{name}",
                lazy.version,
                status,
                (why,) if explain and not lazy.stored else (),
                step.key,
                lazy.location if lazy.stored else None,
            )
        )
    return rows


def _pending_fan_outs(state: WalkState) -> dict[tuple[str, str], bool]:
    """Fan-outs whose pieces are unknown -> whether their data (early cutoff) decides too."""
    return {
        (source, output): source in state.data_pending or (source, output) in state.pending_outputs
        for source, output in state.unexpanded
    }


def _unexpanded_rows(
    plan: ExecutionPlan,
    state: WalkState,
    pending_from: Mapping[tuple[str, str], bool],
    waiting: Collection[str],
) -> list[OutputVersion]:
    """Clones (``op[*]``) and collectors of fan-outs whose pieces are not known yet."""
    rows: list[OutputVersion] = []
    seen: set[str] = set(waiting)
    for (source_key, output), by_data in pending_from.items():
        source = state.steps[source_key]
        prefix = source.mapping_keys
        depth = len(prefix)
        fan_out = (source.node.path, output)
        status = DEPENDS_ON_DATA if by_data else TO_BE_RECOMPUTED
        why = f"depends on a dynamic output not yet produced ({source_key}.{output})"
        for node in plan.nodes.values():
            scope = node.mapped_over
            if len(scope) > depth and scope[depth] == fan_out:
                key = f"{node.path}[{','.join((*prefix, *('*' * (len(scope) - depth))))}]"
            elif scope == source.node.mapped_over and gathers(plan, node, fan_out):
                key = step_key_for(node.path, prefix)
            else:
                continue
            if key in seen:
                continue
            seen.add(key)
            rows.extend(
                OutputVersion(f"{key}.{name}", None, status, (why,), key)
                for name in node.op_def.outs
            )
    return rows


def _inline_note(step: ExecutionStep, name: str, memoizer: IndexMemoizer) -> tuple[str, ...]:
    """``(INLINE_NOTE,)`` for an output stored as an inline table (a version, no data)."""
    entry = memoizer.stored_entry(step, name)
    if entry is not None and entry.address.serializer == INLINE:
        return (INLINE_NOTE,)
    return ()


def _unversioned_reason(step: ExecutionStep, memoizer: IndexMemoizer) -> str:
    if memoizer.resolver.op_version(step.op_def, step.config) is None:
        return f"op '{step.op_def.name}' has no version and the job has no version_strategy"
    return "an upstream output has no version"


# -- explain ---------------------------------------------------------------------------------


def explain_output(
    step: ExecutionStep, name: str, version: str, memoizer: IndexMemoizer
) -> list[str]:
    """Why output ``name`` of ``step`` (to be recomputed at ``version``) is not stored: what
    differs from the stored version whose recipe is closest to the current one (same config and
    inputs first), so a revert to an older config is explained against that config's outputs."""
    previous = memoizer.stored_versions_of(step, name)
    if not previous:
        return ["never stored"]
    same = [e for e in previous if e.version == version]
    if same and same[0].address.serializer == INLINE:
        return ["inline: a consumer runs, and this table was handed over in memory, not stored"]
    if same:
        return [_lost_reason(step, same[0], memoizer)]
    recipe = memoizer.recipe(step)
    now = recipe.to_dict() if recipe is not None else None
    with_recipe = [e for e in previous if e.recipe]
    if now is None or not with_recipe:
        newest = max(previous, key=lambda e: e.created_at)
        return [f"version changed ({newest.version[:8]} -> {version[:8]})"]
    closest: IndexEntry = min(
        with_recipe, key=lambda e: (_distance(now, e.recipe or {}), -e.created_at)
    )
    old = closest.recipe or {}
    reasons: list[str] = []
    if now["code"] != old.get("code"):
        reasons.append(_code_reason(step, now, old, memoizer))
    if now["config"] != old.get("config"):
        reasons.extend(_config_diff(old.get("config"), now["config"]))
    if now.get("data_version", "") != old.get("data_version", ""):
        reasons.append(
            f"data version of op '{step.op_def.name}' changed "
            f"({_data_text(old.get('data_version'))} -> {_data_text(now.get('data_version'))})"
        )
    if "outputs" in old and now.get("outputs") != old["outputs"]:
        reasons.append(
            f"declared outputs of op '{step.op_def.name}' changed "
            f"({old['outputs'] or 'none'} -> {now.get('outputs') or 'none'})"
        )
    now_configs = memoizer.resource_configs(step)
    old_resources = old.get("resources", {})
    for res_key in sorted(set(now["resources"]) | set(old_resources)):
        if now["resources"].get(res_key) != old_resources.get(res_key):
            reasons.append(_resource_reason(res_key, old, now_configs))
    sources = {spec.name: spec.upstream for spec in step.inputs}
    for input_name in now["inputs"]:
        was = old.get("inputs", {}).get(input_name)
        if now["inputs"][input_name] != was:
            upstream = sources.get(input_name) or ()
            members = _changed_members(now["inputs"][input_name], was, upstream)
            if members:
                reasons.append(f"input '{input_name}' changed: {members}")
                continue
            names = sorted({f"{h.step_key}.{h.output_name}" for h in upstream})
            via = f" from {', '.join(names[:3])}{'...' if len(names) > 3 else ''}" if names else ""
            reasons.append(f"input '{input_name}' changed{via}")
    return reasons or [f"version changed ({closest.version[:8]} -> {version[:8]})"]


def _lost_reason(step: ExecutionStep, entry: IndexEntry, memoizer: IndexMemoizer) -> str:
    """Why an output stored at its current version is recomputed: its data was found lost by
    ``memodag verify --repair``, is missing or altered now, or its io manager changed."""
    address = entry.address
    run = f"run {address.run_id[:8]}"
    lost = (entry.recipe or {}).get("lost")
    if address.serializer == LOST and isinstance(lost, dict):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(float(lost.get("at") or 0)))
        return (
            f"stored at this version by {run}, then found {lost.get('reason') or 'lost'} by "
            f"memodag verify --repair ({when}): recomputed"
        )
    key = step.op_def.outs[address.output_name].io_manager_key
    manager = memoizer.io_managers.get(key)
    if address.io_manager_key != key or manager is None:
        return (
            f"stored at this version by {run} under io manager '{address.io_manager_key}', "
            f"now '{key}'"
        )
    try:
        problem = manager.verify(address)
    except Exception as exc:  # an unreachable store: it cannot serve the output either
        problem = f"cannot be checked: {type(exc).__name__}: {exc}"
    if problem:
        return f"stored at this version by {run}, but its data is {problem}: recomputed"
    return f"stored at this version by {run}, but cannot be reused (io manager '{key}')"


def _changed_members(now: Any, was: Any, upstream: Sequence[Any]) -> str | None:
    """For a list input (a fan-in, a collect) of unchanged length: which members changed,
    ``member 1 (b.result)``; None when the lists cannot be compared member by member."""
    if not isinstance(now, list | tuple) or not isinstance(was, list | tuple):
        return None
    if len(upstream) < 2 or len(now) != len(was) or len(now) != len(upstream):
        return None
    changed = [i for i, (a, b) in enumerate(zip(now, was, strict=True)) if a != b]
    shown = ", ".join(f"member {i} ({upstream[i]})" for i in changed[:3])
    return shown + ("..." if len(changed) > 3 else "")


def _distance(now: Mapping[str, Any], old: Mapping[str, Any]) -> int:
    """How many parts of two recipes differ: code, config, each resource, each input."""
    count = int(now["code"] != old.get("code")) + int(now["config"] != old.get("config"))
    count += int(now.get("data_version", "") != old.get("data_version", ""))
    for part in ("resources", "inputs"):
        mine, theirs = now[part], old.get(part) or {}
        count += sum(1 for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    return count


def _code_reason(
    step: ExecutionStep, now: Mapping[str, Any], old: Mapping[str, Any], memoizer: IndexMemoizer
) -> str:
    op_name = step.op_def.name
    if now["code"] == AUTO_PENDING:
        return f"the plan of op '{op_name}' (AUTO_VERSION) is built once its inputs are stored"
    if is_auto_version(step.op_def):
        return f"the polars plan of op '{op_name}' (AUTO_VERSION) changed"
    new_parts = now.get("code_parts") or dict(memoizer.resolver.code_parts(step.op_def))
    old_parts = old.get("code_parts") or memoizer.code_parts_at(step, str(old.get("code")))
    changed = _code_diff(old_parts, new_parts)
    if changed:
        return f"code of op '{op_name}' changed: {changed}"
    return f"code version of op '{op_name}' changed ({_short(old.get('code'))} -> {_short(now['code'])})"


def _resource_reason(res_key: str, old: Mapping[str, Any], now_configs: Mapping[str, Any]) -> str:
    old_configs = old.get("resource_configs") or {}
    if res_key in old_configs and res_key in now_configs:
        changes: list[str] = []
        _diff(old_configs[res_key], now_configs[res_key], "", changes)
        if changes:
            return f"resource '{res_key}' config " + "; ".join(changes)
        return f"resource '{res_key}' changed (its version, or a resource it is built from)"
    return f"resource '{res_key}' changed (version or config)"


def _code_diff(old: Any, new: Any) -> str:
    """Which hashed functions/classes/constants/packages differ between two code versions."""
    if not isinstance(old, dict) or not isinstance(new, dict) or not old or not new:
        return ""
    edited = sorted(k for k in new if k in old and new[k] != old[k])
    added = sorted(k for k in new if k not in old)
    removed = sorted(k for k in old if k not in new)
    parts = (
        [f"{k} edited" for k in edited]
        + [f"{k} now used" for k in added]
        + [f"{k} no longer used" for k in removed]
    )
    return ", ".join(parts[:5]) + (f" (+{len(parts) - 5} more)" if len(parts) > 5 else "")


def _data_text(stored: Any) -> str:
    """A declared data version as ``explain`` shows it: a string as it is, other JSON compact."""
    if not stored:
        return "none"
    try:
        value = json.loads(stored)
    except (TypeError, ValueError):
        value = stored
    text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"))
    return text if len(text) <= 60 else text[:57] + "..."


def _short(value: Any) -> str:
    text = str(value)
    return text if len(text) <= 12 else text[:10] + ".."


def _config_diff(old_json: Any, new_json: str) -> list[str]:
    try:
        old = json.loads(old_json) if isinstance(old_json, str) else old_json
        new = json.loads(new_json)
    except (TypeError, ValueError):
        return ["config changed"]
    changes: list[str] = []
    _diff(old, new, "", changes)
    return [f"config {c}" for c in changes] or ["config changed"]


def _diff(old: Any, new: Any, path: str, out: list[str]) -> None:
    if isinstance(old, dict) and isinstance(new, dict):
        before = len(out)
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"field '{sub}' added ({new[key]!r})")
            elif key not in new:
                out.append(f"field '{sub}' removed (was {old[key]!r})")
            else:
                _diff(old[key], new[key], sub, out)
        if len(out) == before and list(old) != list(new):
            # mapping order is data (an op iterating the mapping sees it)
            out.append(
                f"field '{path or '(whole config)'}' order changed ({list(old)} -> {list(new)})"
            )
    elif old != new:
        out.append(f"field '{path or '(whole config)'}' changed ({old!r} -> {new!r})")


__all__ = [
    "DEPENDS_ON_DATA",
    "SKIPPED",
    "STATUSES",
    "STORED",
    "TO_BE_RECOMPUTED",
    "UNVERSIONED",
    "OutputVersion",
    "WalkState",
    "explain_output",
    "report_rows",
]
