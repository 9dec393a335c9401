"""`exchange mm`'s options and config file (no exchange needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.cli import build_parser, main
from infra.cli.mm import build_config


def test_options_and_file_make_one_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EXCHANGE_MM_CONFIG", raising=False)
    file = tmp_path / "mm.toml"
    file.write_text('markets = ["BTCUSDT"]\nseed = 3\n[quote]\nbid_spread_bps = 8\norder_levels = 4\n'
                    '[overrides.ETHUSDT]\nask_spread_bps = 25\n')
    args = build_parser().parse_args(["mm", "--config", str(file), "--markets", "btcusdt,ETHUSDT",
                                      "--order-levels", "2", "--refresh-seconds", "1.5", "--no-skew",
                                      "--taker-api-key", "k", "--taker-api-secret", "s", "--noise-interval", "9"])
    config = build_config(args)
    assert config.markets == ("BTCUSDT", "ETHUSDT") and config.seed == 3
    assert (config.quote.bid_spread_bps, config.quote.order_levels, config.quote.refresh_seconds) == (8, 2, 1.5)
    assert config.quote.inventory_skew is False
    assert config.params_for("ETHUSDT").ask_spread_bps == 25 and config.params_for("BTCUSDT").ask_spread_bps == 10
    assert config.noise.enabled and config.noise.interval_seconds == 9
    no_taker = build_config(build_parser().parse_args(["mm"]))
    assert not no_taker.noise.enabled  # no taker keys: no noise flow


def test_bad_settings_and_missing_keys_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    for name in ("EXCHANGE_MM_API_KEY", "EXCHANGE_MM_API_SECRET", "EXCHANGE_MM_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    assert main(["mm"]) == 2
    assert "--api-key" in capsys.readouterr().err
    assert main(["mm", "--api-key", "k", "--api-secret", "s", "--bid-spread-bps", "0"]) == 2
    assert "spread" in capsys.readouterr().err
    bad = tmp_path / "bad.toml"
    bad.write_text("[quote]\nno_such_field = 1\n")
    assert main(["mm", "--api-key", "k", "--api-secret", "s", "--config", str(bad)]) == 2
    assert "no_such_field" in capsys.readouterr().err
