"""Fixtures of the browser tests: the fleet (loaded once for the module: models take seconds),
Playwright, and the browser binary."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest

from tests.browser.web import CHROMIUM, missing
from tests.gateway.harness import GatewayFleet, gateway_fleet

if TYPE_CHECKING:
    from playwright.async_api import Playwright


@pytest.fixture(scope="module")
def chromium() -> str:
    """The browser binary; skips where it is missing, except on CI, which must have it."""
    why = missing()
    if why:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run on CI: {why}")
        pytest.skip(why)
    return CHROMIUM


@pytest.fixture(scope="module")
async def fleet(chromium: str) -> AsyncIterator[GatewayFleet]:
    async with gateway_fleet() as f:
        yield f


@pytest.fixture(scope="module")
async def playwright(chromium: str) -> AsyncIterator[Playwright]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        yield p
