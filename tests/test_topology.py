"""The production topology with real processes: daphne (no model inside) and dedicated `tts_worker`
processes, over Redis, on PostgreSQL when the suite runs on it. Needs REDIS_URL (`.ci/run`'s second pass)."""
import http.client
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.factories import voice_like
from tests.test_server import ROOT, _free_port, _wait_for_port
from voices.audio import encode_wav

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the production topology needs Redis")

SENTENCES = " ".join(f"Sentence number {n} of a long answer." for n in range(40))


def _database_url(tmp: Path) -> str:
    url = os.environ.get("DATABASE_URL", "")
    if not url.startswith("postgres"):
        return f"sqlite:///{tmp / 'db.sqlite3'}"
    import psycopg

    with psycopg.connect(url, autocommit=True) as connection:
        connection.execute("DROP DATABASE IF EXISTS callwaiting_topology WITH (FORCE)")
        connection.execute("CREATE DATABASE callwaiting_topology")
    return urlsplit(url)._replace(path="/callwaiting_topology").geturl()


class Topology:
    def __init__(self, tmp: Path, tiny_xtts_dir: Path):
        self.tmp = tmp
        self.env = {
            **os.environ,
            "DATA_DIR": str(tmp),
            "DATABASE_URL": _database_url(tmp),
            "REDIS_URL": urlsplit(os.environ["REDIS_URL"])._replace(path="/12").geturl(),
            "TTS_EMBEDDED_WORKER": "0",
            "TTS_JOB_ACCEPT_TIMEOUT": "20",
            "XTTS_MODEL_DIR": str(tiny_xtts_dir),
            "XTTS_DEVICE": "cpu",
        }
        self.env.pop("DJANGO_SETTINGS_MODULE", None)
        self.workers: dict[str, subprocess.Popen] = {}
        self.manage("migrate", "--noinput", "-v0")
        self.key = self.manage("bootstrap_demo").strip().rsplit(" ", 1)[-1]
        clip = tmp / "reference.wav"
        clip.write_bytes(encode_wav(voice_like(5.0), 22050))
        self.manage("shell", "-c", (
            "from voices.models import Voice; from tenants.models import Tenant; "
            f"Voice.objects.create(tenant=Tenant.objects.get(slug='demo'), voice_id='slow_xtts', name='x', "
            f"engine='xtts', engine_settings={{'reference_audio': '{clip}'}})"
        ))
        import redis

        redis.Redis.from_url(self.env["REDIS_URL"]).flushdb()
        self.port = _free_port()
        daphne = Path(sys.executable).with_name("daphne")
        self.web = subprocess.Popen(
            [str(daphne), "-b", "127.0.0.1", "-p", str(self.port), "callwaiting.asgi:application"],
            env=self.env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(tmp / "web.log", "w"),
        )
        _wait_for_port(self.port, self.web)

    def manage(self, *args) -> str:
        done = subprocess.run([sys.executable, "manage.py", *args], env=self.env, cwd=ROOT, check=True,
                              capture_output=True, text=True)
        return done.stdout

    def start_worker(self, name: str, *args) -> None:
        self.workers[name] = subprocess.Popen(
            [sys.executable, "manage.py", "tts_worker", *args], env=self.env, cwd=ROOT,
            stdout=subprocess.DEVNULL, stderr=open(self.tmp / f"{name}.log", "w"),
        )

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

    def synthesize(self, **fields) -> http.client.HTTPResponse:
        connection = self.connection()
        connection.request("POST", "/v1/synthesize", body=json.dumps(fields), headers={
            "Authorization": f"Bearer {self.key}", "Content-Type": "application/json"})
        return connection.getresponse()

    def stop(self):
        for process in [self.web, *self.workers.values()]:
            if process.poll() is None:
                process.kill()
            process.wait(10)


@pytest.fixture
def topology(tmp_path, tiny_xtts_dir):
    running = Topology(tmp_path, tiny_xtts_dir)
    yield running
    running.stop()


def test_no_worker_gives_503_in_bounded_time(topology):
    response = topology.synthesize(text="Is anybody there?")
    assert response.status == 503
    assert json.loads(response.read())["error"]["code"] == "engine_unavailable"
    status, health = topology.get("/v1/health")
    assert health["status"] == "unhealthy" and health["workers"] == []


def test_concurrent_requests_are_spread_over_the_workers(topology):
    import concurrent.futures

    topology.start_worker("a", "--engines", "espeak", "--capacity", "1")
    topology.start_worker("b", "--engines", "espeak", "--capacity", "1")
    deadline = time.monotonic() + 60
    while len(topology.get("/v1/health")[1]["workers"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)

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
    _, stats = topology.get("/v1/tenant/stats?days=1")
    assert stats["totals"]["errors"] >= 1


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
