"""Tables: dict-like agent state with a changelog stream."""

from pipeline.tables.table import Change, Table

__all__ = ["Change", "Table"]
