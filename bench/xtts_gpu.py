"""Benchmark: concurrent XTTS streams on one GPU at the real model size, batched vs serialized, in one run.

No XTTS weights can be downloaded here, so this builds the released XTTS v2 architecture (30 GPT layers,
1024 channels, 16 heads, 8194 audio tokens, full HiFi-GAN) with random weights, saves it, and loads it through
the engine's real loading path, twice: with its batch slots (XTTS_BATCH_SLOTS, default sized from GPU memory)
and with one slot (the serialized path, each stream waiting for the one before: the baseline). Random weights
say nothing about quality, but the compute per token, and so latency and throughput, are the real model's.
Every stream speaks one sentence of `--tokens` GPT tokens (100: 4.6 s of audio), from its own thread through
`XttsEngine.synthesize`, as the worker runs them; levels start all streams together, and at random over 2 s.

Per level: first audio p50/p95 (model time: from synthesize() to the first chunk), audio seconds per wall
second, the worst playback gap (a player starting at each stream's first chunk; 0 = never runs dry), and
peak GPU memory, the decode iteration and HiFi-GAN call times, windows per HiFi-GAN call, and where first
audio's p95 goes (waiting for a slot, decoding the first window's tokens, vocoding it); then the number of real-time streams: the largest level with first audio p95 <= 200 ms and
no gap. Prints numbers, asserts nothing.
"""
import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import xtts_streams  # noqa: E402  (the sibling module)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=100)
    parser.add_argument("--levels", default="1,16,64,128,192,256")
    parser.add_argument("--serialized-levels", default="1,4,16", help="the baseline: its time grows with N")
    parser.add_argument("--dtype", default="", help="XTTS_DTYPE (default: the engine's, bfloat16 on CUDA)")
    parser.add_argument("--slots", type=int, default=0, help="XTTS_BATCH_SLOTS (default: sized from memory)")
    parser.add_argument("--size", choices=("full", "mid", "tiny"), default="full", help="tiny/mid: a CPU smoke run")
    args = parser.parse_args()
    xtts_streams.setup_django()
    import torch

    cuda = torch.cuda.is_available()
    print("reproduce:", shlex.join([sys.executable, *sys.argv]))
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        sizes = {"full": xtts_streams.FULL_SIZE, "mid": xtts_streams.MID_SIZE, "tiny": None}
        xtts_streams.build(Path(tmp), sizes[args.size])
        print(f"device {torch.cuda.get_device_name() if cuda else 'cpu'}; torch {torch.__version__}; {args.size}-size random "
              f"XTTS built in {time.perf_counter() - started:.1f} s; {args.tokens} tokens per stream\n")
        for name, slots, levels in (("serialized (1 slot)", 1, args.serialized_levels),
                                    ("batched", args.slots, args.levels)):
            started = time.perf_counter()
            engine, voice = xtts_streams.load(Path(tmp), slots=slots, dtype=args.dtype)
            stats = engine.stats()
            print(f"{name}: loaded in {time.perf_counter() - started:.1f} s; {stats['slots']} slots, "
                  f"{engine.loop.gpt.dtype}, CUDA graphs {stats['cuda_graphs']}")
            xtts_streams.run_level(engine, voice, streams=1, tokens=20)  # warm-up
            print("  " + xtts_streams.HEADER + f" {'GPU GiB':>8} {'step ms':>8} {'voc ms':>7} {'voc n':>6}"
                  f" {'p95 admit/window/audio ms':>26}")
            realtime = 0
            for streams in [int(n) for n in levels.split(",") if int(n) <= stats["slots"] or slots == 1]:
                for arrivals in ("together", "random"):
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    engine.loop.vocoder.first_audio.clear()
                    level = xtts_streams.run_level(engine, voice, streams=streams, tokens=args.tokens, arrivals=arrivals)
                    memory = torch.cuda.max_memory_allocated() / 2**30 if cuda else 0.0
                    s = engine.stats()
                    print("  " + xtts_streams.row(level) + f" {memory:>8.1f} {s['step_ms']:>8.1f} "
                          f"{s['vocoder_call_ms']:>7.1f} {s['vocoder_batch']:>6.1f} {_first_audio(engine):>26}", flush=True)
                    if level["first_p95"] <= 0.2 and level["worst_gap"] == 0:
                        realtime = max(realtime, streams)
            print(f"  real-time streams (first audio p95 <= 200 ms, no gap): {realtime}\n")
            del engine
            if cuda:
                torch.cuda.empty_cache()


def _first_audio(engine) -> str:
    """p95 of each part of first audio, from the loop's own timestamps: admitted, first window cut, audio out."""
    times = list(engine.loop.vocoder.first_audio)
    if not times:
        return "-"
    parts = []
    for mark in ("admitted", "first_window", "first_audio"):
        spans = sorted(t[mark] - t["submitted"] for t in times)
        parts.append(f"{spans[min(len(spans) - 1, round(0.95 * (len(spans) - 1)))] * 1000:.0f}")
    return "/".join(parts)


if __name__ == "__main__":
    main()
