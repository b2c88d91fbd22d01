"""Config schemas and their validation: pure functions, no I/O.

A schema is written the way users write it (``{"dog_breed": str}``, ``Field(int, default_value=3)``,
``[str]``, a pydantic model class) and normalized once into a ``ConfigType``. Validation walks a
value, collects *every* problem with its dotted path, and returns the value with defaults filled.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from memodag.definitions.secrets import EnvVar, as_env_var, redact_text, with_type
from memodag.errors import ConfigError, DefinitionError


class _NoDefault:
    def __repr__(self) -> str:
        return "NO_DEFAULT"


NO_DEFAULT: Any = _NoDefault()


@dataclass(frozen=True)
class Field:
    """A config field with a type, an optional default and a description.

    A field with a default is optional; ``is_required=False`` without a default makes it optional
    and absent from the processed config when not given.
    """

    config_type: Any
    default_value: Any = NO_DEFAULT
    is_required: bool | None = None
    description: str | None = None

    @property
    def required(self) -> bool:
        if self.is_required is not None:
            return self.is_required
        return self.default_value is NO_DEFAULT


@dataclass(frozen=True)
class Noneable:
    """Accept ``None`` or a value of the inner type."""

    inner: Any


class ConfigType:
    """A normalized schema node. ``validate`` appends problems to ``errors`` and returns the value."""

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        raise NotImplementedError

    def describe(self) -> str:
        raise NotImplementedError


@dataclass(frozen=True)
class _Scalar(ConfigType):
    python_type: type

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        t = self.python_type
        ref = as_env_var(value)
        if ref is not None:  # resolved when the resource is built (definitions/secrets.py)
            return with_type(ref, t)
        ok = isinstance(value, t) and not (t is not bool and isinstance(value, bool))
        if t is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            shown = redact_text(value) if isinstance(value, str) else value
            errors.append(f"{path}: expected {t.__name__}, got {type(value).__name__} {shown!r}")
        return value

    def describe(self) -> str:
        return self.python_type.__name__


@dataclass(frozen=True)
class _Any(ConfigType):
    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        return value

    def describe(self) -> str:
        return "any"


@dataclass(frozen=True)
class _Array(ConfigType):
    inner: ConfigType

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        if not isinstance(value, list | tuple):
            errors.append(
                f"{path}: expected a list of {self.inner.describe()}, got {type(value).__name__}"
            )
            return value
        return [self.inner.validate(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]

    def describe(self) -> str:
        return f"[{self.inner.describe()}]"


@dataclass(frozen=True)
class _Noneable(ConfigType):
    inner: ConfigType

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        return None if value is None else self.inner.validate(value, path, errors)

    def describe(self) -> str:
        return f"{self.inner.describe()} | None"


@dataclass(frozen=True)
class _Enum(ConfigType):
    enum_type: type[enum.Enum]

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        if isinstance(value, self.enum_type):
            return value
        names = [m.name for m in self.enum_type]
        if isinstance(value, str) and value in names:
            return self.enum_type[value]
        errors.append(f"{path}: expected one of {names}, got {value!r}")
        return value

    def describe(self) -> str:
        return self.enum_type.__name__


@dataclass(frozen=True)
class _Defaulted(ConfigType):
    """A whole config given as ``Field(type, default_value=...)``: absent config means the default."""

    inner: ConfigType
    default_value: Any

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        return self.inner.validate(self.default_value if value is None else value, path, errors)

    def describe(self) -> str:
        return f"{self.inner.describe()} = {self.default_value!r}"


@dataclass(frozen=True)
class _ShapeField:
    config_type: ConfigType
    default_value: Any
    required: bool


@dataclass(frozen=True)
class _Shape(ConfigType):
    fields: Mapping[str, _ShapeField]

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        if value is None:
            value = {}
        if not isinstance(value, Mapping):
            errors.append(
                f"{path}: expected a mapping with fields {sorted(self.fields)}, got {type(value).__name__} {value!r}"
            )
            return value
        out: dict[str, Any] = {}
        for key in value:
            if key not in self.fields:
                errors.append(
                    f"{_join(path, key)}: unknown field; "
                    + (
                        f"expected one of {sorted(self.fields)}"
                        if self.fields
                        else "this takes no config"
                    )
                )
        for name, field in self.fields.items():
            sub = _join(path, name)
            if name in value:
                out[name] = field.config_type.validate(value[name], sub, errors)
            elif field.default_value is not NO_DEFAULT:
                out[name] = field.config_type.validate(field.default_value, sub, errors)
            elif field.required:
                errors.append(
                    f"{sub}: required field missing (expected {field.config_type.describe()})"
                )
            elif isinstance(field.config_type, _Shape):
                # an optional sub-section whose own fields all have defaults still gets them filled
                out[name] = field.config_type.validate({}, sub, errors)
        return out

    def describe(self) -> str:
        return (
            "{"
            + ", ".join(f"{k}: {f.config_type.describe()}" for k, f in self.fields.items())
            + "}"
        )

    @property
    def all_optional(self) -> bool:
        return all(
            not f.required or f.default_value is not NO_DEFAULT for f in self.fields.values()
        )


@dataclass(frozen=True)
class _Pydantic(ConfigType):
    model: type

    def validate(self, value: Any, path: str, errors: list[str]) -> Any:
        if isinstance(value, self.model):
            return value
        from pydantic import ValidationError

        try:
            return self.model.model_validate(value or {})  # type: ignore[attr-defined]
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"])
                errors.append(f"{_join(path, loc) if loc else path}: {err['msg']}")
            return value

    def describe(self) -> str:
        return self.model.__name__


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


_SCALARS = (str, int, float, bool)


def normalize_schema(schema: Any, where: str = "config_schema") -> ConfigType | None:
    """Turn a user-written schema into a ``ConfigType``; ``None`` means "takes no config".

    Raises ``DefinitionError`` for an unsupported schema or a default that does not match its type.
    """
    if schema is None:
        return None
    ctype = _normalize(schema, where)
    if isinstance(schema, Field) and schema.default_value is not NO_DEFAULT:
        _check_default(ctype, schema.default_value, where)
        return _Defaulted(ctype, schema.default_value)
    return ctype


def _check_default(ctype: ConfigType, default: Any, where: str) -> None:
    errors: list[str] = []
    ctype.validate(default, "default_value", errors)
    if errors:
        raise DefinitionError(f"{where}: the default does not match its type: {'; '.join(errors)}")


def _normalize(schema: Any, where: str) -> ConfigType:
    if isinstance(schema, ConfigType):
        return schema
    if isinstance(schema, Field):
        return _normalize(schema.config_type, where)
    if isinstance(schema, Noneable):
        return _Noneable(_normalize(schema.inner, where))
    if schema in _SCALARS:
        return _Scalar(schema)
    if schema is Any or schema is dict or schema is object:
        return _Any()
    if isinstance(schema, list):
        if len(schema) != 1:
            raise DefinitionError(
                f"{where}: a list schema holds exactly one element type, got {schema!r}"
            )
        return _Array(_normalize(schema[0], where))
    if isinstance(schema, Mapping):
        fields: dict[str, _ShapeField] = {}
        for key, sub in schema.items():
            if not isinstance(key, str):
                raise DefinitionError(f"{where}: field names must be strings, got {key!r}")
            inner = _normalize(sub, f"{where}.{key}")
            default = sub.default_value if isinstance(sub, Field) else NO_DEFAULT
            if default is not NO_DEFAULT:
                _check_default(inner, default, f"{where}.{key}")
            explicit = sub.is_required if isinstance(sub, Field) else None
            if default is NO_DEFAULT and explicit is None and isinstance(inner, _Noneable):
                # an absent Noneable field means None, as Dagster users expect
                default = None
            if explicit is not None:
                required = explicit
            else:
                # a sub-section whose own fields all have defaults may be left out entirely
                required = default is NO_DEFAULT and not (
                    isinstance(inner, _Shape) and inner.all_optional
                )
            fields[key] = _ShapeField(inner, default, required)
        return _Shape(fields)
    if isinstance(schema, type) and issubclass(schema, enum.Enum):
        return _Enum(schema)
    if (
        isinstance(schema, type)
        and hasattr(schema, "model_validate")
        and hasattr(schema, "model_fields")
    ):
        return _Pydantic(schema)
    raise DefinitionError(
        f"{where}: unsupported config schema {schema!r}; expected str/int/float/bool, a dict of "
        "fields, [type], Field(...), Noneable(...), an Enum or a pydantic model class"
    )


def validate_config(ctype: ConfigType | None, value: Any, path: str, errors: list[str]) -> Any:
    """Validate ``value`` against ``ctype`` (``None`` schema accepts only an absent config)."""
    if ctype is None:
        if value not in (None, {}):
            errors.append(f"{path}: this takes no config, got {value!r}")
        return None
    return ctype.validate(value, path, errors)


def config_is_required(ctype: ConfigType | None) -> bool:
    """Whether a config section must be written in run config (it has a field with no default)."""
    if ctype is None or isinstance(ctype, _Any | _Noneable | _Defaulted):
        return False
    if isinstance(ctype, _Shape):
        return not ctype.all_optional
    return not isinstance(ctype, _Pydantic)


def config_to_plain(value: Any) -> Any:
    """A JSON-able form of a processed config, for hashing and for events (an ``EnvVar`` is
    its reference ``{"env": name}``, never the variable's value)."""
    if isinstance(value, EnvVar):
        return value.to_config()
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if isinstance(value, enum.Enum):
        return value.name
    if isinstance(value, Mapping):
        return {str(k): config_to_plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [config_to_plain(v) for v in value]
    return value


#: how deep a config may nest (a mapping or list in another counts one level); far beyond any
#: real config, and far below what the recursive code that reads a config can take
MAX_CONFIG_DEPTH = 100
#: how large a config may be once every shared part (a YAML alias, a dict referenced twice) is
#: expanded: each key, value and container counts 1, each character of a string 1 more. Bounds
#: what recording the run writes (about that many bytes of JSON) however small the YAML was.
MAX_CONFIG_SIZE = 10_000_000


def check_config_limits(
    value: Any, what: str = "run config", parts: Callable[[Any], Any] | None = None
) -> None:
    """Raise ``ConfigError`` if ``value`` nests deeper than ``MAX_CONFIG_DEPTH``, expands to more
    than ``MAX_CONFIG_SIZE`` or contains itself; quick however large its expansion would be.

    ``parts(item)`` gives a container's children as a list, or a leaf's size as an int (default:
    mappings, lists and tuples are containers); a parser passes its own to check a document
    before building it. Each distinct container is walked once (the size of a shared one is
    remembered); the recursion stops at ``MAX_CONFIG_DEPTH`` frames, far inside Python's limit.
    """
    parts = parts or _python_parts
    sizes: dict[int, int] = {}
    on_path: set[int] = set()

    def size_of(children: list[Any], depth: int) -> int:
        size = 1
        for item in children:
            kind = type(item)
            if kind is str:  # the common leaves first, without a call
                size += 1 + len(item)
            elif kind in _PLAIN_LEAVES:
                size += 1
            else:
                key = id(item)
                known = sizes.get(key)
                if known is None:
                    found = parts(item)
                    if not isinstance(found, list):
                        size += found
                        continue
                    if key in on_path:
                        raise ConfigError(
                            [f"{what}: contains itself (a recursive YAML alias?)"], what
                        )
                    if depth >= MAX_CONFIG_DEPTH:
                        raise ConfigError(
                            [
                                f"{what}: nested more than {MAX_CONFIG_DEPTH} levels deep "
                                "(mappings and lists inside each other); flatten it"
                            ],
                            what,
                        )
                    on_path.add(key)
                    known = size_of(found, depth + 1)
                    on_path.discard(key)
                    sizes[key] = known
                size += known
            if size > MAX_CONFIG_SIZE:
                raise ConfigError(
                    [
                        f"{what}: expands to more than {MAX_CONFIG_SIZE:,} values and characters "
                        "once shared parts (YAML aliases, objects referenced twice) are written "
                        "out in full; make it smaller"
                    ],
                    what,
                )
        return size

    top = parts(value)
    if isinstance(top, list):
        on_path.add(id(value))
        size_of(top, 1)


_PLAIN_LEAVES = frozenset((int, float, bool, type(None)))


def _python_parts(item: Any) -> Any:
    if isinstance(item, Mapping):
        return [part for pair in item.items() for part in pair]
    if isinstance(item, list | tuple):
        return list(item)
    return 1 + len(item) if isinstance(item, str | bytes) else 1
