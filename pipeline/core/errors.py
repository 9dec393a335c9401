"""The core's exceptions. Rejections are events, never exceptions: these mean a bug."""

from __future__ import annotations


class CoreError(Exception):
    """Root of the core's errors."""


class StateError(CoreError):
    """Internal state is inconsistent (raised by `validate_internal_state`)."""
