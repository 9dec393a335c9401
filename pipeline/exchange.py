"""The exchange pipeline wired in one place: topics, tables and the five agents.

With ``config.market_partitions > 1`` the matcher runs one task per partition of
``orders.accepted`` (markets dealt round-robin, `MarketPartitioner`); its events fan
back into the single ``orders.events`` partition that publish reads. With
``config.account_partitions > 1`` validate, risk and settle run one task per accounts
partition (``account_id % account_partitions``), and settle reads its trades and order
ends from ``orders.settle`` (`pipeline.agents.topology.REKEYING`).

    exchange = build_exchange(transport, PipelineConfig.from_env())
    await exchange.app.start()
    await exchange.orders_in.send(PlaceOrder(...), key=account_id)
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.agents.accounts import SharedAccounts, accounts_tables
from pipeline.agents.match import register_match
from pipeline.agents.publish.agent import register_publish
from pipeline.agents.publish.tables import PublishTables, PublishTopics
from pipeline.agents.risk import register_risk
from pipeline.agents.settle import register_settle
from pipeline.agents.topology import (
    ACCOUNT_PARTITIONED,
    ACCOUNTS_EVENTS,
    MARKET_BBO,
    MARKET_CANDLES,
    MARKET_DEPTH,
    MARKET_PARTITIONED,
    MARKET_TICKERS,
    MARKET_TRADES,
    ORDERS_ACCEPTED,
    ORDERS_EVENTS,
    ORDERS_IN,
    ORDERS_REJECTED,
    ORDERS_SETTLE,
    ORDERS_VALID,
    USER_EVENTS,
    MarketPartitioner,
    TopicSpec,
)
from pipeline.agents.validate import register_validate
from pipeline.app import App
from pipeline.config import PipelineConfig
from pipeline.core.accounts import Accounts, AccountsSnapshot, merge_snapshots
from pipeline.core.markets import Market, load_markets
from pipeline.topics import Topic
from pipeline.transport.base import Transport


@dataclass
class Exchange:
    """The app and its topics, for producers, tests and tools."""

    app: App
    markets: dict[str, Market]
    orders_in: Topic[Any]
    orders_valid: Topic[Any]
    orders_accepted: Topic[Any]
    orders_events: Topic[Any]
    orders_rejected: Topic[Any]
    accounts_events: Topic[Any]
    orders_settle: Topic[Any] | None
    """Only with several accounts partitions (settle reads ``orders.events`` otherwise)."""
    accounts: dict[int, SharedAccounts]
    published: PublishTopics
    publish_tables: PublishTables


def build_exchange(
    transport: Transport,
    config: PipelineConfig | None = None,
    *,
    markets: Mapping[str, Market] | None = None,
    clock: Callable[[], int] = time.time_ns,
    owner: str | None = None,
) -> Exchange:
    """Declare every topic, table and agent of the exchange on a new App."""
    config = config or PipelineConfig()
    markets = dict(markets if markets is not None else load_markets(config.markets_file))
    app = App("exchange", transport, clock=clock, batch_size=config.batch_size,
              batch_messages=config.batch_messages,
              lease_ttl_ms=config.lease_ttl_ms, owner=owner)

    by_market = MarketPartitioner(markets)

    def topic(spec: TopicSpec, max_pending: int | None = None) -> Topic[Any]:
        if spec.name in MARKET_PARTITIONED:
            return app.topic(spec.name, value_type=spec.value_type, max_pending=max_pending,
                             partitions=config.market_partitions, key_to_partition=by_market)
        if spec.name in ACCOUNT_PARTITIONED:  # the default partitioner: account_id % partitions
            return app.topic(spec.name, value_type=spec.value_type, max_pending=max_pending,
                             partitions=config.account_partitions)
        return app.topic(spec.name, value_type=spec.value_type, max_pending=max_pending)

    orders_in = topic(ORDERS_IN, config.orders_max_pending)
    orders_valid = topic(ORDERS_VALID)
    orders_accepted = topic(ORDERS_ACCEPTED)
    orders_events = topic(ORDERS_EVENTS)
    orders_rejected = topic(ORDERS_REJECTED)
    accounts_events = topic(ACCOUNTS_EVENTS)
    orders_settle = topic(ORDERS_SETTLE) if config.account_partitions > 1 else None
    published = PublishTopics(topic(MARKET_DEPTH), topic(MARKET_BBO), topic(MARKET_TRADES), topic(MARKET_TICKERS),
                              topic(MARKET_CANDLES), topic(USER_EVENTS))

    partitions = config.account_partitions
    balances, holds, requests = accounts_tables(app, partitions=partitions)
    shared = {p: SharedAccounts(markets, balances, holds, requests, partition=p, partitions=partitions)
              for p in range(partitions)}

    register_validate(app, markets, orders_in, orders_valid, orders_rejected)
    register_risk(app, shared, orders_valid, orders_accepted, orders_rejected, accounts_events)
    register_match(app, markets, orders_accepted, orders_events, orders_settle)
    register_settle(app, shared, orders_settle or orders_events, accounts_events)
    for name in ("risk", "settle"):  # one owner of balances: whoever takes the accounts lease runs both
        app.agents[name].lease_name = "accounts"
    publish_tables = register_publish(app, markets, (orders_events, orders_rejected, accounts_events), published)
    return Exchange(app, markets, orders_in, orders_valid, orders_accepted, orders_events, orders_rejected,
                    accounts_events, orders_settle, shared, published, publish_tables)


def merged_engine_hash(exchange: Exchange) -> str:
    """`MatchingEngine.state_hash` of all markets, over every match partition running here.

    Each market's book comes from the partition that owns it, so the hash equals a
    single-partition engine's after the same commands (tests and `exchange state` compare them).
    """
    from pipeline.core.engine import EngineSnapshot, MatchingEngine

    topic = exchange.orders_accepted
    engines = {p: runner.state for (agent, p), runner in exchange.app.runners.items() if agent == "match"}
    missing = set(range(topic.partitions)) - set(engines)
    if missing:
        raise ValueError(f"match partitions {sorted(missing)} are not running in this process")
    markets = []
    for snapshot in MatchingEngine(exchange.markets).snapshot().markets:
        owner = engines[topic.partition_for(snapshot.symbol)]
        markets.append(next(m for m in owner.snapshot().markets if m.symbol == snapshot.symbol))
    return MatchingEngine.restore(exchange.markets, EngineSnapshot(markets)).state_hash()


def merged_accounts(exchange: Exchange) -> Accounts:
    """The accounts of every accounts partition restored here, as one `Accounts`.

    Each account lives in one partition, so its `state_hash` equals a one-partition
    exchange's after the same operations (tests and tools compare them). Reads the
    tables, so call it when no batch is in flight (or between batches).
    """
    any_state = next(iter(exchange.accounts.values()))
    parts = []
    for partition in sorted(exchange.accounts):
        try:
            balances = any_state.balances.partition(partition)
            holds = any_state.holds.partition(partition)
            requests = any_state.requests.partition(partition) if any_state.requests is not None else {}
        except KeyError:
            raise ValueError(f"accounts partition {partition} is not running in this process") from None
        parts.append(AccountsSnapshot(any_state.core.fee_account_id, list(balances.values()), list(holds.values()),
                                      list(requests)))
    return Accounts.restore(exchange.markets, merge_snapshots(parts))
