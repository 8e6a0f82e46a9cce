"""Benchmark: the silence a listener hears between sentences on the WebSocket API /v1/stream.

A real server (daphne, a temporary SQLite database, the demo tenant with its limits lifted) serves the code of
`--root` (default: this checkout; pass another checkout, e.g. the main branch, to compare), with an engine
timed like a GPU model (bench/paced_engine.py: first audio after PACED_FIRST_AUDIO_S, then PACED_SPEED audio
seconds per wall second). The client is a telephony bridge: a 16 KB socket receive buffer, and it reads only
while it holds less than --jitter-ms of audio (it plays in real time). Silence is measured on the listener's
timeline: audio that arrives after everything before it has been played leaves a gap of that length.

Modes (--mode): `synthesize` sends the sentences as synthesize messages up front; `text` sends them as text
pieces of 1-4 characters, 5 ms apart (an LLM's tokens), then a flush. Prints numbers, asserts nothing.
"""
import argparse
import asyncio
import json
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import websockets

VERBOSE = False
HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
SENTENCES = [
    "Thanks for calling Riverside Dental, this is the virtual assistant.",
    "I can help you book, move or cancel an appointment.",
    "Your next cleaning is on Tuesday the fourteenth at 3.30 in the afternoon.",
    "Dr. Patel will see you, and the visit takes about forty minutes.",
    "Would you like me to send a reminder by text message?",
    "If anything changes, just call us back on this number.",
    "Is there anything else I can help you with today?",
    "Thank you, and have a wonderful day.",
]
RAISE_LIMITS = (
    "from tenants.models import Tenant; Tenant.objects.filter(slug='demo').update(requests_per_minute=10**9, "
    "requests_per_hour=10**9, max_concurrent_streams=1000, monthly_character_quota=None)"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def manage(root: Path, env: dict, *arguments: str) -> str:
    done = subprocess.run([sys.executable, "manage.py", *arguments], cwd=root, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"manage.py {' '.join(arguments)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


def start(root: Path, data_dir: Path) -> tuple[subprocess.Popen, int, str]:
    env = {**os.environ, "DATA_DIR": str(data_dir), "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}",
           "TTS_ENGINES": "espeak", "TTS_ENGINE_CLASSES": json.dumps({"espeak": "paced_engine.PacedEspeak"}),
           "PYTHONPATH": os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])),
           "LOG_LEVEL": "WARNING"}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    env.pop("REDIS_URL", None)
    manage(root, env, "migrate", "--noinput")
    key = re.search(r"API key \(shown once\): (\S+)", manage(root, env, "bootstrap_demo")).group(1)
    manage(root, env, "shell", "-c", RAISE_LIMITS)
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "callwaiting.server", "-b", HOST, "-p", str(port), "callwaiting.asgi:application"],
        cwd=root, env=env, stdout=open(data_dir / "daphne.log", "w"), stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return server, port, key
        except OSError:
            time.sleep(0.1)
    server.kill()
    raise SystemExit("daphne did not start")


async def send_text(ws, text: str) -> None:
    rng, i = random.Random(1), 0
    while i < len(text):
        size = rng.randint(1, 4)
        await ws.send(json.dumps({"type": "text", "text": text[i:i + size]}))
        i += size
        await asyncio.sleep(0.005)
    await ws.send(json.dumps({"type": "flush"}))


async def conversation(port: int, key: str, mode: str, jitter: float) -> tuple[list[float], list[float], float]:
    """(silence before each sentence after the first, silence inside sentences, first audio) in seconds."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 * 1024)
    sock.connect((HOST, port))
    async with websockets.connect(f"ws://{HOST}:{port}/v1/stream", sock=sock, max_size=None, max_queue=1,
                                  additional_headers={"Authorization": f"Bearer {key}"}) as ws:
        sent_at = time.monotonic()
        if mode == "synthesize":
            for sentence in SENTENCES:
                await ws.send(json.dumps({"type": "synthesize", "text": sentence}))
            sender = None
        else:
            sender = asyncio.create_task(send_text(ws, " ".join(SENTENCES)))
        between, inside, first_audio = [], [], None
        played_until, sample_rate, new_sentence, done, frames = None, 0, False, 0, 0
        while done < len(SENTENCES):
            if played_until is not None and played_until - time.monotonic() > jitter:
                await asyncio.sleep(played_until - time.monotonic() - jitter)  # playing: the bridge waits
            frame = await ws.recv()
            now = time.monotonic()
            if isinstance(frame, str):
                message = json.loads(frame)
                if "error" in message:
                    raise SystemExit(f"error frame: {message}")
                if message["type"] == "start":
                    sample_rate, new_sentence, frames = message["sample_rate"], True, 0
                elif message["type"] == "done":
                    done += 1
                continue
            if played_until is None:
                first_audio, played_until = now - sent_at, now
            elif now > played_until:
                (between if new_sentence else inside).append(now - played_until)
                if VERBOSE:
                    print(f"  sentence {done + 1}, {'first audio' if new_sentence else f'{frames} frames in'}: "
                          f"{(now - played_until) * 1000:.0f} ms of silence")
                played_until = now
            elif new_sentence:
                between.append(0.0)
            new_sentence = False
            frames += 1
            played_until += len(frame) / 2 / sample_rate
        if sender is not None:
            await sender
    return between, inside, first_audio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=HERE.parent, help="checkout to serve (default: this one)")
    parser.add_argument("--mode", choices=["synthesize", "text"], default="synthesize")
    parser.add_argument("--runs", type=int, default=3, help="conversations, one after another (default 3)")
    parser.add_argument("--verbose", action="store_true", help="print each silence")
    parser.add_argument("--jitter-ms", type=float, default=200, help="audio the bridge buffers (default 200)")
    args = parser.parse_args()
    global VERBOSE
    VERBOSE = args.verbose
    with tempfile.TemporaryDirectory() as data_dir:
        server, port, key = start(args.root.resolve(), Path(data_dir))
        try:
            results = [asyncio.run(conversation(port, key, args.mode, args.jitter_ms / 1000)) for _ in range(args.runs)]
        finally:
            server.terminate()
            server.wait(10)
    between = [gap for run in results for gap in run[0]]
    inside = [gap for run in results for gap in run[1]]
    print(f"root {args.root}  mode {args.mode}  runs {args.runs}  jitter buffer {args.jitter_ms:g} ms  "
          f"engine: first audio {os.environ.get('PACED_FIRST_AUDIO_S', '0.25')} s, "
          f"{os.environ.get('PACED_SPEED', '2.0')}x real time")
    print(f"silence between sentences ({len(between)}): mean {statistics.mean(between) * 1000:.0f} ms, "
          f"median {statistics.median(between) * 1000:.0f} ms, max {max(between) * 1000:.0f} ms")
    print(f"silence inside sentences: {len(inside)} gaps, {sum(inside) * 1000:.0f} ms in all; "
          f"first audio {statistics.mean(run[2] for run in results) * 1000:.0f} ms on average")


if __name__ == "__main__":
    main()
