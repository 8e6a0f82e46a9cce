from django.conf import settings
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from callwaiting.errors import ApiError
from callwaiting.openapi import error_responses
from callwaiting.parsers import JSONParser
from synthesis.heartbeats import engine_availability
from tenants.api import TenantApiView
from voices import services
from voices.selectors import voice_get_for_tenant, voices_visible_to
from voices.serializers import VoiceListSerializer, VoiceSerializer, VoiceUpdateSerializer, VoiceUploadSerializer

_VOICE_EXAMPLE = {
    "voice_id": "front-desk", "name": "Front desk", "description": "Our receptionist", "language": "en",
    "languages": ["en"], "gender": "", "accent": "", "engine": "xtts", "is_preloaded": False, "status": "ready",
    "status_reason": "", "available": True, "unavailable_reason": None,
    "created_at": "2026-11-20T09:30:00Z", "updated_at": "2026-11-20T09:30:41Z",
}


def _present(voice) -> dict:
    return VoiceSerializer(voice, context={"engines": engine_availability()}).data


class VoiceListView(TenantApiView):
    """GET /v1/voices: the preloaded voices and the tenant's own, in the seed's shape."""

    required_scope = "voices"

    @extend_schema(
        operation_id="voices_list", summary="List voices", tags=["voices"],
        responses={200: VoiceListSerializer, **error_responses()},
        examples=[OpenApiExample("voices", response_only=True, value={
            "tenant_id": "acme", "voices": [_VOICE_EXAMPLE], "total_count": 1})],
    )
    def get(self, request):
        voices = voices_visible_to(tenant=self.tenant)
        data = VoiceSerializer(voices, many=True, context={"engines": engine_availability()}).data
        return Response({"tenant_id": self.tenant.slug, "voices": data, "total_count": len(data)})


class VoiceUploadView(TenantApiView):
    """POST /v1/voices/upload (multipart): a cloned voice from reference audio; 202 while it is processed."""

    required_scope = "upload"
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(
        operation_id="voices_upload", summary="Clone a voice from reference audio", tags=["voices"],
        description="Multipart upload of 3-60 s of one speaker (WAV, MP3, FLAC, OGG, M4A). Answers 202 with the "
                    "voice `processing`; poll GET /v1/voices/{voice_id} until it is `ready` (or `failed`, with "
                    "`status_reason`). A failed voice's id may be uploaded again.",
        request={"multipart/form-data": VoiceUploadSerializer},  # a file: the form parser is for the other fields
        responses={
            202: OpenApiResponse(VoiceSerializer, description="Accepted: the voice is processing.", examples=[
                OpenApiExample("processing", response_only=True, status_codes=["202"], value={
                    **_VOICE_EXAMPLE, "status": "processing", "available": False,
                    "unavailable_reason": "voice is processing"})]),
            **error_responses("invalid_request", "bad_request", "voice_exists", "upload_too_large",
                              "unsupported_media_type", "engine_cannot_clone", "unsupported_language",
                              "engine_unavailable", "engine_loading"),
        },
    )
    def post(self, request):
        serializer = VoiceUploadSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        audio_file = serializer.validated_data["audio_file"]
        if audio_file.size > settings.TTS_MAX_UPLOAD_BYTES:
            raise ApiError(
                "upload_too_large", f"audio_file is over {settings.TTS_MAX_UPLOAD_BYTES} bytes.", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
            )
        voice = services.voice_clone_start(tenant=self.tenant, **serializer.validated_data)
        return Response(_present(voice), status=status.HTTP_202_ACCEPTED)


class VoiceDetailView(TenantApiView):
    """GET, PATCH (name, description) and DELETE /v1/voices/{voice_id}."""

    required_scope = {"GET": "voices", "PATCH": "upload", "DELETE": "upload"}
    parser_classes = [JSONParser, FormParser, MultiPartParser]

    def _voice(self, voice_id: str, *, owned: bool = False):
        voice = voice_get_for_tenant(tenant=self.tenant, voice_id=voice_id)
        if voice is None:
            raise ApiError("voice_not_found", f"No voice '{voice_id}' for this tenant.", status.HTTP_404_NOT_FOUND)
        if owned and voice.tenant_id is None:
            raise ApiError("voice_preloaded", "Preloaded voices cannot be changed or deleted.", status.HTTP_403_FORBIDDEN)
        return voice

    @extend_schema(operation_id="voice_get", summary="A voice", tags=["voices"],
                   responses={200: VoiceSerializer, **error_responses("voice_not_found")},
                   examples=[OpenApiExample("voice", response_only=True, value=_VOICE_EXAMPLE)])
    def get(self, request, voice_id):
        return Response(_present(self._voice(voice_id)))

    @extend_schema(
        operation_id="voice_update", summary="Rename or describe a voice", tags=["voices"], request=VoiceUpdateSerializer,
        responses={200: VoiceSerializer, **error_responses(
            "invalid_request", "malformed_request", "unsupported_media_type", "voice_not_found", "voice_preloaded")},
        examples=[OpenApiExample("rename", request_only=True, value={"name": "Front desk (evening)"}),
                  OpenApiExample("voice", response_only=True, value={**_VOICE_EXAMPLE, "name": "Front desk (evening)"})],
    )
    def patch(self, request, voice_id):
        voice = self._voice(voice_id, owned=True)
        serializer = VoiceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(_present(services.voice_update(voice=voice, **serializer.validated_data)))

    @extend_schema(operation_id="voice_delete", summary="Delete a voice", tags=["voices"],
                   responses={204: OpenApiResponse(description="Deleted, with its stored audio."),
                              **error_responses("voice_not_found", "voice_preloaded")})
    def delete(self, request, voice_id):
        services.voice_delete(voice=self._voice(voice_id, owned=True))
        return Response(status=status.HTTP_204_NO_CONTENT)
