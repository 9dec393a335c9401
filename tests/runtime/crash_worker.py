"""A worker process for crash tests: runs the test pipeline until killed or told to stop.

    python -m tests.runtime.crash_worker REDIS_URL

Prints ``ready`` once it owns its partitions and has rebuilt its tables.
"""

from __future__ import annotations

import sys

from pipeline.transport.redis import RedisTransport
from tests.runtime.pipeline_fixture import build_app


def main() -> None:
    app, _, _ = build_app(RedisTransport(sys.argv[1]), lease_ttl_ms=1000, batch_size=2, busy_us=300)
    app.run(on_ready=lambda: print("ready", flush=True))


if __name__ == "__main__":
    main()
