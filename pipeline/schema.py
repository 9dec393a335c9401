"""Export the message schemas for downstream consumers (JSON Schema, generated from the Structs).

Every stream entry has one field, ``d``: the msgpack encoding of one message, a map
whose ``type`` key names its class. The document lists each topic's value types and
each type's JSON Schema with its version, so analytics can decode the streams
without this codebase.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from typing import Any

import msgspec

from pipeline.messages import Message

# Modules whose Message subclasses make up the public schema.
MESSAGE_MODULES = (
    "pipeline.deadletter", "pipeline.core.messages", "pipeline.agents.events", "pipeline.agents.publish.messages",
)


def message_types(modules: Iterable[str] = MESSAGE_MODULES) -> list[type[Message]]:
    """Every concrete Message subclass defined in `modules` (missing modules are skipped)."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
    found: dict[str, type[Message]] = {}
    pending: list[type[Message]] = list(Message.__subclasses__())
    while pending:
        cls = pending.pop()
        pending.extend(cls.__subclasses__())
        if cls.__module__.startswith(("pipeline.", "api.", "recovery.")):
            found[f"{cls.__module__}.{cls.__qualname__}"] = cls
    return [found[k] for k in sorted(found)]


def schema_document(topics: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON-serialisable document: message schemas with versions, and topic -> value types."""
    types = message_types()
    (schemas, components) = msgspec.json.schema_components(types, ref_template="#/$defs/{name}")
    messages = {
        cls.__name__: {"version": cls.version, "module": cls.__module__, "schema": schema}
        for cls, schema in zip(types, schemas, strict=True)
    }
    document: dict[str, Any] = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "exchange stream messages",
        "description": __doc__.split("\n\n")[1].replace("\n", " ") if __doc__ else "",
        "encoding": "msgpack map in stream field 'd', tagged by 'type'",
        "messages": messages,
        "$defs": components,
    }
    if topics:
        document["topics"] = {name: _type_names(value_type) for name, value_type in sorted(topics.items())}
    return document


def _type_names(value_type: Any) -> list[str]:
    args = getattr(value_type, "__args__", None)
    members = args if args else (value_type,)
    return [getattr(member, "__name__", repr(member)) for member in members]
