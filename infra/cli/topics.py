"""`exchange topics list|tail|lag|dlq|schema`: look at the streams as an operator.

Works on one server and on a Valkey Cluster (``REDIS_URL=redis+cluster://...``): streams are
shown and named by their logical names (``orders.accepted:2``), not their tagged keys.
"""

from __future__ import annotations

import argparse
import datetime
import json
from typing import Any

import msgspec

from infra.cli.common import ToolError, async_tool, print_table, redis_url
from pipeline.deadletter import DEAD_LETTER_ENTRIES, DLQ_STREAM
from pipeline.metrics import consumer_lag
from pipeline.schema import schema_document
from pipeline.transport.base import START, id_key
from pipeline.transport.cluster import open_transport


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("topics", help="streams, lag, dead letters and message schemas")
    sub = parser.add_subparsers(dest="topics_command", metavar="ACTION", required=True)

    sub.add_parser("list", help="every stream with its length and consumers").set_defaults(func=async_tool(cmd_list))

    lag = sub.add_parser("lag", help="per-agent committed offset and lag")
    lag.set_defaults(func=async_tool(cmd_lag))

    tail = sub.add_parser("tail", help="print the last entries of a stream, decoded")
    tail.add_argument("stream", help="stream key, e.g. orders.in:0 (a topic name means its partition 0)")
    tail.add_argument("-n", "--count", type=int, default=20, help="how many entries (default 20)")
    tail.add_argument("--filter", action="append", default=[], metavar="FIELD=VALUE",
                      help="only entries whose field equals the value (repeatable)")
    tail.add_argument("--follow", "-f", action="store_true", help="keep printing new entries")
    tail.set_defaults(func=async_tool(cmd_tail))

    dlq = sub.add_parser("dlq", help="dead letters: input an agent could not decode or process")
    dlq.add_argument("-n", "--count", type=int, default=50)
    dlq.set_defaults(func=async_tool(cmd_dlq))

    schema = sub.add_parser("schema", help="JSON Schema of every message type on the streams")
    schema.set_defaults(func=lambda args: cmd_schema())



def _when(entry_id: str) -> str:
    ms = id_key(entry_id)[0]
    return datetime.datetime.fromtimestamp(ms / 1000, tz=datetime.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


async def cmd_list(args: argparse.Namespace) -> int:
    transport = open_transport(redis_url())
    try:
        rows = []
        for info in await transport.streams():
            consumers = await transport.consumers(info.stream)
            rows.append((info.stream, info.length, info.added, info.last_id and _when(info.last_id),
                         ", ".join(consumers)))
        print_table(("stream", "length", "added", "last entry (UTC)", "consumers"), rows)
    finally:
        await transport.close()
    return 0


async def cmd_lag(args: argparse.Namespace) -> int:
    transport = open_transport(redis_url())
    try:
        rows = [(row.consumer, row.stream, row.last_id or "-", row.consumed, row.lag)
                for row in await consumer_lag(transport)]
        print_table(("agent", "stream", "committed offset", "consumed", "lag"), rows)
    finally:
        await transport.close()
    return 0


def _decode(data: bytes) -> Any:
    try:
        return msgspec.msgpack.decode(data)
    except msgspec.DecodeError:
        return {"undecodable": data.hex()}


def _matches(value: Any, filters: list[tuple[str, str]]) -> bool:
    return all(isinstance(value, dict) and str(value.get(k)) == v for k, v in filters)


def _messages(entry_id: str, data: bytes) -> list[tuple[str, Any]]:
    """(message id, decoded message) of each message an entry carries; the id is `entry_id#index`."""
    value = _decode(data)
    if isinstance(value, list):
        return [(f"{entry_id}#{i}", item) for i, item in enumerate(value)]
    return [(entry_id, value)]


def _show(message_id: str, value: Any) -> None:
    print(json.dumps({"id": message_id, **(value if isinstance(value, dict) else {"value": value})},
                     default=lambda b: b.hex() if isinstance(b, bytes) else str(b)))


async def cmd_tail(args: argparse.Namespace) -> int:
    filters = []
    for item in args.filter:
        key, sep, value = item.partition("=")
        if not sep:
            raise ToolError(f"--filter takes FIELD=VALUE, not {item!r}")
        filters.append((key, value))
    stream = args.stream if ":" in args.stream else f"{args.stream}:0"
    transport = open_transport(redis_url())
    try:
        names = [info.stream for info in await transport.streams()]  # logical names, one server or a cluster
        if stream not in names:
            known = ", ".join(names) or "none"
            raise ToolError(f"no stream {stream!r} (streams: {known})")
        matched: list[tuple[str, Any]] = []
        # walk back from the end until enough entries match
        for entry_id, data in await transport.read_reverse(stream, max(args.count * 10, 1000)):
            for message_id, value in reversed(_messages(entry_id, data)):
                if _matches(value, filters) and len(matched) < args.count:
                    matched.append((message_id, value))
            if len(matched) >= args.count:
                break
        for message_id, value in reversed(matched):
            _show(message_id, value)
        recent = await transport.read_reverse(stream, 1)
        last = recent[0][0] if recent else START
        while args.follow:
            for _, entries in await transport.read({stream: last}, 500, 1000):
                for entry_id, data in entries:
                    for message_id, value in _messages(entry_id, data):
                        if _matches(value, filters):
                            _show(message_id, value)
                    last = entry_id
    except KeyboardInterrupt:
        pass
    finally:
        await transport.close()
    return 0


async def cmd_dlq(args: argparse.Namespace) -> int:
    transport = open_transport(redis_url())
    try:
        rows = []
        for entry_id, data in await transport.read_reverse(DLQ_STREAM, args.count):
            for letter in DEAD_LETTER_ENTRIES.decode(data):
                rows.append((_when(entry_id), letter.agent, letter.stream, letter.entry_id,
                             letter.error[:80], letter.payload[:24].hex()))
        rows = rows[: args.count]
        print_table(("when (UTC)", "agent", "from stream", "entry", "error", "payload (hex, start)"), rows)
    finally:
        await transport.close()
    return 0


def cmd_schema() -> int:
    from pipeline.catalog import topic_value_types

    print(json.dumps(schema_document(topic_value_types()), indent=2))
    return 0
