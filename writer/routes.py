from __future__ import annotations

from aiohttp import web

from writer import views


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/analytics", views.post_query)
    app.router.add_post("/analytics/{ts}/{user}/{event}", views.post_path)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/metrics", views.metrics)
