"""Version computation: a pure function of definitions, config and upstream versions.

``version(output) = H(op code version, config, [declared data version,] declared outputs,
resource versions, input versions, output name [, mapping key])`` (docs/versioning.md). Op and resource versions
come from ``version=`` or the job's ``VersionStrategy``, asked once per definition per run; an
op's declared data version (``@op(data_version=fn)``) from ``fn(context)``, once per op and config
per run. Never runs an op body.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from memodag.definitions.config import config_to_plain
from memodag.definitions.secrets import masked_config
from memodag.definitions.tables import AUTO_VERSION_TAG, STAGE_TAG
from memodag.errors import DataVersionError, MemodagError, MemoizationError
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

#: what ``upstream_schema`` answers for an output whose schema only its run will tell (a dry
#: run's prediction): an AUTO_VERSION consumer then has a version no stored output has
SCHEMA_PENDING = "\x00pending"
#: an AUTO_VERSION op's code version while an input's schema is pending
AUTO_PENDING = "auto-version:pending"

UpstreamSchema = Callable[[StepOutputHandle], str]


def is_auto_version(op_def: Any) -> bool:
    """Whether the op is ``@materialize(version=AUTO_VERSION)`` (versioned by its plan)."""
    return op_def.tags.get(AUTO_VERSION_TAG) == "true"


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
    #: canonical JSON of the op's declared data version (``@op(data_version=fn)``), if any
    data_version: str = ""
    #: the op's outputs as declared, in order, with their kinds (``_outputs_part``): a tuple
    #: return fills them in this order, so swapping two names swaps the values stored
    outputs: str = ""
    #: the step version when the resolver computed it already (from a per-node hash prefix)
    known_version: str = field(default="", compare=False)

    @property
    def step_version(self) -> str:
        if self.known_version:
            return self.known_version
        return hash_strings(
            *_version_parts(
                self.code,
                self.config,
                self.resources,
                self.inputs,
                self.data_version,
                self.outputs,
            )
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "config": _stored_config(self.config),
            "resources": dict(self.resources),
            "inputs": {n: list(vs) for n, vs in self.inputs},
            **({"code_parts": dict(self.code_parts)} if self.code_parts else {}),
            **({"data_version": self.data_version} if self.data_version else {}),
            "outputs": self.outputs,
        }


def _stored_config(config: str) -> str:
    """The config JSON as kept in the index: passwords in URLs masked (the version hashed them)."""
    if "@" not in config and "password" not in config.lower():
        return config  # nothing to mask: the common case, no JSON round trip
    return canonical_json(masked_config(json.loads(config)))


def _version_parts(
    code: str,
    config: str,
    resources: tuple[tuple[str, str], ...],
    inputs: tuple[tuple[str, tuple[str, ...]], ...],
    data_version: str = "",
    outputs: str = "",
) -> list[str]:
    """What a step version hashes, in order: this order is the version scheme."""
    parts = [code, config]
    if data_version:
        parts.append(f"d:{data_version}")
    parts.append(f"o:{outputs}")
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
    prefix: Any  # a hashlib object fed code, config, data version, outputs and resources
    data_version: str = ""
    outputs: str = ""


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
            node.code,
            node.config,
            node.resources,
            self.inputs,
            node.code_parts,
            node.data_version,
            node.outputs,
            self.version,
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


def _versioned_config(rdef: Any, config: Any) -> Any:
    """A resource's config as versions see it: without its ``unversioned_config`` keys."""
    plain = config_to_plain(config)
    skip: frozenset[str] = getattr(rdef, "unversioned_config", frozenset())
    if skip and isinstance(plain, dict):
        plain = {k: v for k, v in plain.items() if k not in skip}
    return plain


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
        begin_run = getattr(strategy, "begin_run", None)
        if callable(begin_run):  # a strategy need not subclass VersionStrategy
            begin_run()
        self._op_versions: dict[tuple[int, str], str | None] = {}
        self._resource_versions: dict[str, str] = {}
        self._code_parts: dict[int, tuple[tuple[str, str], ...]] = {}
        self._config_jsons: dict[str, str] = {}
        self._nodes: dict[tuple[str, bool], _NodeParts | None] = {}
        self._shared_nodes: dict[
            tuple[int, str, bool, str | None, str | None], _NodeParts | None
        ] = {}
        self._auto_codes: dict[tuple[int, str, str], str] = {}
        self._udf_strategy: Any = None
        self._plain_resource_versions: dict[str, str] = {}
        #: what ``data_version`` functions receive: set by the run (``attach_resources``)
        self.resources: Any = None
        self.run_id = ""
        self.instance: Any = None

    def op_version(self, op_def: Any, config: Any, config_json: str | None = None) -> str | None:
        if op_def.version is not None:
            return op_def.version
        if is_auto_version(op_def):
            return None  # per step, from its plan (``auto_code``)
        if self.strategy is None:
            return None
        # a strategy may look at the config, so its answer is cached per (op, config)
        key = (id(op_def), config_json if config_json is not None else _config_json(config))
        if key not in self._op_versions:
            strategy = self.strategy
            try:
                found = strategy.get_op_version(OpVersionContext(op_def, config))
            except MemoizationError:
                raise
            except Exception as exc:
                raise MemoizationError(
                    f"version strategy {_name(strategy)} failed on op '{op_def.name}': "
                    f"{type(exc).__name__}: {exc}; fix get_op_version, or give the op "
                    "@op(version=...)"
                ) from exc
            self._op_versions[key] = _checked(
                found, f"op '{op_def.name}'", strategy, "get_op_version"
            )
        return self._op_versions[key]

    def resource_version(self, key: str) -> str:
        """A resource counts by its version (or the strategy's) and its config; an unversioned
        resource counts by its config alone. The strategy is asked only about resources ops
        require (and what those are built from), never about io managers."""
        if key not in self._resource_versions:
            rdef = self.job.resource_defs[key]
            config = self.resource_config.get(key)
            version = rdef.version
            strategy = self.strategy
            if version is None and strategy is not None:
                try:
                    found = strategy.get_resource_version(ResourceVersionContext(rdef, config))
                except MemoizationError:
                    raise
                except Exception as exc:
                    raise MemoizationError(
                        f"version strategy {_name(strategy)} failed on resource '{key}': "
                        f"{type(exc).__name__}: {exc}; fix get_resource_version (return None "
                        f"for an unversioned resource), or give the resource version=..."
                    ) from exc
                if found is not None:
                    version = _checked(found, f"resource '{key}'", strategy, "get_resource_version")
            # a resource built from other resources changes when they do (resources form no
            # cycles: job definition refuses them)
            needs = [f"{k}={self.resource_version(k)}" for k in sorted(rdef.required_resource_keys)]
            self._resource_versions[key] = hash_strings(
                version or "unversioned", canonical_json(_versioned_config(rdef, config)), *needs
            )
        return self._resource_versions[key]

    def _plain_resource_version(self, key: str) -> str:
        """A resource by its own ``version=`` and config, and what it is built from, the same
        way: no strategy asked (io managers; docs/versioning.md)."""
        found = self._plain_resource_versions.get(key)
        if found is None:
            rdef = self.job.resource_defs[key]
            config = self.resource_config.get(key)
            needs = [
                f"{k}={self._plain_resource_version(k)}"
                for k in sorted(rdef.required_resource_keys)
            ]
            found = hash_strings(
                rdef.version or "unversioned",
                canonical_json(_versioned_config(rdef, config)),
                *needs,
            )
            self._plain_resource_versions[key] = found
        return found

    def io_manager_identity(self, key: str) -> str:
        """What an index entry's io manager must still be for the entry to count as stored: the
        definition (by name) and its ``version=`` and config, not just its resource key. No
        version strategy is asked: io managers are not code an op's result depends on, and a
        strategy written for the op's resources need not know them."""
        rdef = self.job.resource_defs[key]
        return hash_strings(rdef.name or type(rdef).__name__, self._plain_resource_version(key))

    def data_version(self, step: ExecutionStep) -> str:
        """Canonical JSON of what the op's ``data_version(context)`` returns ("" without one).

        Raises:
            DataVersionError: the function raised or returned something that is not JSON.
        """
        op_def = step.op_def
        fn = op_def.data_version
        if fn is None:
            return ""
        context = self._op_context(step)
        where = f"data_version of op '{op_def.name}' ({_name(fn)})"
        try:
            value = fn(context)
        except MemodagError as exc:
            raise DataVersionError(f"{where} failed: {exc}") from exc
        except Exception as exc:
            raise DataVersionError(
                f"{where} failed: {type(exc).__name__}: {exc}; it runs before the op to say "
                "which version of outside data the op reads"
            ) from exc
        try:
            return json.dumps(
                _json_value(value), sort_keys=True, separators=(",", ":"), allow_nan=False
            )
        except (TypeError, ValueError) as exc:
            raise DataVersionError(
                f"{where} returned {_short_repr(value)}, which is not a JSON value ({exc}): "
                "return a str, number, bool, None, or a list/dict of them (str keys), e.g. "
                "a file's size and mtime or a table's last update time"
            ) from None

    def _op_context(self, step: ExecutionStep) -> Any:
        """What a declared data version (or an AUTO_VERSION body) gets as its context: the
        op's config, the resources it requires and a log; no inputs, no output handling."""
        from memodag.runtime.context import OpExecutionContext, Resources, RunLogger

        available = self.resources
        keys = step.op_def.required_resource_keys
        resources = Resources(
            **{k: available[k] for k in keys if available is not None and k in available}
        )
        return OpExecutionContext(
            step.config,
            resources,
            RunLogger(self.run_id, step.node.path, None),
            self.run_id,
            step.node.path,
            step.op_def,
            None,
            self.instance,
            0,
            step.node.tags,
        )

    def auto_code(self, step: ExecutionStep, upstream_schema: UpstreamSchema | None) -> str:
        """The code version of an AUTO_VERSION step: its plan on its inputs' schemas
        (``memodag.tables.auto_version``), worked out once per op, config and schemas."""
        inputs: dict[str, Any] = {}
        for spec in step.inputs:
            if not spec.upstream and not spec.collect:
                inputs[spec.name] = ("default", spec.default)
                continue
            if upstream_schema is None:
                return AUTO_PENDING
            texts = [upstream_schema(h) for h in spec.upstream]
            if SCHEMA_PENDING in texts:
                return AUTO_PENDING
            inputs[spec.name] = texts if spec.collect else texts[0]
        config_json = self._config_jsons.get(step.node.path)
        if config_json is None:
            config_json = self._config_jsons[step.node.path] = _config_json(step.config)
        key = (id(step.op_def), config_json, canonical_json(inputs_key(inputs)))
        found = self._auto_codes.get(key)
        if found is None:
            from memodag.tables.auto_version import plan_version

            found = plan_version(
                step.op_def, self._op_context(step), inputs, self._function_version
            )
            self._auto_codes[key] = found
        return found

    def _function_version(self, fn: Any) -> str:
        """A Python function inside an AUTO_VERSION plan, by its source (helpers included)."""
        from memodag.versioning.source_hash import SourceHashVersionStrategy

        strategy = self.strategy
        if not isinstance(strategy, SourceHashVersionStrategy):
            if self._udf_strategy is None:
                self._udf_strategy = SourceHashVersionStrategy()
            strategy = self._udf_strategy
        return strategy.function_version(fn)

    def recipe(
        self, step: ExecutionStep, upstream_version: Callable[[StepOutputHandle], str | None]
    ) -> Recipe | None:
        """The step's recipe, or None when its op or an input has no version."""
        found = self.step_version(step, upstream_version)
        return None if found is None else found.recipe()

    def step_version(
        self,
        step: ExecutionStep,
        upstream_version: Callable[[StepOutputHandle], str | None],
        upstream_schema: UpstreamSchema | None = None,
    ) -> StepVersion | None:
        """The step's version and what it is made of (a ``Recipe`` only when asked: a memoized
        step needs the version alone), or None when its op or an input has no version.
        ``upstream_schema`` tells an input table's schema (AUTO_VERSION ops need it)."""
        # code, config and resources are per node (clones share them): worked out and hashed
        # once per node, so a step hashes only its inputs on top
        mapped = bool(step.mapping_keys)
        node_key = (step.node.path, mapped)
        node = self._nodes.get(node_key)
        if node is None:
            if node_key in self._nodes:
                return None
            if is_auto_version(step.op_def):
                # the code version depends on the inputs' schemas: per step, not per node
                node = self._node_parts(step, mapped, self.auto_code(step, upstream_schema))
            else:
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

    def _node_parts(
        self, step: ExecutionStep, mapped: bool, code: str | None = None
    ) -> _NodeParts | None:
        config_json = self._config_jsons.get(step.node.path)
        if config_json is None:
            config_json = self._config_jsons[step.node.path] = _config_json(step.config)
        # nodes of one op with one config (an op called many times) share everything here
        shared_key = (id(step.op_def), config_json, mapped, step.node.tags.get(STAGE_TAG), code)
        if shared_key in self._shared_nodes:
            return self._shared_nodes[shared_key]
        found = self._shared_nodes[shared_key] = self._new_node_parts(
            step, mapped, config_json, code
        )
        return found

    def _new_node_parts(
        self, step: ExecutionStep, mapped: bool, config_json: str, code: str | None = None
    ) -> _NodeParts | None:
        if code is None:
            code = self.op_version(step.op_def, step.config, config_json)
        if code is None:
            return None
        resources = tuple(
            (k, self.resource_version(k)) for k in sorted(step.op_def.required_resource_keys)
        )
        # once per op and config (nodes sharing them share this): it reads no input
        data = self.data_version(step)
        # parts only for unmapped steps: thousands of clones would repeat the same list
        parts = () if mapped else self.code_parts(step.op_def)
        outputs = _outputs_part(step.op_def)
        stage = step.node.tags.get(STAGE_TAG)
        if stage:
            # the stage a table lands in is where its output is stored: an op moved to another
            # stage must write there, never be served from the old one
            outputs += f";stage={stage}"
        h = hashlib.sha256()
        for part in _version_parts(code, config_json, resources, (), data, outputs):
            _feed(h, part)
        return _NodeParts(code, config_json, resources, parts, h, data, outputs)

    def code_parts(self, op_def: Any) -> tuple[tuple[str, str], ...]:
        """``(kind name, digest)`` pairs behind a strategy-computed code version, if it tells."""
        if (
            op_def.version is not None
            or not hasattr(self.strategy, "explain_op")
            or is_auto_version(op_def)
        ):
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
        return sorted(
            n.path for n in nodes if n.op_def.version is None and not is_auto_version(n.op_def)
        )


def inputs_key(inputs: Mapping[str, Any]) -> list[Any]:
    """AUTO_VERSION inputs as a JSON-able cache key (a default by its content hash)."""
    return [
        [name, ["default", _default_version(v[1])] if isinstance(v, tuple) else v]
        for name, v in inputs.items()
    ]


def _outputs_part(op_def: Any) -> str:
    """An op's declared outputs in order, each with its kind (``dynamic`` or ``single``; ``?``
    when optional): a body returning a tuple fills outputs in declaration order, so the order
    decides which value is stored under which name, and the kind how it is stored."""
    return ",".join(
        f"{name}:{'dynamic' if out.is_dynamic else 'single'}{'' if out.is_required else '?'}"
        for name, out in op_def.outs.items()
    )


def _name(obj: Any) -> str:
    """How an error names a function or a strategy (by its class)."""
    return getattr(obj, "__name__", None) or type(obj).__name__


def _checked(version: Any, what: str, strategy: Any, method: str) -> str:
    """A strategy's answer, refused unless it is a non-empty string (versions are hashed, so
    any text works; ``None`` or a number is a strategy bug that would pass unnoticed)."""
    if isinstance(version, str) and version.strip():
        return version
    raise MemoizationError(
        f"version strategy {_name(strategy)}.{method} returned {version!r} for {what}: a "
        "version must be a non-empty string (any text: it is hashed, never used as a path)"
    )


def _json_value(value: Any) -> Any:
    """``value`` if it is JSON (a tuple counts as a list); raises TypeError naming what is not."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int | float) and type(value) in (int, float):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{value!r} is not a JSON number")
        return value
    if isinstance(value, list | tuple) and type(value) in (list, tuple):
        return [_json_value(v) for v in value]
    if isinstance(value, dict) and type(value) is dict:
        for key in value:
            if type(key) is not str:
                raise TypeError(f"key {key!r} of type {type(key).__name__} is not a str")
        return {k: _json_value(v) for k, v in value.items()}
    raise TypeError(f"{type(value).__module__}.{type(value).__qualname__} is not JSON")


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
