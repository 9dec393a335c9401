"""Balances per account and asset (available + locked), holds per order, and trade settlement.

The life of an order's funds, as the risk and settle stages apply it:

1. `take_hold(order)` moves the most the order can spend from available to locked
   and writes the amount (and budgets for MARKET orders) onto the command:
   - BUY LIMIT: price x qty plus the worst-case fee (taker fee; maker fee for
     LIMIT_MAKER, which never takes), rounded up;
   - BUY MARKET by quote: the quote quantity plus its worst-case taker fee; the
     budget is the quote quantity;
   - BUY MARKET by quantity: the account's whole available quote (there is no price
     to bound it); the budget is the largest notional whose fee still fits;
   - SELL LIMIT / LIMIT_MAKER / MARKET by quantity: the base quantity;
   - SELL MARKET by quote: all available base, whole lots, at most the market's max
     quantity; the base budget is that many lots.
   Not enough available: OrderRejected INSUFFICIENT_FUNDS.
2. `settle(trade)`: the buyer pays notional + fee out of its order's hold and receives
   base; the seller gives base out of its hold and receives notional - fee. Fees are in
   the quote asset and go to the fee account. An order's fees are rounded up once over
   its cumulative fills (fee charged so far = ceil(sum of notional x rate)), so they
   never exceed the worst-case fee held, whatever the number of fills.
3. When the order ends (filled, canceled, expired, rejected by the matcher) the
   unused rest of its hold is released to available.
4. A cancel-replace's new order may be funded partly by the old order's hold
   (`take_replace_hold`): what available lacks is *pledged* from the old hold, and
   moves into the new hold when the old order's end is settled, in the same step in
   which the rest of the old hold is released (HoldReleased of the old order's whole
   remainder, then HoldTaken of the pledged part for the new one).

Accounts split over partitions (`partition`, `partitions`; account ``a`` belongs to
partition ``a % partitions``): each partition's `Accounts` owns its accounts' balances
and holds only. A trade is settled leg by leg (`LegSettled`): each partition that owns
the buyer or the seller applies that side; the fees it charges are collected
(`take_fees_due`) and credited to the fee account on the fee account's partition
(`credit_fees`, from a `FeesTransferred`). Summed over partitions, the balances and holds
equal one `Accounts` that settled the same trades whole.

Deposits and withdrawals with a non-empty request id are applied once: the ids of
applied transfers are part of the state (snapshots, hash), a repeat is refused.

Available and locked never go negative: a trade that would overdraw a hold is a bug
and raises `StateError`.
"""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Mapping

import msgspec

from pipeline.core.errors import StateError
from pipeline.core.markets import MAX_AMOUNT, PPM, Market, fee_for, worst_case_fee
from pipeline.core.messages import (
    NO_BUDGET,
    BalanceChanged,
    CancelReplace,
    Deposit,
    Event,
    FeeCharged,
    FeesTransferred,
    FundsSettled,
    HoldReleased,
    HoldTaken,
    LegSettled,
    OrderCanceled,
    OrderExpired,
    OrderFilled,
    OrderRejected,
    PlaceOrder,
    RejectReason,
    TradeExecuted,
    TransferRejected,
    Withdraw,
)

DEFAULT_FEE_ACCOUNT_ID = 0


class Balance:
    """One account's amounts of one asset, in minimal units."""

    __slots__ = ("available", "locked")

    def __init__(self, available: int = 0, locked: int = 0) -> None:
        self.available = available
        self.locked = locked


class OrderHold:
    """The funds an order still holds, and the fees it has been charged so far."""

    __slots__ = ("account_id", "asset", "fee_charged", "fee_scaled", "filled_lots", "order_id", "pledge",
                 "pledge_order_id", "remaining", "symbol")

    def __init__(self, account_id: int, symbol: str, order_id: int, asset: str, remaining: int,
                 fee_scaled: int = 0, fee_charged: int = 0, filled_lots: int = 0, pledge_order_id: int = 0,
                 pledge: int = 0) -> None:
        self.account_id = account_id
        self.symbol = symbol
        self.order_id = order_id
        self.asset = asset
        self.remaining = remaining
        self.fee_scaled = fee_scaled  # sum of notional x fee ppm over the order's fills
        self.fee_charged = fee_charged  # minimal units charged: ceil(fee_scaled / PPM)
        self.filled_lots = filled_lots  # lots of the order's settled trades
        self.pledge_order_id = pledge_order_id  # a cancel-replace's new order funded by this hold (0: none)
        self.pledge = pledge  # how much of `remaining` goes to that order when this one ends

    def charge_fee(self, notional: int, fee_ppm: int) -> int:
        """The fee for one more fill, so that the order's total stays ceil(sum / PPM)."""
        self.fee_scaled += notional * fee_ppm
        fee = fee_for(self.fee_scaled) - self.fee_charged
        self.fee_charged += fee
        return fee


class BalanceState(msgspec.Struct, frozen=True, array_like=True):
    account_id: int
    asset: str
    available: int
    locked: int


class HoldState(msgspec.Struct, frozen=True, array_like=True):
    symbol: str
    order_id: int
    account_id: int
    asset: str
    remaining: int
    fee_scaled: int
    fee_charged: int
    filled_lots: int = 0
    pledge_order_id: int = 0
    pledge: int = 0


class AccountsSnapshot(msgspec.Struct, frozen=True, array_like=True):
    """All balances and holds as data, sorted, so equal states encode equally.

    `requests`: the request ids of applied deposits and withdrawals, sorted.
    """

    fee_account_id: int
    balances: list[BalanceState]
    holds: list[HoldState]
    requests: list[str] = msgspec.field(default_factory=list)


class Accounts:
    """The balances table and the per-order holds: the only writer of balances."""

    def __init__(self, markets: Mapping[str, Market], fee_account_id: int = DEFAULT_FEE_ACCOUNT_ID, *,
                 partition: int = 0, partitions: int = 1) -> None:
        if not 0 <= partition < partitions:
            raise ValueError(f"partition {partition} is not one of {partitions}")
        self.markets = dict(markets)
        self.fee_account_id = fee_account_id
        self.partition = partition
        self.partitions = partitions
        self._fees_due: dict[str, int] = {}  # asset -> fees charged here, not yet sent to the fee account
        self.assets = {m.base_asset.symbol for m in markets.values()} | {
            m.quote_asset.symbol for m in markets.values()}
        self._balances: dict[int, dict[str, Balance]] = {}
        self._holds: dict[tuple[str, int], OrderHold] = {}
        self._requests: set[str] = set()
        # With `track_changes()`: the balances and holds changed since `drain_changes()`.
        self._changed_balances: dict[tuple[int, str], None] | None = None
        self._changed_holds: dict[tuple[str, int], None] | None = None

    # ---------------------------------------------------------------- changes

    def track_changes(self) -> None:
        """Remember which balances and holds change, for `drain_changes` (off by default)."""
        self._changed_balances = {}
        self._changed_holds = {}

    def drain_changes(self) -> tuple[list[tuple[int, str]], list[tuple[str, int]]]:
        """(account, asset) balances and (symbol, order id) holds changed since the last call."""
        balances, holds = self._changed_balances, self._changed_holds
        if balances is None or holds is None:
            raise StateError("changes are not tracked: call track_changes() first")
        self._changed_balances, self._changed_holds = {}, {}
        return list(balances), list(holds)

    # ---------------------------------------------------------------- queries

    def balance(self, account_id: int, asset: str) -> tuple[int, int]:
        """(available, locked) of an account in an asset."""
        bal = self._balances.get(account_id, {}).get(asset)
        return (0, 0) if bal is None else (bal.available, bal.locked)

    def hold_of(self, symbol: str, order_id: int) -> int | None:
        """What an open order still holds, or None if it holds nothing."""
        hold = self._holds.get((symbol, order_id))
        return None if hold is None else hold.remaining

    def hold_state(self, symbol: str, order_id: int) -> HoldState | None:
        """An order's hold as data (as in snapshots), or None if it holds nothing."""
        h = self._holds.get((symbol, order_id))
        if h is None:
            return None
        return HoldState(h.symbol, h.order_id, h.account_id, h.asset, h.remaining, h.fee_scaled, h.fee_charged,
                         h.filled_lots, h.pledge_order_id, h.pledge)

    def applied_request(self, request_id: str) -> bool:
        """Whether a deposit or withdrawal with this (non-empty) request id was applied."""
        return request_id in self._requests

    def total_by_asset(self) -> dict[str, int]:
        """Sum of available + locked of every account (the fee account included) per asset."""
        totals = dict.fromkeys(sorted(self.assets), 0)
        for balances in self._balances.values():
            for asset, bal in balances.items():
                totals[asset] += bal.available + bal.locked
        return totals

    # -------------------------------------------------------- deposits / withdrawals

    def deposit(self, cmd: Deposit) -> list[Event]:
        reason = self._transfer_problem(cmd)
        if reason is not None:
            return [_transfer_rejected(cmd, reason)]
        bal = self._balance(cmd.account_id, cmd.asset)
        if bal.available + bal.locked + cmd.amount > MAX_AMOUNT:
            return [_transfer_rejected(cmd, "INVALID_AMOUNT")]
        bal.available += cmd.amount
        if cmd.request_id:
            self._requests.add(cmd.request_id)
        return [self._changed(cmd.ts, cmd.account_id, cmd.asset, cmd.amount)]

    def withdraw(self, cmd: Withdraw) -> list[Event]:
        """Take `amount` from available only: held funds cannot be withdrawn."""
        reason = self._transfer_problem(cmd)
        if reason is not None:
            return [_transfer_rejected(cmd, reason)]
        bal = self._balance(cmd.account_id, cmd.asset)
        if bal.available < cmd.amount:
            return [_transfer_rejected(cmd, "INSUFFICIENT_FUNDS")]
        bal.available -= cmd.amount
        if cmd.request_id:
            self._requests.add(cmd.request_id)
        return [self._changed(cmd.ts, cmd.account_id, cmd.asset, -cmd.amount)]

    def _transfer_problem(self, cmd: Deposit | Withdraw) -> RejectReason | None:
        if cmd.request_id and cmd.request_id in self._requests:
            return "DUPLICATE_REQUEST_ID"
        if cmd.asset not in self.assets:
            return "UNKNOWN_ASSET"
        if not 0 < cmd.amount <= MAX_AMOUNT:
            return "INVALID_AMOUNT"
        return None

    # ------------------------------------------------------------------ holds

    def take_hold(self, order: PlaceOrder) -> tuple[PlaceOrder | None, list[Event]]:
        """Hold funds for `order`: the order with `hold` (and budgets) set, or None and a rejection."""
        held, events, _ = self._take_hold(order, None)
        return held, events

    def take_replace_hold(self, command: CancelReplace) -> tuple[CancelReplace | None, list[Event]]:
        """Hold funds for a cancel-replace's new order, counting the old order's hold toward it.

        What available lacks is pledged from the old order's hold (same account and asset,
        named by order id, not already pledged to a replacement still holding funds): the
        command comes back with `old_hold_used` and `old_filled_lots` set, for the matcher.
        """
        new = command.new_order
        old = self._holds.get((command.symbol, command.cancel_order_id)) if command.cancel_order_id else None
        if old is not None and (old.account_id != new.account_id or old.symbol != new.symbol or (
                old.pledge_order_id and (old.symbol, old.pledge_order_id) in self._holds)):
            old = None
        held, events, used = self._take_hold(new, old)
        if held is None:
            return None, events
        return msgspec.structs.replace(command, new_order=held, old_hold_used=used,
                                       old_filled_lots=old.filled_lots if used and old is not None else 0), events

    def _take_hold(self, order: PlaceOrder, old: OrderHold | None) -> tuple[PlaceOrder | None, list[Event], int]:
        """`take_hold`, with the hold of `old` (if it is in the same asset) counting as available."""
        market = self.markets.get(order.symbol)
        if market is None:
            return None, [_order_rejected(order, "UNKNOWN_SYMBOL")], 0
        if (order.symbol, order.order_id) in self._holds:
            return None, [_order_rejected(order, "DUPLICATE_ORDER_ID")], 0
        is_buy = order.side == "BUY"
        asset = market.quote_asset.symbol if is_buy else market.base_asset.symbol
        bal = self._balance(order.account_id, asset)
        credit = old.remaining if old is not None and old.asset == asset else 0
        funds = bal.available + credit
        quote_budget = base_budget = NO_BUDGET
        if order.order_type != "MARKET":
            if is_buy:
                fee_ppm = market.maker_fee_ppm if order.order_type == "LIMIT_MAKER" else market.taker_fee_ppm
                notional = market.quote_amount(order.price_ticks, order.qty_lots)
                amount = notional + worst_case_fee(notional, fee_ppm)
            else:
                amount = market.base_amount(order.qty_lots)
        elif is_buy and order.quote_qty > 0:
            quote_budget = order.quote_qty
            amount = quote_budget + worst_case_fee(quote_budget, market.taker_fee_ppm)
        elif is_buy:
            amount = funds
            quote_budget = max_notional_within(amount, market.taker_fee_ppm)
            if quote_budget <= 0:
                amount = 0  # nothing affordable: rejected below
        elif order.quote_qty > 0:
            base_budget = min(funds // market.base_per_lot, market.max_qty_lots)
            amount = base_budget * market.base_per_lot
        else:
            amount = market.base_amount(order.qty_lots)
        if amount <= 0 or amount > funds:
            return None, [_order_rejected(order, "INSUFFICIENT_FUNDS")], 0
        used = amount - bal.available if amount > bal.available else 0  # pledged from `old`'s hold
        taken = amount - used
        bal.available -= taken
        bal.locked += taken
        self._holds[(order.symbol, order.order_id)] = OrderHold(
            order.account_id, order.symbol, order.order_id, asset, taken)
        changed_holds = self._changed_holds
        if changed_holds is not None:
            changed_holds[(order.symbol, order.order_id)] = None
        if used and old is not None:
            old.pledge_order_id = order.order_id
            old.pledge = used
            if changed_holds is not None:
                changed_holds[(old.symbol, old.order_id)] = None
        held = msgspec.structs.replace(order, hold=amount, quote_budget=quote_budget,
                                       base_budget_lots=base_budget)
        return held, [
            HoldTaken(order.ts, order.account_id, order.symbol, order.order_id, asset, taken),
            self._changed(order.ts, order.account_id, asset),
        ], used

    # ------------------------------------------------------------- settlement

    def settle(self, event: Event) -> list[Event]:
        """Apply one matcher event: settle a trade or release an ended order's hold."""
        kind = type(event)
        if kind is TradeExecuted:
            return self.settle_trade(event)  # type: ignore[arg-type]
        if kind in _ENDS:
            return self.release(event.ts, event.symbol, event.order_id)  # type: ignore[union-attr]
        return []

    def settle_trade(self, trade: TradeExecuted) -> list[Event]:
        """Move funds for one trade between the buyer's and the seller's holds and balances."""
        if self.partitions > 1:
            return self.settle_legs(trade)
        symbol = trade.symbol
        market = self.markets[symbol]
        quote_asset, base_asset = market.quote_asset.symbol, market.base_asset.symbol
        maker_id = trade.maker_order_id
        if trade.taker_side == "BUY":
            buy_id, sell_id = trade.taker_order_id, maker_id
            buyer_ppm, seller_ppm = market.taker_fee_ppm, market.maker_fee_ppm
        else:
            buy_id, sell_id = maker_id, trade.taker_order_id
            buyer_ppm, seller_ppm = market.maker_fee_ppm, market.taker_fee_ppm
        notional = trade.quote_amount
        lots = trade.qty_lots
        base = lots * market.base_per_lot
        holds = self._holds
        buy_hold = holds.get((symbol, buy_id)) or self._hold(symbol, buy_id)
        sell_hold = holds.get((symbol, sell_id)) or self._hold(symbol, sell_id)
        buyer_fee = buy_hold.charge_fee(notional, buyer_ppm)
        seller_fee = sell_hold.charge_fee(notional, seller_ppm)
        buy_hold.filled_lots += lots
        sell_hold.filled_lots += lots
        buyer, seller = buy_hold.account_id, sell_hold.account_id

        self._spend(buy_hold, notional + buyer_fee)
        buyer_base = self._balance(buyer, base_asset)
        buyer_base.available += base
        self._spend(sell_hold, base)
        seller_quote = self._balance(seller, quote_asset)
        seller_quote.available += notional - seller_fee
        fee_account = self.fee_account_id
        fee_quote = self._balance(fee_account, quote_asset)
        fee_quote.available += buyer_fee + seller_fee
        changed_holds = self._changed_holds
        if changed_holds is not None:
            changed_holds[(symbol, buy_id)] = None
            changed_holds[(symbol, sell_id)] = None

        ts = trade.ts
        trade_id = trade.trade_id
        events: list[Event] = [FundsSettled(ts, symbol, trade_id, buyer, seller, base_asset, quote_asset, base,
                                            notional, buyer_fee, seller_fee)]
        if buyer_fee:
            events.append(FeeCharged(ts, buyer, symbol, buy_id, trade_id, quote_asset, buyer_fee,
                                     buy_id == maker_id))
        if seller_fee:
            events.append(FeeCharged(ts, seller, symbol, sell_id, trade_id, quote_asset, seller_fee,
                                     sell_id == maker_id))
        if buyer != seller and fee_account != buyer and fee_account != seller:
            # the five balances a trade touches, all different (`_changed` of each, inlined)
            buyer_quote = self._balance(buyer, quote_asset)
            seller_base = self._balance(seller, base_asset)
            events += (
                BalanceChanged(ts, buyer, quote_asset, buyer_quote.available, buyer_quote.locked),
                BalanceChanged(ts, buyer, base_asset, buyer_base.available, buyer_base.locked),
                BalanceChanged(ts, seller, base_asset, seller_base.available, seller_base.locked),
                BalanceChanged(ts, seller, quote_asset, seller_quote.available, seller_quote.locked),
                BalanceChanged(ts, fee_account, quote_asset, fee_quote.available, fee_quote.locked),
            )
            changed_balances = self._changed_balances
            if changed_balances is not None:
                changed_balances[(buyer, quote_asset)] = None
                changed_balances[(buyer, base_asset)] = None
                changed_balances[(seller, base_asset)] = None
                changed_balances[(seller, quote_asset)] = None
                changed_balances[(fee_account, quote_asset)] = None
            return events
        touched = dict.fromkeys([(buyer, quote_asset), (buyer, base_asset), (seller, base_asset),
                                 (seller, quote_asset), (fee_account, quote_asset)])
        events.extend(self._changed(ts, account, asset) for account, asset in touched)
        return events

    # ------------------------------------------------- settlement over partitions

    def owns(self, account_id: int) -> bool:
        """Whether this partition holds the account's balances."""
        return account_id % self.partitions == self.partition

    def settle_legs(self, trade: TradeExecuted) -> list[Event]:
        """Settle the sides of a trade whose accounts this partition owns (one, both or none).

        Each side pays out of its own order's hold and is credited on its own account,
        as `settle_trade` does for the whole trade; its fee is collected for the fee
        account (`take_fees_due`) instead of credited at once.
        """
        symbol = trade.symbol
        market = self.markets[symbol]
        quote_asset, base_asset = market.quote_asset.symbol, market.base_asset.symbol
        if trade.taker_side == "BUY":
            buyer, buy_id, buyer_ppm = trade.taker_account_id, trade.taker_order_id, market.taker_fee_ppm
            seller, sell_id, seller_ppm = trade.maker_account_id, trade.maker_order_id, market.maker_fee_ppm
        else:
            buyer, buy_id, buyer_ppm = trade.maker_account_id, trade.maker_order_id, market.maker_fee_ppm
            seller, sell_id, seller_ppm = trade.taker_account_id, trade.taker_order_id, market.taker_fee_ppm
        ts, trade_id, notional, lots = trade.ts, trade.trade_id, trade.quote_amount, trade.qty_lots
        base = lots * market.base_per_lot
        events: list[Event] = []
        touched: dict[tuple[int, str], None] = {}
        if self.owns(buyer):
            hold = self._hold(symbol, buy_id)
            fee = hold.charge_fee(notional, buyer_ppm)
            hold.filled_lots += lots
            self._spend(hold, notional + fee)
            self._balance(buyer, base_asset).available += base
            events.append(LegSettled(ts, symbol, trade_id, buyer, "BUY", buy_id, base_asset, quote_asset, base,
                                     notional, fee))
            self._collect_fee(events, ts, buyer, symbol, buy_id, trade_id, quote_asset, fee,
                              buy_id == trade.maker_order_id)
            touched[(buyer, quote_asset)] = touched[(buyer, base_asset)] = None
        if self.owns(seller):
            hold = self._hold(symbol, sell_id)
            fee = hold.charge_fee(notional, seller_ppm)
            hold.filled_lots += lots
            self._spend(hold, base)
            self._balance(seller, quote_asset).available += notional - fee
            events.append(LegSettled(ts, symbol, trade_id, seller, "SELL", sell_id, base_asset, quote_asset, base,
                                     notional, fee))
            self._collect_fee(events, ts, seller, symbol, sell_id, trade_id, quote_asset, fee,
                              sell_id == trade.maker_order_id)
            touched[(seller, base_asset)] = touched[(seller, quote_asset)] = None
        if self._changed_holds is not None:
            for order_id, account in ((buy_id, buyer), (sell_id, seller)):
                if self.owns(account):
                    self._changed_holds[(symbol, order_id)] = None
        events.extend(self._changed(ts, account, asset) for account, asset in touched)
        return events

    def _collect_fee(self, events: list[Event], ts: int, account_id: int, symbol: str, order_id: int,
                     trade_id: int, asset: str, fee: int, is_maker: bool) -> None:
        if fee:
            events.append(FeeCharged(ts, account_id, symbol, order_id, trade_id, asset, fee, is_maker))
            self._fees_due[asset] = self._fees_due.get(asset, 0) + fee

    def take_fees_due(self) -> list[tuple[str, int]]:
        """(asset, amount) of the fees collected since the last call, for the fee account's partition."""
        due, self._fees_due = self._fees_due, {}
        return sorted(due.items())

    def credit_fees(self, transfer: FeesTransferred) -> list[Event]:
        """Credit fees another partition (or this one) collected to the fee account, which this one owns."""
        if transfer.account_id != self.fee_account_id or not self.owns(transfer.account_id):
            raise StateError(f"fees for account {transfer.account_id} sent to accounts partition {self.partition}")
        if transfer.amount <= 0:
            raise StateError(f"fee transfer of {transfer.amount} {transfer.asset}")
        self._balance(transfer.account_id, transfer.asset).available += transfer.amount
        return [transfer, self._changed(transfer.ts, transfer.account_id, transfer.asset)]

    def release(self, ts: int, symbol: str, order_id: int) -> list[Event]:
        """Return what an ended order still holds to available (nothing if it holds nothing)."""
        hold = self._holds.pop((symbol, order_id), None)
        if hold is None:
            return []
        if self._changed_holds is not None:
            self._changed_holds[(symbol, order_id)] = None
        if hold.remaining == 0:
            return []
        bal = self._balance(hold.account_id, hold.asset)
        if bal.locked < hold.remaining:
            raise StateError(f"locked {bal.locked} < hold {hold.remaining} of order {symbol}/{order_id}")
        events: list[Event] = [HoldReleased(ts, hold.account_id, symbol, order_id, hold.asset, hold.remaining)]
        moved = 0
        if hold.pledge_order_id:  # a cancel-replace's new order is funded partly by this hold
            target = self._holds.get((symbol, hold.pledge_order_id))
            if target is not None and target.account_id == hold.account_id and target.asset == hold.asset:
                moved = min(hold.pledge, hold.remaining)
                target.remaining += moved
                if self._changed_holds is not None:
                    self._changed_holds[(symbol, target.order_id)] = None
                events.append(HoldTaken(ts=ts, account_id=hold.account_id, symbol=symbol,
                                        order_id=target.order_id, asset=hold.asset, amount=moved))
        bal.locked -= hold.remaining - moved
        bal.available += hold.remaining - moved
        events.append(self._changed(ts, hold.account_id, hold.asset))
        return events

    # --------------------------------------------------------------- internals

    def _balance(self, account_id: int, asset: str) -> Balance:
        balances = self._balances.get(account_id)
        if balances is None:
            balances = self._balances[account_id] = {}
        bal = balances.get(asset)
        if bal is None:
            bal = balances[asset] = Balance()
        return bal

    def _hold(self, symbol: str, order_id: int) -> OrderHold:
        hold = self._holds.get((symbol, order_id))
        if hold is None:
            raise StateError(f"trade of order {symbol}/{order_id}, which holds no funds")
        return hold

    def _spend(self, hold: OrderHold, amount: int) -> None:
        bal = self._balance(hold.account_id, hold.asset)
        if amount > hold.remaining or amount > bal.locked:
            raise StateError(f"order {hold.symbol}/{hold.order_id} spends {amount} > hold {hold.remaining}")
        hold.remaining -= amount
        bal.locked -= amount

    def _changed(self, ts: int, account_id: int, asset: str, transfer: int = 0) -> BalanceChanged:
        if self._changed_balances is not None:
            self._changed_balances[(account_id, asset)] = None
        balances = self._balances.get(account_id)
        bal = None if balances is None else balances.get(asset)
        if bal is None:
            return BalanceChanged(ts, account_id, asset, 0, 0, transfer)
        return BalanceChanged(ts, account_id, asset, bal.available, bal.locked, transfer)

    # ---------------------------------------------------- state and snapshots

    def snapshot(self) -> AccountsSnapshot:
        balances = [BalanceState(account, asset, bal.available, bal.locked)
                    for account, assets in sorted(self._balances.items())
                    for asset, bal in sorted(assets.items())]
        holds = [HoldState(h.symbol, h.order_id, h.account_id, h.asset, h.remaining, h.fee_scaled,
                           h.fee_charged, h.filled_lots, h.pledge_order_id, h.pledge)
                 for _, h in sorted(self._holds.items())]
        return AccountsSnapshot(self.fee_account_id, balances, holds, sorted(self._requests))

    @classmethod
    def restore(cls, markets: Mapping[str, Market], snapshot: AccountsSnapshot, *, partition: int = 0,
                partitions: int = 1) -> Accounts:
        """The accounts of `snapshot` (one partition's, with `partition` / `partitions`)."""
        accounts = cls(markets, snapshot.fee_account_id, partition=partition, partitions=partitions)
        for b in snapshot.balances:
            accounts._balances.setdefault(b.account_id, {})[b.asset] = Balance(b.available, b.locked)
        for h in snapshot.holds:
            accounts._holds[(h.symbol, h.order_id)] = OrderHold(
                h.account_id, h.symbol, h.order_id, h.asset, h.remaining, h.fee_scaled, h.fee_charged,
                h.filled_lots, h.pledge_order_id, h.pledge)
        accounts._requests = set(snapshot.requests)
        return accounts

    def state_hash(self) -> str:
        return hashlib.blake2b(msgspec.msgpack.encode(self.snapshot()), digest_size=16).hexdigest()

    def validate_internal_state(self) -> None:
        """Raise `StateError` on a negative amount or locked funds that holds do not explain."""
        held: dict[tuple[int, str], int] = {}
        for (symbol, order_id), h in self._holds.items():
            if h.remaining < 0 or h.fee_charged != fee_for(h.fee_scaled):
                raise StateError(f"bad hold of order {symbol}/{order_id}")
            key = (h.account_id, h.asset)
            held[key] = held.get(key, 0) + h.remaining
        for account, assets in self._balances.items():
            for asset, bal in assets.items():
                if bal.available < 0 or bal.locked < 0:
                    raise StateError(f"negative balance of account {account} in {asset}")
                if bal.locked != held.get((account, asset), 0):
                    raise StateError(f"account {account} locks {bal.locked} {asset}, holds say "
                                     f"{held.get((account, asset), 0)}")


def merge_snapshots(parts: list[AccountsSnapshot]) -> AccountsSnapshot:
    """One snapshot of accounts split over partitions: every balance, hold and request id once.

    Each account lives in one partition, so the union is the whole state; the result
    hashes equal to one `Accounts` that applied the same operations (`state_hash`).
    """
    if not parts:
        raise ValueError("no partitions to merge")
    balances = sorted((b for part in parts for b in part.balances), key=lambda b: (b.account_id, b.asset))
    holds = sorted((h for part in parts for h in part.holds), key=lambda h: (h.symbol, h.order_id))
    for previous, current in itertools.pairwise(balances):
        if (previous.account_id, previous.asset) == (current.account_id, current.asset):
            raise StateError(f"balance of account {current.account_id} in {current.asset} in two partitions")
    requests = sorted(r for part in parts for r in part.requests)
    return AccountsSnapshot(parts[0].fee_account_id, balances, holds, requests)


def max_notional_within(funds: int, fee_ppm: int) -> int:
    """The largest notional n with n + its worst-case fee <= funds."""
    notional = funds * PPM // (PPM + fee_ppm)
    while notional > 0 and notional + worst_case_fee(notional, fee_ppm) > funds:
        notional -= 1
    while notional + 1 + worst_case_fee(notional + 1, fee_ppm) <= funds:
        notional += 1
    return notional


_ENDS = frozenset([OrderFilled, OrderCanceled, OrderExpired, OrderRejected])
"""Matcher events that end an order (its hold is released)."""


def _order_rejected(order: PlaceOrder, reason: RejectReason) -> OrderRejected:
    return OrderRejected(ts=order.ts, symbol=order.symbol, order_id=order.order_id,
                         client_order_id=order.client_order_id, account_id=order.account_id, reason=reason)


def _transfer_rejected(cmd: Deposit | Withdraw, reason: RejectReason) -> TransferRejected:
    return TransferRejected(ts=cmd.ts, account_id=cmd.account_id, asset=cmd.asset, amount=cmd.amount,
                            request_id=cmd.request_id, reason=reason)
