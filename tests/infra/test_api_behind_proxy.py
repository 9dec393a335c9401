"""Behind a load balancer the API limits each client by the address the proxy forwards, not the proxy's,
with one budget per client over all replicas.

`exchange api` runs uvicorn with proxy headers on: from a trusted proxy (uvicorn's
`FORWARDED_ALLOW_IPS`, default 127.0.0.1 and ::1; the compose example sets it for its nginx)
the client is the last address of `X-Forwarded-For`. Without that, every user behind the
proxy would share one request-weight budget, and one abusive client would get the proxy's
address, so everybody, refused or banned.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
import redis

from api.limits import SYNC_S
from tests.serving import api_process

pytestmark = pytest.mark.redis
INFO = "/api/v3/exchangeInfo"  # weight 20: a budget of 50 allows two a minute


@contextmanager
def limited_api(redis_url: str, **env: str) -> Iterator[httpx.Client]:
    """An `exchange api` replica with a budget of 50 a minute, and a client of it."""
    with api_process(redis_url, EXCHANGE_API_WEIGHT_PER_MINUTE="50", **env) as (_, port), \
            httpx.Client(base_url=f"http://127.0.0.1:{port}") as client:
        yield client


def same_minute() -> None:
    """Start well inside a rate-limit window (they are whole wall-clock minutes)."""
    left = 60 - time.time() % 60
    if left < 8:
        time.sleep(left + 0.2)


def statuses(client: httpx.Client, forwarded_for: str | None, n: int) -> list[int]:
    headers = {"X-Forwarded-For": forwarded_for} if forwarded_for else {}
    return [client.get(INFO, headers=headers).status_code for _ in range(n)]


def test_each_forwarded_client_has_its_own_budget_from_a_trusted_proxy(redis_flush: str) -> None:
    with limited_api(redis_flush) as api:  # the test is the proxy, at 127.0.0.1: trusted by default
        same_minute()
        assert statuses(api, "203.0.113.7", 3) == [200, 200, 429]
        refused = api.get(INFO, headers={"X-Forwarded-For": "203.0.113.7"})
        assert refused.status_code == 429 and "203.0.113.7" in refused.json()["msg"]
        assert statuses(api, "198.51.100.9", 2) == [200, 200]  # another client behind the same proxy
        assert statuses(api, None, 2) == [200, 200]  # the proxy's own address: untouched


def test_an_untrusted_proxy_cannot_choose_the_client_address(redis_flush: str) -> None:
    with limited_api(redis_flush, FORWARDED_ALLOW_IPS="10.255.255.1") as api:  # trusts only another host
        same_minute()
        assert statuses(api, "203.0.113.7", 2) == [200, 200]
        assert statuses(api, "198.51.100.9", 1) == [429]  # a forged header does not buy a new budget


def shared_to(redis_url: str, client: str, weight: int) -> None:
    """Wait until the replicas' shared count (api.limits) shows `weight` for `client` this minute, then one
    sync interval more: every replica that syncs has read that total by then (it reads in the same round
    trip it writes, every SYNC_S)."""
    with redis.Redis.from_url(redis_url) as server:
        deadline = time.monotonic() + 10
        while int(server.hget(f"apiweight:{int(time.time() // 60)}", client) or 0) != weight:
            assert time.monotonic() < deadline, f"the shared count of {client} never reached {weight}"
            time.sleep(0.02)
    time.sleep(2 * SYNC_S)


def test_a_client_spread_over_two_replicas_has_one_budget(redis_flush: str) -> None:
    with limited_api(redis_flush) as first, limited_api(redis_flush) as second:
        same_minute()
        assert statuses(first, "203.0.113.7", 2) == [200, 200]  # 40 of 50
        shared_to(redis_flush, "203.0.113.7", 40)  # the first replica shared its 40
        # a replica reads a client's shared total from its first request on: that one goes on its own count
        assert statuses(second, "203.0.113.7", 1) == [200]
        shared_to(redis_flush, "203.0.113.7", 60)  # ... and learns the first one's 40 as it shares its 20
        assert statuses(second, "203.0.113.7", 1) == [429]  # 80 of 50: the second replica is no fresh budget
        assert statuses(second, "198.51.100.9", 2) == [200, 200]  # someone else's budget is their own
        shared_to(redis_flush, "203.0.113.7", 80)
        assert statuses(first, "203.0.113.7", 1) == [429]
