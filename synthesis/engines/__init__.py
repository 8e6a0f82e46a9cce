"""Engine registry: which engines a worker can load, and the outcome of loading them."""
from dataclasses import dataclass

from django.conf import settings
from django.utils.module_loading import import_string

from synthesis.engines.base import Engine, EngineInfo, EngineUnavailable

ENGINE_CLASSES = {
    "espeak": "synthesis.engines.espeak.EspeakEngine",
    "xtts": "synthesis.engines.xtts.XttsEngine",
}


@dataclass
class LoadedEngine:
    name: str
    engine: Engine | None
    info: EngineInfo | None
    reason: str = ""

    @property
    def available(self) -> bool:
        return self.engine is not None

    def status(self) -> dict:
        if not self.available:
            return {"available": False, "reason": self.reason}
        return {"available": True, **self.info.as_dict()}


def build_engine(name: str) -> Engine:
    if name not in ENGINE_CLASSES:
        raise EngineUnavailable(f"no engine named {name!r} is installed in this build")
    engine_class = import_string(ENGINE_CLASSES[name])
    if name == "espeak":
        return engine_class(chunk_ms=settings.ESPEAK_CHUNK_MS)
    return engine_class(
        model_dir=settings.XTTS_MODEL_DIR,
        device=settings.XTTS_DEVICE,
        first_chunk_tokens=settings.XTTS_FIRST_CHUNK_TOKENS,
        chunk_tokens=settings.XTTS_CHUNK_TOKENS,
        context_frames=settings.XTTS_CONTEXT_FRAMES,
        lookahead_frames=settings.XTTS_LOOKAHEAD_FRAMES,
        cache_size=settings.XTTS_CONDITIONING_CACHE,
    )


def load_engine(name: str) -> LoadedEngine:
    try:
        engine = build_engine(name)
        info = engine.load()
    except EngineUnavailable as exc:
        return LoadedEngine(name=name, engine=None, info=None, reason=str(exc))
    return LoadedEngine(name=name, engine=engine, info=info)
