from __future__ import annotations

from aiohttp import web

from writer import views

# Any non-empty segment: aiohttp's default segment pattern, [^{}/]+, would answer
# 404 for a username holding "{" or "}", which the query forms accept.
SEGMENT = "[^/]+"


def setup_routes(app: web.Application) -> None:
    app.router.add_post("/analytics", views.post_query)
    app.router.add_post(f"/analytics/{{ts:{SEGMENT}}}/{{user:{SEGMENT}}}/{{event:{SEGMENT}}}", views.post_path)
    app.router.add_get("/healthz", views.healthz)
    app.router.add_get("/readyz", views.readyz)
    app.router.add_get("/metrics", views.metrics)
