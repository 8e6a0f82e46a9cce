"""Engine registry: which engines a worker can load, and the outcome of loading them."""
import threading
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


def _engine_options(name: str) -> dict:
    if name == "espeak":
        return {"chunk_ms": settings.ESPEAK_CHUNK_MS}
    return {
        "model_dir": settings.XTTS_MODEL_DIR,
        "device": settings.XTTS_DEVICE,
        "first_chunk_tokens": settings.XTTS_FIRST_CHUNK_TOKENS,
        "chunk_tokens": settings.XTTS_CHUNK_TOKENS,
        "context_frames": settings.XTTS_CONTEXT_FRAMES,
        "lookahead_frames": settings.XTTS_LOOKAHEAD_FRAMES,
        "cache_size": settings.XTTS_CONDITIONING_CACHE,
        "slots": settings.XTTS_BATCH_SLOTS,
        "dtype": settings.XTTS_DTYPE,
        "cuda_graphs": settings.XTTS_CUDA_GRAPHS,
    }


# Engines are loaded once per process (model weights are big); a worker that restarts inside the same
# process, as the embedded one does under a new event loop, finds them here.
_loaded: dict[tuple, LoadedEngine] = {}
_loaded_lock = threading.Lock()


def load_engine(name: str) -> LoadedEngine:
    classes = {**ENGINE_CLASSES, **settings.TTS_ENGINE_CLASSES}
    if name not in classes:
        return LoadedEngine(name=name, engine=None, info=None, reason=f"no engine named {name!r} is installed")
    options = _engine_options(name)
    key = (name, classes[name], tuple(sorted(options.items())))
    with _loaded_lock:
        if key in _loaded:
            return _loaded[key]
        try:
            engine = import_string(classes[name])(**options)
            loaded = LoadedEngine(name=name, engine=engine, info=engine.load())
        except EngineUnavailable as exc:
            return LoadedEngine(name=name, engine=None, info=None, reason=str(exc))
        _loaded[key] = loaded  # only successes: a missing model may be installed before the next try
        return loaded
