"""A real Binance client from PyPI against this exchange: ccxt's `binance` class with only its
URLs changed (no patches to ccxt), through markets, book, ticker, candles, orders, balance, trades."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import ccxt
import pytest

from api.context import ApiConfig
from tests.api.threaded import ThreadServer, thread_served


@pytest.fixture
def server(redis_url: str) -> Iterator[ThreadServer]:
    with thread_served(redis_url, ApiConfig(result_timeout_s=5.0, lookup_wait_s=1.0, weight_per_minute=0)) as s:
        yield s


def binance(server: ThreadServer, key: Any = None) -> Any:
    """ccxt's binance class pointed at `server` (spot only; the endpoints we do not serve switched off)."""
    client = ccxt.binance({
        "apiKey": key.api_key if key else None, "secret": key.secret if key else None,
        "enableRateLimit": False, "timeout": 10_000,
        "options": {"defaultType": "spot", "fetchCurrencies": False, "fetchMarkets": {"types": ["spot"]},
                    "fetchMargins": False,
                    "adjustForTimeDifference": False},
    })
    client.set_sandbox_mode(False)
    api = f"{server.base_url}/api/v3"
    client.urls["api"]["public"] = api
    client.urls["api"]["private"] = api
    return client


def test_ccxt_binance_trades_against_us(server: ThreadServer) -> None:
    maker = server.run(server.api.account("maker", funds={"BTC": "2", "USDT": "100000"}))
    trader = server.run(server.api.account("trader", funds={"USDT": "100000"}))
    public = binance(server)
    markets = public.load_markets()
    btc = markets["BTC/USDT"]
    assert (btc["id"], btc["base"], btc["quote"], btc["spot"], btc["active"]) == ("BTCUSDT", "BTC", "USDT", True, True)
    assert btc["precision"]["price"] == 0.01 and btc["limits"]["amount"]["min"] > 0
    # a book and a trade made by the maker through ccxt too
    mm = binance(server, maker)
    mm.load_markets()
    ask = mm.create_order("BTC/USDT", "limit", "sell", 0.5, 30000)
    assert ask["status"] == "open" and ask["id"]
    book = public.fetch_order_book("BTC/USDT", limit=5)
    assert book["asks"][0][:2] == [30000.0, 0.5] and book["bids"] == [] and book["nonce"] > 0
    ccxt_trader = binance(server, trader)
    ccxt_trader.load_markets()
    bought = ccxt_trader.create_order("BTC/USDT", "limit", "buy", 0.1, 30000)
    assert bought["status"] == "closed" and bought["filled"] == 0.1
    ticker = public.fetch_ticker("BTC/USDT")
    assert ticker["last"] == 30000.0 and ticker["baseVolume"] == 0.1 and ticker["ask"] == 30000.0
    candles = public.fetch_ohlcv("BTC/USDT", "1m", limit=10)
    assert candles and candles[-1][1:] == [30000.0, 30000.0, 30000.0, 30000.0, 0.1]
    trades = public.fetch_trades("BTC/USDT", limit=10)
    assert [(t["price"], t["amount"], t["side"]) for t in trades] == [(30000.0, 0.1, "buy")]
    # orders: place, list, cancel
    bid = ccxt_trader.create_order("BTC/USDT", "limit", "buy", 0.2, 25000)
    open_orders = ccxt_trader.fetch_open_orders("BTC/USDT")
    assert [o["id"] for o in open_orders] == [bid["id"]] and open_orders[0]["price"] == 25000.0
    fetched = ccxt_trader.fetch_order(bid["id"], "BTC/USDT")
    assert fetched["status"] == "open" and fetched["amount"] == 0.2
    canceled = ccxt_trader.cancel_order(bid["id"], "BTC/USDT")
    assert canceled["status"] == "canceled"
    assert ccxt_trader.fetch_open_orders("BTC/USDT") == []
    balance = ccxt_trader.fetch_balance()
    assert balance["BTC"]["free"] == 0.1 and balance["USDT"]["used"] == 0
    assert Decimal(str(balance["USDT"]["total"])) == Decimal("100000") - Decimal("3000") - Decimal(
        str(ccxt_trader.fetch_my_trades("BTC/USDT")[0]["fee"]["cost"]))
    mine = ccxt_trader.fetch_my_trades("BTC/USDT")
    assert [(t["price"], t["amount"], t["side"], t["order"]) for t in mine] == [(30000.0, 0.1, "buy", bought["id"])]
    # errors arrive as ccxt's Binance exceptions: our codes mean what Binance's mean
    with pytest.raises(ccxt.OrderNotFound):
        ccxt_trader.cancel_order(bid["id"], "BTC/USDT")
    with pytest.raises(ccxt.InsufficientFunds):
        ccxt_trader.create_order("BTC/USDT", "limit", "buy", 10, 30000)
    with pytest.raises(ccxt.AuthenticationError):
        binance(server, maker.__class__(maker.account_id, maker.api_key, "0" * 64, maker.permissions)).fetch_balance()
