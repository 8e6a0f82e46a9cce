"""Voice cloning end to end: upload -> processing -> ready -> streamed synthesis with that voice."""
import io
from datetime import timedelta

import av
import numpy as np
import pytest
import torch
from django.core.files.storage import default_storage
from django.utils import timezone

from synthesis.engines import load_engine
from tests.factories import TenantFactory, issue_key, voice_like
from voices.audio import encode_wav
from voices.models import Voice
from voices.services import voice_process, voices_requeue_stale


def _wav(seconds=4.0, **kwargs) -> bytes:
    return encode_wav(voice_like(seconds, **kwargs), 22050)


def _mp3(seconds=4.0) -> bytes:
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=22050)
        frame = av.AudioFrame.from_ndarray(voice_like(seconds).reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 22050
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            container.mux(packet)
    return buffer.getvalue()


class _Upload(io.BytesIO):
    def __init__(self, data: bytes, name: str):
        super().__init__(data)
        self.name = name


def _upload(asgi, data: bytes, filename="ref.wav", **fields):
    form = {"voice_id": "my_voice", "name": "My Voice", "description": "cloned", "language": "en", **fields}
    return asgi.run(asgi.post, "/v1/voices/upload", multipart={**form, "audio_file": _Upload(data, filename)})


def _code(response) -> str:
    return response.json()["error"]["code"]


def _stored_files(media) -> list:
    return sorted(p.relative_to(media) for p in media.rglob("*") if p.is_file()) if media.exists() else []


@pytest.fixture
def cloning(asgi, xtts_enabled, monkeypatch):
    from callwaiting.celery import app

    # Voice processing runs in-process here, as in the embedded mode; separate Celery workers are exercised
    # by the production-topology tests.
    monkeypatch.setitem(app.conf, "task_always_eager", True)
    asgi.media = xtts_enabled
    return asgi


@pytest.mark.parametrize("make, filename", [(_wav, "ref.wav"), (_mp3, "ref.mp3")])
def test_upload_processes_to_ready_and_the_voice_streams(cloning, make, filename):
    response = _upload(cloning, make(), filename)
    assert response.status == 202, response.body
    body = response.json()
    assert body["voice_id"] == "my_voice" and body["status"] == "processing" and body["engine"] == "xtts"

    voice = cloning.run(cloning.get, "/v1/voices/my_voice").json()
    assert voice["status"] == "ready" and voice["available"] is True, voice
    stored = Voice.objects.get(voice_id="my_voice")
    assert sorted(str(p).rsplit("/", 1)[-1] for p in _stored_files(cloning.media)) == ["latents.pt", "reference.wav"]
    assert stored.source_audio == "" and default_storage.exists(stored.engine_settings["latents"])

    torch.manual_seed(5)
    synthesized = cloning.run(cloning.post, "/v1/synthesize", json={"text": "Hello from my voice.", "voice_id": "my_voice"})
    assert synthesized.status == 200 and synthesized.complete
    assert synthesized.headers["x-sample-rate"] == "24000"
    assert synthesized.body[:4] == b"RIFF" and len(synthesized.body) > 44 + 512
    assert voice["languages"] == ["en", "es", "fr", "de", "it", "pt"]  # a cloned XTTS voice is multilingual
    french = cloning.run(cloning.post, "/v1/synthesize", json={"text": "Bonjour.", "voice_id": "my_voice", "language": "fr"})
    assert french.status == 200


def test_latents_are_computed_exactly_once(cloning):
    engine = load_engine("xtts").engine
    before = engine.conditioning_computations
    _upload(cloning, _wav())
    assert engine.conditioning_computations == before + 1
    for seed in (1, 2):
        torch.manual_seed(seed)
        assert cloning.run(cloning.post, "/v1/synthesize", json={"text": "Hi.", "voice_id": "my_voice"}).status == 200
    assert engine.conditioning_computations == before + 1


def test_the_voice_is_listed_for_its_tenant_only(cloning):
    _upload(cloning, _wav())
    listed = {v["voice_id"]: v for v in cloning.run(cloning.get, "/v1/voices").json()["voices"]}
    assert listed["my_voice"]["is_preloaded"] is False and listed["my_voice"]["status"] == "ready"
    stranger = TenantFactory()
    cloning.key = issue_key(stranger)
    assert "my_voice" not in {v["voice_id"] for v in cloning.run(cloning.get, "/v1/voices").json()["voices"]}
    for method in ("get", "patch", "delete"):
        response = cloning.run(cloning.request, method.upper(), "/v1/voices/my_voice", json={"name": "x"})
        assert response.status == 404 and _code(response) == "voice_not_found"
    response = cloning.run(cloning.post, "/v1/synthesize", json={"text": "hi", "voice_id": "my_voice"})
    assert response.status == 404


def test_patch_renames_and_delete_removes_the_voice_and_its_files(cloning):
    _upload(cloning, _wav())
    patched = cloning.run(cloning.request, "PATCH", "/v1/voices/my_voice", json={"name": "Renamed", "description": "new"})
    assert patched.status == 200 and patched.json()["name"] == "Renamed" and patched.json()["description"] == "new"
    assert _stored_files(cloning.media)
    deleted = cloning.run(cloning.request, "DELETE", "/v1/voices/my_voice")
    assert deleted.status == 204
    assert _stored_files(cloning.media) == [] and not Voice.objects.filter(voice_id="my_voice").exists()
    assert cloning.run(cloning.get, "/v1/voices/my_voice").status == 404


def test_preloaded_voices_cannot_be_deleted_or_changed(cloning):
    assert cloning.run(cloning.request, "DELETE", "/v1/voices/default").status == 403
    response = cloning.run(cloning.request, "PATCH", "/v1/voices/default", json={"name": "Mine now"})
    assert response.status == 403 and _code(response) == "voice_preloaded"
    assert cloning.run(cloning.get, "/v1/voices/default").json()["name"] != "Mine now"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"this is not audio at all" * 100, "not a readable audio file"),
        (_wav()[: len(_wav()) // 2], "ends before its audio data"),
        (_wav(seconds=1.0), "at least 3 s"),
        (_wav(seconds=70.0), "at most 60 s"),
        (encode_wav(np.zeros(22050 * 4, dtype=np.float32), 22050), "silent"),
        (encode_wav(np.sign(voice_like()) * 1.0, 22050), "clipped"),
    ],
)
def test_bad_audio_fails_the_voice_with_a_reason_and_leaves_no_files(cloning, data, reason):
    response = _upload(cloning, data)
    assert response.status == 202
    voice = cloning.run(cloning.get, "/v1/voices/my_voice").json()
    assert voice["status"] == "failed" and reason in voice["status_reason"]
    assert _stored_files(cloning.media) == []
    synth = cloning.run(cloning.post, "/v1/synthesize", json={"text": "hi", "voice_id": "my_voice"})
    assert synth.status == 409 and _code(synth) == "voice_not_ready"
    retry = _upload(cloning, _wav())  # the id of a failed voice can be used again
    assert retry.status == 202 and cloning.run(cloning.get, "/v1/voices/my_voice").json()["status"] == "ready"


def test_duplicate_and_preloaded_ids_are_409(cloning):
    assert _upload(cloning, _wav()).status == 202
    duplicate = _upload(cloning, _wav())
    assert duplicate.status == 409 and _code(duplicate) == "voice_exists"
    preloaded = _upload(cloning, _wav(), voice_id="default")
    assert preloaded.status == 409 and _code(preloaded) == "voice_exists"
    assert Voice.objects.filter(tenant=cloning.tenant).count() == 1


def test_too_large_is_refused_before_the_body_is_read(cloning, settings):
    settings.TTS_MAX_UPLOAD_BYTES = 50_000
    response = _upload(cloning, _wav())  # ~176 kB declared in Content-Length
    assert response.status == 413 and _code(response) == "upload_too_large"
    assert not Voice.objects.filter(tenant__isnull=False).exists() and _stored_files(cloning.media) == []


def test_too_large_file_inside_a_small_enough_request_is_413(cloning, settings):
    settings.TTS_MAX_UPLOAD_BYTES = len(_wav()) - 1  # the form fits the slack, the file does not
    response = _upload(cloning, _wav())
    assert response.status == 413 and _code(response) == "upload_too_large"
    assert not Voice.objects.filter(tenant__isnull=False).exists()


@pytest.mark.parametrize(
    "fields, status, code",
    [
        ({"voice_id": "not a slug!"}, 400, "invalid_request"),
        ({"name": ""}, 400, "invalid_request"),
        ({"language": "ja"}, 422, "unsupported_language"),
    ],
)
def test_bad_fields_are_refused_and_create_nothing(cloning, fields, status, code):
    response = _upload(cloning, _wav(), **fields)
    assert response.status == status and _code(response) == code
    assert not Voice.objects.filter(tenant__isnull=False).exists() and _stored_files(cloning.media) == []


def test_an_engine_that_cannot_clone_is_a_clear_422(cloning, settings):
    settings.TTS_CLONING_ENGINE = "espeak"
    response = _upload(cloning, _wav())
    assert response.status == 422 and _code(response) == "engine_cannot_clone"
    assert not Voice.objects.filter(tenant__isnull=False).exists()


def test_upload_needs_the_upload_scope(cloning):
    cloning.key = issue_key(cloning.tenant, scopes=["voices", "synthesize"])
    response = _upload(cloning, _wav())
    assert response.status == 403 and _code(response) == "missing_scope"


def test_processing_is_idempotent(cloning):
    _upload(cloning, _wav())
    voice = Voice.objects.get(voice_id="my_voice")
    engine = load_engine("xtts").engine
    before = engine.conditioning_computations
    assert voice_process(voice_id=voice.pk) is None  # already ready: a redelivered task does nothing
    assert engine.conditioning_computations == before


def _broker_down(monkeypatch):
    from kombu.exceptions import OperationalError

    from voices.tasks import voice_process_task

    def refuse(*args, **kwargs):
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")

    original = voice_process_task.delay
    monkeypatch.setattr(voice_process_task, "delay", refuse)
    return lambda: monkeypatch.setattr(voice_process_task, "delay", original)


def test_an_upload_whose_task_could_not_be_queued_is_kept_and_queued_again_later(cloning, monkeypatch, settings):
    broker_back = _broker_down(monkeypatch)
    response = _upload(cloning, _wav())
    assert response.status == 202  # accepted and kept, not a 500 for a broker outage
    assert cloning.run(cloning.get, "/v1/voices/my_voice").json()["status"] == "processing"
    broker_back()
    assert voices_requeue_stale() == {"requeued": 0, "failed": 0}  # still young: its task may just be queued
    later = timezone.now() + timedelta(seconds=settings.VOICE_PROCESSING_RETRY_AFTER + 1)
    assert voices_requeue_stale(now=later) == {"requeued": 1, "failed": 0}
    assert cloning.run(cloning.get, "/v1/voices/my_voice").json()["status"] == "ready"


def test_an_upload_stuck_in_processing_for_a_day_fails_with_a_reason_and_leaves_no_files(cloning, monkeypatch, settings):
    _broker_down(monkeypatch)
    assert _upload(cloning, _wav()).status == 202
    later = timezone.now() + timedelta(seconds=settings.VOICE_PROCESSING_GIVE_UP_AFTER + 1)
    assert voices_requeue_stale(now=later) == {"requeued": 0, "failed": 1}
    voice = cloning.run(cloning.get, "/v1/voices/my_voice").json()
    assert voice["status"] == "failed" and "upload the clip again" in voice["status_reason"]
    assert _stored_files(cloning.media) == []
