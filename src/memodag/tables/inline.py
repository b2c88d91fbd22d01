"""The inline hand-over: table outputs handed from task to task in memory, never written.

Owns the policy (``Table(inline=...)`` hint, the store's ``inline_policy``, the run tag), which
outputs of a plan may be inlined at all (every consumer an eager task taking a frame, in
process), the frames a run holds, and how a held frame is handed to a consumer. Must never
decide what runs: the engine re-runs an inlined producer when a consumer needs its data
(``storage.io_manager.INLINE`` addresses). Semantics: docs/tables.md, "Inline hand-over".
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from memodag.definitions.config import Field
from memodag.definitions.tables import INPUT_TYPE_KEY, LAZY_TAG, TABLE_STORE_KEY
from memodag.errors import ConfigError, StorageError
from memodag.plan.plan import ExecutionPlan, ListSource, NodeSource
from memodag.tables.convert import (
    ARROW,
    PANDAS,
    POLARS,
    POLARS_LAZY,
    from_arrow,
    kind_of_type,
    to_arrow,
)

#: the run tag overriding the store's ``inline_policy`` for one run
INLINE_POLICY_TAG = "memodag/inline_policy"
#: the policies, as pipedag names them: ``default_*`` decide for ``Table(inline=None)``,
#: ``force_*`` for every table
POLICIES = ("default_false", "default_true", "force_false", "force_true")
#: the kinds a producer may return for its table to be inlined (queries run in the database)
FRAME_KINDS = frozenset({PANDAS, POLARS, POLARS_LAZY, ARROW})
#: what an inlined output's address kind starts with: ``table:inline.<kind>:...``
INLINE_KIND = "inline."


#: the table stores' ``inline_policy`` config key (never in a version)
INLINE_POLICY_FIELD = Field(
    str,
    default_value="default_false",
    description="Which tables are handed from task to task in memory instead of the database: "
    "default_false (Table(inline=True) only), default_true, force_false, force_true.",
)


def check_policy(value: Any, where: str) -> str:
    """``value`` if it is one of ``POLICIES``.

    Raises:
        ConfigError: naming ``where`` (config key or run tag), the value and the choices.
    """
    if value not in POLICIES:
        raise ConfigError(
            [f"{where}: {value!r} is not an inline policy; use one of {', '.join(POLICIES)}"],
            "inline hand-over",
        )
    return str(value)


def wants_inline(hint: bool | None, policy: str) -> bool:
    """Whether a table with ``Table(inline=hint)`` is inlined under ``policy`` (where the plan
    allows it)."""
    if policy == "force_true":
        return True
    if policy == "force_false":
        return False
    if hint is None:
        return policy == "default_true"
    return bool(hint)


@dataclass
class InlinePlan:
    """Which table outputs of a run's plan can be handed over in memory.

    ``refused`` maps ``(node path, output)`` to why that output is materialized although it
    asks to be inlined; an output not listed is inlined when its policy says so.
    """

    in_process: bool
    refused: dict[tuple[str, str], str] = field(default_factory=dict)

    def why_not(self, node_path: str, output: str) -> str | None:
        if not self.in_process:
            return (
                "the executor runs steps in other processes (inline hand-over works on the "
                "in-process executor)"
            )
        return self.refused.get((node_path, output))


def plan_inline(plan: ExecutionPlan, in_process: bool) -> InlinePlan:
    """For each table output of ``plan``, why it cannot be inlined: a lazy consumer (it needs
    the table in the database), a consumer taking it as a ``sqlalchemy.Table`` or DuckDB
    relation, a fan-out or a consumer of a fan-out's pieces, or no consumer at all (nothing to
    hand it to: it is stored, so it can be read later)."""
    found = InlinePlan(in_process)
    if not in_process:
        return found
    consumers: dict[tuple[str, str], list[tuple[Any, str, str]]] = {}
    for node in plan.nodes.values():
        for input_name, source in node.inputs.items():
            members = source.members if isinstance(source, ListSource) else (source,)
            for member in members:
                if isinstance(member, NodeSource):
                    consumers.setdefault((member.node, member.output), []).append(
                        (node, input_name, member.mode)
                    )
    for node in plan.nodes.values():
        for name, out in node.op_def.outs.items():
            if out.io_manager_key != TABLE_STORE_KEY:
                continue
            why = _why_not(node, name, out, consumers.get((node.path, name), []))
            if why is not None:
                found.refused[(node.path, name)] = why
    return found


def _why_not(node: Any, name: str, out: Any, consumers: list[tuple[Any, str, str]]) -> str | None:
    if out.is_dynamic or node.is_mapped:
        return "fan-out pieces are stored (a piece cannot be recomputed alone)"
    if node.op_def.tags.get(LAZY_TAG) == "true":
        return "a lazy task's output is versioned by what is stored"
    if not consumers:
        return "no task reads it (it is stored, so it can be read after the run)"
    for consumer, input_name, mode in consumers:
        label = f"consumer '{consumer.path}'"
        if consumer.op_def.tags.get(LAZY_TAG) == "true":
            return f"{label} is a lazy task: it needs the table in the database"
        if mode != "value" or consumer.is_mapped:
            return f"{label} reads it in a fan-out"
        as_type = input_type(consumer.op_def, input_name)
        if as_type is not None:
            try:
                kind = kind_of_type(as_type, label)
            except StorageError:
                kind = None
            if kind not in FRAME_KINDS:
                return f"{label} takes it as {as_type!r}, which refers to the stored table"
    return None


def input_type(op_def: Any, input_name: str) -> Any:
    """The type ``op_def`` asks input ``input_name`` as (``In`` metadata or annotation)."""
    import inspect
    import typing

    spec = op_def.ins.get(input_name)
    if spec is not None and spec.metadata.get(INPUT_TYPE_KEY) is not None:
        return spec.metadata[INPUT_TYPE_KEY]
    parameter = inspect.signature(op_def.compute_fn).parameters.get(input_name)
    if parameter is None or parameter.annotation is inspect.Parameter.empty:
        return None
    hint = parameter.annotation
    if isinstance(hint, str):
        try:
            hint = typing.get_type_hints(op_def.compute_fn).get(input_name, hint)
        except Exception:  # an annotation naming what the module does not import: no type
            return None
    try:
        kind_of_type(hint, "")
    except StorageError:
        return None
    return hint


class InlineFrames:
    """The frames one run handed over in memory, by ``(step key, output)``. Held by the run's
    table io manager (and so by its result object); found by run id while that lives."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._frames: dict[tuple[str, str], tuple[Any, str]] = {}
        _HELD[run_id] = self

    def put(self, step_key: str, output: str, obj: Any, kind: str) -> None:
        self._frames[(step_key, output)] = (obj, kind)

    def get(self, step_key: str, output: str) -> tuple[Any, str] | None:
        return self._frames.get((step_key, output))


#: run id -> its frames, while the run's io manager (or result) keeps them
_HELD: weakref.WeakValueDictionary[str, InlineFrames] = weakref.WeakValueDictionary()


def held(run_id: str) -> InlineFrames | None:
    """The frames run ``run_id`` handed over, if something still holds them."""
    return _HELD.get(run_id)


def frame_of(obj: Any, kind: str) -> tuple[Any, str]:
    """What is held of a returned frame: a ``LazyFrame`` is collected once (every consumer then
    shares the data, as a stored table would be read)."""
    if kind == POLARS_LAZY:
        return obj.collect(), POLARS
    return obj, kind


def hand_over(obj: Any, kind: str, as_type: Any, what: str) -> Any:
    """The held frame ``obj`` (of ``kind``) as a consumer asks it (``as_type``; None: as it
    was returned). The same frame type is handed as is: a pandas frame as a shallow copy
    (copy-on-write: a consumer's edits never reach the producer's data or other consumers), a
    polars frame as a clone; any other type through Arrow."""
    wanted = kind if as_type is None else kind_of_type(as_type, what)
    if wanted == POLARS_LAZY and kind == POLARS:
        return obj.lazy()
    if wanted == kind:
        if kind == PANDAS:
            return obj.copy(deep=False)
        if kind == POLARS:
            return obj.clone()
        return obj  # pyarrow tables are immutable
    return from_arrow(to_arrow(obj, kind, what), wanted, what)


def arrow_schema(obj: Any, kind: str) -> Any:
    """The Arrow schema a held frame would be stored with (what ``AUTO_VERSION`` consumers are
    versioned by), without converting the data where the library can tell it."""
    import pyarrow as pa

    if kind == PANDAS:
        try:
            return pa.Schema.from_pandas(obj, preserve_index=False)
        except (pa.ArrowException, TypeError, ValueError):
            pass
    return to_arrow(obj, kind, "inline table").schema


def policy_of(config: Mapping[str, Any] | None, tags: Mapping[str, str]) -> str:
    """The run's policy: the run tag ``memodag/inline_policy``, else the store's config."""
    tag = tags.get(INLINE_POLICY_TAG)
    if tag is not None:
        return check_policy(tag, f"run tag {INLINE_POLICY_TAG}")
    return check_policy((config or {}).get("inline_policy", "default_false"), "inline_policy")


__all__ = [
    "FRAME_KINDS",
    "INLINE_KIND",
    "INLINE_POLICY_FIELD",
    "INLINE_POLICY_TAG",
    "POLICIES",
    "InlineFrames",
    "InlinePlan",
    "check_policy",
    "frame_of",
    "hand_over",
    "held",
    "input_type",
    "plan_inline",
    "policy_of",
    "wants_inline",
]
