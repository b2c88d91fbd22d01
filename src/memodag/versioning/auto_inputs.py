"""The schemas of the tables a run has seen, for the AUTO_VERSION ops that read them.

An AUTO_VERSION op's code version is the plan its body builds on its inputs' schemas
(``memodag.tables.auto_version``); those come from the inputs' addresses (``Address.schema``),
kept here as the memoizer sees outputs stored or reused, so no table is read. Decides nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from memodag.errors import MemoizationError
from memodag.plan.plan import StepOutputHandle
from memodag.storage.io_manager import Address
from memodag.versioning.resolve import SCHEMA_PENDING

#: serializers of addresses an AUTO_VERSION op may read: a stored table, or (dry runs) a
#: prediction of an output only the run will make
_TABLE_SERIALIZERS = ("table", "predicted")

AddressKey = tuple[str, str, "str | None"]


class TableSchemas:
    """Table outputs of one run, by ``(step key, output, mapping key)``."""

    def __init__(self) -> None:
        self._tables: dict[AddressKey, Address] = {}

    def note(self, key: AddressKey, address: Address) -> None:
        """Remember ``address`` if it is (or may be) a table."""
        if address.schema is not None or address.serializer in _TABLE_SERIALIZERS:
            self._tables[key] = address

    def schema(self, handle: StepOutputHandle, io_managers: Mapping[str, Any]) -> str:
        """The schema text of the table wired to an AUTO_VERSION input (``SCHEMA_PENDING`` in a
        dry run, for a table only its run will make): from its address, else from its store
        (addresses stored before memodag kept schemas in them).

        Raises:
            MemoizationError: the output is not a table, or its store cannot tell.
        """
        address = self._tables.get((handle.step_key, handle.output_name, handle.mapping_key))
        if address is None:
            raise MemoizationError(
                f"an AUTO_VERSION op reads output '{handle.output_name}' of step "
                f"'{handle.step_key}', which is not a table: AUTO_VERSION ops take tables only "
                "(store it with @materialize, or pass the value as config)"
            )
        if address.schema is not None:
            return address.schema
        if address.uri is None:
            return SCHEMA_PENDING
        text = getattr(io_managers.get(address.io_manager_key), "schema_text", None)
        if text is None:
            raise MemoizationError(
                f"{address.describe()}: its io manager cannot tell its schema, which the "
                "AUTO_VERSION op reading it needs"
            )
        return str(text(address))


__all__ = ["TableSchemas"]
