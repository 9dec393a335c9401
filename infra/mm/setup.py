"""Accounts and funds of the simulation bots, through the operator's path (as `exchange admin` does).

`ensure_account` finds the account a bot used before (``mm:accounts``: name -> account
id) and one of its trading API keys, or creates both with `api.accounts`. `top_up`
deposits, per asset, what the account lacks to reach a target balance, using
`api.admin.deposit_command`, once the pipeline has caught up (so a deposit an earlier
run sent just before stopping is counted, not sent again): restarts keep the balances
at their targets instead of adding funds each time.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from decimal import Decimal
from typing import Any, Final

import msgspec

from api.accounts import NewKey, account_exists, create_account, create_api_key, find_api_key
from api.admin import deposit_command
from pipeline.agents.publish.readmodel import BalanceView
from pipeline.core.messages import Deposit
from pipeline.exchange import Exchange

ACCOUNTS_KEY: Final = "mm:accounts"
"""Redis hash: bot account name -> account id."""
CATCH_UP_S: Final = 15.0
"""Longest wait for the pipeline to catch up before reading balances for a top-up."""

_balance = msgspec.json.Decoder(BalanceView)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def ensure_account(client: Any, name: str) -> NewKey:
    """The account named `name` that a bot created earlier, with a trading key; created if missing."""
    raw = await client.hget(ACCOUNTS_KEY, name)
    if raw is not None and await account_exists(client, int(raw)):
        account_id = int(raw)
        for key in sorted(_text(k) for k in await client.smembers(f"acct:{account_id}:keys")):
            found = await find_api_key(client, key)
            if found is not None and found.allows("trade"):
                return NewKey(account_id, found.key, found.secret, tuple(sorted(found.permissions)))
        return await create_api_key(client, account_id)
    new = await create_account(client, name)
    if not await client.hsetnx(ACCOUNTS_KEY, name, new.account_id):  # another process won the race
        return await ensure_account(client, name)
    return new


async def balances(client: Any, account_id: int) -> dict[str, int]:
    """Free + locked of every asset of the account, in minimal units (from the balances read model)."""
    raw = await client.hgetall(f"balances:{account_id}")
    out = {}
    for asset, value in raw.items():
        view = _balance.decode(value)
        out[_text(asset)] = view.available + view.locked
    return out


def top_up_deposits(exchange: Exchange, account_id: int, have: dict[str, int],
                    targets: dict[str, Decimal]) -> list[Deposit]:
    """The deposits that bring balances `have` (minimal units) up to `targets`."""
    out = []
    for asset, target in sorted(targets.items()):
        command = deposit_command(exchange.markets, account_id, asset, str(target))
        missing = command.amount - have.get(asset, 0)
        if missing > 0:
            out.append(msgspec.structs.replace(command, amount=missing))
    return out


async def top_up(exchange: Exchange, client: Any, account_id: int, targets: dict[str, Decimal],
                 timeout: float = 30.0) -> dict[str, int]:
    """Deposit what the account lacks of each target; wait until the balances show it.

    It first waits for the pipeline to catch up, so deposits that an earlier run sent just
    before it stopped count in the balances read here (not sent twice). If the pipeline
    stays busy past `CATCH_UP_S`, it goes on with the balances it sees.
    Returns the minimal units deposited per asset (empty if nothing was missing).
    """
    with contextlib.suppress(TimeoutError):
        await exchange.app.wait_caught_up(CATCH_UP_S)
    deposits = top_up_deposits(exchange, account_id, await balances(client, account_id), targets)
    for deposit in deposits:
        await exchange.orders_in.send(deposit, key=account_id)
    await wait_for_balances(client, account_id, {d.asset: d.amount for d in deposits}, timeout,
                            goal={a: deposit_command(exchange.markets, account_id, a, str(t)).amount
                                  for a, t in targets.items()})
    return {d.asset: d.amount for d in deposits}


async def wait_for_balances(client: Any, account_id: int, pending: dict[str, int], timeout: float,
                            goal: dict[str, int]) -> None:
    """Wait until every asset in `pending` has at least its `goal` balance."""
    deadline = time.monotonic() + timeout
    while pending:
        now = await balances(client, account_id)
        if all(now.get(asset, 0) >= goal[asset] for asset in pending):
            return
        if time.monotonic() > deadline:
            raise TimeoutError(f"deposits to account {account_id} not applied within {timeout:.0f}s")
        await asyncio.sleep(0.05)
