"""Redis or the database unreachable, and engines still loading, as the API's clients see them (in process; the
real outages with real processes, Redis and PostgreSQL stopped and started again, are in tests/test_faults.py)."""
import io
import uuid

import pytest
import redis.exceptions
from django.core.cache import cache
from django.db import OperationalError

from synthesis import heartbeats
from tenants.models import UsageRecord
from tests.factories import voice_like
from voices.audio import encode_wav


def _refused(*args, **kwargs):
    raise redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


def _no_database(*args, **kwargs):
    # What Django makes of psycopg_pool's PoolTimeout while PostgreSQL is down.
    raise OperationalError("couldn't get a connection after 10.00 sec")


class _CacheWithout:
    """Django's cache as synthesis.services sees it, with some operations failing as they do while Redis is down."""

    def __init__(self, *failing: str):
        self.failing = failing

    def __getattr__(self, name):
        return _refused if name in self.failing else getattr(cache, name)


def test_rate_limits_without_redis_answer_503_with_retry_after(asgi, monkeypatch):
    monkeypatch.setattr("tenants.throttling.get_usage", _refused)
    for path in ("/v1/voices", "/v1/tenant/stats"):
        response = asgi.run(asgi.get, path)
        assert response.status == 503 and response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "service_unavailable"
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Is Redis there?"})
    assert response.status == 503 and response.json()["error"]["code"] == "service_unavailable"
    assert "Redis" in response.json()["error"]["message"] and response.headers["retry-after"]


def test_a_stream_slot_that_cannot_be_taken_answers_503_and_is_billed_once(asgi, monkeypatch):
    monkeypatch.setattr("synthesis.services.cache", _CacheWithout("incr"))
    request_id = str(uuid.uuid4())
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Slot please"}, headers={"X-Request-ID": request_id})
    assert response.status == 503 and response.headers["retry-after"]
    assert response.json()["error"]["code"] == "service_unavailable"
    row = UsageRecord.objects.get(request_id=request_id)
    assert (row.status, row.error_code) == ("error", "service_unavailable")


def test_a_request_completed_while_redis_went_away_keeps_its_usage_row(asgi, monkeypatch):
    monkeypatch.setattr("synthesis.services.cache", _CacheWithout("decr"))  # the slot cannot be given back: the row still is written
    request_id = str(uuid.uuid4())
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Billed all the same"},
                        headers={"X-Request-ID": request_id})
    assert response.status == 200 and response.complete and len(response.body) > 44
    row = UsageRecord.objects.get(request_id=request_id)
    assert row.status == "success" and row.audio_seconds > 0
    slot_key = f"tts:streams:{asgi.tenant.pk}"
    assert cache.get(slot_key) == 1  # still counted: Redis could not be told

    monkeypatch.undo()  # Redis is back: the tenant's next stream gives the owed slot back
    assert asgi.run(asgi.post, "/v1/synthesize", json={"text": "And again"}).status == 200
    assert cache.get(slot_key) == 0


def test_health_says_redis_is_down_with_503(asgi, monkeypatch, settings):
    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    monkeypatch.setattr(heartbeats, "live_workers", _refused)
    asgi.key = None
    response = asgi.run(asgi.get, "/v1/health")
    body = response.json()
    assert response.status == 503 and response.headers["retry-after"]
    assert body["status"] == "unhealthy" and body["database"]["ok"] is True
    assert body["redis"]["ok"] is False and "Redis cannot be reached" in body["redis"]["error"]
    assert all("Redis" in engine["reason"] for engine in body["engines"].values())


@pytest.fixture
def xtts_loading(settings):
    """No embedded worker; one worker announces eSpeak served and XTTS still loading."""
    settings.TTS_EMBEDDED_WORKER = False
    heartbeats.worker_heartbeat(worker_id="gpu-0", info={
        "engines": {"espeak": {"available": True, "languages": ["en"], "sample_rate": 22050},
                    "xtts": {"available": False, "loading": True, "reason": "loading"}},
        "capacity": 1, "load": 0, "loading": True,
    })


def test_health_shows_an_engine_loading_as_its_own_state(asgi, xtts_loading):
    asgi.key = None
    response = asgi.run(asgi.get, "/v1/health")
    body = response.json()
    assert response.status == 200  # eSpeak is served meanwhile
    assert body["status"] == "loading"
    assert body["engines"]["xtts"]["state"] == "loading" and body["engines"]["espeak"]["state"] == "available"


def test_an_upload_while_the_cloning_engine_loads_says_so_with_retry_after(asgi, xtts_loading):
    clip = io.BytesIO(encode_wav(voice_like(4.0), 22050))
    clip.name = "me.wav"
    response = asgi.run(asgi.post, "/v1/voices/upload", multipart={
        "voice_id": "mine", "name": "Mine", "language": "en", "audio_file": clip})
    assert response.status == 503 and int(response.headers["retry-after"]) > 0
    error = response.json()["error"]
    assert error["code"] == "engine_loading" and "still loading" in error["message"]
    assert "no live model worker" not in error["message"]


def test_a_websocket_utterance_without_redis_gets_service_unavailable_and_4503(asgi, monkeypatch):
    from tests.synthesis.test_websocket import _closed_with_error, _open, _synthesize

    monkeypatch.setattr("tenants.throttling.get_usage", _refused)

    async def scenario():
        ws = await _open(asgi.key)
        await _synthesize(ws, text="Is Redis there?")
        return await _closed_with_error(ws, 4503)

    assert asgi.run(scenario) == "service_unavailable"


def test_a_database_outage_answers_503_with_retry_after_naming_the_database(asgi, monkeypatch):
    monkeypatch.setattr("tenants.selectors.api_key_authenticate", _no_database)
    for path in ("/v1/voices", "/v1/tenant/stats"):
        response = asgi.run(asgi.get, path)
        assert response.status == 503 and response.headers["retry-after"] == "2"
        assert response.json()["error"]["code"] == "service_unavailable"
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Is the database there?"})
    error = response.json()["error"]
    assert response.status == 503 and response.headers["retry-after"] == "2"
    assert error["code"] == "service_unavailable" and "database cannot be reached" in error["message"]


def test_a_database_outage_escaping_the_async_view_is_503_too(asgi, monkeypatch):
    # A failure past the DRF checks (the usage row of a clip collected whole) is answered by the API's handler.
    monkeypatch.setattr("synthesis.services.tenant_services.usage_record", _no_database)
    monkeypatch.setattr("django.conf.settings.TTS_USAGE_WRITE_RETRY_SECONDS", 0)
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Collected whole", "streaming": False})
    assert response.status == 503 and response.headers["retry-after"] == "2"
    assert response.json()["error"]["code"] == "service_unavailable"


def test_a_websocket_without_the_database_gets_service_unavailable_and_4503(asgi, monkeypatch):
    from tests.synthesis.test_websocket import _closed_with_error, _open

    monkeypatch.setattr("tenants.selectors.api_key_authenticate", _no_database)

    async def scenario():
        ws = await _open(asgi.key)  # the key is checked at the handshake
        return await _closed_with_error(ws, 4503)

    assert asgi.run(scenario) == "service_unavailable"


def test_a_usage_row_due_while_the_database_is_down_is_written_once_it_is_back(asgi, monkeypatch):
    from tenants import services as tenant_services

    write, tries = tenant_services.usage_record, []

    def down_twice(**row):
        tries.append(row["status"])
        if len(tries) <= 2:
            _no_database()
        return write(**row)

    monkeypatch.setattr("synthesis.services.tenant_services.usage_record", down_twice)
    request_id = str(uuid.uuid4())
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Billed once the database is back"},
                        headers={"X-Request-ID": request_id})
    assert response.status == 200 and response.complete and len(response.body) > 44
    assert tries == ["success"] * 3
    row = UsageRecord.objects.get(request_id=request_id)
    assert row.status == "success" and row.audio_seconds > 0 and row.attempts == 1
