"""Replay a topic into an isolated core: the books, balances and state hash the input leads to.

    core = await replay_state("orders.in", redis_url=url, end="-5m")   # every partition of orders.in, merged
    core.state_hash(), core.hashes()      # {"match": ..., "accounts": ...}
    core.engine.book("BTCUSDT").depth(5)

The core is built here from the pure pieces the agents wrap (`ReplayCore`: the core's
`ExchangeCore`, i.e. validation, the accounts core and the matching engine applied in the
order the pipeline applies them), and never touches the live agents. The live state after the same
input has the same hashes: match's engine (`MatchingEngine.state_hash`) and risk/settle's
accounts (`Accounts.state_hash`), so `exchange state diff` can compare a snapshot with a
replay component by component.

Topics that can be replayed: ``orders.in`` (every stage), ``orders.valid`` (risk, match,
settle: what passed validation) and ``orders.accepted`` (match only: books, no balances).
A topic name reads all its partitions as one sequence merged by entry id; ``topic:N`` one
partition (`recovery.replay_topic` says what positions mean across partitions).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import msgspec

from pipeline.agents.match import book_change
from pipeline.agents.topology import ORDERS_ACCEPTED, ORDERS_IN, ORDERS_VALID
from pipeline.core.accounts import Accounts, AccountsSnapshot
from pipeline.core.engine import EngineSnapshot, MatchingEngine
from pipeline.core.exchange import ExchangeCore
from pipeline.core.markets import Market
from pipeline.core.messages import SetMarketStatus
from pipeline.messages import Codec
from recovery.replay_source import MessageId, MessageKey, ReplayError, open_client
from recovery.replay_topic import MergedKey, TopicSource, resolve_topic, split_name

REPLAYABLE: Final = {ORDERS_IN.name: "every stage: validate, risk, match, settle",
                     ORDERS_VALID.name: "risk, match, settle (input that passed validation)",
                     ORDERS_ACCEPTED.name: "match only (books, no balances)"}
_VALUE_TYPES: Final = {ORDERS_IN.name: ORDERS_IN.value_type, ORDERS_VALID.name: ORDERS_VALID.value_type,
                       ORDERS_ACCEPTED.name: ORDERS_ACCEPTED.value_type}


class ReplayCore:
    """The exchange's stateful stages as plain objects: `ExchangeCore` (validate, risk, match, settle).

    `ExchangeCore` is the core's own statement of what the pipeline does to one command,
    kept in step with the agents by the core's tests; `stages` is the topic the input comes
    from (see `REPLAYABLE`): ``orders.accepted`` input goes to the matching engine alone.
    `apply` returns the events a command caused, plus the `BookChanged` match emits after it.
    """

    def __init__(self, markets: Mapping[str, Market], *, stages: str = ORDERS_IN.name,
                 engine: MatchingEngine | None = None, accounts: Accounts | None = None) -> None:
        if stages not in REPLAYABLE:
            raise ReplayError(f"cannot replay {stages!r} into a core: replayable topics are {', '.join(REPLAYABLE)}")
        self.markets = dict(markets)
        self.stages = stages
        self.engine = engine if engine is not None else MatchingEngine(self.markets)
        self.core = ExchangeCore(self.markets, matcher=self.engine)
        if accounts is not None:
            self.core.accounts = accounts
        self.applied = 0
        self.failed = 0
        self.position: MessageId | None = None
        """The last input message applied."""

    @property
    def accounts(self) -> Accounts:
        return self.core.accounts

    @classmethod
    def from_snapshots(cls, markets: Mapping[str, Market], engine: EngineSnapshot | None,
                       accounts: AccountsSnapshot | None, **options: Any) -> ReplayCore:
        """A core starting from snapshotted state (for replaying input after a snapshot's offsets)."""
        return cls(markets, engine=MatchingEngine.restore(markets, engine) if engine else None,
                   accounts=Accounts.restore(markets, accounts) if accounts else None, **options)

    def apply(self, command: Any) -> list[Any]:
        """Apply one input message through the stages this core runs; the events it caused."""
        if self.stages == ORDERS_ACCEPTED.name:
            events: list[Any] = self.engine.process(command)
        elif self.stages == ORDERS_VALID.name and isinstance(command, SetMarketStatus):
            events = self.engine.process(command)  # validate already dropped unknown symbols
        else:
            events = self.core.process(command)
        symbol = getattr(command, "symbol", None)
        if symbol in self.markets:
            change = book_change(self.engine, command.ts, symbol)
            if change is not None:
                events.append(change)
        self.applied += 1
        return events

    # -- state ------------------------------------------------------------------------------------

    def hashes(self) -> dict[str, str]:
        """The state hash of each component, named after the agents that own it live."""
        return {"match": self.engine.state_hash(), "accounts": self.accounts.state_hash()}

    def state_hash(self) -> str:
        """One hash of the whole replayed state (the components' hashes, in a fixed order)."""
        return combined_hash(self.hashes())

    def validate_internal_state(self) -> None:
        self.engine.validate_internal_state()
        self.accounts.validate_internal_state()


def combined_hash(hashes: Mapping[str, str]) -> str:
    """One hash over named component hashes (sorted by name)."""
    digest = hashlib.blake2b(digest_size=16)
    for name in sorted(hashes):
        digest.update(f"{name}={hashes[name]};".encode())
    return digest.hexdigest()


StepHook = Callable[[MessageId, Any, list[Any]], None]
"""Called after each applied message with its id, the message and the events it caused."""


@dataclass
class ReplayProgress:
    """Calls `report(applied, position)` at most every `interval` seconds during a replay."""

    report: Callable[[int, MessageId], None]
    interval: float = 0.5
    _last: float = field(default=0.0, init=False)

    def __call__(self, applied: int, position: MessageId) -> None:
        now = time.monotonic()
        if now - self._last >= self.interval:
            self._last = now
            self.report(applied, position)


async def replay_into(core: ReplayCore, client: Any, source: TopicSource | str, *, start: MergedKey | None = None,
                      end: MergedKey | None = None, database_url: str | None = None,
                      on_step: StepHook | None = None, progress: ReplayProgress | None = None) -> ReplayCore:
    """Apply the messages of `source` from `start` to `end` to `core`; returns it.

    `source` is a `TopicSource` (every partition of a topic merged, or one), or a stream
    name ``topic:N``; bounds are `TopicSource.bound`'s (see `recovery.replay_topic`).
    """
    if isinstance(source, str):
        source = await resolve_topic(client, source, database_url)
    codec: Codec[Any] = Codec(_VALUE_TYPES[core.stages])
    decode = codec.decode
    async for message_id, raw in source.read(client, start, end, database_url):
        try:
            command = decode(raw)
        except (msgspec.DecodeError, msgspec.ValidationError):
            core.failed += 1  # the agent dead-letters it too: it changes nothing
            continue
        events = core.apply(command)
        core.position = message_id
        if on_step is not None:
            on_step(message_id, command, events)
        if progress is not None:
            progress(core.applied, message_id)
    return core


Bound = str | MessageKey | None
"""A bound of `replay_state`: text as the CLI takes it (``1764547200123-0#2@p1``, a time, ``end``),
a `parse_bound` key (one stream's, or an entry id / time in every partition), or None (the edge)."""


async def replay_state(
    topic: str = ORDERS_IN.name,
    *,
    redis_url: str,
    database_url: str | None = None,
    start: Bound = None,
    end: Bound = None,
    markets: Mapping[str, Market] | None = None,
    base: ReplayCore | None = None,
    on_step: StepHook | None = None,
    progress: ReplayProgress | None = None,
) -> ReplayCore:
    """Replay `topic` (every partition, merged by entry id) or a stream ``topic:p`` from `start` to `end`.

    Returns the isolated core it applied them to. `base` continues a core (e.g. one restored
    from a snapshot with `ReplayCore.from_snapshots`, then `start` just after the snapshot's
    offset); otherwise an empty core over `markets` (default: the configured markets) starts
    from nothing, so `start` should be the stream's beginning for balances and books to be
    complete. Entries trimmed from Redis are read from the archive at `database_url`.
    """
    from pipeline.config import PipelineConfig
    from pipeline.core.markets import load_markets

    topic_name, _ = split_name(topic)
    if base is None:
        if markets is None:
            markets = load_markets(PipelineConfig.from_env().markets_file)
        base = ReplayCore(markets, stages=topic_name)
    elif base.stages != topic_name:
        raise ReplayError(f"the base core runs the stages of {base.stages}, not of {topic_name}")
    client = open_client(redis_url)  # one server, or a cluster for a redis+cluster:// URL
    try:
        source = await resolve_topic(client, topic, database_url)
        return await replay_into(base, client, source, start=_bound(source, start, "from"),
                                 end=_bound(source, end, "to"), database_url=database_url,
                                 on_step=on_step, progress=progress)
    finally:
        await client.aclose()


def _bound(source: TopicSource, bound: Bound, side: str) -> MergedKey | None:
    return source.bound(bound, side) if isinstance(bound, str) else source.position(bound, side)
