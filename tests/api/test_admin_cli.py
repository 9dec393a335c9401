"""`exchange admin ...` against the session's Valkey (REDIS_URL)."""

from __future__ import annotations

import msgspec
import pytest
import redis

from api.accounts import default_box
from infra.cli import main
from pipeline.batching import BatchDecoder
from pipeline.core.messages import Command, Deposit, SetMarketStatus


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, dict[str, str]]:
    code = main(["admin", *argv])
    out = capsys.readouterr().out
    fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return code, {k.strip(): v.strip() for k, v in fields.items()}


def test_admin_commands(redis_flush: str, monkeypatch: pytest.MonkeyPatch,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("REDIS_URL", redis_flush)
    code, created = run(capsys, "create-account", "bob")
    assert code == 0 and created["account"] == "1" and len(created["api key"]) == 64 and created["secret"]
    code, second = run(capsys, "api-key", "1", "--read-only")
    assert code == 0 and second["permissions"] == "read" and second["api key"] != created["api key"]
    assert main(["admin", "api-key", "42"]) == 1
    assert run(capsys, "deposit", "1", "USDT", "250.5")[0] == 0
    assert main(["admin", "deposit", "1", "USDT", "0.000000001"]) == 1
    assert main(["admin", "deposit", "7", "USDT", "1"]) == 1
    assert run(capsys, "market", "BTCUSDT", "halted")[0] == 0
    assert main(["admin", "market", "NOPE", "trading"]) == 1
    assert main(["admin", "revoke-key", second["api key"]]) == 0
    client = redis.Redis.from_url(redis_flush)
    try:
        decoder: BatchDecoder[Command] = BatchDecoder(Command)
        commands = [c for _, fields in client.xrange("orders.in:0") for c in decoder.decode(fields[b"d"])]
        assert [type(c) for c in commands] == [Deposit, SetMarketStatus]
        assert msgspec.structs.astuple(commands[0])[1:4] == (1, "USDT", 25_050_000_000)
        assert client.get("market:status:BTCUSDT") == b"HALT"
        assert not client.exists(f"apikey:{second['api key']}")
        stored = client.hget(f"apikey:{created['api key']}", "secret").decode()  # sealed with the server key
        assert stored.startswith("v1:") and default_box().open(stored, created["api key"]) == created["secret"]
    finally:
        client.close()


def test_admin_deposit_by_user_name(redis_flush: str, monkeypatch: pytest.MonkeyPatch,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    """A web UI account is funded by its user name; an unknown name is refused and nothing is sent."""
    monkeypatch.setenv("REDIS_URL", redis_flush)
    assert run(capsys, "create-account", "carol")[0] == 0
    client = redis.Redis.from_url(redis_flush)
    try:
        client.hset("user:carol", mapping={"name": "Carol", "account_id": "1"})  # as sign-up stores it
        assert run(capsys, "deposit", "Carol", "USDT", "10")[0] == 0
        assert main(["admin", "deposit", "dave", "USDT", "10"]) == 1
        decoder: BatchDecoder[Command] = BatchDecoder(Command)
        commands = [c for _, fields in client.xrange("orders.in:0") for c in decoder.decode(fields[b"d"])]
        assert len(commands) == 1 and msgspec.structs.astuple(commands[0])[1:4] == (1, "USDT", 1_000_000_000)
    finally:
        client.close()
