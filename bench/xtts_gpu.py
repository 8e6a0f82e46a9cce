"""Benchmark: XTTS streaming through our engine at the real model size, for time to first audio and RTF.

No XTTS weights can be downloaded here, so this builds the released XTTS v2 architecture (30 GPT layers,
1024 channels, 16 heads, 8194 audio tokens, full HiFi-GAN) with random weights, saves it, and loads it
through the engine's real loading path. Random weights say nothing about quality, but the compute per
token, and so latency and throughput, are those of the real model. Generation lengths are forced with
min/max_new_tokens (random weights would stop at random). Prints numbers, asserts nothing.
"""
import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FULL_SIZE = {
    "gpt_layers": 30, "gpt_n_model_channels": 1024, "gpt_n_heads": 16, "gpt_num_audio_tokens": 8194,
    "gpt_start_audio_token": 8192, "gpt_stop_audio_token": 8193, "decoder_input_dim": 1024,
}
TEXT = "Thanks for calling! Your appointment is confirmed for Tuesday at three."


def measure(engine, conditioning_name, tokens: int, runs: int):
    """Median time to first audio, total time, audio seconds, and the longest gap a real-time player
    starting at the first chunk would hear (0 when every chunk arrives before the audio before it ran out)."""
    from synthesis.engines.base import Prosody

    engine.generation_options = {"min_new_tokens": tokens, "max_new_tokens": tokens}
    firsts, totals, gaps, seconds = [], [], [], 0.0
    for _ in range(runs):
        start, arrivals, samples = time.perf_counter(), [], [0]

        def emit(chunk: bytes) -> bool:
            engine_sync()
            arrivals.append((time.perf_counter() - start, samples[0] / 24000))
            samples[0] += len(chunk) // 2
            return True

        engine.synthesize(text=TEXT, language="en", voice_settings={"latents": conditioning_name}, prosody=Prosody(), emit=emit)
        totals.append(time.perf_counter() - start)
        first = arrivals[0][0]
        firsts.append(first)
        gaps.append(max(0.0, *((t - first) - played for t, played in arrivals)))
        seconds = samples[0] / 24000
    return statistics.median(firsts), statistics.median(totals), seconds, max(gaps)


def engine_sync():
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--tokens", default="100,400")
    args = parser.parse_args()

    import django
    import numpy as np
    from django.conf import settings

    # Only storage is needed (the engine reads a voice's latents from it); no database, no apps.
    media = tempfile.mkdtemp(prefix="xtts-bench-media-")
    settings.configure(INSTALLED_APPS=[], STORAGES={"default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": media}}})
    django.setup()
    import torch
    from django.core.files.base import ContentFile
    from django.core.files.storage import default_storage

    from synthesis.engines.xtts import XttsEngine
    from tests.xtts_tiny import build_tiny_xtts

    t = np.arange(6 * 22050) / 22050
    reference = (0.2 * np.sin(2 * np.pi * np.cumsum(140 + 20 * np.sin(2 * np.pi * 3 * t)) / 22050)).astype(np.float32)

    print("reproduce:", shlex.join([sys.executable, *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        build_tiny_xtts(Path(tmp), **FULL_SIZE)
        built = time.perf_counter() - started
        for first_chunk in (6, 8, 20):  # ours, a larger first chunk, upstream's stream_chunk_size
            engine = XttsEngine(model_dir=tmp, first_chunk_tokens=first_chunk, chunk_tokens=24)  # defaults otherwise
            started = time.perf_counter()
            info = engine.load()
            loaded = time.perf_counter() - started
            name = default_storage.save("bench/latents.pt", ContentFile(engine.compute_conditioning(reference, 22050)))
            try:
                measure(engine, name, 30, 1)  # warm-up: CUDA kernels, allocator
                if first_chunk == 6:
                    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
                    print(f"device {device} ({info.details['device']}); full-size random XTTS built in {built:.1f} s, "
                          f"loaded in {loaded:.1f} s; torch {torch.__version__}")
                    print(f"  {'first chunk':>12}{'tokens':>8}{'audio s':>9}{'first audio ms':>16}{'total s':>9}{'RTF':>7}"
                          f"{'worst gap ms':>14}")
                for tokens in [int(t) for t in args.tokens.split(",")]:
                    first, total, seconds, gap = measure(engine, name, tokens, args.runs)
                    print(f"  {first_chunk:>12}{tokens:>8}{seconds:>9.2f}{first * 1000:>16.1f}{total:>9.2f}"
                          f"{total / seconds:>7.3f}{gap * 1000:>14.1f}")
            finally:
                default_storage.delete(name)
            del engine
            torch.cuda.empty_cache() if torch.cuda.is_available() else None


if __name__ == "__main__":
    main()
