"""What an op declares about its inputs and outputs, and the values its body yields.

Pure data: nothing here touches storage. ``Out`` names the io manager that stores the output and,
optionally, how it is serialized (a named format or a custom write/read pair).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from memodag.definitions.config import NO_DEFAULT
from memodag.errors import DefinitionError

T = TypeVar("T")

DEFAULT_IO_MANAGER_KEY = "io_manager"
DEFAULT_OUTPUT = "result"
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


#: the formats an ``Out`` or an io manager may name; storage/serializers.py implements each
SERIALIZER_NAMES = ("pickle", "json", "parquet", "auto")


def check_serializer_name(name: str) -> str:
    """``name`` if it names a built-in serializer; otherwise a ``DefinitionError`` saying what to
    write instead (checked here, where ``Out(serializer=...)`` is written, without storage)."""
    if name in SERIALIZER_NAMES:
        return name
    if name == "custom":
        raise DefinitionError(
            "serializer 'custom' is a write/read pair attached to an Out; "
            "it cannot be chosen by name: pass Out(write=..., read=...)"
        )
    raise DefinitionError(
        f"unknown serializer {name!r}; expected one of {sorted(SERIALIZER_NAMES)} "
        "or a Serializer instance"
    )


def check_name(name: str, what: str) -> str:
    """Names of ops, inputs, outputs and resources are identifiers (they appear in step keys and config)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DefinitionError(
            f"{what} name {name!r} is not valid: use letters, digits and '_', not starting with a digit"
        )
    return name


@dataclass(frozen=True)
class In:
    """An op input.

    Args:
        description: shown in docs and the CLI.
        default_value: used when nothing is wired to the input.
        metadata: free-form, passed to the io manager's ``load_input`` context.
    """

    description: str | None = None
    default_value: Any = NO_DEFAULT
    metadata: Mapping[str, Any] = field(default_factory=dict)

    @property
    def has_default(self) -> bool:
        return self.default_value is not NO_DEFAULT


@dataclass(frozen=True)
class Out:
    """An op output and where it is stored.

    Args:
        io_manager_key: resource key of the io manager that stores this output.
        serializer: a format name (``"pickle"``, ``"json"``, ``"parquet"``) or a ``Serializer``;
            ``None`` uses the io manager's default.
        write, read: a custom pair ``write(obj, file)`` / ``read(file) -> obj`` for this output only,
            used by file-based io managers instead of a named serializer.
        is_required: an optional output may be left unyielded; its consumers are skipped.
        early_cutoff: record this output's data hash and version its consumers by it, so a
            re-run that yields identical data does not invalidate them (``None``: the job's setting).
    """

    description: str | None = None
    io_manager_key: str = DEFAULT_IO_MANAGER_KEY
    serializer: Any = None
    write: Callable[[Any, Any], None] | None = None
    read: Callable[[Any], Any] | None = None
    is_required: bool = True
    metadata: Mapping[str, Any] = field(default_factory=dict)
    early_cutoff: bool | None = None

    def __post_init__(self) -> None:
        if (self.write is None) != (self.read is None):
            raise DefinitionError("Out(write=..., read=...) takes both functions or neither")
        if self.write is not None and self.serializer is not None:
            raise DefinitionError("Out takes either serializer= or a write=/read= pair, not both")
        if isinstance(self.serializer, str):
            check_serializer_name(self.serializer)  # an unknown name fails where it is written

    @property
    def is_dynamic(self) -> bool:
        return False


@dataclass(frozen=True)
class DynamicOut(Out):
    """An output that yields any number of pieces (``DynamicOutput``) found at run time."""

    @property
    def is_dynamic(self) -> bool:
        return True


@dataclass(frozen=True)
class Output(Generic[T]):
    """A value an op body returns or yields for a named output."""

    value: T
    output_name: str = DEFAULT_OUTPUT
    metadata: Mapping[str, Any] = field(default_factory=dict)


_MAPPING_KEY_RE = re.compile(r"^[A-Za-z0-9_]+$")


@dataclass(frozen=True)
class DynamicOutput(Generic[T]):
    """One piece of a dynamic output; ``mapping_key`` names the piece (``^[A-Za-z0-9_]+$``)."""

    value: T
    mapping_key: str
    output_name: str = DEFAULT_OUTPUT
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # refused where it is built, so the traceback points at the op's own line
        if not valid_mapping_key(self.mapping_key):
            raise DefinitionError(
                f"DynamicOutput(mapping_key={self.mapping_key!r}) for output "
                f"'{self.output_name}': a mapping key is a non-empty str of letters, digits and "
                "'_' only (^[A-Za-z0-9_]+$); it names the piece in step keys like 'op[key]'"
            )


def valid_mapping_key(key: object) -> bool:
    return isinstance(key, str) and bool(_MAPPING_KEY_RE.match(key))


class Backoff(enum.Enum):
    """How the delay between retries grows."""

    LINEAR = "linear"
    EXPONENTIAL = "exponential"


@dataclass(frozen=True)
class RetryPolicy:
    """Retry a failing step up to ``max_retries`` times, waiting ``delay`` seconds (grown by ``backoff``)."""

    max_retries: int = 1
    delay: float | None = None
    backoff: Backoff | None = None

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise DefinitionError(f"RetryPolicy.max_retries must be >= 0, got {self.max_retries}")

    def delay_for(self, attempt: int) -> float:
        """Seconds to wait before retry number ``attempt`` (1-based)."""
        if not self.delay:
            return 0.0
        if self.backoff is Backoff.EXPONENTIAL:
            return self.delay * (2 ** (attempt - 1))
        if self.backoff is Backoff.LINEAR:
            return self.delay * attempt
        return self.delay
