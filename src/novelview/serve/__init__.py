"""Web demo and HTTP API (extra ``[serve]``: FastAPI + uvicorn).

``create_app(pipeline_or_checkpoint)`` builds a self-contained app (no module-level state, so tests can make
several); ``novelview serve`` runs one with uvicorn on 127.0.0.1. See ``docs/architecture.md`` and the OpenAPI
schema at ``/openapi.json`` for the endpoints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the FastAPI import is deferred so `import novelview.serve` works without the extra
    from novelview.serve.app import ServeSettings, create_app

__all__ = ["ServeSettings", "create_app"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from novelview.serve import app

        return getattr(app, name)
    raise AttributeError(name)
