"""Where the runtime's keys live in a Redis/Valkey Cluster: hash tags per partition.

A cluster runs a script only if every key it touches hashes to one slot, and a key
with ``{...}`` in it hashes by the text between the braces. So every key of one
partition number shares the tag ``{p<N>}``:

- a partition's stream ``orders.in:3`` is stored as ``{p3}orders.in:3``, its counters
  as ``{p3}meta:orders.in:3`` and its registered consumers as ``{p3}consumers:orders.in:3``;
- table changelogs (``changelog.balances:3``) and leases (``lease:risk:3``) end with the
  partition number too, so they get the same tag;
- a consumer's committed positions are one hash per tag: ``{p3}pos:risk``.

So an agent's batch on partition N (input offsets, changelog, lease check, outputs to
partition N of other topics) commits in one slot, and all topics' partition N live
on the same cluster node. A name without a ``:<N>`` suffix (``dlq``) is tagged by
itself: ``{dlq}dlq``. Outputs to another tag go through an outbox (see
`pipeline.transport.cluster`).
"""

from __future__ import annotations

import re
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

_PARTITION = re.compile(r":(\d+)$")
_TAGGED = re.compile(r"^\{[^{}]+\}")


def tag(name: str) -> str:
    """The hash tag (with braces) of a logical stream, lease or changelog name."""
    match = _PARTITION.search(name)
    return f"{{p{match.group(1)}}}" if match else f"{{{name}}}"


def physical(name: str) -> str:
    """The cluster key of a logical stream name: its tag, then the name."""
    return tag(name) + name


def logical(key: str) -> str:
    """The logical name of a cluster key made by `physical` (other keys unchanged)."""
    return _TAGGED.sub("", key, count=1)


def slot(key: str | bytes) -> int:
    """The cluster slot of a key (hash tags honoured)."""
    return int(key_slot(key.encode() if isinstance(key, str) else key))


def tag_slot(hash_tag: str) -> int:
    """The slot of every key carrying `hash_tag` (braces included)."""
    return slot(hash_tag + "x")


@cache
def _slot_tags() -> tuple[str, ...]:
    """For each slot, a short tag (with braces) whose keys hash there: built once, about a second."""
    tags: list[str | None] = [None] * REDIS_CLUSTER_HASH_SLOTS
    missing, i = REDIS_CLUSTER_HASH_SLOTS, 0
    while missing:
        text = f"s{i}"
        s = int(key_slot(text.encode()))
        if tags[s] is None:
            tags[s] = "{" + text + "}"
            missing -= 1
        i += 1
    return tuple(t or "" for t in tags)


def marker_key(target_slot: int) -> str:
    """The hash, in `target_slot`, that records how far each outbox was forwarded into that slot."""
    return _slot_tags()[target_slot] + "fwd"
