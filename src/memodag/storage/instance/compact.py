"""How the SQL instance writes events and index addresses compactly, and reads them back exactly.

Owns the text encodings of ``events.data`` (packed rows) and ``output_index.address``; never
decides what is stored or when. Every encoding here is undone exactly: readers see the events and
addresses that were written, and rows of older releases (plain JSON) still read.

- A packed events row is one JSON list of ``[type, microseconds, step_key, message, data]``
  (``pack``). Uncompressed, the text is stored with the names every step's row repeats (address
  field names, event types, common data keys), then the row's run id, then the row's step key,
  each replaced by one control character (``compact``). Valid JSON never holds these characters
  raw (RFC 8259: control characters in strings are escaped, and the only whitespace is space,
  tab, LF and CR), so the replacements are undone exactly (``expand``, in reverse order).
- An index address (``encode_address``) is a JSON list of its fields in a fixed order, leaving
  out what the row says already: the run id (the row's ``run_id``; a URI holding it is split
  around it) and the version when it is the row's. Addresses written as JSON objects by earlier
  releases read as before (``decode_addresses``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from memodag.storage.instance.records import Event, EventType
from memodag.storage.io_manager import Address
from memodag.storage.jsonenc import encode, encode_compact, quote

_TYPE_VALUES = {t: t.value for t in EventType}

# -- packed event rows ------------------------------------------------------------------------

# (marker, text) replaced by scanning the text, in this order; the first five are those of
# schema version 5 (rows written then hold only these), the rest were added with schema version
# 6. Markers are control characters other than tab, LF and CR; \x01 is the run id, \x07 the
# row's step key. Each name costs a scan of the row: those that save less than ~20 bytes of an
# executed step's row are left out.
_SCANNED = (
    ("\x02", '{"io_manager_key": '),
    ("\x03", ', "output_name": '),
    ("\x04", ', "mapping_key": '),
    ("\x05", ', "serializer": '),
    ("\x06", ', "content_hash": '),
    ("\x08", ', "uri": '),
    ("\x0b", ', "run_id": '),
    ("\x0c", ', "step_key": '),
    ("\x0e", ', "version": '),
    ("\x0f", ', "data_hash": null'),
    ("\x10", ', "size": '),
    ("\x11", ', "address": '),
    ("\x1b", '"result"'),
    ("\x1c", '"pickle"'),
    ("\x1d", '"io_manager"'),
)
# written as markers by ``pack(compact=True)`` itself, with no scan: an event's head by its type,
# and the data of a first attempt's start
_HEADS = {
    EventType.STEP_START: "\x12",
    EventType.LOADED_INPUT: "\x13",
    EventType.HANDLED_OUTPUT: "\x14",
    EventType.STEP_SUCCESS: "\x15",
}
_FIRST_ATTEMPT = ("\x16", '{"attempt": 0}')
_NAMES = (
    *_SCANNED,
    *((marker, f'["{_TYPE_VALUES[t]}",') for t, marker in _HEADS.items()),
    _FIRST_ATTEMPT,
)
_REVERSED_NAMES = _NAMES[::-1]
_RUN_ID = "\x01"
_STEP_KEY = "\x07"
# the row's prefix (``prefixes`` table) followed by its run id: where an io manager keeps the run
_PREFIXED_RUN = "\x1e"
# a prefix shorter than this is left in place (an id in the row would save too little); one
# longer than _MAX_PREFIX too (PostgreSQL's unique index takes keys of up to ~2.7 kB)
_MIN_PREFIX = 8
_MAX_PREFIX = 1000
# a step key shorter than this is left as it is (a marker saves too little to pay its scan)
_MIN_STEP_KEY = 4


def _replaceable(text: str | None) -> bool:
    """Whether ``text`` appears in JSON as it is (no character JSON escapes) and is worth it."""
    return (
        text is not None
        and len(text) >= _MIN_STEP_KEY
        and text.isascii()
        and text.isprintable()
        and '"' not in text
        and "\\" not in text
    )


def compact(
    text: str,
    run_id: str | None = None,
    step_key: str | None = None,
    prefix_id: Callable[[str], int] | None = None,
) -> tuple[str, str]:
    """JSON ``text`` with the names of ``_SCANNED``, ``run_id`` and ``step_key`` replaced, and the
    id of the prefix replaced with the run id (``""`` if none): what ``expand`` takes back.

    The prefix is the start of the JSON string in which ``run_id`` first appears (the directory
    an io manager keeps the run's outputs in), when ``prefix_id`` names it."""
    # replace() alone: a test with ``in`` first would scan the text twice for each name found
    for marker, name in _SCANNED:
        text = text.replace(name, marker)
    tag = ""
    if run_id:
        at = text.find(run_id) if prefix_id is not None else -1
        while at > 0:
            prefix = text[text.rfind('"', 0, at) + 1 : at]
            if _MIN_PREFIX <= len(prefix) <= _MAX_PREFIX and prefix.isprintable():
                tag = str(prefix_id(prefix))  # type: ignore[misc]
                text = text.replace(prefix + run_id, _PREFIXED_RUN)
                break
            at = text.find(run_id, at + 1)
        text = text.replace(run_id, _RUN_ID)
    if _replaceable(step_key):
        text = text.replace(step_key, _STEP_KEY)  # type: ignore[arg-type]
    return text, tag


def expand(
    text: str, run_id: str | None = None, step_key: str | None = None, prefix: str | None = None
) -> str:
    """What ``compact`` replaced, put back (text without markers is returned as it is);
    ``prefix``: the text of the prefix id ``compact`` gave."""
    if _replaceable(step_key):
        text = text.replace(_STEP_KEY, step_key)  # type: ignore[arg-type]
    if run_id:
        text = text.replace(_RUN_ID, run_id)
        if prefix:
            text = text.replace(_PREFIXED_RUN, prefix + run_id)
    for marker, name in _REVERSED_NAMES:
        text = text.replace(marker, name)
    return text


def pack(events: Sequence[Event], compact: bool = False) -> str:
    """``events`` as one JSON list of ``[type, microseconds, step_key, message, data]``, each
    time in whole microseconds after the first event's (the row's timestamp): an integer is
    written several times faster than a float's shortest repr. ``compact``: the heads and data
    of ``_HEADS`` and ``_FIRST_ATTEMPT`` written as their markers (then ``compact()`` it)."""
    first = events[0].timestamp
    parts = []
    heads = _HEADS if compact else {}
    attempt, marker = _FIRST_ATTEMPT[1], _FIRST_ATTEMPT[0] if compact else _FIRST_ATTEMPT[1]
    for e in events:
        step = "null" if e.step_key is None else quote(e.step_key)
        data = encode(e.data) if e.encoded is None else e.encoded
        if data == attempt:
            data = marker
        head = heads.get(e.event_type) or f'["{_TYPE_VALUES[e.event_type]}",'
        parts.append(
            f"{head}{round((e.timestamp - first) * 1e6):d},{step},{quote(e.message)},{data}]"
        )
    return "[" + ",".join(parts) + "]"


def unpack(run_id: str, first: float, text: str | bytes, wanted: set[str] | None) -> list[Event]:
    """The events of a packed row's JSON ``text`` whose first event was at ``first`` (only those
    of the ``wanted`` types, if given); times are to the microsecond, the first one exact."""
    return [
        Event(EventType(t), run_id, first + us / 1e6 if us else first, step, message, payload)
        for t, us, step, message, payload in json.loads(text)
        if wanted is None or t in wanted
    ]


# -- index addresses --------------------------------------------------------------------------


def encode_address(address: Address, version: str, prefix_id: Callable[[str], int]) -> str:
    """``address`` as stored in an index row of ``version`` whose run id is ``address.run_id``:
    ``[uri, io_manager_key, serializer, step_key, output_name, mapping_key, version, data_hash,
    size, content_hash(, schema)]``, the version ``0`` when it is the row's.

    A URI holding the run id is written ``[prefix, rest]`` (the run id between them); else one
    holding the step key ``[prefix, rest, 0]``; a prefix of ``_MIN_PREFIX`` characters or more
    as its id in the ``prefixes`` table (``prefix_id``): an io manager's base directory is written
    once per instance, not once per output."""
    uri: Any = address.uri
    if uri:
        run_id, step_key = address.run_id, address.step_key
        if run_id and run_id in uri:
            uri = uri.split(run_id, 1)
        elif step_key and step_key in uri:
            uri = [*uri.split(step_key, 1), 0]
        # printable: stored as it is (storable() changes no character of it)
        if type(uri) is list and _MIN_PREFIX <= len(uri[0]) <= _MAX_PREFIX and uri[0].isprintable():
            uri[0] = prefix_id(uri[0])
    fields = [
        uri,
        address.io_manager_key,
        address.serializer,
        address.step_key,
        address.output_name,
        address.mapping_key,
        0 if address.version == version else address.version,
        address.data_hash,
        address.size,
        address.content_hash,
    ]
    if address.schema is not None:
        fields.append(address.schema)
    return encode_compact(fields)


def decode_addresses(
    rows: Sequence[Sequence[Any]], prefix_text: Callable[[int], str]
) -> list[Address]:
    """The addresses of index ``rows`` (``version`` second, ``address`` third, ``run_id``
    last), in one JSON parse for all of them; both encodings read. ``prefix_text``: the text
    of a prefix id."""
    if not rows:
        return []
    # one JSON document for the chunk's addresses: a memoized run reads thousands of entries,
    # and decoding them one json.loads call at a time is most of the cost
    decoded = json.loads("[" + ",".join(r[2] for r in rows) + "]")
    # the decoder makes a new string for every value: the few distinct io manager keys,
    # serializers, step keys and output names are shared instead (a memoized rerun of 100,000
    # pieces keeps every address it reads for the whole run)
    shared: dict[str, str] = {}
    share = shared.setdefault
    found = []
    for row, data in zip(rows, decoded, strict=True):
        version, run_id = row[1], row[-1]
        if type(data) is list:
            run_id = share(run_id, run_id)
            uri, io, serializer, step, output, mapping, own, data_hash, size, content, *rest = data
            if type(uri) is list:
                head = uri[0]
                if type(head) is int:
                    head = prefix_text(head)
                uri = head + (run_id if len(uri) == 2 else step) + uri[1]
            address = Address(
                share(io, io),
                uri,
                share(serializer, serializer) if serializer else None,
                run_id,
                share(step, step),
                share(output, output),
                mapping,
                # the same text as the entry's version, almost always: one string for both
                version if own == 0 else own,
                data_hash,
                size,
                content,
                rest[0] if rest else None,
            )
        else:
            address = _address_of_object(data, version, share)
        found.append(address)
    return found


def _address_of_object(data: dict[str, Any], version: str, share: Any) -> Address:
    """An address stored as a JSON object (releases before schema version 6)."""
    try:
        return Address(
            share(data["io_manager_key"], data["io_manager_key"]),
            data["uri"],
            share(data["serializer"], data["serializer"]) if data["serializer"] else None,
            share(data["run_id"], data["run_id"]),
            share(data["step_key"], data["step_key"]),
            share(data["output_name"], data["output_name"]),
            data["mapping_key"],
            version if data["version"] == version else data["version"],
            data["data_hash"],
            # written only when known (an io manager that records what it wrote)
            data.get("size"),
            data.get("content_hash"),
            data.get("schema"),
        )
    except (KeyError, TypeError):  # written by another memodag version: other keys
        return Address.from_dict(data)
