"""The HTTP routes, one router per resource; each handler reaches its app through ``Depends(get_state)``."""

from novelview.serve.routes import jobs, pages, preprocess, system

ROUTERS = (pages.router, system.router, preprocess.router, jobs.router)

__all__ = ["ROUTERS"]
