"""``GET /api/health`` (worker and queue, counts only) and ``GET /api/model`` (checkpoint, defaults, limits)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse

from novelview.serve import schemas
from novelview.serve.state import ServeState, get_state

router = APIRouter(prefix="/api")


@router.get("/health", response_model=schemas.HealthInfo, responses={503: {"model": schemas.HealthInfo}},
            summary="Liveness of the worker and queue length")
async def health(state: ServeState = Depends(get_state)) -> JSONResponse:
    stats = state.jobs.stats()
    alive = state.jobs.worker_alive
    body = schemas.HealthInfo(
        status="ok" if alive else "degraded",
        worker_alive=alive,
        ready=state.jobs.ready.is_set(),
        running=stats["running"],
        queued=stats["queued"],
        max_queue=state.jobs.max_queue,
    ).model_dump(mode="json")
    return JSONResponse(body, status_code=200 if alive else 503)


@router.get("/model", response_model=schemas.ModelInfo, summary="Checkpoint info, presets, defaults, limits")
async def model(state: ServeState = Depends(get_state)) -> dict[str, Any]:
    settings = state.settings
    return {
        **state.model_info,
        "video": state.video,
        "limits": {
            **state.model_info["limits"],
            "max_upload_bytes": settings.max_upload_bytes,
            "max_pixels": settings.max_pixels,
            "max_side": settings.max_side,
            "max_aspect": settings.max_aspect,
            "max_queue": settings.max_queue,
        },
    }
