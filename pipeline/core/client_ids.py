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
    """The remembered (account, client id) pairs of ended orders of one market, oldest first.

    Kept as two parallel queues (`times`: ended ts, `keys`: (account, client id)) plus `ids`,
    the set of the pairs, so remembering an id allocates one tuple and checking one allocates
    one. The engine's hot path inlines `contains` from these attributes (read-only there).
    """

    __slots__ = ("ids", "keys", "max_ids", "policy", "times", "window_ns")

    def __init__(self, policy: ClientIdPolicy) -> None:
        self.policy = policy
        self.window_ns = policy.window_ns
        self.max_ids = policy.max_ids
        self.times: deque[int] = deque()
        self.keys: deque[tuple[int, str]] = deque()
        self.ids: set[tuple[int, str]] = set()

    def remember(self, ts: int, account_id: int, client_order_id: str) -> None:
        """Reserve the id of an order that ended at `ts`."""
        key = (account_id, client_order_id)
        keys = self.keys
        self.times.append(ts)
        keys.append(key)
        self.ids.add(key)
        if len(keys) > self.max_ids:
            self.times.popleft()
            self.ids.discard(keys.popleft())

    def expire(self, now: int) -> None:
        """Forget the ids that ended more than the window before `now`."""
        times, keys, ids = self.times, self.keys, self.ids
        horizon = now - self.window_ns
        while times and times[0] < horizon:
            times.popleft()
            ids.discard(keys.popleft())

    def contains(self, now: int, account_id: int, client_order_id: str) -> bool:
        """Whether the id is still reserved for a command at time `now` (forgets expired ids)."""
        times = self.times
        if times and times[0] < now - self.window_ns:
            self.expire(now)
        return (account_id, client_order_id) in self.ids

    def entries(self) -> list[tuple[int, int, str]]:
        """(ended ts, account, client id), oldest first: for snapshots."""
        return [(ts, account, coid) for ts, (account, coid) in zip(self.times, self.keys, strict=True)]

    def load(self, entries: list[tuple[int, int, str]]) -> None:
        for ts, account, coid in entries:
            self.remember(ts, account, coid)
