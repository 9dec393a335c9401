"""Signed trading endpoints against the real pipeline: lifecycle, account scoping, rejections."""

from __future__ import annotations

import asyncio

from tests.api.conftest import Api, error, eventually

BTC = "BTCUSDT"


async def test_order_lifecycle(api: Api) -> None:
    alice = await api.account("alice", funds={"USDT": "10000", "BTC": "1"})
    r = await api.signed("POST", "/api/v3/order", alice, symbol=BTC, side="BUY", type="LIMIT", timeInForce="GTC",
                         quantity="0.01", price="20000", newClientOrderId="my-1", newOrderRespType="ACK")
    assert r.status_code == 200, r.text
    ack = r.json()
    assert set(ack) == {"symbol", "orderId", "orderListId", "clientOrderId", "transactTime"}
    assert ack["clientOrderId"] == "my-1" and ack["orderId"] >= 1
    oid = ack["orderId"]
    got = (await api.signed("GET", "/api/v3/order", alice, symbol=BTC, orderId=oid)).json()
    assert got["status"] == "NEW" and got["price"] == "20000.00000000" and got["origQty"] == "0.01000000"
    assert got["clientOrderId"] == "my-1" and got["side"] == "BUY" and got["type"] == "LIMIT"
    by_client = (await api.signed("GET", "/api/v3/order", alice, symbol=BTC, origClientOrderId="my-1")).json()
    assert by_client["orderId"] == oid
    account = (await api.signed("GET", "/api/v3/account", alice)).json()
    balances = {b["asset"]: (b["free"], b["locked"]) for b in account["balances"]}
    assert balances["USDT"][1] != "0.00000000"  # the hold (price x qty + worst-case fee)
    assert balances["BTC"] == ("1.00000000", "0.00000000")
    assert account["canTrade"] and account["uid"] == alice.account_id
    opened = (await api.signed("GET", "/api/v3/openOrders", alice, symbol=BTC)).json()
    assert [o["orderId"] for o in opened] == [oid]
    assert [o["orderId"] for o in (await api.signed("GET", "/api/v3/openOrders", alice)).json()] == [oid]
    canceled = await api.signed("DELETE", "/api/v3/order", alice, symbol=BTC, orderId=oid)
    assert canceled.status_code == 200, canceled.text
    body = canceled.json()
    assert body["status"] == "CANCELED" and body["origClientOrderId"] == "my-1" and body["orderId"] == oid
    assert (await api.signed("GET", "/api/v3/openOrders", alice, symbol=BTC)).json() == []
    assert error(await api.signed("DELETE", "/api/v3/order", alice, symbol=BTC, orderId=oid)) == (400, -2011)
    # cancel all
    ids = []
    for i in range(3):
        r = await api.signed("POST", "/api/v3/order", alice, symbol=BTC, side="SELL", type="LIMIT",
                             timeInForce="GTC", quantity="0.01", price=f"{40000 + i}", newOrderRespType="RESULT")
        assert r.json()["status"] == "NEW", r.text
        ids.append(r.json()["orderId"])
    r = await api.signed("DELETE", "/api/v3/openOrders", alice, symbol=BTC)
    assert r.status_code == 200, r.text
    assert sorted(o["orderId"] for o in r.json()) == ids and {o["status"] for o in r.json()} == {"CANCELED"}
    assert error(await api.signed("DELETE", "/api/v3/openOrders", alice, symbol=BTC)) == (400, -2011)
    history = (await api.signed("GET", "/api/v3/allOrders", alice, symbol=BTC)).json()
    assert [o["orderId"] for o in history] == [oid, *ids]
    assert [o["orderId"] for o in (await api.signed("GET", "/api/v3/allOrders", alice, symbol=BTC,
                                                    orderId=ids[1], limit=1)).json()] == [ids[1]]
    # test order: validated, nothing placed, no order id used
    assert (await api.signed("POST", "/api/v3/order/test", alice, symbol=BTC, side="BUY", type="LIMIT",
                             timeInForce="GTC", quantity="0.01", price="20000")).json() == {}
    assert int(await api.redis.get(f"orderid:{BTC}")) == ids[-1]


async def test_fills_and_my_trades(api: Api) -> None:
    seller = await api.account("seller", funds={"BTC": "1"})
    buyer = await api.account("buyer", funds={"USDT": "50000"})
    r = await api.signed("POST", "/api/v3/order", seller, symbol=BTC, side="SELL", type="LIMIT", timeInForce="GTC",
                         quantity="0.1", price="30000", newOrderRespType="RESULT")
    sell_id = r.json()["orderId"]
    r = await api.signed("POST", "/api/v3/order", buyer, symbol=BTC, side="BUY", type="LIMIT", timeInForce="IOC",
                         quantity="0.04", price="30000")
    full = r.json()
    assert full["status"] == "FILLED" and full["timeInForce"] == "IOC", full
    assert [(f["qty"], f["commission"]) for f in full["fills"]] == [("0.04000000", "1.20000000")]
    r = await api.signed("POST", "/api/v3/order", buyer, symbol=BTC, side="BUY", type="MARKET",
                         quoteOrderQty="600", newOrderRespType="RESULT")
    assert r.json()["status"] == "FILLED" and r.json()["executedQty"] == "0.02000000", r.text

    async def seller_trades() -> list[dict[str, object]] | None:
        trades = (await api.signed("GET", "/api/v3/myTrades", seller, symbol=BTC)).json()
        return trades if len(trades) == 2 else None

    trades = await seller_trades() or await eventually(seller_trades)
    assert [(t["orderId"], t["isBuyer"], t["isMaker"], t["qty"]) for t in trades] == [
        (sell_id, False, True, "0.04000000"), (sell_id, False, True, "0.02000000")]
    mine = (await api.signed("GET", "/api/v3/myTrades", buyer, symbol=BTC)).json()
    assert [(t["isBuyer"], t["isMaker"], t["price"]) for t in mine] == [(True, False, "30000.00000000")] * 2
    got = (await api.signed("GET", "/api/v3/order", seller, symbol=BTC, orderId=sell_id)).json()
    assert got["status"] == "PARTIALLY_FILLED" and got["executedQty"] == "0.06000000"


async def test_accounts_cannot_see_or_touch_each_other(api: Api) -> None:
    alice = await api.account("alice", funds={"USDT": "10000"})
    mallory = await api.account("mallory", funds={"USDT": "10000"})
    r = await api.signed("POST", "/api/v3/order", alice, symbol=BTC, side="BUY", type="LIMIT", timeInForce="GTC",
                         quantity="0.01", price="20000", newClientOrderId="secret-id", newOrderRespType="RESULT")
    oid = r.json()["orderId"]
    assert error(await api.signed("GET", "/api/v3/order", mallory, symbol=BTC, orderId=oid)) == (400, -2013)
    assert error(await api.signed("GET", "/api/v3/order", mallory, symbol=BTC,
                                  origClientOrderId="secret-id")) == (400, -2013)
    assert error(await api.signed("DELETE", "/api/v3/order", mallory, symbol=BTC, orderId=oid)) == (400, -2011)
    assert error(await api.signed("DELETE", "/api/v3/order", mallory, symbol=BTC,
                                  origClientOrderId="secret-id")) == (400, -2011)
    assert error(await api.signed("DELETE", "/api/v3/openOrders", mallory, symbol=BTC)) == (400, -2011)
    assert (await api.signed("GET", "/api/v3/openOrders", mallory)).json() == []
    assert (await api.signed("GET", "/api/v3/allOrders", mallory, symbol=BTC)).json() == []
    assert (await api.signed("GET", "/api/v3/myTrades", mallory, symbol=BTC)).json() == []
    balances = (await api.signed("GET", "/api/v3/account", mallory)).json()["balances"]
    assert balances == [{"asset": "USDT", "free": "10000.00000000", "locked": "0.00000000"}]
    # alice's order is untouched; an order id that does not exist at all is the same answer
    assert (await api.signed("GET", "/api/v3/order", alice, symbol=BTC, orderId=oid)).json()["status"] == "NEW"
    assert error(await api.signed("GET", "/api/v3/order", alice, symbol=BTC, orderId=oid + 1000)) == (400, -2013)


async def test_rejections_come_back_as_binance_errors(api: Api) -> None:
    poor = await api.account("poor", funds={"USDT": "10"})
    r = await api.signed("POST", "/api/v3/order", poor, symbol=BTC, side="BUY", type="LIMIT", timeInForce="GTC",
                         quantity="0.01", price="20000", newOrderRespType="RESULT")
    assert error(r) == (400, -2010)
    assert "insufficient balance" in r.json()["msg"]
    r = await api.signed("POST", "/api/v3/order", poor, symbol=BTC, side="BUY", type="LIMIT", timeInForce="GTC",
                         quantity="0.01", price="20000", newOrderRespType="ACK")
    assert r.status_code == 200  # ACK: accepted into orders.in; the rejection shows on the order
    oid = r.json()["orderId"]
    got = await eventually(lambda: api.signed("GET", "/api/v3/order", poor, symbol=BTC, orderId=oid))
    assert got.json()["status"] == "REJECTED"
    r = await api.signed("POST", "/api/v3/order", poor, symbol=BTC, side="BUY", type="LIMIT_MAKER",
                         quantity="0.0001", price="20000", newOrderRespType="RESULT")
    assert error(r) == (400, -1013) and r.json()["msg"] == "Filter failure: NOTIONAL"


async def test_group_commit_batches_concurrent_orders(api: Api) -> None:
    alice = await api.account("alice", funds={"USDT": "100000"})
    responses = await asyncio.gather(*(
        api.signed("POST", "/api/v3/order", alice, symbol=BTC, side="BUY", type="LIMIT", timeInForce="GTC",
                   quantity="0.001", price=f"{10000 + i}", newOrderRespType="ACK") for i in range(40)))
    assert all(r.status_code == 200 for r in responses)
    assert len({r.json()["orderId"] for r in responses}) == 40
    writer = api.app.state.api.writer
    assert writer.written >= 41 - 1 and writer.batches < writer.written

    async def all_open() -> bool:
        return len((await api.signed("GET", "/api/v3/openOrders", alice, symbol=BTC)).json()) == 40

    await eventually(all_open)


async def test_cancel_replace(api: Api) -> None:
    alice = await api.account("alice", funds={"USDT": "10000"})
    mallory = await api.account("mallory", funds={"USDT": "10000"})
    r = await api.signed("POST", "/api/v3/order", alice, symbol=BTC, side="BUY", type="LIMIT", timeInForce="GTC",
                         quantity="0.01", price="20000", newClientOrderId="first", newOrderRespType="RESULT")
    first = r.json()["orderId"]
    new = {"symbol": BTC, "side": "BUY", "type": "LIMIT", "timeInForce": "GTC", "quantity": "0.02",
           "price": "21000", "cancelReplaceMode": "STOP_ON_FAILURE", "newOrderRespType": "RESULT"}
    r = await api.signed("POST", "/api/v3/order/cancelReplace", alice, cancelOrderId=first, **new)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["cancelResult"], body["newOrderResult"]) == ("SUCCESS", "SUCCESS")
    assert body["cancelResponse"]["status"] == "CANCELED" and body["cancelResponse"]["orderId"] == first
    second = body["newOrderResponse"]["orderId"]
    assert body["newOrderResponse"]["status"] == "NEW" and body["newOrderResponse"]["price"] == "21000.00000000"
    opened = (await api.signed("GET", "/api/v3/openOrders", alice, symbol=BTC)).json()
    assert [o["orderId"] for o in opened] == [second]
    # someone else's order, or one already canceled: the cancel fails and nothing is placed
    for who, ref in ((mallory, second), (alice, first)):
        r = await api.signed("POST", "/api/v3/order/cancelReplace", who, cancelOrderId=ref, **new)
        assert r.status_code == 400 and r.json()["code"] == -2022, r.text
        assert r.json()["data"]["cancelResponse"] == {"code": -2011, "msg": "Unknown order sent."}
    assert (await api.signed("GET", "/api/v3/openOrders", mallory)).json() == []
    assert error(await api.signed("POST", "/api/v3/order/cancelReplace", alice, cancelOrderId=second,
                                  **{**new, "cancelReplaceMode": "ALLOW_FAILURE"})) == (400, -1100)
    assert error(await api.signed("POST", "/api/v3/order/cancelReplace", alice, **new)) == (400, -1102)
