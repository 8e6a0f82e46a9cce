from rest_framework.response import Response

from synthesis.workers import engine_availability
from tenants.api import TenantApiView
from voices.selectors import voices_visible_to
from voices.serializers import VoiceSerializer


class VoiceListView(TenantApiView):
    """GET /v1/voices: the preloaded voices and the tenant's own, in the seed's shape."""

    required_scope = "voices"

    def get(self, request):
        voices = voices_visible_to(tenant=self.tenant)
        data = VoiceSerializer(voices, many=True, context={"engines": engine_availability()}).data
        return Response({"tenant_id": self.tenant.slug, "voices": data, "total_count": len(data)})
