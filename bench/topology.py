"""Benchmark: the embedded topology against Redis-dispatched model workers, at 1, 4, 16 and 64 concurrent streams.

One run measures both, on the same machine and text, so the cost of the production dispatch is a ratio:
  embedded    daphne with the model worker inside it; in-process job queue, local-memory cache, SQLite
  redis       daphne with TTS_EMBEDDED_WORKER=0, and two `manage.py tts_worker` processes; the Redis Streams
              job queue, Redis cache and rate limits (REDIS_URL, database 11 by default, flushed first), SQLite
For each level, N client threads each stream POST /v1/synthesize (WAV) back to back. Reported per level:
time to first audio (request sent -> first audio byte past the WAV header; median and p95), throughput
(seconds of audio received per wall-clock second, all streams together), failed requests by error code (goal:
none), and the share of jobs that reached an engine more than once (from the workers' logs; goal: 0).

It prints numbers and asserts nothing. eSpeak NG is the engine (what this machine can run); with XTTS on a
GPU the synthesis itself dominates and the dispatch overhead measured here matters even less. The load
generator shares the machine with the server and the worker; compare runs on the same machine only.
"""
import argparse
import collections
import os
import re
import shlex
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402  (the sibling benchmark's server helpers)
    ROOT, WAV_HEADER_BYTES, bench_env, free_port, percentile, prepare_database, start_server, stop_server,
    wait_until_healthy,
)

TEXT = (
    "Thanks for calling CallWaiting. Your appointment with Doctor Patel is confirmed for Tuesday at half past "
    "nine. If you need to change it, please call us back or reply to the text message we just sent you."
)
LEVELS = (1, 4, 16, 64)
WORKERS = 2  # in the redis topology


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=128, help="streams per level, split over its clients (128)")
    parser.add_argument("--redis-url", default=os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/11"))
    args = parser.parse_args()
    if args.requests < max(LEVELS):
        parser.error(f"--requests must be at least {max(LEVELS)}")
    return args


def one_stream(connection_factory, key: str) -> tuple[float, float]:
    """(time to first audio, seconds of audio) of one streamed synthesis; raises RequestFailed."""
    import http.client
    import json

    connection: http.client.HTTPConnection = connection_factory()
    connection.connect()
    started = time.perf_counter()
    connection.request("POST", "/v1/synthesize", body=json.dumps({"text": TEXT}),
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    if response.status != 200:
        body = response.read()
        try:
            code = json.loads(body)["error"]["code"]
        except (ValueError, KeyError, TypeError):
            code = "unparsed"
        raise RequestFailed(f"{response.status} {code}")
    sample_rate = int(response.getheader("X-Sample-Rate"))
    received, first_audio = 0, None
    try:
        while chunk := response.read1(65536):
            received += len(chunk)
            if first_audio is None and received > WAV_HEADER_BYTES:
                first_audio = time.perf_counter() - started
    except (http.client.IncompleteRead, ConnectionError):
        raise RequestFailed("broken transfer") from None
    finally:
        connection.close()
    return first_audio, (received - WAV_HEADER_BYTES) / 2 / sample_rate


class RequestFailed(Exception):
    """A request that got no complete answer; its message is the error code, counted per level."""


def run_level(port: int, key: str, streams: int, requests: int) -> dict:
    import http.client

    def factory():
        return http.client.HTTPConnection("127.0.0.1", port, timeout=120)

    results: list[tuple[float, float]] = []
    errors: collections.Counter = collections.Counter()
    lock = threading.Lock()
    per_client = max(1, requests // streams)

    def client():
        for _ in range(per_client):
            try:
                result = one_stream(factory, key)
            except RequestFailed as exc:
                with lock:
                    errors[str(exc)] += 1
                continue
            with lock:
                results.append(result)

    for _ in range(2):  # warm-up: imports, connections, the workers' first jobs
        one_stream(factory, key)
    threads = [threading.Thread(target=client) for _ in range(streams)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    firsts = [first for first, _ in results] or [float("nan")]
    return {
        "streams": streams,
        "requests": len(results),
        "errors": dict(errors),
        "ttfa_p50": statistics.median(firsts),
        "ttfa_p95": percentile(firsts, 95),
        "throughput": sum(seconds for _, seconds in results) / wall,
    }


def start_worker(env: dict, log_file, capacity: int = 32) -> subprocess.Popen:
    """One eSpeak `manage.py tts_worker` process, logging at INFO (each job's start is logged) into log_file."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "tts_worker", "--engines", "espeak", "--capacity", str(capacity)],
        cwd=ROOT, env={**env, "LOG_LEVEL": "INFO"}, stdout=log_file, stderr=subprocess.STDOUT,
    )


def repeated_starts(log_text: str) -> tuple[int, int]:
    """(jobs that reached an engine, of those how many more than once), from the workers' logs."""
    starts = collections.Counter(re.findall(r"job (\w+) started", log_text))
    return len(starts), sum(1 for count in starts.values() if count > 1)


def run_topology(name: str, extra_env: dict, with_worker: bool, requests: int) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix=f"callwaiting-bench-{name}-") as temp:
        data_dir = Path(temp)
        port = free_port()
        env = {**bench_env(data_dir, port), **extra_env}
        if not extra_env.get("REDIS_URL"):
            env.pop("REDIS_URL", None)
        key = prepare_database(env)  # also lifts the demo tenant's rate, stream and quota limits
        processes = []
        with open(data_dir / "server.log", "w") as log:
            try:
                for _ in range(WORKERS if with_worker else 0):
                    processes.append(start_worker(env, log))
                server = start_server(env, port, log)
                processes.append(server)
                wait_until_healthy(server, port)
                levels = [run_level(port, key, streams, requests) for streams in LEVELS]
                log.flush()
                jobs, repeated = repeated_starts((data_dir / "server.log").read_text())
                for level in levels:
                    level["jobs"], level["repeated"] = jobs, repeated
                return levels
            except BaseException:
                print((data_dir / "server.log").read_text()[-4000:], file=sys.stderr)
                raise
            finally:
                for process in reversed(processes):
                    stop_server(process)


def main() -> None:
    args = parse_args()
    import redis

    print(f"reproduce: cd {shlex.quote(str(ROOT))} && {shlex.join([sys.executable, 'bench/topology.py', '--requests', str(args.requests), '--redis-url', args.redis_url])}")
    print(f"{os.cpu_count()} CPUs; eSpeak NG; text of {len(TEXT)} characters; {args.requests} streams per level\n")
    embedded = run_topology("embedded", {"TTS_EMBEDDED_WORKER": "1"}, False, args.requests)
    redis.Redis.from_url(args.redis_url).flushdb()
    production = run_topology(
        "redis", {"REDIS_URL": args.redis_url, "TTS_EMBEDDED_WORKER": "0"}, True, args.requests
    )
    print(f"redis: {urlsplit(args.redis_url)._replace(netloc=urlsplit(args.redis_url).hostname or '').geturl()}; "
          f"{WORKERS} workers of capacity 32")
    print(f"{'streams':>8} | {'TTFA p50 ms':>24} | {'TTFA p95 ms':>24} | {'audio s per wall s':>26} | errors")
    print(f"{'':>8} | {'embedded':>8}{'redis':>8}{'ratio':>8} | {'embedded':>8}{'redis':>8}{'ratio':>8} | "
          f"{'embedded':>9}{'redis':>9}{'ratio':>8} | embedded; redis")
    for local, remote in zip(embedded, production):
        print(
            f"{local['streams']:>8} | {local['ttfa_p50'] * 1000:8.1f}{remote['ttfa_p50'] * 1000:8.1f}"
            f"{remote['ttfa_p50'] / local['ttfa_p50']:7.2f}x | {local['ttfa_p95'] * 1000:8.1f}"
            f"{remote['ttfa_p95'] * 1000:8.1f}{remote['ttfa_p95'] / local['ttfa_p95']:7.2f}x | "
            f"{local['throughput']:9.1f}{remote['throughput']:9.1f}{remote['throughput'] / local['throughput']:7.2f}x"
            f" | {local['errors'] or 'none'}; {remote['errors'] or 'none'}"
        )
    jobs, repeated = production[0]["jobs"], production[0]["repeated"]
    print(f"redis topology: {jobs} jobs reached an engine, {repeated} of them more than once "
          f"({repeated / max(jobs, 1):.2%})")


if __name__ == "__main__":
    main()
