"""``python -m services.gateway`` as its container runs it (through ``services.fleet``), with the
services behind it down: it still starts, answers health, says 503 in OpenAI's shape for what
needs them, exports its metrics, and stops cleanly on SIGTERM."""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

from services.fleet import CATALOG, Fleet, free_port

TOKEN = "process-test-token"


def get(url: str, token: str | None = TOKEN) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        body, status = err.read(), err.code
    try:
        return status, json.loads(body)
    except ValueError:
        return status, body.decode()


def test_runs_degraded_without_its_services_and_stops_on_sigterm(tmp_path: Path) -> None:
    spec = replace(CATALOG["gateway"], depends_on=(), port=0, metrics_port=0)
    down = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {
        "GATEWAY_SERVER__AUTH_TOKEN": TOKEN,
        "GATEWAY_DEPENDENCY_WAIT_SECONDS": "0",
        "GATEWAY_SERVER__GRACE_SECONDS": "2",
        **{f"GATEWAY_{n}__TARGET": down for n in ("STT", "LLM", "TTS", "ORCHESTRATOR")},
    }
    fleet = Fleet([spec], env={"gateway": env}, log_dir=tmp_path, ready_timeout=60, stop_grace=10)
    with fleet:
        http = f"http://127.0.0.1:{fleet.extra_port('gateway', 'HTTP__PORT')}"
        assert get(f"{http}/health", token=None) == (200, {"status": "ok"})
        status, page = get(fleet.web_client_url(), token=None)  # the browser client, served by default
        assert status == 200 and '<script type="module" src="app.js">' in page
        status, body = get(f"{http}/v1/models")
        assert status == 503 and body["error"]["type"] == "server_error" and "stt service" in body["error"]["message"]
        status, body = get(f"{http}/v1/models", token="wrong")
        assert status == 401 and body["error"]["code"] == "invalid_api_key"
        metrics_port = fleet.specs[0].metrics_port
        status, text = get(f"http://127.0.0.1:{metrics_port}/metrics", token=None)
        assert status == 200 and 'parole_gateway_requests_total{endpoint="models",status="503"} 1.0' in text
        child = fleet.children["gateway"]
        child.process.send_signal(signal.SIGTERM)
        assert child.process.wait(timeout=15) == 0
    log = (tmp_path / "gateway.log").read_text()
    assert "http listening" in log and "stopped" in log and TOKEN not in log


async def test_graceful_stop_tells_realtime_clients_why(tmp_path: Path) -> None:
    """Stopping the gateway ends each Realtime session with an error event that says so and a
    1001 close (going away), not a dropped socket."""
    import websockets

    from services.gateway.app import GatewayApp
    from services.runtime.server import start_app
    from tests.gateway.harness import API_KEY, gateway_settings

    down = f"127.0.0.1:{free_port()}"
    settings = gateway_settings(dict.fromkeys(("stt", "llm", "tts", "orchestrator"), down), dependency_wait_seconds=0)
    app = GatewayApp(settings)
    running = await start_app(app, settings.server)
    url = f"ws://127.0.0.1:{app.http_port}/v1/realtime"
    async with websockets.connect(url, additional_headers={"Authorization": f"Bearer {API_KEY}"}) as ws:
        assert json.loads(await ws.recv())["type"] == "session.created"
        await running.stop(1)
        await app.close()
        event = json.loads(await ws.recv())
        assert event["type"] == "error" and event["error"]["code"] == "server_shutting_down"
        try:
            await ws.recv()
            raise AssertionError("the socket stayed open")
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 1001
