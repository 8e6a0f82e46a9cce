"""Load test: N concurrent streams for T minutes, then every usage row reconciled against the requests sent.

By default it starts the production topology itself (the helpers of bench/run.py and bench/topology.py):
daphne web process(es) with no model inside (TTS_EMBEDDED_WORKER=0), `manage.py tts_worker` processes with
the eSpeak NG engine, the Redis Streams job queue (REDIS_URL; a job queue of its own per run, nothing is
flushed) and the database in DATABASE_URL (PostgreSQL in production; without it, a SQLite file in a temporary
directory). With `--url` it loads a service that is already running instead; DATABASE_URL must then be that
service's database (tenants are created in it and its usage rows are read back).

K tenants are created with the project's own management commands (`create_tenant`, `create_api_key`), each
with its own key and limits high enough that the limiter is not what gets measured. Each of the N streams is
one asyncio client that sends requests back to back until the time is up: a share of the streams speak the
WebSocket API (`/v1/stream`, one connection for many utterances, one utterance at a time), the others stream
`POST /v1/synthesize`. Each request is, at random: complete (read at full speed), disconnect or abort (the
client hangs up after a little audio: half of them close the connection cleanly, with the WebSocket closing
handshake, the other half reset it, as a crashed client would), or stall (the client reads at the audio's
real-time rate, as a phone bridge plays it out, through a small receive buffer, so the server's backpressure
holds it).

It prints first audio p50/p95 (request sent -> first audio byte), requests by outcome, errors by code, and the
reconciliation: for every request sent, its usage row must exist with the right status (`success` for a
complete one, `client_disconnected` for a hang-up, `error` with the client's error code for a refused one),
the characters sent, and for a complete one the seconds of audio the client received; rows of the load's
tenants that no request explains are listed as extra. Exit status 1 when the reconciliation finds anything.
"""
import argparse
import asyncio
import collections
import dataclasses
import io
import json
import os
import random
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run import (  # noqa: E402  (the sibling benchmarks' helpers)
    HOST, ROOT, WAV_HEADER_BYTES, bench_env, free_port, percentile, start_server, stop_server, wait_until_healthy,
)
from topology import repeated_starts, start_worker  # noqa: E402

TEXTS = (
    "Thanks for calling CallWaiting. How can I help you today?",
    "Your appointment with Doctor Patel is confirmed for Tuesday at half past nine.",
    "I'm sorry, I didn't catch that. Could you say your account number again, one digit at a time?",
    "Thanks for calling CallWaiting. Your appointment with Doctor Patel is confirmed for Tuesday at half past "
    "nine. If you need to change it, please call us back or reply to the text message we just sent you.",
    "Please hold while I transfer you to the billing team.",
)
VOICES = ("default", "en_us_female", "en_gb_male")  # eSpeak NG voices of config/voices.json
SMALL_RCVBUF = 16 * 1024  # receive buffer of the clients that stall or hang up
READ_PIECE = 4096
REQUEST_TIMEOUT = 120.0  # a client gives up on a request after this long (outcome "timeout")
# Refusals that come before the request has a usage row (authentication, scope, the tenant's rate limits).
NO_ROW_CODES = frozenset({
    "authentication_required", "authentication_failed", "not_authenticated", "permission_denied", "rate_limited",
})
EXPECTED_STATUS = {"success": "success", "disconnected": "client_disconnected", "timeout": "client_disconnected",
                   "error": "error", "broken": "error"}


# --- what was sent ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Sent:
    """One request as its client saw it."""

    request_id: str
    tenant: str
    protocol: str  # "rest" | "ws"
    behaviour: str  # "complete" | "disconnect" (a clean close) | "abort" (a TCP reset) | "stall"
    characters: int  # the spoken characters of the text sent (what must be billed)
    outcome: str = ""  # success | disconnected | error | broken | timeout
    error_code: str = ""
    first_audio: float | None = None  # seconds from sending the request to the first audio byte
    audio_bytes: int = 0  # PCM received (the WAV header not counted)
    sample_rate: int = 0

    @property
    def audio_seconds(self) -> float:
        return self.audio_bytes / 2 / self.sample_rate if self.sample_rate else 0.0


def spoken_characters(text: str) -> int:
    """What the service bills for plain text: its characters once runs of whitespace are one space."""
    return len(" ".join(text.split()))


# --- REST ------------------------------------------------------------------------------------------------------
async def _small_buffer_socket(host: str, port: int) -> socket.socket:
    """A connected socket whose 16 KB receive buffer was set before connecting (so the TCP window stays small)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RCVBUF)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def _open(host: str, port: int, small_buffer: bool):
    if not small_buffer:
        return await asyncio.open_connection(host, port, limit=READ_PIECE * 4)
    return await asyncio.open_connection(sock=await _small_buffer_socket(host, port), limit=READ_PIECE)


async def _body_pieces(reader: asyncio.StreamReader, headers: dict):
    """The response body as it arrives: chunked, Content-Length, or up to the end of the connection."""
    if "chunked" in headers.get("transfer-encoding", "").lower():
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")
                return
            while size:
                piece = await reader.read(min(size, READ_PIECE))
                if not piece:
                    raise asyncio.IncompleteReadError(b"", size)
                size -= len(piece)
                yield piece
            await reader.readexactly(2)
    elif "content-length" in headers:
        left = int(headers["content-length"])
        while left:
            piece = await reader.read(min(left, READ_PIECE))
            if not piece:
                raise asyncio.IncompleteReadError(b"", left)
            left -= len(piece)
            yield piece
    else:
        while piece := await reader.read(READ_PIECE):
            yield piece


def _error_code(body: bytes) -> str:
    try:
        return json.loads(body)["error"]["code"]
    except (ValueError, KeyError, TypeError):
        return "unparsed"


async def rest_request(connection, host: str, port: int, key: str, text: str, voice: str, sent: Sent,
                       rng: random.Random) -> None:
    """One streamed POST /v1/synthesize on a fresh connection (reader, writer); fills in sent's outcome."""
    reader, writer = connection
    hang_up_after = rng.randint(1, 32_000) if sent.behaviour in ("disconnect", "abort") else None
    try:
        body = json.dumps({"text": text, "voice_id": voice, "streaming": True}).encode()
        writer.write(
            f"POST /v1/synthesize HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nX-Request-ID: {sent.request_id}\r\n"
            f"Connection: close\r\n\r\n".encode() + body
        )
        started = time.perf_counter()
        await writer.drain()
        head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1").split("\r\n")
        status = int(head[0].split()[1])
        headers = {}
        for line in head[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if status != 200:
            error = b"".join([piece async for piece in _body_pieces(reader, headers)])
            sent.outcome, sent.error_code = "error", _error_code(error)
            return
        sent.sample_rate = int(headers.get("x-sample-rate", "0"))
        received = 0
        async for piece in _body_pieces(reader, headers):
            received += len(piece)
            sent.audio_bytes = max(0, received - WAV_HEADER_BYTES)
            if sent.first_audio is None and sent.audio_bytes:
                sent.first_audio = time.perf_counter() - started
            if hang_up_after is not None and sent.audio_bytes >= hang_up_after:
                sent.outcome = "disconnected"
                return
            if sent.behaviour == "stall" and sent.sample_rate:
                await asyncio.sleep(len(piece) / (2 * sent.sample_rate))  # played out at real time
        sent.outcome = "success"
    except (asyncio.IncompleteReadError, ConnectionError):
        sent.outcome = "broken"
    finally:
        if sent.behaviour == "abort":
            writer.transport.abort()
        else:
            writer.close()


# --- WebSocket -------------------------------------------------------------------------------------------------
async def ws_utterance(ws, text: str, voice: str, sent: Sent, rng: random.Random) -> bool:
    """One utterance on an open /v1/stream connection; fills in sent. False when the connection is over."""
    from websockets.exceptions import ConnectionClosed

    hang_up_after = rng.randint(1, 32_000) if sent.behaviour in ("disconnect", "abort") else None
    started = time.perf_counter()
    try:
        await ws.send(json.dumps({"type": "synthesize", "text": text, "voice_id": voice, "format": "pcm",
                                  "request_id": sent.request_id}))
        while True:
            frame = await ws.recv()
            if isinstance(frame, bytes):
                sent.audio_bytes += len(frame)
                if sent.first_audio is None and frame:
                    sent.first_audio = time.perf_counter() - started
                if hang_up_after is not None and sent.audio_bytes >= hang_up_after:
                    sent.outcome = "disconnected"
                    if sent.behaviour == "abort":
                        ws.transport.abort()
                    else:
                        await ws.close()  # the closing handshake: a close frame, then waiting for the server's
                    return False
                if sent.behaviour == "stall" and sent.sample_rate:
                    await asyncio.sleep(len(frame) / (2 * sent.sample_rate))
                continue
            message = json.loads(frame)
            if "error" in message:
                sent.outcome, sent.error_code = "error", message["error"].get("code", "unparsed")
                return False  # the server closes after an error frame
            if message.get("type") == "start":
                sent.sample_rate = int(message["sample_rate"])
            elif message.get("type") == "done":
                sent.outcome = "success"
                return True
    except ConnectionClosed:
        sent.outcome = "broken"
        return False


# --- the streams -----------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Plan:
    targets: list[tuple[str, int]]  # (host, port) of each web process
    keys: dict[str, str]  # tenant slug -> API key
    streams: int
    seconds: float
    ws_share: float
    disconnect_share: float
    stall_share: float
    seed: int = 1


def _next_request(rng: random.Random, plan: Plan, tenant: str, protocol: str) -> tuple[Sent, str, str]:
    text, voice = rng.choice(TEXTS), rng.choice(VOICES)
    draw = rng.random()
    behaviour = ("disconnect" if draw < plan.disconnect_share / 2 else "abort" if draw < plan.disconnect_share
                 else "stall" if draw < plan.disconnect_share + plan.stall_share else "complete")
    return Sent(str(uuid.uuid4()), tenant, protocol, behaviour, spoken_characters(text)), text, voice


async def stream(index: int, plan: Plan, deadline: float, log: list[Sent]) -> None:
    """One client: requests back to back until the deadline (the one in flight then is finished)."""
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidHandshake

    rng = random.Random(plan.seed * 100_003 + index)
    tenants = sorted(plan.keys)
    tenant = tenants[index % len(tenants)]
    host, port = plan.targets[index % len(plan.targets)]
    protocol = "ws" if index < round(plan.streams * plan.ws_share) else "rest"
    ws = None
    try:
        while time.monotonic() < deadline:
            sent, text, voice = _next_request(rng, plan, tenant, protocol)
            log.append(sent)
            try:
                if protocol == "rest":
                    reader_writer = await asyncio.wait_for(_open(host, port, sent.behaviour != "complete"), 30)
                elif ws is None:
                    ws = await connect(f"ws://{host}:{port}/v1/stream", max_size=None, open_timeout=30,
                                       sock=await asyncio.wait_for(_small_buffer_socket(host, port), 30),
                                       max_queue=4,  # frames held before reading pauses: a stall holds
                                       additional_headers={"Authorization": f"Bearer {plan.keys[tenant]}"})
            except (OSError, InvalidHandshake) as exc:  # no connection (or no handshake): no request was made
                sent.outcome, sent.error_code = "error", f"connect: {type(exc).__name__}"
                continue
            try:
                async with asyncio.timeout(REQUEST_TIMEOUT):
                    if protocol == "rest":
                        await rest_request(reader_writer, host, port, plan.keys[tenant], text, voice, sent, rng)
                    elif not await ws_utterance(ws, text, voice, sent, rng):
                        await ws.close()
                        ws = None
            except TimeoutError:
                sent.outcome = "timeout"
                if ws is not None:
                    ws.transport.abort()
                    ws = None
            except Exception as exc:  # whatever else a client meets is counted, never the end of the run
                sent.outcome, sent.error_code = "error", f"client: {type(exc).__name__}"
                if ws is not None:
                    ws.transport.abort()
                    ws = None
    finally:
        if ws is not None:
            await ws.close()


async def run_streams(plan: Plan) -> tuple[list[Sent], float]:
    log: list[Sent] = []
    started = time.monotonic()
    deadline = started + plan.seconds
    await asyncio.gather(*(stream(index, plan, deadline, log) for index in range(plan.streams)))
    return log, time.monotonic() - started


# --- reconciliation --------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Row:
    """What the reconciliation needs of a UsageRecord."""

    request_id: str
    tenant: str
    status: str
    error_code: str
    characters: int
    audio_seconds: float


@dataclasses.dataclass
class Reconciliation:
    matched: int = 0
    missing: list = dataclasses.field(default_factory=list)  # (Sent, why a row was expected)
    wrong: list = dataclasses.field(default_factory=list)  # (Sent, Row, what is wrong)
    extra: list = dataclasses.field(default_factory=list)  # (Row, why it should not be there)
    unchecked: list = dataclasses.field(default_factory=list)  # Sent whose client failed on its own side

    @property
    def ok(self) -> bool:
        return not (self.missing or self.wrong or self.extra)


def expects_row(sent: Sent) -> bool:
    """False for a request refused before billing, or one that never reached the service."""
    if sent.outcome == "error":
        return sent.error_code not in NO_ROW_CODES and not sent.error_code.startswith("connect:")
    return True


def reconcile(sent: list[Sent], rows: list[Row]) -> Reconciliation:
    """Every request's row against what its client saw. Pure: no database, no clock."""
    result = Reconciliation()
    by_id = {row.request_id: row for row in rows}
    seen = set()
    for request in sent:
        row = by_id.get(request.request_id)
        seen.add(request.request_id)
        if request.error_code.startswith("client:"):
            result.unchecked.append(request)  # the client itself failed: nobody knows what the server saw
            continue
        if not expects_row(request):
            if row is not None:
                result.extra.append((row, f"the request was refused with {request.error_code}, before billing"))
            continue
        if row is None:
            result.missing.append((request, f"expected {EXPECTED_STATUS[request.outcome]}"))
            continue
        problems = []
        expected = EXPECTED_STATUS[request.outcome]
        if row.status != expected:
            problems.append(f"status {row.status} ({row.error_code or 'no code'}), expected {expected}")
        elif request.outcome == "error" and row.error_code != request.error_code:
            problems.append(f"error code {row.error_code}, the client got {request.error_code}")
        if row.tenant != request.tenant:
            problems.append(f"billed to tenant {row.tenant}, sent by {request.tenant}")
        if request.outcome != "error" and row.characters != request.characters:
            problems.append(f"{row.characters} characters billed, {request.characters} sent")
        if request.outcome == "success" and abs(row.audio_seconds - request.audio_seconds) > 0.001:
            problems.append(f"{row.audio_seconds:.4f} audio seconds billed, {request.audio_seconds:.4f} received")
        if request.outcome == "disconnected" and row.audio_seconds + 0.001 < request.audio_seconds:
            problems.append(f"{row.audio_seconds:.4f} audio seconds billed, {request.audio_seconds:.4f} received")
        if problems:
            result.wrong.append((request, row, "; ".join(problems)))
        else:
            result.matched += 1
    for row in rows:
        if row.request_id not in seen:
            result.extra.append((row, "no request of the load test has this id"))
    return result


def kind(request: Sent) -> str:
    return f"{request.protocol} {request.behaviour} -> {request.outcome}"


def print_reconciliation(result: Reconciliation, rows: int, sent: int, show: int = 5) -> None:
    print(f"\nusage rows: {rows} for the load's tenants, {sent} requests sent; "
          f"{result.matched} rows match their request"
          + (f"; {len(result.unchecked)} requests not checked (the client failed)" if result.unchecked else ""))
    if result.ok:
        print("reconciliation: OK, every request has its row (status, characters, audio seconds) and no row is extra")
        return
    for title, items in (("missing", result.missing), ("wrong", result.wrong)):
        if not items:
            continue
        counts = collections.Counter(kind(item[0]) for item in items)
        print(f"reconciliation: {len(items)} {title} rows, by request kind: "
              + ", ".join(f"{name}: {count}" for name, count in counts.most_common()))
        reasons = collections.Counter(item[-1] for item in items)
        for reason, count in reasons.most_common(show):
            print(f"    {count:5d} x {reason}")
        for item in items[:show]:
            print(f"    e.g. {item[0].request_id} ({kind(item[0])}, {item[0].tenant})")
        if title == "wrong":
            for protocol in ("rest", "ws"):
                mine = [(request, row) for request, row, _ in items if request.protocol == protocol]
                if mine:
                    print(f"    {protocol}: {len(mine)} rows bill {sum(row.audio_seconds for _, row in mine):.1f} s "
                          f"of audio; their clients received {sum(r.audio_seconds for r, _ in mine):.1f} s")
    if result.extra:
        print(f"reconciliation: {len(result.extra)} extra rows")
        for row, why in result.extra[:show]:
            print(f"    {row.request_id} {row.status} {row.error_code}: {why}")


def usage_rows(tenants: list[str]) -> list[Row]:
    from tenants.models import UsageRecord

    return [
        Row(str(request_id), slug, status, code, characters, seconds)
        for request_id, slug, status, code, characters, seconds in UsageRecord.objects.filter(
            tenant__slug__in=tenants
        ).values_list("request_id", "tenant__slug", "status", "error_code", "characters", "audio_seconds")
    ]


def settled_rows(tenants: list[str], sent: list[Sent], wait: float) -> list[Row]:
    """The rows once every expected one is there, or once `wait` seconds passed (rows are written when the
    server has noticed the end of each exchange, which for a hang-up can be after the client is gone)."""
    expected = {request.request_id for request in sent if expects_row(request)}
    deadline = time.monotonic() + wait
    while True:
        rows = usage_rows(tenants)
        if expected <= {row.request_id for row in rows} or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


# --- setup -----------------------------------------------------------------------------------------------------
def django_setup(env: dict) -> None:
    for name in ("DJANGO_SETTINGS_MODULE", "DATABASE_URL", "REDIS_URL", "DATA_DIR"):
        if name in env:
            os.environ[name] = env[name]
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callwaiting.settings")
    sys.path.insert(0, str(ROOT))
    import django

    django.setup()


def create_tenants(count: int, run_id: str) -> dict[str, str]:
    """K tenants with one synthesize key each, made by the project's management commands."""
    from django.core.management import call_command

    keys = {}
    for number in range(count):
        slug = f"load-{run_id}-{number}"
        call_command("create_tenant", slug, name=f"Load test {run_id} #{number}", requests_per_minute=10**9,
                     requests_per_hour=10**9, max_concurrent_streams=10_000, stderr=io.StringIO())
        out = io.StringIO()
        call_command("create_api_key", tenant=slug, kind="test", scopes="synthesize", name="load", stdout=out)
        keys[slug] = out.getvalue().strip()
    return keys


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--streams", type=int, default=20, help="concurrent client streams (20)")
    parser.add_argument("--minutes", type=float, default=1.0, help="how long to send new requests (1)")
    parser.add_argument("--disconnect-share", type=float, default=0.1,
                        help="requests whose client hangs up, half with a clean close, half with a reset (0.1)")
    parser.add_argument("--stall-share", type=float, default=0.1, help="requests read at real-time speed (0.1)")
    parser.add_argument("--ws-share", type=float, default=0.5, help="streams on the WebSocket API (0.5)")
    parser.add_argument("--tenants", type=int, default=3, help="tenants, each with its own key (3)")
    parser.add_argument("--url", help="load this running service (http://host:port) instead of starting one; "
                                      "DATABASE_URL must be its database")
    parser.add_argument("--web", type=int, default=1, help="daphne web processes to start (1)")
    parser.add_argument("--workers", type=int, default=2, help="tts_worker processes to start (2)")
    parser.add_argument("--capacity", type=int, default=32, help="jobs per worker (32)")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/11"),
                        help="Redis of the started topology (REDIS_URL, else database 11)")
    parser.add_argument("--settle", type=float, default=30.0, help="seconds to wait for the last usage rows (30)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--log", help="keep the web and worker processes' log in this file")
    args = parser.parse_args(argv)
    if args.streams < 1 or args.minutes <= 0 or args.tenants < 1 or args.web < 1 or args.workers < 1:
        parser.error("--streams, --tenants, --web and --workers must be at least 1, --minutes positive")
    for share in ("disconnect_share", "stall_share", "ws_share"):
        if not 0 <= getattr(args, share) <= 1:
            parser.error(f"--{share.replace('_', '-')} must be between 0 and 1")
    if args.disconnect_share + args.stall_share > 1:
        parser.error("--disconnect-share and --stall-share add up to more than 1")
    return args


def reproduce_command(argv: list[str]) -> str:
    python = os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT)) else sys.executable
    prefix = "".join(f"{name}={shlex.quote(os.environ[name])} " for name in ("DATABASE_URL", "REDIS_URL")
                     if os.environ.get(name))
    return f"cd {shlex.quote(str(ROOT))} && {prefix}{shlex.join([python, 'bench/load.py', *argv])}"


# --- report ----------------------------------------------------------------------------------------------------
def ms(values: list[float], pct: float) -> str:
    return f"{percentile(values, pct) * 1000:8.1f}" if values else f"{'-':>8}"


def print_report(sent: list[Sent], wall: float) -> None:
    print(f"\n{len(sent)} requests in {wall:.1f} s ({len(sent) / wall:.1f} per second)")
    print(f"  {'kind':<16}{'requests':>9}{'success':>9}{'hung up':>9}{'error':>7}{'broken':>8}{'timeout':>8}"
          f"{'1st audio p50 ms':>18}{'p95 ms':>9}")
    groups = collections.defaultdict(list)
    for request in sent:
        groups[f"{request.protocol} {request.behaviour}"].append(request)
        groups[request.protocol].append(request)
        groups["all"].append(request)
    order = [f"{protocol} {behaviour}" if behaviour else protocol for protocol in ("rest", "ws")
             for behaviour in ("complete", "disconnect", "abort", "stall", "")] + ["all"]
    for name in [name for name in order if name in groups]:
        requests = groups[name]
        outcomes = collections.Counter(request.outcome for request in requests)
        firsts = [request.first_audio for request in requests if request.first_audio is not None]
        print(f"  {name:<16}{len(requests):>9}{outcomes['success']:>9}{outcomes['disconnected']:>9}"
              f"{outcomes['error']:>7}{outcomes['broken']:>8}{outcomes['timeout']:>8}{ms(firsts, 50):>18}"
              f"{ms(firsts, 95):>9}")
    audio = sum(request.audio_seconds for request in sent)
    print(f"audio received: {audio:.0f} s ({audio / wall:.1f} audio seconds per wall second)")
    errors = collections.Counter(request.error_code or "(transfer broken)" for request in sent
                                 if request.outcome in ("error", "broken"))
    print("errors by code: " + (", ".join(f"{code}: {n}" for code, n in errors.most_common()) or "none"))


# --- main ------------------------------------------------------------------------------------------------------
def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    run_id = uuid.uuid4().hex[:8]
    print(f"reproduce: {reproduce_command(argv)}")
    with tempfile.TemporaryDirectory(prefix="callwaiting-load-") as temp:
        data_dir = Path(temp)
        processes: list[subprocess.Popen] = []
        log_path = data_dir / "topology.log"
        if args.log:
            log_path = Path(args.log).resolve()
        log = open(log_path, "w")
        try:
            if args.url:
                parts = urlsplit(args.url)
                targets = [(parts.hostname or HOST, parts.port or 80)]
                env = dict(os.environ)
                print(f"target: {args.url} (already running); database {_safe(os.environ.get('DATABASE_URL', ''))}")
            else:
                ports = [free_port() for _ in range(args.web)]
                env = bench_env(data_dir, ports[0])
                env.update(DATABASE_URL=os.environ.get("DATABASE_URL") or f"sqlite:///{data_dir / 'load.sqlite3'}",
                           REDIS_URL=args.redis_url, TTS_EMBEDDED_WORKER="0",
                           TTS_JOB_QUEUE=f"cw:tts:jobs:load-{run_id}")
                targets = [(HOST, port) for port in ports]
            django_setup(env)
            from django.core.management import call_command

            if not args.url:
                call_command("migrate", "--noinput", verbosity=0)
                call_command("sync_voices", stdout=io.StringIO(), stderr=io.StringIO())
            keys = create_tenants(args.tenants, run_id)
            if not args.url:
                processes += [start_worker(env, log, args.capacity) for _ in range(args.workers)]
                for _, port in targets:
                    processes.append(start_server({**env, "PORT": str(port)}, port, log))
                    wait_until_healthy(processes[-1], port)
                print(f"topology: {args.web} daphne web process(es) with no model, {args.workers} tts_worker "
                      f"(eSpeak NG, capacity {args.capacity}); database {_safe(env['DATABASE_URL'])}; "
                      f"Redis {_safe(args.redis_url)} (job queue {env['TTS_JOB_QUEUE']})")
            print(f"{os.cpu_count()} CPUs, load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
                  f"{args.streams} streams ({round(args.streams * args.ws_share)} WebSocket) for {args.minutes:g} min; "
                  f"per request: disconnect {args.disconnect_share:g}, stall {args.stall_share:g}; "
                  f"{args.tenants} tenants (load-{run_id}-*)")
            plan = Plan(targets, keys, args.streams, args.minutes * 60, args.ws_share, args.disconnect_share,
                        args.stall_share, args.seed)
            sent, wall = asyncio.run(run_streams(plan))
            print_report(sent, wall)
            rows = settled_rows(sorted(keys), sent, args.settle)
            result = reconcile(sent, rows)
            print_reconciliation(result, len(rows), len(sent))
            if not args.url:
                log.flush()
                jobs, repeated = repeated_starts(log_path.read_text())
                print(f"workers: {jobs} jobs reached an engine, {repeated} of them more than once")
            return 0 if result.ok else 1
        except BaseException:
            log.flush()
            print(f"--- topology log ({log_path}) ---\n{log_path.read_text()[-4000:]}", file=sys.stderr)
            raise
        finally:
            for process in reversed(processes):
                stop_server(process)
            log.close()
            if not args.url:
                import redis

                redis.Redis.from_url(args.redis_url).delete(f"cw:tts:jobs:load-{run_id}")  # this run's queue only


def _safe(url: str) -> str:
    """A URL without its password, for the report."""
    parts = urlsplit(url)
    if parts.password:
        parts = parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":***@"))
    return parts.geturl()


if __name__ == "__main__":
    sys.exit(main())
