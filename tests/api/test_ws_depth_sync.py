"""Binance's "how to manage a local order book": diff stream + REST snapshot, no gaps."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from typing import Any

from tests.api.wsclient import TIMEOUT, served


def apply(book: dict[str, dict[Decimal, Decimal]], event: dict[str, Any]) -> None:
    for side, key in (("bids", "b"), ("asks", "a")):
        for price, qty in event[key]:
            if Decimal(qty) == 0:
                book[side].pop(Decimal(price), None)
            else:
                book[side][Decimal(price)] = Decimal(qty)


def as_book(depth: dict[str, Any]) -> dict[str, dict[Decimal, Decimal]]:
    return {side: {Decimal(p): Decimal(q) for p, q in depth[side]} for side in ("bids", "asks")}


async def test_depth_diff_and_snapshot_stay_in_sync(redis_url: str) -> None:
    async with served(redis_url) as api:
        maker = await api.account("maker", funds={"BTC": "5", "USDT": "500000"})
        taker = await api.account("taker", funds={"BTC": "5", "USDT": "500000"})

        async def order(key: Any, side: str, price: str, qty: str, kind: str = "LIMIT") -> int:
            extra = {"timeInForce": "GTC", "price": price} if kind == "LIMIT" else {}
            r = await api.signed("POST", "/api/v3/order", key, symbol="BTCUSDT", side=side, type=kind,
                                 quantity=qty, newOrderRespType="RESULT", **extra)
            assert r.status_code == 200, r.text
            return int(r.json()["orderId"])

        for i in range(3):  # a book before the client arrives
            await order(maker, "SELL", f"{30100 + i}.00", "0.1")
        async with api.ws("/ws/btcusdt@depth") as ws:
            events: list[dict[str, Any]] = []

            async def buffer() -> None:
                while True:
                    events.append(json.loads(await ws.recv()))

            reader = asyncio.create_task(buffer())
            try:
                for i in range(3):
                    await order(maker, "BUY", f"{29900 - i}.00", "0.1")
                snapshot = (await api.get("/api/v3/depth", symbol="BTCUSDT", limit=5000)).json()
                cancel_id = await order(maker, "SELL", "30200.00", "0.2")
                await order(taker, "BUY", "0", "0.15", kind="MARKET")  # takes a level and part of the next
                await order(taker, "SELL", "29950.00", "0.05")
                r = await api.signed("DELETE", "/api/v3/order", maker, symbol="BTCUSDT", orderId=cancel_id)
                assert r.status_code == 200, r.text
                final = (await api.get("/api/v3/depth", symbol="BTCUSDT", limit=5000)).json()

                async def caught_up() -> None:
                    while not events or events[-1]["u"] < final["lastUpdateId"]:
                        await asyncio.sleep(0.01)

                await asyncio.wait_for(caught_up(), TIMEOUT)
            finally:
                reader.cancel()
        last_id = snapshot["lastUpdateId"]
        assert events and events[0]["U"] <= last_id + 1, "snapshot older than the first buffered event"
        book = as_book(snapshot)
        applied = [e for e in events if e["u"] > last_id]
        assert applied and applied[0]["U"] <= last_id + 1 <= applied[0]["u"]
        previous = None
        for event in applied:
            assert event["e"] == "depthUpdate" and event["s"] == "BTCUSDT"
            if previous is not None:
                assert event["U"] == previous + 1, "gap in the diff stream"
            apply(book, event)
            previous = event["u"]
        assert previous == final["lastUpdateId"]
        assert book == as_book(final)
        assert as_book(final)["asks"] and as_book(final)["bids"]
