"""The trading screen end to end in headless Chromium against `exchange up`.

Two traders sign up in their own browsers, are funded through the admin API, trade with
each other through the order form, and both screens show the trade (tape, chart, book,
balances, fills); a cancel removes the rest. Screenshots of the screen at desktop and
phone width go to docs/screenshots/. A second test restarts the server under an open page.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.ui.conftest import DESKTOP, PHONE, SCREENSHOTS, ExchangeServer, Ops

expect.set_options(timeout=15_000)


@pytest.fixture
def ops(exchange_server: ExchangeServer) -> Iterator[Ops]:
    ops = Ops(exchange_server)
    yield ops
    ops.close()


def open_screen(browser: Browser, server: ExchangeServer, viewport: dict[str, int] = DESKTOP,
                storage: object = None) -> tuple[BrowserContext, Page, list[str]]:
    context = browser.new_context(viewport=viewport, storage_state=storage)  # type: ignore[arg-type]
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(server.url + "/?symbol=BTCUSDT")
    expect(page.locator("#conn")).to_have_attribute("data-state", "live")
    return context, page, errors


def sign_up(page: Page, name: str) -> int:
    page.fill("#auth-user", name)
    page.fill("#auth-pass", f"{name}'s password")
    page.click("#signup")
    expect(page.locator("#order-form")).to_be_visible()
    expect(page.locator("#user-name")).to_have_text(name)
    return int(page.evaluate("window.exchangeUi.state.me.accountId"))


def balance(page: Page, asset: str, column: str = "free") -> object:
    return expect(page.locator(f'#balances tr[data-asset="{asset}"] .{column}'))


def place(page: Page, side: str, qty: str, price: str | None = None, order_type: str = "LIMIT") -> None:
    page.click("#side-buy" if side == "BUY" else "#side-sell")
    page.select_option("#type", order_type)
    if price is not None:
        page.fill("#price", price)
    page.fill("#qty", qty)
    page.click("#submit")


LAST_CANDLE = """() => {
  const c = window.exchangeUi.chart, candles = c.candles.data(), volume = c.volume.data();
  const last = candles[candles.length - 1], t = window.exchangeUi.state.trades[0];
  return { time: last.time, close: last.close, high: last.high, low: last.low,
           volume: volume[volume.length - 1].value, trade_time: t.T };
}"""
"""The last bar of the chart's candle and volume series, and the time of the newest trade on the tape."""


def ask(page: Page, price: str) -> object:
    return page.locator(f'#asks .lvl[data-price="{price}"]')


@pytest.mark.slow
def test_two_traders_trade_through_the_ui(browser: Browser, exchange_server: ExchangeServer, ops: Ops) -> None:
    # some depth around 30000 from the operator's account, and a few trades for the chart
    ops.deposit(ops.account_id, "USDT", "1000000")
    ops.deposit(ops.account_id, "BTC", "100")
    for i in range(1, 9):
        ops.order("SELL", f"{30000 + 10 * i}", f"0.{i:02d}")
        ops.order("BUY", f"{30000 - 10 * i}", f"0.{9 - i:02d}")
    ops.order("BUY", "30010", "0.01")

    alice_ctx, alice, alice_errors = open_screen(browser, exchange_server)
    bob_ctx, bob, bob_errors = open_screen(browser, exchange_server)
    alice_id = sign_up(alice, "alice")
    bob_id = sign_up(bob, "bob")
    assert alice_id != bob_id
    ops.deposit(alice_id, "USDT", "10000")
    ops.deposit(bob_id, "BTC", "1")
    balance(alice, "USDT").to_have_text("10000.00000000")
    balance(bob, "BTC").to_have_text("1.00000000")

    # the form checks the market's filters before anything is sent
    place(bob, "SELL", "0.5", "30000.001")
    expect(bob.locator("#form-msg")).to_have_text("Price must be a multiple of 0.01.")
    place(bob, "SELL", "5", "30000")
    expect(bob.locator("#form-msg")).to_contain_text("Not enough BTC")
    # a rejection from the server is shown as such (post-only that would cross)
    place(bob, "SELL", "0.1", "29990", "LIMIT_MAKER")
    expect(bob.locator("#form-msg")).to_contain_text("Rejected:")

    # bob's ask shows up live in alice's book
    place(bob, "SELL", "0.5", "30000")
    expect(bob.locator("#form-msg")).to_contain_text("placed")
    expect(ask(alice, "30000.00")).to_contain_text("0.50000")

    # alice clicks the ask to take its price, and buys part of it
    ask(alice, "30000.00").click()
    expect(alice.locator("#price")).to_have_value("30000.00")
    place(alice, "BUY", "0.2")
    expect(alice.locator("#form-msg")).to_contain_text("filled")

    for page in (alice, bob):
        first = page.locator("#tape .lvl").first
        expect(first).to_contain_text("30000.00")
        expect(first).to_contain_text("0.20000")
        expect(page.locator("#chart-legend")).to_have_attribute("data-close", "30000.00")
        # the chart's last candle is the trade's minute, closing at its price, with its volume in it
        bar = page.evaluate(LAST_CANDLE)
        assert bar["time"] == bar["trade_time"] // 60_000 * 60, bar
        assert bar["close"] == 30000 and bar["low"] <= 30000 <= bar["high"], bar
        assert bar["volume"] >= 0.2 - 1e-9, bar
        expect(ask(page, "30000.00")).to_contain_text("0.30000")
        expect(page.locator("#head-last")).to_have_text("30,000.00")
    # 0.2 BTC for 6000 USDT, 0.1% fee (6 USDT) on each side, in the quote asset
    balance(alice, "USDT").to_have_text("3994.00000000")
    balance(alice, "BTC").to_have_text("0.20000000")
    balance(bob, "USDT").to_have_text("5994.00000000")
    balance(bob, "BTC").to_have_text("0.50000000")
    balance(bob, "BTC", "locked").to_have_text("0.30000000")
    expect(alice.locator("#fills tr[data-trade-id]")).to_have_count(1)
    expect(bob.locator("#order-history tr .status").first).to_have_text("PARTIALLY_FILLED")

    # the 24h ticker stream catches up with the trade
    expect(alice.locator("#head-low")).to_have_text("30000.00")
    expect(alice.locator("#head-change")).to_have_text("-0.03%")
    # alice leaves a bid in the book: the screenshots show an open order too
    place(alice, "BUY", "0.05", "29950.00")
    expect(alice.locator("#open-orders tr[data-order-id]")).to_have_count(1)
    balance(alice, "USDT").to_have_text("2495.00250000")  # 1497.50 + at most 1.4975 fee held
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    alice.screenshot(path=str(SCREENSHOTS / "trading-desktop.png"))
    phone_ctx, phone, phone_errors = open_screen(browser, exchange_server, PHONE, alice_ctx.storage_state())
    expect(phone.locator("#user-name")).to_have_text("alice")
    expect(phone.locator("#open-orders tr[data-order-id]")).to_have_count(1)
    expect(phone.locator("#tape .lvl").first).to_contain_text("30000.00")
    phone.screenshot(path=str(SCREENSHOTS / "trading-phone.png"), full_page=True)
    assert phone.evaluate("() => document.documentElement.scrollWidth") <= PHONE["width"]  # no sideways scrolling

    # another interval: the chart reloads from klines, the trade is in its last candle too
    alice.click('#intervals [data-interval="5m"]')
    expect(alice.locator('#intervals [data-interval="5m"]')).to_have_class("on")
    expect(alice.locator("#chart-legend")).to_have_attribute("data-close", "30000.00")
    # another market and back: its own (empty) book, then BTC/USDT's again
    alice.click('#markets [data-symbol="ETHUSDT"]')
    expect(alice.locator("#head-symbol")).to_have_text("ETH/USDT")
    expect(alice.locator("#asks .lvl")).to_have_count(0)
    alice.click('#markets [data-symbol="BTCUSDT"]')
    expect(ask(alice, "30000.00")).to_contain_text("0.30000")

    # bob cancels the rest: gone from his open orders, from both books, and the BTC is free again
    row = bob.locator("#open-orders tr[data-order-id]")
    expect(row).to_have_count(1)
    row.locator("button.cancel").click()
    expect(row).to_have_count(0)
    expect(ask(alice, "30000.00")).to_have_count(0)
    expect(ask(bob, "30000.00")).to_have_count(0)
    balance(bob, "BTC").to_have_text("0.80000000")
    balance(bob, "BTC", "locked").to_have_text("0.00000000")

    # log out: the session is gone, the form is replaced by the login form
    bob.click("#logout")
    expect(bob.locator("#auth")).to_be_visible()
    expect(bob.locator("#balances tr")).to_have_count(0)

    assert alice_errors == bob_errors == phone_errors == []
    for ctx in (alice_ctx, bob_ctx, phone_ctx):
        ctx.close()


@pytest.mark.slow
def test_page_recovers_after_a_server_restart(browser: Browser, exchange_server: ExchangeServer, ops: Ops) -> None:
    context, page, errors = open_screen(browser, exchange_server)
    carol = sign_up(page, "carol")
    ops.deposit(carol, "USDT", "1000")
    balance(page, "USDT").to_have_text("1000.00000000")
    place(page, "BUY", "0.01", "29000")
    expect(page.locator("#open-orders tr[data-order-id]")).to_have_count(1)

    exchange_server.stop()
    expect(page.locator("#conn")).to_have_attribute("data-state", "reconnecting")
    expect(page.locator("#conn-text")).to_contain_text("Reconnecting")
    # while the API is down, the operator credits carol straight into the pipeline's input
    exchange_server.cli("admin", "deposit", str(carol), "USDT", "500")
    exchange_server.start()

    expect(page.locator("#conn")).to_have_attribute("data-state", "live", timeout=30_000)
    # 1000 + 500 - (290 + 0.29 worst-case fee held by the open order)
    balance(page, "USDT").to_have_text("1209.71000000")
    expect(page.locator("#open-orders tr[data-order-id]")).to_have_count(1)
    expect(page.locator('#bids .lvl[data-price="29000.00"]')).to_contain_text("0.01000")
    # the streams are live again: a new order elsewhere reaches the book
    ops.deposit(ops.account_id, "USDT", "100000")
    ops.order("BUY", "29500", "0.3")
    expect(page.locator('#bids .lvl[data-price="29500.00"]')).to_contain_text("0.30000")
    assert errors == []
    context.close()
