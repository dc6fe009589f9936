"""``GET /v1/models`` and ``GET /v1/models/{id}``: the STT engines, LLM models and TTS voices
the fleet serves, gathered from the catalog. Separate: it calls no model, only lists them.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.gateway.errors import ApiError
from services.gateway.openai_api.common import ApiBase, log


class ModelsApi(ApiBase):
    """The models endpoints."""

    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": await self._models()})

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for entry in await self._models():
            if entry["id"] == model_id:
                return JSONResponse(entry)
        raise ApiError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")

    async def _models(self) -> list[dict[str, Any]]:
        catalog = self.app.catalog
        engines, models, voices = await asyncio.gather(
            catalog.engines(), catalog.models(), catalog.voices(), return_exceptions=True
        )
        failures = [r for r in (engines, models, voices) if isinstance(r, BaseException)]
        if len(failures) == 3:
            raise failures[0]
        created = int(self.app.started_at)

        def entry(model_id: str, kind: str, **extra: Any) -> dict[str, Any]:
            return {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": "parole",
                "parole": extra | {"kind": kind},
            }

        data: list[dict[str, Any]] = []
        if isinstance(engines, list):
            data += [entry(e.name, "stt", model=e.model, device=e.device, state=e.breaker_state) for e in engines]
        if isinstance(models, list):
            data += [entry(m.model, "llm", backend=m.backend, state=m.breaker_state) for m in models]
        if isinstance(voices, list):
            data += [
                entry(v.name, "tts", language=v.language, engine=v.engine, sample_rate_hz=v.sample_rate_hz)
                for v in voices
            ]
        for failure in failures:
            log.warning("models: a service did not answer", error=str(failure))
        return data
