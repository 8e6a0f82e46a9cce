"""X-Request-ID / request_id: the tenant's own idempotency key, never a way around billing."""
import uuid

import pytest
from asgiref.sync import async_to_sync
from django.test import override_settings

from synthesis.dispatch import DispatchError
from tenants.models import UsageRecord
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, issue_key

pytestmark = pytest.mark.django_db(transaction=True)


def _post(client, text, request_id):
    return async_to_sync(client.post)("/v1/synthesize", json={"text": text}, headers={"X-Request-ID": request_id})


def test_a_reused_id_with_a_different_request_is_refused_and_the_first_bill_stands(asgi):
    request_id = str(uuid.uuid4())
    assert _post(asgi, "a", request_id).status == 200
    refused = _post(asgi, "Much longer text that would cost a lot more. " * 20, request_id)
    assert refused.status == 409
    assert refused.json()["error"]["code"] == "request_id_conflict"
    row = UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id)
    assert (row.characters, row.status, row.attempts) == (1, "success", 1)


def test_the_same_id_is_each_tenants_own(asgi, live_voices):
    request_id = str(uuid.uuid4())
    assert _post(asgi, "First tenant's words.", request_id).status == 200
    other = TenantFactory()
    response = _post(AsgiClient(key=issue_key(other)), "Another tenant, another request entirely.", request_id)
    assert response.status == 200 and response.complete
    theirs = UsageRecord.objects.get(tenant=other, request_id=request_id)
    assert theirs.characters == len("Another tenant, another request entirely.") and theirs.status == "success"
    assert UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id).characters == len("First tenant's words.")


def test_a_true_retry_is_served_and_billed_once_up_to_the_attempt_limit(asgi):
    request_id = str(uuid.uuid4())
    with override_settings(TTS_REQUEST_MAX_ATTEMPTS=2):
        assert _post(asgi, "Please hold.", request_id).status == 200
        assert _post(asgi, "Please hold.", request_id).status == 200
        third = _post(asgi, "Please hold.", request_id)
    assert third.status == 409 and third.json()["error"]["code"] == "too_many_attempts"
    row = UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id)
    assert (row.characters, row.attempts, row.status) == (len("Please hold."), 2, "success")
    assert UsageRecord.objects.filter(tenant=asgi.tenant).count() == 1


def test_a_retry_after_a_failure_is_billed_when_it_succeeds(asgi):
    request_id = str(uuid.uuid4())
    failed = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Hello", "voice_id": "nobody"},
                      headers={"X-Request-ID": request_id})
    assert failed.status == 404
    assert UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id).status == "error"
    assert _post(asgi, "Hello", request_id).status == 409  # a different request (another voice) under that id
    retry = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Hello", "voice_id": "nobody"},
                     headers={"X-Request-ID": request_id})
    assert retry.status == 404
    row = UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id)
    assert (row.status, row.attempts) == ("error", 2)


def test_a_duplicate_still_in_flight_is_refused(asgi, engine_tap):
    engine_tap.hold_after_first_chunk()
    request_id = str(uuid.uuid4())
    answers = {}

    async def on_chunk(response):
        if "duplicate" not in answers:
            answers["duplicate"] = await asgi.post(
                "/v1/synthesize", json={"text": "Hold the line, please."}, headers={"X-Request-ID": request_id})
            engine_tap.release()

    first = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Hold the line, please."},
                     headers={"X-Request-ID": request_id}, on_chunk=on_chunk)
    assert first.status == 200 and first.complete
    assert answers["duplicate"].status == 409
    assert answers["duplicate"].json()["error"]["code"] == "request_in_progress"
    row = UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id)
    assert (row.status, row.attempts) == ("success", 1)


def test_a_websocket_request_id_is_checked_the_same_way(asgi):
    from tests.synthesis.test_websocket import _refused, _say

    request_id = str(uuid.uuid4())
    _, frames, done = async_to_sync(_say)(asgi.key, text="a", request_id=request_id)
    assert frames and done["type"] == "done"
    code = async_to_sync(_refused)(asgi.key, 4409, {"type": "synthesize", "text": "Something else entirely.",
                                                    "request_id": request_id})
    assert code == "request_id_conflict"
    row = UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id)
    assert (row.characters, row.status, row.attempts) == (1, "success", 1)


def test_pauses_that_would_make_hours_of_audio_are_refused_up_front(asgi):
    ssml = "<speak>" + '<break time="10s"/>a' * 999 + "</speak>"
    response = asgi.run(asgi.post, "/v1/synthesize", json={"ssml": ssml})
    assert response.status == 413
    assert response.json()["error"]["code"] == "audio_too_long"
    assert "9990 s" in response.json()["error"]["message"]


@override_settings(TTS_MAX_AUDIO_SECONDS=1.0)
def test_speech_past_the_audio_limit_is_cut_and_not_billed_as_a_success(asgi):
    from tests.synthesis.test_synthesize import LONG_TEXT

    collected = asgi.run(asgi.post, "/v1/synthesize", json={"text": LONG_TEXT, "streaming": False},
                         headers={"X-Request-ID": (collected_id := str(uuid.uuid4()))})
    assert collected.status == 413 and collected.json()["error"]["code"] == "audio_too_long"
    # Streamed, the response fails after its headers: the server aborts the transfer (never a short file that
    # looks complete; tests/test_topology.py shows that under daphne).
    with pytest.raises(DispatchError, match="more than 1 s of audio"):
        asgi.run(asgi.post, "/v1/synthesize", json={"text": LONG_TEXT},
                 headers={"X-Request-ID": (streamed_id := str(uuid.uuid4()))})
    for request_id in (collected_id, streamed_id):
        row = UsageRecord.objects.get(tenant=asgi.tenant, request_id=request_id)
        assert (row.status, row.error_code) == ("error", "audio_too_long")


@override_settings(TTS_RESPONSE_MEMORY_BYTES=4096)
def test_a_collected_clip_spills_to_disk_and_arrives_whole_with_its_length(asgi):
    import io
    import wave

    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Hello from CallWaiting.", "streaming": False})
    assert response.status == 200 and response.complete
    assert int(response.headers["content-length"]) == len(response.body) > 4096
    with wave.open(io.BytesIO(response.body)) as clip:
        assert clip.getnframes() * 2 == len(response.body) - 44
