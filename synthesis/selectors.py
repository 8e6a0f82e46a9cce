"""Reads over the serving side: what /v1/health and the operators' Workers page in the admin report."""
from django.conf import settings
from django.db import connection

from synthesis import heartbeats

_WORKER_FIELDS = (
    "worker_id", "host", "pid", "loading", "capacity", "load", "waiting_for_client", "engines_paused", "accepting", "jobs_started",
    "batches", "heartbeat_at",
)


def service_health() -> dict:
    """The health report: overall `status`, the database, each engine's state, the live model workers and (with
    Redis) Redis; `serving` says whether anything can be served at all. It reports outages, never raises."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = {"ok": True, "vendor": connection.vendor}
    except Exception as exc:  # the health check must report, not crash
        database = {"ok": False, "error": str(exc)}
    redis = {"ok": True}
    try:
        engines = heartbeats.engine_availability()
        live = heartbeats.live_workers()
    except Exception as exc:  # the heartbeats live in Redis (production): say it is down
        redis = {"ok": False, "error": f"Redis cannot be reached: {exc}"}
        reason = "the model-worker registry (Redis) cannot be reached"
        engines = {name: {"available": False, "state": "unavailable", "reason": reason, "workers": 0}
                   for name in settings.TTS_ENGINES}
        live = []
    states = [state.get("state", "available" if state["available"] else "unavailable") for state in engines.values()]
    if not database["ok"] or not redis["ok"] or not states:
        overall = "unhealthy"
    elif all(state == "available" for state in states):
        overall = "ok"
    elif all(state in ("available", "loading") for state in states):
        overall = "loading"  # nothing is wrong: engines are still coming up
    elif "available" in states:
        overall = "degraded"
    else:
        overall = "unhealthy"
    report = {
        "status": overall,
        "serving": database["ok"] and redis["ok"] and "available" in states,
        "version": settings.VERSION,
        "database": database,
        "engines": engines,
        "workers": [
            {key: info.get(key) for key in _WORKER_FIELDS}
            | {"engines": sorted(name for name, state in info["engines"].items() if state["available"])}
            for info in live
        ],
        "embedded_worker": settings.TTS_EMBEDDED_WORKER,
    }
    if settings.REDIS_URL:
        report["redis"] = redis
    return report
