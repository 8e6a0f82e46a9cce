"""Operators' pages in Django admin for the serving side: the live model workers and engine status."""
import time

from django.contrib import admin
from django.template.response import TemplateResponse

from synthesis.selectors import service_health


def _workers_page(request):
    health = service_health()
    now = time.time()
    workers = [
        # The heartbeat's age tells an operator more than its timestamp: a live worker beats every few seconds.
        worker | {"heartbeat_age": round(now - worker["heartbeat_at"], 1) if worker.get("heartbeat_at") else None}
        for worker in health["workers"]
    ]
    context = {
        **admin.site.each_context(request),
        "title": "Workers",
        "health": health,
        "engines": sorted(health["engines"].items()),
        "workers": workers,
    }
    return TemplateResponse(request, "admin/workers.html", context)


# admin_view: staff login (the admin's own check), no caching, CSRF; anyone else is sent to the admin login.
workers_admin_view = admin.site.admin_view(_workers_page)
