"""The phrase cache: a repeated phrase served without a model worker, keyed on all the audio depends on,
bounded, billed as the tenant's plan says (synthesis/phrase_cache.py)."""
import threading
import time
import uuid

import pytest
from django.conf import settings

from synthesis import metrics, phrase_cache
from tenants.models import UsageRecord
from tests.factories import VoiceFactory

PHRASE = "Please hold, your call is important to us."
# Several sentences, each an engine call.
SENTENCES = " ".join(["Thank you for calling. An agent will be with you shortly."] * 4)


def _say(asgi, headers=None, **fields):
    fields = {"text": PHRASE, "cache": True, **fields}
    response = asgi.run(asgi.post, "/v1/synthesize", json=fields, headers=headers)
    assert response.status == 200, response.body
    return response


def _engine_calls(engine_tap) -> int:
    return len(engine_tap.sentence_bytes)


def _hits() -> float:
    return metrics.REGISTRY.get_sample_value("tts_phrase_cache_hits_total", {"engine": "espeak"}) or 0


def _misses() -> float:
    return metrics.REGISTRY.get_sample_value("tts_phrase_cache_misses_total", {"engine": "espeak"}) or 0


def test_a_repeated_phrase_is_served_from_the_cache_without_a_worker(asgi, engine_tap):
    hits, misses = _hits(), _misses()
    first = _say(asgi)
    calls = _engine_calls(engine_tap)
    second = _say(asgi, format="pcm")  # one cached clip serves every format
    assert _engine_calls(engine_tap) == calls  # no engine ran: no job reached a worker
    assert second.headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID != first.headers["x-worker-id"]
    assert second.body == first.body[44:]  # the same audio, less the WAV header
    assert second.headers["x-sample-rate"] == first.headers["x-sample-rate"]
    assert (_hits() - hits, _misses() - misses) == (1, 1)
    rows = list(UsageRecord.objects.filter(tenant=asgi.tenant).order_by("created_at"))
    assert [row.cached for row in rows] == [False, True]
    assert rows[1].status == "success" and rows[1].characters == rows[0].characters
    assert rows[1].audio_seconds == rows[0].audio_seconds


def test_a_hit_collected_whole_has_the_same_audio(asgi, engine_tap):
    first = _say(asgi, streaming=False)
    second = _say(asgi, streaming=False)
    assert second.body == first.body and second.headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID


def test_without_cache_nothing_is_cached(asgi, engine_tap):
    for _ in range(2):
        response = asgi.run(asgi.post, "/v1/synthesize", json={"text": PHRASE})
        assert response.status == 200 and response.headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID
    assert phrase_cache.store().stored_bytes == 0
    assert not UsageRecord.objects.filter(cached=True).exists()


def test_the_tenant_setting_turns_it_on_and_a_request_can_opt_out(asgi, engine_tap):
    asgi.tenant.phrase_cache = True
    asgi.tenant.save()
    asgi.run(asgi.post, "/v1/synthesize", json={"text": PHRASE})
    hit = asgi.run(asgi.post, "/v1/synthesize", json={"text": PHRASE})
    assert hit.headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID
    calls = _engine_calls(engine_tap)
    bypass = _say(asgi, cache=False)
    assert bypass.headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID and _engine_calls(engine_tap) > calls


@pytest.mark.parametrize("change", [
    {"speed": 1.5}, {"voice_id": "en_us_female"}, {"language": "en-GB"}, {"text": PHRASE + " Thanks."},
    {"text": "", "ssml": f"<speak><prosody pitch='+20%'>{PHRASE}</prosody></speak>"},
])
def test_anything_that_changes_the_audio_is_a_miss(asgi, engine_tap, change):
    _say(asgi)
    calls = _engine_calls(engine_tap)
    changed = _say(asgi, **change)
    assert changed.headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID and _engine_calls(engine_tap) > calls
    again = _say(asgi, **change)
    assert again.headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID  # and is cached in turn


def test_another_tenant_never_gets_a_tenants_cached_phrase(asgi, engine_tap):
    from tests.asgi import AsgiClient
    from tests.factories import TenantFactory, issue_key

    _say(asgi)
    other = AsgiClient(key=issue_key(TenantFactory()))
    response = asgi.run(other.post, "/v1/synthesize", json={"text": PHRASE, "cache": True})
    assert response.headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID


def test_a_changed_voice_does_not_serve_its_old_audio(asgi, engine_tap):
    voice = VoiceFactory(tenant=asgi.tenant, voice_id="front_desk")
    _say(asgi, voice_id="front_desk")
    voice.engine_settings = {"espeak_voice": "en-us+f3"}
    voice.save()
    assert _say(asgi, voice_id="front_desk").headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID


def test_deleting_a_voice_deletes_its_cached_audio(asgi, engine_tap):
    VoiceFactory(tenant=asgi.tenant, voice_id="front_desk")
    _say(asgi, voice_id="default")
    kept = phrase_cache.store().stored_bytes
    _say(asgi, voice_id="front_desk")
    _say(asgi, voice_id="front_desk", text="Goodbye.")
    assert phrase_cache.store().stored_bytes > kept
    response = asgi.run(asgi.request, "DELETE", "/v1/voices/front_desk")
    assert response.status == 204
    assert phrase_cache.store().stored_bytes == kept  # the other voice's phrase stays
    assert _say(asgi, voice_id="default").headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID
    VoiceFactory(tenant=asgi.tenant, voice_id="front_desk")  # the same id again: a new voice
    assert _say(asgi, voice_id="front_desk").headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID


def test_the_byte_bound_evicts_the_least_recently_used(asgi, engine_tap, settings):
    first = _say(asgi, text="One.")
    clip_bytes = phrase_cache.store().stored_bytes
    settings.TTS_PHRASE_CACHE_BYTES = int(clip_bytes * 2.5)  # room for two clips of about this size
    _say(asgi, text="Two.")
    assert _say(asgi, text="One.").headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID  # "One." used last
    _say(asgi, text="Six.")  # evicts "Two.", the least recently used
    assert phrase_cache.store().stored_bytes <= settings.TTS_PHRASE_CACHE_BYTES
    assert _say(asgi, text="One.").body == first.body
    assert _say(asgi, text="Two.").headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID


def test_a_clip_over_the_bound_or_a_long_text_is_not_cached(asgi, engine_tap, settings):
    settings.TTS_PHRASE_CACHE_MAX_CHARS = 10
    _say(asgi)
    assert phrase_cache.store().stored_bytes == 0
    settings.TTS_PHRASE_CACHE_MAX_CHARS = 500
    settings.TTS_PHRASE_CACHE_BYTES = 1000  # less than any clip
    _say(asgi)
    assert phrase_cache.store().stored_bytes == 0
    assert _say(asgi).headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID


def test_a_cancelled_stream_stores_nothing(asgi, engine_tap):
    from tests.synthesis.test_websocket import TIMEOUT, _open, _synthesize

    engine_tap.hold_after_first_chunk()  # until the barge-in: the clip cannot be finished before it
    request_id = str(uuid.uuid4())

    async def barge_in():
        ws = await _open(asgi.key)
        try:
            await _synthesize(ws, text=SENTENCES, cache=True, request_id=request_id)
            assert (await ws.receive_json_from(TIMEOUT))["type"] == "start"
            assert isinstance(await ws.receive_from(TIMEOUT), bytes)
            await ws.send_json_to({"type": "cancel"})
            assert (await ws.receive_json_from(TIMEOUT))["type"] == "cancelled"
        finally:
            engine_tap.release()
        await ws.disconnect(timeout=TIMEOUT)

    asgi.run(barge_in)
    assert engine_tap.finished.wait(10)
    assert UsageRecord.objects.get(request_id=request_id).status == "client_disconnected"
    assert phrase_cache.store().stored_bytes == 0
    assert _say(asgi, text=SENTENCES).headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID


def test_a_failed_stream_stores_nothing(asgi, engine_tap, settings):
    settings.TTS_MAX_AUDIO_SECONDS = 0.5  # the phrase is longer: cut as audio_too_long
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": PHRASE, "cache": True, "streaming": False})
    assert response.status == 413
    settings.TTS_MAX_AUDIO_SECONDS = 900
    assert phrase_cache.store().stored_bytes == 0
    assert _say(asgi).headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID


@pytest.mark.parametrize("billed", [True, False])
def test_cached_characters_count_against_the_quota_as_the_tenant_says(asgi, engine_tap, billed):
    _say(asgi)
    characters = UsageRecord.objects.get(tenant=asgi.tenant).characters
    asgi.tenant.monthly_character_quota = characters  # used up by the first request
    asgi.tenant.phrase_cache_billed = billed
    asgi.tenant.save()
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": PHRASE, "cache": True})
    stats = asgi.run(asgi.get, "/v1/tenant/stats").json()
    if billed:
        assert response.status == 402 and response.json()["error"]["code"] == "quota_exceeded"
        assert stats["quota"]["used_this_month"] == characters
    else:
        assert response.status == 200 and response.headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID
        assert stats["quota"]["used_this_month"] == characters  # the hit was free
        assert stats["totals"]["cached"] == 1 and stats["totals"]["cached_characters"] == characters
        assert stats["totals"]["requests"] == 2 and stats["totals"]["characters"] == 2 * characters
    assert stats["quota"]["cached_characters_billed"] is billed
    # A miss (another phrase) is billed either way.
    refused = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Something new.", "cache": True})
    assert refused.status == 402


def test_a_retry_is_billed_once_whether_or_not_it_hits(asgi, engine_tap):
    request_id = str(uuid.uuid4())
    _say(asgi, headers={"X-Request-ID": request_id})
    retry = _say(asgi, headers={"X-Request-ID": request_id}, cache=None)  # `cache` is not part of the request
    assert retry.status == 200
    assert UsageRecord.objects.filter(tenant=asgi.tenant).count() == 1


def test_the_websocket_serves_a_cached_phrase(asgi, engine_tap):
    from tests.synthesis.test_websocket import _say as say_on_websocket

    first_start, first_frames, _ = asgi.run(say_on_websocket, asgi.key, text=PHRASE, cache=True)
    calls = _engine_calls(engine_tap)
    start, frames, done = asgi.run(say_on_websocket, asgi.key, text=PHRASE, cache=True)
    assert start["worker_id"] == phrase_cache.CACHE_WORKER_ID and _engine_calls(engine_tap) == calls
    assert b"".join(frames) == b"".join(first_frames) and done["type"] == "done"
    assert UsageRecord.objects.get(request_id=start["request_id"]).cached


# --- the stores -------------------------------------------------------------------------------------------------
def _stores():
    stores = [pytest.param(phrase_cache.LocalStore, id="local")]
    if settings.REDIS_URL:
        stores.append(pytest.param(lambda: phrase_cache.RedisStore(settings.REDIS_URL), id="redis"))
    return stores


@pytest.fixture(params=_stores())
def store(request):
    made = request.param()
    made.clear()
    yield made
    made.clear()


def test_a_store_keeps_whole_clips_within_its_bound(store):
    for index in range(10):
        store.put(f"k{index}", bytes([index]) * 1000, voice="1", bound=3500, ttl=60)
    assert store.stored_bytes == 3000
    assert [store.get(f"k{index}") is not None for index in range(10)] == [False] * 7 + [True] * 3
    assert store.get("k9") == bytes([9]) * 1000
    assert store.put("huge", b"x" * 4000, voice="1", bound=3500, ttl=60) is None and store.get("huge") is None


def test_an_entry_expires_after_its_ttl(store):
    store.put("soon", b"x" * 10, voice="1", bound=1000, ttl=0.05)
    store.put("later", b"y" * 10, voice="1", bound=1000, ttl=60)
    time.sleep(0.1)  # the TTL itself is what is tested
    assert store.get("soon") is None and store.get("later") == b"y" * 10
    assert store.stored_bytes == 10


def test_forgetting_a_voice_removes_only_its_entries(store):
    store.put("a", b"a" * 10, voice="1", bound=1000, ttl=60)
    store.put("b", b"b" * 10, voice="2", bound=1000, ttl=60)
    assert store.forget_voice("1") == 1
    assert store.get("a") is None and store.get("b") == b"b" * 10 and store.stored_bytes == 10


def test_racing_writers_leave_whole_entries_and_an_exact_byte_count(store):
    clip = phrase_cache.Clip(22050, (b"\x01\x00" * 300, b"\x02\x00" * 200))
    torn = []

    def write(offset):
        for index in range(40):
            key = f"k{(index + offset) % 25}"  # writers race on the same keys too
            store.put(key, clip.encode(), voice=str(index % 3), bound=10 * len(clip.encode()), ttl=60)
            blob = store.get(key)
            if blob is not None and phrase_cache.Clip.decode(blob) != clip:
                torn.append(key)

    threads = [threading.Thread(target=write, args=(offset,)) for offset in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not torn
    present = [key for key in (f"k{index}" for index in range(25)) if store.get(key) is not None]
    assert store.stored_bytes == len(present) * len(clip.encode()) <= 10 * len(clip.encode())


def test_a_hit_is_served_while_the_engine_is_too_busy_for_a_new_job(asgi, engine_tap, monkeypatch):
    from synthesis import services

    _say(asgi)
    monkeypatch.setattr(services._EngineShare, "take", lambda self, capacity: (8, 2))  # over its fair share
    assert _say(asgi).headers["x-worker-id"] == phrase_cache.CACHE_WORKER_ID
    refused = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Something new.", "cache": True})
    assert refused.status == 429 and refused.json()["error"]["code"] == "too_many_streams"


def test_a_new_engine_version_is_a_miss_and_an_old_worker_stores_nothing_under_it(asgi, engine_tap, monkeypatch):
    from synthesis import heartbeats, services

    _say(asgi)
    serving = heartbeats.engine_availability

    def upgraded():  # the workers announce a new eSpeak NG; this process's embedded worker still runs the old one
        return {name: {**state, "version": "espeak-ng 9.9"} for name, state in serving().items()}

    monkeypatch.setattr(services.heartbeats, "engine_availability", upgraded)
    stored = phrase_cache.store().stored_bytes
    for _ in range(2):
        assert _say(asgi).headers["x-worker-id"] != phrase_cache.CACHE_WORKER_ID
    assert phrase_cache.store().stored_bytes == stored  # made by the old version: not kept as the new one's


def test_operators_turn_it_on_and_set_its_billing_per_tenant_in_admin(admin_client, tenant):
    page = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/change/").content.decode()
    assert 'name="phrase_cache"' in page and 'name="phrase_cache_billed"' in page
