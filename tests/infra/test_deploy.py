"""The deployment example (infra/deploy): every exchange service runs a real `exchange` command.

No container engine runs on these machines, so the compose file is checked here for what can be
checked without one: it parses, each exchange role's command line is accepted by the `exchange`
parser, every role gets the servers' URLs, and Valkey keeps an append-only file on a volume.
(`docker-compose -f infra/deploy/compose.yaml config` validated the file against Compose's
schema when it was written.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from infra.cli import build_parser

DEPLOY = Path(__file__).resolve().parents[2] / "infra" / "deploy"


def load_compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def test_exchange_roles_run_commands_the_cli_accepts() -> None:
    services = load_compose()["services"]
    roles = {name: s for name, s in services.items() if s.get("image") == "exchange:latest"}
    assert set(roles) == {"worker", "persister", "api", "mm"}
    parser = build_parser()
    for name, service in roles.items():
        args = parser.parse_args(service["command"])
        assert args.command == service["command"][0], name
        env = service["environment"]
        assert env["REDIS_URL"].startswith("redis://valkey:"), name
        assert env["DATABASE_URL"].startswith("postgresql://"), name


def test_valkey_keeps_an_append_only_file_on_a_volume() -> None:
    compose = load_compose()
    valkey = compose["services"]["valkey"]
    command = valkey["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in valkey["volumes"])
    assert "valkey-data" in compose["volumes"]


def test_api_replicas_sit_behind_the_load_balancer() -> None:
    services = load_compose()["services"]
    assert services["api"]["deploy"]["replicas"] >= 2
    assert "8000:8000" in services["lb"]["ports"]
    nginx = (DEPLOY / "nginx.conf").read_text()
    assert "proxy_pass http://api;" in nginx
    # each user keeps their own rate limit behind nginx: it forwards the client's address, the API
    # (reachable only through nginx: no published port) trusts it (tests/infra/test_api_behind_proxy.py)
    assert "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;" in nginx
    assert "ports" not in services["api"] and services["api"]["environment"]["FORWARDED_ALLOW_IPS"] == "*"
