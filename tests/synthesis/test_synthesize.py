import asyncio
import io
import struct
import threading
import time
import uuid
import wave

import pytest
from django.db import connection

from synthesis.audio import UNKNOWN_SIZE
from synthesis.engines import load_engine
from synthesis.engines.base import Prosody
from synthesis.frontend import split_sentences
from tenants.models import UsageRecord
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, VoiceFactory, issue_key
from tests.synthesis.hostile_input import HOSTILE_FIELDS

LONG_TEXT = " ".join(["This sentence keeps the synthesizer busy for a while."] * 20)


def _pcm_of_streamed_wav(body: bytes) -> tuple[int, bytes]:
    assert body[:4] == b"RIFF" and body[8:16] == b"WAVEfmt "
    channels, sample_rate = struct.unpack("<HI", body[22:28])
    bits = struct.unpack("<H", body[34:36])[0]
    assert (channels, bits) == (1, 16)
    assert body[36:40] == b"data"
    return sample_rate, body[44:]


def _error_code(response) -> str:
    return response.json()["error"]["code"]


def _usage(request_id: str) -> UsageRecord:
    return UsageRecord.objects.get(request_id=request_id)


def test_streamed_wav_carries_exactly_the_audio_the_engine_produced(asgi, engine_tap):
    response = asgi.run(asgi.post, "/v1/synthesize", multipart={"text": "Hello from CallWaiting", "voice_id": "default"})
    assert response.status == 200 and response.complete
    assert response.headers["content-type"] == "audio/wav"
    sample_rate, pcm = _pcm_of_streamed_wav(response.body)
    assert sample_rate == 22050 == int(response.headers["x-sample-rate"])
    assert struct.unpack("<I", response.body[40:44])[0] == UNKNOWN_SIZE  # length unknown while streaming
    assert pcm == engine_tap.pcm and len(pcm) > 22050  # over half a second of speech


def test_streamed_audio_matches_calling_the_engine_directly(asgi):
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Hello from CallWaiting"})
    _, pcm = _pcm_of_streamed_wav(response.body)
    direct = []
    loaded = load_engine("espeak")
    loaded.engine.synthesize(
        text="Hello from CallWaiting", language="en", voice_settings={"espeak_voice": "en-us"},
        prosody=Prosody(), emit=lambda chunk: direct.append(chunk) or True,
    )
    direct_pcm = b"".join(direct)
    # eSpeak carries a little state from one utterance to the next, so lengths agree to a few samples.
    assert abs(len(pcm) - len(direct_pcm)) <= 0.01 * len(direct_pcm)


def test_streamed_wav_plays_in_a_standard_decoder(asgi):
    response = asgi.run(asgi.post, "/v1/synthesize", form={"text": "Testing one two three"})
    with wave.open(io.BytesIO(response.body)) as decoded:
        assert decoded.getframerate() == 22050 and decoded.getnchannels() == 1
        frames = decoded.readframes(10**9)  # reads to the end although the header says "unknown"
    assert frames == response.body[44:]


def test_first_bytes_leave_before_the_clip_is_finished(asgi, engine_tap):
    engine_tap.hold_after_first_chunk()
    seen_while_held = {}

    async def on_chunk(response):
        if len(response.chunks) == 1:
            seen_while_held["engine_finished"] = engine_tap.finished.is_set()
            seen_while_held["bytes"] = len(response.body)
            engine_tap.release()

    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": LONG_TEXT}, on_chunk=on_chunk)
    assert seen_while_held["engine_finished"] is False
    assert 44 < seen_while_held["bytes"] < len(response.body) / 10
    assert len(response.chunks) > 10 and response.complete


def test_streaming_false_returns_a_complete_wav_with_exact_sizes(asgi, engine_tap):
    response = asgi.run(asgi.post, "/v1/synthesize", form={"text": "Exact sizes please", "streaming": "false"})
    assert response.status == 200
    riff_size, = struct.unpack("<I", response.body[4:8])
    data_size, = struct.unpack("<I", response.body[40:44])
    assert riff_size == len(response.body) - 8
    assert data_size == len(response.body) - 44 == len(engine_tap.pcm)
    assert int(response.headers["content-length"]) == len(response.body)


def test_raw_pcm_format(asgi, engine_tap):
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Raw audio", "format": "pcm"})
    assert response.headers["content-type"] == "audio/L16"
    assert response.body == engine_tap.pcm


def test_ssml_breaks_become_silence(asgi):
    short = asgi.run(asgi.post, "/v1/synthesize", json={"ssml": '<speak>One. <break time="100ms"/> Two.</speak>'})
    paused = asgi.run(asgi.post, "/v1/synthesize", json={"ssml": '<speak>One. <break time="700ms"/> Two.</speak>'})
    assert short.status == paused.status == 200
    _, short_pcm = _pcm_of_streamed_wav(short.body)
    _, paused_pcm = _pcm_of_streamed_wav(paused.body)
    assert (len(paused_pcm) - len(short_pcm)) / 2 / 22050 == pytest.approx(0.6, abs=0.01)
    assert bytes(2 * int(0.7 * 22050) - 2) in paused_pcm  # a run of digital silence as long as the break


def test_success_writes_one_usage_row(asgi):
    request_id = str(uuid.uuid4())
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Bill me once"}, headers={"X-Request-ID": request_id})
    assert response.headers["x-request-id"] == request_id
    row = _usage(request_id)
    assert row.status == "success" and row.tenant == asgi.tenant and row.voice_id == "default"
    assert row.characters == len("Bill me once") and row.engine == "espeak" and row.language == "en"
    _, pcm = _pcm_of_streamed_wav(response.body)
    assert row.audio_seconds == pytest.approx(len(pcm) / 2 / 22050, abs=1e-3)
    assert 0 < row.time_to_first_audio_ms <= row.total_ms


def test_a_retry_with_the_same_request_id_is_billed_once(asgi):
    request_id = str(uuid.uuid4())
    for _ in range(2):
        response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Retry"}, headers={"X-Request-ID": request_id})
        assert response.status == 200
    assert UsageRecord.objects.filter(tenant=asgi.tenant).count() == 1


def test_client_disconnect_cancels_the_job_and_is_recorded(asgi, engine_tap):
    # The engine waits after its first chunk until the web side has billed the hang-up: released any earlier,
    # eSpeak could make the whole clip before the disconnect is handled on a busy machine.
    engine_tap.hold_after_first_chunk()
    request_id = str(uuid.uuid4())

    def release_once_billed():
        deadline = time.monotonic() + 20
        try:
            while not UsageRecord.objects.filter(request_id=request_id).exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        finally:
            engine_tap.release()
            connection.close()  # this thread's pooled PostgreSQL connection goes back to the pool

    releaser = threading.Thread(target=release_once_billed)
    releaser.start()
    response = asgi.run(
        asgi.post, "/v1/synthesize", json={"text": LONG_TEXT * 4}, headers={"X-Request-ID": request_id},
        disconnect_after_chunks=1,
    )
    releaser.join()
    assert not response.complete
    # The job was cancelled before the exchange ended: the engine finishes at most the sentence in hand.
    deadline = time.monotonic() + 10
    while engine_tap.in_call:
        assert time.monotonic() < deadline, "the engine never stopped"
        time.sleep(0.01)
    sentences = len(split_sentences(LONG_TEXT * 4, 400))
    assert len(engine_tap.sentence_bytes) < sentences / 4  # the worker stopped synthesizing for nobody
    full_clip_bytes = 2 * 22050 * 60  # LONG_TEXT * 4 is minutes of speech
    assert len(engine_tap.pcm) < full_clip_bytes
    row = _usage(request_id)
    assert row.status == "client_disconnected" and row.error_code == "client_disconnected"


@pytest.mark.parametrize(
    "payload, status, code",
    [
        ({"text": ""}, 400, "empty_text"),
        ({"text": "   "}, 400, "empty_text"),
        ({"ssml": "<speak> </speak>"}, 400, "empty_text"),
        ({"text": "x" * 5001}, 413, "text_too_long"),
        ({"text": "hi", "voice_id": "no_such_voice"}, 404, "voice_not_found"),
        ({"text": "hi", "voice_id": "default", "language": "fr"}, 422, "unsupported_language"),
        ({"text": "hi", "ssml": "<speak>hi</speak>"}, 400, "invalid_request"),
        ({"ssml": "<speak>unclosed"}, 400, "invalid_ssml"),
        ({"text": "hi", "streaming": "maybe"}, 400, "invalid_request"),
        ({"text": "hi", "speed": 9}, 400, "invalid_request"),
        ({"text": "hi", "voice_id": "naija_female"}, 503, "voice_unavailable"),
    ],
)
def test_bad_input_gets_a_clear_error_and_a_usage_row(asgi, payload, status, code):
    request_id = str(uuid.uuid4())
    response = asgi.run(asgi.post, "/v1/synthesize", json=payload, headers={"X-Request-ID": request_id})
    assert response.status == status, response.body
    assert _error_code(response) == code
    assert response.json()["error"]["message"]
    row = _usage(request_id)
    assert row.status == "error" and row.error_code == code


@pytest.mark.parametrize("fields, code", HOSTILE_FIELDS)
def test_hostile_values_are_a_400_never_a_500(asgi, fields, code):
    request_id = str(uuid.uuid4())
    response = asgi.run(asgi.post, "/v1/synthesize", json=fields, headers={"X-Request-ID": request_id})
    assert response.status == 400, response.body
    assert _error_code(response) == code and response.json()["error"]["message"]
    assert _usage(request_id).error_code == code


def test_json_nested_too_deeply_is_malformed_not_a_500(asgi):
    for body in (b"[" * 100_000 + b"]" * 100_000, b'{"text": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"):
        response = asgi.run(asgi.post, "/v1/synthesize", body=body, content_type="application/json")
        assert response.status == 400 and _error_code(response) == "malformed_request"


def test_malformed_json_and_unsupported_content_type(asgi):
    malformed = asgi.run(asgi.post, "/v1/synthesize", body=b'{"text": "hi",', content_type="application/json")
    assert malformed.status == 400 and _error_code(malformed) == "malformed_request"
    xml = asgi.run(asgi.post, "/v1/synthesize", body=b"<text>hi</text>", content_type="application/xml")
    assert xml.status == 415 and _error_code(xml) == "unsupported_media_type"


def test_language_defaults_to_the_voices_own(asgi):
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Bonjour tout le monde", "voice_id": "fr_female"})
    assert response.status == 200
    explicit = asgi.run(asgi.post, "/v1/synthesize", json={"text": "Bonjour", "voice_id": "fr_female", "language": "fr-FR"})
    assert explicit.status == 200


def test_a_voice_whose_engine_cannot_load_answers_503_with_the_reason(asgi):
    VoiceFactory(tenant=asgi.tenant, voice_id="studio", engine="xtts", engine_settings={"speaker": "Ana Florence"})
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "hi", "voice_id": "studio"})
    assert response.status == 503 and _error_code(response) == "engine_unavailable"
    assert "XTTS_MODEL_DIR" in response.json()["error"]["message"]


def test_another_tenants_voice_is_404_for_synthesis(asgi):
    VoiceFactory(tenant=TenantFactory(), voice_id="private_clone")
    response = asgi.run(asgi.post, "/v1/synthesize", json={"text": "hi", "voice_id": "private_clone"})
    assert response.status == 404 and _error_code(response) == "voice_not_found"


def test_own_voice_is_usable(asgi):
    VoiceFactory(tenant=asgi.tenant, voice_id="house_voice", engine_settings={"espeak_voice": "en-gb-x-rp"})
    assert asgi.run(asgi.post, "/v1/synthesize", json={"text": "hi", "voice_id": "house_voice"}).status == 200


def test_monthly_quota_refuses_synthesis_past_it(live_voices):
    tenant = TenantFactory(monthly_character_quota=30)
    client = AsgiClient(key=issue_key(tenant))
    run = lambda **kw: asyncio.run(client.post("/v1/synthesize", **kw))  # noqa: E731
    assert run(json={"text": "x" * 20}).status == 200
    refused = run(json={"text": "y" * 11})
    assert refused.status == 402 and _error_code(refused) == "quota_exceeded"
    assert run(json={"text": "z" * 10}).status == 200  # exactly up to the quota is fine


def test_concurrent_streams_beyond_the_tenant_limit_get_429(live_voices, engine_tap):
    tenant = TenantFactory(max_concurrent_streams=1)
    client = AsgiClient(key=issue_key(tenant))
    engine_tap.hold_after_first_chunk()

    async def scenario():
        first = asyncio.create_task(client.post("/v1/synthesize", json={"text": LONG_TEXT}))
        while not engine_tap.held.is_set():
            await asyncio.sleep(0.01)
        second = await client.post("/v1/synthesize", json={"text": "me too"})
        engine_tap.release()
        return await first, second

    first, second = asyncio.run(scenario())
    assert first.status == 200 and first.complete
    assert second.status == 429 and _error_code(second) == "too_many_streams" and second.headers["retry-after"]
    after = asyncio.run(client.post("/v1/synthesize", json={"text": "my turn"}))
    assert after.status == 200  # the slot was given back


def test_another_method_is_a_405_whose_allow_header_names_post(asgi):
    """The 405 came from SynthesizeView, which had no `post` handler (the async `synthesize` serves POST), so its
    Allow header named OPTIONS alone; the view now declares POST (for the API schema too)."""
    response = asgi.run(asgi.get, "/v1/synthesize")
    assert response.status == 405 and _error_code(response) == "method_not_allowed"
    assert "POST" in [method.strip() for method in response.headers["allow"].split(",")]
