"""Static checks of the gateway's deployment (compose, image, Kubernetes, Prometheus) against
the code: the fleet's command, ports and targets, and settings the gateway accepts."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest

from services.fleet import CATALOG, DEFAULT, Fleet
from services.gateway.config import GatewaySettings
from services.runtime.config import load_settings
from tests.deploy.conftest import (
    COMPOSE_CPU,
    COMPOSE_GPU,
    DOCKERFILE,
    K8S,
    PROMETHEUS,
    compose_env,
    load_all_yaml,
    load_yaml,
)

SPEC = CATALOG["gateway"]
EXTRA = dict(SPEC.extra_ports)


def seconds(value: str) -> float:
    return sum(float(n) * {"s": 1, "m": 60}[u] for n, u in re.findall(r"(\d+)([sm])", value))


def use_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> GatewaySettings:
    for var in [v for v in os.environ if v.startswith("GATEWAY_")]:
        monkeypatch.delenv(var)
    for key, value in env.items():
        if key.startswith("GATEWAY_"):
            field = key.removeprefix("GATEWAY_").split("__")[0].lower()
            assert field in GatewaySettings.model_fields, f"{key} sets no gateway setting"
            monkeypatch.setenv(key, value)
    return load_settings(GatewaySettings)


@pytest.mark.parametrize("path", [COMPOSE_GPU, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_runs_the_fleets_gateway(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    services = load_yaml(path)["services"]
    gw = services["gateway"]
    assert gw["command"] == Fleet(DEFAULT, python="python").command(SPEC) == ["python", "-m", "services.gateway"]
    env = compose_env(gw)
    assert env["GATEWAY_SERVER__PORT"] == env["PAROLE_HEALTH_PORT"] == str(SPEC.port)
    assert env["GATEWAY_SERVER__METRICS_PORT"] == str(SPEC.metrics_port)
    for setting, port in SPEC.extra_ports:
        assert env[f"GATEWAY_{setting}"] == str(port)
    for dep in SPEC.depends_on:
        assert env[f"GATEWAY_{dep.upper()}__TARGET"] == f"{dep}:{CATALOG[dep].port}"
        assert gw["depends_on"][dep] == {"condition": "service_healthy"}
    published = {int(p.split(":")[-1]) for p in gw["ports"]}
    assert published == {EXTRA["HTTP__PORT"], EXTRA["WYOMING__ASR_PORT"], EXTRA["WYOMING__TTS_PORT"]}
    assert gw["healthcheck"]["test"] == [
        "CMD",
        "python",
        "-m",
        "services.runtime.healthcheck",
        f"127.0.0.1:{SPEC.port}",
    ]
    settings = use_env(monkeypatch, env)
    assert settings.http.port == 8000 and settings.wyoming.asr_port == 10300 and settings.wyoming.tts_port == 10200
    assert seconds(gw["stop_grace_period"]) > settings.server.grace_seconds + 5


def test_image_installs_the_gateway_and_its_client() -> None:
    text = DOCKERFILE.read_text()
    assert text.count(",gateway,") == 2  # both targets' pip install extras
    assert text.count("COPY client ./client") == 2  # the Realtime API uses client.conversation
    for port in (SPEC.port, SPEC.metrics_port, *EXTRA.values()):
        assert all(str(port) in line for line in re.findall(r"^EXPOSE .*$", text, re.MULTILINE))


def k8s(kind: str, name: str) -> dict[str, Any]:
    (obj,) = [d for p in K8S for d in load_all_yaml(p) if d["kind"] == kind and d["metadata"]["name"] == name]
    return obj  # type: ignore[no-any-return]


def test_k8s_gateway_probes_ports_and_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    pod = k8s("Deployment", "gateway")["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    assert container["command"] == ["python", "-m", SPEC.module]
    ports = {p["containerPort"] for p in container["ports"]}
    assert ports == {SPEC.port, SPEC.metrics_port, *EXTRA.values()}
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": SPEC.port}
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(SPEC.metrics_port)
    assert "nvidia.com/gpu" not in container["resources"].get("limits", {})
    env = dict(k8s("ConfigMap", "parole-config")["data"])
    env |= {e["name"]: e["value"] for e in container["env"] if "value" in e}
    settings = use_env(monkeypatch, env)
    assert settings.orchestrator.target == "orchestrator.parole.svc.cluster.local:50050"
    for channel in (settings.stt, settings.llm, settings.tts):
        assert channel.target.startswith("dns:///") and channel.load_balancing == "round_robin"
    assert pod["spec"]["terminationGracePeriodSeconds"] > settings.server.grace_seconds + 5
    service_ports = {p["port"] for p in k8s("Service", "gateway")["spec"]["ports"]}
    assert service_ports == ports


def test_prometheus_scrapes_the_gateway() -> None:
    jobs = {j["job_name"]: j["static_configs"][0]["targets"] for j in load_yaml(PROMETHEUS)["scrape_configs"]}
    assert jobs["parole-gateway"] == [f"gateway:{SPEC.metrics_port}"]
