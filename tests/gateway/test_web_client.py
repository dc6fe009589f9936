"""The gateway serves the browser client at ``/`` by default, with no API key (the page asks for
it); tests/browser drives the page itself in Chromium."""

from __future__ import annotations

from dataclasses import replace

import httpx
import pytest
import websockets

from services.fleet import CATALOG, Fleet
from services.gateway.config import WEB_CLIENT_DIR, HttpSettings
from tests.gateway.harness import API_KEY, GatewayFleet

AUTH = {"Authorization": f"Bearer {API_KEY}"}


async def test_the_page_and_its_scripts_are_served_without_the_key(gw: GatewayFleet) -> None:
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{gw.gateway.http_port}", timeout=10) as http:
        page = await http.get("/")
        app = await http.get("/app.js")
        worklets = await http.get("/audio-worklets.js")
        models = await http.get("/v1/models")
        post_only = await http.get("/v1/audio/speech", headers=AUTH)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="app.js">' in page.text
    # An AudioWorklet module and an ES module load only with a JavaScript MIME type.
    for script in (app, worklets):
        assert script.status_code == 200 and "javascript" in script.headers["content-type"]
    assert (
        "registerProcessor('parole-capture'" in worklets.text and "registerProcessor('parole-playback'" in worklets.text
    )
    assert models.status_code == 401  # the API behind the page still needs the key
    # The folder at / takes nothing from the API: GET on a POST endpoint is still 405, not the
    # folder's 404, and a WebSocket to another path is refused, not handed to a file server.
    assert post_only.status_code == 405
    with pytest.raises(websockets.InvalidStatus) as refused:
        async with websockets.connect(f"ws://127.0.0.1:{gw.gateway.http_port}/index.html"):
            pass
    assert refused.value.response.status_code == 403


def test_the_client_is_the_default_and_an_empty_setting_serves_nothing() -> None:
    assert HttpSettings().static_dir == WEB_CLIENT_DIR and (WEB_CLIENT_DIR / "index.html").is_file()
    # GATEWAY_HTTP__STATIC_DIR= must not become Path(""): the working directory, served whole.
    for off in ("", " ", "none", "off"):
        assert HttpSettings(static_dir=off).static_dir is None  # type: ignore[arg-type]


def test_make_run_prints_the_pages_address_https_with_a_certificate() -> None:
    gateway = replace(CATALOG["gateway"], depends_on=())
    assert Fleet([gateway], base_env={}).web_client_url() == "http://127.0.0.1:8000/"
    secured = Fleet([gateway], base_env={}, env={"gateway": {"GATEWAY_HTTP__TLS__CERT_FILE": "cert.pem"}})
    assert secured.web_client_url() == "https://127.0.0.1:8000/"
