"""ServicesConfig: environment parsing and defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.config import ConfigError, ServicesConfig, parse_appendfsync
from infra.services import redact_url


def test_defaults_from_an_empty_environment() -> None:
    config = ServicesConfig.from_env({})
    assert config == ServicesConfig()
    assert config.data_dir == Path("./var")
    assert config.redis_url is None
    assert config.database_url is None
    assert config.appendfsync == "everysec"


def test_every_variable_is_read() -> None:
    config = ServicesConfig.from_env(
        {
            "EXCHANGE_DATA_DIR": "/srv/exchange",
            "REDIS_URL": "redis://10.0.0.1:6379/0",
            "DATABASE_URL": "postgresql://u@db/exchange",
            "EXCHANGE_APPENDFSYNC": "Always",
        }
    )
    assert config.data_dir == Path("/srv/exchange")
    assert config.redis_url == "redis://10.0.0.1:6379/0"
    assert config.database_url == "postgresql://u@db/exchange"
    assert config.appendfsync == "always"


def test_empty_values_count_as_unset() -> None:
    config = ServicesConfig.from_env(
        {"EXCHANGE_DATA_DIR": "", "REDIS_URL": " ", "DATABASE_URL": "", "EXCHANGE_APPENDFSYNC": ""}
    )
    assert config == ServicesConfig()


@pytest.mark.parametrize("value", ["always", "everysec", "no", " NO "])
def test_appendfsync_policies(value: str) -> None:
    assert parse_appendfsync(value) == value.strip().lower()


def test_bad_appendfsync_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="EXCHANGE_APPENDFSYNC"):
        ServicesConfig.from_env({"EXCHANGE_APPENDFSYNC": "sometimes"})


def test_config_is_frozen() -> None:
    config = ServicesConfig()
    with pytest.raises(AttributeError):
        config.redis_url = "redis://x"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://127.0.0.1:6379/0", "redis://127.0.0.1:6379/0"),
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        ("postgresql://user:s3cret@db.example:5432/x?sslmode=require",
         "postgresql://user:***@db.example:5432/x?sslmode=require"),
    ],
)  # fmt: skip
def test_redact_url_hides_passwords(url: str, shown: str) -> None:
    assert redact_url(url) == shown
