"""The accounts state shared by risk and settle: the pure `Accounts` core, mirrored into tables.

Risk (holds) and settle (transfers, releases) are two agents of one owner of
balances, like the two stages of exchange-core's risk engine. They run in the same
worker and take turns batch by batch (their tables' lock). The core object does the
arithmetic; every balance and hold it changes is written to the ``balances`` and
``holds`` tables, whose changelogs commit atomically with each batch. After a
restart, or after a poison event rolled a batch back, the core is rebuilt from the
tables.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.app import App
from pipeline.context import MISSING
from pipeline.core.accounts import Accounts, AccountsSnapshot, BalanceState, HoldState
from pipeline.core.markets import Market
from pipeline.core.messages import BalanceChanged, Event
from pipeline.tables.table import Table

HoldKey = tuple[str, int]
BalanceKey = tuple[int, str]


class SharedAccounts:
    """One partition's accounts core plus the tables that make it durable."""

    def __init__(self, markets: Mapping[str, Market], balances: Table[Any, Any], holds: Table[Any, Any]) -> None:
        self.markets = markets
        self.balances = balances
        self.holds = holds
        self.core = Accounts(markets)
        self.stale = True

    def refresh(self) -> Accounts:
        """The core, rebuilt from the tables first if it may differ from them."""
        if self.stale:
            snapshot = AccountsSnapshot(
                self.core.fee_account_id,
                sorted(self.balances.values(), key=lambda b: (b.account_id, b.asset)),
                sorted(self.holds.values(), key=lambda h: (h.symbol, h.order_id)),
            )
            self.core = Accounts.restore(self.markets, snapshot)
            self.stale = False
        return self.core

    def mirror(self, events: Iterable[Event], hold_keys: Iterable[HoldKey]) -> None:
        """Write what the core just changed into the tables."""
        balances = [((event.account_id, event.asset),
                     BalanceState(event.account_id, event.asset, event.available, event.locked))
                    for event in events if type(event) is BalanceChanged]
        if balances:
            self.balances.write_many(balances)
        hold_state, holds = self.core.hold_state, self.holds
        changed: list[tuple[HoldKey, Any]] = []
        for key in hold_keys:
            state = hold_state(*key)
            if state is not None:
                changed.append((key, state))
            elif key in holds:
                changed.append((key, MISSING))
        if changed:
            holds.write_many(changed)


def accounts_tables(app: App, partitions: int) -> tuple[Table[Any, Any], Table[Any, Any]]:
    """Declare the two tables of the accounts state."""
    balances = app.Table("balances", key_type=tuple[int, str], value_type=BalanceState, partitions=partitions)
    holds = app.Table("holds", key_type=tuple[str, int], value_type=HoldState, partitions=partitions)
    return balances, holds
