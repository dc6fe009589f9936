"""One real fleet with the gateway for every gateway test (loaded once: models take seconds)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.gateway.harness import GatewayFleet, gateway_fleet


@pytest.fixture(scope="session")
async def gw() -> AsyncIterator[GatewayFleet]:
    async with gateway_fleet() as fleet:
        yield fleet
