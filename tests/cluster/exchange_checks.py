"""Helpers for the partitioned-exchange tests: run the exchange, wait until everything settled, compare."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import msgspec

from pipeline.app import wait_for_condition
from pipeline.core.markets import Market, markets_from_dict
from pipeline.core.messages import NO_BUDGET, CancelReplace, PlaceOrder
from pipeline.exchange import Exchange
from pipeline.transport.cluster import ClusterTransport
from tests.pipeline.test_exchange_e2e import stream_values, topic_values


async def settled(exchange: Exchange, timeout: float = 60.0) -> None:
    """Wait until every agent committed all its input and (on a cluster) every outbox was forwarded, twice."""
    transport = exchange.app.transport

    async def quiet() -> bool:
        if isinstance(transport, ClusterTransport) and await transport.undelivered():
            return False
        return all(v == 0 for v in (await exchange.app.lag()).values())

    for _ in range(2):  # a forwarded entry makes new input: check again after it was consumed
        await wait_for_condition(quiet, timeout, "the exchange to settle", interval=0.1)


def by_market(events: list[Any]) -> dict[str, list[str]]:
    """Events per market, in order (partitions keep each market's order, not the interleaving)."""
    grouped: dict[str, list[str]] = defaultdict(list)
    for event in events:
        grouped[getattr(event, "symbol", "")].append(repr(event))
    return dict(grouped)


async def orders_events_by_market(exchange: Exchange) -> dict[str, list[str]]:
    return by_market(await topic_values(exchange, "orders.events"))


def ten_markets() -> dict[str, Market]:
    """Ten markets X0USD..X9USD (0 decimals, like the core tests' TSTUSD; half of them charge fees)."""
    return markets_from_dict({
        "assets": {"USD": 0, **{f"X{i}": 0 for i in range(10)}},
        "markets": [
            {"symbol": f"X{i}USD", "base": f"X{i}", "quote": "USD", "tick_size": "1", "lot_size": "1",
             "min_qty": "1", "max_qty": "1000000", "min_notional": "1",
             "maker_fee_ppm": 1000 * (i % 2), "taker_fee_ppm": 2000 * (i % 2)}
            for i in range(10)
        ],
    })


def ten_markets_toml() -> str:
    """`ten_markets` as a markets file (for worker processes)."""
    lines = ["[assets]", "USD = 0", *(f"X{i} = 0" for i in range(10))]
    for i in range(10):
        lines += ["", "[[markets]]", f'symbol = "X{i}USD"', f'base = "X{i}"', 'quote = "USD"', 'tick_size = "1"',
                  'lot_size = "1"', 'min_qty = "1"', 'max_qty = "1000000"', 'min_notional = "1"',
                  f"maker_fee_ppm = {1000 * (i % 2)}", f"taker_fee_ppm = {2000 * (i % 2)}"]
    return "\n".join(lines) + "\n"


def difference(actual: dict[str, list[str]], expected: dict[str, list[str]]) -> str:
    """Where two per-market event lists first differ (for assertion messages)."""
    lines = []
    for market in sorted(set(actual) | set(expected)):
        got, want = actual.get(market, []), expected.get(market, [])
        if got == want:
            continue
        at = next((i for i, (a, b) in enumerate(zip(got, want, strict=False)) if a != b), min(len(got), len(want)))
        lines.append(f"{market}: {len(got)} events, expected {len(want)}; first difference at {at}:\n"
                     f"  got  {got[at:at + 3]}\n  want {want[at:at + 3]}")
    return "\n".join(lines)


def as_sent(command: Any) -> Any:
    """A command read back from ``orders.accepted`` without what risk added (holds, budgets)."""
    if isinstance(command, PlaceOrder):
        return msgspec.structs.replace(command, hold=0, quote_budget=NO_BUDGET, base_budget_lots=NO_BUDGET)
    if isinstance(command, CancelReplace):
        return msgspec.structs.replace(command, new_order=as_sent(command.new_order), old_hold_used=0,
                                       old_filled_lots=0)
    return command


async def as_matched(exchange: Exchange, commands: list[Any]) -> list[Any]:
    """`commands` in an order one process can replay to reach the partitioned run's state.

    With accounts on several partitions, each market's commands reach match interleaved
    by account partition, not in the order they were sent: this order keeps every
    market's sequence as its match partition read it (markets are independent), with
    what never reached match (deposits, rejections) first. Holds do not depend on the
    order when accounts are funded well beyond their orders (the flows do that).
    Also checks that every command reached match at most once and that each account's
    commands kept their order.
    """
    position = {repr(c): i for i, c in enumerate(commands)}
    assert len(position) == len(commands), "the test's commands must be distinct"
    matched: list[Any] = []
    for stream in exchange.orders_accepted.streams:
        seen = [as_sent(c) for c in await stream_values(exchange, "orders.accepted", stream)]
        indexes = [position[repr(c)] for c in seen]  # KeyError: match got a command nobody sent
        last: dict[int, int] = {}
        for command, index in zip(seen, indexes, strict=True):
            account = getattr(command, "account_id", None)
            if account is not None:
                assert last.get(account, -1) < index, f"account {account}'s commands reordered in {stream}"
                last[account] = index
        matched += seen
    assert len({repr(c) for c in matched}) == len(matched), "a command reached match twice"
    reached = {repr(c) for c in matched}
    return [c for c in commands if repr(c) not in reached] + matched
