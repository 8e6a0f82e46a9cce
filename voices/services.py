"""Writes over voices."""
import json
from pathlib import Path

from django.db import transaction

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


@transaction.atomic
def voices_sync_preloaded(*, path: Path) -> dict[str, list[str]]:
    """Create or update the preloaded voices from config; ones no longer listed are removed. Idempotent."""
    configured = _read_preloaded(path)
    report = {"created": [], "updated": [], "unchanged": [], "removed": []}
    existing = {voice.voice_id: voice for voice in Voice.objects.filter(tenant__isnull=True)}
    for voice_id, spec in configured.items():
        values = {field: spec.get(field, "" if field != "engine_settings" else {}) for field in _CONFIG_FIELDS}
        values["language"] = values["language"] or "en"
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
