"""Snapshots of the agents' state: what they hold, how it is captured off the hot path, how it is restored.

See `pipeline.snapshots.manager` (the runtime side) and `recovery.snapshot_store`
(PostgreSQL). The codecs in `pipeline.snapshots.codec` are pure (no I/O).
"""
