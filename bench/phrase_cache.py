"""Benchmark: the phrase cache, hit vs miss, through the HTTP API of a real server (bench/run.py's setup).

Three paths, each --requests streamed POST /v1/synthesize on connections opened beforehand:
  off   the cache not asked for (the default): every request is synthesized;
  miss  `cache: true` with a new text each time: synthesized, then stored;
  hit   `cache: true` with a phrase stored already: replayed from the cache, no model worker.
For each, the client's clock (request sent -> first audio byte past the WAV header, and -> last audio byte) and
the server's own (the usage rows' time_to_first_audio_ms and total_ms). REDIS_URL is inherited: with it set (and
TTS_EMBEDDED_WORKER=0 plus a running `tts_worker`) the same script measures the production topology.

It prints numbers and asserts nothing. Standard library only, besides the project itself.
"""
import argparse
import http.client
import itertools
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run  # noqa: E402  (bench/run.py: server start, database, percentiles)

PHRASE = "Please hold, your call is important to us. An agent will be with you shortly."


def one_request(port: int, key: str, text: str, cache: bool | None) -> tuple[float, float]:
    conn = http.client.HTTPConnection(run.HOST, port, timeout=30)
    conn.connect()
    fields = {"text": text, "voice_id": run.VOICE_ID} | ({} if cache is None else {"cache": cache})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    conn.request("POST", "/v1/synthesize", body=json.dumps(fields), headers=headers)
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"POST /v1/synthesize answered {response.status}: {response.read()[:300]!r}")
    received, first_audio, last_audio = 0, None, None
    while chunk := response.read1(65536):
        received += len(chunk)
        last_audio = time.perf_counter() - started
        if first_audio is None and received > run.WAV_HEADER_BYTES:
            first_audio = last_audio
    conn.close()
    # The last audio byte, not the end of the body: the server closes a stream once it sees the client has all
    # of it (callwaiting.middleware.Delivery polls every 20 ms), which would hide the difference measured here.
    return first_audio, last_audio


def cache_alone(pcm: bytes, sample_rate: int, count: int) -> None:
    """The cache's own part of a hit, in this process: look the clip up, decode it, replay it through
    CachedStream (what the session streams from), for this process's memory and for Redis when REDIS_URL is set."""
    import asyncio

    import django

    django.setup()
    from django.conf import settings

    from synthesis import phrase_cache

    chunk = sample_rate // 10 * 2  # eSpeak's 100 ms chunks
    clip = phrase_cache.Clip(sample_rate, tuple(pcm[i:i + chunk] for i in range(0, len(pcm), chunk)))
    stores = {"local memory": phrase_cache.LocalStore()}
    if settings.REDIS_URL:
        stores["redis"] = phrase_cache.RedisStore(settings.REDIS_URL)

    async def replay(stream) -> tuple[float, float]:
        first = await stream.start()
        first_at = time.perf_counter()
        async for _ in stream.chunks():
            pass
        return first_at, time.perf_counter()

    print(f"the cache alone ({len(pcm)} bytes of PCM, {len(clip.chunks)} chunks; lookup + decode + replay):")
    for label, store in stores.items():
        key = f"bench-{os.getpid()}"
        store.put(key, clip.encode(), voice="bench", bound=64 * 1024 * 1024, ttl=60)
        firsts, totals = [], []
        for _ in range(count):
            started = time.perf_counter()
            stream = phrase_cache.CachedStream(phrase_cache.Clip.decode(store.get(key)))
            first_at, done_at = asyncio.run(replay(stream))
            firsts.append(first_at - started)
            totals.append(done_at - started)
        store.forget_voice("bench")
        print("  " + line(label, firsts, totals))


def server_times(env: dict, cached: bool, since: str) -> tuple[list[float], list[float]]:
    rows = json.loads(run.manage(env, "shell", "-v0", "-c", (
        "import json; from tenants.models import UsageRecord; print(json.dumps(list(UsageRecord.objects.filter("
        f"cached={cached}, created_at__gt={since!r}).values_list('time_to_first_audio_ms', 'total_ms'))))"
    )))
    return [first / 1000 for first, _ in rows], [total / 1000 for _, total in rows]


def read_audio(port: int, key: str) -> bytes:
    conn = http.client.HTTPConnection(run.HOST, port, timeout=30)
    conn.request("POST", "/v1/synthesize", body=json.dumps({"text": PHRASE, "format": "pcm"}),
                 headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    return conn.getresponse().read()


def line(label: str, first: list[float], total: list[float]) -> str:
    return (f"{label:<22} first audio p50 {run.ms(statistics.median(first))} p95 {run.ms(run.percentile(first, 95))}"
            f"   total p50 {run.ms(statistics.median(total))} p95 {run.ms(run.percentile(total, 95))}  ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="requests per path (default 30)")
    args = parser.parse_args()
    counter = itertools.count()
    with tempfile.TemporaryDirectory(prefix="callwaiting-bench-") as temp:
        data_dir = Path(temp)
        port = run.free_port()
        env = run.bench_env(data_dir, port)
        os.environ.update({name: env[name] for name in ("DJANGO_SETTINGS_MODULE", "DATA_DIR", "DATABASE_URL")})
        sys.path.insert(0, str(run.ROOT))
        key = run.prepare_database(env)
        with open(data_dir / "daphne.log", "w") as log_file:
            server = run.start_server(env, port, log_file)
            try:
                health = run.wait_until_healthy(server, port)
                print(f"phrase cache benchmark: {args.requests} requests per path, {health['status']}, "
                      f"redis={'yes' if os.environ.get('REDIS_URL') else 'no'}, text {len(PHRASE)} characters")
                paths = {
                    "off (no cache)": lambda: one_request(port, key, PHRASE, None),
                    "miss (stored)": lambda: one_request(port, key, f"{PHRASE} Ticket {next(counter)}.", True),
                    "hit": lambda: one_request(port, key, PHRASE, True),
                }
                one_request(port, key, PHRASE, True)  # the phrase the hits replay
                since = run.manage(env, "shell", "-v0", "-c", "from django.utils import timezone; print(timezone.now())")
                print("client (request sent -> first audio byte / last audio byte received):")
                for function in paths.values():  # warm up
                    function()
                timings = {label: [] for label in paths}
                for _ in range(args.requests):  # round robin: the machine's drift spreads over every path
                    for label, function in paths.items():
                        timings[label].append(function())
                for label, results in timings.items():
                    print("  " + line(label, [first for first, _ in results], [last for _, last in results]))
                print("server (usage rows: request start -> first audio / last byte handed to daphne):")
                print("  " + line("synthesized", *server_times(env, False, since.strip())))
                print("  " + line("hit", *server_times(env, True, since.strip())))
                pcm = read_audio(port, key)
            finally:
                run.stop_server(server)
        cache_alone(pcm, int(health["engines"]["espeak"]["sample_rate"]), args.requests)


if __name__ == "__main__":
    main()
