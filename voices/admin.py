"""Operator admin over voices: status, reprocessing of failed or stuck clones, and a preview of the reference clip."""
import mimetypes
from pathlib import Path

from django.conf import settings
from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.urls import path, reverse
from django.utils.html import format_html

from voices import services
from voices.models import Voice
from voices.services import VoiceNotReprocessable, voice_reprocess


def _preview_clip(voice: Voice):
    """(open file, name) of the clip that shows what a voice sounds like, or None: a tenant voice's reference clip
    (or, until it is processed, its upload) from storage; a preloaded voice's installed reference clip."""
    if voice.tenant_id is not None:
        name = voice.reference_audio or voice.source_audio
        if name:
            try:
                return default_storage.open(name, "rb"), name
            except OSError:  # listed on the row but gone from storage
                return None
        return None
    clip = voice.engine_settings.get("reference_audio")
    if clip and (settings.BASE_DIR / clip).is_file():
        return open(settings.BASE_DIR / clip, "rb"), clip
    return None


@admin.register(Voice)
class VoiceAdmin(admin.ModelAdmin):
    # Preloaded voices come from config/voices.json: `manage.py sync_voices` overwrites edits made here.
    list_display = ["voice_id", "name", "owner", "language", "engine", "is_preloaded", "status", "status_reason"]
    list_filter = ["status", "engine", "language", "is_preloaded"]
    search_fields = ["voice_id", "name", "tenant__slug"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    # The stored files' names are the processing pipeline's to write (a hand-typed one would point at nothing).
    readonly_fields = ["audio_preview", "source_audio", "reference_audio", "created_at", "updated_at"]
    actions = ["reprocess"]

    @admin.display(description="Tenant", ordering="tenant__slug")
    def owner(self, obj):
        return obj.tenant.slug if obj.tenant_id else "preloaded"

    @admin.display(description="Reference clip")
    def audio_preview(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        if not (obj.reference_audio or obj.source_audio or obj.engine_settings.get("reference_audio")):
            return "No reference clip (a built-in speaker, or the clip was removed when the voice failed)."
        url = reverse("admin:voices_voice_audio", args=[obj.pk])
        return format_html('<audio controls preload="none" src="{}"></audio> <a href="{}">download</a>', url, url)

    def get_urls(self):
        audio = path(
            "<int:voice_pk>/audio/", self.admin_site.admin_view(self.audio_view), name="voices_voice_audio"
        )
        return [audio, *super().get_urls()]

    def audio_view(self, request, voice_pk):
        """Streams a voice's clip from storage to a staff user allowed to view voices (admin_view checks staff)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        voice = Voice.objects.filter(pk=voice_pk).first()
        found = _preview_clip(voice) if voice is not None else None
        if found is None:
            raise Http404("This voice has no reference clip.")
        handle, name = found
        content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
        # FileResponse streams the file in blocks (a clip is at most a minute, but it need not sit in memory).
        return FileResponse(handle, content_type=content_type, filename=Path(name).name)

    @admin.action(description="Reprocess selected failed or stuck voices")
    def reprocess(self, request, queryset):
        queued, refused = 0, []
        for voice in queryset.select_related("tenant"):
            try:
                voice_reprocess(voice=voice)
                queued += 1
            except VoiceNotReprocessable as exc:
                refused.append(str(exc))
        if queued:
            self.message_user(request, f"Queued {queued} voice(s) for processing again.")
        for reason in refused:
            self.message_user(request, f"Not reprocessed: {reason}", level="warning")

    # Through the service, as the API deletes: a voice's files and its phrase-cache audio go with it.
    def delete_model(self, request, obj):
        services.voice_delete(voice=obj)

    def delete_queryset(self, request, queryset):
        for voice in queryset:
            services.voice_delete(voice=voice)
