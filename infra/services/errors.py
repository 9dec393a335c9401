"""Errors of the embedded services."""

from __future__ import annotations

from pipeline.errors import ExchangeError


class ServiceError(ExchangeError):
    """An embedded server could not be started, stopped or inspected."""


class ServiceStartError(ServiceError):
    """A server did not come up; the message ends with the tail of its log."""

    def __init__(self, message: str, log_tail: str = "") -> None:
        text = message if not log_tail else f"{message}\n--- last lines of the server log ---\n{log_tail}"
        super().__init__(text)
        self.log_tail = log_tail
