"""The demo page: static HTML, CSS and JS, with no external resources."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException
from fastapi.responses import Response

from novelview.serve.state import STATIC_FILES, ServeState, get_state

router = APIRouter(include_in_schema=False)


def _page(state: ServeState, name: str) -> Response:
    return Response(state.static[name], media_type=STATIC_FILES[name], headers={"Cache-Control": "no-cache"})


@router.get("/")
async def index(state: ServeState = Depends(get_state)) -> Response:
    return _page(state, "index.html")


@router.get("/static/{name}")
async def static_file(name: str, state: ServeState = Depends(get_state)) -> Response:
    if name not in state.static or name == "index.html":
        raise HTTPException(404, "not found")
    return _page(state, name)
