"""The Voices page: the preloaded voices and the tenant's own, with their status; owners and admins clone one from
a reference clip (processing turns into ready or failed on the page, polled with htmx), rename and delete their
own. Everyone may listen: a synthesized sample of any ready voice, the reference clip of an own one.

Uploading and deleting are for owners and admins, as creating and revoking keys are: a cloned voice is someone's
likeness and production traffic may speak with it, so adding or removing one is an account decision; on the API
it takes a key with the `upload` scope, which only they can make."""
from django.contrib import messages
from django.core.files.storage import default_storage
from django.http import FileResponse, Http404
from django.shortcuts import redirect, render
from django.urls import reverse
from django.views import View

from callwaiting.errors import ApiError
from synthesis.heartbeats import engine_availability
from tenants.portal.audio import voice_sample_token
from tenants.portal.forms import VoiceRenameForm, VoiceUploadForm
from tenants.portal.mixins import TenantPortalMixin
from tenants.services import audit_record
from voices import services as voice_services
from voices.models import Voice
from voices.selectors import voices_visible_to

POLL_SECONDS = 2  # how often a processing voice's row asks for its status


class _VoiceRows(TenantPortalMixin):
    def row(self, voice, engines) -> dict:
        """What a voice's table row shows."""
        engine = engines.get(voice.engine) or {"available": False, "reason": "engine not configured"}
        own = voice.tenant_id == self.tenant.pk
        row = {"voice": voice, "own": own, "engine_available": engine["available"], "sample_url": None,
               "reference_url": None, "engine_reason": "" if engine["available"] else engine.get("reason", "")}
        if voice.status == Voice.Status.READY:  # an engine that is down says why when it is played
            token = voice_sample_token(user=self.request.user, tenant=self.tenant, voice=voice)
            row["sample_url"] = f"{reverse('portal:voice-sample', args=[voice.pk])}?t={token}"
        if own and voice.reference_audio:
            row["reference_url"] = reverse("portal:voice-reference", args=[voice.pk])
        return row

    def own_voice(self, pk) -> Voice:
        return self.tenant_object_or_404(Voice, pk=pk)


class VoiceListView(_VoiceRows, View):
    def get(self, request):
        return self._page(request, VoiceUploadForm())

    def post(self, request):
        """Clone a voice: the API's checks (id taken, engine able to clone, language) as errors on the form."""
        self.require_manager()
        form = VoiceUploadForm(request.POST, request.FILES)
        if form.is_valid():
            try:
                voice = voice_services.voice_clone_start(tenant=self.tenant, **form.cleaned_data)
            except ApiError as exc:
                form.add_error("voice_id" if exc.code == "voice_exists" else
                               "language" if exc.code == "unsupported_language" else None, exc.message)
            else:
                audit_record(tenant=self.tenant, actor=request.user, action="voice.uploaded", target=voice.voice_id,
                             details={"name": voice.name, "language": voice.language})
                messages.success(request, f"“{voice.name}” is uploaded and being processed: it is ready in a moment.")
                return redirect("portal:voices")
        return self._page(request, form, status=400)

    def _page(self, request, form, status=200):
        engines = engine_availability()
        voices = list(voices_visible_to(tenant=self.tenant))
        context = {
            "own_rows": [self.row(v, engines) for v in voices if v.tenant_id == self.tenant.pk],
            "preloaded_rows": [self.row(v, engines) for v in voices if v.tenant_id is None],
            "form": form, "is_manager": self.is_manager, "poll_seconds": POLL_SECONDS,
        }
        return render(request, "portal/voices.html", context, status=status)


class VoiceRowView(_VoiceRows, View):
    """GET: one own voice's table row (htmx polls it while the voice is processing; it stops once it is not)."""

    def get(self, request, pk):
        context = {"row": self.row(self.own_voice(pk), engine_availability()), "is_manager": self.is_manager,
                   "poll_seconds": POLL_SECONDS}
        return render(request, "portal/_voice_row.html", context)


class VoiceRenameView(_VoiceRows, View):
    manager_required = True

    def get(self, request, pk):
        voice = self.own_voice(pk)
        form = VoiceRenameForm(initial={"name": voice.name, "description": voice.description})
        return render(request, "portal/voice_rename.html", {"voice": voice, "form": form})

    def post(self, request, pk):
        voice = self.own_voice(pk)
        form = VoiceRenameForm(request.POST)
        if not form.is_valid():
            return render(request, "portal/voice_rename.html", {"voice": voice, "form": form}, status=400)
        old_name = voice.name
        voice_services.voice_update(voice=voice, **form.cleaned_data)
        audit_record(tenant=self.tenant, actor=request.user, action="voice.renamed", target=voice.voice_id,
                     details={"from": old_name, "to": voice.name})
        messages.success(request, f"Voice {voice.voice_id} is now “{voice.name}”.")
        return redirect("portal:voices")


class VoiceDeleteView(_VoiceRows, View):
    """GET: the confirmation; POST: delete the voice and its stored audio."""

    manager_required = True

    def get(self, request, pk):
        return render(request, "portal/voice_delete.html", {"voice": self.own_voice(pk)})

    def post(self, request, pk):
        voice = self.own_voice(pk)
        voice_id, name = voice.voice_id, voice.name
        voice_services.voice_delete(voice=voice)
        audit_record(tenant=self.tenant, actor=request.user, action="voice.deleted", target=voice_id,
                     details={"name": name})
        messages.success(request, f"Voice “{name}” ({voice_id}) is deleted: requests for it are refused now.")
        return redirect("portal:voices")


class VoiceReferenceView(_VoiceRows, View):
    """GET: an own voice's reference clip (WAV), as it was stored after its checks; not a synthesis, not billed."""

    def get(self, request, pk):
        voice = self.own_voice(pk)
        if not voice.reference_audio:
            raise Http404("This voice has no reference clip.")
        try:
            handle = default_storage.open(voice.reference_audio, "rb")
        except OSError:
            raise Http404("The reference clip is no longer in storage.") from None
        response = FileResponse(handle, content_type="audio/wav")
        response["Cache-Control"] = "private, no-store"
        return response
