"""Benchmark (CPU, in `make bench`): what batching XTTS streams buys, as ratios in one run.

  1. GPT tokens per second, 8 streams decoded together vs 1 alone, on a mid-size random XTTS (6 layers x 512,
     the real 8194-token vocabulary): prefill, decode steps and batched sampling, no vocoder.
  2. Through the whole engine (GPT and HiFi-GAN windows) on the tiny checkpoint: first audio of 4 streams
     started together vs one alone, and audio seconds per wall second.
Random weights say nothing about quality; lengths are forced (min/max new tokens). Prints numbers, asserts
nothing. `bench/xtts_gpu.py` is the same on a GPU at the real model size.
"""
import argparse
import shlex
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import xtts_streams  # noqa: E402  (the sibling module)


def gpt_tokens_per_second(engine, voice_settings, streams: int, tokens: int) -> float:
    """Decode `streams` sentences of `tokens` tokens through the batch loop's GPT alone (no vocoder)."""
    import torch

    from synthesis.engines.xtts_batch import BatchedGpt, SamplingOptions
    from synthesis.engines.xtts_sampling import process_logits, sample

    gpt: BatchedGpt = engine.loop.gpt
    cond, _speaker = engine.conditioning(voice_settings)
    options = SamplingOptions()
    with torch.inference_mode():
        prefix = gpt.prefix(cond, engine._tokens(xtts_streams.SENTENCE, "en"))
        started = time.perf_counter()
        latents, logits = gpt.prefill([prefix] * streams, list(range(streams)))
        seen = torch.zeros(streams, gpt.vocab, dtype=torch.bool)
        params = dict(
            temperature=torch.full((streams,), options.temperature), top_k=torch.full((streams,), options.top_k),
            top_p=torch.full((streams,), options.top_p, dtype=torch.float64),
            repetition_penalty=torch.full((streams,), options.repetition_penalty),
            ban_stop=torch.ones(streams, dtype=torch.bool), stop_token=gpt.stop_token,
        )
        positions = torch.full((streams,), prefix.shape[1])
        for step in range(1, tokens):
            tokens_now = sample(process_logits(logits, seen, **params), greedy=torch.zeros(streams, dtype=torch.bool))
            seen[torch.arange(streams), tokens_now] = True
            x = gpt.audio_embedding(tokens_now, torch.full((streams,), step))[:, None]
            latents, logits = gpt.decode(x, positions, int(positions.max()) + 1)
            positions += 1
    return streams * tokens / (time.perf_counter() - started)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=80, help="GPT tokens per stream (80: about 3.7 s of audio)")
    args = parser.parse_args()
    xtts_streams.setup_django()
    import torch

    print("reproduce:", shlex.join([sys.executable, *sys.argv]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads\n")
    with tempfile.TemporaryDirectory() as mid_dir, tempfile.TemporaryDirectory() as tiny_dir:
        xtts_streams.build(Path(mid_dir), xtts_streams.MID_SIZE)
        engine, voice = xtts_streams.load(Path(mid_dir), device="cpu", slots=8)
        gpt_tokens_per_second(engine, voice, 1, 8)  # warm-up
        alone = gpt_tokens_per_second(engine, voice, 1, args.tokens)
        together = gpt_tokens_per_second(engine, voice, 8, args.tokens)
        print(f"GPT tokens per second, mid-size random XTTS ({xtts_streams.MID_SIZE['gpt_layers']} layers x "
              f"{xtts_streams.MID_SIZE['gpt_n_model_channels']}), {args.tokens} tokens per stream:")
        print(f"  1 stream {alone:8.1f}   8 streams together {together:8.1f}   ratio {together / alone:5.2f}x\n")
        del engine

        xtts_streams.build(Path(tiny_dir), None)
        engine, voice = xtts_streams.load(Path(tiny_dir), device="cpu", slots=8)
        xtts_streams.run_level(engine, voice, streams=1, tokens=12)  # warm-up
        one = xtts_streams.run_level(engine, voice, streams=1, tokens=args.tokens)
        four = xtts_streams.run_level(engine, voice, streams=4, tokens=args.tokens)
        print(f"Whole engine (GPT + HiFi-GAN windows), tiny checkpoint, {args.tokens} tokens per stream:")
        print("  " + xtts_streams.HEADER)
        print("  " + xtts_streams.row(one))
        print("  " + xtts_streams.row(four))
        print(f"  first audio p50, 4 together vs 1 alone: {four['first_p50'] / one['first_p50']:.2f}x; "
              f"audio s per wall s: {four['audio_per_wall'] / one['audio_per_wall']:.2f}x")


if __name__ == "__main__":
    main()
