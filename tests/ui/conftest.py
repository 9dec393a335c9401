"""The exchange as `exchange up` runs it, and Debian's Chromium driven by Playwright, for the web UI tests.

- `exchange_server`: `exchange up --no-mm` in a subprocess on a free port, over the session's Valkey
  and PostgreSQL (emptied first); `.restart()` stops it with SIGTERM and starts it again on the same port.
- `browser`: one headless Chromium for the module (the system's /usr/bin/chromium: Playwright's own
  browser downloads are never used).
- `Ops`: an admin account (made with `exchange admin create-account --admin`) that funds accounts through
  the admin API and places signed orders, as a market maker would.
"""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from api.auth import sign
from tests.serving import free_port

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
EXCHANGE = str(Path(sys.executable).parent / "exchange")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
DESKTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}


class ExchangeServer:
    """`exchange up` in a subprocess; its output is kept for failure messages."""

    def __init__(self, env: dict[str, str], port: int) -> None:
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen[str] | None = None
        self.output: list[str] = []

    def start(self, timeout: float = 60.0) -> None:
        process = subprocess.Popen([EXCHANGE, "up", "--port", str(self.port), "--no-mm"], env=self.env,
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.process = process
        self.output = []
        lines: queue.Queue[str | None] = queue.Queue()

        def pump() -> None:
            assert process.stdout is not None
            for line in process.stdout:
                self.output.append(line)
                lines.put(line)
            lines.put(None)

        threading.Thread(target=pump, daemon=True).start()
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                line = ""
            if line is None or time.monotonic() > deadline:
                raise AssertionError("exchange up did not start:\n" + "".join(self.output[:60]))
            if line.startswith("exchange is up"):
                return

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError("exchange up did not stop on SIGTERM:\n" + "".join(self.output[-40:])) from None
        finally:
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def cli(self, *args: str) -> str:
        """An `exchange` operator command against this exchange's stores; its output."""
        done = subprocess.run([EXCHANGE, *args], env=self.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout


@pytest.fixture
def exchange_server(redis_flush: str, database_flush: str) -> Iterator[ExchangeServer]:
    data_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"exchange-ui-test-{os.getpid()}"
    env = {**os.environ, "REDIS_URL": redis_flush, "DATABASE_URL": database_flush,
           "EXCHANGE_DATA_DIR": str(data_dir), "EXCHANGE_API_WEIGHT_PER_MINUTE": "0"}
    server = ExchangeServer(env, free_port())
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "Chromium is missing: `python3 dev.py test` installs Debian's chromium"
    browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    yield browser
    browser.close()


class Ops:
    """An admin account: funds accounts through the admin API, places signed orders."""

    def __init__(self, server: ExchangeServer) -> None:
        out = dict(line.split(":", 1) for line in server.cli("admin", "create-account", "ops", "--admin").splitlines())
        self.account_id = int(out["account"])
        self.key = out["api key"].strip()
        self.secret = out["secret"].strip()
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def signed(self, method: str, path: str, **params: Any) -> Any:
        params["timestamp"] = time.time_ns() // 1_000_000
        payload = urlencode(params)
        r = self.http.request(method, f"{path}?{payload}&signature={sign(self.secret, payload)}",
                              headers={"X-MBX-APIKEY": self.key})
        assert r.status_code == 200, r.text
        return r.json()

    def deposit(self, account_id: int, asset: str, amount: str) -> None:
        self.signed("POST", "/api/x/admin/deposit", account=account_id, asset=asset, amount=amount)

    def order(self, side: str, price: str, qty: str, symbol: str = "BTCUSDT") -> Any:
        return self.signed("POST", "/api/v3/order", symbol=symbol, side=side, type="LIMIT", timeInForce="GTC",
                           price=price, quantity=qty, newOrderRespType="ACK")

    def close(self) -> None:
        self.http.close()
