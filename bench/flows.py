"""Random but reproducible command flows for pipeline tests and benchmarks."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping

from pipeline.core.markets import Market
from pipeline.core.messages import (
    CancelAll,
    CancelOrder,
    CancelReplace,
    Command,
    Deposit,
    OrderType,
    PlaceOrder,
    Side,
    StpMode,
    TimeInForce,
)


def funding(markets: Mapping[str, Market], accounts: range, amount_units: int = 10**15) -> list[Deposit]:
    """A large deposit of every asset to every account."""
    assets = sorted({m.base_asset.symbol for m in markets.values()} | {m.quote_asset.symbol for m in markets.values()})
    return [Deposit(ts=1, account_id=a, asset=asset, amount=amount_units, request_id=f"fund-{a}-{asset}")
            for a in accounts for asset in assets]


def order_flow(
    markets: Mapping[str, Market], n: int, *, seed: int, accounts: range = range(1, 9), mid: int = 1000,
    spread: int = 8, first_order_id: int = 1,
) -> Iterator[Command]:
    """`n` order commands whose funding needs never depend on settlement timing.

    Limit orders of every time in force, post-only, market buys by quote and market
    sells by quantity, cancels, cancel-alls and cancel-replaces, with random STP modes.
    (Market buys by quantity and sells by quote hold "everything available", which in a
    pipelined system depends on how far settlement has got: flows for exact comparison
    leave them out.)
    """
    rng = random.Random(seed)
    symbols = sorted(markets)
    open_ids: dict[str, list[tuple[int, int]]] = {s: [] for s in symbols}  # (order id, account)
    next_id = dict.fromkeys(symbols, first_order_id)
    stp_modes: list[StpMode] = ["NONE", "NONE", "NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"]
    for i in range(n):
        ts = 1000 + i
        symbol = rng.choice(symbols)
        market = markets[symbol]
        account = rng.choice(accounts)
        roll = rng.random()
        if roll < 0.2 and open_ids[symbol]:
            order_id, owner = open_ids[symbol].pop(rng.randrange(len(open_ids[symbol])))
            yield CancelOrder(ts=ts, account_id=owner, symbol=symbol, order_id=order_id)
            continue
        if roll < 0.22:
            yield CancelAll(ts=ts, account_id=account, symbol=symbol)
            continue
        order_id = next_id[symbol]
        next_id[symbol] += 1
        side: Side = rng.choice(("BUY", "SELL"))
        stp = rng.choice(stp_modes)
        lo, hi = market.min_qty_lots, min(market.max_qty_lots, market.min_qty_lots * 20)
        qty = rng.randint(lo, hi)
        kind = rng.random()
        if kind < 0.08 and side == "BUY":
            quote = market.min_notional_quote * rng.randint(1, 5) + rng.randint(0, 1000)
            yield PlaceOrder(ts=ts, account_id=account, symbol=symbol, order_id=order_id,
                             client_order_id=f"m{order_id}", side="BUY", order_type="MARKET",
                             quote_qty=quote, stp_mode=stp)
            continue
        if kind < 0.12 and side == "SELL":
            yield PlaceOrder(ts=ts, account_id=account, symbol=symbol, order_id=order_id,
                             client_order_id=f"m{order_id}", side="SELL", order_type="MARKET",
                             qty_lots=qty, stp_mode=stp)
            continue
        offset = rng.randint(-spread, spread)
        price = max(market.min_price_ticks, mid + (offset if side == "BUY" else -offset))
        order_type: OrderType = "LIMIT_MAKER" if kind > 0.93 else "LIMIT"
        tif: TimeInForce = "GTC" if order_type == "LIMIT_MAKER" else rng.choice(("GTC", "GTC", "GTC", "IOC", "FOK"))
        order = PlaceOrder(ts=ts, account_id=account, symbol=symbol, order_id=order_id,
                           client_order_id=f"c{order_id}", side=side, order_type=order_type,
                           time_in_force=tif, price_ticks=price, qty_lots=qty, stp_mode=stp)
        if kind > 0.88 and open_ids[symbol] and order_type == "LIMIT":
            old_id, owner = open_ids[symbol].pop(rng.randrange(len(open_ids[symbol])))
            order = PlaceOrder(ts=ts, account_id=owner, symbol=symbol, order_id=order_id,
                               client_order_id=f"r{order_id}", side=side, price_ticks=price, qty_lots=qty,
                               stp_mode=stp)
            yield CancelReplace(ts=ts, account_id=owner, symbol=symbol, new_order=order, cancel_order_id=old_id)
        else:
            yield order
        if order.time_in_force == "GTC":
            open_ids[symbol].append((order_id, order.account_id))
