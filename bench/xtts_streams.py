"""Shared by the XTTS benchmarks: build a random XTTS of a given size, load it through the engine, and run many
concurrent streams through `XttsEngine.synthesize` (one thread each, as the worker runs them).

Per level: first audio (p50, p95, from each stream's own start), audio seconds per wall second (all streams),
and the worst playback gap: what a player that starts at a stream's first chunk would hear as silence when
the next chunk is late (0 when audio never runs dry).
"""
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL_SIZE = {
    "gpt_layers": 30, "gpt_n_model_channels": 1024, "gpt_n_heads": 16, "gpt_num_audio_tokens": 8194,
    "gpt_start_audio_token": 8192, "gpt_stop_audio_token": 8193, "decoder_input_dim": 1024,
}
MID_SIZE = {
    "gpt_layers": 6, "gpt_n_model_channels": 512, "gpt_n_heads": 8, "gpt_num_audio_tokens": 8194,
    "gpt_start_audio_token": 8192, "gpt_stop_audio_token": 8193, "decoder_input_dim": 512,
}
TEXT = "Thanks for calling! Your appointment is confirmed for Tuesday at three."  # one sentence per stream
SENTENCE = "thanks for calling, your appointment is confirmed for tuesday at three."
OUTPUT_RATE = 24000


def setup_django() -> str:
    """Only storage is needed (the engine reads a voice's latents from it): no database, no apps."""
    import django
    from django.conf import settings

    media = tempfile.mkdtemp(prefix="xtts-bench-media-")
    if not settings.configured:
        settings.configure(INSTALLED_APPS=[], STORAGES={"default": {
            "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": media}}})
        django.setup()
    return media


def reference_voice():
    import numpy as np

    t = np.arange(6 * 22050) / 22050
    return (0.2 * np.sin(2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 3 * t)) / 22050)).astype(np.float32)


def build(directory: Path, size: dict | None) -> Path:
    from tests.xtts_tiny import build_tiny_xtts

    return build_tiny_xtts(directory, **(size or {}))


def load(model_dir: Path, **options):
    """An engine and the voice settings of a voice whose latents it computed once."""
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from synthesis.engines.xtts import XttsEngine

    engine = XttsEngine(model_dir=str(model_dir), **options)
    engine.load()
    name = default_storage.save("bench/latents.pt", ContentFile(engine.compute_conditioning(reference_voice(), 22050)))
    return engine, {"latents": name}


def _sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def one_stream(engine, voice_settings, delay: float, start_barrier: float, result: dict) -> None:
    from synthesis.engines.base import Prosody

    time.sleep(max(0.0, start_barrier + delay - time.perf_counter()))
    started = time.perf_counter()
    arrivals, samples = [], [0]

    def emit(chunk: bytes) -> bool:
        arrivals.append((time.perf_counter() - started, samples[0] / OUTPUT_RATE))
        samples[0] += len(chunk) // 2
        return True

    engine.synthesize(text=TEXT, language="en", voice_settings=voice_settings, prosody=Prosody(), emit=emit)
    first = arrivals[0][0]
    result.update(
        first=first, total=time.perf_counter() - started, seconds=samples[0] / OUTPUT_RATE,
        gap=max(0.0, *((t - first) - played for t, played in arrivals)), ended=time.perf_counter(),
    )


def run_level(engine, voice_settings, *, streams: int, tokens: int, arrivals: str = "together",
              spread: float = 2.0, seed: int = 0) -> dict:
    """`streams` streams of `tokens` GPT tokens each, started together or at random over `spread` seconds."""
    engine.generation_options = {"min_new_tokens": tokens, "max_new_tokens": tokens}
    rng = random.Random(seed)
    delays = [0.0 if arrivals == "together" else rng.uniform(0, spread) for _ in range(streams)]
    results = [{} for _ in range(streams)]
    start = time.perf_counter() + 0.05
    threads = [threading.Thread(target=one_stream, args=(engine, voice_settings, d, start, r))
               for d, r in zip(delays, results)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    _sync()
    wall = max(r["ended"] for r in results) - start
    firsts = sorted(r["first"] for r in results)
    return {
        "streams": streams, "arrivals": arrivals,
        "first_p50": statistics.median(firsts),
        "first_p95": firsts[min(len(firsts) - 1, round(0.95 * (len(firsts) - 1)))],
        "audio_per_wall": sum(r["seconds"] for r in results) / wall,
        "worst_gap": max(r["gap"] for r in results),
        "tokens_per_second": streams * tokens / wall,
    }


def row(level: dict) -> str:
    return (f"{level['streams']:>8} {level['arrivals']:>9} {level['first_p50'] * 1000:>10.1f} "
            f"{level['first_p95'] * 1000:>10.1f} {level['audio_per_wall']:>10.2f} {level['worst_gap'] * 1000:>10.1f}")


HEADER = f"{'streams':>8} {'arrivals':>9} {'TTFA p50':>10} {'TTFA p95':>10} {'audio s/s':>10} {'worst gap':>10}"
