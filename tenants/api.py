"""Base for every tenant-facing API view: key authentication, scope, per-tenant rate limit, and `self.tenant`.

Every tenant-owned query in a view starts from `self.tenant`, the tenant the key belongs to; there is no
other way to name a tenant in the public API, so one tenant can never reach another's data.
"""
from rest_framework.views import APIView

from tenants.permissions import HasScope


class TenantApiView(APIView):
    permission_classes = [HasScope]
    required_scope: str | None = None

    @property
    def tenant(self):
        return self.request.auth.tenant
