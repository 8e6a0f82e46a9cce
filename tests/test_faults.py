"""Faults of the production topology, with real processes (daphne with no model inside, `tts_worker`) on a
private `redis-server` that the tests stop and start again: a Redis outage, a PostgreSQL outage (a private
cluster made with `initdb`), and an engine still loading."""
import http.client
import json
import shutil
import threading
import time
import uuid

import pytest

from tests.test_topology import PrivatePostgres, PrivateRedis, Topology

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server on PATH")


@pytest.fixture
def redis_server(tmp_path):
    server = PrivateRedis(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def faulty(tmp_path, redis_server):
    topology = Topology(tmp_path, None, redis_url=redis_server.url, TTS_ENGINES="espeak,xtts")
    topology.redis = redis_server
    yield topology
    topology.stop()


@pytest.fixture
def postgres():
    if shutil.which("initdb") is None or shutil.which("pg_ctl") is None:
        pytest.skip("needs PostgreSQL's initdb and pg_ctl on PATH")
    server = PrivatePostgres()
    yield server
    server.remove()


@pytest.fixture
def on_postgres(tmp_path, redis_server, postgres):
    # A short pool timeout: a request that finds no database connection gets its 503 after 2 s, not 10.
    topology = Topology(tmp_path, None, redis_url=redis_server.url, database_url=postgres.url,
                        TTS_ENGINES="espeak", DATABASE_POOL_TIMEOUT="2")
    topology.postgres = postgres
    yield topology
    topology.stop()


class Traffic:
    """Clients that keep asking for speech (and for /v1/health) until stopped; every answer is recorded."""

    TEXT = "Riding out a short Redis outage, sentence {n}."

    def __init__(self, topology, clients: int = 2, text: str | None = None):
        self.topology = topology
        self.text = text or self.TEXT
        self.answers: list[dict] = []
        self.health: list[tuple[int, dict]] = []
        self.streaming = 0  # answers whose 200 has come and whose audio is still coming
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._speak) for _ in range(clients)]
        self.threads.append(threading.Thread(target=self._watch_health))
        for thread in self.threads:
            thread.start()

    def _speak(self):
        n = 0
        while not self.stopping.is_set():
            n += 1
            request_id = str(uuid.uuid4())
            answer = {"request_id": request_id, "sent_at": time.monotonic()}
            response = self.topology.synthesize(text=self.text.format(n=n), headers={"X-Request-ID": request_id})
            answer["status"] = response.status
            answer["retry_after"] = response.getheader("Retry-After")
            with self.lock:
                self.streaming += response.status == 200
            try:
                body = response.read()
                answer["complete"] = True
            except (http.client.IncompleteRead, ConnectionError):  # a stream broken by the outage
                body, answer["complete"] = b"", False
            with self.lock:
                self.streaming -= response.status == 200
            answer["done_at"] = time.monotonic()
            if response.status != 200:
                answer["body"] = json.loads(body)
            with self.lock:
                self.answers.append(answer)
            self.stopping.wait(0.05)  # a steady trickle of calls, not a flood on the CI machine's two cores

    def _watch_health(self):
        while not self.stopping.is_set():
            connection = self.topology.connection()
            connection.request("GET", "/v1/health")
            response = connection.getresponse()
            with self.lock:
                self.health.append((response.status, json.loads(response.read()), response.getheader("Retry-After")))
            self.stopping.wait(0.1)

    def wait_for(self, what, predicate, timeout: float):
        deadline = time.monotonic() + timeout
        while True:
            with self.lock:
                found = predicate(self)
            if found:
                return found
            assert time.monotonic() < deadline, f"never saw {what}"
            time.sleep(0.05)

    def stop(self):
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)


def test_a_redis_outage_gives_503s_and_everything_serves_again_without_a_restart(faulty):
    faulty.manage("shell", "-c", "from tenants.models import Tenant; "
                  "Tenant.objects.filter(slug='demo').update(requests_per_minute=100000, requests_per_hour=1000000)")
    faulty.start_worker("espeak", "--engines", "espeak", "--capacity", "4")
    worker_id = faulty.wait_for_engines("espeak")["workers"][0]["worker_id"]
    traffic = Traffic(faulty)
    try:
        traffic.wait_for("speech before the outage", lambda t: any(a["status"] == 200 for a in t.answers), 60)

        faulty.redis.stop()
        stopped_at = time.monotonic()
        # Clients and health notice; the outage lasts three seconds at least.
        traffic.wait_for("a 503 during the outage", lambda t: any(
            a["status"] == 503 and a["sent_at"] > stopped_at for a in t.answers), 30)
        traffic.wait_for("health naming Redis", lambda t: any(
            status == 503 and body.get("redis", {}).get("ok") is False for status, body, _ in t.health), 30)
        traffic.wait_for("three seconds of outage", lambda t: time.monotonic() - stopped_at >= 3, 10)

        faulty.redis.start()
        restarted_at = time.monotonic()
        first = traffic.wait_for("speech after Redis came back", lambda t: next(
            (a for a in t.answers if a["status"] == 200 and a["complete"] and a["sent_at"] > restarted_at), None), 60)
        recovered = time.monotonic() - restarted_at
        print(f"serving again {recovered:.2f} s after Redis restarted (first 200 sent "
              f"{first['sent_at'] - restarted_at:.2f} s after the restart)")
        # A few more after the recovery: no stale pooled connection turns into an error.
        recovered_count = lambda t: sum(a["sent_at"] > first["sent_at"] for a in t.answers)  # noqa: E731
        traffic.wait_for("ten answers after the recovery", lambda t: recovered_count(t) >= 10, 60)
    finally:
        traffic.stop()

    # Nobody was restarted: the same worker serves, the web process never went away.
    assert faulty.workers["espeak"].poll() is None and faulty.web.poll() is None
    health = faulty.get("/v1/health")[1]
    assert health["status"] == "degraded" and health["redis"] == {"ok": True}  # xtts has no model here
    assert [w["worker_id"] for w in health["workers"]] == [worker_id]

    answers = traffic.answers
    statuses = {a["status"] for a in answers}
    assert statuses <= {200, 503}, [a for a in answers if a["status"] not in (200, 503)]  # never a 500
    refused = [a for a in answers if a["status"] == 503]
    assert refused and all(set(a["body"]) == {"error"} and a["retry_after"] for a in refused), [
        (a["body"], round(a["sent_at"] - stopped_at, 2)) for a in refused if not a["retry_after"]]
    codes = {a["body"]["error"]["code"] for a in refused}
    assert codes & {"service_unavailable", "queue_unavailable"}, codes
    assert all(a["status"] == 200 and a["complete"] for a in answers if a["sent_at"] > first["sent_at"])
    outage_health = [(status, body, retry) for status, body, retry in traffic.health if status != 200]
    assert outage_health and all(status == 503 and retry for status, _, retry in outage_health)
    assert any("Redis" in body["redis"].get("error", "") for _, body, _ in outage_health)

    # Every request that was answered has its usage row (written to the database even while Redis was down).
    rows = {row["request_id"]: row for row in faulty.usage("request_id", "status", "error_code")}
    served = {a["request_id"] for a in answers if a["status"] == 200 and a["complete"]}
    assert {rid for rid, row in rows.items() if row["status"] == "success"} == served
    broken = [a["request_id"] for a in answers if a["status"] == 200 and not a["complete"]]
    assert all(rows[rid]["status"] == "error" for rid in broken)
    print(f"{len(answers)} requests: {len(served)} served, {len(broken)} broken mid-stream, "
          f"{len(refused)} refused with 503 ({sorted(codes)})")


def test_an_engine_still_loading_says_so_with_retry_after(faulty):
    faulty.manage("shell", "-c", "from voices.models import Voice; from tenants.models import Tenant; Voice.objects."
                  "create(tenant=Tenant.objects.get(slug='demo'), voice_id='big', name='Big', engine='xtts')")
    release = faulty.tmp / "release-load"
    faulty.start_worker("slow", "--engines", "espeak,xtts",
                        TTS_ENGINE_CLASSES=json.dumps({"xtts": "tests.engines.LoadHeldEspeak"}),
                        HELD_LOAD_RELEASE=str(release))
    deadline = time.monotonic() + 60
    while (health := faulty.get("/v1/health")[1])["engines"]["xtts"].get("state") != "loading":
        assert time.monotonic() < deadline, f"xtts never showed as loading: {health}"
        time.sleep(0.1)
    connection = faulty.connection()
    connection.request("GET", "/v1/health")
    response = connection.getresponse()
    health = json.loads(response.read())
    # Nothing is served until the worker has loaded all its engines: 503, but "loading", not "unhealthy".
    assert response.status == 503 and int(response.getheader("Retry-After")) > 0
    assert health["status"] == "loading" and health["workers"][0]["loading"] is True
    assert {name: engine["state"] for name, engine in health["engines"].items()} == {"espeak": "loading",
                                                                                      "xtts": "loading"}

    response = faulty.synthesize(text="Are you there yet?", voice_id="big")
    body = json.loads(response.read())
    assert response.status == 503 and body["error"]["code"] == "engine_loading", body
    assert "loading" in body["error"]["message"] and int(response.getheader("Retry-After")) > 0
    status, voices = faulty.get("/v1/voices")
    big = next(voice for voice in voices["voices"] if voice["voice_id"] == "big")
    assert big["available"] is False and "loading" in big["unavailable_reason"]

    release.touch()
    health = faulty.wait_for_engines("xtts")
    assert health["status"] == "ok" and health["engines"]["xtts"]["state"] == "available"
    assert faulty.synthesize(text="Loaded and serving.").status == 200


def test_a_postgres_restart_gives_503s_and_everything_serves_again_without_a_restart(on_postgres):
    topology = on_postgres
    topology.manage("shell", "-c", "from tenants.models import Tenant; "
                    "Tenant.objects.filter(slug='demo').update(requests_per_minute=100000, requests_per_hour=1000000)")
    topology.start_worker("espeak", "--engines", "espeak", "--capacity", "4")
    worker_id = topology.wait_for_engines("espeak")["workers"][0]["worker_id"]
    # Answers long enough that some are streaming when PostgreSQL stops: their usage rows are due during the outage.
    traffic = Traffic(topology, text="A database restart mid-stream, sentence {n}. " + "It goes on a while. " * 6)
    try:
        traffic.wait_for("speech before the outage", lambda t: any(a["status"] == 200 for a in t.answers), 60)
        traffic.wait_for("a stream in flight", lambda t: t.streaming > 0, 30)

        topology.postgres.stop("fast")  # as a restart or a failover does: every connection is cut
        stopped_at = time.monotonic()
        # A request now is refused (its key cannot be checked), after the pool's 2 s wait for a connection.
        response = topology.synthesize(text="Is the database there?")
        refusal = json.loads(response.read())
        assert response.status == 503 and int(response.getheader("Retry-After")) > 0, refusal
        assert refusal["error"]["code"] == "service_unavailable" and "database" in refusal["error"]["message"]
        traffic.wait_for("health naming the database", lambda t: any(
            status == 503 and body["database"]["ok"] is False for status, body, _ in t.health), 30)

        topology.postgres.start()  # on the same port
        restarted_at = time.monotonic()
        first = traffic.wait_for("speech after PostgreSQL came back", lambda t: next(
            (a for a in t.answers if a["status"] == 200 and a["complete"] and a["sent_at"] > restarted_at), None), 60)
        print(f"serving again {time.monotonic() - restarted_at:.2f} s after PostgreSQL restarted (first 200 sent "
              f"{first['sent_at'] - restarted_at:.2f} s after the restart)")
        recovered_count = lambda t: sum(a["sent_at"] > first["sent_at"] for a in t.answers)  # noqa: E731
        traffic.wait_for("ten answers after the recovery", lambda t: recovered_count(t) >= 10, 60)
        traffic.wait_for("health after the recovery", lambda t: t.health[-1][0] == 200, 30)
    finally:
        traffic.stop()

    # Nobody was restarted: the same worker serves, the web process never went away.
    assert topology.workers["espeak"].poll() is None and topology.web.poll() is None
    status, health = topology.get("/v1/health")
    assert status == 200 and health["status"] == "ok" and health["database"]["ok"] is True
    assert [w["worker_id"] for w in health["workers"]] == [worker_id]

    answers = traffic.answers
    assert {a["status"] for a in answers} <= {200, 503}, [a for a in answers if a["status"] not in (200, 503)]
    # The clients' own requests during the outage: refused the same way, or (a stream that was under way, or
    # one whose key check got a connection back in time) served once the database was back.
    refused = [a for a in answers if a["status"] == 503]
    assert all(set(a["body"]) == {"error"} and a["retry_after"] for a in refused), refused
    assert all(a["body"]["error"]["code"] == "service_unavailable" and "database" in a["body"]["error"]["message"]
               for a in refused), refused
    assert all(a["status"] == 200 and a["complete"] for a in answers if a["sent_at"] > first["sent_at"])
    outage_health = [(status, body, retry) for status, body, retry in traffic.health if status != 200]
    assert outage_health and all(status == 503 and retry for status, _, retry in outage_health)
    assert all(body["database"]["ok"] is False for _, body, _ in outage_health)

    # Every request answered with its audio has its usage row, even one that ended while the database was down.
    rows = {row["request_id"]: row for row in topology.usage("request_id", "status", "error_code")}
    served = {a["request_id"] for a in answers if a["status"] == 200 and a["complete"]}
    assert {rid for rid, row in rows.items() if row["status"] == "success"} == served
    broken = [a["request_id"] for a in answers if a["status"] == 200 and not a["complete"]]
    across = [a for a in answers if a["status"] == 200 and a["sent_at"] < stopped_at < a["done_at"]]
    print(f"{len(answers)} requests: {len(served)} served ({len(across)} of them across the outage's start), "
          f"{len(broken)} broken mid-stream, {len(refused)} refused with 503; {len(traffic.health)} health checks, "
          f"{len(outage_health)} said 503")
