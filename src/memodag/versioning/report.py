"""``list_versions`` and ``explain``: what a memoized run would do, computed without running it.

Walks the plan in order exactly as the engine would, with the same memoizer: a stored step's
outputs feed their stored versions downstream; a step to be recomputed feeds its code-derived
versions. Stored fan-outs are expanded from their manifests, so mapped steps appear once their
source is stored.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.plan.dynamic import expand_mapped, gathered_fan_out, pieces_from_addresses
from memodag.plan.plan import ExecutionStep, NodeSource, build_plan
from memodag.plan.run_config import resolve_run_config
from memodag.storage.instance.records import IndexEntry
from memodag.versioning.memoize import IndexMemoizer

STORED = "stored"
TO_BE_RECOMPUTED = "to-be-recomputed"
UNVERSIONED = "unversioned"


@dataclass(frozen=True)
class OutputVersion:
    """One row of ``list-versions``: an output, its version, and whether it is stored.

    ``reasons`` (filled by ``explain=True``) say why an output is to be recomputed: what changed
    against the newest stored version of that output.
    """

    step_output: str
    version: str | None
    status: str
    reasons: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_output": self.step_output,
            "version": self.version,
            "status": self.status,
            "reasons": list(self.reasons),
        }


def list_versions(
    job: Any,
    run_config: Mapping[str, Any] | None = None,
    instance: Any = None,
    explain: bool = False,
) -> list[OutputVersion]:
    """Each output's version and status (``stored`` / ``to-be-recomputed``) for a memoized run of
    ``job`` with ``run_config``, in plan order. Runs no op; reads only the instance's index."""
    from memodag.runtime.resources import initialized_resources
    from memodag.storage.instance import Instance

    instance = instance or Instance.get()
    resolved = resolve_run_config(job, run_config)
    plan = build_plan(job, resolved)
    memoizer = IndexMemoizer(job, plan, instance, enabled=True)
    io_keys = {
        out.io_manager_key for node in plan.nodes.values() for out in node.op_def.outs.values()
    }
    with initialized_resources(
        job.resource_defs, resolved.resource_config, io_keys, instance, "list-versions"
    ) as resources:
        memoizer.attach_io_managers({k: getattr(resources, k) for k in io_keys})
        return _walk(job, plan, memoizer, explain)


def _walk(job: Any, plan: Any, memoizer: IndexMemoizer, explain: bool) -> list[OutputVersion]:
    rows: list[OutputVersion] = []
    queue = list(plan.steps.values())
    memoizer.prepare(queue)
    expanded: set[str] = set()
    i = 0
    while i < len(queue):
        step = queue[i]
        i += 1
        versions = memoizer.versions(step)
        if versions is None:
            why = _unversioned_reason(step, memoizer)
            rows.extend(
                OutputVersion(f"{step.key}.{name}", None, UNVERSIONED, (why,) if explain else ())
                for name in step.op_def.outs
            )
            continue
        stored = memoizer.stored(step)
        if stored is not None:
            rows.extend(
                OutputVersion(f"{step.key}.{name}", versions[name], STORED)
                for name in step.op_def.outs
            )
            if step.op_def.has_dynamic_output:
                new_steps = expand_mapped(plan, step, pieces_from_addresses(step, stored))
                memoizer.prepare(new_steps)
                queue.extend(new_steps)
                expanded.add(step.key)
            continue
        memoizer.assume_recomputed(step)
        for name in step.op_def.outs:
            reasons = tuple(_explain(step, name, versions[name], memoizer)) if explain else ()
            rows.append(
                OutputVersion(f"{step.key}.{name}", versions[name], TO_BE_RECOMPUTED, reasons)
            )
    rows.extend(_pending_mapped(plan, expanded))
    return rows


def _pending_mapped(plan: Any, expanded: set[str]) -> list[OutputVersion]:
    """Mapped and collecting nodes whose fan-out has no stored manifest yet."""
    made = {s.node.path for s in plan.steps.values()}
    rows = []
    for node in plan.nodes.values():
        if node.path in made:
            continue
        source = node.mapped_over[0] if node.mapped_over else _gathered(plan, node)
        why = (
            f"depends on a dynamic output not yet produced ({source[0]}.{source[1]})"
            if source
            else "depends on a dynamic output not yet produced"
        )
        for name in node.op_def.outs:
            rows.append(
                OutputVersion(
                    f"{node.path}[*].{name}" if node.mapped_over else f"{node.path}.{name}",
                    None,
                    TO_BE_RECOMPUTED,
                    (why,),
                )
            )
    return rows


def _gathered(plan: Any, node: Any) -> tuple[str, str] | None:
    for source in node.inputs.values():
        if isinstance(source, NodeSource) and source.mode == "collect":
            return gathered_fan_out(plan.nodes, source)
    return None


def _unversioned_reason(step: ExecutionStep, memoizer: IndexMemoizer) -> str:
    if memoizer.resolver.op_version(step.op_def, step.config) is None:
        return f"op '{step.op_def.name}' has no version and the job has no version_strategy"
    return "an upstream output has no version"


def _explain(step: ExecutionStep, name: str, version: str, memoizer: IndexMemoizer) -> list[str]:
    previous = memoizer.stored_versions_of(step, name)
    if not previous:
        return ["never stored"]
    newest: IndexEntry = max(previous, key=lambda e: e.created_at)
    if newest.version == version:
        return [
            f"stored version is gone from io manager '{newest.address.io_manager_key}' or was stored under another io manager"
        ]
    recipe = memoizer.recipe(step)
    old = newest.recipe or {}
    if recipe is None or not old:
        return [f"version changed ({newest.version[:8]} -> {version[:8]})"]
    now = recipe.to_dict()
    reasons: list[str] = []
    if now["code"] != old.get("code"):
        changed = _code_diff(old.get("code_parts"), now.get("code_parts"))
        if changed:
            reasons.append(f"code of op '{step.op_def.name}' changed: {changed}")
        else:
            reasons.append(
                f"code version of op '{step.op_def.name}' changed ({_short(old.get('code'))} -> {_short(now['code'])})"
            )
    if now["config"] != old.get("config"):
        reasons.extend(_config_diff(old.get("config"), now["config"]))
    for res_key in sorted(set(now["resources"]) | set(old.get("resources", {}))):
        if now["resources"].get(res_key) != old.get("resources", {}).get(res_key):
            reasons.append(f"resource '{res_key}' changed (version or config)")
    sources = {spec.name: spec.upstream for spec in step.inputs}
    for input_name in now["inputs"]:
        if now["inputs"][input_name] != old.get("inputs", {}).get(input_name):
            upstream = sources.get(input_name) or ()
            names = sorted({f"{h.step_key}.{h.output_name}" for h in upstream})
            via = f" from {', '.join(names[:3])}{'...' if len(names) > 3 else ''}" if names else ""
            reasons.append(f"input '{input_name}' changed{via}")
    return reasons or [f"version changed ({newest.version[:8]} -> {version[:8]})"]


def _code_diff(old: Any, new: Any) -> str:
    """Which hashed functions/classes/constants/packages differ between two code versions."""
    if not isinstance(old, dict) or not isinstance(new, dict):
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
        for key in sorted(set(old) | set(new)):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append(f"field '{sub}' added ({new[key]!r})")
            elif key not in new:
                out.append(f"field '{sub}' removed (was {old[key]!r})")
            else:
                _diff(old[key], new[key], sub, out)
    elif old != new:
        out.append(f"field '{path or '(whole config)'}' changed ({old!r} -> {new!r})")
