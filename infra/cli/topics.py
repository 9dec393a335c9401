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
    tail.add_argument("stream", help="stream key, e.g. orders.in:0; a topic name means all its partitions, "
                                     "merged by entry id (ids then end in @pN, as `exchange replay` prints them)")
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


def _tailed_streams(name: str, known: list[str]) -> list[tuple[int, str]]:
    """(partition, stream) of a stream key (``orders.in:2``) or of every partition of a topic name."""
    if name in known and not name.rpartition(":")[2].isdigit():
        return [(0, name)]  # a stream without partitions (the dead letters)
    _, sep, tail = name.rpartition(":")
    if sep and tail.isdigit():
        if name not in known:
            raise ToolError(f"no stream {name!r} (streams: {', '.join(known) or 'none'})")
        return [(int(tail), name)]
    streams = sorted((int(s.rpartition(":")[2]), s) for s in known
                     if s.rpartition(":")[0] == name and s.rpartition(":")[2].isdigit())
    if not streams:
        raise ToolError(f"no stream of topic {name!r} (streams: {', '.join(known) or 'none'})")
    return streams


def _order(entry_id: str, partition: int, index: int) -> tuple[int, int, int, int]:
    """Sort key of a message across partitions: entry time, sequence, partition, index in the entry."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0), partition, index


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
    transport = open_transport(redis_url())
    try:
        names = [info.stream for info in await transport.streams()]  # logical names, one server or a cluster
        streams = _tailed_streams(args.stream, names)
        merged = len(streams) > 1
        matched: list[tuple[tuple[int, int, int, int], str, Any]] = []
        for partition, stream in streams:
            found: list[tuple[tuple[int, int, int, int], str, Any]] = []
            # walk back from the end until enough entries match
            for entry_id, data in await transport.read_reverse(stream, max(args.count * 10, 1000)):
                messages = _messages(entry_id, data)
                for index, (message_id, value) in reversed(list(enumerate(messages))):
                    if _matches(value, filters) and len(found) < args.count:
                        label = f"{message_id}@p{partition}" if merged else message_id
                        found.append((_order(entry_id, partition, index), label, value))
                if len(found) >= args.count:
                    break
            matched += found
        for _, message_id, value in sorted(matched)[-args.count:]:
            _show(message_id, value)
        last = {}
        for _, stream in streams:
            recent = await transport.read_reverse(stream, 1)
            last[stream] = recent[0][0] if recent else START
        partition_of = {stream: partition for partition, stream in streams}
        while args.follow:
            for stream, entries in await transport.read(dict(last), 500, 1000):
                for entry_id, data in entries:
                    for message_id, value in _messages(entry_id, data):
                        if _matches(value, filters):
                            _show(f"{message_id}@p{partition_of[stream]}" if merged else message_id, value)
                    last[stream] = entry_id
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
