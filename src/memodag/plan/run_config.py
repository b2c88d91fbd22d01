"""Run config: merge job defaults, validate against every op/resource schema, report all problems.

Shape: ``{"ops": {node: {"config": ..., "ops": {...nested graph nodes}}}, "resources": {key:
{"config": ...}}, "execution": {"config": ...}}``; ``solids`` is accepted for ``ops``. Pure: reads
only the job definition and the given dicts.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memodag.definitions.composition import GraphDefinition
from memodag.definitions.config import (
    MAX_CONFIG_DEPTH,
    NO_DEFAULT,
    check_config_limits,
    config_is_required,
    validate_config,
)
from memodag.definitions.executor import ExecutorDefinition, resolve_executor
from memodag.definitions.secrets import contains_env_var
from memodag.errors import ConfigError

if TYPE_CHECKING:
    from memodag.definitions.job import JobDefinition

_TOP_KEYS = ("ops", "solids", "resources", "execution", "loggers", "cache_validation")
#: ``cache_validation`` modes (``versioning.fresh_input`` says what each means)
CACHE_VALIDATION_MODES = (
    "normal",
    "ignore_fresh_input",
    "force_fresh_input",
    "force_cache_invalid",
)


@dataclass(frozen=True)
class ResolvedRunConfig:
    """Processed config: per op path, per resource key, and for the executor."""

    op_config: Mapping[str, Any]
    resource_config: Mapping[str, Any]
    execution: Mapping[str, Any] = field(default_factory=dict)
    raw: Mapping[str, Any] = field(default_factory=dict)
    executor_def: ExecutorDefinition | None = None  # the run's; its config validated below
    executor_config: Mapping[str, Any] = field(default_factory=dict)
    #: how stored outputs of fresh input count (docs/tables.md, "External tables and fresh input")
    cache_validation: str = "normal"


def load_run_config_files(paths: Sequence[str | Path]) -> dict[str, Any]:
    """Read and deep-merge YAML run config files (later files win).

    A file nested deeper than ``MAX_CONFIG_DEPTH`` or expanding (aliases written out) beyond
    ``MAX_CONFIG_SIZE`` is refused with a ``ConfigError`` before it is built in memory.
    """
    import yaml

    merged: dict[str, Any] = {}
    for path in paths:
        p = Path(path)
        if not p.exists():
            raise ConfigError([f"{p}: config file not found"], "config file")
        try:
            data = _load_yaml(p.read_text(), str(p)) or {}
        except yaml.YAMLError as exc:
            raise ConfigError([f"{p}: not valid YAML: {exc}"], "config file") from exc
        if not isinstance(data, Mapping):
            raise ConfigError(
                [f"{p}: expected a mapping at the top, got {type(data).__name__}"], "config file"
            )
        merged = deep_merge(merged, data)
    return merged


def _load_yaml(text: str, where: str) -> Any:
    """``yaml.safe_load`` with the config limits applied to the parsed nodes, before any object
    is built: an alias bomb is refused in milliseconds, not after gigabytes."""
    import yaml

    class LimitedLoader(yaml.SafeLoader):
        depth = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            self.depth += 1
            if self.depth > MAX_CONFIG_DEPTH + 1:  # a scalar is one level below its container
                raise ConfigError(
                    [
                        f"{where}: nested more than {MAX_CONFIG_DEPTH} levels deep (mappings and "
                        f"lists inside each other, line {self.peek_event().start_mark.line + 1}); "
                        "flatten it"
                    ],
                    "config file",
                )
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    loader = LimitedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        try:
            check_config_limits(node, where, _yaml_parts)
        except ConfigError as exc:
            raise ConfigError(exc.errors, "config file") from None
        return loader.construct_document(node)
    except RecursionError:
        raise ConfigError(
            [f"{where}: nested too deeply to read (the limit is {MAX_CONFIG_DEPTH} levels)"],
            "config file",
        ) from None
    finally:
        loader.dispose()


def _yaml_parts(node: Any) -> Any:
    """A parsed YAML node as ``check_config_limits`` sees it: a scalar's size, or the nodes a
    sequence or mapping holds (an alias is the very node it names, so it is counted expanded;
    merge keys are counted as the mappings they merge)."""
    import yaml

    if isinstance(node, yaml.ScalarNode):
        return 1 + len(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return list(node.value)


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def _resolve_execution(
    job: JobDefinition, execution: Mapping[str, Any], errors: list[str]
) -> tuple[ExecutorDefinition | None, Mapping[str, Any]]:
    """The run's executor definition and its validated config (problems go to ``errors`` with
    the rest of the run config's; the executor is not created)."""
    try:
        definition, config, path = resolve_executor(job.executor_def, execution)
    except ConfigError as exc:
        errors.extend(exc.errors)
        return None, {}
    value, problems = definition.validated_config(config, path)
    errors.extend(problems)
    return definition, value


def resolve_run_config(
    job: JobDefinition, run_config: Mapping[str, Any] | None
) -> ResolvedRunConfig:
    """Validate ``run_config`` (over the job's defaults) and return it processed, or raise
    ``ConfigError`` listing every problem with its path."""
    if run_config is not None and not isinstance(run_config, Mapping):
        raise ConfigError([f"run config: expected a mapping, got {type(run_config).__name__}"])
    check_config_limits(run_config)
    check_config_limits(job.config, f"job '{job.name}' default config")
    raw = deep_merge(job.config or {}, run_config or {})
    errors: list[str] = []
    for key in raw:
        if key not in _TOP_KEYS:
            errors.append(
                f"{key}: unknown top-level key; expected one of ops, resources, execution, "
                "cache_validation"
            )
    cache_validation = raw.get("cache_validation", "normal")
    if cache_validation not in CACHE_VALIDATION_MODES:
        errors.append(
            f"cache_validation: {cache_validation!r} is not a mode; expected one of "
            + ", ".join(CACHE_VALIDATION_MODES)
        )
        cache_validation = "normal"
    ops_section = raw.get("ops")
    if "solids" in raw:
        if ops_section is not None:
            errors.append("solids: give either 'ops' or the legacy 'solids', not both")
        ops_section = raw["solids"]
    ops_name = "solids" if "solids" in raw and "ops" not in raw else "ops"
    op_config: dict[str, Any] = {}
    _resolve_graph(job.graph, ops_section or {}, ops_name, "", op_config, errors)
    resource_config = _resolve_resources(job, raw.get("resources") or {}, errors)
    execution = raw.get("execution") or {}
    if not isinstance(execution, Mapping):
        errors.append(f"execution: expected a mapping, got {type(execution).__name__}")
        execution = {}
    executor_def, executor_config = _resolve_execution(job, execution, errors)
    if errors:
        raise ConfigError(errors)
    return ResolvedRunConfig(
        op_config,
        resource_config,
        dict(execution),
        raw,
        executor_def,
        executor_config,
        cache_validation,
    )


def _resolve_graph(
    graph: GraphDefinition,
    section: Any,
    path: str,
    prefix: str,
    out: dict[str, Any],
    errors: list[str],
) -> None:
    if not isinstance(section, Mapping):
        errors.append(f"{path}: expected a mapping of node names, got {type(section).__name__}")
        section = {}
    for key in section:
        if key not in graph.nodes:
            errors.append(
                f"{path}.{key}: no node named '{key}' in {graph.name}; nodes are {sorted(graph.nodes)}"
            )
    for name, node in graph.nodes.items():
        node_path = f"{path}.{name}"
        node_section = section.get(name)
        if node_section is None:
            node_section = {}
        if not isinstance(node_section, Mapping):
            errors.append(
                f"{node_path}: expected a mapping like {{config: ...}}, got {type(node_section).__name__}"
            )
            continue
        if isinstance(node.definition, GraphDefinition):
            # nested sections follow the spelling of the top level (``solids`` for legacy configs)
            inner_key = (
                "solids" if "solids" in node_section and "ops" not in node_section else "ops"
            )
            for key in node_section:
                if key != inner_key:
                    errors.append(
                        f"{node_path}.{key}: unknown key for graph node; expected '{inner_key}'"
                    )
            _resolve_graph(
                node.definition,
                node_section.get(inner_key) or {},
                f"{node_path}.{inner_key}",
                f"{prefix}{name}.",
                out,
                errors,
            )
            continue
        for key in node_section:
            if key != "config":
                errors.append(f"{node_path}.{key}: unknown key; expected 'config'")
        op_def = node.definition
        given = node_section.get("config", NO_DEFAULT)
        if given is NO_DEFAULT:
            if config_is_required(op_def.config_type):
                errors.append(
                    f"{node_path}.config: required by op '{op_def.name}' (schema {op_def.config_type.describe()})"
                )
                continue
            given = None
        value = validate_config(op_def.config_type, given, f"{node_path}.config", errors)
        if contains_env_var(value):
            errors.append(
                f"{node_path}.config: environment variables ({{env: NAME}}) are read in resource "
                f"config only; give op '{op_def.name}' the value (its config is part of its version)"
            )
        out[f"{prefix}{name}"] = value


def _resolve_resources(job: JobDefinition, section: Any, errors: list[str]) -> dict[str, Any]:
    if not isinstance(section, Mapping):
        errors.append(
            f"resources: expected a mapping of resource keys, got {type(section).__name__}"
        )
        return {}
    for key in section:
        if key not in job.resource_defs:
            errors.append(
                f"resources.{key}: no resource named '{key}'; resources are {sorted(job.resource_defs)}"
            )
    out: dict[str, Any] = {}
    for key, rdef in job.resource_defs.items():
        path = f"resources.{key}"
        entry = section.get(key) or {}
        if not isinstance(entry, Mapping):
            errors.append(
                f"{path}: expected a mapping like {{config: ...}}, got {type(entry).__name__}"
            )
            continue
        for k in entry:
            if k != "config":
                errors.append(f"{path}.{k}: unknown key; expected 'config'")
        if rdef.preset_config is not NO_DEFAULT:
            if "config" in entry:
                errors.append(
                    f"{path}.config: resource '{key}' is already configured with .configured(...)"
                )
            given = rdef.preset_config
        else:
            given = entry.get("config", NO_DEFAULT)
            if given is NO_DEFAULT:
                if rdef.config_type is not None and config_is_required(rdef.config_type):
                    errors.append(f"{path}.config: required (schema {rdef.config_type.describe()})")
                    continue
                given = None
        out[key] = validate_config(rdef.config_type, given, f"{path}.config", errors)
    return out
