"""Stream entries -> rows of the history tables (pure: no I/O).

`RowBuilder.add_entry(stream, entry_id, data)` decodes one entry (a msgpack array of
messages, see `pipeline.batching`) and appends its rows to the current `Rows`:

- every message -> ``event_archive`` (keyed by stream, entry id, index);
- ``orders.events`` `TradeExecuted` -> ``trades``;
- ``user.events`` `OrderUpdate` -> ``orders`` (latest report per order wins);
- ``accounts.events`` -> ``ledger`` (movements) and ``balances``;
- ``market.candles`` `Candle` -> ``candles`` (latest per window).

The builder keeps the balances the ledger sums to, per (account, asset): a
`BalanceChanged` that differs from them is a deposit or a withdrawal (the only
operations without a movement event of their own), anything else an adjustment.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgspec

log = logging.getLogger(__name__)

_MAP_MARKERS = frozenset([*range(0x80, 0x90), 0xDE, 0xDF])
_split = msgspec.msgpack.Decoder(list[msgspec.Raw]).decode
_decode = msgspec.msgpack.Decoder().decode
_json = msgspec.json.Encoder().encode

LIVE = frozenset({"NEW", "PARTIALLY_FILLED"})

ARCHIVE_COLUMNS = ("stream", "entry_id", "idx", "type", "ts", "payload")
TRADE_COLUMNS = ("symbol", "trade_id", "ts", "price_ticks", "qty_lots", "quote_amount", "taker_side",
                 "maker_order_id", "maker_account_id", "taker_order_id", "taker_account_id")
ORDER_COLUMNS = ("symbol", "order_id", "account_id", "client_order_id", "side", "type", "tif", "price_ticks",
                 "qty_lots", "quote_qty", "status", "reason", "filled_lots", "filled_quote", "created_ts",
                 "updated_ts", "src_ms", "src_seq", "src_idx")
LEDGER_COLUMNS = ("stream", "entry_id", "idx", "leg", "ts", "account_id", "asset", "available_delta",
                  "locked_delta", "cause", "symbol", "order_id", "trade_id")
BALANCE_COLUMNS = ("account_id", "asset", "available", "locked", "updated_ts")
CANDLE_COLUMNS = ("symbol", "interval", "open_ts", "close_ts", "open_ticks", "high_ticks", "low_ticks",
                  "close_ticks", "volume_lots", "quote_volume", "trades", "first_trade_id", "last_trade_id",
                  "closed")

Row = tuple[Any, ...]
BalanceKey = tuple[int, str]


@dataclass
class Rows:
    """The rows of one batch, ready to write."""

    archive: list[Row] = field(default_factory=list)
    trades: list[Row] = field(default_factory=list)
    orders: dict[tuple[str, int], Row] = field(default_factory=dict)
    ledger: list[Row] = field(default_factory=list)
    balances: dict[BalanceKey, Row] = field(default_factory=dict)
    candles: dict[tuple[str, str, int], Row] = field(default_factory=dict)
    positions: dict[str, tuple[str, int, int]] = field(default_factory=dict)
    """stream -> (last entry id, entries, messages) in this batch."""

    @property
    def messages(self) -> int:
        return len(self.archive)


def topic_of(stream: str) -> str:
    """``orders.events:0`` -> ``orders.events``."""
    return stream.rpartition(":")[0] or stream


def split_entry(data: bytes) -> list[bytes]:
    """The encoded messages of one entry (a bare message counts as a batch of one)."""
    if data and data[0] in _MAP_MARKERS:
        return [data]
    return [bytes(part) for part in _split(data)]


class RowBuilder:
    """Turns entries into rows, keeping the ledger's running balances."""

    def __init__(self, balances: dict[BalanceKey, tuple[int, int]] | None = None, *, fee_account_id: int = 0) -> None:
        self.fee_account_id = fee_account_id
        """Who fees are paid to (the accounts core's fee account)."""
        self.balances: dict[BalanceKey, tuple[int, int]] = dict(balances or {})
        self.rows = Rows()
        # stream -> the fees of the last FundsSettled / LegSettled not yet seen: (payer side, with the income leg)
        self._fees: dict[str, list[tuple[str, bool]]] = {}
        self.adjustments = 0

    def take(self) -> Rows:
        """The rows built so far; starts a new batch."""
        rows, self.rows = self.rows, Rows()
        return rows

    def add_entry(self, stream: str, entry_id: str, data: bytes) -> int:
        """Add one entry's rows; return how many messages it held."""
        topic = topic_of(stream)
        ms, _, seq = entry_id.partition("-")
        src = (int(ms), int(seq or 0))
        parts = split_entry(data)
        rows = self.rows
        for idx, raw in enumerate(parts):
            message = _decode(raw)
            if not isinstance(message, dict):
                message = {"type": "?", "value": message}
            kind = str(message.get("type", "?"))
            ts = message.get("ts")
            rows.archive.append((stream, entry_id, idx, kind, ts if isinstance(ts, int) else None,
                                 _json(message).decode()))
            if topic == "orders.events" and kind == "TradeExecuted":
                rows.trades.append(tuple(message[c] for c in TRADE_COLUMNS))
            elif topic == "user.events" and kind == "OrderUpdate":
                self._order(message, (*src, idx))
            elif topic == "accounts.events":
                self._account(stream, entry_id, idx, kind, message)
            elif topic == "market.candles" and kind == "Candle":
                row = tuple(message[c] for c in CANDLE_COLUMNS)
                rows.candles[(row[0], row[1], row[2])] = row
        last = rows.positions.get(stream)
        entries, messages = (last[1], last[2]) if last else (0, 0)
        rows.positions[stream] = (entry_id, entries + 1, messages + len(parts))
        return len(parts)

    # ---------------------------------------------------------------- orders

    def _order(self, m: dict[str, Any], src: tuple[int, int, int]) -> None:
        key = (m["symbol"], m["order_id"])
        status = m["status"]
        if status == "REJECTED":
            if m.get("reject_reason") == "DUPLICATE_ORDER_ID":
                return  # the id belongs to another order: its row stays as it is
            seen = self.rows.orders.get(key)
            if seen is not None and seen[10] in LIVE:
                return
        reason = m.get("reject_reason") or m.get("expire_reason")
        self.rows.orders[key] = (
            m["symbol"], m["order_id"], m["account_id"], m["client_order_id"], m["side"], m["order_type"],
            m["time_in_force"], m["price_ticks"], m["qty_lots"], m["quote_qty"], status, reason,
            m["filled_lots"], m["filled_quote"], m["created_ts"] or m["ts"], m["ts"], *src,
        )

    # ---------------------------------------------------------------- ledger

    def _account(self, stream: str, entry_id: str, idx: int, kind: str, m: dict[str, Any]) -> None:
        legs: list[tuple[int, str, int, int, str, str | None, int | None, int | None]] = []
        ts = m["ts"]
        if kind == "HoldTaken":
            legs.append((m["account_id"], m["asset"], -m["amount"], m["amount"], "hold", m["symbol"],
                         m["order_id"], None))
        elif kind == "HoldReleased":
            legs.append((m["account_id"], m["asset"], m["amount"], -m["amount"], "release", m["symbol"],
                         m["order_id"], None))
        elif kind == "FundsSettled":
            symbol, trade_id = m["symbol"], m["trade_id"]
            buyer, seller = m["buyer_account_id"], m["seller_account_id"]
            base, quote = m["base_asset"], m["quote_asset"]
            legs += [
                (buyer, quote, 0, -m["quote_amount"], "trade", symbol, None, trade_id),
                (buyer, base, m["base_amount"], 0, "trade", symbol, None, trade_id),
                (seller, base, 0, -m["base_amount"], "trade", symbol, None, trade_id),
                (seller, quote, m["quote_amount"], 0, "trade", symbol, None, trade_id),
            ]
            # settle reports the buyer's fee, then the seller's, each only if charged
            self._fees[stream] = [(s, True) for s, f in (("buyer", m["buyer_fee"]), ("seller", m["seller_fee"])) if f]
        elif kind == "LegSettled":  # one side of a trade, accounts split over partitions
            account, symbol, trade_id = m["account_id"], m["symbol"], m["trade_id"]
            base, quote = m["base_asset"], m["quote_asset"]
            if m["side"] == "BUY":
                legs += [(account, quote, 0, -m["quote_amount"], "trade", symbol, None, trade_id),
                         (account, base, m["base_amount"], 0, "trade", symbol, None, trade_id)]
            else:
                legs += [(account, base, 0, -m["base_amount"], "trade", symbol, None, trade_id),
                         (account, quote, m["quote_amount"], 0, "trade", symbol, None, trade_id)]
            # its fee is paid to the fee account later, by a FeesTransferred on the fee account's partition
            self._fees[stream] = [("buyer" if m["side"] == "BUY" else "seller", False)] if m["fee"] else []
        elif kind == "FeeCharged":
            pending = self._fees.get(stream) or []
            side, income = pending.pop(0) if pending else ("seller", True)
            fee = m["amount"]
            # the buyer's fee comes out of its hold (locked), the seller's out of its proceeds
            payer = (0, -fee) if side == "buyer" else (-fee, 0)
            legs.append((m["account_id"], m["asset"], *payer, "fee", m["symbol"], m["order_id"], m["trade_id"]))
            if income:
                legs.append((self.fee_account_id, m["asset"], fee, 0, "fee_income", m["symbol"], None,
                             m["trade_id"]))
        elif kind == "FeesTransferred":  # fees another accounts partition charged, now the fee account's
            legs.append((m["account_id"], m["asset"], m["amount"], 0, "fee_income", None, None, None))
        elif kind == "BalanceChanged":
            key = (m["account_id"], m["asset"])
            available, locked = self.balances.get(key, (0, 0))
            d_avail, d_locked = m["available"] - available, m["locked"] - locked
            if d_avail or d_locked:
                if d_locked == 0:
                    cause = "deposit" if d_avail > 0 else "withdrawal"
                else:
                    cause = "adjustment"
                    self.adjustments += 1
                    log.warning("balance of %s moved by (%d, %d) with no movement event", key, d_avail, d_locked)
                legs.append((m["account_id"], m["asset"], d_avail, d_locked, cause, None, None, None))
        for leg, (account, asset, d_avail, d_locked, cause, symbol, order_id, trade_id) in enumerate(legs):
            self.rows.ledger.append((stream, entry_id, idx, leg, ts, account, asset, d_avail, d_locked, cause,
                                     symbol, order_id, trade_id))
            key = (account, asset)
            available, locked = self.balances.get(key, (0, 0))
            available, locked = available + d_avail, locked + d_locked
            self.balances[key] = (available, locked)
            self.rows.balances[key] = (account, asset, available, locked, ts)
