"""What each output format costs the web process: encoding speed (audio seconds per CPU second) and the delay before
its first audio bytes, encoding 100 ms engine chunks as a stream does.

    .venv/bin/python bench/formats.py [--seconds 20] [--source-rate 24000]
"""
import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callwaiting.settings")

from synthesis.encoders import FORMATS, Encoder  # noqa: E402


def speech_like(seconds: float, rate: int) -> bytes:
    """Noise shaped like speech (syllable-rate envelope over a few formants): codecs work on it as on speech."""
    rng = np.random.default_rng(7)
    t = np.arange(int(seconds * rate)) / rate
    voiced = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) / (i + 1) for i, f in enumerate((140, 700, 1200, 2600)))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t) ** 2
    signal = (voiced * envelope + 0.05 * rng.standard_normal(len(t))) * 6000
    return np.clip(signal, -32768, 32767).astype("<i2").tobytes()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--source-rate", type=int, default=24000, help="the engine's rate (XTTS 24000, eSpeak 22050)")
    args = parser.parse_args()
    pcm = speech_like(args.seconds, args.source_rate)
    chunk = args.source_rate // 10 * 2  # 100 ms of 16-bit audio, as the engines hand it over
    print(f"{args.seconds:g} s of audio at {args.source_rate} Hz in 100 ms chunks")
    print(f"{'format':<8}{'rate':>7}{'x real time':>13}{'ms per audio s':>16}{'first audio out after':>23}{'kbit/s':>8}")
    for name in FORMATS:
        encoder = Encoder(name, source_rate=args.source_rate)
        first_after = None
        started = time.process_time()
        size = 0
        for offset in range(0, len(pcm), chunk):
            out = encoder.encode(pcm[offset:offset + chunk])
            size += len(out)
            # The first bytes that carry audio (an MP3's first output is only its ID3 tag).
            carries_audio = encoder._seconds_out > 0 if encoder.format.container else bool(out)
            if carries_audio and first_after is None:
                first_after = (offset + chunk) / 2 / args.source_rate
        size += len(encoder.finish())
        cpu = time.process_time() - started
        print(f"{name:<8}{encoder.sample_rate:>7}{args.seconds / cpu:>13.0f}{1000 * cpu / args.seconds:>16.2f}"
              f"{first_after * 1000:>20.0f} ms{size * 8 / args.seconds / 1000:>8.0f}")


if __name__ == "__main__":
    main()
