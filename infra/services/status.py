"""What `status()` reports about one backing server."""

from __future__ import annotations

import enum
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import msgspec


class ServiceState(enum.StrEnum):
    """The state of one backing server."""

    RUNNING = "running"
    """Embedded, started from our data dir, answering."""
    STOPPED = "stopped"
    """Embedded, not running (a stale pid file may remain until the next start)."""
    NOT_ANSWERING = "not-answering"
    """Embedded process alive but it does not answer (starting, stuck, or not ours)."""
    EXTERNAL_UP = "external-up"
    """Given by URL and answering."""
    EXTERNAL_DOWN = "external-down"
    """Given by URL and not answering."""

    @property
    def ok(self) -> bool:
        """Whether the server can be used."""
        return self in (ServiceState.RUNNING, ServiceState.EXTERNAL_UP)


class ServiceStatus(msgspec.Struct, frozen=True, kw_only=True):
    """One row of `exchange services status`. `url` never contains a password."""

    name: str
    state: ServiceState
    url: str | None = None
    pid: int | None = None
    port: int | None = None
    data_dir: Path | None = None
    detail: str = ""


def redact_url(url: str) -> str:
    """The URL with any password replaced by `***`, safe to print or log."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        user = parts.username or ""
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port is not None else ""
    except ValueError:
        return "<unparsable url>"
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{user}:***@{host}{port}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
