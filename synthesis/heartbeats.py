"""Worker heartbeats (the registry of live model workers): each worker process (synthesis/worker.py) writes one
to Django's cache (Redis in production) every TTS_WORKER_HEARTBEAT_SECONDS; the web tier reads them to know
which engines are served, by whom, and with how much room.
"""
import time

from django.conf import settings
from django.core.cache import cache

_INDEX_KEY = "tts:workers"


def _worker_key(worker_id: str) -> str:
    return f"tts:worker:{worker_id}"


def _ttl() -> float:
    return settings.TTS_WORKER_DEAD_AFTER


def worker_heartbeat(*, worker_id: str, info: dict) -> None:
    cache.set(_worker_key(worker_id), {**info, "worker_id": worker_id, "heartbeat_at": time.time()}, timeout=_ttl() + 1)
    index = set(cache.get(_INDEX_KEY) or ())
    if worker_id not in index:
        # A racing worker may overwrite this; each beat adds itself again, so the index heals within one beat.
        cache.set(_INDEX_KEY, sorted(index | {worker_id}), timeout=None)


def worker_gone(*, worker_id: str) -> None:
    cache.delete(_worker_key(worker_id))
    cache.set(_INDEX_KEY, sorted(set(cache.get(_INDEX_KEY) or ()) - {worker_id}), timeout=None)


def worker_alive(worker_id: str) -> bool:
    info = cache.get(_worker_key(worker_id))
    return info is not None and time.time() - info["heartbeat_at"] <= _ttl()


def worker_engine_version(worker_id: str, engine: str) -> str | None:
    """The version of `engine` a worker runs (None when the worker is gone or lacks it)."""
    info = cache.get(_worker_key(worker_id))
    return ((info or {}).get("engines", {}).get(engine) or {}).get("version")


def workers_alive(worker_ids: list[str]) -> dict[str, bool]:
    found = cache.get_many([_worker_key(worker_id) for worker_id in worker_ids])
    now = time.time()
    beats = {info["worker_id"]: info["heartbeat_at"] for info in found.values()}
    return {worker_id: now - beats.get(worker_id, 0) <= _ttl() for worker_id in worker_ids}


def live_workers() -> list[dict]:
    index = list(cache.get(_INDEX_KEY) or ())
    if not index:
        return []
    found = cache.get_many([_worker_key(worker_id) for worker_id in index])
    now = time.time()
    live = [info for info in found.values() if now - info["heartbeat_at"] <= _ttl()]
    if len(found) < len(index):
        cache.set(_INDEX_KEY, sorted(info["worker_id"] for info in found.values()), timeout=None)
    return sorted(live, key=lambda info: info["worker_id"])


def engine_availability() -> dict[str, dict]:
    """Per configured engine, its `state`: `available` when at least one live worker serves it, `loading` when
    none does yet but a live worker is still loading it (it will be served shortly), else `unavailable` with
    the reason why."""
    workers = live_workers()
    out = {}
    for name in settings.TTS_ENGINES:
        serving = [w for w in workers if w["engines"].get(name, {}).get("available")]
        if serving:
            capacity = sum(w.get("capacity", 0) for w in serving)
            out[name] = {**serving[0]["engines"][name], "state": "available", "workers": len(serving),
                         "capacity": capacity}
            continue
        loading = [w for w in workers if w["engines"].get(name, {}).get("loading")]
        if loading:
            out[name] = {
                "available": False, "state": "loading", "workers": 0,
                "reason": f"the {name!r} engine is still loading on {len(loading)} model worker(s); try again shortly",
            }
            continue
        reasons = {w["engines"][name]["reason"] for w in workers if name in w["engines"]}
        reason = "; ".join(sorted(reasons)) or _NO_WORKER.format(name=name)
        out[name] = {"available": False, "state": "unavailable", "reason": reason, "workers": 0}
    return out


def engine_unavailable_error(engine: str, state: dict | None, subject: str):
    """The 503 for a request that needs `engine` in `state` (from engine_availability): `engine_loading` with
    Retry-After while a worker is still loading it, else `engine_unavailable` with the reason."""
    from callwaiting.errors import ApiError

    if state and state.get("state") == "loading":
        return ApiError("engine_loading", f"{subject}: {state['reason']}.", 503,
                        headers={"Retry-After": str(ENGINE_LOADING_RETRY_AFTER)})
    reason = state["reason"] if state else f"engine {engine!r} is not configured"
    # No worker at all is usually passing (workers restarting, heartbeats lost with a Redis restart); a worker
    # that could not load the engine is not, so it gets no Retry-After.
    passing = reason == _NO_WORKER.format(name=engine)
    return ApiError("engine_unavailable", f"{subject}: {reason}", 503,
                    headers={"Retry-After": str(NO_WORKER_RETRY_AFTER)} if passing else None)


_NO_WORKER = "no live model worker serves the {name!r} engine"
NO_WORKER_RETRY_AFTER = 2
# Seconds a client is told to wait while an engine loads (XTTS takes tens of seconds on a GPU).
ENGINE_LOADING_RETRY_AFTER = 10
