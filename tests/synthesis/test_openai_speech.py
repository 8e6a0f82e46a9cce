"""POST /v1/audio/speech: OpenAI's request shape, and OpenAI's own Python SDK pointed at the service."""
import sqlite3

import openai
import pytest

from tenants.models import UsageRecord
from tests.live import start_server
from tests.synthesis.test_formats import decode

SPEECH = {"model": "tts-1", "voice": "alloy", "input": "Please hold, your call is important to us."}


def _usage(**filters) -> UsageRecord:
    return UsageRecord.objects.get(**filters)


@pytest.mark.parametrize(
    ("response_format", "content_type"),
    [("mp3", "audio/mpeg"), ("opus", "audio/ogg"), ("aac", "audio/aac"), ("flac", "audio/flac"),
     ("wav", "audio/wav"), ("pcm", "audio/L16")],
)
def test_each_openai_format_is_24khz_audio_of_the_text(asgi, engine_tap, response_format, content_type):
    response = asgi.run(asgi.post, "/v1/audio/speech", json={**SPEECH, "response_format": response_format})
    assert response.status == 200 and response.complete
    assert response.headers["content-type"] == content_type and response.headers["x-sample-rate"] == "24000"
    decoded, rate = decode(response.body, response_format, 24000)
    assert rate == (48000 if response_format == "opus" else 24000)
    made = len(engine_tap.pcm) / 2 / 22050
    assert made - 0.005 <= len(decoded) / rate <= made + 0.25


def test_mp3_is_the_default_and_openai_voices_map_to_configured_voices(asgi, engine_tap):
    response = asgi.run(asgi.post, "/v1/audio/speech", json=SPEECH, headers={"X-Request-ID": "7d4f8f4e-2b7a-4c1e-9a53-0d1c2a3b4c5d"})
    assert response.status == 200 and response.headers["content-type"] == "audio/mpeg"
    row = _usage(request_id="7d4f8f4e-2b7a-4c1e-9a53-0d1c2a3b4c5d")
    assert (row.voice_id, row.engine, row.status) == ("en_us_female", "espeak", UsageRecord.Status.SUCCESS)
    assert row.characters == len(SPEECH["input"])


def test_a_voice_of_the_tenants_own_may_be_named_directly_or_as_an_id_object(asgi, engine_tap):
    for voice in ("en_gb_male", {"id": "en_gb_male"}):
        response = asgi.run(asgi.post, "/v1/audio/speech", json={**SPEECH, "voice": voice, "response_format": "pcm"})
        assert response.status == 200
    assert set(UsageRecord.objects.values_list("voice_id", flat=True)) == {"en_gb_male"}


@pytest.mark.parametrize(
    ("fields", "status", "code", "named"),
    [
        ({"model": "tts-9"}, 400, "invalid_request", "model"),
        ({"speed": 4.0}, 400, "invalid_request", "speed"),  # OpenAI's range is wider than the engines'
        ({"response_format": "ogg"}, 400, "invalid_request", "response_format"),
        ({"stream_format": "sse"}, 400, "invalid_request", "stream_format"),
        ({"input": ""}, 400, "invalid_request", "input"),
        ({"voice": ["alloy"]}, 400, "invalid_request", "voice"),
        ({"voice": "nobody"}, 404, "voice_not_found", "nobody"),
    ],
)
def test_requests_the_service_cannot_serve_get_the_one_error_shape(asgi, fields, status, code, named):
    response = asgi.run(asgi.post, "/v1/audio/speech", json={**SPEECH, **fields})
    assert response.status == status
    assert response.json()["error"]["code"] == code and named in response.json()["error"]["message"]


def test_instructions_are_accepted_and_change_nothing(asgi, engine_tap):
    plain = asgi.run(asgi.post, "/v1/audio/speech", json={**SPEECH, "response_format": "pcm"})
    styled = asgi.run(asgi.post, "/v1/audio/speech",
                      json={**SPEECH, "response_format": "pcm", "instructions": "Speak like a pirate."})
    assert plain.status == styled.status == 200
    assert abs(len(plain.body) - len(styled.body)) <= 0.01 * len(plain.body)  # eSpeak varies by a few samples


def test_a_key_without_the_synthesize_scope_is_refused(live_voices, asgi):
    from tests.asgi import AsgiClient
    from tests.factories import issue_key

    client = AsgiClient(key=issue_key(asgi.tenant, scopes=["voices"]))
    response = asgi.run(client.post, "/v1/audio/speech", json=SPEECH)
    assert response.status == 403 and response.json()["error"]["code"] == "missing_scope"


# --- OpenAI's SDK, unchanged, against a running server ------------------------------------------------------------
@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("openai"))


def _client(server, key=None) -> openai.OpenAI:
    return openai.OpenAI(api_key=key or server["key"], base_url=f"http://127.0.0.1:{server['port']}/v1", max_retries=0)


def test_the_openai_sdk_gets_speech_it_can_write_to_a_file(server, tmp_path):
    speech = _client(server).audio.speech.create(model="tts-1", voice="nova", input="Thank you for calling.")
    path = tmp_path / "speech.mp3"
    speech.write_to_file(path)
    decoded, rate = decode(path.read_bytes(), "mp3", 24000)
    assert rate == 24000 and len(decoded) / rate > 0.5
    with sqlite3.connect(server["db"]) as database:
        [(voice_id, status)] = database.execute("SELECT voice_id, status FROM tenants_usagerecord").fetchall()
    assert (voice_id, status) == ("en_us_female", "success")


def test_the_openai_sdk_streams_the_response_as_it_is_made(server):
    text = " ".join(["This sentence keeps the synthesizer busy for a while."] * 10)
    with _client(server).audio.speech.with_streaming_response.create(
        model="tts-1", voice="onyx", input=text, response_format="pcm",
    ) as response:
        chunks = [chunk for chunk in response.iter_bytes(4096)]
    assert len(chunks) > 10 and len(b"".join(chunks)) / 2 / 24000 > 10  # over ten seconds of 24 kHz audio


def test_the_openai_sdk_raises_its_own_errors_with_the_services_message(server):
    with pytest.raises(openai.AuthenticationError) as refused:
        _client(server, key="sk_test_not-a-real-key").audio.speech.create(model="tts-1", voice="alloy", input="hi")
    assert refused.value.status_code == 401
    with pytest.raises(openai.BadRequestError) as bad:
        _client(server).audio.speech.create(model="tts-1", voice="alloy", input="hi", speed=3.0)
    assert bad.value.body["code"] == "invalid_request" and "speed" in bad.value.body["message"]
