"""The partition layout an exchange's data was written with, and the check every process makes against it.

Streams and tables are partitioned by numbers each process takes from its environment:
``EXCHANGE_ACCOUNT_PARTITIONS`` (orders, holds and balances by ``account_id % A``) and
``EXCHANGE_MARKET_PARTITIONS`` (books by market, the markets in sorted order dealt
round-robin). A process started with other numbers than the data would read and write
the wrong partitions: an account's balance on one, its new deposits on another; a market's
book rebuilt on a partition that never saw its orders. Nothing would crash; money would
look lost. So the first process records the layout under `LAYOUT_KEY`, and every worker,
API, `exchange up` and `exchange admin` compares itself with it before it starts, and
refuses to start on a difference (`LayoutMismatchError`); moving data to another layout
needs a migration, which does not exist yet.

Markets may be added: the recorded markets keep their match partition (the processes pin
it, `MarketPartitioner.pin`, so a new symbol sorting before them does not shift the deal)
and each new one goes to the partition with the fewest markets (`assign_markets`; the same
answer in every process, since it depends only on the record and the market list).

Data written before this record existed: the partitions that exist (``orders.in:N``,
``orders.accepted:N``) stand in for the record, so a count below what they show is refused.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from pipeline.agents.topology import MarketPartitioner
from pipeline.transport.base import Commit, Transport

if TYPE_CHECKING:
    from pipeline.exchange import Exchange

LAYOUT_KEY = "{p0}exchange:layout"
"""A JSON object: account_partitions, market_partitions, markets (symbol -> match partition)."""


class LayoutMismatchError(RuntimeError):
    """This process's partition layout is not the one the exchange's data was written with."""


def layout_of(exchange: Exchange) -> dict[str, Any]:
    """The layout `exchange` (as this process built it) reads and writes."""
    accepted = exchange.orders_accepted
    return {
        "account_partitions": exchange.orders_in.partitions,
        "market_partitions": accepted.partitions,
        "markets": {symbol: accepted.partition_for(symbol) for symbol in sorted(exchange.markets)},
    }


def assign_markets(recorded: dict[str, int], symbols: list[str], partitions: int) -> dict[str, int]:
    """Each market's match partition: the recorded ones keep theirs; new ones (in sorted order) go to
    the partition with the fewest markets so far, the lowest of those on a tie."""
    assignment = {s: p for s, p in recorded.items() if s in symbols and 0 <= p < partitions}
    load = [0] * partitions
    for partition in assignment.values():
        load[partition] += 1
    for symbol in sorted(set(symbols) - set(assignment)):
        partition = load.index(min(load))
        assignment[symbol] = partition
        load[partition] += 1
    return assignment


def pin_markets(exchange: Exchange, stored: dict[str, Any]) -> None:
    """Route markets as the data records them (new ones dealt by `assign_markets`), when the
    match partition count is the recorded one (else `differences` refuses the process anyway)."""
    topic = exchange.orders_accepted
    partitioner = topic.key_to_partition
    recorded = stored.get("markets")
    if not recorded or stored.get("market_partitions") != topic.partitions or not isinstance(
            partitioner, MarketPartitioner):
        return
    partitioner.pin(assign_markets(recorded, sorted(exchange.markets), topic.partitions))


async def read_layout(transport: Transport) -> dict[str, Any] | None:
    """The recorded layout, or None if no process recorded one yet."""
    raw = await transport.get(LAYOUT_KEY)
    return dict(json.loads(raw)) if raw else None


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """The partition counts of `wanted` that contradict `stored` (markets cannot: once the counts agree,
    `pin_markets` keeps every recorded market where the record has it)."""
    return [f"{variable}={wanted[name]} here, {stored[name]} in the data"
            for name, variable in (("account_partitions", "EXCHANGE_ACCOUNT_PARTITIONS"),
                                   ("market_partitions", "EXCHANGE_MARKET_PARTITIONS"))
            if stored.get(name) is not None and stored[name] != wanted[name]]


async def inferred_layout(transport: Transport) -> dict[str, Any]:
    """The least layout the existing streams show (data from before `LAYOUT_KEY`): partition counts only."""
    counts = {"orders.in": 0, "orders.accepted": 0}
    for info in await transport.streams("orders."):
        topic, _, partition = info.stream.rpartition(":")
        if topic in counts and partition.isdigit():
            counts[topic] = max(counts[topic], int(partition) + 1)
    return {"account_partitions": counts["orders.in"] or None, "market_partitions": counts["orders.accepted"] or None}


async def check_layout(exchange: Exchange) -> None:
    """Refuse (`LayoutMismatchError`) if `exchange` would use another layout than its data; record it if new."""
    transport = exchange.app.transport
    recorded = await read_layout(transport)
    if recorded is not None:
        pin_markets(exchange, recorded)
    wanted = layout_of(exchange)
    if recorded is not None:
        stored = recorded
    else:  # a count below the partitions that exist is wrong; one above cannot be told apart
        inferred = await inferred_layout(transport)
        stored = {k: v for k, v in inferred.items() if v is not None and v > wanted[k]}
    problems = differences(stored, wanted)
    if problems:
        raise LayoutMismatchError(
            "this process's partition layout differs from the one the exchange's data was written with: "
            + "; ".join(problems) + ". Streams and tables are partitioned by it, so this process would read "
            "and write the wrong partitions. Start it with the data's layout (the environment of the other "
            f"processes); moving data to another layout needs a migration, which does not exist yet. "
            f"(Recorded in {LAYOUT_KEY}.)")
    merged = {**wanted, "markets": {**(stored.get("markets") or {}), **wanted["markets"]}}
    if recorded != merged:
        await transport.commit(Commit("layout", writes=[("SET", LAYOUT_KEY, json.dumps(merged, sort_keys=True))]))
