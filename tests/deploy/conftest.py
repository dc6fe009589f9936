"""Helpers for the deployment tests: the deploy/ files, parsed, and the validators' commands."""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_GPU = DEPLOY / "docker-compose.yml"
COMPOSE_CPU = DEPLOY / "docker-compose.cpu.yml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
HADOLINT_CONFIG = DEPLOY / "docker" / ".hadolint.yaml"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
PAROLE_SERVICES = ("stt", "llm", "tts", "orchestrator")
_VAR = re.compile(r"\$\{(\w+)(?::?-([^}]*))?\}")


def tool(name: str) -> str:
    """A validator installed with the dev extra (beside this Python), or fail with the fix."""
    found = shutil.which(name, path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
    if found is None:
        pytest.fail(f"{name} is not installed: pip install -e '.[dev]'")
    return found


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def load_all_yaml(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def interpolate(value: str, env: dict[str, str] | None = None) -> str:
    """Compose's ${VAR:-default} with the defaults (or ``env``), as `docker compose config` would."""
    env = env or {}
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(2) or ""), value)


def compose_env(service: dict[str, Any]) -> dict[str, str]:
    """A compose service's environment, interpolated with the file's defaults."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: interpolate(str(v)) for k, v in env.items()}


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every dashboard query."""
    out = []
    for path in DASHBOARDS:
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                out.append((f"{path.name}: {panel['title']}", target["expr"]))
    return out


def alert_exprs() -> list[tuple[str, str]]:
    """(alert name, PromQL) of every alert rule."""
    rules = load_yaml(ALERTS)
    return [(rule["alert"], rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
