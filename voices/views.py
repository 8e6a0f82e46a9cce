from django.conf import settings
from rest_framework import status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.response import Response

from callwaiting.errors import ApiError
from callwaiting.parsers import JSONParser
from synthesis.heartbeats import engine_availability
from tenants.api import TenantApiView
from voices import services
from voices.selectors import voice_get_for_tenant, voices_visible_to
from voices.serializers import VoiceSerializer, VoiceUpdateSerializer, VoiceUploadSerializer


def _present(voice) -> dict:
    return VoiceSerializer(voice, context={"engines": engine_availability()}).data


class VoiceListView(TenantApiView):
    """GET /v1/voices: the preloaded voices and the tenant's own, in the seed's shape."""

    required_scope = "voices"

    def get(self, request):
        voices = voices_visible_to(tenant=self.tenant)
        data = VoiceSerializer(voices, many=True, context={"engines": engine_availability()}).data
        return Response({"tenant_id": self.tenant.slug, "voices": data, "total_count": len(data)})


class VoiceUploadView(TenantApiView):
    """POST /v1/voices/upload (multipart): a cloned voice from reference audio; 202 while it is processed."""

    required_scope = "upload"
    parser_classes = [MultiPartParser, FormParser]

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

    def get(self, request, voice_id):
        return Response(_present(self._voice(voice_id)))

    def patch(self, request, voice_id):
        voice = self._voice(voice_id, owned=True)
        serializer = VoiceUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        return Response(_present(services.voice_update(voice=voice, **serializer.validated_data)))

    def delete(self, request, voice_id):
        services.voice_delete(voice=self._voice(voice_id, owned=True))
        return Response(status=status.HTTP_204_NO_CONTENT)
