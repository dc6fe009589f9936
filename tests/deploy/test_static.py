"""Static checks of deploy/: what cannot run here (no Docker engine, no cluster) is validated
against the Compose spec, hadolint and the Kubernetes schemas, and cross-checked against the
code: commands, ports, settings and metric names."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from services.fleet import CATALOG, Fleet
from services.llm.config import LlmSettings
from services.orchestrator.config import OrchestratorSettings
from services.runtime.config import ServiceSettings, load_settings
from services.stt.config import SttSettings
from services.tts.config import TtsSettings
from tests.deploy.conftest import (
    ALERTS,
    COMPOSE_CPU,
    COMPOSE_GPU,
    DASHBOARDS,
    DEPLOY,
    DOCKERFILE,
    HADOLINT_CONFIG,
    K8S,
    PAROLE_SERVICES,
    PROMETHEUS,
    REPO,
    alert_exprs,
    compose_env,
    dashboard_exprs,
    interpolate,
    load_all_yaml,
    load_yaml,
    tool,
)
from tests.deploy.promql import balanced, metric_names

SETTINGS: dict[str, type[ServiceSettings]] = {
    "stt": SttSettings,
    "llm": LlmSettings,
    "tts": TtsSettings,
    "orchestrator": OrchestratorSettings,
}
GPU_PIN = {"driver": "nvidia", "device_ids": ["${PAROLE_GPU:-1}"], "capabilities": ["gpu"]}


def run(*cmd: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=120)


def seconds(value: str) -> float:
    """Compose durations: 30s, 5m, 1m30s."""
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", value)
    assert parts and "".join(a + b for a, b in parts) == value, f"not a duration: {value}"
    return sum(float(n) * units[u] for n, u in parts)


# -- the validators, each with a control that must fail ------------------------------------------


@pytest.mark.parametrize("path", [COMPOSE_GPU, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_file_validates_against_the_compose_spec(path: Path) -> None:
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_validator_rejects_a_broken_file(tmp_path: Path) -> None:
    bad = tmp_path / "compose.yml"
    bad.write_text("services:\n  a:\n    image: x\n    depends_on:\n      b:\n        condition: whenever\n")
    result = run(tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", bad)
    assert result.returncode != 0


def test_dockerfile_passes_hadolint() -> None:
    result = run(tool("hadolint"), "--config", HADOLINT_CONFIG, DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_rejects_a_sloppy_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN cd /tmp && pip install requests\n")
    result = run(tool("hadolint"), "--config", HADOLINT_CONFIG, bad)
    assert result.returncode != 0
    assert "DL3006" in result.stdout  # untagged base image


def test_kubernetes_manifests_validate() -> None:
    assert len(K8S) >= 8
    result = run(tool("kubernetes-validate"), "--strict", "--quiet", *K8S)
    assert result.returncode == 0, result.stdout + result.stderr


def test_kubernetes_validator_rejects_a_broken_manifest(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec:\n  replicas: two\n"
        "  selector: {matchLabels: {a: b}}\n  template:\n    metadata: {labels: {a: b}}\n"
        "    spec: {containers: [{name: x, image: x, startupProbe: {grpc: {port: http}}}]}\n"
    )
    result = run(tool("kubernetes-validate"), "--strict", "--quiet", bad)
    assert result.returncode != 0


# -- compose: what runs is what the tests run ----------------------------------------------------


def test_cpu_compose_commands_are_the_fleet_launchers() -> None:
    """The CPU stack runs each service with the command the local fleet (and the tests) use."""
    services = load_yaml(COMPOSE_CPU)["services"]
    fleet = Fleet(PAROLE_SERVICES, python="python")
    for name in PAROLE_SERVICES:
        spec = CATALOG[name]
        assert services[name]["command"] == fleet.command(spec) == ["python", "-m", spec.module]
        assert "entrypoint" not in services[name]
    # The image adds no entrypoint in front of the command.
    assert not re.search(r"^\s*ENTRYPOINT", DOCKERFILE.read_text(), re.MULTILINE)


@pytest.mark.parametrize("path", [COMPOSE_GPU, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_ports_and_targets_are_the_fleets(path: Path) -> None:
    services = load_yaml(path)["services"]
    for name in PAROLE_SERVICES:
        spec = CATALOG[name]
        env = compose_env(services[name])
        assert env[f"{spec.env_prefix}SERVER__PORT"] == str(spec.port)
        assert env[f"{spec.env_prefix}SERVER__METRICS_PORT"] == str(spec.metrics_port)
        assert env["PAROLE_HEALTH_PORT"] == str(spec.port)  # the image's own HEALTHCHECK
        for dep in spec.depends_on:
            # Same variable the fleet sets, pointing at the compose service of that name.
            assert env[f"{spec.env_prefix}{dep.upper()}__TARGET"] == f"{dep}:{CATALOG[dep].port}"


@pytest.mark.parametrize("path", [COMPOSE_GPU, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_environment_is_valid_service_configuration(path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every variable is one the service reads, with a value its settings accept."""
    services = load_yaml(path)["services"]
    loaded: dict[str, ServiceSettings] = {}
    for name in PAROLE_SERVICES:
        cls = SETTINGS[name]
        prefix = str(cls.model_config["env_prefix"])
        for var in [v for v in os.environ if v.startswith(prefix) or v == "PAROLE_MODEL_DIR"]:
            monkeypatch.delenv(var)
        env = compose_env(services[name])
        for key, value in env.items():
            if key.startswith(prefix) and key != f"{prefix}CONFIG_FILE":
                field = key[len(prefix) :].split("__")[0].lower()
                assert field in cls.model_fields, f"{path.name} {name}: {key} sets no setting of {cls.__name__}"
            # Files the image holds under /app are the checkout's files here.
            monkeypatch.setenv(key, value.replace("/app/", f"{REPO}/"))
        loaded[name] = load_settings(cls)
        for key in env:
            monkeypatch.delenv(key)
    if path == COMPOSE_GPU:
        stt = loaded["stt"]
        assert isinstance(stt, SttSettings)
        assert [e.name for e in stt.engines] == ["large-v3-gpu", "base-gpu", "base-cpu"]
        # The YAML's "1" (the original host's second card) is overridden: inside a container
        # the pinned card is device 0.
        assert stt.device.visible_devices == "0" and stt.device.require_gpu
        llm = loaded["llm"]
        assert isinstance(llm, LlmSettings)
        assert llm.backends[0] == "ollama" and llm.ollama.host == "http://ollama:11434"
    else:
        for name in ("stt", "llm", "tts"):
            assert loaded[name].device.device == "cpu"
        llm = loaded["llm"]
        assert isinstance(llm, LlmSettings)
        assert "ollama" not in llm.backends


def test_gpu_compose_pins_every_gpu_service_to_one_card() -> None:
    services = load_yaml(COMPOSE_GPU)["services"]
    for name in ("stt", "llm", "tts", "ollama"):
        devices = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert devices == [GPU_PIN], name
        env = compose_env(services[name])
        assert env["CUDA_VISIBLE_DEVICES"] == "0", name  # the pinned card is device 0 inside
        if name != "ollama":
            prefix = CATALOG[name].env_prefix
            assert env[f"{prefix}DEVICE__VISIBLE_DEVICES"] == "0"
            assert env[f"{prefix}DEVICE__REQUIRE_GPU"] == "true"
    assert interpolate(GPU_PIN["device_ids"][0]) == "1"  # the original host's second GPU
    assert interpolate(GPU_PIN["device_ids"][0], {"PAROLE_GPU": "0"}) == "0"
    assert "deploy" not in services["orchestrator"]


def test_cpu_compose_needs_no_gpu_and_no_ollama() -> None:
    text = COMPOSE_CPU.read_text()
    services = load_yaml(COMPOSE_CPU)["services"]
    assert "nvidia" not in text and "ollama" not in services
    assert all("deploy" not in s for s in services.values())
    assert services["models-init"]["command"] == ["python", "-m", "services.models", "assemble"]


@pytest.mark.parametrize("path", [COMPOSE_GPU, COMPOSE_CPU], ids=lambda p: p.name)
def test_compose_health_start_order_and_stop_grace(path: Path) -> None:
    services = load_yaml(path)["services"]
    for name in PAROLE_SERVICES:
        svc = services[name]
        port = CATALOG[name].port
        assert svc["healthcheck"]["test"] == [
            "CMD",
            "python",
            "-m",
            "services.runtime.healthcheck",
            f"127.0.0.1:{port}",
        ]
        assert seconds(svc["healthcheck"]["start_period"]) >= 60  # model loading
        grace = float(compose_env(svc)[f"{CATALOG[name].env_prefix}SERVER__GRACE_SECONDS"])
        assert seconds(svc["stop_grace_period"]) > grace + 5
        if name != "orchestrator":
            assert svc["depends_on"]["models-init"] == {"condition": "service_completed_successfully"}
    assert services["orchestrator"]["depends_on"] == {
        dep: {"condition": "service_healthy"} for dep in ("stt", "llm", "tts")
    }
    assert services["grafana"]["depends_on"]["prometheus"] == {"condition": "service_healthy"}
    target = "cuda" if path == COMPOSE_GPU else "cpu"
    assert all(services[n]["build"]["target"] == target for n in PAROLE_SERVICES)
    assert all("/models" in " ".join(services[n]["volumes"]) for n in (*PAROLE_SERVICES, "models-init"))


def test_gpu_compose_pulls_the_model_the_llm_asks_for() -> None:
    services = load_yaml(COMPOSE_GPU)["services"]
    pull = services["ollama-pull"]
    assert pull["command"][0] == "pull"
    assert interpolate(pull["command"][1]) == compose_env(services["llm"])["LLM_OLLAMA__MODEL"]
    assert services["llm"]["depends_on"]["ollama-pull"] == {"condition": "service_completed_successfully"}
    assert services["ollama-pull"]["depends_on"]["ollama"] == {"condition": "service_healthy"}


# -- the image ---------------------------------------------------------------------------------


def stages(dockerfile: str) -> dict[str, str]:
    """Stage name -> its text."""
    parts = re.split(r"^FROM\s+", dockerfile, flags=re.MULTILINE)[1:]
    out = {}
    for part in parts:
        header = part.splitlines()[0]
        match = re.search(r"\bAS\s+(\S+)", header, re.IGNORECASE)
        assert match, f"unnamed stage: FROM {header}"
        out[match.group(1)] = part
    return out


def test_dockerfile_targets_are_multi_stage_non_root_with_health_and_stubs() -> None:
    by_name = stages(DOCKERFILE.read_text())
    assert set(by_name) == {"cpu-build", "cpu", "cuda-build", "cuda"}
    for build in ("cpu-build", "cuda-build"):
        assert "make proto VENV=/opt/venv" in by_name[build]  # stubs generated at build
        assert "-DGGML_NATIVE=OFF" in by_name[build]
    assert "-DGGML_CUDA=on" in by_name["cuda-build"]
    assert "FROM ${CUDA_RUNTIME_IMAGE}" in "FROM " + by_name["cuda"]
    assert re.search(r"ARG CUDA_RUNTIME_IMAGE=nvidia/cuda:\S+-runtime-", DOCKERFILE.read_text())
    for final in ("cpu", "cuda"):
        text = by_name[final]
        user = re.findall(r"^USER\s+(\S+)", text, re.MULTILINE)
        assert user and not user[-1].startswith(("0", "root")), final
        assert "services.runtime.healthcheck" in re.search(r"HEALTHCHECK[^\n]*\n[^\n]*", text).group(0)  # type: ignore[union-attr]
        assert 'VOLUME ["/models"]' in text and "PAROLE_MODEL_DIR=/models" in text
        assert "espeak-ng" in text
        assert "build-essential" not in text  # compilers stay in the build stage
        assert f"--from={final}-build" in text


def test_docker_build_context_keeps_what_the_image_needs() -> None:
    ignore = (DEPLOY / "docker" / "Dockerfile.dockerignore").read_text()
    copied = set(re.findall(r"^COPY (?!--from)(.+?) \S+$", DOCKERFILE.read_text(), re.MULTILINE))
    needed = {w for line in copied for w in line.split()}
    assert needed == {"pyproject.toml", "README.md", "Makefile", "constraints.txt", "protos", "services", "client"}
    for path in needed:
        assert re.search(rf"^!{re.escape(path)}", ignore, re.MULTILINE), path
        assert (REPO / path).exists()


# -- Kubernetes ----------------------------------------------------------------------------------


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in K8S for doc in load_all_yaml(path)]


def find(kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}"
    return matches[0]


def test_k8s_deployments_probe_grpc_health_and_request_gpus() -> None:
    config = find("ConfigMap", "parole-config")["data"]
    for name in PAROLE_SERVICES:
        spec = CATALOG[name]
        pod = find("Deployment", name)["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["command"] == ["python", "-m", spec.module]  # the fleet's command
        assert {p["containerPort"] for p in container["ports"]} == {spec.port, spec.metrics_port}
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            expected: dict[str, object] = {"port": spec.port}
            if name == "orchestrator" and probe == "readinessProbe":  # saturation takes it out of rotation
                expected["service"] = "parole.orchestrator.v1.OrchestratorService"
            assert container[probe]["grpc"] == expected, (name, probe)
        env = {e["name"]: e.get("value") for e in container["env"]}
        grace = float(config[f"{spec.env_prefix}SERVER__GRACE_SECONDS"])
        assert pod["terminationGracePeriodSeconds"] > grace + 5
        gpus = container["resources"].get("limits", {}).get("nvidia.com/gpu")
        if name == "orchestrator":
            assert gpus is None
        else:
            assert gpus == 1
            assert env[f"{spec.env_prefix}DEVICE__REQUIRE_GPU"] == "true"
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts["/models"]["readOnly"] is True
            claims = [v["persistentVolumeClaim"]["claimName"] for v in pod["volumes"] if "persistentVolumeClaim" in v]
            assert claims == ["parole-models"]
        assert pod["securityContext"]["runAsNonRoot"] is True
    find("PersistentVolumeClaim", "parole-models")
    assert (
        find("Job", "parole-models")["spec"]["template"]["spec"]["containers"][0]["volumeMounts"][0]["mountPath"]
        == "/models"
    )


def test_k8s_orchestrator_round_robins_over_headless_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """Streams spread over replicas: headless Services, dns:/// targets, round_robin policy."""
    config = find("ConfigMap", "parole-config")["data"]
    deployment_labels = {}
    for name in ("stt", "llm", "tts"):
        svc = find("Service", f"{name}-headless")["spec"]
        assert svc["clusterIP"] == "None"
        labels = find("Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert svc["selector"].items() <= labels.items()
        deployment_labels[name] = labels
        assert config[f"ORCH_{name.upper()}__TARGET"] == (
            f"dns:///{name}-headless.parole.svc.cluster.local:{CATALOG[name].port}"
        )
    for var in [v for v in os.environ if v.startswith("ORCH_")]:
        monkeypatch.delenv(var)
    for key, value in config.items():
        if key.startswith("ORCH_"):
            monkeypatch.setenv(key, value)
    settings = load_settings(OrchestratorSettings)
    for channel in (settings.stt, settings.llm, settings.tts):
        assert channel.load_balancing == "round_robin"
        assert channel.target.startswith("dns:///")


def adapter_rules() -> list[dict[str, Any]]:
    import yaml

    data = find("ConfigMap", "prometheus-adapter-parole")["data"]["config.yaml"]
    return list(yaml.safe_load(data)["rules"])


def adapter_series() -> set[str]:
    """Metric names the adapter rules read from Prometheus (exported by the services: see
    test_metrics_scrape)."""
    return {re.match(r"\w+", rule["seriesQuery"]).group(0) for rule in adapter_rules()}  # type: ignore[union-attr]


def test_k8s_autoscaling_reads_metrics_the_adapter_serves() -> None:
    served = {rule["name"]["as"] for rule in adapter_rules()}
    hpas = [o for o in k8s_objects() if o["kind"] == "HorizontalPodAutoscaler"]
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == set(PAROLE_SERVICES)
    for hpa in hpas:
        for metric in hpa["spec"]["metrics"]:
            assert metric["type"] == "Pods"
            assert metric["pods"]["metric"]["name"] in served
    for rule in adapter_rules():
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}
        assert balanced(rule["metricsQuery"])


def test_k8s_pods_are_annotated_for_scraping() -> None:
    for name in PAROLE_SERVICES:
        annotations = find("Deployment", name)["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(CATALOG[name].metrics_port)


# -- Prometheus and Grafana --------------------------------------------------------------------


def test_prometheus_scrapes_every_service_and_loads_the_alerts() -> None:
    config = load_yaml(PROMETHEUS)
    jobs = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    for name in PAROLE_SERVICES:
        assert jobs[f"parole-{name}"] == [f"{name}:{CATALOG[name].metrics_port}"]
    # prometheus.yml's folder is mounted at /etc/prometheus, so the rule file is found there.
    assert config["rule_files"] == [f"/etc/prometheus/{ALERTS.name}"] and ALERTS.parent == PROMETHEUS.parent
    for path in (COMPOSE_GPU, COMPOSE_CPU):
        assert "./prometheus:/etc/prometheus:ro" in load_yaml(path)["services"]["prometheus"]["volumes"]


def test_alert_rules_parse_and_cover_the_originals() -> None:
    rules = {r["alert"]: r for g in load_yaml(ALERTS)["groups"] for r in g["rules"]}
    originals = {"ParoleSttLatencyHigh", "ParoleGpuMemoryHigh", "ParoleErrorRateHigh", "ParoleServiceDown"}
    assert originals <= set(rules)
    assert rules["ParoleSttLatencyHigh"]["for"] == "5m"
    assert "0.9" in rules["ParoleGpuMemoryHigh"]["expr"]
    assert "0.05" in rules["ParoleErrorRateHigh"]["expr"]
    assert rules["ParoleServiceDown"]["expr"].startswith("up{")
    for name, expr in alert_exprs():
        assert balanced(expr), name
        assert metric_names(expr), name
        assert rules[name]["labels"]["severity"] in {"warning", "critical"}
        assert rules[name]["annotations"]["summary"]


def test_dashboard_parses_and_covers_the_issue() -> None:
    assert [p.name for p in DASHBOARDS] == ["parole.json"]
    dash = json.loads(DASHBOARDS[0].read_text())
    titles = " | ".join(p["title"].lower() for p in dash["panels"])
    for topic in (
        "time to first audio",
        "per-stage latency",
        "per second",
        "error",
        "fallbacks",
        "breakers",
        "gpu utilisation",
        "gpu memory",
    ):
        assert topic in titles, topic
    datasource = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yml")["datasources"][0]
    for panel in dash["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == datasource["uid"]
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    for title, expr in dashboard_exprs():
        assert balanced(expr), title
        assert metric_names(expr), title
    provider = load_yaml(DEPLOY / "grafana" / "provisioning" / "dashboards" / "parole.yml")["providers"][0]
    mounts = load_yaml(COMPOSE_GPU)["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts


def test_promql_reader_finds_metrics_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(parole_turn_latency_seconds_bucket{stage="x"}'
        "[$__rate_interval]))) / on (job) group_left up > bool 1"
    )
    assert metric_names(expr) == {"parole_turn_latency_seconds_bucket", "up"}
    assert not balanced("sum(rate(x[5m])")
