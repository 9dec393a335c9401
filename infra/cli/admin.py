"""`exchange admin ...`: the operator's way in (accounts, API keys, deposits, market status).

Talks to the stream store directly (REDIS_URL or the running embedded Valkey): access
to it is the operator's credential. Secrets are printed once, at creation, never logged.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from infra.cli.common import ToolError, redis_url


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser("admin", help="operator actions: accounts, API keys, deposits, market status")
    sub = parser.add_subparsers(dest="admin_command", metavar="ACTION", required=True)
    create = sub.add_parser("create-account", help="create an account; prints its id, API key and secret")
    create.add_argument("name")
    create.add_argument("--admin", action="store_true", help="give its key the admin permission")
    create.set_defaults(func=lambda a: _run(_create_account(a)))
    key = sub.add_parser("api-key", help="create another API key for an account; prints key and secret")
    key.add_argument("account", type=int)
    key.add_argument("--read-only", action="store_true", help="without the trade permission")
    key.set_defaults(func=lambda a: _run(_api_key(a)))
    revoke = sub.add_parser("revoke-key", help="delete an API key")
    revoke.add_argument("key")
    revoke.set_defaults(func=lambda a: _run(_revoke(a)))
    deposit = sub.add_parser("deposit", help="credit ASSET AMOUNT to ACCOUNT (a Deposit command into orders.in)")
    deposit.add_argument("account", help="an account id, or the user name of a web UI account")
    deposit.add_argument("asset")
    deposit.add_argument("amount")
    deposit.set_defaults(func=lambda a: _run(_deposit(a)))
    market = sub.add_parser("market", help="halt or resume trading in a market")
    market.add_argument("symbol")
    market.add_argument("status", choices=["trading", "halted"])
    market.set_defaults(func=lambda a: _run(_market(a)))


def _run(coro: Any) -> int:
    from api.admin import AdminError

    try:
        return int(asyncio.run(coro))
    except (ToolError, AdminError, LookupError) as exc:
        coro.close()
        print(f"error: {exc}", file=sys.stderr)
        return 1


async def _with_exchange(action: Any) -> int:
    from pipeline.config import PipelineConfig
    from pipeline.exchange import build_exchange
    from pipeline.layout import check_layout
    from pipeline.transport.cluster import ClusterTransport, open_transport
    from pipeline.transport.redis import RedisTransport

    transport = open_transport(redis_url())  # redis+cluster:// -> ClusterTransport (api.store covers the client)
    assert isinstance(transport, RedisTransport | ClusterTransport)
    try:
        exchange = build_exchange(transport, PipelineConfig.from_env())
        await check_layout(exchange)  # a deposit keyed with other partition counts would land on the wrong one
        return int(await action(exchange, transport.client))
    finally:
        await transport.close()


def _print_key(new: Any) -> None:
    print(f"account: {new.account_id}")
    print(f"api key: {new.api_key}")
    print(f"secret:  {new.secret}")
    print(f"permissions: {','.join(new.permissions)}")


async def _create_account(args: argparse.Namespace) -> int:
    from api.accounts import create_account

    async def action(_: Any, client: Any) -> int:
        _print_key(await create_account(client, args.name, admin=args.admin))
        return 0

    return await _with_exchange(action)


async def _api_key(args: argparse.Namespace) -> int:
    from api.accounts import USER_PERMISSIONS, create_api_key

    async def action(_: Any, client: Any) -> int:
        _print_key(await create_api_key(client, args.account, ("read",) if args.read_only else USER_PERMISSIONS))
        return 0

    return await _with_exchange(action)


async def _revoke(args: argparse.Namespace) -> int:
    from api.accounts import revoke_api_key

    async def action(_: Any, client: Any) -> int:
        if not await revoke_api_key(client, args.key):
            raise LookupError("no such API key")
        print("revoked")
        return 0

    return await _with_exchange(action)


async def _account_id(client: Any, account: str) -> int:
    """`account` as an id, or the account of the web user named so (user names are not all digits)."""
    if account.isdigit():
        return int(account)
    found = await client.hget(f"user:{account.lower()}", "account_id")
    if found is None:
        raise LookupError(f"no account or user named {account!r}")
    return int(found)


async def _deposit(args: argparse.Namespace) -> int:
    from api.accounts import account_exists
    from api.admin import deposit_command

    async def action(exchange: Any, client: Any) -> int:
        account = await _account_id(client, args.account)
        if not await account_exists(client, account):
            raise LookupError(f"no account {args.account}")
        command = deposit_command(exchange.markets, account, args.asset, args.amount)
        entry = await exchange.orders_in.send(command, key=account)
        print(f"deposit of {args.amount} {args.asset} to account {account} queued ({entry})")
        return 0

    return await _with_exchange(action)


async def _market(args: argparse.Namespace) -> int:
    from api.admin import market_command, set_market_status

    async def action(exchange: Any, client: Any) -> int:
        command = market_command(exchange.markets, args.symbol, args.status)

        async def send(key: Any, value: Any) -> None:
            await exchange.orders_in.send(value, key=key)

        await set_market_status(client, send, command, exchange.orders_in.partitions)
        print(f"{command.symbol}: {command.status}")
        return 0

    return await _with_exchange(action)
