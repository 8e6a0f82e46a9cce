"""Benchmark: time to first audio through the HTTP API vs. the engine called directly, and /v1/voices throughput.

One run does everything against a real server:
  1. a temporary DATA_DIR with its own SQLite database; `migrate` and `bootstrap_demo` give the demo key, and
     the demo tenant's rate limits are raised so the limiter is not what gets measured;
  2. `daphne` on a free localhost port, as `make run` starts it (REDIS_URL is inherited, so the same script
     measures the production topology when it is set);
  3. time to first audio: POST /v1/synthesize, clock from sending the request to the first body bytes that
     hold audio beyond the 44-byte WAV header; then the eSpeak NG engine called in this process, clock from
     calling synthesize() to its first emit; the ratio of the two is what the server adds;
  4. GET /v1/voices from C threads on keep-alive connections for a few seconds: requests per second, latency;
  5. the server is stopped and the temporary directory removed.

It prints numbers and asserts nothing. Standard library only, besides the project itself.
The load generator shares the machine (and, in Python, a GIL per process) with the server, so throughput
figures are a floor for the server, not a ceiling; compare runs on the same machine only.
"""
import argparse
import collections
import http.client
import json
import os
import platform
import re
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"
TEXT = "Thanks for calling! Your appointment is confirmed for Tuesday."
VOICE_ID = "default"
ESPEAK_VOICE = "en-us"  # the "default" voice's engine_settings in config/voices.json
WAV_HEADER_BYTES = 44
WARMUP = 3
RAISE_LIMITS = (
    "from tenants.models import Tenant; Tenant.objects.filter(slug='demo').update(requests_per_minute=10**9, "
    "requests_per_hour=10**9, max_concurrent_streams=1000, monthly_character_quota=None)"
)


# --- arguments and small helpers ------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=30, help="synthesis requests per path (default 30)")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of the /v1/voices load (default 5)")
    parser.add_argument("--concurrency", type=int, default=8, help="client threads for /v1/voices (default 8)")
    args = parser.parse_args()
    if args.requests < 1 or args.concurrency < 1 or args.seconds <= 0:
        parser.error("--requests and --concurrency must be at least 1, --seconds positive")
    return args


def reproduce_command(args: argparse.Namespace) -> str:
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    argv = [python, "bench/run.py", "--requests", str(args.requests), "--seconds", f"{args.seconds:g}",
            "--concurrency", str(args.concurrency)]
    return f"cd {shlex.quote(str(ROOT))} && {shlex.join(argv)}"


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile: the smallest value with at least pct% of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats
    return ordered[int(rank) - 1]


def ms(seconds: float) -> str:
    return f"{seconds * 1000:8.2f}"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


# --- the server -----------------------------------------------------------------------------------------------
def bench_env(data_dir: Path, port: int) -> dict:
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE="callwaiting.settings",
        DATA_DIR=str(data_dir),
        DATABASE_URL=f"sqlite:///{data_dir / 'bench.sqlite3'}",
        HOST=HOST,
        PORT=str(port),
        LOG_LEVEL=os.environ.get("LOG_LEVEL", "WARNING"),
        PYTHONUNBUFFERED="1",
    )
    return env


def manage(env: dict, *arguments: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *arguments], cwd=ROOT, env=env, capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"manage.py {' '.join(arguments)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done.stdout


def prepare_database(env: dict) -> str:
    """Migrate, create the demo tenant, lift its limits; return the demo API key."""
    manage(env, "migrate", "--noinput")
    output = manage(env, "bootstrap_demo")
    match = re.search(r"API key \(shown once\): (\S+)", output)
    if not match:
        raise SystemExit(f"bootstrap_demo printed no API key:\n{output}")
    manage(env, "shell", "-c", RAISE_LIMITS)
    return match.group(1)


def start_server(env: dict, port: int, log_file) -> subprocess.Popen:
    command = [sys.executable, "-m", "callwaiting.server", "-b", HOST, "-p", str(port), "callwaiting.asgi:application"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log_file, stderr=subprocess.STDOUT)


def wait_until_healthy(server: subprocess.Popen, port: int, timeout: float = 60.0) -> dict:
    """The /v1/health body once it answers 200 (with TTS_EMBEDDED_WORKER=0, a tts_worker must be running)."""
    deadline, last = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"daphne exited with {server.returncode} before serving")
        try:
            conn = http.client.HTTPConnection(HOST, port, timeout=5)
            conn.request("GET", "/v1/health")
            response = conn.getresponse()
            body = response.read()
            conn.close()
            if response.status == 200:
                return json.loads(body)
            last = f"{response.status} {body[:500].decode(errors='replace')}"
        except (OSError, http.client.HTTPException) as exc:
            last = repr(exc)
        time.sleep(0.1)
    raise RuntimeError(f"server not healthy within {timeout:g} s; last /v1/health: {last}")


def stop_server(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)  # daphne (Twisted) shuts down cleanly on SIGTERM
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# --- time to first audio --------------------------------------------------------------------------------------
def http_first_audio(port: int, key: str) -> tuple[float, float]:
    """(time to first audio, total time) of one streamed POST /v1/synthesize, on a connection opened beforehand."""
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    conn.connect()
    body = json.dumps({"text": TEXT, "voice_id": VOICE_ID, "streaming": True})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    started = time.perf_counter()
    conn.request("POST", "/v1/synthesize", body=body, headers=headers)
    response = conn.getresponse()
    if response.status != 200:
        raise RuntimeError(f"POST /v1/synthesize answered {response.status}: {response.read()[:300]!r}")
    received, first_audio = 0, None
    while chunk := response.read1(65536):  # returns as soon as any body bytes arrive (chunked or not)
        received += len(chunk)
        if first_audio is None and received > WAV_HEADER_BYTES:
            first_audio = time.perf_counter() - started
    total = time.perf_counter() - started
    conn.close()
    if first_audio is None:
        raise RuntimeError(f"the response held no audio ({received} bytes)")
    return first_audio, total


def load_direct_engine():
    """The eSpeak NG engine in this process, set up the way a model worker sets it up."""
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()
    from synthesis.engines import load_engine

    loaded = load_engine("espeak")
    if not loaded.available:
        raise SystemExit(f"espeak engine unavailable: {loaded.reason}")
    return loaded.engine


def direct_first_audio(engine) -> tuple[float, float]:
    """(time to first emit, total time) of one synthesize() call, the whole utterance rendered."""
    from synthesis.engines.base import Prosody

    first: list[float] = []

    def emit(chunk: bytes) -> bool:
        if not first and chunk:
            first.append(time.perf_counter())
        return True

    started = time.perf_counter()
    engine.synthesize(text=TEXT, language="en", voice_settings={"espeak_voice": ESPEAK_VOICE}, prosody=Prosody(), emit=emit)
    total = time.perf_counter() - started
    return first[0] - started, total


def measure(function, count: int) -> tuple[list[float], list[float]]:
    for _ in range(WARMUP):
        function()
    results = [function() for _ in range(count)]
    return [first for first, _ in results], [total for _, total in results]


# --- throughput -----------------------------------------------------------------------------------------------
def voices_client(port: int, key: str, deadline: float, latencies: list, statuses: collections.Counter, lock) -> None:
    """One client thread: GET /v1/voices on a keep-alive connection until the deadline."""
    headers = {"Authorization": f"Bearer {key}"}
    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    mine, seen = [], collections.Counter()
    while time.perf_counter() < deadline:
        started = time.perf_counter()
        try:
            conn.request("GET", "/v1/voices", headers=headers)
            response = conn.getresponse()
            response.read()
            seen[response.status] += 1
            if response.getheader("Connection", "").lower() == "close":
                conn.close()  # http.client reconnects on the next request
        except (OSError, http.client.HTTPException) as exc:
            seen[type(exc).__name__] += 1
            conn.close()
            continue
        mine.append(time.perf_counter() - started)
    conn.close()
    with lock:
        latencies.extend(mine)
        statuses.update(seen)


def measure_voices(port: int, key: str, seconds: float, concurrency: int) -> tuple[float, list[float], collections.Counter]:
    latencies: list[float] = []
    statuses: collections.Counter = collections.Counter()
    lock = threading.Lock()
    # Warm up: one request per connection's worth, so the first measured ones pay no import/cache cost.
    voices_client(port, key, time.perf_counter() + 0.5, [], collections.Counter(), lock)
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    threads = [
        threading.Thread(target=voices_client, args=(port, key, deadline, latencies, statuses, lock))
        for _ in range(concurrency)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    return elapsed, latencies, statuses


# --- report ---------------------------------------------------------------------------------------------------
def print_header(args: argparse.Namespace, health: dict) -> None:
    engine = health.get("engines", {}).get("espeak", {})
    print(f"reproduce: {reproduce_command(args)}")
    print(
        f"python {platform.python_version()} on {platform.system()} {platform.machine()}, {os.cpu_count()} CPUs; "
        f"REDIS_URL {'set (production layers)' if os.environ.get('REDIS_URL') else 'unset (embedded mode)'}; "
        f"espeak {engine.get('sample_rate', '?')} Hz, chunk {engine.get('chunk_ms', '?')} ms"
    )
    print(f"text ({len(TEXT)} chars): {TEXT!r}, voice {VOICE_ID!r}; {WARMUP} warm-up requests per path\n")


def print_first_audio(count: int, http_first, http_total, direct_first, direct_total) -> None:
    print(f"time to first audio, {count} requests each (ms; total = until the last byte of the clip)")
    print(f"  {'path':<28}{'median':>10}{'p95':>10}{'total med':>12}{'total p95':>12}")
    for name, first, total in (("HTTP POST /v1/synthesize", http_first, http_total),
                               ("engine.synthesize direct", direct_first, direct_total)):
        print(f"  {name:<28}{ms(statistics.median(first)):>10}{ms(percentile(first, 95)):>10}"
              f"{ms(statistics.median(total)):>12}{ms(percentile(total, 95)):>12}")
    median_ratio = statistics.median(http_first) / statistics.median(direct_first)
    p95_ratio = percentile(http_first, 95) / percentile(direct_first, 95)
    print(f"  {'ratio HTTP / direct':<28}{median_ratio:>9.1f}x{p95_ratio:>9.1f}x")
    overhead = statistics.median(http_first) - statistics.median(direct_first)
    print(f"  server overhead on first audio (median difference): {overhead * 1000:.2f} ms\n")


def print_voices(concurrency: int, elapsed: float, latencies: list[float], statuses: collections.Counter) -> None:
    total = sum(statuses.values())
    print(f"GET /v1/voices, {concurrency} keep-alive clients for {elapsed:.2f} s")
    print(f"  requests: {total}   rps: {total / elapsed:.1f}")
    if latencies:
        print(f"  latency ms: p50 {ms(statistics.median(latencies)).strip()}   p95 {ms(percentile(latencies, 95)).strip()}"
              f"   max {ms(max(latencies)).strip()}")
    failures = {status: n for status, n in statuses.items() if status != 200}
    print(f"  non-200 responses: {sum(failures.values())}" + (f"  {dict(failures)}" if failures else ""))


# --- main -----------------------------------------------------------------------------------------------------
def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="callwaiting-bench-") as temp:
        data_dir = Path(temp)
        port = free_port()
        env = bench_env(data_dir, port)
        os.environ.update({name: env[name] for name in ("DJANGO_SETTINGS_MODULE", "DATA_DIR", "DATABASE_URL")})
        key = prepare_database(env)
        log_path = data_dir / "daphne.log"
        with open(log_path, "w") as log_file:
            server = start_server(env, port, log_file)
            try:
                health = wait_until_healthy(server, port)
                print_header(args, health)
                http_first, http_total = measure(lambda: http_first_audio(port, key), args.requests)
                engine = load_direct_engine()
                direct_first, direct_total = measure(lambda: direct_first_audio(engine), args.requests)
                print_first_audio(args.requests, http_first, http_total, direct_first, direct_total)
                print_voices(args.concurrency, *measure_voices(port, key, args.seconds, args.concurrency))
            except BaseException:
                print(f"--- daphne log ({log_path}) ---\n{log_path.read_text()[-4000:]}", file=sys.stderr)
                raise
            finally:
                stop_server(server)
    print(f"\nserver stopped (exit code {server.returncode}); temporary directory {temp} removed")


if __name__ == "__main__":
    main()
