"""Writes over voices."""
import json
from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone

from callwaiting.errors import ApiError
from synthesis.engines.base import primary_language
from synthesis.heartbeats import engine_availability, engine_unavailable_error
from voices.models import Voice

_CONFIG_FIELDS = ("name", "description", "language", "gender", "accent", "engine", "engine_settings")


class VoiceConfigError(ValueError):
    pass


def _read_preloaded(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise VoiceConfigError(f"cannot read {path}: {exc}") from exc
    voices = data.get("preloaded_voices")
    if not isinstance(voices, dict):
        raise VoiceConfigError(f"{path}: expected an object 'preloaded_voices'")
    for voice_id, spec in voices.items():
        missing = [key for key in ("name", "engine") if not spec.get(key)]
        if missing:
            raise VoiceConfigError(f"{path}: voice {voice_id!r} lacks {', '.join(missing)}")
    return voices


def _preloaded_status(engine_settings: dict) -> tuple[str, str]:
    """A preloaded voice built on a reference clip is unavailable (with the reason) until the clip is installed."""
    clip = engine_settings.get("reference_audio")
    if clip and not (settings.BASE_DIR / clip).is_file():
        return Voice.Status.UNAVAILABLE, f"reference clip {clip} is not installed on this server"
    return Voice.Status.READY, ""


@transaction.atomic
def voices_sync_preloaded(*, path: Path) -> dict[str, list[str]]:
    """Create or update the preloaded voices from config; ones no longer listed are removed. Idempotent."""
    configured = _read_preloaded(path)
    report = {"created": [], "updated": [], "unchanged": [], "removed": []}
    existing = {voice.voice_id: voice for voice in Voice.objects.filter(tenant__isnull=True)}
    for voice_id, spec in configured.items():
        values = {field: spec.get(field, "" if field != "engine_settings" else {}) for field in _CONFIG_FIELDS}
        values["language"] = values["language"] or "en"
        values["status"], values["status_reason"] = _preloaded_status(values["engine_settings"])
        voice = existing.get(voice_id)
        if voice is None:
            Voice.objects.create(tenant=None, voice_id=voice_id, is_preloaded=True, **values)
            report["created"].append(voice_id)
        elif any(getattr(voice, field) != value for field, value in values.items()):
            for field, value in values.items():
                setattr(voice, field, value)
            voice.save()
            report["updated"].append(voice_id)
        else:
            report["unchanged"].append(voice_id)
    stale = [voice_id for voice_id in existing if voice_id not in configured]
    Voice.objects.filter(tenant__isnull=True, voice_id__in=stale).delete()
    report["removed"] = stale
    return report


# --- cloning ---------------------------------------------------------------------------------------------------
def _storage_prefix(voice: Voice) -> str:
    return f"voices/{voice.tenant_id}/{voice.pk}"


def _check_cloning_engine(engine: str, language: str) -> None:
    state = engine_availability().get(engine)
    if not state or not state["available"]:
        error = engine_unavailable_error(engine, state, "Voice cloning is unavailable")
        raise error
    if not state.get("supports_cloning"):
        raise ApiError("engine_cannot_clone", f"The {engine} engine cannot clone voices.", 422)
    if primary_language(language) not in {primary_language(code) for code in state["languages"]}:
        raise ApiError(
            "unsupported_language", f"{engine} cannot speak '{language}'; it speaks {', '.join(state['languages'])}.", 422
        )


def voice_clone_start(*, tenant, voice_id: str, name: str, description: str, language: str, audio_file) -> Voice:
    """Record a tenant's new voice as `processing`, keep the upload, and queue its processing (after commit).

    A failed voice with the same id is replaced; any other existing id (or a preloaded one) is a conflict.
    """
    from voices.tasks import voice_process_task

    engine = settings.TTS_CLONING_ENGINE
    _check_cloning_engine(engine, language)
    if Voice.objects.filter(tenant__isnull=True, voice_id=voice_id).exists():
        raise ApiError("voice_exists", f"'{voice_id}' is the id of a preloaded voice; choose another.", 409)
    with transaction.atomic():
        existing = Voice.objects.select_for_update().filter(tenant=tenant, voice_id=voice_id).first()
        if existing is not None and existing.status != Voice.Status.FAILED:
            raise ApiError("voice_exists", f"This tenant already has a voice '{voice_id}'.", 409)
        if existing is not None:
            voice_delete(voice=existing)
        voice = Voice.objects.create(
            tenant=tenant, voice_id=voice_id, name=name, description=description, language=language,
            engine=engine, status=Voice.Status.PROCESSING,
        )
        extension = Path(audio_file.name or "").suffix.lower()[:8] or ".bin"
        voice.source_audio = default_storage.save(f"{_storage_prefix(voice)}/upload{extension}", audio_file)
        voice.save(update_fields=["source_audio"])
        # Robust: a broker outage must not turn an accepted upload into a 500; voices_requeue_stale retries.
        transaction.on_commit(lambda: voice_process_task.delay(voice.pk), robust=True)
    return voice


def _fail(voice: Voice, reason: str, *, keep_reference: bool = False) -> Voice:
    """Mark the voice failed and remove its files; `keep_reference` keeps the checked reference clip when the
    failure was not the clip's fault (no worker, worker error), so an operator can reprocess it."""
    kept = voice.reference_audio if keep_reference else ""
    for name in voice.stored_files:
        if name != kept:
            default_storage.delete(name)
    voice.status, voice.status_reason = Voice.Status.FAILED, reason
    voice.source_audio, voice.reference_audio = "", kept
    voice.engine_settings = {}
    voice.save()
    return voice


def voice_process(*, voice_id: int) -> Voice | None:
    """Decode, check and store the reference clip, have a model worker compute its conditioning latents once,
    and mark the voice ready; on any failure the voice is `failed` with a reason and its files are removed.
    Idempotent: a voice that is no longer processing (or no longer exists) is left alone."""
    from synthesis.dispatch import DispatchError, run_conditioning_job
    from voices.audio import AudioError, ReferenceLimits, check_reference, decode_reference, encode_wav

    voice = Voice.objects.filter(pk=voice_id, status=Voice.Status.PROCESSING).first()
    if voice is None:
        return None
    try:
        # A new upload is processed from the upload; a reprocessed voice (voice_reprocess) from its kept clip.
        with default_storage.open(voice.source_audio or voice.reference_audio, "rb") as handle:
            samples, rate = decode_reference(handle.read())
        limits = ReferenceLimits(settings.TTS_REFERENCE_MIN_SECONDS, settings.TTS_REFERENCE_MAX_SECONDS)
        check_reference(samples, rate, limits)
    except AudioError as exc:
        return _fail(voice, exc.message)
    except OSError:
        return _fail(voice, "the uploaded file is no longer in storage; upload it again")
    prefix = _storage_prefix(voice)
    default_storage.delete(f"{prefix}/reference.wav")  # a retried task writes the same clip again
    voice.reference_audio = default_storage.save(f"{prefix}/reference.wav", ContentFile(encode_wav(samples, rate)))
    voice.save(update_fields=["reference_audio"])
    try:
        latents = run_conditioning_job(
            engine=voice.engine, reference=voice.reference_audio, latents=f"{prefix}/latents.pt"
        )
    except DispatchError as exc:
        return _fail(voice, f"computing the voice failed: {exc.message}", keep_reference=True)
    if voice.source_audio:
        default_storage.delete(voice.source_audio)
        voice.source_audio = ""
    # XTTS speaks every language it knows in a cloned voice, not only the one of the reference clip.
    languages = engine_availability().get(voice.engine, {}).get("languages") or [voice.language]
    voice.engine_settings = {"latents": latents, "languages": languages}
    voice.status, voice.status_reason = Voice.Status.READY, ""
    voice.save()
    return voice


def voices_requeue_stale(*, now: datetime | None = None) -> dict[str, int]:
    """Voices still `processing` long after their task should have ended lost it (the broker was down when it
    was queued, or lost it): queue them again, and give up on those that have been trying for too long.
    A Celery worker that merely died does not need this; acks late hands its task to another one."""
    from voices.tasks import voice_process_task

    now = now or timezone.now()
    processing = Voice.objects.filter(status=Voice.Status.PROCESSING)
    given_up = 0
    for voice in processing.filter(created_at__lt=now - timedelta(seconds=settings.VOICE_PROCESSING_GIVE_UP_AFTER)):
        _fail(voice, "processing did not finish; upload the clip again")
        given_up += 1
    requeued = 0
    for voice in processing.filter(updated_at__lt=now - timedelta(seconds=settings.VOICE_PROCESSING_RETRY_AFTER)):
        voice.save(update_fields=["updated_at"])  # the next retry is one period later
        voice_process_task.delay(voice.pk)
        requeued += 1
    return {"requeued": requeued, "failed": given_up}


class VoiceNotReprocessable(Exception):
    """Why a voice cannot be reprocessed; the message is meant for an operator."""


def voice_reprocess(*, voice: Voice) -> Voice:
    """An operator's retry of a tenant voice that failed or is stuck in processing: mark it processing and queue
    its processing task again (after commit), from the upload or the reference clip it still has. A voice whose
    clip was removed (it was bad audio) cannot be: its tenant must upload one again."""
    from voices.tasks import voice_process_task

    if voice.tenant_id is None:
        raise VoiceNotReprocessable(f"{voice.voice_id} is preloaded: `manage.py sync_voices` manages it.")
    if voice.status not in (Voice.Status.FAILED, Voice.Status.PROCESSING):
        raise VoiceNotReprocessable(f"{voice.voice_id} ({voice.tenant.slug}) is {voice.status}, not failed or processing.")
    if not (voice.source_audio or voice.reference_audio):
        raise VoiceNotReprocessable(
            f"{voice.voice_id} ({voice.tenant.slug}) has no clip left (it failed its checks); the tenant must upload it again."
        )
    voice.status, voice.status_reason = Voice.Status.PROCESSING, ""
    voice.save(update_fields=["status", "status_reason", "updated_at"])
    # voice_process leaves a voice that is no longer processing alone: a task that comes after the work is done
    # does nothing.
    transaction.on_commit(lambda: voice_process_task.delay(voice.pk), robust=True)
    return voice


def voice_update(*, voice: Voice, **fields) -> Voice:
    for field, value in fields.items():
        setattr(voice, field, value)
    voice.save(update_fields=[*fields, "updated_at"])
    return voice


def voice_delete(*, voice: Voice) -> None:
    """Remove a tenant's voice, every file it stored and its audio in the phrase cache."""
    from synthesis import phrase_cache

    files = voice.stored_files
    phrase_cache.forget_voice(voice=voice)
    voice.delete()
    for name in files:
        default_storage.delete(name)
