"""Version computation: a pure function of definitions, config and upstream versions.

``version(output) = H(op code version, config, resource versions, input versions, output name
[, mapping key])`` (docs/versioning.md). Op and resource versions come from ``version=`` or the
job's ``VersionStrategy``, asked once per definition per run.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memodag.definitions.config import config_to_plain
from memodag.hashing import (
    VERSION_LENGTH,
    UnhashableValue,
    canonical_json,
    hash_strings,
    hash_value,
)
from memodag.plan.plan import ExecutionStep, StepOutputHandle
from memodag.versioning.strategy import OpVersionContext, ResourceVersionContext, VersionStrategy

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition


@dataclass(frozen=True, slots=True)
class Recipe:
    """What a step's version is made of; kept in the index so ``explain`` can diff two versions."""

    code: str
    config: str
    resources: tuple[tuple[str, str], ...]
    inputs: tuple[tuple[str, tuple[str, ...]], ...]
    #: what the code version hashes (function -> digest), when the strategy can say: lets
    #: ``explain`` name the function that changed. Not part of the version (``code`` covers it).
    code_parts: tuple[tuple[str, str], ...] = ()
    #: the step version when the resolver computed it already (from a per-node hash prefix)
    known_version: str = field(default="", compare=False)

    @property
    def step_version(self) -> str:
        if self.known_version:
            return self.known_version
        return hash_strings(*_version_parts(self.code, self.config, self.resources, self.inputs))

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "config": self.config,
            "resources": dict(self.resources),
            "inputs": {n: list(vs) for n, vs in self.inputs},
            **({"code_parts": dict(self.code_parts)} if self.code_parts else {}),
        }


def _version_parts(
    code: str,
    config: str,
    resources: tuple[tuple[str, str], ...],
    inputs: tuple[tuple[str, tuple[str, ...]], ...],
) -> list[str]:
    """What a step version hashes, in order: this order is the version scheme."""
    parts = [code, config]
    parts += [f"r:{k}={v}" for k, v in resources]
    parts += [f"i:{n}=" + ",".join(vs) for n, vs in inputs]
    return parts


def _feed(h: Any, part: str) -> None:
    """One part into a running hash, framed exactly as ``hash_strings`` frames it."""
    data = part.encode()
    h.update(len(data).to_bytes(8, "little") + data)


@dataclass(frozen=True, slots=True)
class _NodeParts:
    """What every step of one node (a plain op, or all clones of a mapped node) shares in its
    recipe, with the version hash already fed those parts: a step adds only its inputs."""

    code: str
    config: str
    resources: tuple[tuple[str, str], ...]
    code_parts: tuple[tuple[str, str], ...]
    prefix: Any  # a hashlib object fed code, config and resources


class StepVersion:
    """A step's version, with the parts to build its ``Recipe`` from when one is needed."""

    __slots__ = ("inputs", "node", "version")

    def __init__(
        self, version: str, node: _NodeParts, inputs: tuple[tuple[str, tuple[str, ...]], ...]
    ) -> None:
        self.version = version
        self.node = node
        self.inputs = inputs

    def recipe(self) -> Recipe:
        node = self.node
        return Recipe(
            node.code, node.config, node.resources, self.inputs, node.code_parts, self.version
        )

    def output_versions(self, names: tuple[str, ...]) -> dict[str, str]:
        """``output_version(version, name)`` of each name, with the names' framing done once."""
        framed = _FRAMED_VERSION_LENGTH + self.version.encode()
        suffixes = _output_suffixes(names)
        return {
            name: hashlib.sha256(framed + suffix).hexdigest()[:VERSION_LENGTH]
            for name, suffix in suffixes
        }


_FRAMED_VERSION_LENGTH = VERSION_LENGTH.to_bytes(8, "little")
_SUFFIXES: dict[tuple[str, ...], tuple[tuple[str, bytes], ...]] = {}


def _output_suffixes(names: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """Per output name, what ``output_version`` hashes after the step version (framed as
    ``hash_strings`` frames it; no mapping key)."""
    found = _SUFFIXES.get(names)
    if found is None:
        empty = (0).to_bytes(8, "little")
        found = tuple(
            (name, len(name.encode()).to_bytes(8, "little") + name.encode() + empty)
            for name in names
        )
        _SUFFIXES[names] = found
    return found


def _default_version(value: Any) -> str:
    """An input default by content; one that does not pickle counts by its type alone."""
    try:
        return hash_value(value)
    except UnhashableValue:
        return f"type:{type(value).__module__}.{type(value).__qualname__}"


def _config_json(config: Any) -> str:
    return "null" if config is None else canonical_json(config_to_plain(config))


def output_version(step_version: str, output_name: str, mapping_key: str | None = None) -> str:
    """The version of one output (or one piece of a dynamic output) of a step."""
    return hash_strings(step_version, output_name, mapping_key or "")


class VersionResolver:
    """Computes recipes and versions for steps; caches op and resource versions for the run."""

    def __init__(
        self,
        job: JobDefinition,
        resource_config: Mapping[str, Any],
        strategy: VersionStrategy | None,
    ) -> None:
        self.job = job
        self.resource_config = resource_config
        self.strategy = strategy
        self._op_versions: dict[tuple[int, str], str | None] = {}
        self._resource_versions: dict[str, str] = {}
        self._code_parts: dict[int, tuple[tuple[str, str], ...]] = {}
        self._config_jsons: dict[str, str] = {}
        self._nodes: dict[tuple[str, bool], _NodeParts | None] = {}
        self._shared_nodes: dict[tuple[int, str, bool], _NodeParts | None] = {}

    def op_version(self, op_def: Any, config: Any, config_json: str | None = None) -> str | None:
        if op_def.version is not None:
            return op_def.version
        if self.strategy is None:
            return None
        # a strategy may look at the config, so its answer is cached per (op, config)
        key = (id(op_def), config_json if config_json is not None else _config_json(config))
        if key not in self._op_versions:
            self._op_versions[key] = self.strategy.get_op_version(OpVersionContext(op_def, config))
        return self._op_versions[key]

    def resource_version(self, key: str) -> str:
        """A resource counts by its version (or the strategy's) and its config; an unversioned
        resource counts by its config alone."""
        if key not in self._resource_versions:
            rdef = self.job.resource_defs[key]
            config = self.resource_config.get(key)
            version = rdef.version
            if version is None and self.strategy is not None:
                version = self.strategy.get_resource_version(ResourceVersionContext(rdef, config))
            # a resource built from other resources changes when they do (resources form no
            # cycles: job definition refuses them)
            needs = [f"{k}={self.resource_version(k)}" for k in sorted(rdef.required_resource_keys)]
            self._resource_versions[key] = hash_strings(
                version or "unversioned", canonical_json(config_to_plain(config)), *needs
            )
        return self._resource_versions[key]

    def io_manager_identity(self, key: str) -> str:
        """What an index entry's io manager must still be for the entry to count as stored: the
        definition (by name) and its version and config, not just its resource key."""
        rdef = self.job.resource_defs[key]
        return hash_strings(rdef.name or type(rdef).__name__, self.resource_version(key))

    def recipe(
        self, step: ExecutionStep, upstream_version: Callable[[StepOutputHandle], str | None]
    ) -> Recipe | None:
        """The step's recipe, or None when its op or an input has no version."""
        found = self.step_version(step, upstream_version)
        return None if found is None else found.recipe()

    def step_version(
        self, step: ExecutionStep, upstream_version: Callable[[StepOutputHandle], str | None]
    ) -> StepVersion | None:
        """The step's version and what it is made of (a ``Recipe`` only when asked: a memoized
        step needs the version alone), or None when its op or an input has no version."""
        # code, config and resources are per node (clones share them): worked out and hashed
        # once per node, so a step hashes only its inputs on top
        mapped = bool(step.mapping_keys)
        node_key = (step.node.path, mapped)
        node = self._nodes.get(node_key)
        if node is None:
            if node_key in self._nodes:
                return None
            node = self._nodes[node_key] = self._node_parts(step, mapped)
            if node is None:
                return None
        inputs: list[tuple[str, tuple[str, ...]]] = []
        h = node.prefix.copy()
        for spec in step.inputs:
            if not spec.upstream and not spec.collect:
                versions: tuple[str, ...] = ("default:" + _default_version(spec.default),)
            else:
                found = []
                for handle in spec.upstream:
                    version = upstream_version(handle)
                    if version is None:
                        return None
                    found.append(version)
                versions = tuple(found)
            inputs.append((spec.name, versions))
            data = (f"i:{spec.name}=" + ",".join(versions)).encode()
            h.update(len(data).to_bytes(8, "little") + data)
        return StepVersion(h.hexdigest()[:VERSION_LENGTH], node, tuple(inputs))

    def _node_parts(self, step: ExecutionStep, mapped: bool) -> _NodeParts | None:
        config_json = self._config_jsons.get(step.node.path)
        if config_json is None:
            config_json = self._config_jsons[step.node.path] = _config_json(step.config)
        # nodes of one op with one config (an op called many times) share everything here
        shared_key = (id(step.op_def), config_json, mapped)
        if shared_key in self._shared_nodes:
            return self._shared_nodes[shared_key]
        found = self._shared_nodes[shared_key] = self._new_node_parts(step, mapped, config_json)
        return found

    def _new_node_parts(
        self, step: ExecutionStep, mapped: bool, config_json: str
    ) -> _NodeParts | None:
        code = self.op_version(step.op_def, step.config, config_json)
        if code is None:
            return None
        resources = tuple(
            (k, self.resource_version(k)) for k in sorted(step.op_def.required_resource_keys)
        )
        # parts only for unmapped steps: thousands of clones would repeat the same list
        parts = () if mapped else self.code_parts(step.op_def)
        h = hashlib.sha256()
        for part in _version_parts(code, config_json, resources, ()):
            _feed(h, part)
        return _NodeParts(code, config_json, resources, parts, h)

    def code_parts(self, op_def: Any) -> tuple[tuple[str, str], ...]:
        """``(kind name, digest)`` pairs behind a strategy-computed code version, if it tells."""
        if op_def.version is not None or not hasattr(self.strategy, "explain_op"):
            return ()
        key = id(op_def)
        if key not in self._code_parts:
            entries = self.strategy.explain_op(op_def)  # type: ignore[union-attr]
            self._code_parts[key] = tuple(
                (f"{kind} {name}", digest) for kind, name, digest in entries
            )
        return self._code_parts[key]

    def unversioned_ops(self, nodes: Any) -> list[str]:
        """Op nodes with neither ``version=`` nor a strategy (memoization cannot run them)."""
        if self.strategy is not None:
            return []
        return sorted(n.path for n in nodes if n.op_def.version is None)
