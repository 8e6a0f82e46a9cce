"""The production topology with real processes: daphne (no model inside) and dedicated `tts_worker`
processes, over Redis, on PostgreSQL when the suite runs on it. Needs REDIS_URL (`.ci/run`'s second pass)."""
import collections
import concurrent.futures
import http.client
import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.factories import voice_like
from tests.live import ROOT, free_port, wait_for_port
from voices.audio import encode_wav

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the production topology needs Redis")

SENTENCES = " ".join(f"Sentence number {n} of a long answer." for n in range(40))


def _database_url(tmp: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return f"sqlite:///{tmp / 'db.sqlite3'}"
    import psycopg

    # Named after the suite's own database, so that suites on other databases of one server never collide.
    name = f"{urlsplit(url).path.lstrip('/') or 'callwaiting'}_topology"
    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        connection.execute(f'CREATE DATABASE "{name}"')
    return urlsplit(url)._replace(path=f"/{name}").geturl()


class PrivateRedis:
    """A redis-server of this test's own, without persistence: a restart comes back empty, as a crashed Redis
    without a volume does (the harder case: the consumer group, inboxes and heartbeats are all gone)."""

    def __init__(self, tmp):
        self.port = free_port()
        self.log = tmp / "redis.log"
        self.process = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
            stdout=open(self.log, "a"), stderr=subprocess.STDOUT,
        )
        wait_for_port(self.port, self.process)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        self.process.wait(10)


class PrivatePostgres:
    """A PostgreSQL cluster of this test's own (`initdb`, trust authentication, on 127.0.0.1 and a free port),
    run as the `postgres` OS user when the tests run as root; stopped and started again on the same port."""

    def __init__(self):
        import tempfile

        # Not under pytest's tmp_path: the postgres user must be able to reach the directory.
        self.dir = Path(tempfile.mkdtemp(prefix="callwaiting-pg-"))
        self.data, self.log = self.dir / "data", self.dir / "postgres.log"
        self.port = free_port()
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()

    @property
    def url(self) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *command: str) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        subprocess.run([*prefix, *command], check=True, capture_output=True, cwd=self.dir)

    def start(self) -> None:
        options = f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class Topology:
    """`redis_url`: the Redis every process uses (db 12 of REDIS_URL unless given; it is flushed first);
    `database_url`: its database (a fresh one next to DATABASE_URL's when that is PostgreSQL, else SQLite).
    Without `tiny_xtts_dir` there is no XTTS model and no `slow_xtts` voice."""

    def __init__(self, tmp: Path, tiny_xtts_dir: Path | None, redis_url: str | None = None,
                 database_url: str | None = None, **env: str):
        self.tmp = tmp
        self.env = {
            **os.environ,
            "DATA_DIR": str(tmp),
            "DATABASE_URL": database_url or _database_url(tmp),
            "REDIS_URL": redis_url or urlsplit(os.environ["REDIS_URL"])._replace(path="/12").geturl(),
            "TTS_EMBEDDED_WORKER": "0",
            "TTS_JOB_ACCEPT_TIMEOUT": "20",
            "XTTS_MODEL_DIR": str(tiny_xtts_dir or ""),
            "XTTS_DEVICE": "cpu",
            # A task whose Celery worker was killed is handed out again after 5 s instead of 15 minutes.
            "CELERY_VISIBILITY_TIMEOUT": "5",
            # A small PostgreSQL pool: a request that kept its connection would soon starve the others.
            "DATABASE_POOL_SIZE": "3",
            **env,
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.workers: dict[str, subprocess.Popen] = {}
        self.other_webs: list[subprocess.Popen] = []  # start_web
        self.manage("migrate", "--noinput", "-v0")
        self.key = self.manage("bootstrap_demo").strip().rsplit(" ", 1)[-1]
        if tiny_xtts_dir is not None:
            clip = tmp / "reference.wav"
            clip.write_bytes(encode_wav(voice_like(5.0), 22050))
            self.manage("shell", "-c", (
                "from voices.models import Voice; from tenants.models import Tenant; "
                f"Voice.objects.create(tenant=Tenant.objects.get(slug='demo'), voice_id='slow_xtts', name='x', "
                f"engine='xtts', engine_settings={{'reference_audio': '{clip}'}})"
            ))
        import redis

        redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()
        self.web, self.port = self._web_process("web.log")

    def _web_process(self, log: str) -> tuple[subprocess.Popen, int]:
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "callwaiting.server", "-b", "127.0.0.1", "-p", str(port),
             "callwaiting.asgi:application"],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.tmp / log, "w"),
        )
        wait_for_port(port, process)
        return process, port

    def start_web(self, name: str) -> int:
        """Another web process on the same database and Redis, as a deployment runs several; its port. Stopped
        with the rest."""
        process, port = self._web_process(f"{name}.log")
        self.other_webs.append(process)
        return port

    def manage(self, *args) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], env=self.env, cwd=ROOT, check=True,
                              capture_output=True, text=True)
        return done.stdout

    def start_worker(self, name: str, *args, **extra_env: str) -> None:
        self.workers[name] = subprocess.Popen(
            [sys.executable, "manage.py", "tts_worker", *args], env={**self.env, **extra_env}, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{name}.log", "w"),
        )

    def engine_starts(self) -> dict[str, collections.Counter]:
        """Per worker: how many times each job id reached its engine (the worker logs every start)."""
        return {
            name: collections.Counter(re.findall(r"job (\w+) started", (self.tmp / f"{name}.log").read_text()))
            for name in self.workers if (self.tmp / f"{name}.log").exists()
        }

    def start_celery(self, name: str = "celery") -> None:
        # The solo pool keeps the task in the process that the test kills; production uses the default pool.
        self.workers[name] = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "callwaiting", "worker", "--pool", "solo", "--loglevel", "INFO"],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{name}.log", "w"),
        )

    def broker_unacked(self) -> int:
        """Tasks a Celery worker has taken and not yet acknowledged (kombu's Redis transport keeps them here)."""
        import redis

        return redis.Redis.from_url(self.env["REDIS_URL"]).hlen("unacked")

    def usage(self, *fields: str) -> list[dict]:
        fields = fields or ("status", "error_code")
        return json.loads(self.manage("shell", "-v0", "-c", (
            "import json; from tenants.models import UsageRecord; print(json.dumps(list("
            f"UsageRecord.objects.order_by('created_at').values(*{list(fields)!r})), default=str))"
        )))

    def wait_for_workers(self, count: int, timeout=60) -> list[dict]:
        deadline = time.monotonic() + timeout
        while len(workers := self.get("/v1/health")[1]["workers"]) < count:
            assert time.monotonic() < deadline, f"{count} workers never showed up"
            time.sleep(0.2)
        return workers

    def wait_for_engines(self, *engines, timeout=60) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            health = self.get("/v1/health")[1]
            if all(health["engines"][name]["available"] for name in engines):
                return health
            time.sleep(0.2)
        raise AssertionError(f"engines {engines} never became available: {health}")

    def connection(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)

    def get(self, path):
        connection = self.connection()
        connection.request("GET", path, headers={"Authorization": f"Bearer {self.key}"})
        response = connection.getresponse()
        return response.status, json.loads(response.read())

    def synthesize(self, headers: dict | None = None, **fields) -> http.client.HTTPResponse:
        connection = self.connection()
        connection.request("POST", "/v1/synthesize", body=json.dumps(fields), headers={
            "Authorization": f"Bearer {self.key}", "Content-Type": "application/json", **(headers or {})})
        return connection.getresponse()

    def stop(self):
        for process in [self.web, *self.other_webs, *self.workers.values()]:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@pytest.fixture
def topology(tmp_path, tiny_xtts_dir):
    # A Redis of its own where redis-server is installed: suites running side by side never flush each other's.
    redis_server = PrivateRedis(tmp_path) if shutil.which("redis-server") else None
    running = Topology(tmp_path, tiny_xtts_dir, redis_url=redis_server.url if redis_server else None)
    yield running
    running.stop()
    if redis_server is not None:
        redis_server.stop()


def test_no_worker_gives_503_in_bounded_time(topology):
    response = topology.synthesize(text="Is anybody there?")
    assert response.status == 503
    assert json.loads(response.read())["error"]["code"] == "engine_unavailable"
    status, health = topology.get("/v1/health")
    assert health["status"] == "unhealthy" and health["workers"] == []


def test_concurrent_requests_are_spread_over_the_workers(topology):
    topology.start_worker("a", "--engines", "espeak", "--capacity", "1")
    topology.start_worker("b", "--engines", "espeak", "--capacity", "1")
    topology.wait_for_workers(2)

    def one(_):
        response = topology.synthesize(text=SENTENCES[:300])
        body = response.read()
        return response.status, response.getheader("X-Worker-Id"), len(body)

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        results = list(pool.map(one, range(6)))
    assert all(status == 200 and size > 44 for status, _, size in results), results
    assert len({worker for _, worker, _ in results}) == 2  # both workers served


def test_a_worker_killed_mid_stream_breaks_the_transfer_and_is_recorded(topology):
    topology.start_worker("xtts", "--engines", "xtts", "--capacity", "1")
    topology.wait_for_engines("xtts")
    response = topology.synthesize(text=SENTENCES, voice_id="slow_xtts")
    assert response.status == 200
    first = response.read1(4096)
    assert first[:4] == b"RIFF"
    topology.workers["xtts"].send_signal(signal.SIGKILL)
    killed_at = time.monotonic()
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):  # never a short file that looks complete
        while response.read1(65536):
            pass
    detected = time.monotonic() - killed_at
    print(f"worker death noticed and the transfer broken {detected:.2f} s after kill -9")
    assert detected < 15
    assert topology.usage()[-1] == {"status": "error", "error_code": "worker_lost"}


def test_a_worker_killed_mid_stream_sends_a_websocket_listener_the_error_frame(topology):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    topology.start_worker("xtts", "--engines", "xtts", "--capacity", "1")
    topology.wait_for_engines("xtts")
    with connect(f"ws://127.0.0.1:{topology.port}/v1/stream", max_size=None, open_timeout=20,
                 additional_headers={"Authorization": f"Bearer {topology.key}"}) as websocket:
        websocket.send(json.dumps({"type": "synthesize", "text": SENTENCES, "voice_id": "slow_xtts"}))
        assert json.loads(websocket.recv(timeout=60))["type"] == "start"
        assert isinstance(websocket.recv(timeout=60), bytes)
        topology.workers["xtts"].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        while isinstance(frame := websocket.recv(timeout=30), bytes):
            pass
        detected = time.monotonic() - killed_at
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=10)
    print(f"worker death reached the WebSocket listener {detected:.2f} s after kill -9")
    assert json.loads(frame)["error"]["code"] == "worker_lost"
    assert closed.value.rcvd.code == 4503
    assert detected < 15
    assert topology.usage()[-1] == {"status": "error", "error_code": "worker_lost"}


def test_sigterm_lets_the_stream_in_flight_finish(topology):
    topology.start_worker("xtts", "--engines", "xtts", "--capacity", "1")
    topology.wait_for_engines("xtts")
    response = topology.synthesize(text="One short sentence. And another one.", voice_id="slow_xtts")
    assert response.status == 200
    first = response.read1(4096)
    topology.workers["xtts"].send_signal(signal.SIGTERM)
    rest = response.read()  # completes: the chunked body ends properly
    assert len(first) + len(rest) > 44
    assert topology.workers["xtts"].wait(30) == 0
    later = topology.synthesize(text="After the worker left.", voice_id="slow_xtts")
    assert later.status == 503  # no worker took it, and nothing hung


def _stalled_listener(topology):
    """A client that asks for a minutes-long clip, reads its first bytes, then stops reading."""
    from tests.test_server import LONG_TEXT, _SmallBufferConnection

    connection = _SmallBufferConnection("127.0.0.1", topology.port, timeout=30)
    connection.request("POST", "/v1/synthesize", body=json.dumps({"text": LONG_TEXT}), headers={
        "Authorization": f"Bearer {topology.key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.read1(1024)[:4] == b"RIFF"
    return connection, response


def test_a_stalled_client_holds_its_job_and_hanging_up_cancels_it_on_the_worker(topology):
    topology.start_worker("espeak", "--engines", "espeak", "--capacity", "2")
    topology.wait_for_engines("espeak")
    connection, response = _stalled_listener(topology)
    deadline = time.monotonic() + 15
    while not (worker := topology.get("/v1/health")[1]["workers"][0])["waiting_for_client"]:
        assert time.monotonic() < deadline, "the worker never held the stalled stream"
        time.sleep(0.1)
    assert worker["load"] == 1  # the clip is minutes long; the worker is parked on it, not racing ahead

    connection.close()
    response.close()
    hung_up = time.monotonic()
    while topology.get("/v1/health")[1]["workers"][0]["load"]:
        assert time.monotonic() - hung_up < 10, "the worker kept the job of a client that hung up"
        time.sleep(0.1)
    print(f"worker freed {time.monotonic() - hung_up:.2f} s after the client hung up")
    assert topology.usage()[-1] == {"status": "client_disconnected", "error_code": "client_disconnected"}


def test_celery_processes_an_upload_and_a_task_survives_its_worker_being_killed(topology):
    topology.start_worker("xtts", "--engines", "xtts", "--capacity", "1")
    topology.wait_for_engines("xtts")  # uploads are refused while no worker can clone
    clip = encode_wav(voice_like(5.0), 22050)
    boundary = "topologyboundary"
    fields = {"voice_id": "cloned", "name": "Cloned", "language": "en"}
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
        for name, value in fields.items()
    ) + (
        f'--{boundary}\r\nContent-Disposition: form-data; name="audio_file"; filename="me.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n"
    ).encode() + clip + f"\r\n--{boundary}--\r\n".encode()
    connection = topology.connection()
    connection.request("POST", "/v1/voices/upload", body=body, headers={
        "Authorization": f"Bearer {topology.key}", "Content-Type": f"multipart/form-data; boundary={boundary}"})
    response = connection.getresponse()
    assert response.status == 202, response.read()
    assert json.loads(response.read())["status"] == "processing"

    # The model worker leaves; a Celery worker takes the task, which waits for a model worker. Kill it mid-task.
    topology.workers["xtts"].send_signal(signal.SIGTERM)
    assert topology.workers["xtts"].wait(30) == 0
    topology.start_celery("celery-1")
    deadline = time.monotonic() + 30
    while topology.broker_unacked() == 0:
        assert time.monotonic() < deadline, "no Celery worker took the task"
        time.sleep(0.1)
    topology.workers["celery-1"].send_signal(signal.SIGKILL)
    topology.workers["celery-1"].wait(10)

    # A model worker and a fresh Celery worker: the task comes back (acks late) and finishes the voice.
    topology.start_worker("xtts-2", "--engines", "xtts", "--capacity", "1")
    topology.start_celery("celery-2")
    deadline = time.monotonic() + 120
    while (voice := topology.get("/v1/voices/cloned")[1])["status"] == "processing":
        assert time.monotonic() < deadline, "the killed worker's task never finished"
        time.sleep(0.5)
    assert voice["status"] == "ready", voice
    speech = topology.synthesize(text="Hello in my own voice.", voice_id="cloned")
    assert speech.status == 200 and len(speech.read()) > 44


def _speak(topology, text: str, **fields) -> tuple[int, bytes, str]:
    response = topology.synthesize(text=text, **fields)
    return response.status, response.read(), response.getheader("X-Worker-Id") or ""


def test_bursts_against_two_workers_run_every_job_once_and_every_answer_is_one_render(topology):
    topology.start_worker("a", "--engines", "espeak", "--capacity", "8")
    topology.start_worker("b", "--engines", "espeak", "--capacity", "8")
    topology.wait_for_workers(2)
    texts = [f"Caller {n}, your table for {n + 2} is ready. Please come to the front desk." for n in range(8)]
    renders = {text: _speak(topology, text)[1] for text in texts}  # one render each, one at a time

    answers = []
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        for _burst in range(6):  # 16 requests at once from 8 threads, each text twice
            answers += list(pool.map(lambda text: (text, *_speak(topology, text)), texts * 2))
    statuses = collections.Counter(status for _, status, _, _ in answers)
    assert statuses == {200: len(answers)}, statuses  # no 503 while the workers had free slots
    # Never two renders in one answer (that doubled its size). eSpeak's renders of one text vary by a few
    # hundred samples from call to call, so the size is compared, not the bytes.
    assert all(abs(len(body) - len(renders[text])) < 0.03 * len(renders[text]) for text, _, body, _ in answers)
    assert {worker for *_, worker in answers} == {w["worker_id"] for w in topology.get("/v1/health")[1]["workers"]}

    starts = topology.engine_starts()
    total = sum(starts.values(), collections.Counter())
    assert len(total) == len(texts) + len(answers)  # every job reached an engine...
    assert set(total.values()) == {1}  # ...exactly once


def test_a_slow_listener_parks_only_its_own_stream_on_the_worker(topology):
    topology.start_worker("espeak", "--engines", "espeak", "--capacity", "4")
    topology.wait_for_engines("espeak")
    stalled, stalled_response = _stalled_listener(topology)
    deadline = time.monotonic() + 15
    while not topology.get("/v1/health")[1]["workers"][0]["engines_paused"]:
        assert time.monotonic() < deadline, "the stalled stream never parked"
        time.sleep(0.1)

    # Other callers on the same worker get their whole answers while the stalled one stays parked.
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        answers = list(pool.map(lambda n: _speak(topology, f"Caller {n} does not wait for anyone."), range(4)))
    worker = topology.get("/v1/health")[1]["workers"][0]
    assert [status for status, _, _ in answers] == [200] * 4
    assert all(len(body) > 44 + 22050 for _, body, _ in answers)  # a second of speech or more, complete
    assert worker["waiting_for_client"] == 1 and worker["load"] == 1  # still parked: nobody waited for it
    assert [row["status"] for row in topology.usage()] == ["success"] * 4

    stalled.close()
    stalled_response.close()
    deadline = time.monotonic() + 10
    while topology.get("/v1/health")[1]["workers"][0]["load"]:
        assert time.monotonic() < deadline, "hanging up did not free the slot"
        time.sleep(0.1)


def test_a_worker_killed_before_its_first_audio_leaves_the_job_to_another(topology):
    release = topology.tmp / "release-held-engine"  # never created: worker "held" takes the job and hangs
    topology.start_worker("held", "--engines", "espeak", "--capacity", "1",
                          TTS_ENGINE_CLASSES=json.dumps({"espeak": "tests.engines.HeldEspeak"}),
                          HELD_ENGINE_RELEASE=str(release))
    topology.wait_for_engines("espeak")
    text = "Nobody should notice that my first worker died."
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(_speak, topology, text)
        deadline = time.monotonic() + 15
        while not topology.get("/v1/health")[1]["workers"][0]["load"]:
            assert time.monotonic() < deadline, "the held worker never took the job"
            time.sleep(0.05)
        topology.workers["held"].send_signal(signal.SIGKILL)
        topology.workers["held"].wait(10)
        topology.start_worker("rescue", "--engines", "espeak", "--capacity", "1")
        status, body, worker = answer.result(timeout=60)
    assert status == 200
    assert worker == topology.get("/v1/health")[1]["workers"][0]["worker_id"]
    reference = _speak(topology, text)[1]
    assert abs(len(body) - len(reference)) < 0.03 * len(reference)  # one whole render, from the rescuing worker
    starts = topology.engine_starts()
    assert sum(starts["held"].values()) == 1 and sum(starts["rescue"].values()) == 2
    assert topology.usage()[0] == {"status": "success", "error_code": ""}


def test_many_quiet_streams_on_one_web_process_lose_no_message(topology):
    """Most of these wait, quiet, for a free slot on the one worker; none may turn into a 503 or a 500."""
    topology.start_worker("espeak", "--engines", "espeak", "--capacity", "2")
    topology.wait_for_engines("espeak")
    with concurrent.futures.ThreadPoolExecutor(32) as pool:
        answers = list(pool.map(
            lambda n: _speak(topology, f"Quiet caller {n} waits for a free slot and then hears this."), range(48)
        ))
    assert collections.Counter(status for status, _, _ in answers) == {200: 48}
    assert all(len(body) > 44 + 22050 for _, body, _ in answers)


def test_a_worker_killed_mid_batch_fails_every_stream_in_it_cleanly(topology):
    topology.start_worker("xtts", "--engines", "xtts")
    topology.wait_for_engines("xtts")
    responses = [topology.synthesize(text=SENTENCES, voice_id="slow_xtts") for _ in range(3)]
    assert [response.status for response in responses] == [200] * 3
    assert all(response.read1(4096)[:4] == b"RIFF" for response in responses)  # all three in the batch
    topology.workers["xtts"].send_signal(signal.SIGKILL)
    for response in responses:
        with pytest.raises((http.client.IncompleteRead, ConnectionError)):  # never a short file that looks whole
            while response.read1(65536):
                pass
    assert [row["error_code"] for row in topology.usage()] == ["worker_lost"] * 3


def test_clients_that_hang_up_mid_stream_give_their_database_connection_back(topology):
    topology.start_worker("espeak", "--engines", "espeak", "--capacity", "4")
    topology.wait_for_engines("espeak")
    for _ in range(10):  # more hang-ups than the pool has connections
        connection, response = _stalled_listener(topology)
        connection.close()
        response.close()
    answers = [_speak(topology, "Still served after all those hang-ups.") for _ in range(3)]
    assert [status for status, _, _ in answers] == [200] * 3
    usage = topology.usage()
    assert [row["status"] for row in usage].count("client_disconnected") == 10
