"""Secrets in config: environment-variable references and password masking. Pure, no I/O
besides reading ``os.environ`` when a reference is resolved.

A config value ``{"env": "NAME"}`` (or ``EnvVar("NAME")`` in Python) stands for the variable's
value. It stays a reference everywhere config is stored, hashed or shown, and is replaced by the
value only when a resource is built (docs/config.md). A password written in a literal URL is
replaced by ``***`` wherever run config is stored or shown; the value itself is used unmasked.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from memodag.errors import ConfigError

#: what a masked password reads as
MASK = "***"


@dataclass(frozen=True)
class EnvVar:
    """A config value read from the environment variable ``name`` when the resource using it is
    built; stored and shown as ``{"env": name}``. In YAML write ``url: {env: MEMODAG_PG_URL}``.

    Accepted where a resource's config field is a ``str``, ``int``, ``float`` or ``bool`` (the
    variable's text is converted to the field's type).
    """

    name: str
    #: the field's type, set by validation; the value is converted to it on resolution
    python_type: type = field(default=str, compare=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError([f"EnvVar: expected a variable name, got {self.name!r}"], "EnvVar")

    def to_config(self) -> dict[str, str]:
        """The reference as written in config files."""
        return {"env": self.name}


def as_env_var(value: Any) -> EnvVar | None:
    """``value`` as an ``EnvVar`` when it is one or is written ``{"env": "NAME"}``, else None."""
    if isinstance(value, EnvVar):
        return value
    if (
        isinstance(value, Mapping)
        and len(value) == 1
        and isinstance(value.get("env"), str)
        and value["env"]
    ):
        return EnvVar(value["env"])
    return None


def contains_env_var(value: Any) -> bool:
    """Whether a processed config holds an ``EnvVar`` anywhere."""
    if isinstance(value, EnvVar):
        return True
    if isinstance(value, Mapping):
        return any(contains_env_var(v) for v in value.values())
    if isinstance(value, list | tuple):
        return any(contains_env_var(v) for v in value)
    return False


def resolve_env_vars(value: Any, path: str) -> Any:
    """``value`` with every ``EnvVar`` replaced by its variable's value, converted to the field's
    type. Raises ``ConfigError`` naming each unset or unconvertible variable and its field."""
    if not contains_env_var(value):
        return value
    errors: list[str] = []
    resolved = _resolve(value, path, errors)
    if errors:
        raise ConfigError(errors, "config from environment variables")
    return resolved


def _resolve(value: Any, path: str, errors: list[str]) -> Any:
    if isinstance(value, EnvVar):
        text = os.environ.get(value.name)
        if text is None:
            errors.append(
                f"{path}: environment variable {value.name} is not set (the config says "
                f"{{env: {value.name}}}); set it, or give the value in the config"
            )
            return None
        return _convert(text, value, path, errors)
    if isinstance(value, Mapping):
        return {k: _resolve(v, f"{path}.{k}", errors) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_resolve(v, f"{path}[{i}]", errors) for i, v in enumerate(value)]
    return value


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def _convert(text: str, ref: EnvVar, path: str, errors: list[str]) -> Any:
    kind = ref.python_type
    if kind is str:
        return text
    if kind is bool and text.strip().lower() in _TRUE | _FALSE:
        return text.strip().lower() in _TRUE
    if kind in (int, float):
        try:
            return kind(text.strip())
        except ValueError:
            pass
    errors.append(
        f"{path}: environment variable {ref.name} must hold a {kind.__name__}, "
        f"got {redact_text(text)!r}"
    )
    return None


def with_type(ref: EnvVar, python_type: type) -> EnvVar:
    """``ref`` converting to ``python_type`` when resolved."""
    return ref if ref.python_type is python_type else replace(ref, python_type=python_type)


# -- masking --------------------------------------------------------------------------------------

_KEYWORD_PASSWORD = re.compile(r"(?i)(password\s*=\s*)('[^']*'|\S+)")
_QUERY_PASSWORD = re.compile(r"(?i)((?:^|&)password=)[^&]*")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***`` (``user:pw@host``, ``?password=``, or the
    ``password=`` of a libpq keyword string)."""
    if "://" not in url:
        return _KEYWORD_PASSWORD.sub(rf"\g<1>{MASK}", url)
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL after all (a bad port): mask what looks like credentials
        return re.sub(r"(://[^:/@\s]*):[^@/\s]*@", rf"\1:{MASK}@", url)
    if password is None and not _QUERY_PASSWORD.search(parts.query):
        return url  # urlunsplit would also drop the empty host of sqlite:////abs/path
    netloc = parts.netloc
    if "@" in netloc:
        creds, host = netloc.rsplit("@", 1)
        user, has_password, _ = creds.partition(":")
        netloc = f"{user}:{MASK}@{host}" if has_password else f"{user}@{host}"
    query = _QUERY_PASSWORD.sub(rf"\g<1>{MASK}", parts.query)
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


def redact_text(text: str) -> str:
    """``text`` with the password of any URL or ``password=`` in it masked."""
    if "://" in text and "@" in text:
        return re.sub(r"[A-Za-z][A-Za-z0-9+.-]*://\S+", lambda m: redact_url(m.group(0)), text)
    if "password" in text.lower():
        return redact_url(text)
    return text


def masked_config(value: Any) -> Any:
    """A plain (JSON-able) copy of a config fit to store or show: ``EnvVar`` as ``{"env": name}``,
    passwords in URLs masked. Anything else is returned as is."""
    if isinstance(value, EnvVar):
        return value.to_config()
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {k: masked_config(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [masked_config(v) for v in value]
    return value


def masked_paths(value: Any, path: str = "") -> list[str]:
    """The paths of a stored config whose value had a password masked (it cannot be used
    again as is)."""
    found: list[str] = []
    if isinstance(value, str):
        if f":{MASK}@" in value or re.search(rf"(?i)password\s*=\s*{re.escape(MASK)}", value):
            found.append(path or "(config)")
    elif isinstance(value, Mapping):
        for k, v in value.items():
            found += masked_paths(v, f"{path}.{k}" if path else str(k))
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            found += masked_paths(v, f"{path}[{i}]")
    return found
