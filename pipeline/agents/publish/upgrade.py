"""Move market read-model keys from their old untagged names to the hash-tagged ones.

Before the hash tags, publish wrote ``depth:BTCUSDT:bids``, ``bbo:BTCUSDT``,
``ticker:BTCUSDT`` and ``candles:BTCUSDT:1m``; it now writes ``depth:{BTCUSDT}:bids``
and so on (`pipeline.agents.publish.readmodel`). Publish rewrites depth, book
tickers, tickers and the current candles from its own state when it starts, but the
older candles are only in the old keys. This moves every old key to its new name:

- the new key does not exist: the old value is copied (DUMP/RESTORE, any type);
- it exists (publish already wrote it): candles are merged, adding the windows the new
  key lacks (one script on the new key's slot, so publish's writes of the same window
  cannot interleave); other kinds keep the new value, written from publish's state;
- then the old key is deleted.

Run it once per Valkey, before or after starting the upgraded exchange (the old version
stopped); running it again finds nothing to move. One server or a cluster
(``redis+cluster://``); for the embedded Valkey, start it first (``exchange services up``
prints its URL)::

    REDIS_URL=redis://127.0.0.1:6379 python -m pipeline.agents.publish.upgrade [--dry-run]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.exceptions import ResponseError

from pipeline.transport.cluster import CLUSTER_SCHEME, cluster_url

KINDS: Final = ("depth", "bbo", "ticker", "candles")
_OLD: Final = re.compile(r"^(depth|bbo|ticker|candles):([^{}:]+)(:[^{}:]+)?$")
_SUFFIXES: Final = {"depth": (":bids", ":asks", ":id"), "bbo": ("",), "ticker": ("",)}

# KEYS[1]: the new sorted set; ARGV: score, member, ...: add each member whose score has none yet.
_MERGE: Final = """
local added = 0
for i = 1, #ARGV, 2 do
  if redis.call('ZCOUNT', KEYS[1], ARGV[i], ARGV[i]) == 0 then
    redis.call('ZADD', KEYS[1], ARGV[i], ARGV[i + 1])
    added = added + 1
  end
end
return added
"""


def tagged_name(key: str) -> str | None:
    """The tagged name of an old untagged market read-model key; None for any other key."""
    match = _OLD.match(key)
    if match is None:
        return None
    kind, symbol, rest = match.group(1), match.group(2), match.group(3) or ""
    if kind != "candles" and rest not in _SUFFIXES[kind]:
        return None
    if kind == "candles" and not rest:
        return None
    return f"{kind}:{{{symbol}}}{rest}"


@dataclass
class UpgradeReport:
    """What `upgrade_keys` did (or would do, dry run)."""

    copied: int = 0
    """Old keys copied to a new name that did not exist."""
    merged: int = 0
    """Old candle keys merged into an existing new one."""
    kept_new: int = 0
    """Old keys dropped because publish had written the new one."""
    windows_added: int = 0
    """Candles added by merging."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def old_keys(client: Any) -> list[str]:
    """Every old untagged market read-model key, sorted."""
    found: set[str] = set()
    for kind in KINDS:
        async for raw in client.scan_iter(match=f"{kind}:*", count=1000):
            key = _text(raw)
            if tagged_name(key) is not None:
                found.add(key)
    return sorted(found)


async def upgrade_keys(client: Any, *, dry_run: bool = False) -> UpgradeReport:
    """Move every old key to its tagged name (see the module docstring)."""
    report = UpgradeReport()
    for old in await old_keys(client):
        new = tagged_name(old)
        assert new is not None
        exists = bool(await client.exists(new))
        if not exists:
            report.copied += 1
            if not dry_run:
                dumped = await client.dump(old)
                try:
                    await client.restore(new, 0, dumped)
                except ResponseError as exc:  # publish wrote it meanwhile: keep publish's value
                    if "BUSYKEY" not in str(exc):
                        raise
                    report.copied -= 1
                    exists = True
        if exists and old.startswith("candles:"):
            report.merged += 1
            pairs = await client.zrange(old, 0, -1, withscores=True)
            args = [part for member, score in pairs for part in (str(int(score)), member)]
            if args and not dry_run:
                report.windows_added += int(await client.eval(_MERGE, 1, new, *args))
        elif exists:
            report.kept_new += 1
        if not dry_run:
            await client.delete(old)
    return report


def open_client(url: str) -> Any:
    """A plain client for `url` (bytes): a cluster client for ``redis+cluster://``."""
    if url.startswith(CLUSTER_SCHEME):
        return RedisCluster.from_url(cluster_url(url), decode_responses=False)
    return Redis.from_url(url, decode_responses=False)


async def _main(url: str, dry_run: bool) -> UpgradeReport:
    client = open_client(url)
    try:
        return await upgrade_keys(client, dry_run=dry_run)
    finally:
        await client.aclose()


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: move the keys of the Valkey at ``--redis-url`` (default ``$REDIS_URL``)."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.agents.publish.upgrade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""),
                        help="the Valkey/Redis (redis:// or redis+cluster://); default $REDIS_URL")
    parser.add_argument("--dry-run", action="store_true", help="count what would move; change nothing")
    args = parser.parse_args(argv)
    if not args.redis_url:
        print("error: set --redis-url or REDIS_URL (for the embedded Valkey: `exchange services up`)",
              file=sys.stderr)
        return 2
    report = asyncio.run(_main(args.redis_url, args.dry_run))
    rows = [("old keys copied to their tagged names", report.copied),
            ("old candle keys merged into existing ones", report.merged),
            ("candles added by merging" + (" (not counted in a dry run)" if args.dry_run else ""),
             report.windows_added),
            ("old keys whose tagged key publish already wrote", report.kept_new)]
    width = max(len(label) for label, _ in rows)
    for label, count in rows:
        print(f"{label.ljust(width)}  {count:>8}")
    total = report.copied + report.merged + report.kept_new
    print(f"{total} old keys {'would be' if args.dry_run else 'were'} removed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
