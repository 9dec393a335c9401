"""Public market-data endpoints: shapes, values after real trades, bad input."""

from __future__ import annotations

import time
from decimal import Decimal

from tests.api.conftest import Api, error, eventually


async def test_ping_time_and_exchange_info(api: Api) -> None:
    assert (await api.get("/api/v3/ping")).json() == {}
    server = (await api.get("/api/v3/time")).json()["serverTime"]
    assert abs(server - time.time_ns() // 1_000_000) < 5000
    info = (await api.get("/api/v3/exchangeInfo")).json()
    assert info["timezone"] == "UTC" and len(info["symbols"]) == len(api.exchange.markets)
    btc = (await api.get("/api/v3/exchangeInfo", symbol="BTCUSDT")).json()["symbols"]
    assert [s["symbol"] for s in btc] == ["BTCUSDT"]
    (sym,) = btc
    assert sym["status"] == "TRADING" and sym["baseAsset"] == "BTC" and sym["quoteAsset"] == "USDT"
    filters = {f["filterType"]: f for f in sym["filters"]}
    assert filters["PRICE_FILTER"]["tickSize"] == "0.01000000"
    assert filters["LOT_SIZE"]["stepSize"] == "0.00001000"
    assert filters["LOT_SIZE"]["minQty"] == "0.00001000"
    assert filters["NOTIONAL"]["minNotional"] == "5.00000000"
    two = (await api.get("/api/v3/exchangeInfo", symbols='["BTCUSDT","ETHUSDT"]')).json()["symbols"]
    assert [s["symbol"] for s in two] == ["BTCUSDT", "ETHUSDT"]
    assert error(await api.get("/api/v3/exchangeInfo", symbol="NOPE")) == (400, -1121)
    assert error(await api.get("/api/v3/exchangeInfo", symbols="[1]")) == (400, -1100)


async def test_market_data_after_trades(api: Api) -> None:
    maker = await api.account("maker", funds={"BTC": "2"})
    taker = await api.account("taker", funds={"USDT": "100000"})
    for price in ("30000.00", "30010.00"):
        r = await api.signed("POST", "/api/v3/order", maker, symbol="BTCUSDT", side="SELL", type="LIMIT",
                             timeInForce="GTC", quantity="0.5", price=price, newOrderRespType="RESULT")
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "NEW"
    r = await api.signed("POST", "/api/v3/order", taker, symbol="BTCUSDT", side="BUY", type="MARKET",
                         quantity="0.2")
    assert r.status_code == 200, r.text
    full = r.json()
    assert full["status"] == "FILLED" and full["executedQty"] == "0.20000000"
    assert full["cummulativeQuoteQty"] == "6000.00000000"
    assert [(f["price"], f["qty"], f["commissionAsset"]) for f in full["fills"]] == [
        ("30000.00000000", "0.20000000", "USDT")]

    async def ticked() -> dict[str, object] | None:
        t = (await api.get("/api/v3/ticker/24hr", symbol="BTCUSDT")).json()
        return t if t["count"] == 1 else None

    ticker = await eventually(ticked)
    assert ticker["lastPrice"] == "30000.00000000" and ticker["volume"] == "0.20000000"
    assert ticker["askPrice"] == "30000.00000000" and ticker["askQty"] == "0.30000000"
    depth = (await api.get("/api/v3/depth", symbol="BTCUSDT", limit=1)).json()
    assert depth["lastUpdateId"] > 0 and depth["bids"] == []
    assert depth["asks"] == [["30000.00000000", "0.30000000"]]
    depth = (await api.get("/api/v3/depth", symbol="BTCUSDT")).json()
    assert [a[0] for a in depth["asks"]] == ["30000.00000000", "30010.00000000"]
    book = (await api.get("/api/v3/ticker/bookTicker", symbol="BTCUSDT")).json()
    assert book["askPrice"] == "30000.00000000" and book["bidQty"] == "0.00000000"
    trades = (await api.get("/api/v3/trades", symbol="BTCUSDT")).json()
    assert [(t["id"], t["price"], t["qty"], t["isBuyerMaker"]) for t in trades] == [
        (1, "30000.00000000", "0.20000000", False)]
    assert (await api.get("/api/v3/trades", symbol="ETHUSDT")).json() == []
    # a taker sweeping two levels: two trades, two aggregates (two prices); then one more trade
    r = await api.signed("POST", "/api/v3/order", taker, symbol="BTCUSDT", side="BUY", type="MARKET",
                         quantity="0.4", newOrderRespType="RESULT")
    assert r.json()["status"] == "FILLED", r.text

    async def three_trades() -> list[dict[str, object]] | None:
        found = (await api.get("/api/v3/trades", symbol="BTCUSDT")).json()
        return found if len(found) == 3 else None

    assert [t["id"] for t in await eventually(three_trades)] == [1, 2, 3]
    assert [t["id"] for t in (await api.get("/api/v3/trades", symbol="BTCUSDT", limit=2)).json()] == [2, 3]
    assert [t["id"] for t in (await api.get("/api/v3/historicalTrades", symbol="BTCUSDT", fromId=2,
                                            limit=1)).json()] == [2]
    assert [t["id"] for t in (await api.get("/api/v3/historicalTrades", symbol="BTCUSDT")).json()] == [1, 2, 3]
    aggs = (await api.get("/api/v3/aggTrades", symbol="BTCUSDT")).json()
    assert [(a["a"], a["f"], a["l"], a["p"], a["q"]) for a in aggs] == [
        (1, 1, 1, "30000.00000000", "0.20000000"), (2, 2, 2, "30000.00000000", "0.30000000"),
        (3, 3, 3, "30010.00000000", "0.10000000")]
    assert [a["a"] for a in (await api.get("/api/v3/aggTrades", symbol="BTCUSDT", fromId=2)).json()] == [2, 3]
    t0 = aggs[0]["T"]
    assert [a["a"] for a in (await api.get("/api/v3/aggTrades", symbol="BTCUSDT", startTime=t0,
                                           endTime=t0 + 3_600_000, limit=1)).json()] == [1]
    assert error(await api.get("/api/v3/aggTrades", symbol="BTCUSDT", startTime=t0,
                               endTime=t0 + 7_200_000)) == (400, -1128)
    klines = (await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1m")).json()
    assert sum(k[8] for k in klines) == 3 and klines[0][1] == "30000.00000000"  # 1, or 2 if a minute turned
    assert klines[-1][4] == "30010.00000000" and max(k[2] for k in klines) == "30010.00000000"
    assert sum(Decimal(k[5]) for k in klines) == Decimal("0.6")
    start = klines[0][0]
    hour = (await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1h", startTime=start,
                          endTime=start + 3_600_000, limit=5)).json()
    assert hour[-1][4] == "30010.00000000" and len(klines) >= 1
    assert (await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1m", endTime=start - 1)).json() == []
    price = (await api.get("/api/v3/ticker/price", symbol="BTCUSDT")).json()
    assert price == {"symbol": "BTCUSDT", "price": "30010.00000000"}
    all_prices = (await api.get("/api/v3/ticker/price")).json()
    assert len(all_prices) == len(api.exchange.markets)
    avg = (await api.get("/api/v3/avgPrice", symbol="BTCUSDT")).json()
    assert avg["mins"] == 5 and avg["price"] == "30001.66666667"  # (0.5 x 30000 + 0.1 x 30010) / 0.6
    mini = (await api.get("/api/v3/ticker/24hr", symbols='["BTCUSDT"]', type="MINI")).json()
    assert "priceChange" not in mini[0] and mini[0]["lastPrice"] == "30010.00000000"


async def test_public_bad_input(api: Api) -> None:
    assert error(await api.get("/api/v3/depth")) == (400, -1102)
    assert error(await api.get("/api/v3/depth", symbol="XXXUSDT")) == (400, -1121)
    assert error(await api.get("/api/v3/depth", symbol="btc usdt")) == (400, -1100)
    assert error(await api.get("/api/v3/depth", symbol="BTCUSDT", limit="abc")) == (400, -1100)
    assert error(await api.get("/api/v3/depth", symbol="BTCUSDT", limit=6000)) == (400, -1100)
    assert error(await api.client.get("/api/v3/depth?symbol=BTCUSDT&symbol=ETHUSDT")) == (400, -1101)
    assert error(await api.get("/api/v3/trades", symbol="BTCUSDT", limit=0)) == (400, -1100)
    assert error(await api.get("/api/v3/klines", symbol="BTCUSDT")) == (400, -1102)
    assert error(await api.get("/api/v3/klines", symbol="BTCUSDT", interval="7m")) == (400, -1120)
    assert error(await api.get("/api/v3/klines", symbol="BTCUSDT", interval="1m", startTime=10,
                               endTime=5)) == (400, -1102)
    assert error(await api.get("/api/v3/ticker/24hr", symbol="BTCUSDT", type="HUGE")) == (400, -1100)
    assert error(await api.get("/api/v3/ticker/price", symbol="NOPE")) == (400, -1121)
    assert error(await api.get("/api/v3/avgPrice")) == (400, -1102)
    assert error(await api.get("/api/v3/nothing")) == (404, -1000)
    assert error(await api.client.post("/api/v3/depth")) == (405, -1000)
    # empty books and no trades are not errors
    assert (await api.get("/api/v3/depth", symbol="ETHUSDT")).json() == {"lastUpdateId": 0, "bids": [],
                                                                          "asks": []}
    assert (await api.get("/api/v3/klines", symbol="ETHUSDT", interval="1d")).json() == []
    assert (await api.get("/api/v3/avgPrice", symbol="ETHUSDT")).json()["price"] == "0.00000000"
    assert (await api.get("/api/v3/ticker/24hr", symbol="ETHUSDT")).json()["count"] == 0
