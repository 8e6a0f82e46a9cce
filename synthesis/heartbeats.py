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
    """Per configured engine: available when at least one live worker serves it; else the reason why not."""
    workers = live_workers()
    out = {}
    for name in settings.TTS_ENGINES:
        serving = [w for w in workers if w["engines"].get(name, {}).get("available")]
        if serving:
            out[name] = {**serving[0]["engines"][name], "workers": len(serving)}
            continue
        reasons = {w["engines"][name]["reason"] for w in workers if name in w["engines"]}
        reason = "; ".join(sorted(reasons)) or f"no live model worker serves the {name!r} engine"
        out[name] = {"available": False, "reason": reason, "workers": 0}
    return out
