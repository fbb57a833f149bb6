"""compose.yaml: what Docker Compose accepts, and what this deployment needs from it.

`docker compose config` (or a standalone `docker-compose` v2) validates the file against the
Compose specification where a compose binary exists; everywhere, a schema here checks the
structure this deployment relies on: the API, the worker and the official PostgreSQL image,
named volumes, healthchecks, and stop grace periods that leave room after the server's own
shutdown grace.
"""

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema_rs
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "compose.yaml"
SECRETS = {"POSTGRES_PASSWORD": "compose-test-db-password", "JWT_SECRET_KEY": "x" * 48}
# After the server's grace, the built-in PostgreSQL (if any) stops and the process exits.
STOP_MARGIN_SECONDS = 3

_DURATION = {"type": "string", "pattern": r"^([0-9]+(h|m|s|ms))+$"}
_HEALTHCHECK = {
    "type": "object",
    "required": ["test", "interval", "timeout", "retries"],
    "properties": {
        "test": {"type": "array", "minItems": 2, "items": {"type": "string"}},
        "interval": _DURATION,
        "timeout": _DURATION,
        "start_period": _DURATION,
        "retries": {"type": "integer", "minimum": 1},
    },
}
_DEPENDS_ON_HEALTHY = {
    "type": "object",
    "properties": {"condition": {"const": "service_healthy"}},
    "required": ["condition"],
}
_APP_SERVICE = {
    "type": "object",
    "required": ["build", "image", "environment", "volumes", "stop_grace_period", "depends_on"],
    "properties": {
        "environment": {
            "type": "object",
            "required": [
                "DATABASE_URL",
                "JWT_SECRET_KEY",
                "PUBLIC_BASE_URL",
                "SHUTDOWN_GRACE_SECONDS",
            ],
            "properties": {"DATABASE_URL": {"type": "string", "pattern": "@db:5432/"}},
        },
        "stop_grace_period": _DURATION,
        "depends_on": {
            "type": "object",
            "required": ["db"],
            "additionalProperties": _DEPENDS_ON_HEALTHY,
        },
        "volumes": {"type": "array", "contains": {"type": "string", "pattern": "^storage:/data$"}},
    },
}
_API_EXTRA = {
    "required": ["healthcheck", "ports"],
    "properties": {
        "healthcheck": {
            **_HEALTHCHECK,
            "properties": {
                **_HEALTHCHECK["properties"],  # type: ignore[dict-item]
                # Ready, not only alive: what `depends_on: service_healthy` waits for.
                "test": {"contains": {"pattern": "/health/ready"}},
            },
        },
    },
}
SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["services", "volumes"],
    "properties": {
        "services": {
            "type": "object",
            "required": ["db", "api", "worker"],
            "properties": {
                "db": {
                    "type": "object",
                    "required": ["image", "volumes", "healthcheck", "stop_grace_period"],
                    "properties": {
                        "image": {"type": "string", "pattern": "^postgres:[0-9]+"},
                        "volumes": {
                            "type": "array",
                            "contains": {"const": "pgdata:/var/lib/postgresql/data"},
                        },
                        "healthcheck": _HEALTHCHECK,
                        "stop_grace_period": _DURATION,
                    },
                },
                "api": {"allOf": [_APP_SERVICE, _API_EXTRA]},
                "worker": {
                    "allOf": [
                        _APP_SERVICE,
                        {
                            "required": ["command"],
                            "properties": {"command": {"const": ["timeless", "worker"]}},
                        },
                    ]
                },
            },
        },
        "volumes": {"type": "object", "required": ["pgdata", "storage"]},
    },
}


def _loaded() -> dict[str, Any]:
    """The file as Compose sees it: YAML merge keys (`<<: *app`) resolved by the loader."""
    document: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
    return document


def _seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(int(n) * units[u] for n, u in re.findall(r"([0-9]+)(ms|h|m|s)", duration))


def test_the_structure_this_deployment_needs():
    errors = [error.message for error in jsonschema_rs.validator_for(SCHEMA).iter_errors(_loaded())]
    assert errors == []


def test_each_stop_grace_period_leaves_room_after_the_shutdown_grace():
    services = _loaded()["services"]
    for name in ("api", "worker"):
        service = services[name]
        grace = float(service["environment"]["SHUTDOWN_GRACE_SECONDS"])
        assert _seconds(service["stop_grace_period"]) >= grace + STOP_MARGIN_SECONDS, name


def test_the_schema_catches_what_it_is_for():
    # The check above must be able to fail: a compose file without a healthcheck on the
    # database, or with the worker's command lost, does not pass.
    broken = _loaded()
    del broken["services"]["db"]["healthcheck"]
    broken["services"]["worker"]["command"] = ["timeless", "serve"]
    errors = list(jsonschema_rs.validator_for(SCHEMA).iter_errors(broken))
    assert len(errors) >= 2


def _compose_command() -> list[str] | None:
    """A Compose v2 CLI: the docker plugin, else a standalone docker-compose v2."""
    candidates = [["docker", "compose"], ["docker-compose"]]
    for command in candidates:
        if shutil.which(command[0]) is None:
            continue
        version = subprocess.run([*command, "version"], capture_output=True, text=True)
        if version.returncode == 0 and re.search(r"v?2\.\d+", version.stdout):
            return command
    return None


def test_docker_compose_config_accepts_the_file(tmp_path: Path):
    command = _compose_command()
    if command is None:
        pytest.skip("no Compose v2 CLI here (`docker compose` plugin or docker-compose v2)")
    env = {**os.environ, **SECRETS}
    for profile in ([], ["--profile", "worker"]):
        result = subprocess.run(
            [*command, "-f", str(COMPOSE_FILE), *profile, "config", "--quiet"],
            capture_output=True,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        assert result.returncode == 0, result.stderr
    # The secrets are required: without them Compose refuses to start anything.
    bare = {k: v for k, v in os.environ.items() if k not in SECRETS}
    refused = subprocess.run(
        [*command, "-f", str(COMPOSE_FILE), "config", "--quiet"],
        capture_output=True,
        text=True,
        env=bare,
        cwd=tmp_path,
    )
    assert refused.returncode != 0
    assert "POSTGRES_PASSWORD" in refused.stderr or "JWT_SECRET_KEY" in refused.stderr
