"""How long a market remembers the client order ids of finished orders.

The idempotency rule: a PlaceOrder whose (account, client_order_id) belongs to an
order of that market that is open, or that ended (filled, canceled or expired)
no more than `window_ns` before the command's `ts` and is among the last
`max_ids` ended orders of the market, is rejected DUPLICATE_CLIENT_ORDER_ID. So a
client retrying a request within the window can never execute it twice. Rejected
orders never reserve their id. Time is the commands' `ts`, so the rule is
deterministic and replays identically.
"""

from __future__ import annotations

from collections import deque
from typing import Final

import msgspec

DEFAULT_WINDOW_NS: Final = 15 * 60 * 1_000_000_000
DEFAULT_MAX_IDS: Final = 500_000


class ClientIdPolicy(msgspec.Struct, frozen=True):
    """How long ended orders' client ids stay reserved: whichever limit is reached first."""

    window_ns: int = DEFAULT_WINDOW_NS
    max_ids: int = DEFAULT_MAX_IDS


class EndedClientIds:
    """The remembered (account, client id) pairs of ended orders of one market, oldest first."""

    __slots__ = ("_ids", "_queue", "policy")

    def __init__(self, policy: ClientIdPolicy) -> None:
        self.policy = policy
        self._queue: deque[tuple[int, int, str]] = deque()
        self._ids: set[tuple[int, str]] = set()

    def remember(self, ts: int, account_id: int, client_order_id: str) -> None:
        """Reserve the id of an order that ended at `ts`."""
        self._queue.append((ts, account_id, client_order_id))
        self._ids.add((account_id, client_order_id))
        if len(self._queue) > self.policy.max_ids:
            _, account, coid = self._queue.popleft()
            self._ids.discard((account, coid))

    def contains(self, now: int, account_id: int, client_order_id: str) -> bool:
        """Whether the id is still reserved for a command at time `now` (forgets expired ids)."""
        queue = self._queue
        horizon = now - self.policy.window_ns
        while queue and queue[0][0] < horizon:
            _, account, coid = queue.popleft()
            self._ids.discard((account, coid))
        return (account_id, client_order_id) in self._ids

    def entries(self) -> list[tuple[int, int, str]]:
        """(ended ts, account, client id), oldest first: for snapshots."""
        return list(self._queue)

    def load(self, entries: list[tuple[int, int, str]]) -> None:
        for ts, account, coid in entries:
            self.remember(ts, account, coid)
