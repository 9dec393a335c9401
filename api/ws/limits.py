"""WebSocket limits, as Binance's spot WebSocket servers apply them.

- Connection attempts per client IP: at most `per_window` (Binance: 300) in a sliding
  window (5 minutes); beyond that the handshake is refused with HTTP 429 and
  `Retry-After` (`deny`), where the server supports ASGI denial responses, else closed.
- Incoming messages per connection (market streams): at most `per_second` (Binance: 5)
  JSON requests in any one-second window; a connection that goes beyond is closed
  with 1008 "Too many requests".
- Streams per connection: at most 1024 (`api.ws.streams.MAX_STREAMS`).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any, Final

import msgspec

ATTEMPT_WINDOW_S: Final = 300.0
TOO_MANY_REQUESTS: Final = "Too many requests"


class SlidingWindow:
    """Events in the last `window` seconds, for one key."""

    __slots__ = ("limit", "times", "window")

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self.times: deque[float] = deque()

    def allow(self, now: float | None = None) -> bool:
        """Count one event now; False (not counted) if `limit` were exceeded. A limit of 0 allows all."""
        if self.limit <= 0:
            return True
        now = time.monotonic() if now is None else now
        times = self.times
        while times and times[0] <= now - self.window:
            times.popleft()
        if len(times) >= self.limit:
            return False
        times.append(now)
        return True

    def retry_after(self, now: float | None = None) -> int:
        """Whole seconds until the oldest counted event leaves the window."""
        now = time.monotonic() if now is None else now
        return max(1, int(self.times[0] + self.window - now) + 1) if self.times else 1


class ConnectionAttempts:
    """Connection attempts per client IP (one process's share)."""

    def __init__(self, per_window: int, window: float = ATTEMPT_WINDOW_S) -> None:
        self.per_window = per_window
        self.window = window
        self._by_ip: dict[str, SlidingWindow] = {}

    def allow(self, ip: str, now: float | None = None) -> tuple[bool, int]:
        """(whether this attempt is allowed, seconds to wait if not)."""
        if self.per_window <= 0:
            return True, 0
        if len(self._by_ip) > 10_000:  # forget idle addresses now and then
            now_ = time.monotonic() if now is None else now
            self._by_ip = {k: v for k, v in self._by_ip.items() if v.times and v.times[-1] > now_ - self.window}
        window = self._by_ip.get(ip)
        if window is None:
            window = self._by_ip[ip] = SlidingWindow(self.per_window, self.window)
        if window.allow(now):
            return True, 0
        return False, window.retry_after(now)


def client_ip(socket: Any) -> str:
    client = socket.client
    return str(client.host) if client else "?"


async def admit(socket: Any) -> bool:
    """Count a connection attempt of `socket`'s IP; refuse the handshake (HTTP 429, -1003) if over the limit."""
    attempts: ConnectionAttempts = socket.app.state.ws_attempts
    allowed, retry = attempts.allow(client_ip(socket))
    if allowed:
        return True
    body = msgspec.json.encode({"code": -1003, "msg": f"Too many connection attempts; current limit is "
                                                     f"{attempts.per_window} per {int(attempts.window)} seconds "
                                                     "per IP."})
    if "websocket.http.response" in socket.scope.get("extensions", {}):
        await socket.send({"type": "websocket.http.response.start", "status": 429,
                           "headers": [(b"content-type", b"application/json"),
                                       (b"retry-after", str(retry).encode()),
                                       (b"content-length", str(len(body)).encode())]})
        await socket.send({"type": "websocket.http.response.body", "body": body})
    else:
        await socket.close(code=1008, reason=TOO_MANY_REQUESTS)
    return False
