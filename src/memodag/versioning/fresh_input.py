"""Fresh input: run modes for data that changes outside memodag (``cache_validation``).

Owns what each mode means for the memoizer: which steps must run although stored, which stored
outputs count as changed, and which stored version a step with a declared data version reuses
when fresh input is ignored. Decides nothing else; the memoizer asks. Semantics: docs/tables.md,
"External tables and fresh input".

- ``normal``: declared data versions (``@materialize(cache=fn)``, ``@op(data_version=fn)``) are
  part of versions; an external table returned by an op without one is new data on every run.
- ``ignore_fresh_input``: a step with a declared data version reuses its newest stored output
  whose recipe differs at most in the data version; an external table without one counts as
  unchanged since the run that stored it.
- ``force_fresh_input``: steps with a declared data version run, and so does everything
  downstream of them; outputs are stored at their usual versions, so the next normal run is
  memoized again.
- ``force_cache_invalid``: every step runs; outputs are stored at their usual versions.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from memodag.errors import ConfigError
from memodag.hashing import hash_strings
from memodag.plan.run_config import CACHE_VALIDATION_MODES
from memodag.storage.io_manager import Address

#: the modes, as the run config's ``cache_validation`` key takes them
MODES = CACHE_VALIDATION_MODES
NORMAL, IGNORE_FRESH_INPUT, FORCE_FRESH_INPUT, FORCE_CACHE_INVALID = MODES
#: the run tag naming the run's mode when it is not ``normal`` (io managers see it at run start)
CACHE_VALIDATION_TAG = "memodag/cache_validation"
#: what the address URI of an external table starts with (``memodag.tables.io_manager``)
EXTERNAL_URI_PREFIX = "table:external:"


def check_mode(mode: Any) -> str:
    """``mode`` if it is one of ``MODES``.

    Raises:
        ConfigError: naming the value and the modes.
    """
    if mode not in MODES:
        raise ConfigError(
            [f"cache_validation: {mode!r} is not a mode; expected one of {', '.join(MODES)}"]
        )
    return str(mode)


def is_forced_write(tags: Mapping[str, str]) -> bool:
    """Whether a run with ``tags`` re-runs stored steps (its io managers must write anew what
    they already hold at a version: the data may differ now)."""
    return tags.get(CACHE_VALIDATION_TAG) in (FORCE_FRESH_INPUT, FORCE_CACHE_INVALID)


class FreshInput:
    """One run's mode, and the steps it forced to run."""

    def __init__(self, mode: str = NORMAL) -> None:
        self.mode = check_mode(mode)
        self._forced: set[str] = set()

    def forced(self, step: Any) -> bool:
        """Whether ``step`` must run although stored; a forced step forces its consumers."""
        if self.mode == NORMAL or self.mode == IGNORE_FRESH_INPUT:
            return False
        if step.key in self._forced:
            return True
        forced = (
            self.mode == FORCE_CACHE_INVALID
            or step.op_def.data_version is not None
            or any(k in self._forced for k in step.upstream_step_keys)
        )
        if forced:
            self._forced.add(step.key)
        return forced

    def changed_outside(self, address: Address, op_def: Any) -> bool:
        """Whether a stored ``address`` counts as new data on every run: an external table
        whose op declares no data version (unless fresh input is ignored)."""
        return (
            self.mode != IGNORE_FRESH_INPUT
            and (address.uri or "").startswith(EXTERNAL_URI_PREFIX)
            and op_def is not None
            and op_def.data_version is None
        )


def effective_version(address: Address, op_def: Any) -> str | None:
    """What consumers see of an external table without a data version: new with each run that
    made it (its address's run), so they run after it ran; else None (the usual version)."""
    if (
        address.version is not None
        and (address.uri or "").startswith(EXTERNAL_URI_PREFIX)
        and op_def is not None
        and op_def.data_version is None
    ):
        return "fresh:" + hash_strings(address.version, address.run_id)
    return None


def ignoring_data_version(
    made: Any, names: tuple[str, ...], candidates: Iterable[Any], stored: Any
) -> dict[str, str] | None:
    """The output versions of the newest stored recipe of a step that differs from ``made``
    (its ``StepVersion``) at most in its declared data version, with every output of ``names``
    stored there (``stored(name, version)``), or None.

    ``candidates``: index entries of the step's first output (their recipes).
    """
    from memodag.versioning.resolve import Recipe, StepVersion

    mine = made.recipe().to_dict()
    mine.pop("data_version", None)
    best: tuple[float, dict[str, str]] | None = None
    for entry in candidates:
        recipe = dict(entry.recipe or {})
        data_version = recipe.pop("data_version", "")
        recipe.pop("resource_configs", None)
        recipe.pop("code_parts", None)
        recipe.pop("manifest", None)
        if not data_version or any(
            recipe.get(k) != v for k, v in mine.items() if k != "code_parts"
        ):
            continue
        node = made.node
        version = Recipe(
            node.code, node.config, node.resources, made.inputs, (), data_version, node.outputs
        ).step_version
        versions = StepVersion(version, node, made.inputs).output_versions(names)
        newer = best is None or entry.created_at > best[0]
        if newer and all(stored(name, v) for name, v in versions.items()):
            best = (entry.created_at, versions)
    return best[1] if best is not None else None


__all__ = [
    "CACHE_VALIDATION_TAG",
    "EXTERNAL_URI_PREFIX",
    "MODES",
    "FreshInput",
    "check_mode",
    "effective_version",
    "ignoring_data_version",
    "is_forced_write",
]
