"""The partition layout an exchange's data was written with, and the check every process makes against it.

Streams and tables are partitioned by numbers each process takes from its environment:
``EXCHANGE_ACCOUNT_PARTITIONS`` (orders, holds and balances by ``account_id % A``) and
``EXCHANGE_MARKET_PARTITIONS`` (books by market, the markets in sorted order dealt
round-robin). A process started with other numbers than the data (or with a market list
that deals an existing market to another partition) would read and write the wrong
partitions: an account's balance on one, its new deposits on another; a market's book
rebuilt on a partition that never saw its orders. Nothing would crash; money would look
lost. So the first process records the layout under `LAYOUT_KEY`, and every worker, API,
`exchange up` and `exchange admin` compares itself with it before it starts, and refuses to
start on a difference (`LayoutMismatchError`). Adding markets is fine (they are recorded too);
moving data to another layout needs a migration, which does not exist yet.

Data written before this record existed: the partitions that exist (``orders.in:N``,
``orders.accepted:N``) stand in for the record, so a count below what they show is refused.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

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


def differences(stored: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """What in `wanted` contradicts `stored` (markets only in one of them are no contradiction)."""
    problems = []
    for name, variable in (("account_partitions", "EXCHANGE_ACCOUNT_PARTITIONS"),
                           ("market_partitions", "EXCHANGE_MARKET_PARTITIONS")):
        if stored.get(name) is not None and stored[name] != wanted[name]:
            problems.append(f"{variable}={wanted[name]} here, {stored[name]} in the data")
    old = stored.get("markets") or {}
    moved = sorted(s for s, p in wanted["markets"].items() if s in old and old[s] != p)
    if moved:
        shown = ", ".join(f"{s} on match partition {wanted['markets'][s]} here, {old[s]} in the data"
                          for s in moved[:5])
        problems.append(f"the market list deals {len(moved)} existing market(s) elsewhere: {shown}")
    return problems


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
    wanted = layout_of(exchange)
    raw = await transport.get(LAYOUT_KEY)
    stored: dict[str, Any] = json.loads(raw) if raw else await inferred_layout(transport)
    if not raw:  # a count below the partitions that exist is wrong; one above cannot be told apart
        stored = {k: v for k, v in stored.items() if v is not None and v > wanted[k]}
    problems = differences(stored, wanted)
    if problems:
        raise LayoutMismatchError(
            "this process's partition layout differs from the one the exchange's data was written with: "
            + "; ".join(problems) + ". Streams and tables are partitioned by it, so this process would read "
            "and write the wrong partitions. Start it with the data's layout (the environment of the other "
            f"processes); moving data to another layout needs a migration, which does not exist yet. "
            f"(Recorded in {LAYOUT_KEY}.)")
    merged = {**wanted, "markets": {**(stored.get("markets") or {}), **wanted["markets"]}}
    if not raw or json.loads(raw) != merged:
        await transport.commit(Commit("layout", writes=[("SET", LAYOUT_KEY, json.dumps(merged, sort_keys=True))]))
