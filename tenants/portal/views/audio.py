"""The portal's audio endpoints (the <audio> elements' src): async, so the audio streams from the event loop as
POST /v1/synthesize's does; what needs the database runs in one thread hop first. See tenants/portal/audio.py for
why a URL alone can never make a billed request."""
import uuid

from asgiref.sync import sync_to_async
from django.http import Http404, JsonResponse
from rest_framework import exceptions

from callwaiting.errors import exception_body
from synthesis.views import serve_prepared_session
from tenants.portal import audio
from tenants.portal.mixins import membership_or_refusal
from voices.models import Voice
from voices.selectors import voices_visible_to


def _admit(request, find_request):
    """(session, None) or (None, the response instead): the login and membership checks of every portal page,
    then `find_request(request, tenant) -> (data, request_id)` (Http404 when it is not this user's), then the
    API's checks."""
    membership, refusal = membership_or_refusal(request)
    if refusal is not None:
        return None, refusal
    data, request_id = find_request(request, membership.tenant)
    try:
        return audio.portal_session_admit(tenant=membership.tenant, data=data, request_id=request_id), None
    except exceptions.APIException as exc:  # the API's error shape: the page's script shows its message
        headers = getattr(exc, "headers", None)
        if isinstance(exc, exceptions.Throttled) and exc.wait:
            headers = {"Retry-After": str(int(exc.wait))}
        return None, JsonResponse(exception_body(exc), status=exc.status_code, headers=headers)


async def _serve(request, find_request, *, filename: str = ""):
    session, refused = await sync_to_async(_admit)(request, find_request)
    if refused is not None:
        return refused
    headers = {}
    if filename:
        headers["Content-Disposition"] = f'attachment; filename="{filename}.{session.audio_format}"'
    return await serve_prepared_session(request, session, headers)


async def playground_audio(request, request_id: uuid.UUID):
    """GET /portal/playground/audio/<request id>/: the playground's request, streamed (?download=1: as a file)."""

    def find(request, tenant):
        data = audio.playground_request_get(user=request.user, tenant=tenant, request_id=request_id)
        if data is None:
            raise Http404("No such playground request (it expired, or is not yours).")
        return data, request_id

    filename = f"speech-{str(request_id)[:8]}" if request.GET.get("download") else ""
    return await _serve(request, find, filename=filename)


async def voice_sample(request, pk: int):
    """GET /portal/voices/<pk>/sample/?t=...: a short sentence in the voice, billed like any request."""

    def find(request, tenant):
        voice = voices_visible_to(tenant=tenant).filter(pk=pk).first()
        if voice is None or not audio.voice_sample_token_valid(
                request.GET.get("t", ""), user=request.user, tenant=tenant, voice=voice):
            raise Http404("No such voice sample (the page is too old, or the voice is not yours).")
        data = {"text": audio.voice_sample_text(voice), "voice_id": voice.voice_id, "format": "mp3"}
        if voice.tenant_id is None and Voice.objects.filter(tenant=tenant, voice_id=voice.voice_id).exists():
            raise Http404("The tenant's own voice of that id hides this one.")
        return data, None

    return await _serve(request, find)
