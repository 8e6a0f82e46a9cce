"""The Playground: text or SSML, a voice, a language and a format; the answer streams into an <audio> element
(and can be downloaded) from a session-authenticated URL, never with an API key (tenants/portal/audio.py)."""
import uuid

from django.shortcuts import render
from django.urls import reverse
from django.views import View

from tenants.portal.audio import playground_request_store
from tenants.portal.forms import PlaygroundForm
from tenants.portal.mixins import TenantPortalMixin
from voices.models import Voice
from voices.selectors import voices_visible_to


def _download_id(request_id: uuid.UUID) -> uuid.UUID:
    """The download's own request id: played and downloaded are two syntheses, each billed once however often
    the browser fetches it again (a retry of the same request id)."""
    return uuid.uuid5(request_id, "download")


class PlaygroundView(TenantPortalMixin, View):
    def get(self, request):
        return self._page(request, PlaygroundForm(voices=self._voices()))

    def post(self, request):
        form = PlaygroundForm(request.POST, voices=self._voices())
        if not form.is_valid():
            # htmx swaps in 2xx answers only: the form with its errors replaces the one on the page.
            return self._page(request, form, status=200 if request.htmx else 400)
        data = form.synthesize_request()
        play_id = playground_request_store(user=request.user, tenant=self.tenant, data=data)
        download_id = playground_request_store(user=request.user, tenant=self.tenant, data=data,
                                               request_id=_download_id(play_id))
        result = {
            "url": reverse("portal:playground-audio", args=[play_id]),
            "download_url": reverse("portal:playground-audio", args=[download_id]) + "?download=1",
            "playable": form.playable, "format": data["format"],
        }
        return self._page(request, form, result=result)

    def _voices(self) -> list[Voice]:
        """The ready voices the tenant may speak with; its own voice hides a preloaded one of the same id."""
        voices = {}
        for voice in voices_visible_to(tenant=self.tenant).filter(status=Voice.Status.READY):
            if voice.voice_id not in voices or voice.tenant_id is not None:
                voices[voice.voice_id] = voice
        return sorted(voices.values(), key=lambda v: (v.tenant_id is None, v.voice_id))

    def _page(self, request, form, result=None, status=200):
        return render(request, "portal/playground.html", {"form": form, "result": result}, status=status)
