"""What an operator sees and does with voices in Django admin: status, reprocessing, the reference clip."""

import pytest
from django.contrib.auth import get_user_model
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.urls import reverse

from tests.factories import TenantFactory, VoiceFactory, voice_like
from voices.audio import encode_wav
from voices.models import Voice
from voices.services import voice_process

pytestmark = pytest.mark.django_db

CLIP = encode_wav(voice_like(4.0), 22050)


@pytest.fixture
def media(settings, tmp_path):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path / "media")},
    }}
    return tmp_path / "media"


def _cloned_voice(tenant=None, *, status=Voice.Status.READY, clip_field="reference_audio", **fields) -> Voice:
    voice = VoiceFactory(tenant=tenant or TenantFactory(), engine="xtts", engine_settings={}, status=status, **fields)
    if clip_field:
        name = default_storage.save(f"voices/{voice.tenant_id}/{voice.pk}/{clip_field}.wav", ContentFile(CLIP))
        setattr(voice, clip_field, name)
        voice.save()
    return voice


def _reprocess(admin_client, *voices):
    return admin_client.post(
        reverse("admin:voices_voice_changelist"),
        {"action": "reprocess", "_selected_action": [voice.pk for voice in voices]},
        follow=True,
    )


def _messages(response) -> list[str]:
    return [str(message) for message in response.context["messages"]]


def test_the_change_page_plays_the_reference_clip_streamed_from_storage(admin_client, media):
    voice = _cloned_voice()

    page = admin_client.get(reverse("admin:voices_voice_change", args=[voice.pk])).content.decode()

    url = reverse("admin:voices_voice_audio", args=[voice.pk])
    assert f'<audio controls preload="none" src="{url}">' in page
    response = admin_client.get(url)
    assert response.status_code == 200 and response["Content-Type"] in ("audio/wav", "audio/x-wav")
    assert b"".join(response.streaming_content) == CLIP


def test_a_voice_without_a_clip_says_so_and_its_audio_url_is_404(admin_client, media):
    voice = _cloned_voice(status=Voice.Status.FAILED, clip_field=None)

    page = admin_client.get(reverse("admin:voices_voice_change", args=[voice.pk])).content.decode()

    assert "No reference clip" in page and "<audio" not in page
    assert admin_client.get(reverse("admin:voices_voice_audio", args=[voice.pk])).status_code == 404
    assert admin_client.get(reverse("admin:voices_voice_audio", args=[voice.pk + 1000])).status_code == 404


@pytest.mark.parametrize("is_staff", [False, True])
def test_only_operators_can_hear_a_tenants_clip(client, media, is_staff):
    voice = _cloned_voice()
    url = reverse("admin:voices_voice_audio", args=[voice.pk])

    anonymous = client.get(url)
    assert anonymous.status_code == 302 and anonymous["Location"].startswith(reverse("admin:login"))

    # A tenant's staff (portal user) or a staff user without the permission to view voices gets no audio.
    user = get_user_model().objects.create_user("someone", password="x", is_staff=is_staff)
    client.force_login(user)
    response = client.get(url)
    assert response.status_code in (302, 403)
    assert CLIP not in b"".join(getattr(response, "streaming_content", [response.content]))


def test_status_is_listed_and_filterable(admin_client, media):
    ready = _cloned_voice(voice_id="fine_voice")
    failed = _cloned_voice(voice_id="broken_voice", status=Voice.Status.FAILED, clip_field=None,
                           status_reason="the clip is silent")

    page = admin_client.get(reverse("admin:voices_voice_changelist"), {"status__exact": "failed"}).content.decode()

    assert failed.voice_id in page and "the clip is silent" in page
    assert ready.voice_id not in page


def test_reprocess_queues_failed_and_stuck_voices_after_commit(admin_client, media, monkeypatch,
                                                               django_capture_on_commit_callbacks):
    from voices.tasks import voice_process_task

    queued = []
    monkeypatch.setattr(voice_process_task, "delay", queued.append)
    failed = _cloned_voice(status=Voice.Status.FAILED, status_reason="computing the voice failed: no worker")
    stuck = _cloned_voice(status=Voice.Status.PROCESSING, clip_field="source_audio")

    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        response = _reprocess(admin_client, failed, stuck)
        assert queued == []  # nothing is queued before the transaction commits
    for callback in callbacks:
        callback()

    assert sorted(queued) == sorted([failed.pk, stuck.pk])
    assert "Queued 2 voice(s) for processing again." in _messages(response)
    failed.refresh_from_db()
    assert (failed.status, failed.status_reason) == (Voice.Status.PROCESSING, "")


def test_reprocess_refuses_what_it_cannot_redo_and_says_why(admin_client, media, monkeypatch, preloaded_voices):
    from voices.tasks import voice_process_task

    queued = []
    monkeypatch.setattr(voice_process_task, "delay", queued.append)
    no_clip = _cloned_voice(status=Voice.Status.FAILED, clip_field=None, status_reason="the clip is silent")
    ready = _cloned_voice()
    preloaded = Voice.objects.get(tenant__isnull=True, voice_id="default")

    messages = _messages(_reprocess(admin_client, no_clip, ready, preloaded))

    assert queued == []
    assert any("must upload it again" in message for message in messages)
    assert any("is ready, not failed or processing" in message for message in messages)
    assert any("is preloaded" in message for message in messages)
    no_clip.refresh_from_db()
    assert (no_clip.status, no_clip.status_reason) == (Voice.Status.FAILED, "the clip is silent")


def test_a_voice_that_failed_for_want_of_a_worker_is_reprocessed_to_ready(
    admin_client, xtts_enabled, transactional_db, monkeypatch, preloaded_voices
):
    """The story end to end: the worker cannot compute the voice, it fails but keeps its checked clip; once
    workers are back an operator reprocesses it, and it becomes ready with its latents."""
    import synthesis.dispatch
    from synthesis.dispatch import DispatchError

    def no_worker(**kwargs):
        raise DispatchError("worker_lost", "the model worker stopped answering")

    voice = _cloned_voice(status=Voice.Status.PROCESSING, clip_field="source_audio", voice_id="my_voice")
    with monkeypatch.context() as outage:
        outage.setattr(synthesis.dispatch, "run_conditioning_job", no_worker)
        voice_process(voice_id=voice.pk)
    voice.refresh_from_db()
    assert voice.status == Voice.Status.FAILED and "the model worker stopped answering" in voice.status_reason
    assert voice.source_audio == "" and default_storage.exists(voice.reference_audio)

    from callwaiting.celery import app

    monkeypatch.setitem(app.conf, "task_always_eager", True)  # processing runs in-process, as embedded
    assert "Queued 1 voice(s) for processing again." in _messages(_reprocess(admin_client, voice))

    voice.refresh_from_db()
    assert voice.status == Voice.Status.READY, voice.status_reason
    assert default_storage.exists(voice.engine_settings["latents"]) and default_storage.exists(voice.reference_audio)
