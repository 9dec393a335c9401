"""Tables: dict-like agent state with a changelog stream."""
