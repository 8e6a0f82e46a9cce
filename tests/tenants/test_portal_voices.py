"""The Voices page: preloaded and own voices with their status, a processing voice polled until it is ready or
failed, cloning with the API's checks shown on the form, rename and delete (owners and admins, audited), and
tenant isolation."""

import numpy as np
import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tenants.models import AuditLogEntry
from tests.factories import voice_like
from voices.audio import encode_wav
from voices.models import Voice

pytestmark = pytest.mark.django_db

XTTS_UP = {"xtts": {"available": True, "state": "available", "supports_cloning": True, "languages": ["en", "de"],
                    "capacity": 8},
           "espeak": {"available": True, "state": "available", "supports_cloning": False, "languages": ["en"],
                      "capacity": 8}}


@pytest.fixture
def engines_up(monkeypatch):
    """The engines' heartbeats say XTTS can clone (no model is loaded: processing is not what these tests see)."""
    for where in ("voices.services.engine_availability", "tenants.portal.views.voices.engine_availability"):
        monkeypatch.setattr(where, lambda: XTTS_UP)


def _clip(seconds=4.0, name="ref.wav"):
    return SimpleUploadedFile(name, encode_wav(voice_like(seconds), 22050), content_type="audio/wav")


def _upload(client, **fields):
    form = {"voice_id": "front-desk", "name": "Front desk", "description": "", "language": "en",
            "audio_file": _clip(), **fields}
    return client.post("/portal/voices/", form)


def _own_voice(tenant, status=Voice.Status.READY, voice_id="front-desk", **fields):
    return Voice.objects.create(tenant=tenant, voice_id=voice_id, name=fields.pop("name", "Front desk"), engine="xtts",
                                status=status, **fields)


def _row(page: str, voice) -> str:
    start = page.index(f'id="voice-{voice.pk}"')
    return page[start:page.index("</tr>", start)]


def test_a_member_sees_preloaded_and_own_voices_with_their_status(member_client, portal_tenant, other_tenant,
                                                                  preloaded_voices, engines_up):
    ready = _own_voice(portal_tenant)
    failed = _own_voice(portal_tenant, Voice.Status.FAILED, "bad-clip", status_reason="the clip is (nearly) silent")
    _own_voice(other_tenant, voice_id="globex-secret", name="Globex secret")
    page = member_client.get("/portal/voices/").content.decode()
    assert "Front desk" in page and "default" in page  # own and preloaded
    assert "globex-secret" not in page and "Globex secret" not in page
    assert "status-ready" in _row(page, ready) and "hx-trigger" not in _row(page, ready)
    assert "the clip is (nearly) silent" in _row(page, failed)
    assert "/sample/?t=" in _row(page, ready)  # a player for a ready voice
    # a member listens, nothing more
    assert 'id="voice-upload"' not in page and "/rename/" not in page and "/delete/" not in page
    assert "Only owners and admins upload" in page


def test_a_processing_voice_is_polled_until_it_is_ready_or_failed(owner_client, portal_tenant, engines_up):
    voice = _own_voice(portal_tenant, Voice.Status.PROCESSING)
    row = _row(owner_client.get("/portal/voices/").content.decode(), voice)
    assert f'hx-get="/portal/voices/{voice.pk}/row/"' in row and 'hx-trigger="every 2s"' in row
    assert 'hx-swap="outerHTML"' in row

    still = owner_client.get(f"/portal/voices/{voice.pk}/row/").content.decode()
    assert still.strip().startswith("<tr") and "processing" in still and "hx-trigger" in still

    Voice.objects.filter(pk=voice.pk).update(status=Voice.Status.READY)
    ready = owner_client.get(f"/portal/voices/{voice.pk}/row/").content.decode()
    assert "status-ready" in ready and "hx-trigger" not in ready and "/sample/?t=" in ready  # polling stops

    Voice.objects.filter(pk=voice.pk).update(status=Voice.Status.FAILED, status_reason="computing the voice failed")
    failed = owner_client.get(f"/portal/voices/{voice.pk}/row/").content.decode()
    assert "status-failed" in failed and "computing the voice failed" in failed and "hx-trigger" not in failed


def test_an_owner_uploads_a_clip_and_it_is_processing_and_audited(owner_client, portal_tenant, engines_up, owner):
    response = _upload(owner_client, audio_file=_clip(name="desk.wav"))
    assert response.status_code == 302 and response["Location"] == "/portal/voices/"
    voice = Voice.objects.get(tenant=portal_tenant, voice_id="front-desk")
    assert voice.status == Voice.Status.PROCESSING and voice.engine == "xtts" and voice.source_audio
    entry = AuditLogEntry.objects.get(tenant=portal_tenant, action="voice.uploaded")
    assert entry.target == "front-desk" and entry.actor == owner.user
    page = owner_client.get("/portal/voices/").content.decode()
    assert "is uploaded and being processed" in page and "hx-trigger" in _row(page, voice)


@pytest.mark.parametrize("audio_file, error", [
    (_clip(seconds=1.0), "at least 3 s"),
    (SimpleUploadedFile("notes.txt", b"this is not audio at all" * 100, content_type="text/plain"),
     "not a readable audio file"),
    (SimpleUploadedFile("silence.wav", encode_wav(np.zeros(22050 * 4, dtype=np.float32), 22050)), "silent"),
])
def test_a_clip_that_cannot_make_a_voice_is_an_error_on_the_form(owner_client, engines_up, audio_file, error):
    audio_file.seek(0)
    response = _upload(owner_client, audio_file=audio_file)
    assert response.status_code == 400
    page = response.content.decode()
    assert "This clip cannot make a voice" in page and error in page and 'role="alert"' in page
    assert not Voice.objects.filter(voice_id="front-desk").exists()


def test_a_taken_id_or_a_bad_language_or_no_cloning_engine_is_an_error_on_the_form(owner_client, portal_tenant,
                                                                                     preloaded_voices, engines_up,
                                                                                     monkeypatch):
    _own_voice(portal_tenant)
    taken = _upload(owner_client).content.decode()
    assert "already has a voice" in taken
    assert "choose another" in _upload(owner_client, voice_id="default").content.decode()  # a preloaded id
    assert "cannot speak &#x27;xx&#x27;" in _upload(owner_client, voice_id="new", language="xx").content.decode()
    assert _upload(owner_client, voice_id="Not A Slug!").status_code == 400

    monkeypatch.setattr("voices.services.engine_availability", lambda: {})
    down = _upload(owner_client, voice_id="new")
    assert down.status_code == 400 and "Voice cloning is unavailable" in down.content.decode()
    assert list(Voice.objects.filter(tenant=portal_tenant).values_list("voice_id", flat=True)) == ["front-desk"]


def test_members_may_not_upload_rename_or_delete(member_client, portal_tenant, engines_up):
    voice = _own_voice(portal_tenant)
    assert _upload(member_client, voice_id="mine").status_code == 403
    assert member_client.get(f"/portal/voices/{voice.pk}/rename/").status_code == 403
    assert member_client.post(f"/portal/voices/{voice.pk}/rename/", {"name": "x"}).status_code == 403
    assert member_client.post(f"/portal/voices/{voice.pk}/delete/").status_code == 403
    assert Voice.objects.get(pk=voice.pk).name == "Front desk"
    assert not Voice.objects.filter(voice_id="mine").exists()


def test_an_admin_renames_and_deletes_after_confirming_and_both_are_audited(tenant_admin_client, portal_tenant,
                                                                            engines_up):
    voice = _own_voice(portal_tenant)
    assert 'value="Front desk"' in tenant_admin_client.get(f"/portal/voices/{voice.pk}/rename/").content.decode()
    renamed = tenant_admin_client.post(f"/portal/voices/{voice.pk}/rename/", {"name": "Evening desk"}, follow=True)
    assert "is now “Evening desk”" in renamed.content.decode()
    assert Voice.objects.get(pk=voice.pk).name == "Evening desk"
    assert tenant_admin_client.post(f"/portal/voices/{voice.pk}/rename/", {"name": ""}).status_code == 400

    confirm = tenant_admin_client.get(f"/portal/voices/{voice.pk}/delete/")
    assert confirm.status_code == 200 and "cannot be undone" in confirm.content.decode()
    assert Voice.objects.filter(pk=voice.pk).exists()  # the GET changed nothing
    deleted = tenant_admin_client.post(f"/portal/voices/{voice.pk}/delete/", follow=True)
    assert "is deleted" in deleted.content.decode() and not Voice.objects.filter(pk=voice.pk).exists()
    actions = set(AuditLogEntry.objects.filter(tenant=portal_tenant).values_list("action", "target"))
    assert {("voice.renamed", "front-desk"), ("voice.deleted", "front-desk")} <= actions


def test_another_tenants_voice_is_not_found_anywhere(owner_client, other_tenant, engines_up):
    theirs = _own_voice(other_tenant, reference_audio="voices/x/reference.wav")
    for path in ("row", "rename", "delete", "reference"):
        assert owner_client.get(f"/portal/voices/{theirs.pk}/{path}/").status_code == 404, path
    assert owner_client.post(f"/portal/voices/{theirs.pk}/delete/").status_code == 404
    assert owner_client.post(f"/portal/voices/{theirs.pk}/rename/", {"name": "mine"}).status_code == 404
    assert Voice.objects.get(pk=theirs.pk).name == "Front desk"


def test_preloaded_voices_cannot_be_renamed_or_deleted(owner_client, preloaded_voices, engines_up):
    preloaded = Voice.objects.get(tenant__isnull=True, voice_id="default")
    assert owner_client.post(f"/portal/voices/{preloaded.pk}/delete/").status_code == 404
    assert Voice.objects.filter(pk=preloaded.pk).exists()


def test_an_own_voices_reference_clip_plays_for_members(member_client, portal_tenant, settings, tmp_path, engines_up):
    settings.STORAGES = {**settings.STORAGES, "default": {
        "BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"location": str(tmp_path)}}}
    (tmp_path / "ref.wav").write_bytes(encode_wav(voice_like(3.5), 22050))
    voice = _own_voice(portal_tenant, reference_audio="ref.wav")
    page = member_client.get("/portal/voices/").content.decode()
    assert f'src="/portal/voices/{voice.pk}/reference/"' in _row(page, voice)
    response = member_client.get(f"/portal/voices/{voice.pk}/reference/")
    assert response.status_code == 200 and response["Content-Type"] == "audio/wav"
    assert b"".join(response.streaming_content)[:4] == b"RIFF"


def test_the_upload_form_needs_a_csrf_token(owner, client_for, engines_up):
    client = client_for(owner)
    client.handler.enforce_csrf_checks = True
    assert _upload(client).status_code == 403
    assert not Voice.objects.exists() or not Voice.objects.filter(voice_id="front-desk").exists()
