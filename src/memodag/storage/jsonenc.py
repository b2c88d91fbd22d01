"""One JSON encoder for what the instance stores per executed step (event data, addresses,
recipes): the text ``json.dumps(value, default=str)`` gives, without building an encoder per call.

Owns encoding only; never decides what is stored.
"""

from __future__ import annotations

import json
import json.encoder
from typing import Any

_checking = json.JSONEncoder(default=str).encode
_make = getattr(json.encoder, "c_make_encoder", None)
# no circular-reference check (a cycle overflows the stack, then the checking encoder names it)
_reused = (
    _make(None, str, json.encoder.encode_basestring_ascii, None, ": ", ", ", False, False, True)
    if _make is not None
    else None
)

#: a string as a JSON string literal (quotes and escapes), as ``json.dumps`` writes it
quote = json.encoder.encode_basestring_ascii


def encode(value: Any) -> str:
    """``value`` as JSON text; anything JSON has no type for is written as its ``str``."""
    if _reused is None or not isinstance(value, dict):
        return _checking(value)
    try:
        return "".join(_reused(value, 0))
    except RecursionError:
        return _checking(value)  # raises ValueError: the value contains itself


_compact_checking = json.JSONEncoder(separators=(",", ":"), default=str).encode
_compact_reused = (
    _make(None, str, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, True)
    if _make is not None
    else None
)


def encode_compact(value: Any) -> str:
    """``value`` (a dict or a list) as JSON text without spaces after separators: what the
    instance stores and never shows."""
    if _compact_reused is None or not isinstance(value, dict | list):
        return _compact_checking(value)
    try:
        return "".join(_compact_reused(value, 0))
    except RecursionError:
        return _compact_checking(value)  # raises ValueError: the value contains itself
