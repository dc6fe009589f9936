"""Every metric the dashboard, the alerts and the autoscaler use is exported by a running
service: stt, llm and tts are started by the fleet launcher the way the CPU compose stack runs
them (same commands, same environment, free ports on loopback), one spoken turn goes through
the orchestrator, and each /metrics is scraped. GPU metrics come from the NVML collector
(faked: no GPU here).

The orchestrator runs in this process (``start_app``) with the compose file's settings:
``python -m services.orchestrator`` cannot start yet (its gRPC channels are opened before
asyncio.run's loop exists, so its first health check fails with "attached to a different
loop"); so that this scrape cannot be fooled by metrics other modules registered in this
process, only the orchestrator's own metric families count from its page."""

from __future__ import annotations

import os
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.parser import text_string_to_metric_families

from client.converse import ConverseStream, final_transcript, is_kind
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.fleet import CATALOG, Fleet
from services.orchestrator import metrics as orchestrator_metrics
from services.orchestrator.app import OrchestratorApp
from services.orchestrator.config import OrchestratorSettings
from services.runtime.audio import silence
from services.runtime.config import ServerSettings, load_settings
from services.runtime.gpu_metrics import install_gpu_metrics
from services.runtime.server import start_app
from services.testkit.speech import espeak
from tests.deploy.conftest import COMPOSE_CPU, PAROLE_SERVICES, alert_exprs, dashboard_exprs, interpolate, load_yaml
from tests.deploy.promql import metric_names
from tests.deploy.test_gpu_metrics import FakeNvml
from tests.deploy.test_static import adapter_series

# The compose file's own knob for the embedded model: the tiny one keeps this test short.
TEST_COMPOSE_VARS = {"PAROLE_LLM_MODEL": "smollm2-135m-instruct-q4_1"}
MODEL_SERVICES = ("stt", "llm", "tts")
Samples = dict[str, list[tuple[dict[str, str], float]]]


def fleet_env_from_compose() -> dict[str, dict[str, str]]:
    """Each service's compose environment, less what the fleet decides itself (where each
    service listens and where the orchestrator finds the others)."""
    services = load_yaml(COMPOSE_CPU)["services"]
    probe = Fleet(PAROLE_SERVICES, base_env={}, log_dir=None, ports=dict.fromkeys(PAROLE_SERVICES, 1))
    out = {}
    for name in PAROLE_SERVICES:
        decided = set(probe.environment(next(s for s in probe.specs if s.name == name)))
        env = {k: interpolate(str(v), TEST_COMPOSE_VARS) for k, v in services[name]["environment"].items()}
        out[name] = {k: v for k, v in env.items() if k not in decided}
        # Readable logs when a start fails here.
        out[name].pop(f"{CATALOG[name].env_prefix}LOG__JSON_FORMAT", None)
    return out


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    env = fleet_env_from_compose()
    assert env["llm"]["LLM_BACKENDS"] == '["llamacpp", "canned"]'
    assert env["stt"]["STT_DEVICE__DEVICE"] == "cpu"
    log_dir: Path = tmp_path_factory.mktemp("fleet")
    with Fleet(
        MODEL_SERVICES,
        env=env,
        ports=dict.fromkeys(MODEL_SERVICES, 0),
        metrics_ports=dict.fromkeys(MODEL_SERVICES, 0),
        log_dir=log_dir,
        ready_timeout=150,
    ) as running:
        yield running


async def one_spoken_turn(target: str) -> pb.TurnLatency:
    """Says a question to the orchestrator and waits for the turn's latency report."""
    speech = espeak("What is the capital of France?", "en").data
    async with grpc.aio.insecure_channel(target) as channel:
        config = pb.SessionConfig(session_id="deploy-scrape", language="en")
        stream = ConverseStream(orchestrator_pb2_grpc.OrchestratorServiceStub(channel), config)
        stream.open(timeout=90)
        try:
            await stream.stream_audio(speech, realtime=False)
            # Then silence at a microphone's pace until the turn is heard, as a live microphone
            # goes on: the STT ends a turn after a silence it must be sent (longer when its
            # end-of-turn model judges the words unfinished; its judgement moves with the CPU).
            await stream.stream_audio(
                silence(10.0),
                until=lambda: bool(stream.of("latency")) or any(final_transcript(m) for m in stream.of("transcript")),
            )
            return (await stream.wait_for(is_kind("latency"), timeout=None)).latency
        finally:
            stream.cancel()


def scrape(port: int) -> tuple[set[str], Samples]:
    """Names a /metrics page exports (with the sample names each family implies) and its samples."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
        text = r.read().decode()
    return exposition(text)


def exposition(text: str) -> tuple[set[str], Samples]:
    suffixes = {
        "counter": ("_total",),
        "histogram": ("_bucket", "_count", "_sum"),
        "gauge": ("",),
        "summary": ("", "_count", "_sum"),
    }
    names: set[str] = set()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        # A labelled metric nobody incremented yet has no samples but is declared (HELP/TYPE).
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
        for s in family.samples:
            names.add(s.name)
            samples.setdefault(s.name, []).append((s.labels, s.value))
    return names, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return sum(v for lab, v in samples.get(name, []) if labels.items() <= lab.items())


def orchestrator_settings(fleet: Fleet, monkeypatch: pytest.MonkeyPatch) -> OrchestratorSettings:
    """The compose file's orchestrator settings, pointed at this fleet, on loopback."""
    for var in [v for v in os.environ if v.startswith("ORCH_")]:
        monkeypatch.delenv(var)
    for key, val in fleet_env_from_compose()["orchestrator"].items():
        monkeypatch.setenv(key, val)
    for dep in CATALOG["orchestrator"].depends_on:
        monkeypatch.setenv(f"ORCH_{dep.upper()}__TARGET", fleet.target(dep))
    return load_settings(OrchestratorSettings)


def orchestrator_families() -> set[str]:
    """Metric families defined by the orchestrator's own code."""
    names: set[str] = set()
    for obj in vars(orchestrator_metrics).values():
        if isinstance(obj, MetricWrapperBase):
            names.update(m.name for m in obj.describe())
    assert "parole_turn_latency_seconds" in names
    return names


@pytest.mark.timeout(240)
async def test_every_dashboard_alert_and_autoscaling_metric_is_exported(
    fleet: Fleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = orchestrator_settings(fleet, monkeypatch)
    assert settings.stt.target == fleet.target("stt")
    app = OrchestratorApp(settings)
    running = await start_app(app, ServerSettings(host="127.0.0.1", port=0, metrics_host="127.0.0.1", metrics_port=0))
    try:
        latency = await one_spoken_turn(f"127.0.0.1:{running.port}")
        assert running.metrics_port
        orch_names, orch = scrape(running.metrics_port)
    finally:
        await running.stop(0)
        await app.close()
    assert latency.first_audio_seconds > 0 and latency.reply_text

    own = orchestrator_families()
    exported = {n for n in orch_names if any(n.startswith(f) for f in own)}
    by_service: dict[str, Samples] = {"orchestrator": orch}
    for spec in fleet.specs:
        assert spec.metrics_port
        names, samples = scrape(spec.metrics_port)
        exported |= names
        by_service[spec.name] = samples

    # GPU metrics: the real collector over a faked NVML (this machine has no GPU).
    registry = CollectorRegistry()
    assert install_gpu_metrics(registry, FakeNvml(), environ={}) is not None
    gpu_names, _ = exposition(generate_latest(registry).decode())
    exported |= gpu_names

    used: dict[str, set[str]] = {}
    for where, expr in [*dashboard_exprs(), *alert_exprs()]:
        for name in metric_names(expr):
            used.setdefault(name, set()).add(where)
    for name in adapter_series():
        used.setdefault(name, set()).add("prometheus-adapter rule")
    used.pop("up")  # made by Prometheus for each scrape target, not by a service
    missing = {name: sorted(where) for name, where in used.items() if name not in exported}
    assert not missing, f"used but exported by no service: {missing}"
    assert len(used) >= 20

    # The turn really went through every stage, and the metrics saw it.
    stt, llm, tts = (by_service[n] for n in MODEL_SERVICES)
    assert value(orch, "parole_turn_latency_seconds_count", stage="first_audio") >= 1
    assert value(orch, "parole_turns_total") >= 1
    assert value(stt, "parole_stt_end_of_speech_to_final_seconds_count") >= 1
    assert value(llm, "parole_llm_time_to_first_token_seconds_count", backend="llamacpp") >= 1
    assert value(tts, "parole_tts_time_to_first_audio_seconds_count") >= 1
    for name, samples in by_service.items():
        if name == "orchestrator":
            continue  # this process's page: other tests' servers may have counted calls too
        package = f"parole.{name}.v1."
        assert value(samples, "grpc_server_handled_total", grpc_code="OK") >= 1, name
        assert any(lab["grpc_service"].startswith(package) for lab, _ in samples["grpc_server_handled_total"]), name
