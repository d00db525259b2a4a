from __future__ import annotations

from aiohttp import web

from aggregator import views


def setup_routes(app: web.Application) -> None:
    app.router.add_get("/analytics", views.get_analytics)
    app.router.add_get("/analytics/series", views.get_series)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/shards", views.shards)
    app.router.add_get("/metrics", views.metrics)
