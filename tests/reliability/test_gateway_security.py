"""Security of the gateway: the API key on every ``/v1`` path and on the Realtime socket (health
stays open), HTTPS and mutual TLS on the HTTP API, no key in its logs, and no file outside the
static folder reachable through a crafted path.

What is checked here is the gateway's own front door, so it runs with no service behind it
(calls that reach the fleet get 503): no model needs loading. Every check records its outcome
in the reliability ledger.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets
from pydantic import SecretStr

from services.fleet import CATALOG, Fleet, free_port
from services.gateway.app import GatewayApp
from services.gateway.config import GatewayServerSettings, GatewaySettings, HttpSettings, WyomingSettings
from services.runtime.config import TlsSettings
from services.runtime.server import start_app
from services.testkit.ledger import record
from tests.pki import make_pki

KEY = "security-test-key-5f1c"
DOWN = "127.0.0.1:9"  # discard port: nothing answers gRPC there
PATHS = [
    ("GET", "/v1/models"),
    ("GET", "/v1/models/base"),
    ("POST", "/v1/audio/transcriptions"),
    ("POST", "/v1/audio/speech"),
    ("POST", "/v1/chat/completions"),
    ("GET", "/v1/no-such-endpoint"),
]


def settings(tmp: Path, **server: Any) -> GatewaySettings:
    static = tmp / "static"
    static.mkdir(exist_ok=True)
    (static / "index.html").write_text("<h1>parole</h1>")
    (tmp / "secret.txt").write_text("outside the static folder")
    return GatewaySettings(
        server=GatewayServerSettings(
            host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1.0, auth_token=SecretStr(KEY), **server
        ),
        http=HttpSettings(port=0, static_dir=static),
        wyoming=WyomingSettings(enabled=False),
        dependency_wait_seconds=0,
        **{n: {"target": DOWN, "connect_timeout_seconds": 1} for n in ("stt", "llm", "tts", "orchestrator")},  # type: ignore[arg-type]
    )


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[GatewayApp]:
    s = settings(tmp_path)
    app = GatewayApp(s)
    running = await start_app(app, s.server)
    yield app
    await running.stop(0)
    await app.close()


async def test_every_v1_path_needs_the_key_health_and_static_do_not(gateway: GatewayApp) -> None:
    base = f"http://127.0.0.1:{gateway.http_port}"
    refused: list[str] = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for method, path in PATHS:
            for headers in (
                {},
                {"Authorization": "Bearer wrong"},
                {"Authorization": KEY},
                {"Authorization": f"Basic {KEY}"},
            ):
                r = await http.request(method, path, headers=headers)
                if r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key":
                    refused.append(f"{method} {path}")
        with_key = await http.get("/v1/models", headers={"Authorization": f"Bearer {KEY}"})
        health = await http.get("/health")
        index = await http.get("/")
    url = base.replace("http", "ws") + "/v1/realtime"
    async with websockets.connect(url) as ws:
        event = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed) as closed:
            await ws.recv()
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {KEY}"}) as ws:
        created = json.loads(await ws.recv())
    passed = (
        len(refused) == 4 * len(PATHS)
        and with_key.status_code == 503  # past the door; the fleet is down
        and health.status_code == 200
        and index.status_code == 200
        and event["error"]["code"] == "invalid_api_key"
        and closed.value.rcvd is not None
        and closed.value.rcvd.code == 1008
        and created["type"] == "session.created"
    )
    record(
        "security", "gateway: API key on every /v1 path and the Realtime socket", passed=passed, refused=len(refused)
    )
    assert passed, (refused, with_key.status_code, health.status_code, event)


async def test_static_folder_does_not_leak_files_outside_it(gateway: GatewayApp) -> None:
    base = f"http://127.0.0.1:{gateway.http_port}"
    attempts = ["/../secret.txt", "/%2e%2e/secret.txt", "/..%2fsecret.txt", "/static/../../secret.txt", "//secret.txt"]
    leaked = []
    async with httpx.AsyncClient(base_url=base, timeout=10) as http:
        for path in attempts:
            r = await http.get(path)
            if "outside the static folder" in r.text:
                leaked.append(path)
    record("security", "gateway: no path escapes the static folder", passed=not leaked, leaked=leaked)
    assert not leaked


async def test_https_and_mutual_tls(tmp_path: Path) -> None:
    pki = make_pki(tmp_path)
    tls = TlsSettings(cert_file=pki["server_cert"], key_file=pki["server_key"], client_ca_file=pki["ca"])
    s = settings(tmp_path, tls=tls)
    app = GatewayApp(s)
    running = await start_app(app, s.server)
    try:
        url = f"https://127.0.0.1:{app.http_port}/health"
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        context.load_cert_chain(str(pki["client_cert"]), str(pki["client_key"]))
        async with httpx.AsyncClient(verify=context, timeout=10) as http:
            ok = (await http.get(url)).status_code == 200
        no_cert_refused = False
        try:
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=str(pki["ca"])), timeout=10) as http:
                await http.get(url)
        except (httpx.HTTPError, ssl.SSLError):
            no_cert_refused = True
        plain_refused = False
        try:
            async with httpx.AsyncClient(timeout=10) as http:
                await http.get(url.replace("https", "http"))
        except httpx.HTTPError:
            plain_refused = True
    finally:
        await running.stop(0)
        await app.close()
    passed = ok and no_cert_refused and plain_refused
    record(
        "security",
        "gateway: HTTPS with mutual TLS",
        passed=passed,
        ok=ok,
        no_cert_refused=no_cert_refused,
        plain_refused=plain_refused,
    )
    assert passed


def test_the_key_never_reaches_the_log(tmp_path: Path) -> None:
    spec = replace(CATALOG["gateway"], depends_on=(), port=0, metrics_port=0)
    env = {
        "GATEWAY_SERVER__AUTH_TOKEN": KEY,
        "GATEWAY_LOG__LEVEL": "DEBUG",
        "GATEWAY_DEPENDENCY_WAIT_SECONDS": "0",
        **{f"GATEWAY_{n}__TARGET": f"127.0.0.1:{free_port()}" for n in ("STT", "LLM", "TTS", "ORCHESTRATOR")},
    }
    wrong = "wrong-key-9d3e"
    with Fleet([spec], env={"gateway": env}, log_dir=tmp_path, ready_timeout=60) as fleet:
        base = f"http://127.0.0.1:{fleet.extra_port('gateway', 'HTTP__PORT')}"
        script = (
            "import httpx, sys; b = sys.argv[1]\n"
            "for key in sys.argv[2:]:\n"
            "    h = {'Authorization': f'Bearer {key}'}\n"
            "    httpx.get(b + '/v1/models', headers=h, timeout=10)\n"
            "    httpx.post(b + '/v1/chat/completions', headers=h, json={'messages': [{'role': 'user', 'content': 'hi'}]}, timeout=10)\n"
        )
        subprocess.run([sys.executable, "-c", script, base, KEY, wrong], check=True, timeout=60)
    log = (tmp_path / "gateway.log").read_text()
    passed = KEY not in log and wrong not in log and "stopped" in log
    record(
        "security",
        "gateway: API keys (right or wrong) never logged, at DEBUG",
        passed=passed,
        log_lines=len(log.splitlines()),
    )
    assert passed
