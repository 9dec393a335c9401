"""The accounts state shared by risk and settle: the pure `Accounts` core, mirrored into tables.

Risk (holds) and settle (transfers, releases) are two agents of one owner of
balances, like the two stages of exchange-core's risk engine. They run in the same
worker and take turns batch by batch (their tables' lock). The core object does the
arithmetic; every balance and hold it changes is written to the ``balances`` and
``holds`` tables (and applied deposits' and withdrawals' request ids to
``transfer_requests``), whose changelogs commit atomically with each batch. After a
restart, or after a poison event rolled a batch back, the core is rebuilt from the
tables.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipeline.app import App
from pipeline.context import MISSING
from pipeline.core.accounts import Accounts, AccountsSnapshot, BalanceState, HoldState
from pipeline.core.markets import Market
from pipeline.tables.table import Table

HoldKey = tuple[str, int]
BalanceKey = tuple[int, str]


class SharedAccounts:
    """One accounts partition's core plus the tables that make it durable."""

    def __init__(self, markets: Mapping[str, Market], balances: Table[Any, Any], holds: Table[Any, Any],
                 requests: Table[Any, Any] | None = None, *, partition: int = 0, partitions: int = 1) -> None:
        self.markets = markets
        self.balances = balances
        self.holds = holds
        self.requests = requests
        self.partition = partition
        self.partitions = partitions
        self.core = Accounts(markets, partition=partition, partitions=partitions)
        self.stale = True

    def refresh(self) -> Accounts:
        """The core, rebuilt from the tables first if it may differ from them."""
        if self.stale:
            snapshot = AccountsSnapshot(
                self.core.fee_account_id,
                sorted(self.balances.values(), key=lambda b: (b.account_id, b.asset)),
                sorted(self.holds.values(), key=lambda h: (h.symbol, h.order_id)),
                sorted(self.requests) if self.requests is not None else [],
            )
            self.core = Accounts.restore(self.markets, snapshot, partition=self.partition,
                                         partitions=self.partitions)
            self.core.track_changes()
            self.stale = False
        return self.core

    def flush(self) -> None:
        """Write the balances and holds the core changed since the last flush into the tables.

        Called once at the end of each batch (the tables keep one changelog entry per key
        and batch anyway): the final value of each, not one write per event.
        """
        core = self.core
        balance_keys, hold_keys = core.drain_changes()
        if balance_keys:
            balance = core.balance
            self.balances.write_many([(key, BalanceState(key[0], key[1], *balance(*key))) for key in balance_keys])
        if hold_keys:
            hold_state, holds = core.hold_state, self.holds
            changed: list[tuple[HoldKey, Any]] = []
            for key in hold_keys:
                state = hold_state(*key)
                if state is not None:
                    changed.append((key, state))
                elif key in holds:
                    changed.append((key, MISSING))
            if changed:
                holds.write_many(changed)

    def record_request(self, request_id: str) -> None:
        """Make an applied deposit's or withdrawal's request id durable."""
        if request_id and self.requests is not None and self.core.applied_request(request_id):
            self.requests[request_id] = 1


def accounts_tables(app: App, partitions: int) -> tuple[Table[Any, Any], Table[Any, Any], Table[Any, Any]]:
    """Declare the three tables of the accounts state: balances, holds, applied transfer request ids."""
    balances = app.Table("balances", key_type=tuple[int, str], value_type=BalanceState, partitions=partitions)
    holds = app.Table("holds", key_type=tuple[str, int], value_type=HoldState, partitions=partitions)
    requests = app.Table("transfer_requests", key_type=str, value_type=int, partitions=partitions)
    return balances, holds, requests
