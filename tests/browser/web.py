"""Driving the web client in a real headless Chromium: Debian's ``chromium`` binary under
Playwright (whose own browser downloads are not used).

Chromium's fake microphone plays a WAV file (``--use-file-for-fake-audio-capture``; the
``%noloop`` suffix plays it once, then silence; without it the file loops). Our 16 kHz mono
PCM16 WAVs play as they are: Chromium converts the rate to its capture format. The audio still
goes through the browser's echo cancellation, noise suppression and gain control, the page's
capture worklet and the Realtime socket, as a person's voice would.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

try:
    from playwright.async_api import TimeoutError as PlaywrightTimeout
except ImportError:  # pragma: no cover - the dev extra installs it; missing() says so
    PlaywrightTimeout = None  # type: ignore[assignment,misc]

if TYPE_CHECKING:
    from playwright.async_api import Page, Playwright

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Headless as root, on a closed network: no sandbox (root), no GPU, and none of Chromium's
# background connections (updates, sync, field trials), which the network refuses.
BASE_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if PlaywrightTimeout is None:
        return "playwright is not installed (pip install -e '.[dev]')"
    if not Path(CHROMIUM).exists():
        return "chromium is not installed (make system-deps installs Debian's chromium)"
    return None


@dataclass
class WebPage:
    """The page under test, with what it threw."""

    page: Page
    errors: list[str] = field(default_factory=list)

    async def until(self, expression: str, within: float, what: str) -> Any:
        """The first truthy value of a JS expression polled in the page, or fail at the deadline
        with the page's state."""
        try:
            handle = await self.page.wait_for_function(expression, timeout=within * 1000, polling=20)
        except PlaywrightTimeout:
            raise AssertionError(f"{what}: not within {within} s; page: {await self.state()}") from None
        return await handle.json_value()

    async def state(self) -> Any:
        return await self.page.evaluate(
            "() => ({state: parole.state, alerts: parole.alerts, events: parole.events, "
            f"played: parole.playedSamples, responses: parole.responses, errors: {json.dumps(self.errors)}}})"
        )

    async def alert(self, code: str, within: float = 10) -> str:
        """The text of the message shown with this code."""
        return str(
            await self.until(
                f"document.querySelector('.alert[data-code=\"{code}\"] .text')?.textContent", within, f"alert {code}"
            )
        )

    async def sign_in(self, key: str) -> None:
        """The gateway has a token: the page asks for it, and lists the models once it has it."""
        await self.alert("invalid_api_key")
        await self.page.fill("#api-key", key)
        await self.page.click("#key-form button")
        await self.until("!document.querySelector('#language').disabled", 15, "languages listed")
        assert await self.page.is_hidden("#key-form")

    async def choose(self, language: str, voice: str) -> None:
        await self.page.select_option("#language", language)
        await self.page.select_option("#voice", voice)

    async def connect(self, state: str | None = "listening") -> None:
        """Connects and waits until the session is configured (and in ``state``, if given)."""
        await self.page.click("#connect")
        await self.until("parole.connected", 20, "connected")
        if state is not None:
            await self.until(f"parole.state === '{state}'", 10, f"state {state}")


@contextlib.asynccontextmanager
async def open_page(
    pw: Playwright,
    url: str,
    *,
    microphone: Path | None = None,
    loop: bool = False,
    allow_microphone: bool = True,
    ignore_https_errors: bool = False,
) -> AsyncIterator[WebPage]:
    """A fresh Chromium at ``url``, with a fake microphone (never a real device) that plays
    ``microphone`` (once, or over and over with ``loop``; None: Chromium's beeps).
    ``allow_microphone`` False refuses the page's request, as a person's "Block" would."""
    flags = [*BASE_FLAGS, "--use-fake-device-for-media-stream"]
    if microphone is not None:
        flags.append(f"--use-file-for-fake-audio-capture={microphone}{'' if loop else '%noloop'}")
    if allow_microphone:
        flags.append("--use-fake-ui-for-media-stream")  # grants the permission without a prompt
    browser = await pw.chromium.launch(
        executable_path=CHROMIUM,
        headless=True,
        args=flags,
        ignore_default_args=["--mute-audio"],  # the page's playback must run as it would for a person
    )
    try:
        context = await browser.new_context(
            viewport={"width": 900, "height": 760}, ignore_https_errors=ignore_https_errors, locale="en-US"
        )
        page = await context.new_page()
        web = WebPage(page)
        page.on("pageerror", lambda exc: web.errors.append(str(exc)))
        await page.goto(url)
        yield web
        assert not web.errors, f"the page threw: {web.errors}"
    finally:
        await browser.close()
