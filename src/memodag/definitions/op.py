"""``@op`` and ``OpDefinition``: an op's function, inputs, outputs, config schema and version.

Declaring an op runs no user code. Calling an op inside a ``@job``/``@graph`` body records a node
(see ``composition``); calling it anywhere else runs its body directly, for unit tests.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, overload

from memodag.definitions.config import ConfigType, normalize_schema
from memodag.definitions.io import (
    DEFAULT_OUTPUT,
    DynamicOutput,
    In,
    Out,
    Output,
    RetryPolicy,
    check_name,
)
from memodag.errors import DefinitionError, StepExecutionError

_CONTEXT_PARAM_NAMES = ("context", "_context", "ctx")


@dataclass(frozen=True, eq=False)
class OpDefinition:
    """An op: a function with named inputs and outputs. Build one with ``@op``.

    Invariant: ``input_names`` lists the function's parameters after ``context`` in order, and
    ``ins`` has exactly those keys; ``outs`` is non-empty and ordered as the body returns them.
    """

    name: str
    compute_fn: Callable[..., Any]
    ins: Mapping[str, In]
    outs: Mapping[str, Out]
    config_schema: Any = None
    config_type: ConfigType | None = None
    required_resource_keys: frozenset[str] = frozenset()
    version: str | None = None
    retry_policy: RetryPolicy | None = None
    tags: Mapping[str, str] = field(default_factory=dict)
    description: str | None = None
    takes_context: bool = False
    #: ``fn(context) -> JSON value``: what the op reads outside memodag (a file or table named by
    #: config), hashed into its version (docs/versioning.md, "Declared data versions")
    data_version: Callable[[Any], Any] | None = None

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.ins)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.outs)

    @functools.cached_property
    def has_dynamic_output(self) -> bool:
        # asked for every step a run finishes: worked out once (outs never change)
        return any(o.is_dynamic for o in self.outs.values())

    def alias(self, name: str) -> PendingNode:
        """Use this op under another node name (to call it twice in one job)."""
        return PendingNode(self, check_name(name, "alias"), {})

    def tag(self, tags: Mapping[str, str]) -> PendingNode:
        """Use this op with extra tags on its node."""
        return PendingNode(self, None, dict(tags))

    def with_retry_policy(self, policy: RetryPolicy) -> OpDefinition:
        return replace(self, retry_policy=policy)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from memodag.definitions import composition

        builder = composition.current_builder()
        if builder is not None:
            return builder.invoke(self, None, {}, args, kwargs)
        return invoke_directly(self, args, kwargs)

    def __repr__(self) -> str:
        return f"<op {self.name}>"


@dataclass(frozen=True)
class PendingNode:
    """An op (or graph) to be placed in a job under an alias and/or extra tags."""

    node_def: Any
    alias_name: str | None
    tags: Mapping[str, str]

    def alias(self, name: str) -> PendingNode:
        return replace(self, alias_name=check_name(name, "alias"))

    def tag(self, tags: Mapping[str, str]) -> PendingNode:
        return replace(self, tags={**self.tags, **tags})

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from memodag.definitions import composition

        builder = composition.current_builder()
        if builder is None:
            raise DefinitionError(
                f"{self.alias_name or self.node_def.name}: an aliased or tagged node can only be "
                "called inside a @job or @graph body"
            )
        return builder.invoke(self.node_def, self.alias_name, self.tags, args, kwargs)


def _normalize_outs(out: Any, op_name: str) -> dict[str, Out]:
    if out is None:
        return {DEFAULT_OUTPUT: Out()}
    if isinstance(out, Out):
        return {DEFAULT_OUTPUT: out}
    if isinstance(out, Mapping):
        if not out:
            raise DefinitionError(f"op '{op_name}': out={{}} declares no outputs")
        for key, value in out.items():
            check_name(key, f"op '{op_name}' output")
            if not isinstance(value, Out):
                raise DefinitionError(
                    f"op '{op_name}': output '{key}' must be an Out(...), got {value!r}"
                )
        return dict(out)
    raise DefinitionError(f"op '{op_name}': out= takes an Out or a dict of Out, got {out!r}")


def _build_ins(
    fn: Callable[..., Any], ins: Mapping[str, In] | None, op_name: str
) -> tuple[bool, dict[str, In]]:
    params = list(inspect.signature(fn).parameters.values())
    takes_context = bool(params) and params[0].name in _CONTEXT_PARAM_NAMES
    if takes_context:
        params = params[1:]
    for p in params:
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            raise DefinitionError(
                f"op '{op_name}': *args/**kwargs parameters are not supported as inputs"
            )
        if p.kind is p.POSITIONAL_ONLY:
            # inputs are passed by name, so a positional-only parameter could never receive one
            raise DefinitionError(
                f"op '{op_name}': input '{p.name}' is positional-only; remove the '/' from the signature"
            )
    names = [p.name for p in params]
    ins = dict(ins or {})
    unknown = [k for k in ins if k not in names]
    if unknown:
        raise DefinitionError(
            f"op '{op_name}': ins names {unknown} which are not parameters of the function "
            f"(parameters: {names})"
        )
    result: dict[str, In] = {}
    for p in params:
        declared = ins.get(p.name, In())
        if p.default is not p.empty and not declared.has_default:
            declared = replace(declared, default_value=p.default)
        result[p.name] = declared
    return takes_context, result


@overload
def op(fn: Callable[..., Any]) -> OpDefinition: ...
@overload
def op(
    fn: None = None,
    *,
    name: str | None = None,
    ins: Mapping[str, In] | None = None,
    out: Out | Mapping[str, Out] | None = None,
    config_schema: Any = None,
    required_resource_keys: set[str] | frozenset[str] | None = None,
    version: str | None = None,
    retry_policy: RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    data_version: Callable[[Any], Any] | None = None,
) -> Callable[[Callable[..., Any]], OpDefinition]: ...


def op(
    fn: Callable[..., Any] | None = None,
    *,
    name: str | None = None,
    ins: Mapping[str, In] | None = None,
    out: Out | Mapping[str, Out] | None = None,
    config_schema: Any = None,
    required_resource_keys: set[str] | frozenset[str] | None = None,
    version: str | None = None,
    retry_policy: RetryPolicy | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    data_version: Callable[[Any], Any] | None = None,
) -> OpDefinition | Callable[[Callable[..., Any]], OpDefinition]:
    """Declare an op. Use bare (``@op``) or with arguments (``@op(out=..., config_schema=...)``).

    The function's first parameter may be ``context``; the other parameters are the inputs.
    Return a value (one output), a tuple (several outputs, in ``out`` order), or yield ``Output``s.

    ``data_version=fn``: ``fn(context)`` (the op's config, resources and log) returns a JSON
    value saying which version of outside data the op reads (a file's size and mtime, a table's
    last update); it is hashed into the op's version, so a change re-runs the op (memoization)
    and ``explain`` says so. It runs in the driver when the step is about to be decided.
    """

    def decorate(func: Callable[..., Any]) -> OpDefinition:
        op_name = check_name(name or func.__name__, "op")
        takes_context, op_ins = _build_ins(func, ins, op_name)
        if version is not None and not isinstance(version, str):
            raise DefinitionError(f"op '{op_name}': version must be a string, got {version!r}")
        if version is not None and not version.strip():
            raise DefinitionError(
                f"op '{op_name}': version={version!r} is empty; give a non-empty string "
                "(any text: versions are hashed) or leave version out to use the job's "
                "version_strategy"
            )
        if data_version is not None and not callable(data_version):
            raise DefinitionError(
                f"op '{op_name}': data_version must be a function of the op's context returning "
                f"a JSON value, got {data_version!r}"
            )
        return OpDefinition(
            name=op_name,
            compute_fn=func,
            ins=op_ins,
            outs=_normalize_outs(out, op_name),
            config_schema=config_schema,
            config_type=normalize_schema(config_schema, f"op '{op_name}' config_schema"),
            required_resource_keys=frozenset(required_resource_keys or ()),
            version=version,
            retry_policy=retry_policy,
            tags=dict(tags or {}),
            description=description or inspect.getdoc(func),
            takes_context=takes_context,
            data_version=data_version,
        )

    if fn is not None:
        return decorate(fn)
    return decorate


@dataclass(frozen=True)
class YieldedOutput:
    """One value an op body produced, normalized: output name, value, piece key (dynamic only)."""

    output_name: str
    value: Any
    mapping_key: str | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


def iterate_outputs(op_def: OpDefinition, result: Any, step_key: str) -> Iterator[YieldedOutput]:
    """Normalize whatever an op body returned or yielded into ``YieldedOutput``s.

    Raises ``StepExecutionError`` naming the step when the shape does not match ``outs``.
    """
    outs = op_def.outs
    if inspect.isgenerator(result):
        if _is_generator_function(op_def.compute_fn):
            for item in result:
                yield _one(op_def, item, step_key, None)
        else:
            yield from _returned_generator(op_def, result, step_key)
        return
    if isinstance(result, DynamicOutput):
        # as in Dagster: one returned piece is almost always a missing list or a `return` meant
        # as `yield`, and would silently make a fan-out of one
        raise StepExecutionError(
            step_key,
            f"op '{op_def.name}' returned a single DynamicOutput (mapping_key "
            f"{result.mapping_key!r}); a DynamicOut op yields its pieces "
            "(`yield DynamicOutput(...)`) or returns a list of them",
        )
    if isinstance(result, Output):
        yield _one(op_def, result, step_key, None)
        return
    if len(outs) == 1:
        (only_name,) = outs
        if outs[only_name].is_dynamic:
            if not isinstance(result, list | tuple):
                raise StepExecutionError(
                    step_key,
                    f"dynamic output '{only_name}' expects DynamicOutput values (yielded or returned as a list), got {type(result).__name__}",
                )
            for item in result:
                yield _one(op_def, item, step_key, only_name)
            return
        yield YieldedOutput(only_name, result)
        return
    if result is None and not any(o.is_required for o in outs.values()):
        return
    if not isinstance(result, tuple) or len(result) != len(outs):
        raise StepExecutionError(
            step_key,
            f"op '{op_def.name}' has {len(outs)} outputs {list(outs)} and must return a tuple of that "
            f"length or yield Output(value, name); got {_describe(result)}",
        )
    for name, item in zip(outs, result, strict=True):
        if isinstance(item, Output):
            if item.output_name != name:
                raise StepExecutionError(
                    step_key,
                    f"returned Output named '{item.output_name}' in the position of output '{name}'",
                )
            yield YieldedOutput(name, item.value, None, item.metadata)
        else:
            yield YieldedOutput(name, item)


def _is_generator_function(fn: Any) -> bool:
    # a decorator wrapping a generator function (functools.wraps) still makes a generator op
    return inspect.isgeneratorfunction(inspect.unwrap(fn))


def _returned_generator(
    op_def: OpDefinition, result: Any, step_key: str
) -> Iterator[YieldedOutput]:
    """A generator object *returned* by a plain function (``return (f(x) for x in xs)``).

    A stream of ``Output``/``DynamicOutput`` is accepted as from a generator op (a wrapper that
    returns its generator op's generator); anything else is almost always a generator expression
    meant as a value, which no io manager can store, so say so instead of blaming its items.
    """
    produced = False
    for item in result:
        if not isinstance(item, Output | DynamicOutput):
            seen = f"it produced a value of type {type(item).__name__}"
            raise StepExecutionError(step_key, _returned_generator_message(op_def, seen))
        produced = True
        yield _one(op_def, item, step_key, None)
    if not produced and any(o.is_required and not o.is_dynamic for o in op_def.outs.values()):
        raise StepExecutionError(step_key, _returned_generator_message(op_def, "it was empty"))


def _returned_generator_message(op_def: OpDefinition, seen: str) -> str:
    return (
        f"op '{op_def.name}' returned a generator object (e.g. a generator expression), but its "
        f"function is not a generator, and {seen}. A generator cannot be stored as an output: "
        "to store the values as one output, return a list (`return list(...)`); to produce "
        "outputs one by one, make the op itself a generator that yields them "
        "(`yield Output(value, 'name')`, or `yield DynamicOutput(value, mapping_key=...)`)"
    )


def _describe(value: Any) -> str:
    if isinstance(value, tuple):
        return f"a tuple of length {len(value)}"
    return type(value).__name__


def _one(op_def: OpDefinition, item: Any, step_key: str, default_name: str | None) -> YieldedOutput:
    if isinstance(item, DynamicOutput):
        name = item.output_name
        if name == DEFAULT_OUTPUT and default_name:
            name = default_name
        out = op_def.outs.get(name)
        if out is None or not out.is_dynamic:
            raise StepExecutionError(
                step_key,
                f"yielded DynamicOutput for '{name}', which is not a DynamicOut of op '{op_def.name}' (outputs: {list(op_def.outs)})",
            )
        return YieldedOutput(name, item.value, item.mapping_key, item.metadata)
    if isinstance(item, Output):
        out = op_def.outs.get(item.output_name)
        if out is None:
            raise StepExecutionError(
                step_key,
                f"yielded Output '{item.output_name}', which op '{op_def.name}' does not declare (outputs: {list(op_def.outs)})",
            )
        if out.is_dynamic:
            raise StepExecutionError(
                step_key,
                f"output '{item.output_name}' is a DynamicOut: yield DynamicOutput(value, mapping_key=...)",
            )
        return YieldedOutput(item.output_name, item.value, None, item.metadata)
    raise StepExecutionError(
        step_key,
        f"op '{op_def.name}' yielded {type(item).__name__}; a generator op yields Output or DynamicOutput objects",
    )


def invoke_directly(op_def: OpDefinition, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Run an op's body outside a run, for unit tests: ``my_op(build_op_context(...), x=1)``."""
    from memodag.runtime.context import OpExecutionContext, build_op_context

    args_list = list(args)
    context = None
    if args_list and isinstance(args_list[0], OpExecutionContext):
        context = args_list.pop(0)
    context_param = _context_param_name(op_def)
    if context_param is not None and context_param in kwargs:
        context = kwargs.pop(context_param)
    if op_def.takes_context and context is None:
        context = build_op_context()
    if context is not None and op_def.takes_context:
        context = context.for_op(op_def)
    bound = _bind_inputs(op_def, args_list, kwargs)
    result = (
        op_def.compute_fn(context, **bound) if op_def.takes_context else op_def.compute_fn(**bound)
    )
    produced = list(iterate_outputs(op_def, result, op_def.name))
    if op_def.has_dynamic_output:
        # a static output beside the dynamic ones comes back as an Output (it has no piece key)
        return [
            DynamicOutput(p.value, p.mapping_key, p.output_name)
            if p.mapping_key is not None
            else Output(p.value, p.output_name)
            for p in produced
        ]
    if len(op_def.outs) == 1:
        return produced[0].value if produced else None
    by_name = {p.output_name: p.value for p in produced}
    return tuple(by_name.get(n) for n in op_def.outs)


def _context_param_name(op_def: OpDefinition) -> str | None:
    if not op_def.takes_context:
        return None
    return next(iter(inspect.signature(op_def.compute_fn).parameters))


def _bind_inputs(op_def: OpDefinition, args: list[Any], kwargs: dict[str, Any]) -> dict[str, Any]:
    names = op_def.input_names
    if len(args) > len(names):
        raise DefinitionError(
            f"op '{op_def.name}' takes {len(names)} input(s) {list(names)}, got {len(args)} positional arguments"
        )
    bound = dict(zip(names, args, strict=False))
    for key, value in kwargs.items():
        if key not in op_def.ins:
            raise DefinitionError(
                f"op '{op_def.name}' has no input '{key}' (inputs: {list(names)})"
            )
        if key in bound:
            raise DefinitionError(f"op '{op_def.name}': input '{key}' given twice")
        bound[key] = value
    for name, spec in op_def.ins.items():
        if name not in bound:
            if spec.has_default:
                bound[name] = spec.default_value
            else:
                raise DefinitionError(f"op '{op_def.name}': input '{name}' was not given")
    return bound
