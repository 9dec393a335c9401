"""Configuration of snapshots and stream trimming, read from the environment in one place.

- `EXCHANGE_SNAPSHOT_INTERVAL` (300): seconds between periodic snapshots of every stateful agent;
  0 = only on demand (`exchange snapshot now`) and at clean shutdown.
- `EXCHANGE_SNAPSHOT_CAPTURE` (`fork`): `fork` = a child process serialises a copy-on-write image of
  the state (the agent pauses a few ms); `copy` = copy the state in the event loop (the pause grows
  with the state: hundreds of ms at 100k orders), then serialise in a thread.
- `EXCHANGE_SNAPSHOT_RETAIN` (10): snapshots kept per agent and partition (older ones are deleted).
- `EXCHANGE_SNAPSHOT_ZSTD_LEVEL` (3): zstd level of payloads.
- `EXCHANGE_TRIM` (1): trim streams after each snapshot (0 = never trim).
- `EXCHANGE_TRIM_KEEP_SNAPSHOTS` (2): streams keep what the oldest of the newest N snapshots of each
  agent needs, so a corrupt latest snapshot can still fall back to the one before.
- `EXCHANGE_TRIM_KEEP_SECONDS` (3600): entries younger than this are never trimmed (readers of
  recent history, e.g. recent trades).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Literal

import msgspec

Capture = Literal["fork", "copy"]


class SnapshotConfig(msgspec.Struct, frozen=True, kw_only=True):
    """When and how agents snapshot their state, and how streams are trimmed."""

    interval_s: float = 300.0
    capture: Capture = "fork"
    retain: int = 10
    zstd_level: int = 3
    trim: bool = True
    trim_keep_snapshots: int = 2
    trim_keep_seconds: float = 3600.0
    request_poll_s: float = 0.25
    """How often running agents look for `exchange snapshot now` requests."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> SnapshotConfig:
        """Read the config from `environ`; empty values count as unset."""
        default = cls()
        capture = environ.get("EXCHANGE_SNAPSHOT_CAPTURE", "").strip() or default.capture
        if capture not in ("fork", "copy"):
            raise ValueError(f"EXCHANGE_SNAPSHOT_CAPTURE must be fork or copy, not {capture!r}")
        if capture == "fork" and not hasattr(os, "fork"):
            capture = "copy"
        return cls(
            interval_s=_number(environ, "EXCHANGE_SNAPSHOT_INTERVAL", default.interval_s),
            capture=capture,  # type: ignore[arg-type]
            retain=max(2, int(_number(environ, "EXCHANGE_SNAPSHOT_RETAIN", default.retain))),
            zstd_level=int(_number(environ, "EXCHANGE_SNAPSHOT_ZSTD_LEVEL", default.zstd_level)),
            trim=environ.get("EXCHANGE_TRIM", "1").strip() not in ("0", "false", "no"),
            trim_keep_snapshots=max(1, int(_number(environ, "EXCHANGE_TRIM_KEEP_SNAPSHOTS",
                                                   default.trim_keep_snapshots))),
            trim_keep_seconds=_number(environ, "EXCHANGE_TRIM_KEEP_SECONDS", default.trim_keep_seconds),
        )


def _number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw!r}") from None
    if value < 0:
        raise ValueError(f"{name} must not be negative, not {raw}")
    return value
