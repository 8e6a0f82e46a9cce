import uuid

import pytest
from django.contrib.auth.models import User

from synthesis import heartbeats
from tenants.keys import operator_token_matches
from tests.factories import issue_key


def test_health_needs_no_key_and_reports_engines_and_the_embedded_worker(asgi):
    asgi.key = None
    response = asgi.run(asgi.get, "/v1/health")
    body = response.json()
    assert response.status == 200
    assert body["database"]["ok"] is True
    assert body["version"]
    espeak = body["engines"]["espeak"]
    assert espeak["available"] is True and espeak["sample_rate"] == 22050 and "en" in espeak["languages"]
    xtts = body["engines"]["xtts"]
    assert xtts["available"] is False and "XTTS_MODEL_DIR" in xtts["reason"]
    assert body["status"] == "degraded"  # xtts is configured but cannot load here
    assert len(body["workers"]) == 1 and body["workers"][0]["engines"] == ["espeak"]


def test_health_is_unhealthy_503_when_no_worker_serves_any_engine(asgi, settings):
    settings.TTS_EMBEDDED_WORKER = False
    response = asgi.run(asgi.get, "/v1/health")
    assert response.status == 503
    body = response.json()
    assert body["status"] == "unhealthy" and body["workers"] == []
    assert "no live model worker" in body["engines"]["espeak"]["reason"]


def test_health_is_ok_when_every_configured_engine_is_served(asgi, settings):
    settings.TTS_ENGINES = ["espeak"]
    assert asgi.run(asgi.get, "/v1/health").json()["status"] == "ok"


def test_no_worker_gives_503_in_bounded_time(asgi, settings):
    settings.TTS_EMBEDDED_WORKER = False
    settings.TTS_JOB_ACCEPT_TIMEOUT = 0.5
    # A heartbeat left by a worker that has since stopped reading jobs: the web side still must not hang.
    heartbeats.worker_heartbeat(
        worker_id="stale", info={"engines": {"espeak": {"available": True}}, "capacity": 1, "load": 0}
    )
    request_id = str(uuid.uuid4())
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "anyone there?"}, headers={"X-Request-ID": request_id})
    assert response.status == 503
    assert response.json()["error"]["code"] == "no_worker_available"


OPERATOR_TOKEN = "operator-token-for-the-tests"


def test_metrics_in_prometheus_format_for_the_operator_token(asgi, settings):
    settings.METRICS_TOKEN = OPERATOR_TOKEN
    asgi.run(asgi.post, "/v1/synthesize", json={"text": "Count me"})
    asgi.run(asgi.post, "/v1/synthesize", json={"text": "hi", "voice_id": "nope"})
    asgi.key = OPERATOR_TOKEN
    response = asgi.run(asgi.get, "/v1/metrics")
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.body.decode()
    lines = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}
    assert lines['tts_requests_total{engine="espeak",status="success"}'] >= 1
    assert lines['tts_errors_total{code="voice_not_found",engine="none"}'] >= 1
    assert lines['tts_time_to_first_audio_seconds_count{engine="espeak"}'] >= 1
    assert lines['tts_request_duration_seconds_count{engine="espeak"}'] >= 1
    assert lines['tts_active_streams{engine="espeak"}'] == 0
    assert lines["tts_workers_live"] == 1
    assert "# TYPE tts_time_to_first_audio_seconds histogram" in text


@pytest.mark.parametrize("metrics_token", [OPERATOR_TOKEN, ""])
def test_a_tenant_key_with_every_scope_cannot_read_the_service_metrics(asgi, settings, metrics_token):
    settings.METRICS_TOKEN = metrics_token
    asgi.key = issue_key(asgi.tenant, kind="admin", scopes=["synthesize", "voices", "upload", "admin"])
    response = asgi.run(asgi.get, "/v1/metrics")
    assert response.status == 403
    error = response.json()["error"]
    assert error["code"] == "operator_only"
    assert "operators" in error["message"] and "/v1/tenant/stats" in error["message"]
    assert b"tts_requests_total" not in response.body


@pytest.mark.parametrize("presented", ["wrong-token", OPERATOR_TOKEN + "x", OPERATOR_TOKEN[:-1], ""])
def test_anything_but_the_operator_token_is_refused(asgi, settings, presented):
    settings.METRICS_TOKEN = OPERATOR_TOKEN
    asgi.key = presented or None
    response = asgi.run(asgi.get, "/v1/metrics")
    expected = (401, "authentication_required") if not presented else (403, "operator_only")
    assert (response.status, response.json()["error"]["code"]) == expected


def test_an_unset_metrics_token_matches_nothing(settings):
    settings.METRICS_TOKEN = ""
    assert not operator_token_matches("")
    settings.METRICS_TOKEN = OPERATOR_TOKEN
    assert operator_token_matches(OPERATOR_TOKEN) and not operator_token_matches(OPERATOR_TOKEN.upper())


def test_a_staff_session_reads_the_metrics_and_a_plain_user_does_not(live_voices, client, settings):
    settings.METRICS_TOKEN = ""
    staff = User.objects.create_user("ops", password="x", is_staff=True)
    plain = User.objects.create_user("someone", password="x")
    client.force_login(plain)
    refused = client.get("/v1/metrics")
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "operator_only"
    client.force_login(staff)
    response = client.get("/v1/metrics")
    assert response.status_code == 200 and b"tts_workers_live" in response.content


def test_health_is_ok_with_xtts_loaded_and_voices_report_its_capabilities(asgi, xtts_enabled):
    asgi.key = None
    body = asgi.run(asgi.get, "/v1/health").json()
    assert body["status"] == "ok"
    xtts = body["engines"]["xtts"]
    assert xtts["available"] is True and xtts["sample_rate"] == 24000 and xtts["supports_cloning"] is True
    assert "en" in xtts["languages"]
